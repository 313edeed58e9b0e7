"""The study presets (configs/experiment/<study>.yaml): every sweep value composes and validates, each study
runs a tiny version, and one sweep runs end to end with the one documented command and its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from lossbench.analysis import studies
from lossbench.config import validate
from tests.conftest import CONFIGS, cli, needs_mnist, run_cfg

STUDIES = ("saturation", "equivalence", "pos_weight", "class_weights", "multiclass_heads", "label_smoothing")
TINY_SYNTHETIC = ("trainer.max_steps=6", "trainer.eval_every=3", "data.n_train=512", "data.n_val=512")
TINY_MNIST = ("study.epochs=1", "study.n_train=800", "data.n_val=500", "trainer.eval_every=3")


def sweep_params(study: str) -> dict[str, list[str]]:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={study}"], return_hydra_config=True)
    return {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("study", STUDIES)
def test_every_sweep_value_composes_and_validates(study):
    params = sweep_params(study)
    assert len(params["seed"]) >= 3  # the issue: at least 3 seeds per study
    axes = {k: v for k, v in params.items() if k != "seed"}
    assert axes and all(len(v) >= 2 for v in axes.values())
    for key, values in axes.items():
        for v in values:
            cfg = compose_cfg(f"experiment={study}", f"{key}={v}")
            validate(cfg)
            assert cfg.study.name == study


@pytest.mark.parametrize("regime", ["scale50", "scale50_fp16", "bias_neg100"])
def test_saturation_regimes_run(tmp_path, regime):
    s = run_cfg(tmp_path, "experiment=saturation", f"+regime={regime}", "loss=bce", *TINY_SYNTHETIC)
    assert s["status"] == "completed" and s["steps"] == 6
    assert s["precision"] == ("fp16" if regime == "scale50_fp16" else "fp32")


def test_saturation_bias_regime_kills_bce_not_bce_logits(tmp_path):
    # every logit starts near -100: sigmoid is exactly 0, BCELoss clamps, positives get no gradient
    bce = run_cfg(tmp_path / "bce", "experiment=saturation", "+regime=bias_neg100", "loss=bce", *TINY_SYNTHETIC)
    logits = run_cfg(tmp_path / "logits", "experiment=saturation", "+regime=bias_neg100", "loss=bce_logits",
                     *TINY_SYNTHETIC)
    assert bce["numerics"]["saturated_frac_mean"] == 1.0 and bce["numerics"]["dead_frac_mean"] > 0.3
    assert logits["numerics"]["dead_frac_mean"] == 0.0 and logits["numerics"]["clamped_frac_mean"] == 0.0


@pytest.mark.parametrize("ratio,pw", [("5", "sqrt_auto"), ("100", "auto")])
def test_pos_weight_runs(tmp_path, ratio, pw):
    s = run_cfg(tmp_path, "experiment=pos_weight", f"data.imbalance_ratio={ratio}", f"loss.pos_weight={pw}",
                *TINY_SYNTHETIC)
    assert s["status"] == "completed"
    assert {"val/recall", "val/mean_prob", "val/balanced_accuracy"} <= set(s["final"])


def test_sqrt_auto_is_the_square_root_of_auto():
    import torch

    from lossbench.losses import weights

    counts = torch.tensor([500, 5])
    auto, _ = weights(compose_cfg("loss=bce_logits", "loss.pos_weight=auto").loss, "sigmoid", counts)
    sqrt, _ = weights(compose_cfg("loss=bce_logits", "loss.pos_weight=sqrt_auto").loss, "sigmoid", counts)
    assert float(auto) == pytest.approx(100.0) and float(sqrt) == pytest.approx(10.0)


@needs_mnist
@pytest.mark.parametrize("study,extra", [
    ("class_weights", ("data.imbalance_ratio=10", "loss.class_weight=effective", "study.n_train=3000")),
    ("multiclass_heads", ("+heads=sigmoid_bce_logits",)),
    ("multiclass_heads", ("+heads=softmax_bce",)),
    ("label_smoothing", ("loss.label_smoothing=0.1",)),
])
def test_mnist_studies_run(tmp_path, study, extra):
    s = run_cfg(tmp_path / "run", f"experiment={study}", *TINY_MNIST, *extra)
    assert s["status"] == "completed" and s["data"]["n_classes"] == 10
    assert len(s["per_class_recall"]) == 10 and "val/mean_confidence" in s["final"]
    out = tmp_path / "report"
    assert studies.main([study, str(tmp_path / "run"), "--out", str(out)]) == 0
    assert ("recall class 9 (rarest)" in (out / "study.md").read_text()) == (study == "class_weights")
    assert (out / "class_recall.png").exists() == (study == "class_weights")


def test_equivalence_sweep_end_to_end(tmp_path):
    """The documented command (with the seeds cut to one and tiny sizes) runs the preset's sweep axes."""
    sweep = tmp_path / "sweep"
    r = cli("--multirun", "experiment=equivalence", "hydra.sweeper.params.seed=0", f"hydra.sweep.dir={sweep}",
            "study.steps=6", "trainer.eval_every=3", "data.n_train=512", "data.n_val=512")
    assert r.returncode == 0, r.stderr[-2000:]
    runs = [json.loads(p.read_text()) for p in sorted(Path(sweep).glob("*/summary.json"))]
    assert sorted(s["config"]["loss"]["name"] for s in runs) == ["bce", "bce_logits", "ce", "nll"]
    assert all(s["status"] == "completed" for s in runs)
    out = tmp_path / "report"
    assert studies.main(["equivalence", str(sweep), "--out", str(out)]) == 0
    md = (out / "study.md").read_text()
    # CrossEntropyLoss is LogSoftmax + NLLLoss bit for bit: the same seed gives the same curve
    row = next(line for line in md.splitlines() if line.startswith("| ce vs nll"))
    assert row.split("|")[3].strip() == "0 [not enough seeds]"  # one seed: a value, no interval
    assert (out / "table.md").exists() and (out / "curves.png").exists()
    # the paired comparison of the study's axis (loss) follows, here with one seed per loss
    assert "## Paired differences by loss" in md and (out / "compare_loss.md").exists()
    pair = next(line for line in md.splitlines() if line.startswith("| ce − nll | auc"))
    assert pair.split("|")[-2].strip() == "not enough seeds"


