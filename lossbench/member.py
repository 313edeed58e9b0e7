"""One run inside the training loop: its state (a `Member` of a stack), its directory and its files.

A run directory belongs to one run. What a new attempt may do with a directory is decided here, before any
data is loaded, from what the directory holds (:func:`plan`):

==============================  ============================  =============================  ================
directory holds                 plain run                     trainer.resume                 skip_completed
==============================  ============================  =============================  ================
nothing                         train                         refused (no checkpoint)        train
a finished run (completed or    refused                       refused (nothing to resume)    skipped
diverged), or a checkpoint at
max_steps whose summary.json
is unreadable or lost
a checkpoint before max_steps   refused                       resumed                        resumed
a failed attempt, no checkpoint refused                       refused (no checkpoint)        trained again
a failed run whose checkpoint   refused                       refused (nothing to resume)    skipped (summary
is at max_steps                                                                              rebuilt, the old
                                                                                             one kept aside)
a diverged run                  refused                       refused (nothing to resume)    skipped
an unreadable summary.json and  refused                       refused                        refused
no checkpoint
another config's run            refused                       refused                        refused
a link, FIFO or device, or a    refused                       refused                        refused
directory where a file belongs
==============================  ============================  =============================  ================

"Refused" is a one-line ConfigError that names what the directory holds and what to do; nothing in the
directory is written. A summary is checked against SUMMARY_SCHEMA (one that fails counts as unreadable) and a
checkpoint is loaded as data (``torch.load(weights_only=True)``, store.py) and checked against
CHECKPOINT_SCHEMA: a damaged or foreign one is refused naming the file and the entry, and the summary next to
it is kept.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lossbench import ConfigError, LossbenchError, data, diagnosis, losses, metrics, models, teacher
from lossbench.config import KD_LOSSES, LOWER_IS_BETTER, check_task, flatten, resolve_head
from lossbench.logger import Logger, has_events, histogram_every
from lossbench.numerics import Monitor
from lossbench.provenance import code as code_provenance
from lossbench.store import (
    CHECKPOINT,
    SUMMARY,
    check_run_dir,
    load_checkpoint,
    read_json,
    read_regular,
    save_checkpoint,
    write_bytes,
    write_json,
)

# final results: trainer.skip_completed does not train them again ("pruned": stopped by successive halving)
FINISHED = ("completed", "diverged", "pruned")
# Config keys a resume may change: they do not change what is trained (max_steps/epochs: train longer).
RESUME_MAY_CHANGE = ("trainer.resume", "trainer.skip_completed", "trainer.max_steps", "trainer.epochs",
                     "trainer.threads", "trainer.log_every", "trainer.eval_every", "trainer.eval_batch_size",
                     "trainer.ckpt_every", "trainer.device", "trainer.sync_debug", "data.root", "data.download",
                     "logger.", "numerics.")
CHECKPOINT_FORMAT = 2  # 2: loaded with weights_only=True; 1 (no "format" key): lossbench 0.1, also loads


def config_changes(old: dict, new: dict) -> list[str]:
    """The keys, outside RESUME_MAY_CHANGE, whose values differ: 'key: old -> new'."""
    old, new = flatten(old), flatten(new)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(old.keys() | new.keys())
            if old.get(k) != new.get(k) and not k.startswith(RESUME_MAY_CHANGE)]


def _same_run(old_config: dict | None, resolved: dict, run_dir: Path, what: str) -> None:
    changed = config_changes(old_config or {}, resolved) if old_config is not None else []
    if changed:
        raise ConfigError(
            f"{run_dir} holds {what} of a different config ({'; '.join(changed[:6])}"
            f"{'; ...' if len(changed) > 6 else ''}); lossbench never writes one run into another's directory. "
            "Repeat the original overrides (in <run dir>/.hydra/overrides.yaml), or use another hydra.run.dir "
            "(for a sweep: another hydra.sweep.dir)."
        )


@dataclass
class Plan:
    """What an attempt does with its run directory: 'fresh', 'resume' or 'skip'."""

    action: str
    out_dir: Path
    checkpoint: dict | None = None  # loaded, for 'resume'
    previous: dict | None = None  # the finished run's summary, for 'skip'


def plan(cfg: DictConfig, out_dir: Path, max_steps: int | None = None) -> Plan:
    """Decide from the directory's contents what this attempt may do (see the module docstring).

    max_steps: the run's length when known without its data (None with trainer.epochs: a checkpoint is then
    taken as finished only by its summary)."""
    tc = cfg.trainer
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resume = tc.resume
    if resume and resume is not True:
        out_dir = Path(str(resume))  # trainer.resume=<run dir>: continue that run, in that directory
    check_run_dir(out_dir)  # links, FIFOs, devices, a directory named summary.json: refused before anything
    summary_path, ck_path = out_dir / SUMMARY, out_dir / CHECKPOINT
    previous = read_json(summary_path)
    why_damaged = summary_problem(previous) if summary_path.exists() else None
    damaged = why_damaged is not None
    if damaged:
        previous = None
    if resume:
        if previous is not None and previous.get("status") == "diverged":
            raise ConfigError(
                f"Nothing to resume in {out_dir}: it holds a diverged run, a final result (a diverged run keeps no "
                "checkpoint; it would diverge again). Start a new run in another directory to train this config.")
        if not ck_path.exists():
            raise ConfigError(
                f"trainer.resume={str(resume).lower() if resume is True else resume}: no checkpoint at {ck_path}. "
                "Point trainer.resume at a run directory that holds one (trainer.resume=true means this run's "
                "hydra.run.dir), or drop trainer.resume to start afresh."
            )
        return Plan("resume", out_dir, checkpoint=read_checkpoint(ck_path))

    # A job that submitit (SLURM, or submitit_local) requeued after a preemption or timeout runs again in its own
    # directory and must continue from its checkpoint: under submitit, skip_completed is implied.
    if tc.skip_completed or os.environ.get("SUBMITIT_EXECUTOR"):
        if previous is not None and previous.get("status") in FINISHED:
            _same_run(previous.get("config"), resolved, out_dir, f"a {previous['status']} run")
            return Plan("skip", out_dir, previous=previous)
        if ck_path.exists():
            ck = read_checkpoint(ck_path)
            _same_run(ck.get("config"), resolved, out_dir, "a checkpoint")
            if max_steps is not None and ck["step"] >= max_steps:  # finished, but its summary is lost or wrong
                return Plan("skip", out_dir, previous=rebuild_summary(out_dir, ck, why_damaged, previous))
            return Plan("resume", out_dir, checkpoint=ck)
        if damaged:
            raise ConfigError(
                f"{summary_path} is unreadable ({why_damaged}) and {out_dir} holds no checkpoint, so what "
                "it recorded cannot be told (a diverged run keeps no checkpoint). lossbench will not write into "
                "it: move the directory aside, or use another hydra.sweep.dir."
            )
        if previous is not None:
            _same_run(previous.get("config"), resolved, out_dir, f"a {previous.get('status')} attempt")
        return Plan("fresh", out_dir)  # never started, or failed before its first checkpoint: from step 0

    held = ([f"a run (status {previous.get('status')})"] if previous is not None else []) + \
        (["an unreadable summary.json"] if damaged else []) + (["a checkpoint"] if ck_path.exists() else []) + \
        (["TensorBoard events"] if has_events(out_dir) else [])
    if held:
        raise ConfigError(
            f"{out_dir} already holds {' and '.join(held)}; lossbench never writes two runs into one directory. "
            "Use trainer.resume=true to continue it, trainer.skip_completed=true in a rerun sweep, or another "
            "hydra.run.dir."
        )
    return Plan("fresh", out_dir)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_history(x) -> bool:
    return isinstance(x, list) and all(isinstance(h, dict) and _is_int(h.get("step")) for h in x)


def _is_number_dict(x) -> bool:
    return isinstance(x, dict) and all(isinstance(v, (int, float)) or v is None for v in x.values())


STATUSES = ("running", "completed", "diverged", "pruned", "interrupted", "failed")
# What a summary.json must hold to be taken as a run's record: entry -> (check, what it must be).
SUMMARY_SCHEMA = {
    "status": (lambda v: v in STATUSES, f"one of {', '.join(STATUSES)}"),
    "config": (lambda v: isinstance(v, dict), "an object"),
    "steps": (lambda v: v is None or (_is_int(v) and v >= 0), "an integer >= 0"),
    "final": (_is_number_dict, "an object of metric values"),
    "best": (_is_number_dict, "an object of metric values"),
    "history": (_is_history, "a list of evaluations with integer steps"),
}
REQUIRED_WHEN_FINISHED = ("config", "steps", "final", "history")


def summary_problem(s) -> str | None:
    """Why a parsed summary.json cannot be taken as a run's record (naming the entry), or None."""
    if not isinstance(s, dict):
        return "truncated, not JSON, or not an object"
    for key, (ok, what) in SUMMARY_SCHEMA.items():
        if key in s and not (s[key] is None and key != "status") and not ok(s[key]):
            return f"its {key!r} is not {what}"
        if key not in s and (key == "status" or (key in REQUIRED_WHEN_FINISHED and s.get("status") in FINISHED)):
            return f"it has no {key!r}"
    if s.get("status") in FINISHED and not isinstance(s.get("final"), dict):
        return "its 'final' is not an object of metric values"
    return None


