"""Long-tailed data (exp / step profiles, the longtail preset), the imbalance losses in real runs (synthetic and
MNIST, monitors, divergence, DRW, post-hoc adjustment), their bad values, and the long_tail studies end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from lossbench.analysis import studies
from lossbench.config import validate
from lossbench.data import load, long_tail_counts, profile_shares
from lossbench.errors import ConfigError
from lossbench.losses import registry
from tests.conftest import CONFIGS, cli, make_cfg, needs_mnist, run_cfg

TINY = ["data.n_train=1000", "data.n_val=500", "trainer.max_steps=60", "trainer.eval_every=30",
        "trainer.log_every=10", "logger.enabled=false"]
IMBALANCE_LOSSES = ("focal", "ldam", "logit_adjusted", "balanced_softmax", "poly1", "bce_clipped")
NEW_PAIRS = sorted(p for p in registry.valid_pairs() if p[1] in IMBALANCE_LOSSES)


# --- data ---------------------------------------------------------------------------------------------------------
def test_profiles_follow_cao_et_al():
    assert long_tail_counts(5000, 10, 100, "exp") == [round(5000 * 100 ** (-c / 9)) for c in range(10)]
    assert long_tail_counts(5000, 10, 100, "step") == [5000] * 5 + [50] * 5
    assert profile_shares(5, 10, "step") == [1, 1, 1, 0.1, 0.1]  # odd C: the larger half keeps n_max
    assert profile_shares(2, 50, "step") == profile_shares(2, 50, "exp") == [1, 1 / 50]


def test_longtail_preset_has_a_long_tail_and_a_balanced_validation_split():
    for profile in ("exp", "step"):
        ds = load(make_cfg("data=longtail", f"data.imbalance_profile={profile}").data)
        c = ds.class_counts().tolist()
        assert len(c) == 10 and c[0] / c[9] == pytest.approx(100, rel=0.05)
        if profile == "step":
            assert max(c[5:]) < min(c[:5]) / 50
        else:
            assert all(a > b for a, b in zip(c, c[1:], strict=False))
        assert torch.bincount(ds.y_val).tolist() == [500] * 10
    # the other synthetic sets keep the task's prior in both splits
    ds = load(make_cfg("data.n_classes=4", "data.imbalance_ratio=8", "data.imbalance_profile=step").data)
    assert ds.class_counts().tolist()[0] / ds.class_counts().tolist()[3] == pytest.approx(8, rel=0.05)
    val = torch.bincount(ds.y_val).tolist()
    assert abs(val[0] - val[1]) <= 3 and val[2] == val[3] and val[0] / val[3] == pytest.approx(8, rel=0.05)


@needs_mnist
def test_mnist_step_profile_keeps_the_test_set():
    ds = load(make_cfg("data=mnist", "data.imbalance_ratio=100", "data.imbalance_profile=step").data)
    c = ds.class_counts().tolist()
    assert c[:5] == [c[0]] * 5 and c[5:] == [round(c[0] / 100)] * 5 and len(ds.y_val) == len(ds.y_test) == 5000  # the two halves of the test images


# --- bad values: one line, before training ---------------------------------------------------------------------
@pytest.mark.parametrize(("overrides", "message"), [
    (["loss=focal", "loss.gamma=-1"], "loss.gamma must be >= 0"),
    (["loss=focal", "loss.impl=fast"], "Valid choices: naive, stable"),
    # loss.alpha and loss.eps have a range per loss (their registrations), named with the loss
    (["loss=focal", "loss.alpha=1.5"], r"loss.alpha must be in \[-1, 1\] for loss=focal, got 1.5"),
    (["loss=kd", "loss.alpha=-1"], r"loss.alpha must be in \[0, 1\] for loss=kd"),
    (["loss=kd", "loss.alpha=1.5"], r"loss.alpha must be in \[0, 1\] for loss=kd, got 1.5"),
    (["loss=focal", "loss.alpha=-0.5"], r"loss.alpha must be in \[0, 1\], or -1 \(off\)"),
    (["loss=focal", "head=softmax", "loss.alpha=0.25"], "give per-class weights instead: loss.class_weight"),
    (["loss=focal", "loss.pos_weight=auto"], "loss=focal weighs positives with loss.alpha"),
    (["loss=focal", "loss.label_smoothing=0.1"], "loss=focal has no label_smoothing"),
    (["loss=logit_adjusted", "head=sigmoid"], "Invalid head/loss pair head=sigmoid loss=logit_adjusted.*Valid pairs"),
    (["loss=logit_adjusted", "loss.tau=-1"], "loss.tau must be >= 0"),
    (["loss=balanced_softmax", "head=sigmoid"], "Invalid head/loss pair head=sigmoid loss=balanced_softmax"),
    (["loss=ldam", "head=sigmoid"], "Invalid head/loss pair.*nothing to beat it"),
    (["loss=ldam", "loss.s=0"], "loss.s must be > 0"),
    (["loss=ldam", "loss.max_m=-0.1"], "loss.max_m must be >= 0"),
    (["loss=bce", "loss.drw_step=100"], "deferred re-weighting.*sigmoid loss.*head=softmax"),
    (["loss=ce", "loss.drw_step=-1"], "loss.drw_step must be an integer >= 0"),
    (["loss=ce", "loss.drw_step=10", "loss.beta=1"], "loss.beta must be in"),
    (["loss=bce", "loss.posthoc_tau=1"], "posthoc_tau=1.0 is post-hoc logit adjustment.*head=softmax"),
    (["loss=poly1", "loss.epsilon=-2"], "loss.epsilon must be >= -1"),
    (["loss=bce_clipped", "loss.eps=0"], r"loss.eps must be in \(0, 0.5\) for loss=bce_clipped, got 0.0"),
    (["loss=bce_clipped", "loss.eps=0.5"], r"loss.eps must be in \(0, 0.5\) for loss=bce_clipped, got 0.5"),
    (["loss=asl", "loss.eps=1.5"], r"loss.eps must be in \(0, 1\) for loss=asl, got 1.5"),
    (["loss=focal", "loss.alpha=2"], r"loss.alpha must be in \[-1, 1\] for loss=focal, got 2.0"),
    (["loss=ce", "model.cosine_head=true"], "only loss=ldam scales them"),
    (["loss=ldam", "model.head_bias=prior"], "no output bias"),
    (["data=longtail", "data.imbalance_profile=linear"], "Valid choices: exp, step"),
])
def test_bad_values_are_refused_before_training(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(make_cfg(*overrides))


def test_bad_value_from_the_cli_is_one_line_and_exit_2(tmp_path):
    r = cli("loss=focal", "loss.gamma=-0.5", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == ["lossbench: error: loss.gamma must be >= 0, got -0.5."]


# --- real runs ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("head", "loss"), NEW_PAIRS)
def test_every_new_pair_trains_on_the_longtail_set(tmp_path, head, loss):
    s = run_cfg(tmp_path, "data=longtail", f"loss={loss}", f"head={head}", "optim=adam", "data.n_train=4000",
                "data.n_val=1000", "trainer.max_steps=300", "trainer.eval_every=300", "logger.enabled=false")
    assert s["status"] == "completed" and s["data"]["n_classes"] == 10
    assert s["final"]["val/balanced_accuracy"] > 0.4 and s["final"]["val/auc"] > 0.9  # chance: 0.1 and 0.5
    n = s["numerics"]
    assert n["nonfinite_loss"] == 0 and n["nonfinite_grad"] == 0 and abs(n["loss_gap_mean"]) < 1e-3


@needs_mnist
@pytest.mark.parametrize(("head", "loss"), NEW_PAIRS)
def test_every_new_pair_trains_on_mnist(tmp_path, head, loss):
    s = run_cfg(tmp_path, "data=mnist", f"loss={loss}", f"head={head}", "optim=adam", "data.n_train=2000",
                "data.n_val=1000", "trainer.max_steps=60", "trainer.eval_every=60", "logger.enabled=false")
    assert s["status"] == "completed" and s["final"]["val/accuracy"] > 0.6


@pytest.mark.parametrize("loss", IMBALANCE_LOSSES)
def test_exploding_lr_ends_diverged(tmp_path, loss):
    s = run_cfg(tmp_path, f"loss={loss}", "optim.lr=1e30", *TINY)
    assert s["status"] == "diverged" and s["numerics"]["first_nonfinite_step"] is not None


def test_ldam_on_its_cosine_head_does_not_go_non_finite_under_an_exploding_lr(tmp_path):
    """Documented behaviour, not divergence: the logits are cosines, so lr 1e30 cannot make them overflow. The
    weights do (~1e31); the last hidden layer's norm overflows to inf, F.normalize gives 0, the logits collapse
    to 0 and the gradient vanishes: a 'completed' run at chance, with finite numbers throughout."""
    s = run_cfg(tmp_path, "loss=ldam", "optim.lr=1e30", "model.hidden=[16]", "trainer.threads=1", *TINY)
    assert s["status"] == "completed" and s["numerics"]["first_nonfinite_step"] is None
    assert s["final"]["val/auc"] == 0.5 and s["numerics"]["max_abs_logit"] <= 1


def test_naive_focal_below_gamma_1_shows_in_nonfinite_grad(tmp_path):
    common = ["loss=focal", "loss.gamma=0.5", "data.scale=50", "optim.lr=0.02", "seed=2", "numerics.every=1",
              "trainer.on_nonfinite=continue", *TINY]
    naive = run_cfg(tmp_path / "naive", "loss.impl=naive", *common)
    stable = run_cfg(tmp_path / "stable", *common)
    assert naive["numerics"]["nonfinite_grad"] > 0 and naive["status"] == "diverged"
    assert stable["numerics"]["nonfinite_grad"] == 0 and stable["status"] == "completed"
    assert stable["numerics"]["saturated_frac_mean"] > 0  # the regime that breaks the naive form


def test_bce_clipped_monitors_show_the_clip(tmp_path):
    """The issue's command, python -m lossbench loss=bce_clipped data.scale=50, at the default size."""
    r = cli("loss=bce_clipped", "data.scale=50", "trainer.max_steps=300", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    n = s["numerics"]
    assert n["saturated_frac_mean"] > 0.5 and n["clamped_frac_mean"] > 0.5  # clipped probabilities
    assert n["dead_frac_mean"] > 0.05  # wrong and clipped: zero gradient
    assert n["loss_gap_mean"] < -10  # reported about 16 per dead sample, the exact loss is |z|
    assert n["nonfinite_loss"] == 0 and s["status"] == "completed"


def test_drw_and_posthoc_in_a_run(tmp_path):
    s = run_cfg(tmp_path, "data=longtail", "loss=ce", "loss.drw_step=100", "loss.posthoc_tau=1",
                "trainer.max_steps=200", "trainer.eval_every=50", "data.n_train=4000", "data.n_val=1000",
                "logger.enabled=false")
    assert s["status"] == "completed"
    hist = s["history"]
    assert {"val/posthoc/balanced_accuracy", "val/posthoc/nll", "val/posthoc/ece"} <= set(hist[-1])
    assert len(s["posthoc_per_class_recall"]) == 10
    # val/loss is the loss being trained: unweighted CE up to step 100, weighted CE after
    assert hist[1]["step"] == 100 and hist[1]["val/loss"] == pytest.approx(hist[1]["val/nll"], rel=1e-5)
    assert abs(hist[2]["val/loss"] - hist[2]["val/nll"]) > 1e-3
    tail = sum(s["posthoc_per_class_recall"][5:]) / 5
    assert tail >= sum(s["per_class_recall"][5:]) / 5  # the prior shift favours the rare classes


def test_ldam_metrics_use_the_scaled_logits(tmp_path):
    s = run_cfg(tmp_path, "data=longtail", "loss=ldam", "trainer.max_steps=150", "data.n_train=4000",
                "data.n_val=1000", "logger.enabled=false")
    assert s["numerics"]["max_abs_logit"] <= 1 + 1e-6  # cosine head
    # the metrics score softmax(30 z), the model's probabilities, not softmax(z) of cosines (at most e^2 / (e^2 + 9)
    # = 0.45 for the top class)
    assert s["final"]["val/mean_confidence"] > 0.6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: set_sync_debug_mode only sees CUDA syncs")
@pytest.mark.parametrize("overrides", [
    ["loss=ldam", "loss.drw_step=75", "loss.posthoc_tau=1"],
    ["loss=focal", "head=softmax", "loss.class_weight=effective", "trainer.precision=bf16"],
    ["loss=focal", "loss.impl=naive"],
    ["loss=logit_adjusted"], ["loss=balanced_softmax"], ["loss=poly1", "head=sigmoid"], ["loss=bce_clipped"],
])
def test_new_losses_and_drw_never_synchronise_in_a_step(tmp_path, overrides):
    from tests.test_cuda_sync import CHECKED

    s = run_cfg(tmp_path, "data=longtail", *overrides, *CHECKED)
    assert s["status"] == "completed" and s["steps"] == 150


# --- the studies ------------------------------------------------------------------------------------------------
def sweep_params(study: str) -> dict[str, list[str]]:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={study}"], return_hydra_config=True)
    return {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}


@pytest.mark.parametrize("study", ["long_tail", "long_tail_binary"])
def test_every_sweep_value_composes_and_validates(study):
    params = sweep_params(study)
    assert len(params["seed"]) >= 5
    for key, values in params.items():
        for v in values:
            cfg = make_cfg(f"experiment={study}", f"{key}={v}")
            validate(cfg)
            assert cfg.study.name == study
    methods = params["+method"] if study == "long_tail" else params["+binary_method"]
    assert len(methods) == (10 if study == "long_tail" else 6)
    for m in methods:
        cfg = make_cfg(f"experiment={study}", f"+{'method' if study == 'long_tail' else 'binary_method'}={m}")
        assert cfg.study.method == m


def test_long_tail_methods_are_what_they_say():
    def cfg(m):
        return make_cfg("experiment=long_tail", f"+method={m}")
    assert cfg("ldam_drw").loss.drw_step == cfg("ldam_drw").study.drw_step and cfg("ldam_drw").model.cosine_head
    assert cfg("cb").loss.class_weight == "effective" and cfg("cb").loss.beta == 0.9999
    assert cfg("cb_focal").loss.name == "focal" and cfg("cb_focal").head == "softmax"
    assert all(cfg(m).loss.posthoc_tau == 1.0 for m in ("ce", "ldam", "poly1"))


@needs_mnist
def test_long_tail_sweep_end_to_end(tmp_path):
    """The documented command at tiny size: two profiles x three methods x one seed, then the study report."""
    sweep = tmp_path / "sweep"
    r = cli("--multirun", "experiment=long_tail", "hydra.sweeper.params.seed=0",
            "+method=ce,ldam_drw,logit_adjusted", f"hydra.sweep.dir={sweep}", "study.steps=20",
            "study.drw_step=10", "study.n_train=2000", "data.n_val=500", "trainer.eval_every=10")
    assert r.returncode == 0, r.stderr[-2000:]
    runs = [json.loads(p.read_text()) for p in sorted(Path(sweep).glob("*/summary.json"))]
    assert len(runs) == 6 and all(s["status"] == "completed" for s in runs)
    assert sorted({s["config"]["data"]["imbalance_profile"] for s in runs}) == ["exp", "step"]
    out = tmp_path / "report"
    assert studies.main(["long_tail", str(sweep), "--out", str(out)]) == 0
    md = (out / "study.md").read_text()
    assert "| step ldam_drw | 1 |" in md and "balanced acc, post-hoc τ=1" in md
    assert (out / "class_recall.png").exists() and (out / "table.md").exists()


@needs_mnist
def test_long_tail_methods_stack_like_runs_alone(tmp_path):
    """Under the stacked launcher, DRW, the cosine head and the post-hoc metrics of a member equal its run alone."""
    common = ["experiment=long_tail", "seed=0", "data.imbalance_profile=exp", "+method=ldam,ldam_drw,focal,logit_adjusted",
              "study.steps=20", "study.drw_step=10", "study.n_train=2000", "data.n_val=500", "trainer.eval_every=10"]
    for name, launcher in (("stacked", ["hydra/launcher=stacked"]), ("alone", [])):
        r = cli("--multirun", *launcher, *common, f"hydra.sweep.dir={tmp_path / name}")
        assert r.returncode == 0, r.stderr[-2000:]

    def finals(name):
        runs = [json.loads(p.read_text()) for p in (tmp_path / name).glob("*/summary.json")]
        return {s["config"]["study"]["method"]: s for s in runs}
    stacked, alone = finals("stacked"), finals("alone")
    assert stacked["ldam_drw"]["stack"]["size"] == 2 and stacked["focal"]["stack"]["size"] == 2  # cosine vs linear
    for method, s in alone.items():  # equal up to rounding (stacks batch the arithmetic differently)
        for key in ("val/loss", "val/nll", "val/posthoc/nll"):
            assert stacked[method]["final"][key] == pytest.approx(s["final"][key], rel=1e-3), (method, key)


def test_long_tail_binary_sweep_end_to_end(tmp_path):
    sweep = tmp_path / "sweep"
    r = cli("--multirun", "experiment=long_tail_binary", "hydra.sweeper.params.seed=0", f"hydra.sweep.dir={sweep}",
            "study.steps=20", "study.n_train=3000", "data.n_val=2000", "trainer.eval_every=10")
    assert r.returncode == 0, r.stderr[-2000:]
    runs = [json.loads(p.read_text()) for p in sorted(Path(sweep).glob("*/summary.json"))]
    assert sorted(s["config"]["study"]["method"] for s in runs) == sorted(
        ["bce_logits", "pos_weight", "focal", "focal_prior", "cb_focal", "focal_num_pos"])
    assert all(s["status"] == "completed" for s in runs)
    out = tmp_path / "report"
    assert studies.main(["long_tail_binary", str(sweep), "--out", str(out)]) == 0
    md = (out / "study.md").read_text()
    assert "| focal_prior | 1 |" in md and "recall@0.5" in md
    assert not math.isnan(runs[0]["final"]["val/ap"])


def test_natural_heads_of_the_new_losses():
    assert {k: registry.natural_head(k) for k in IMBALANCE_LOSSES} == {
        "focal": "sigmoid", "ldam": "softmax", "logit_adjusted": "softmax", "balanced_softmax": "softmax",
        "poly1": "softmax", "bce_clipped": "sigmoid"}
