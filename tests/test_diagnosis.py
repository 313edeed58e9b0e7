"""A run that completes but learned nothing says so: the `stalled` diagnosis in the final line, the sweep line,
summary.json, HPARAMS and the report; never on a healthy run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing import event_accumulator

from lossbench.analysis import report, stats
from lossbench.engine import diagnosis
from tests.conftest import ROOT, cli, run_cfg

SMALL = ["data.n_train=2000", "data.n_val=1000", "trainer.max_steps=200", "trainer.threads=1"]
# The two cases: inputs x50 with Sigmoid + BCELoss (seed 1 saturates at this size) and a head bias of -100.
STALLS = {"scale50": ["loss=bce", "data.scale=50", "seed=1"], "bias_neg100": ["loss=bce", "model.head_bias=-100"]}


@pytest.mark.parametrize("case", sorted(STALLS))
def test_the_stalled_cases_are_diagnosed_with_their_numbers(tmp_path, case):
    s = run_cfg(tmp_path, *STALLS[case], *SMALL)
    assert s["status"] == "completed"
    d = s["diagnosis"]
    assert d["name"] == "stalled" and d["see"] == diagnosis.DOCS
    assert d["evidence"]["saturated_frac"] >= diagnosis.STALL_SATURATED
    assert d["evidence"]["dead_frac"] >= diagnosis.STALL_DEAD and d["evidence"]["val/auc"] == pytest.approx(0.5)
    assert "bce_logits" in d["message"]  # the fix for Sigmoid + BCELoss
    assert json.loads((tmp_path / "summary.json").read_text())["diagnosis"]["name"] == "stalled"
    acc = event_accumulator.EventAccumulator(str(tmp_path))
    acc.Reload()
    assert acc.Scalars("watch/stalled")[-1].value == 1.0  # an HPARAMS metric column


def test_a_healthy_run_has_no_diagnosis(tmp_path):
    s = run_cfg(tmp_path, "loss=bce_logits", "data.scale=50", "seed=1", *SMALL)
    assert s["diagnosis"] is None
    acc = event_accumulator.EventAccumulator(str(tmp_path))
    acc.Reload()
    assert acc.Scalars("watch/stalled")[-1].value == 0.0


def study_runs() -> list[dict]:
    """Every run of the ten studies, as the summaries' fields the diagnosis reads (from their summary.csv)."""
    runs = []
    for path in sorted((ROOT / "experiments").glob("*/summary.csv")):
        for row in csv.DictReader(path.open()):
            if row["row"] != "run":
                continue
            num = lambda k: float(row[k]) if row.get(k) not in (None, "") else None  # noqa: E731, B023
            runs.append({"study": path.parent.name, "group": row["group"], "status": row["status"],
                         "final": {"val/auc": num("final/val/auc")},
                         "numerics": {"saturated_frac_mean": num("numerics/saturated_frac_mean"),
                                      "dead_frac_mean": num("numerics/dead_frac_mean")},
                         "config": {"loss": {"name": row["group"].split("loss=")[-1].split()[0]}}})
    return runs


def test_no_false_alarm_on_the_studies_and_every_stuck_run_found():
    """Over the ~400 runs of the studies: a run is flagged exactly when it saturated, left samples dead and ranks
    at chance; every flagged one is a Sigmoid + BCELoss (or clipped BCE) run, and every run that learned (AUC
    above 0.6) is left alone."""
    runs = study_runs()
    assert len(runs) > 300
    flagged = [r for r in runs if diagnosis.diagnose(r)]
    assert flagged and all(r["study"] == "saturation" and r["config"]["loss"]["name"] in ("bce", "bce_clipped")
                           for r in flagged)
    assert all(r["final"]["val/auc"] == pytest.approx(0.5, abs=diagnosis.CHANCE_MARGIN) for r in flagged)
    learned = [r for r in runs if r["final"]["val/auc"] is not None and r["final"]["val/auc"] > 0.6]
    assert learned and not any(diagnosis.diagnose(r) for r in learned)


def test_the_diagnosis_needs_all_three_signs():
    base = {"status": "completed", "final": {"val/auc": 0.5}, "config": {"loss": {"name": "bce"}},
            "numerics": {"last": {"saturated_frac": 0.97, "dead_frac": 0.47}}}
    assert diagnosis.diagnose(base)["name"] == "stalled"
    for change in ({"final": {"val/auc": 0.8}}, {"numerics": {"last": {"saturated_frac": 0.1, "dead_frac": 0.47}}},
                   {"numerics": {"last": {"saturated_frac": 0.97, "dead_frac": 0.0}}}, {"status": "diverged"},
                   {"final": {}}, {"numerics": "not a dict"}):
        assert diagnosis.diagnose({**base, **change}) is None, change
    # the last window wins over the whole-run mean (a run that saturated early and recovered is not stalled)
    recovered = {**base, "numerics": {"saturated_frac_mean": 0.9, "dead_frac_mean": 0.4,
                                      "last": {"saturated_frac": 0.0, "dead_frac": 0.0}}}
    assert diagnosis.diagnose(recovered) is None