def _is_tensor_dict(x) -> bool:
    return isinstance(x, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in x.items())


# What a checkpoint must hold to be resumed or rebuilt from: entry -> (check, what it must be). "format" and
# the entries of older formats (the torch RNG state) are not checked.
CHECKPOINT_SCHEMA = {
    "step": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "model": (_is_tensor_dict, "a dict of tensors (a state_dict)"),
    "optimizer": (lambda v: isinstance(v, dict) and isinstance(v.get("state"), dict)
                  and isinstance(v.get("param_groups"), list), "an optimiser state_dict (state, param_groups)"),
    "scaler": (lambda v: isinstance(v, dict), "a GradScaler state_dict"),
    "generator": (lambda v: isinstance(v, torch.Tensor) and v.dtype == torch.uint8, "a generator state (uint8 tensor)"),
    "perm": (lambda v: v is None or (isinstance(v, torch.Tensor) and not v.is_floating_point()),
             "an integer tensor or null"),
    "best": (lambda v: isinstance(v, dict), "a dict"),
    "steps_to_target": (lambda v: v is None or _is_int(v), "an integer or null"),
    "monitor": (lambda v: isinstance(v, dict), "a numerics monitor state (a dict)"),
    "history": (_is_history, "a list of evaluations with integer steps"),
    "config": (lambda v: isinstance(v, dict) and isinstance(v.get("trainer"), dict)
               and isinstance(v.get("model"), dict), "a resolved config (a dict with trainer and model)"),
    "device": (lambda v: isinstance(v, str), "a device type (a string)"),
}


