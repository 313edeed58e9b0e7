"""lossbench.report on real (tiny, in-process) runs (the TensorBoard dashboards: tests/test_tensorboard.py)."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
from pathlib import Path

import pytest

from lossbench import report
from lossbench.member import record_failure
from tests.conftest import make_cfg, run_cfg

TINY = ["trainer.max_steps=30", "trainer.eval_every=15", "trainer.log_every=15", "data.n_train=500", "data.n_val=200"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A sweep-like tree: loss=bce and bce_logits x seeds 0, 1 (trained), plus one job that failed validation."""
    root = tmp_path_factory.mktemp("sweep")
    job = 0
    for loss in ("bce", "bce_logits"):
        for seed in (0, 1):
            run_cfg(root / str(job), f"loss={loss}", f"seed={seed}", *TINY)
            job += 1
    record_failure(root / str(job), make_cfg("loss=bce", "seed=2", "loss.pos_weight=-1", *TINY), "pos_weight must be > 0")
    return root


def row_of(table: str, label: str, section: int) -> list[str]:
    """The cells of `label`'s row in the section-th markdown table of table.md."""
    part = table.split("### ")[section + 1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in part.splitlines() if line.startswith("| ")]
    return next(r for r in rows if r[0] == label)


def test_report_numbers_match_the_summaries(sweep, capsys):
    assert report.main([str(sweep)]) == 0
    printed = capsys.readouterr().out
    out = sweep / "report"
    table = (out / "table.md").read_text()
    assert table.split("\n", 4)[4].strip() in printed  # the tables are printed as written

    summaries = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]
    bce = [s for s in summaries if s["config"]["loss"]["name"] == "bce_logits"]
    assert len(bce) == 2
    aucs = [s["final"]["val/auc"] for s in bce]
    header = ["group", "runs", *report.METRICS, "status"]
    row = dict(zip(header, row_of(table, "loss=bce_logits loss.pos_weight=null", 0), strict=True))
    assert row["runs"] == "2" and row["status"] == "2 completed"
    # Two seeds: the mean, and no interval (below stats.MIN_SEEDS the percentile interval would be [min, max] of
    # the two, a coin flip as a 95% CI); each seed is in the per-run table instead.
    assert row["auc"] == f"{statistics.mean(aucs):.4f} [not enough seeds]"
    nll = [s["best"]["val/nll"] for s in bce]
    best = dict(zip(header, row_of(table, "loss=bce_logits loss.pos_weight=null", 1), strict=False))
    assert best["nll"] == f"{statistics.mean(nll):.4f} [not enough seeds]"
    each = table.split("### Each run")[1]
    for a in aucs:
        assert f"| {a:.4f} |" in each

    # The failed job is its own group (its config differs: pos_weight), shown with its status, not dropped.
    failed = row_of(table, "loss=bce loss.pos_weight=-1", 0)
    assert failed[1] == "1" and failed[-1] == "1 failed" and set(failed[2:-1]) == {"–"}
    assert row_of(table, "loss=bce loss.pos_weight=null", 0)[-1] == "2 completed"

    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    groups = {r["group"]: r for r in rows if r["row"] == "group"}
    rows = [r for r in rows if r["row"] == "run"]
    assert len(rows) == 5 and len(groups) == 3
    g = groups["loss=bce_logits loss.pos_weight=null"]
    assert g["runs"] == "2" and g["status"] == "2 completed" and g["final/val/auc n"] == "2"
    assert float(g["final/val/auc"]) == pytest.approx(statistics.mean(aucs))
    assert g["final/val/auc ci_low"] == g["final/val/auc ci_high"] == ""
    assert groups["loss=bce loss.pos_weight=-1"]["final/val/auc"] == ""  # the failed run has no metric: no mean
    assert sorted(r["status"] for r in rows) == ["completed"] * 4 + ["failed"]
    by_dir = {Path(r["dir"]).name: r for r in rows}
    for p in sweep.glob("*/summary.json"):
        s = json.loads(p.read_text())
        r = by_dir[p.parent.name]
        assert r["seed"] == str(s["config"]["seed"])
        if s["status"] == "completed":
            assert float(r["final/val/auc"]) == pytest.approx(s["final"]["val/auc"])
            assert float(r["numerics/saturated_frac_mean"]) == pytest.approx(s["numerics"]["saturated_frac_mean"])
        else:
            assert r["final/val/auc"] == "" and "pos_weight" in r["error"]

    for name in ("curves.png", "numerics.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_report_out_dir_and_several_paths(sweep, tmp_path, capsys):
    sub = [str(sweep / "0"), str(sweep / "2")]  # one bce and one bce_logits run
    assert report.main([*sub, "--out", str(tmp_path / "r")]) == 0
    table = (tmp_path / "r" / "table.md").read_text()
    assert "| loss=bce | 1 |" in table and "| loss=bce_logits | 1 |" in table


def test_no_runs_is_a_clear_error(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"no runs found under {tmp_path}: expected summary.json files written by python -m lossbench" in err


def test_grouping_ignores_seeds_and_paths_and_labels_by_what_differs():
    def run(seed, loss, scale, root):
        cfg = {"seed": seed, "data": {"name": "synthetic", "scale": scale, "seed": seed, "root": root},
               "loss": {"name": loss, "pos_weight": None}, "trainer": {"resume": False, "max_steps": 100}}
        params = {k: v for k, v in report.flatten(cfg).items() if k not in report.IGNORED}
        return report.Run(Path(f"/x/{seed}"), {"status": "completed", "config": cfg}, params)

    runs = [run(s, loss, scale, f"/data/{s}") for loss in ("bce", "ce") for scale in (1.0, 50.0) for s in (0, 1, 2)]
    groups = report.group_runs(runs)
    assert [g.label for g in groups] == ["data.scale=1 loss=bce", "data.scale=50 loss=bce",
                                         "data.scale=1 loss=ce", "data.scale=50 loss=ce"]
    assert all(len(g.runs) == 3 for g in groups)
    single = report.group_runs([run(s, "bce", 1.0, "/d") for s in (0, 1)])
    assert [g.label for g in single] == ["data=synthetic loss=bce"]


def test_diverged_runs_are_counted_and_their_numerics_totalled(tmp_path, capsys):
    for seed in (0, 1):
        run_cfg(tmp_path / "sweep" / str(seed), "optim.lr=1000", f"seed={seed}", *TINY)
    run_cfg(tmp_path / "sweep" / "2", "seed=0", *TINY)
    assert report.main([str(tmp_path / "sweep")]) == 0
    table = (tmp_path / "sweep" / "report" / "table.md").read_text()
    diverged = [json.loads((tmp_path / "sweep" / str(s) / "summary.json").read_text()) for s in (0, 1)]
    assert [s["status"] for s in diverged] == ["diverged", "diverged"]
    row = row_of(table, "optim.lr=1000", 0)
    assert row[1] == "2" and row[-1] == "2 diverged"
    assert row[2] == "–"  # val/auc is NaN for both: no mean made up
    numerics = row_of(table, "optim.lr=1000", 3)  # after final, best and test-at-val-best
    assert numerics[5] == str(sum(s["numerics"]["nonfinite_loss"] for s in diverged))
    assert "(reached 0/2)" in numerics[1]
    default_lr = report.short_value(make_cfg().optim.lr)
    assert row_of(table, f"optim.lr={default_lr}", 0)[-1] == "1 completed"
    assert "2 diverged" in capsys.readouterr().out


NOT_RUNS = {"list": "[]", "null": "null", "string": '"done"', "number": "3", "no_keys": '{"foo": 1}',
            "config_not_a_dict": '{"status": "completed", "config": [1]}',
            "bad_history": '{"status": "completed", "config": {"seed": 0}, "history": [1, 2]}',
            "bad_final": '{"status": "completed", "config": {"seed": 0}, "final": [0.9]}',
            "truncated": '{"status": "compl'}


def test_summaries_that_are_not_runs_are_skipped_with_one_warning_each(sweep, tmp_path, capsys):
    root = tmp_path / "mixed"
    for name, text in NOT_RUNS.items():
        (root / name).mkdir(parents=True)
        (root / name / "summary.json").write_text(text)
    assert report.main([str(root)]) == 2  # nothing usable: a clear error, exit 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "AttributeError" not in err
    lines = err.strip().splitlines()
    assert len(lines) == len(NOT_RUNS) + 1
    for name in NOT_RUNS:
        assert sum(f"skipping {root / name / 'summary.json'}: " in line for line in lines) == 1
    assert "the JSON is an array, not an object" in err and "the JSON is null, not an object" in err
    assert lines[-1] == (f"lossbench.report: error: no usable runs under {root}: every summary.json found was "
                         "skipped (see the warnings)")

    shutil.copytree(sweep / "0", root / "good")  # one real run among them
    assert report.main([str(root), "--out", str(tmp_path / "r")]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("warning: skipping") == len(NOT_RUNS)
    table = (tmp_path / "r" / "table.md").read_text()
    assert "| data=synthetic loss=bce | 1 | " in table and "[not enough seeds]" in table