def test_study_tables_give_intervals_and_the_paired_comparison(tmp_path):
    """class_weights from written summaries (no training): mean [95% CI] cells, the paired comparison of
    loss.class_weight within each imbalance ratio, and the per-class recall plot with one panel per ratio."""
    import numpy as np

    from lossbench.store import write_json

    rng = np.random.default_rng(0)
    sweep = tmp_path / "sweep"
    job = 0
    for ratio in (10, 100):
        for cw in (None, "inverse", "effective"):
            for seed in (0, 1, 2):
                cfg = {"seed": seed, "data": {"name": "mnist", "imbalance_ratio": ratio, "seed": seed},
                       "loss": {"name": "ce", "class_weight": cw}, "trainer": {"max_steps": 100}}
                bal = 0.7 + (0.1 if cw else 0) + rng.normal(0, 0.01)
                write_json(sweep / str(job) / "summary.json", {
                    "status": "completed", "config": cfg, "final": {"val/balanced_accuracy": bal, "val/auc": 0.9},
                    "best": {}, "history": [{"step": 100, "val/balanced_accuracy": bal}],
                    "per_class_recall": list(rng.uniform(0, 1, 10))})
                job += 1
    out = tmp_path / "out"
    assert studies.main(["class_weights", str(sweep), "--out", str(out)]) == 0
    md = (out / "study.md").read_text()
    bal = [json.loads((sweep / str(j) / "summary.json").read_text())["final"]["val/balanced_accuracy"] for j in (3, 4, 5)]
    row = next(line for line in md.splitlines() if line.startswith("| data.imbalance_ratio=10 loss.class_weight=inverse |"))
    assert row.split("|")[3].strip() == f"{np.mean(bal):.4f} [{min(bal):.4f}, {max(bal):.4f}]"  # 3 seeds: [min, max]
    assert "## Paired differences by loss.class_weight" in md
    assert "### data.imbalance_ratio=10" in md and "### data.imbalance_ratio=100" in md
    assert "| null − inverse | balanced_accuracy ↑ | 3 |" in md
    assert (out / "class_recall.png").read_bytes()[:4] == b"\x89PNG"


def test_a_study_of_several_sweep_directories_is_the_study_of_their_runs_together(tmp_path):
    """lossbench.studies STUDY DIR1 DIR2 (e.g. the final/ folders of two lossbench.tune processes) reports and pairs
    the runs of both, as one directory holding them all would."""
    from lossbench.store import write_json

    for root in ("one", "two"):
        for variant, acc in (("hard", 0.97), ("kd_t4", 0.98)):
            for seed in (0, 1, 2):
                cfg = {"seed": seed, "data": {"name": "mnist", "seed": seed}, "loss": {"name": "ce"},
                       "study": {"variant": variant}, "optim": {"lr": 0.001 if variant == "hard" else 0.003}}
                summary = {"status": "completed", "config": cfg, "final": {"val/accuracy": acc + seed / 1000},
                           "best": {"val/accuracy": acc + seed / 1000}, "history": [{"step": 10}],
                           "data": {"n_val": 5000}}
                where = [tmp_path / "all" / f"{variant}_{seed}"]
                if (root == "one") == (variant == "hard"):
                    where.append(tmp_path / root / f"{variant}_{seed}")
                for d in where:
                    write_json(d / "summary.json", summary)
    assert studies.main(["distillation", str(tmp_path / "one"), str(tmp_path / "two"), "--out",
                         str(tmp_path / "split")]) == 0
    assert studies.main(["distillation", str(tmp_path / "all"), "--out", str(tmp_path / "whole")]) == 0
    split, whole = ((tmp_path / d / "study.md").read_text().split("\n", 3)[3] for d in ("split", "whole"))
    assert split == whole and "| hard (optim.lr=0.001) − kd_t4 (optim.lr=0.003) | accuracy ↑ | 3 |" in split