def read_checkpoint(path: Path) -> dict:
    """A checkpoint loaded as data and checked against CHECKPOINT_SCHEMA: a ConfigError names the file and the
    first entry that is missing or of the wrong type."""
    ck = load_checkpoint(path)  # ConfigError naming the file if damaged or not plain data
    if not isinstance(ck, dict):
        problem = f"it holds a {type(ck).__name__}, not a dict"
    else:
        problem = next((f"its {key!r} entry is missing" if key not in ck else f"its {key!r} entry is not {what}"
                        for key, (ok, what) in CHECKPOINT_SCHEMA.items() if key not in ck or not ok(ck[key])), None)
    if problem:
        raise ConfigError(
            f"{path} is not a lossbench checkpoint ({problem}). Nothing was changed; point trainer.resume at a "
            "lossbench run directory, or move the file aside and start afresh."
        )
    return ck


def _load_entry(path: Path, entry: str, load) -> None:
    """Load one checkpoint entry into the run; a ConfigError naming the file and entry if it does not fit."""
    try:
        load()
    except Exception as e:
        first = " ".join(str(e).split())[:200]
        raise ConfigError(
            f"{path}: its {entry!r} entry does not fit this run ({type(e).__name__}: {first}). Nothing was "
            "changed; the checkpoint is damaged or was not written by this run."
        ) from None


