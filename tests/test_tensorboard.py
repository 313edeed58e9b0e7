"""TensorBoard as a person meets it: run names, tag groups, HPARAMS columns, custom-scalars charts.

The last tests start a real `tensorboard` server (the installed package, on a free loopback port) over a small
real sweep and ask its HTTP data endpoints what its dashboards show.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lossbench import config
from lossbench.logger import (
    HPARAM_METRICS,
    MIN_HISTOGRAMS,
    custom_layout,
    histogram_every,
    hparam_columns,
    read_scalars,
    tb_tag,
)
from lossbench.sweep import BOOKKEEPING, MAX_NAME, job_dir_name, job_dirs, varied_keys
from tests.conftest import CONFIGS, ROOT, cli, make_cfg, run_cfg

TINY = ["trainer.max_steps=30", "trainer.eval_every=15", "trainer.log_every=15", "data.n_train=500", "data.n_val=200"]


# --- names ------------------------------------------------------------------------------------------------


def test_job_dir_names_say_what_the_job_is(tmp_path):
    assert job_dir_name(3, ["seed=1", "loss=bce"]) == "3_loss=bce,seed=1"  # sorted, as override_dirname
    assert job_dir_name(3, ["seed=1", "trainer.skip_completed=true", "data.root=/x/y", "trainer.resume=true"]) \
        == "3_seed=1"  # bookkeeping keys left out: a rerun finds the same directory
    assert job_dir_name(0, ["objective_metric=val/ap", "+regime=scale50"]) == "0_+regime=scale50,objective_metric=val_ap"
    assert job_dir_name(5, []) == "5"
    many = [f"data.k{i}={'x' * 10}" for i in range(20)]
    long = job_dir_name(12, many)
    assert len(long) <= len("12_") + MAX_NAME and long == job_dir_name(12, many)  # cut, and the same on a rerun
    assert long != job_dir_name(12, [*many[:-1], "data.k19=y"])  # the hash keeps cut names apart

    # In a sweep (multirun.yaml, written by Hydra's sweeper; a preset's or Optuna's params): only the keys the
    # sweep varies.
    OmegaConf.save({"hydra": {"overrides": {"task": ["loss=bce,ce", "seed=range(2)", "trainer.max_steps=30"]}}},
                   tmp_path / "multirun.yaml")
    params = {"+regime": "scale50,bias_neg100", "optim.lr": "tag(log, interval(1e-4, 1e-1))"}
    assert job_dir_name(4, ["+regime=scale50", "loss=ce", "seed=1", "trainer.max_steps=30"], str(tmp_path), params) \
        == "4_+regime=scale50,loss=ce,seed=1"
    assert job_dir_name(0, ["optim.lr=0.01", "trainer.max_steps=30"], None, params) == "0_optim.lr=0.01"  # Optuna
    job = tmp_path / "4_+regime=scale50,loss=ce,seed=1"
    (job / ".hydra").mkdir(parents=True)
    # 12 jobs: numbers padded to two digits, so that `ls` sorts them; a job's existing directory is kept
    OmegaConf.save({"hydra": {"overrides": {"task": ["loss=bce,ce", "seed=range(6)"]}}}, tmp_path / "multirun.yaml")
    assert job_dir_name(3, ["loss=bce", "seed=3"], str(tmp_path)) == "03_loss=bce,seed=3"
    assert job_dir_name(11, ["loss=ce", "seed=5"], str(tmp_path)) == "11_loss=ce,seed=5"
    (tmp_path / "3_loss=bce,seed=3").mkdir()  # a sweep started before padding
    assert job_dir_name(3, ["loss=bce", "seed=3"], str(tmp_path)) == "3_loss=bce,seed=3"
    OmegaConf.save({"hydra": {"overrides": {"task": ["loss=bce,ce", "seed=range(2)", "trainer.max_steps=30"]}}},
                   tmp_path / "multirun.yaml")
    OmegaConf.save({"hydra": {"sweeper": {"params": params}}}, job / ".hydra" / "hydra.yaml")
    assert varied_keys(job) == ["loss", "seed", "regime", "optim.lr"]
    assert varied_keys(tmp_path / "nowhere" / "run") is None


def test_bookkeeping_keys_are_hydras_override_dirname_exclude_keys():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("config", return_hydra_config=True)
    assert list(cfg.hydra.job.config.override_dirname.exclude_keys) == list(BOOKKEEPING)


def test_job_dirs_are_listed_in_job_number_order(tmp_path):
    for name in ("10_seed=0", "9_seed=1", "2", "0_loss=bce", "report"):
        (tmp_path / name / ".hydra").mkdir(parents=True)
    assert [d.name for d in job_dirs(tmp_path)] == ["0_loss=bce", "2", "9_seed=1", "10_seed=0", "report"]


def test_tag_groups_sort_train_val_then_watch():
    """TIME SERIES shows groups (a tag up to its first "/") in name order and opens the first two."""
    keys = ["train/loss", "val/auc", "numerics/saturated_frac", "perf/samples_per_sec", "amp/scale", "hist/logits",
            "numerics/logits_nonfinite"]
    tags = [tb_tag(k) for k in keys]
    assert tags == ["train/loss", "val/auc", "watch/saturated_frac", "watch/samples_per_sec", "watch/amp_scale",
                    "watch/logits", "watch/logits_nonfinite"]
    assert sorted({t.split("/")[0] for t in tags}) == ["train", "val", "watch"]


def test_histograms_only_for_runs_long_enough_to_draw_them():
    assert histogram_every(200, 1000) == 200
    assert histogram_every(200, 200) == 0  # one histogram: DISTRIBUTIONS would be blank
    assert histogram_every(200, 200 * MIN_HISTOGRAMS) == 200
    assert histogram_every(0, 10_000) == 0
    # The presets that are about saturation draw them at their default sizes.
    for preset in ("saturation", "bce_saturation"):
        cfg = make_cfg(f"experiment={preset}")
        assert histogram_every(cfg.numerics.hist_every, cfg.trainer.max_steps) > 0, preset


def test_custom_scalars_layout_has_no_chart_without_data():
    fp32 = ["train/loss", "val/auc", "val/ap", "val/recall", "numerics/grad_norm", "perf/samples_per_sec"]
    layout = custom_layout(fp32)
    assert list(layout) == ["train", "val", "numerics", "speed"]  # no fp16 scaler in an fp32 run
    assert list(layout["val"]) == ["val/auc", "val/ap", "val/recall"]  # the listed order, then the others
    assert layout["numerics"] == {"watch/grad_norm": ["Multiline", ["^watch/grad_norm$"]]}  # one metric a chart
    assert "fp16 scaler" in custom_layout([*fp32, "amp/scale", "amp/skipped_steps"])


def test_hparams_lead_with_the_swept_keys_then_loss_head_seed():
    params = {"loss": {"name": "bce", "pos_weight": None}, "seed": 1, "data": {"scale": 50.0}, "head": "sigmoid",
              "status": "completed"}
    cols, lead = hparam_columns(params, ["+regime=scale50", "loss=bce", "seed=1", "trainer.eval_every=50",
                                         "trainer.skip_completed=true"], ["regime", "loss", "seed"])
    assert cols == {"regime": "scale50", "loss": "bce", "seed": 1, "trainer.eval_every": 50, "head": "sigmoid",
                    "loss.pos_weight": "None", "data.scale": 50.0, "status": "completed"}
    assert lead == {"regime", "loss", "seed", "head"}  # the constant override trails; bookkeeping is left out
    _, alone = hparam_columns(params, ["data.scale=50"], None)  # a single run claims nothing varies but these
    assert alone == {"loss", "head", "seed"}


# --- one run, read back from its event files ----------------------------------------------------------------


def test_a_runs_events_hparams_layout_and_pr_curve(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    from lossbench.data import load

    s = run_cfg(tmp_path, "loss=bce_logits", "seed=3", "optim.lr=0.05", *TINY)
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # events in the run dir: no tb/, no add_hparams sub-run
    acc = ea.EventAccumulator(str(tmp_path), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    assert not any(t.startswith("hparam/") for t in acc.Tags()["scalars"])
    assert acc.Tags()["histograms"] == []  # 30 steps: too short for histograms

    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    hp = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
    assert hp["loss"] == "bce_logits" and hp["seed"] == 3 and hp["optim.lr"] == pytest.approx(0.05)
    assert hp["status"] == "completed" and hp["head"] == "sigmoid" and "loss.name" not in hp
    exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in exp.metric_infos][: len(HPARAM_METRICS)] == [tb_tag(k) for k in HPARAM_METRICS]
    info = {h.name: h for h in exp.hparam_infos}
    assert list(info["loss"].domain_discrete) == list(config.LOSSES) and info["loss"].differs
    assert not info["optim.lr"].HasField("domain_discrete") and not info["optim.lr"].differs
    # Each metric's last event is its final value at the last step (none written back at step 0).
    for tag in ("val/auc", "val/diverged", "val/steps_to_target"):
        assert acc.Scalars(tag)[-1].step == s["steps"] == 30
    assert acc.Scalars("val/auc")[-1].value == pytest.approx(s["final"]["val/auc"], rel=1e-6)
    assert [e.step for e in acc.Scalars("val/auc")] == [15, 30]
    # the test split at the same evaluations, under the same tag scheme
    assert [e.step for e in acc.Scalars("test/auc")] == [15, 30]
    assert acc.Scalars("test/auc")[-1].value == pytest.approx(s["final"]["test/auc"], rel=1e-6)
    assert acc.Scalars("val/diverged")[-1].value == 0.0
    assert read_scalars(tmp_path, ["train/loss", "numerics/grad_norm"]).keys() == {"train/loss", "numerics/grad_norm"}

    raw = tensor_util.make_ndarray(acc.Tensors("custom_scalars__config__")[0].tensor_proto).item()
    layout = layout_pb2.Layout.FromString(raw)
    assert [c.title for c in layout.category] == ["train", "val", "test", "numerics", "speed"]
    charts = {ch.title: list(ch.multiline.tag) for c in layout.category for ch in c.chart}
    assert charts["val/auc"] == ["^val/auc$"]
    logged = set(acc.Tags()["scalars"])
    for regexes in charts.values():
        assert [r for r in regexes if r.strip("^$").replace("\\", "") in logged] == regexes

    pr = acc.Tensors("val/pr_curve")
    assert [e.step for e in pr] == [30]
    values = tensor_util.make_ndarray(pr[0].tensor_proto)  # rows: TP, FP, TN, FN, precision, recall
    assert values.shape[0] == 6
    y_val = load(make_cfg("loss=bce_logits", "seed=3", *TINY).data).y_val
    # At threshold 0 every sample is predicted positive: TP = positives, FP = negatives, TN = FN = 0.
    assert values[0, 0] == int(y_val.sum()) and values[1, 0] == len(y_val) - int(y_val.sum())
    assert values[2, 0] == 0 and values[3, 0] == 0


def test_runs_written_before_the_move_are_still_read(tmp_path):
    """Older runs kept their events in <run>/tb under the monitors' own names; the report still reads them."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path / "tb")) as w:
        w.add_scalar("numerics/saturated_frac", 0.5, 10)
    assert read_scalars(tmp_path, ["numerics/saturated_frac", "train/loss"]) == {"numerics/saturated_frac": {10: 0.5}}