@pytest.fixture(scope="module")
def two_seed_sweep(tmp_path_factory) -> tuple[Path, str]:
    sweep = tmp_path_factory.mktemp("two") / "sweep"
    r = cli("--multirun", "loss=bce", "seed=0,1", "data.scale=50", *SMALL, f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr[-3000:]
    return sweep, r.stdout


def test_a_stalled_job_says_so_in_its_lines(two_seed_sweep):
    sweep, out = two_seed_sweep
    lines = out.splitlines()
    stalled = [ln for ln in lines if ln.startswith("lossbench: completed") and "STALLED (" in ln]
    assert len(stalled) == 1 and "% saturated" in stalled[0] and "% dead" in stalled[0]
    assert any(ln.startswith("lossbench: stalled: ") and "Fix: use loss=bce_logits" in ln for ln in lines)
    sweep_lines = [ln for ln in lines if ln.startswith("lossbench sweep: [")]
    assert [ln.split("]")[0] for ln in sweep_lines] == ["lossbench sweep: [1/2", "lossbench sweep: [2/2"]
    assert sum("STALLED (" in ln for ln in sweep_lines) == 1
    assert 'Diagnosed: {"stalled": 1}' in out
    status = json.loads((sweep / "sweep_status.json").read_text())
    assert sorted(str(j["diagnosis"]) for j in status["jobs"]) == ["None", "stalled"]


def test_the_report_shows_each_seed_the_split_and_no_interval_from_two(two_seed_sweep, tmp_path):
    sweep, _ = two_seed_sweep
    text, _ = report.report([sweep], tmp_path / "r")
    with open(tmp_path / "r" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    runs = [r for r in rows if r["row"] == "run"]
    assert sorted(r["diagnosis"] for r in runs) == ["", "stalled"]
    (group,) = [r for r in rows if r["row"] == "group"]
    assert group["split"] == "1 of 2 stalled" and group["status"] == "2 completed (1 stalled): split"
    assert group["final/val/auc ci_low"] == "" and group["final/val/auc n"] == "2"  # 2 < MIN_SEEDS: no interval
    assert stats.MIN_SEEDS == 3
    assert "1 of 2 stalled; its mean averages runs that behaved differently" in text
    each = text.split("### Each run")[1]
    assert each.count("| data=synthetic loss=bce |") == 2 and "| stalled |" in each


def test_a_run_that_learned_then_fell_to_chance_is_collapsed():
    """shuttle, class weights at SGD lr 0.1: val/auc 0.993 at step 100, then |logit| 3e18 and one constant output to
    the end (AUC 0.500), status completed. It says so, with its best point; a run that never learned does not."""
    history = [{"step": 50, "val/auc": 0.986}, {"step": 100, "val/auc": 0.993}, {"step": 150, "val/auc": 0.5}]
    run = {"status": "completed", "final": {"val/auc": 0.5}, "best": {"val/auc": 0.993}, "history": history,
           "numerics": {"max_abs_logit": 3.2e18, "last": {"saturated_frac": 0.0, "dead_frac": 0.0}},
           "config": {"loss": {"name": "bce_logits"}}}
    d = diagnosis.diagnose(run)
    assert d["name"] == "collapsed" and "step 100" in d["message"] and "3.2e+18" in d["message"]
    assert d["short"] == "COLLAPSED (val/auc 0.993 at step 100 -> 0.500)"
    assert diagnosis.name(run) == "collapsed"
    for change in ({"best": {"val/auc": 0.55}}, {"final": {"val/auc": 0.9}}, {"status": "diverged"}, {"best": None},
                   {"history": "not a list"} | {"best": {"val/auc": 0.8}}):
        d = diagnosis.diagnose({**run, **change})
        assert (d is None) if "history" not in change else d["short"] == "COLLAPSED (val/auc 0.800 -> 0.500)", change
    # a stall is a stall, whatever its best
    stalled = {**run, "numerics": {"last": {"saturated_frac": 0.97, "dead_frac": 0.47}}}
    assert diagnosis.diagnose(stalled)["name"] == "stalled"