def rebuild_summary(out_dir: Path, ck: dict, why_damaged: str | None, previous: dict | None = None) -> dict:
    """The summary of a run whose checkpoint shows it finished, when summary.json was unreadable, lost, or not
    final (a run that failed after its last checkpoint): what the checkpoint holds (history, best, convergence,
    monitor totals). The file it replaces is kept aside, byte for byte."""
    monitor = Monitor(torch.device("cpu"), None)
    _load_entry(out_dir / CHECKPOINT, "monitor", lambda: monitor.load_state_dict(ck["monitor"]))
    if (out_dir / SUMMARY).exists():
        what = "unreadable" if why_damaged else "replaced"
        aside = out_dir / f"{SUMMARY}.{what}-{int(time.time())}"
        write_bytes(aside, read_regular(out_dir / SUMMARY))
    history = ck.get("history") or []
    summary = {
        "status": "completed", "config": ck["config"], "steps": ck["step"], "max_steps": ck["step"],
        "device": ck.get("device"), "final": {k: v for k, v in history[-1].items() if k != "step"} if history else {},
        "best": ck.get("best", {}), "convergence": {
            "target_metric": ck["config"]["trainer"].get("target_metric"),
            "target_value": ck["config"]["trainer"].get("target_value"),
            "steps_to_target": ck.get("steps_to_target")},
        "numerics": {**monitor.summary(), "last": dict(ck.get("last_window") or {})}, "history": history,
        "rebuilt": f"from {CHECKPOINT}: {SUMMARY} was " + (f"unreadable ({why_damaged})" if why_damaged else
                                                          "missing" if previous is None else
                                                          f"not final (status {previous.get('status')})"),
    }
    summary["diagnosis"] = diagnosis.diagnose(summary)
    if previous is not None:
        summary["replaced"] = {k: previous.get(k) for k in ("status", "steps", "error") if k in previous}
    write_json(out_dir / SUMMARY, summary)
    was = "unreadable" if why_damaged else "lost" if previous is None else f"{previous.get('status')}, not final"
    kept = "" if previous is None and not why_damaged else " (the old one kept aside)"
    print(f"lossbench: {out_dir} holds a finished run whose {SUMMARY} was {was}; rebuilt it from {CHECKPOINT}{kept}")
    return summary


def record_failure(out_dir: Path, cfg: DictConfig, error: str, locked: bool = False) -> bool:
    """A job that could not run leaves a summary saying why, in a directory that holds no other run's files
    (nothing yet, or only an earlier failed attempt's summary). locked: the caller holds the run's lock.
    Returns whether it wrote one (False: the directory is another run's, and nothing in it was touched)."""
    from lossbench.store import run_lock

    path = out_dir / SUMMARY
    try:
        check_run_dir(out_dir)
        old = read_json(path)
        if (path.exists() and not (isinstance(old, dict) and old.get("status") in ("running", "failed"))) or \
                (out_dir / CHECKPOINT).exists() or (old is None and has_events(out_dir)):
            return False
        with contextlib.nullcontext() if locked else run_lock(out_dir):  # never into a live run's directory
            try:
                config = OmegaConf.to_container(cfg, resolve=True)
            except Exception:  # an interpolation that cannot be resolved: keep it as written
                config = OmegaConf.to_container(cfg, resolve=False)
            write_json(path, {**(old or {}), "status": "failed", "error": error, "config": config})
            return True
    except (LossbenchError, OSError):
        return False


def discard(out_dir: Path) -> None:
    """Remove what a fresh attempt wrote before it trained (its 'running' summary, its empty event files)."""
    (out_dir / SUMMARY).unlink(missing_ok=True)
    for f in out_dir.rglob("events.out.tfevents.*"):
        f.unlink()
    if (out_dir / "tb").is_dir() and not any((out_dir / "tb").iterdir()):
        (out_dir / "tb").rmdir()


def better(metric: str, new: float, old: float | None) -> bool:
    if not math.isfinite(new):
        return False
    if old is None or not math.isfinite(old):
        return True
    return new < old if metric in LOWER_IS_BETTER else new > old


def reached(metric: str, value: float, target: float) -> bool:
    return math.isfinite(value) and (value <= target if metric in LOWER_IS_BETTER else value >= target)


def _float32(x: float) -> float:
    """x as the float32 weights see it: past float32's range it is infinite (torch refuses to convert it, where
    the update it gives would be infinite anyway), so that such an lr diverges like any exploding one."""
    return x if abs(x) <= torch.finfo(torch.float32).max else math.copysign(math.inf, x)