# --- a real TensorBoard server over a small real sweep ---------------------------------------------------------

SWEEP = ["loss=bce,ce", "seed=0,1"]
JOBS = ["0_loss=bce,seed=0", "1_loss=bce,seed=1", "2_loss=ce,seed=0", "3_loss=ce,seed=1"]


@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> Path:
    """A 4-job sweep (multirun/sweep/<job>) and a single fp16 run with the default run directory."""
    root = tmp_path_factory.mktemp("logdir")
    r = cli("--multirun", *SWEEP, *TINY, f"hydra.sweep.dir={root}/multirun/sweep")
    assert r.returncode == 0, r.stderr[-3000:]
    r = cli("trainer.precision=fp16", *TINY, cwd=root, env={"PYTHONPATH": str(ROOT)})  # outputs/runs/<time>_<loss>_<id>
    assert r.returncode == 0, r.stderr[-3000:]
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module", params=["auto", "false"], ids=["load_fast=auto", "load_fast=false"])
def server(logdir, request):
    """`tensorboard --logdir <logdir>` on a free loopback port; yields (base URL, run names); stopped at the end.
    load_fast=auto is what users get (the Rust data server, where installed); false the Python reader."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port),
                             "--host", "127.0.0.1", f"--load_fast={request.param}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, runs = time.monotonic() + 180, []
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            try:
                runs = _get(f"{url}/data/runs")
                tags = _get(f"{url}/data/plugin/scalars/tags")
                if len(runs) == 5 and all("val/diverged" in tags.get(r, {}) for r in runs):
                    break  # every run loaded to its last event
            except OSError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"TensorBoard did not load the runs in time: {runs}")
        yield url, runs
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_server_run_names_are_the_run_directories(server):
    _, runs = server
    assert sorted(r for r in runs if r.startswith("multirun/")) == [f"multirun/sweep/{j}" for j in JOBS]
    single = [r for r in runs if not r.startswith("multirun/")]
    assert len(single) == 1 and single[0].startswith("outputs/runs/") and "_bce_logits_" in single[0]
    assert not any(r.endswith("/tb") for r in runs)


def test_server_time_series_opens_on_train_and_val(server):
    url, runs = server
    tags = _get(f"{url}/data/plugin/timeseries/tags")
    scalars = tags["scalars"]["runTagInfo"]  # {run: [tags]}
    groups = sorted({t.split("/")[0] for r in runs for t in scalars[r]})
    assert groups == ["test", "train", "val", "watch"]  # no hparam/*; test (the held-out split) sorts first
    assert not any(tags["histograms"]["runTagInfo"].values())  # 30-step runs: no histograms to draw blank
    amp = {r for r in runs for t in scalars[r] if t.startswith("watch/amp_")}
    assert amp == {r for r in runs if r.startswith("outputs/")}  # the fp16 scaler only in the fp16 run


def test_server_hparams_columns_order_and_filters(server):
    url, runs = server
    exp = _get(f"{url}/data/plugin/hparams/experiment", {"experimentName": ""})
    names = [h["name"] for h in exp["hparamInfos"]]
    # TensorBoard orders columns by (differs first, name) and shows the first five.
    assert names[:3] == ["head", "loss", "seed"] and [h.get("differs", False) for h in exp["hparamInfos"][:4]] == [
        True, True, True, False]
    assert len(names) > 20 and names[3:] == sorted(names[3:])  # the constant ones after
    loss = next(h for h in exp["hparamInfos"] if h["name"] == "loss")
    assert loss["domainDiscrete"] == list(config.LOSSES)
    assert [m["name"]["tag"] for m in exp["metricInfos"]][: len(HPARAM_METRICS)] == [tb_tag(k) for k in HPARAM_METRICS]

    def groups(**filters) -> list[dict]:
        cols = [{"hparam": "loss", "includeInResult": True, **filters}, {"hparam": "seed", "includeInResult": True}]
        body = {"experimentName": "", "colParams": cols, "startIndex": 0, "sliceSize": 100,
                "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
                "aggregationType": "AGGREGATION_AVG"}
        return _get(f"{url}/data/plugin/hparams/session_groups", body)["sessionGroups"]

    every = groups()
    assert len(every) == 5
    for g in every:
        run = g["sessions"][0]["name"]
        assert f"loss={g['hparams']['loss']},seed={g['hparams']['seed']:.0f}" in run or run.startswith("outputs/")
        assert any(m["name"]["tag"] == "val/auc" for m in g["metricValues"])
    only_ce = groups(filterDiscrete=["ce"])
    assert sorted(g["sessions"][0]["name"] for g in only_ce) == ["multirun/sweep/2_loss=ce,seed=0",
                                                                 "multirun/sweep/3_loss=ce,seed=1"]


def test_server_custom_scalars_every_chart_has_data(server):
    url, runs = server
    layout = _get(f"{url}/data/plugin/custom_scalars/layout")
    assert [c["title"] for c in layout["category"]] == ["train", "val", "test", "numerics", "speed", "fp16 scaler"]
    for category in layout["category"]:
        for chart in category["chart"]:
            for regex in chart["multiline"]["tag"]:
                points = 0
                for run in runs:
                    q = urllib.parse.urlencode({"run": run, "tag": regex})
                    answer = _get(f"{url}/data/plugin/custom_scalars/scalars?{q}")
                    assert answer["regex_valid"], regex
                    points += sum(len(events) for events in answer["tag_to_events"].values())
                assert points > 0, (category["title"], chart["title"], regex)
