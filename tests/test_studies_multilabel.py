"""The multilabel and distillation study presets: every sweep value composes and validates, a tiny multilabel
sweep runs end to end with its report, and the two-step distillation study runs (teacher, then students)."""

from __future__ import annotations

import itertools
import json

import pytest
from hydra import compose, initialize_config_dir

from lossbench.analysis import studies
from lossbench.config import validate
from tests.conftest import CONFIGS, cli, needs_mnist, run_cfg


def compose_cfg(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def sweep_params(study: str) -> dict[str, list[str]]:
    params = compose_cfg(f"experiment={study}", hydra=True).hydra.sweeper.params
    return {k: str(v).split(",") for k, v in params.items()}


@pytest.mark.parametrize("study", ["multilabel", "distillation"])
def test_every_sweep_value_composes_and_validates(tmp_path, study):
    params = sweep_params(study)
    assert len(params["seed"]) >= 5  # the issue: at least 5 seeds
    extra = []  # the teacher (study.teacher) is checked when each run starts, not by validate
    axes = {k: v for k, v in params.items() if k != "seed"}
    assert all(len(v) >= 2 for v in axes.values())
    for combo in itertools.product(*([f"{k}={v}" for v in values] for k, values in axes.items())):
        cfg = compose_cfg(f"experiment={study}", *combo, *extra)
        validate(cfg)
        assert cfg.study.name == study and cfg.study.variant


def test_multilabel_sweep_end_to_end(tmp_path):
    """The documented command, with one dataset, one seed and tiny sizes, and its study report."""
    sweep = tmp_path / "sweep"
    r = cli("--multirun", "experiment=multilabel", "+multilabel_data=synthetic", "seed=0", f"hydra.sweep.dir={sweep}",
            "study.steps=12", "study.n_train=400", "data.n_val=300", "study.hidden=[16]", "trainer.eval_every=6")
    assert r.returncode == 0, r.stderr[-2000:]
    runs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]
    assert sorted(s["config"]["study"]["variant"] for s in runs) == sorted(
        ["bce_logits", "bce_logits_pos_weight", "asl", "asl_gamma_pos1", "ce_softmax"])
    assert all(s["status"] == "completed" and s["data"]["task"] == "multilabel" for s in runs)
    out = tmp_path / "report"
    assert studies.main(["multilabel", str(sweep), "--out", str(out)]) == 0
    md = (out / "study.md").read_text()
    assert "| group | runs | mAP | macro AUC | F1 micro@0.5 |" in md and "study.variant=ce_softmax" in md
    table = (out / "table.md").read_text()
    assert "f1_macro" in table and "hamming_loss" in table and (out / "curves.png").exists()


@needs_mnist
def test_multilabel_mnist_preset_runs(tmp_path):
    s = run_cfg(tmp_path, "experiment=multilabel", "+multilabel_data=mnist", "+multilabel_loss=asl",
                "study.steps=6", "study.n_train=300", "data.n_val=200", "study.hidden=[16]", "trainer.eval_every=3")
    assert s["status"] == "completed" and s["data"]["n_classes"] == 10 and s["head"] == "sigmoid"


@needs_mnist
def test_distillation_two_steps(tmp_path):
    teacher = run_cfg(tmp_path / "teacher", "experiment=distillation_teacher", "study.teacher_epochs=1",
                      "model.channels=[4,8]", "model.hidden=16", "data.n_train=1000", "data.n_val=300")
    assert teacher["status"] == "completed"
    for student in ("hard", "kd_t4", "kd_no_t2_t20"):
        s = run_cfg(tmp_path / student, "experiment=distillation", f"+students={student}",
                    f"study.teacher={tmp_path / 'teacher'}", "study.epochs=1", "study.hidden=[16]",
                    "data.n_train=1000", "data.n_val=300")
        assert s["status"] == "completed"
        assert ("teacher" in s["data"]) == (student != "hard")
    assert studies.main(["distillation", str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    assert "test errors" in (tmp_path / "report" / "study.md").read_text()