def make_optimizer(oc: DictConfig, params, objective: nn.Module | None = None) -> torch.optim.Optimizer:
    """The run's optimiser over the model's parameters (and, for optim=pesg, the loss's dual variables)."""
    lr, momentum, weight_decay = _float32(oc.lr), _float32(oc.momentum), _float32(oc.weight_decay)
    if oc.name == "pesg":
        from lossbench.pesg import PESG

        duals = dict(objective.named_parameters()) if objective is not None else {}  # auc_margin: a, b, alpha
        return PESG(params, duals, getattr(objective, "margin", 1.0), lr=lr, momentum=momentum,
                    weight_decay=weight_decay, epoch_decay=oc.epoch_decay, clip_value=oc.clip_value,
                    decay_steps=tuple(oc.decay_steps), decay_factor=oc.decay_factor)
    if oc.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    cls = torch.optim.Adam if oc.name == "adam" else torch.optim.AdamW
    params = list(params)
    # Fused: one kernel per parameter instead of a handful of ops (about 20% less CPU time per MLP step).
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return cls(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay, fused=fused or None)


@dataclass
class Member:
    """One run's state in the loop: its config and directory, model, optimiser, data order, monitor, logger
    and record (history, best, status). The loop drives it; it never looks at other members."""

    cfg: DictConfig
    plan: Plan
    resolved: dict
    head: str
    ds: data.Dataset
    objective: losses.Objective
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    gen: torch.Generator
    monitor: Monitor
    log: Logger
    max_steps: int
    steps_per_epoch: int
    batch_size: int
    start_step: int = 0
    saved_step: int | None = None  # the step of the checkpoint on disk (written or resumed from), if any
    perm: torch.Tensor | None = None
    status: str = "running"
    history: list = field(default_factory=list)
    best: dict = field(default_factory=dict)
    final: dict = field(default_factory=dict)
    steps_to_target: int | None = None
    steps: int = 0
    z_val: torch.Tensor | None = None
    z_test: torch.Tensor | None = None  # the last evaluation's test logits (None: the data has no test split)
    summary: dict = field(default_factory=dict)
    last_window: dict = field(default_factory=dict)  # the monitors' last detail window (numerics.last)
    finished: bool = False  # its last records are written

    def __post_init__(self) -> None:
        tc = self.cfg.trainer  # plain values for the hot loop: a DictConfig attribute read costs ~20 us
        self.on_nonfinite, self.ckpt_every = tc.on_nonfinite, tc.ckpt_every
        self.target_metric, self.target_value = tc.target_metric, tc.target_value
        self.hist_every = histogram_every(self.cfg.numerics.hist_every, self.max_steps)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.pos_share = tc.get("pos_share")
        self.jitter = int(self.cfg.data.get("jitter") or 0)  # random shifts of the training images, in pixels
        self._class_indices: tuple[torch.Tensor, torch.Tensor] | None = None
        self.skip_nonfinite = self.on_nonfinite == "skip" and not self.scaler.is_enabled()
        # Gradients are checked every step only where a per-step answer is needed (see numerics.py): the skip
        # decision, and fp16's count of the steps the GradScaler skips.
        self.grads_every_step = self.skip_nonfinite or self.scaler.is_enabled()

    def class_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training split's positive and negative indices (device tensors; found once: one host sync)."""
        if self._class_indices is None:
            y = self.ds.y_train
            self._class_indices = ((y == 1).nonzero().squeeze(1), (y == 0).nonzero().squeeze(1))
            if not all(len(i) for i in self._class_indices):
                raise ConfigError(f"trainer.pos_share={self.pos_share:g} needs positives and negatives in the "
                                  f"training split; it has {[len(i) for i in self._class_indices]}.")
        return self._class_indices

    @property
    def out_dir(self) -> Path:
        return self.plan.out_dir

    def record_eval(self, step: int, values: dict[str, float]) -> None:
        """One evaluation: the final values, the history, the best and the convergence target. Best is chosen on
        validation only: best[val/X] is the best val/X so far, and best[test/X] the test/X of that same
        evaluation (retrospective selection on validation); no test value is ever compared."""
        self.final = values
        self.history.append({"step": step, **values})
        for k, v in values.items():
            if k.startswith("val/") and better(k, v, self.best.get(k)):
                self.best[k] = v
                if (t := "test/" + k.removeprefix("val/")) in values:
                    self.best[t] = values[t]
        if self.target_metric and self.steps_to_target is None and reached(
            self.target_metric, values.get(self.target_metric, math.nan), self.target_value
        ):
            self.steps_to_target = step

    def checkpoint(self, step: int) -> None:
        """The run's whole state as plain data (tensors, numbers, strings, lists, dicts): what
        ``torch.load(weights_only=True)`` accepts."""
        save_checkpoint(self.out_dir / CHECKPOINT, {
            "format": CHECKPOINT_FORMAT, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "generator": self.gen.get_state(), "perm": self.perm, "step": step,
            "best": self.best, "steps_to_target": self.steps_to_target, "monitor": self.monitor.state_dict(),
            "history": self.history, "config": self.resolved, "device": self.device_type,
            "objective": self.objective.state_dict(),  # auc_margin's a, b, alpha; the others' fixed buffers
            "last_window": self.last_window,  # what the diagnosis reads (a summary rebuilt from here has it too)
        })
        self.saved_step = step

    @property
    def device_type(self) -> str:
        return self.params[0].device.type

    def restore(self, ck: dict) -> None:
        check_resumable(ck, self.resolved, self.device_type, self.max_steps, self.out_dir)
        path = self.out_dir / CHECKPOINT
        _load_entry(path, "model", lambda: self.model.load_state_dict(ck["model"]))
        if "objective" in ck:  # checkpoints before the AUC losses have none (and no loss state to restore)
            _load_entry(path, "objective", lambda: self.objective.load_state_dict(ck["objective"]))
        _load_entry(path, "optimizer", lambda: self.optimizer.load_state_dict(ck["optimizer"]))
        _load_entry(path, "scaler", lambda: self.scaler.load_state_dict(ck["scaler"]))
        _load_entry(path, "generator", lambda: self.gen.set_state(ck["generator"]))
        _load_entry(path, "monitor", lambda: self.monitor.load_state_dict(ck["monitor"]))
        self.perm = ck["perm"].to(self.params[0].device) if ck["perm"] is not None else None
        n = len(self.ds.y_train)
        # an epoch's order of training rows: a permutation, or with trainer.pos_share the sampler's draw
        if self.perm is not None and (self.perm.dim() != 1 or not len(self.perm) or int(self.perm.min()) < 0
                                      or int(self.perm.max()) >= n):
            raise ConfigError(f"{path}: its 'perm' entry is not an order of this run's {n} training samples. "
                              "Nothing was changed; the checkpoint is damaged or not this run's.")
        self.start_step = self.steps = self.saved_step = ck["step"]
        self.best, self.steps_to_target, self.history = ck["best"], ck["steps_to_target"], ck["history"]
        self.final = {k: v for k, v in self.history[-1].items() if k != "step"} if self.history else {}
        self.last_window = dict(ck.get("last_window") or {})
        print(f"lossbench: resuming {self.out_dir} from step {self.start_step}")

    def back_to_checkpoint(self) -> None:
        """Record the run as far as its checkpoint (or its start) reaches: after a write failed for a full disk,
        the summary's steps are the checkpoint's, so that a resume continues exactly what the summary says."""
        self.steps = self.saved_step if self.saved_step is not None else self.start_step
        self.history = [h for h in self.history if h["step"] <= self.steps]
        self.final = {k: v for k, v in self.history[-1].items() if k != "step"} if self.history else {}

    def finish(self, times: dict[str, float]) -> dict:
        """Write the run's last records: per-class recall, PR curve, hparams, summary.json; close the writer."""
        s = self.summary
        s.update({
            "status": self.status, "steps": self.steps, **times,
            "samples_per_sec": ((self.steps - self.start_step) * self.batch_size / times["train_time_s"]
                                if times["train_time_s"] > 0 else None),
            "final": self.final, "best": self.best,
            "convergence": {"target_metric": self.target_metric, "target_value": self.target_value,
                            "steps_to_target": self.steps_to_target},
            "numerics": {**self.monitor.summary(), "last": self.last_window}, "history": self.history,
        })
        s["diagnosis"] = diagnosis.diagnose(s)
        if duals := self.objective.duals() if isinstance(self.objective, losses.Objective) else {}:
            s["dual"] = {k: float(v) for k, v in duals.items()}  # auc_margin: a, b, alpha at the end
        if self.scaler.is_enabled():
            s["amp"] = {"final_scale": self.scaler.get_scale(), "skipped_steps": self.monitor.totals[0]["nonfinite_grad"]}
        try:
            if self.z_val is not None and self.status != "failed":
                s["per_class_recall"] = metrics.per_class_recall(self.z_val, self.ds.y_val, self.head, self.ds.n_classes)
                if (z_adj := self.objective.posthoc_logits(self.z_val)) is not None:  # loss.posthoc_tau: both ways
                    s["posthoc_per_class_recall"] = metrics.per_class_recall(z_adj, self.ds.y_val, self.head,
                                                                             self.ds.n_classes)
                if self.z_test is not None:  # the test split's, at the same (last) evaluation
                    s["test_per_class_recall"] = metrics.per_class_recall(self.z_test, self.ds.y_test, self.head,
                                                                          self.ds.n_classes)
                if self.ds.n_classes == 2 and not self.ds.multilabel and self.status != "interrupted":
                    self.log.pr_curve(self.ds.y_val, metrics.scores(self.z_val, self.head), self.steps)
            if self.status not in ("interrupted", "failed"):  # an interrupted run writes its hparams when it ends
                hp_metrics = dict(self.final)
                hp_metrics["val/steps_to_target"] = float(self.steps_to_target) if self.steps_to_target else math.nan
                hp_metrics["val/diverged"] = float(self.status == "diverged")
                # the diagnosis and the numerics beside the metrics (HPARAM_METRICS puts them among the first five)
                hp_metrics["numerics/stalled"] = float(diagnosis.name(s) == "stalled")
                hp_metrics |= {f"numerics/{k}": s["numerics"]["last"].get(k, s["numerics"][f"{k}_mean"])
                               for k in ("saturated_frac", "dead_frac", "clamped_frac")}
                self.log.hparams({**hparams(self.resolved), "head": self.head, "status": self.status}, hp_metrics)
        finally:
            self.log.close()
            write_json(self.out_dir / SUMMARY, s)
            if self.status == "diverged":  # a final result: nothing to resume (a periodic checkpoint predates it)
                (self.out_dir / CHECKPOINT).unlink(missing_ok=True)
            self.finished = True
        return s


