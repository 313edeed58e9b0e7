"""TensorBoard logging for one run: where its events go, what its tags are called in TensorBoard, its HPARAMS
entry and its custom-scalars layout.

Names, as a person meets them in TensorBoard:
- Run: the run directory, relative to `--logdir` (`multirun/<sweep>/3_loss=bce,seed=1`, `runs/<time>_bce_<id>`):
  the event files sit in the run directory itself.
- TIME SERIES and SCALARS show tag groups (the tag up to its first "/") in name order and open the first two.
  `train/*`, `val/*` and `test/*` (the held-out split, named as val/*; its group sorts first) keep their names; everything else about the training step (the numerics monitors,
  throughput, the fp16 scaler, histograms) is filed under `watch/`, which sorts after them (`tb_tag`). The
  summary, the report and the monitors keep the keys `numerics/...`, `perf/...`, `amp/...`; only the event
  files use the TensorBoard names, and `read_scalars` maps them back.
- HPARAMS: the keys the sweep varies, then loss, head and seed, lead the columns (`hparam_columns`); the
  metrics are ordered as `HPARAM_METRICS`.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import torch
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorboard.plugins.hparams import metadata as hp_metadata
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import histogram

from lossbench import config
from lossbench.config import CONFIGS, flatten

EVENTS = "events.out.tfevents.*"
# HPARAMS metric columns in this order; TensorBoard shows the first five until more are ticked.
# The diagnosis and the numerics summary among the first five (watch/stalled, watch/saturated_frac, ...).
HPARAM_METRICS = ("val/auc", "numerics/stalled", "numerics/saturated_frac", "numerics/dead_frac",
                  "numerics/clamped_frac", "val/ap", "val/balanced_accuracy", "val/nll", "val/ece",
                  "val/steps_to_target", "val/diverged")
LEADING = ("loss", "head", "seed")  # HPARAMS columns that follow the swept keys, in every run
# String hyperparameters whose every possible value is known: declared as discrete domains, so that the
# HPARAMS filters offer them as checkboxes. A declared domain must hold every value of every run that
# TensorBoard shows together (the filter drops the others), so sweep values are never used as one.
DOMAINS = {"loss": config.CHOICES["loss.name"], "loss.name": config.CHOICES["loss.name"], "head": config.HEADS, "data.name": config.DATASETS,
           "model.name": config.MODELS, "optim.name": config.OPTIMS, "trainer.precision": config.PRECISIONS,
           "status": ("completed", "diverged", "pruned", "failed")}
# Custom scalars: categories in this order, one metric per chart (in a chart, colour tells runs apart).
CATEGORIES = {
    "train": ("train/loss",),
    "val": ("val/auc", "val/ap", "val/balanced_accuracy", "val/nll", "val/ece", "val/accuracy", "val/loss",
            "val/mean_confidence", "val/"),  # "val/": any other val metric this run logs, after these
    "test": ("test/auc", "test/ap", "test/balanced_accuracy", "test/nll", "test/ece", "test/accuracy", "test/loss",
             "test/mean_confidence", "test/"),  # the held-out split: reported at the same steps, never chosen on
    "numerics": ("numerics/saturated_frac", "numerics/clamped_frac", "numerics/dead_frac", "numerics/loss_gap",
                 "numerics/max_abs_logit", "numerics/grad_norm", "numerics/max_grad_norm", "numerics/pairless_frac",
                 "numerics/nonfinite_loss", "numerics/nonfinite_grad"),
    "dual variables": ("variables/a", "variables/b", "variables/alpha"),
    "speed": ("perf/samples_per_sec",),
    "fp16 scaler": ("amp/scale", "amp/skipped_steps"),
}
MIN_HISTOGRAMS = 2  # fewer cannot show a change: DISTRIBUTIONS draws nothing from a single step


def has_events(run_dir: Path) -> bool:
    """Does the directory hold TensorBoard events (an earlier attempt's; from lossbench 0.1, in <run>/tb)?"""
    return any(Path(run_dir).rglob(EVENTS))


def tb_tag(key: str) -> str:
    """The TensorBoard tag of a logged key: train/*, val/* and test/* as they are, the rest under watch/ (after
    them)."""
    group, _, name = key.partition("/")
    if group in ("train", "val", "test", "variables"):  # a loss's own trained variables (auc_margin's a, b, alpha): after val
        return key
    return f"watch/{name}" if group in ("numerics", "perf", "hist") else f"watch/{group}_{name}"


def add_scalars(writer: SummaryWriter, values: dict[str, float], step: int) -> None:
    """Write values (keys as the monitors name them) as one event, under their TensorBoard tags (tb_tag)."""
    summary = Summary(value=[Summary.Value(tag=tb_tag(k), simple_value=float(v)) for k, v in values.items()])
    writer.file_writer.add_summary(summary, step)


def histogram_every(hist_every: int, max_steps: int) -> int:
    """numerics.hist_every, or 0 (no histograms) when the run is too short to log MIN_HISTOGRAMS of them."""
    return hist_every if hist_every and max_steps // hist_every >= MIN_HISTOGRAMS else 0


def read_scalars(run_dir: Path, keys) -> dict[str, dict[int, float]]:
    """The run's scalars for the given keys (as the monitors name them), read back from its event files: all of
    them, in order, a later value for a step winning. Runs written before the events moved into the run
    directory (they are in <run>/tb) are read too."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    run_dir = Path(run_dir)
    where = run_dir if any(Path(run_dir).glob(EVENTS)) else run_dir / "tb"
    if not any(where.glob(EVENTS)):
        return {}
    acc = ea.EventAccumulator(str(where), size_guidance={ea.SCALARS: 0, ea.TENSORS: 1, ea.HISTOGRAMS: 1,
                                                         ea.COMPRESSED_HISTOGRAMS: 1, ea.IMAGES: 1, ea.AUDIO: 1})
    acc.Reload()
    tags = set(acc.Tags().get("scalars", []))
    out = {}
    for key in keys:
        tag = tb_tag(key) if tb_tag(key) in tags else key  # old runs used the keys as tags
        if tag in tags:
            out[key] = {e.step: e.value for e in acc.Scalars(tag)}
    return out


def custom_layout(keys) -> dict:
    """The custom-scalars layout of a run that logged these keys: no chart without data."""
    keys, layout = set(keys), {}
    for title, wanted in CATEGORIES.items():
        chosen = [k for k in wanted if k in keys]
        chosen += sorted(k for prefix in wanted if prefix.endswith("/") for k in keys
                         if k.startswith(prefix) and k not in wanted)
        charts = {tb_tag(k): ["Multiline", [f"^{re.escape(tb_tag(k))}$"]] for k in chosen}
        if charts:
            layout[title] = charts
    return layout


def hparam_values(params: dict) -> dict[str, int | float | str | bool]:
    """Dotted keys with TensorBoard-legal values (lists and None become strings)."""
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flatten(params).items()}


def hparam_columns(params: dict, overrides: list[str], varied: list[str] | None) -> tuple[dict, set[str]]:
    """The HPARAMS entry of a run: ({column: value}, the columns marked "differs").

    Columns: each override of the run by the key it names (a config group by its choice: `loss=bce`,
    `+regime=scale50`, `data=imbalanced`), loss, head and seed, and every other config value (dotted keys).
    TensorBoard orders the columns by (not differs, name) and shows the first five: the keys that the sweep
    varies (`varied`: lossbench.sweeps.sweep.varied_keys) and loss, head and seed are marked differs, so they lead.

    TensorBoard takes the columns (names, domains, differs) from one run's declaration for every run it shows:
    all runs declare the same config keys and complete domains, and a single run (varied=None) marks only
    loss, head and seed, so a logdir mixing sweeps and runs still shows every run in every column.
    """
    from lossbench.runs.overrides import parse_overrides

    flat, columns = hparam_values(params), {}
    for key, value in parse_overrides(overrides):
        columns[key] = flat.get(key, value if isinstance(value, (bool, int, float, str)) else str(value))
    lead = set(LEADING) | set(varied or ())
    columns.setdefault("loss", flat.get("loss.name"))
    columns.setdefault("head", flat.get("head"))
    columns.setdefault("seed", flat.get("seed"))
    columns.update({k: v for k, v in flat.items() if k not in columns and k != "loss.name"})
    return {k: v for k, v in columns.items() if v is not None}, lead


def _domain(name: str, value) -> tuple[int, list | None]:
    """(data type, discrete domain or None) of an HPARAMS column."""
    if isinstance(value, bool):
        return api_pb2.DATA_TYPE_BOOL, [False, True]
    if isinstance(value, (int, float)):
        return api_pb2.DATA_TYPE_FLOAT64, None  # HPARAMS filters numbers by an interval
    if name in DOMAINS:
        return api_pb2.DATA_TYPE_STRING, list(DOMAINS[name])
    if "." not in name and (CONFIGS / name).is_dir():  # a config group: its choices are the files in configs/
        return api_pb2.DATA_TYPE_STRING, sorted(p.stem for p in (CONFIGS / name).glob("*.yaml"))
    return api_pb2.DATA_TYPE_STRING, None


def hparams_summaries(columns: dict, lead: set[str], metrics: list[str], trial: str, failed: bool) -> list[Summary]:
    """The hparams plugin's three records of a run (experiment, session start, session end), built from
    TensorBoard's own protos: torch's summary.hparams cannot mark a column as differs, and that flag is what
    TensorBoard orders the columns by."""
    experiment = api_pb2.Experiment(time_created_secs=time.time())
    start = plugin_data_pb2.SessionStartInfo(group_name=trial, start_time_secs=time.time())
    for name, value in columns.items():
        dtype, domain = _domain(name, value)
        info = experiment.hparam_infos.add(name=name, type=dtype, differs=name in lead)
        if domain is not None:
            info.domain_discrete.extend(domain)
        if isinstance(value, bool):
            start.hparams[name].bool_value = value
        elif isinstance(value, (int, float)):
            start.hparams[name].number_value = value
        else:
            start.hparams[name].string_value = value
    for tag in metrics:
        experiment.metric_infos.add(name=api_pb2.MetricName(tag=tag))
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_FAILURE if failed else api_pb2.STATUS_SUCCESS,
                                         end_time_secs=time.time())
    records = [(hp_metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment)),
               (hp_metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)),
               (hp_metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))]
    return [Summary(value=[Summary.Value(tag=tag, metadata=hp_metadata.create_summary_metadata(data),
                                         tensor=hp_metadata.NULL_TENSOR)]) for tag, data in records]


def _wait_to_sort_after(logdir: Path) -> None:
    """TensorBoard reads a run's event files in name order; a name starts with its creation second, then host,
    pid and an unpadded counter (...1795802457.vm.1788.10 sorts before ...1795802457.vm.1788.9). A writer
    opened in the same second as an earlier attempt's file waits for the next second (at most one), so that
    its events, purge included, are read after that attempt's."""
    seconds = [int(f.name.split(".")[3]) for f in logdir.glob(EVENTS) if f.name.split(".")[3].isdigit()]
    while seconds and int(time.time()) <= max(seconds):
        time.sleep(0.05)


class Logger:
    """A SummaryWriter on a run directory that may be disabled (logger.enabled=false), with the helpers a run
    needs. Keys are logged under their TensorBoard names (tb_tag)."""

    def __init__(self, run_dir: Path, enabled: bool = True, flush_secs: int = 30, purge_step: int | None = None):
        self.run_dir = Path(run_dir)
        logdir = self.run_dir  # the run directory itself: TensorBoard names the run after it
        # purge_step (resume): TensorBoard hides events at steps >= purge_step that an earlier attempt wrote
        # after its last checkpoint, so a resumed run's curves continue without duplicates.
        if enabled and purge_step is not None:
            _wait_to_sort_after(logdir)
        self.writer = SummaryWriter(str(logdir), flush_secs=flush_secs, purge_step=purge_step) if enabled else None
        self.step, self.keys = 0, set()  # last step and keys written by scalars(): hparams() goes after them
        self.layout_pending = False

    def layout(self) -> None:
        """Write the custom-scalars layout once the run has logged both training and validation values (its
        first evaluation after its first log point), from the keys logged by then: no empty chart."""
        self.layout_pending = self.writer is not None

    def scalars(self, values: dict[str, float], step: int) -> None:
        """All values as one event (one Summary with a value per tag, as TensorFlow's writers do): a dozen
        add_scalar calls cost a dozen events through the writer's queue, about 10x the time."""
        if self.writer:
            add_scalars(self.writer, values, step)
            self.step, self.keys = max(self.step, step), self.keys | values.keys()
            if self.layout_pending and any(k.startswith("train/") for k in self.keys) and any(
                    k.startswith("val/") for k in self.keys):
                self.writer.add_custom_scalars(custom_layout(self.keys))
                self.layout_pending = False

    def histograms(self, step: int, z: torch.Tensor, p: torch.Tensor) -> None:
        """Histograms of logits and probabilities; non-finite values are counted, never histogrammed. One event
        (as scalars())."""
        if not self.writer:
            return
        out = []
        for name, t in (("logits", z), ("probs", p)):
            values, bad = finite_part(t)
            out.append(Summary.Value(tag=tb_tag(f"numerics/{name}_nonfinite"), simple_value=float(bad)))
            if values.numel():  # 30 buckets, as TensorBoard's own histogram summary (its default: ~1500, 4x the time)
                out.extend(histogram(tb_tag(f"hist/{name}"), values, bins=30).value)
        self.writer.file_writer.add_summary(Summary(value=out), step)

    def pr_curve(self, labels: torch.Tensor, probs: torch.Tensor, step: int) -> None:
        if self.writer and bool(torch.isfinite(probs).all()):
            self.writer.add_pr_curve("val/pr_curve", labels.int(), probs.float().clamp(0, 1), step)

    def hparams(self, params: dict, metrics: dict[str, float]) -> None:
        """The run's HPARAMS entry (hparam_columns) and final metrics, into this run's own event file
        (SummaryWriter.add_hparams would make a sub-run)."""
        if not self.writer:
            return
        from lossbench.runs.overrides import job_overrides, varied_keys

        columns, lead = hparam_columns(params, job_overrides(self.run_dir), varied_keys(self.run_dir))
        metrics = {k: (v if math.isfinite(v) else float("nan")) for k, v in metrics.items()}
        order = [k for k in HPARAM_METRICS if k in metrics] + sorted(k for k in metrics if k not in HPARAM_METRICS)
        trial = f"{self.run_dir.name} ({self.run_dir.parent.name})"  # the Trial ID column: what the run is first
        for summary in hparams_summaries(columns, lead, [tb_tag(k) for k in order], trial,
                                         params.get("status") == "failed"):
            self.writer.file_writer.add_summary(summary)
        # The HPARAMS tab reads each metric's last value from the run's scalars: val/* curves already end at the
        # final evaluation; only the others (steps to target, diverged) are added, at the last step (step 0
        # would draw every curve back to the origin).
        extra = {k: v for k, v in metrics.items() if k not in self.keys}
        if extra:
            self.scalars(extra, self.step)

    def close(self) -> None:
        if self.writer:
            self.writer.close()


def finite_part(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The finite values of x (flattened, float32, on the host) and how many were not finite."""
    x = x.detach().float().flatten().cpu()
    ok = torch.isfinite(x)
    return x[ok], int((~ok).sum())
