"""`python -m lossbench.report PATH --compare KEY`: paired differences over matched seeds, on synthetic run
summaries with known differences (written as a sweep would write them)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from lossbench.analysis import report, stats
from lossbench.store import write_json

METRICS = ("auc", "ap", "accuracy", "balanced_accuracy", "nll", "ece")


def write_run(path: Path, loss: str, seed: int, final: dict | None, status: str = "completed", **config) -> None:
    cfg = {"seed": seed, "data": {"name": "synthetic", "scale": config.pop("scale", 1.0), "seed": seed},
           "loss": {"name": loss, "pos_weight": None}, "head": config.pop("head", None), "trainer": {"max_steps": 100}}
    write_json(path / "summary.json", {"status": status, "config": cfg, "steps": 100, "final": final or {},
                                       "best": final or {}, "history": []})


def metrics(base: float, shift: float = 0.0) -> dict:
    """A run's final metrics: higher-is-better ones up by shift, lower-is-better ones down by shift."""
    return {f"val/{m}": base + (-shift if m in ("nll", "ece") else shift) for m in METRICS}


def rows_of(md: str) -> dict[tuple[str, str], list[str]]:
    """(pair, metric) -> cells of the comparison table."""
    out = {}
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and " − " in cells[0] and cells[0] != "A − B":
            out[cells[0], cells[1].split()[0]] = cells
    return out


def test_known_difference_is_covered_and_detected_where_unpaired_intervals_overlap(tmp_path, capsys):
    # Seeds differ a lot (base ~ N(0.8, 0.05)); bce is better than ce by exactly 0.02 in every metric, plus a
    # small per-run noise. The groups' own intervals overlap; the paired difference finds the 0.02.
    rng = np.random.default_rng(0)
    true = 0.02
    for seed in range(8):
        base = rng.normal(0.8, 0.05)
        write_run(tmp_path / f"bce{seed}", "bce", seed, metrics(base + rng.normal(0, 0.002), true))
        write_run(tmp_path / f"ce{seed}", "ce", seed, metrics(base + rng.normal(0, 0.002)))
    assert report.main([str(tmp_path), "--compare", "loss"]) == 0
    printed = capsys.readouterr().out
    md = (tmp_path / "report" / "compare_loss.md").read_text()
    assert md.strip() in printed
    rows = rows_of(md)
    with open(tmp_path / "report" / "compare_loss.csv") as f:
        csv_rows = {r["metric"]: r for r in csv.DictReader(f)}
    for m in METRICS:
        cells = rows["bce − ce", m]
        assert cells[2] == "8" and cells[-1] == "bce better"  # nll and ece: lower, so better too
        r = csv_rows[f"val/{m}"]
        low, high = float(r["ci_low"]), float(r["ci_high"])
        sign = -1 if m in ("nll", "ece") else 1
        assert low <= sign * true <= high and (low > 0 or high < 0)
        assert float(r["detectable"]) == pytest.approx((high - low) / 2)
        assert float(r["detectable"]) < true / 2
    table = (tmp_path / "report" / "table.md").read_text()
    groups = [line for line in table.split("### ")[1].splitlines() if line.startswith("| loss=")]
    (bce_low, bce_high), (ce_low, ce_high) = [
        map(float, g.split("|")[3].split("[")[1].rstrip("] ").split(", ")) for g in groups]
    assert bce_low < ce_high and ce_low < bce_high  # unpaired, the groups' intervals overlap


def test_identical_groups_give_no_difference(tmp_path):
    for seed in range(4):
        for loss in ("ce", "nll"):
            write_run(tmp_path / f"{loss}{seed}", loss, seed, metrics(0.7 + 0.01 * seed))
    text, _ = report.report([tmp_path], compare="loss.name")  # the dotted key works as well as "loss"
    for m in METRICS:
        cells = rows_of(text)["ce − nll", m]
        assert cells[5] == "0 [0, 0]" and cells[6] == "0"
        assert cells[-1] == f"{stats.NO_DIFFERENCE} (identical in every seed)"