def check_resumable(ck: dict, resolved: dict, device_type: str, max_steps: int, run_dir: Path) -> None:
    """A checkpoint continues only the run it came from: same config (up to RESUME_MAY_CHANGE), same device
    type, and steps left to train."""
    changed = config_changes(ck["config"], resolved)
    if changed:
        raise ConfigError(
            f"Cannot resume {run_dir}: the config differs from the checkpoint's ({'; '.join(changed)}). A resume "
            "must repeat the original run's overrides (they are in <run dir>/.hydra/overrides.yaml); only "
            f"{', '.join(k.rstrip('.') for k in RESUME_MAY_CHANGE)} may change. To train a different config, "
            "start a new run."
        )
    if ck["device"] != device_type:
        raise ConfigError(
            f"Cannot resume {run_dir} on {device_type}: its checkpoint was written on {ck['device']} (the "
            f"random-number state belongs to that device). Resume with trainer.device={ck['device']}."
        )
    if ck["step"] >= max_steps:
        raise ConfigError(
            f"Nothing to resume in {run_dir}: its checkpoint is at step {ck['step']} and this config trains "
            f"{max_steps} steps. Raise trainer.max_steps (or trainer.epochs) to train it further."
        )


def hparams(resolved: dict) -> dict:
    """The config entries worth a column in TensorBoard's HPARAMS tab."""
    keep = ("data", "model", "loss", "optim", "seed")
    out = {k: resolved[k] for k in keep if k in resolved}
    out["trainer"] = {k: resolved["trainer"][k] for k in ("batch_size", "precision", "max_steps", "epochs")}
    return out


