"""The speed work: the benchmark runs and reports, the fast monitor keeps its exact semantics, and the speed
options (AMP, torch.compile) train on the CPU. No timing assertions: timings belong to the benchmark."""

from __future__ import annotations

import math
import re

import pytest
import torch

from lossbench import bench
from lossbench.numerics import BUFFER, Monitor
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


@pytest.mark.parametrize("scaled_grads", [False, True])
def test_buffered_monitor_matches_a_step_by_step_account(scaled_grads):
    """Loss finiteness every step, sampled gradient norms, the first bad step: across buffer reductions and
    reads, against a plain step-by-step account."""
    gen = torch.Generator().manual_seed(0)
    steps, reads = 3 * BUFFER + 7, {10, BUFFER, BUFFER + 1, 150, 3 * BUFFER + 7}
    bad_loss_at, bad_grad_at = {BUFFER + 5, 170}, {BUFFER + 2, 100}
    sampled = {s for s in range(steps) if s % 3 == 0} | bad_grad_at | {BUFFER + 5}
    m = Monitor(torch.device("cpu"), None, enabled=True, scaled_grads=scaled_grads)
    ref = {"loss": 0.0, "nonfinite_loss": 0, "nonfinite_grad": 0, "grad_norm": 0.0, "max_grad_norm": 0.0, "n": 0,
           "ng": 0}
    first = None
    for step in range(steps):
        loss = torch.rand((), generator=gen) * 3
        grads = [torch.randn(5, 4, generator=gen), torch.randn(4, generator=gen) * 10]
        if step in bad_loss_at:
            loss = torch.tensor(math.inf)
        if step in bad_grad_at:
            grads[1][2] = math.nan
        assert m.observe(loss).item() == loss.item()
        ref["loss"] += loss.item()
        ref["n"] += 1
        ref["nonfinite_loss"] += step in bad_loss_at
        if step in sampled:
            assert bool(torch.isfinite(m.observe_grads(grads)).all()) == (step not in bad_grad_at)
            gnorm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]).double()).item()
            ref["ng"] += 1
            if math.isfinite(gnorm):
                ref["grad_norm"] += gnorm
                ref["max_grad_norm"] = max(ref["max_grad_norm"], gnorm)
            else:
                ref["nonfinite_grad"] += 1
        if first is None and (step in bad_loss_at or (step in bad_grad_at and not scaled_grads)):
            first = step
        if step + 1 in reads:
            out = m.read()
            assert out["numerics/nonfinite_loss"] == ref["nonfinite_loss"]
            assert out["numerics/nonfinite_grad"] == ref["nonfinite_grad"]
            if ref["ng"]:
                assert out["numerics/grad_norm"] == pytest.approx(ref["grad_norm"] / ref["ng"], rel=1e-5)
                assert out["numerics/max_grad_norm"] == pytest.approx(ref["max_grad_norm"], rel=1e-5)
            else:  # a window without a gradient sample (the read at BUFFER + 1)
                assert "numerics/grad_norm" not in out
            if math.isfinite(ref["loss"]):
                assert out["train/loss"] == pytest.approx(ref["loss"] / ref["n"], rel=1e-5)
            else:
                assert out["train/loss"] == math.inf
            assert m.first_nonfinite_step == first
            ref = dict.fromkeys(ref, 0) | {"loss": 0.0, "grad_norm": 0.0, "max_grad_norm": 0.0}
    s = m.summary()
    assert s["steps"] == steps and s["grad_steps"] == len(sampled) and s["nonfinite_loss"] == len(bad_loss_at)
    assert s["nonfinite_grad"] == len(bad_grad_at) and s["first_nonfinite_step"] == (BUFFER + 5 if scaled_grads else BUFFER + 2)


def test_a_window_without_gradient_samples_logs_no_gradient_norm():
    m = Monitor(torch.device("cpu"), None, enabled=True, every=100)
    for _ in range(10):
        m.observe(torch.tensor(1.0))
    out = m.read()
    assert out["train/loss"] == 1.0 and "numerics/grad_norm" not in out


def test_monitor_state_round_trips_mid_buffer():
    """A checkpoint taken with losses still buffered resumes to the same window (same sums, same order)."""
    gen = torch.Generator().manual_seed(1)
    seq = [(torch.rand((), generator=gen), [torch.randn(3, generator=gen)]) for _ in range(90)]

    def feed(m: Monitor, part: list, start: int) -> None:
        for step, (loss, g) in enumerate(part, start):
            m.observe(loss)
            if step % 4 == 0:
                m.observe_grads(g)

    a = Monitor(torch.device("cpu"), None)
    feed(a, seq, 0)
    b = Monitor(torch.device("cpu"), None)
    feed(b, seq[:70], 0)
    c = Monitor(torch.device("cpu"), None)
    c.load_state_dict(b.state_dict())
    feed(c, seq[70:], 70)
    assert a.read() == c.read() and a.summary() == c.summary()


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

    from lossbench.bench import HAND_SCRIPT

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
