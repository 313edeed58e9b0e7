"""The speed work: the benchmark runs and reports, and the speed options (AMP, torch.compile) train on the
CPU. No timing assertions: timings belong to the benchmark."""

from __future__ import annotations

import math
import re

import pytest
import torch

from lossbench.tools import bench
from tests.conftest import cli, make_cfg, run_cfg

TINY = ["--steps", "3", "--repeats", "1", "--warmup-steps", "2", "--n-train", "512", "--n-val", "256",
        "--eval-every", "2", "--threads", "1"]
LAST = re.compile(r"^speedup_vs_dataloader=(\S+) overhead_vs_bare=(\S+)$")


def last_line(out: str) -> tuple[float, float]:
    m = LAST.match(out.strip().splitlines()[-1])
    assert m, out
    return float(m[1]), float(m[2])


def test_bench_runs_all_four_loops_and_ends_with_the_ratio_line(tmp_path, capsys):
    bench.main([*TINY, "--data-root", str(tmp_path)])  # no MNIST there: synthetic data of MNIST's shape
    out = capsys.readouterr().out
    speedup, overhead = last_line(out)
    assert speedup > 0 and math.isfinite(overhead)
    assert "synthetic data of MNIST's shape" in out
    assert "per round (wall): c/a = " in out
    for loop in ("a_dataloader", "b_bare", "c_lossbench", "d_lossbench_numerics_off"):
        assert f"round 1: {loop}" in out


def test_bench_cli_with_options(tmp_path):
    r = cli("-m", "lossbench.bench", *TINY, "--model", "linear", "--precision", "bf16", "--batch-size", "64",
            "--clock", "cpu", "--data-root", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "precision=bf16" in r.stdout and "clock=cpu" in r.stdout
    last_line(r.stdout)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_amp_trains_on_the_cpu(tmp_path, precision):
    s = run_cfg(tmp_path, f"trainer.precision={precision}", "trainer.device=cpu", "trainer.max_steps=40",
                "trainer.log_every=20", "trainer.eval_every=20", "data.n_train=512", "data.n_val=256",
                "logger.enabled=false")
    assert s["status"] == "completed" and s["precision"] == precision
    assert s["final"]["val/auc"] > 0.6


def test_compile_trains_on_the_cpu(tmp_path):
    s = run_cfg(tmp_path, "trainer.compile=true", "trainer.device=cpu", "trainer.max_steps=20",
                "trainer.log_every=10", "trainer.eval_every=20", "data.n_train=512", "data.n_val=256",
                "model.hidden=[32]", "logger.enabled=false")
    assert s["status"] == "completed" and s["steps"] == 20
    assert s["numerics"]["nonfinite_loss"] == 0


def test_bench_watch_mode_ends_with_the_overhead_line(tmp_path, capsys):
    bench.main([*TINY, "--watch", "--data-root", str(tmp_path)])
    out = capsys.readouterr().out
    m = re.match(r"^watch_overhead_ce=(\S+) watch_overhead_bce=(\S+)$", out.strip().splitlines()[-1])
    assert m and all(math.isfinite(float(v)) for v in m.groups()), out
    assert "round 1: ce   plain" in out and "round 1: bce  plain" in out and "us a call" in out


def _hand_script_functions() -> dict:
    """The functions of bench --sweep's hand-written script (its loop left out)."""
    import ast

    import torch.nn as nn

    from lossbench.tools.bench import HAND_SCRIPT

    tree = ast.parse(HAND_SCRIPT)
    ns = {"torch": torch, "nn": nn, "F": torch.nn.functional}
    exec(compile(ast.Module([n for n in tree.body if isinstance(n, ast.FunctionDef)], []), "hand", "exec"), ns)  # noqa: S102
    return ns


def test_the_hand_script_trains_on_lossbenchs_data_and_measures_sklearns_auc():
    """bench --sweep compares equal work: the hand script's data are lossbench's (data=synthetic, each regime's
    scale) and its AUC is scikit-learn's."""
    from sklearn.metrics import roc_auc_score

    from lossbench import data

    hand = _hand_script_functions()
    for seed, scale in ((0, 50.0), (2, 1.0)):
        ds = data.load(make_cfg(f"seed={seed}", f"data.scale={scale}").data)
        x, y, xv, yv = hand["data"](seed, scale)
        assert torch.equal(x, ds.x_train) and torch.equal(y, ds.y_train)
        assert torch.equal(xv, ds.x_val) and torch.equal(yv, ds.y_val)
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 20, (500,), generator=g).float()  # many ties
    labels = torch.randint(0, 2, (500,), generator=g)
    assert abs(hand["auc"](scores, labels) - roc_auc_score(labels.numpy(), scores.numpy())) < 1e-12