def init_from(model: nn.Module, run_dir: Path) -> None:
    """model.init_from: the weights of another run's checkpoint (loaded as data, weights_only=True), e.g. a BCE
    run to fine-tune with loss=auc_margin as LibAUC recommends. Only the model: not its optimiser or loss."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        raise ConfigError(f"model.init_from={run_dir}: no {CHECKPOINT} there. Point it at the directory of a "
                          "finished (or checkpointed) lossbench run with the same model.")
    weights = read_checkpoint(path)["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise ConfigError(f"model.init_from={run_dir}: its model does not fit this one ("
                          f"{str(e).splitlines()[-1].strip()}). Use a run with the same model, head and data shape.") \
            from None


def build(cfg: DictConfig, plan: Plan, device: torch.device, datasets: dict, precision: str) -> Member:
    """Data (shared with the stack's other members when the data config is the same), loss, model, optimiser,
    monitor and logger of one run; restored from its checkpoint when resuming. Writes the 'running' summary."""
    tc, head = cfg.trainer, resolve_head(cfg)
    if cfg.loss.name in KD_LOSSES:
        teacher.check(cfg)  # a missing, unfinished or foreign teacher: refused before the data is loaded
    key = str(OmegaConf.to_container(cfg.data, resolve=True))
    if key not in datasets:
        loaded = data.load(cfg.data).to(device)
        # the same data under another config (e.g. the full MNIST under another seed): held once
        datasets[key] = next((d for d in datasets.values() if d.same_as(loaded)), loaded)
    ds = datasets[key]
    check_task(cfg, ds.task)  # data.task=null (data=arrays|openml): the task-dependent rules, now that it is known
    counts, n_labelled = ds.class_counts(), ds.n_labelled()
    objective = losses.build(cfg.loss, head, ds.n_classes, counts, n_labelled, multilabel=ds.multilabel,
                             partial=ds.partial()).to(device)
    if cfg.loss.name in KD_LOSSES:  # the teacher's logits as targets, computed once per teacher and data
        key = (id(ds), str(cfg.loss.teacher))  # by the data held, so that equal data gets one copy of the logits
        if key not in datasets:
            datasets[key] = teacher.attach(cfg, ds, device, tc.eval_batch_size)
        ds = datasets[key]
    torch.manual_seed(cfg.seed)  # the model's initial weights: the same whether the run is alone or stacked
    model = models.build(cfg.model, ds.input_shape, models.n_outputs(head, ds.n_classes, ds.multilabel))
    models.init_head_bias(model, cfg.model.head_bias, head, counts, n_labelled)
    if cfg.model.get("init_from"):
        init_from(model, Path(cfg.model.init_from))
    model.to(device)
    # the run's own generator: its data order, and its jitter shifts and dropout masks when those are on
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    models.use_generator(model, gen)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    n_train = len(ds.y_train)
    bs = min(tc.batch_size, n_train)
    steps_per_epoch = n_train // bs
    m = Member(
        cfg=cfg, plan=plan, resolved=OmegaConf.to_container(cfg, resolve=True), head=head, ds=ds,
        objective=objective, model=model, optimizer=make_optimizer(cfg.optim, model.parameters(), objective), scaler=scaler,
        gen=gen,
        monitor=Monitor(device, objective, cfg.numerics.enabled, cfg.numerics.every, scaled_grads=scaler.is_enabled()),
        log=None,  # opened below, once the start step is known
        max_steps=tc.epochs * steps_per_epoch if tc.epochs else tc.max_steps,
        steps_per_epoch=steps_per_epoch, batch_size=bs,
    )
    if m.pos_share is not None:
        m.class_indices()  # refused now if a class is missing, not at the first epoch
    if plan.action == "resume":
        m.restore(plan.checkpoint)
    # A directory with events from an earlier attempt (resume, or a restart after a failure): TensorBoard drops
    # what that attempt logged after start_step (the checkpoint's step, whose own points are kept), so the
    # curves continue without duplicates.
    purge = m.start_step + 1 if has_events(m.out_dir) else None
    m.log = Logger(m.out_dir, cfg.logger.enabled, cfg.logger.flush_secs, purge_step=purge)
    m.summary = {
        "status": "running", "config": m.resolved, "head": head, "steps": m.start_step, "max_steps": m.max_steps,
        "device": str(device), "precision": precision, "threads": torch.get_num_threads(), "data": {
            "n_train": n_train, "n_val": len(ds.y_val), "n_test": 0 if ds.y_test is None else len(ds.y_test),
            "n_classes": ds.n_classes,
            "train_class_counts": counts.tolist(), "task": ds.task, **ds.info,
        },
        "n_params": sum(p.numel() for p in m.params),
        # what produced the run, read before training (git is asked once per process), so that a stopped run's
        # results are written as fast as before
        "code": code_provenance(device),
    }
    if plan.action == "resume":
        m.summary["resumed_from_step"] = m.start_step
    write_json(m.out_dir / SUMMARY, m.summary)
    if m.start_step == 0:
        m.log.layout()
    return m