def test_one_seed_is_not_enough(tmp_path):
    write_run(tmp_path / "a", "bce", 0, metrics(0.8, 0.05))
    write_run(tmp_path / "b", "bce_logits", 0, metrics(0.8))
    text, _ = report.report([tmp_path], compare="loss")
    cells = rows_of(text)["bce − bce_logits", "auc"]
    assert cells[2] == "1" and cells[5] == "0.05 [not enough seeds]" and cells[6] == "–"
    assert cells[-1] == "not enough seeds"


def test_unmatched_and_failed_runs_are_listed_and_strata_never_mixed(tmp_path):
    for scale in (1.0, 50.0):
        for seed in (0, 1, 2):
            write_run(tmp_path / f"bce_{scale}_{seed}", "bce", seed, metrics(0.8, 0.01), scale=scale)
            if seed < 2:  # no bce_logits seed 2: bce seed 2 has no partner
                write_run(tmp_path / f"logits_{scale}_{seed}", "bce_logits", seed, metrics(0.8), scale=scale)
    write_run(tmp_path / "diverged", "nll", 0, {"val/auc": None}, status="diverged", scale=50.0)
    write_run(tmp_path / "nll1", "nll", 1, metrics(0.8), scale=50.0)
    text, _ = report.report([tmp_path], compare="loss")
    sections = text.split("### ")
    by_scale = {s.split("\n")[0]: rows_of(s) for s in sections if s.startswith("data.scale=")}
    assert set(by_scale) == {"data.scale=1", "data.scale=50"}
    assert by_scale["data.scale=1"]["bce − bce_logits", "auc"][2] == "2"  # seeds 0 and 1, within scale 1 only
    assert ("bce − nll", "auc") not in by_scale["data.scale=1"]
    assert by_scale["data.scale=50"]["bce − nll", "auc"][2] == "1"  # seed 0's nll diverged: only seed 1
    notes = text.split("Not compared (listed, not dropped):")[1]
    assert f"bce seed 2 ({tmp_path / 'bce_1.0_2'}): no bce_logits run with seed 2 to pair with" in notes
    assert f"bce seed 2 ({tmp_path / 'bce_50.0_2'}): no bce_logits run with seed 2 to pair with" in notes
    assert "bce − nll, auc: pairs left out, no final val/auc: nll seed 0 (diverged)" in notes


def test_a_key_that_comes_with_the_compared_one_is_part_of_it(tmp_path):
    # the multiclass_heads study: each loss comes with its head; runs pair by seed, and the head is named
    for seed in (0, 1, 2):
        write_run(tmp_path / f"a_ce{seed}", "ce", seed, metrics(0.9), head="softmax")
        write_run(tmp_path / f"b_bl{seed}", "bce_logits", seed, metrics(0.9, -0.01), head="sigmoid")
    text, _ = report.report([tmp_path], compare="loss")
    assert rows_of(text)["ce (head=softmax) − bce_logits (head=sigmoid)", "auc"][-1] == "ce (head=softmax) better"
    assert "head changes with loss in these runs and is compared as part of it" in text


@pytest.mark.parametrize("key,message", [
    ("seed", "--compare seed: runs are matched on their seed, so it cannot be compared; compare a key that varies: loss"),
    ("lossx", "--compare lossx: no such config key in these runs. Keys that vary: loss"),
    ("data.scale", "--compare data.scale: every run has data.scale=1; nothing to compare. Keys that vary: loss"),
])
def test_keys_that_cannot_be_compared_are_one_line_errors(tmp_path, capsys, key, message):
    for seed in (0, 1):
        write_run(tmp_path / f"a{seed}", "bce", seed, metrics(0.8))
        write_run(tmp_path / f"b{seed}", "ce", seed, metrics(0.8))
    assert report.main([str(tmp_path), "--compare", key]) == 2
    assert capsys.readouterr().err == f"lossbench.report: error: {message}\n"
    assert not (tmp_path / "report").exists()  # refused before anything was written
