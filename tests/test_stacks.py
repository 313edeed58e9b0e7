"""Stacked sweeps: a member's run is the run it would be alone (CPU, tiny synthetic jobs)."""

from __future__ import annotations

import json
import math
import signal

import pytest

from lossbench import store
from lossbench.engine import train
from lossbench.engine.numerics import Monitor
from lossbench.sweeps.sweep import job_dirs
from tests.conftest import cli, make_cfg, needs_mnist

SMALL = ["trainer.threads=1", "model.hidden=[16]", "data.n_train=400", "data.n_val=200", "trainer.max_steps=60",
         "trainer.eval_every=20", "trainer.log_every=10", "numerics.every=5", "logger.flush_secs=1"]
TOL = 1e-4


def jobs(tmp_path, grid: list[list[str]], *extra: str):
    return [(make_cfg(*SMALL, *ov, *extra), tmp_path / "_".join(ov).replace("=", "-")) for ov in grid]


def close(a: dict, b: dict, keys=("final", "best")) -> None:
    """Same statuses, steps and evaluations; every metric within TOL (NaN equals NaN)."""
    assert (a["status"], a["steps"]) == (b["status"], b["steps"])
    assert [h["step"] for h in a["history"]] == [h["step"] for h in b["history"]]
    for ha, hb in zip(a["history"], b["history"], strict=True):
        for k in ha:
            both_nan = all(v is None or math.isnan(v) for v in (ha[k], hb[k]))
            assert both_nan or abs(ha[k] - hb[k]) <= TOL, (k, ha[k], hb[k])


def alone_equals_stacked(tmp_path, common: list[str], grid: list[list[str]]) -> list[dict]:
    """The grid's jobs trained one by one and as one stack: every member equals its run alone (the runs alone)."""
    def grid_jobs(root):
        return [(make_cfg(*common, *ov), root / str(i)) for i, ov in enumerate(grid)]

    alone = train.run_jobs(grid_jobs(tmp_path / "alone"), stacked=False)
    stacked = train.run_jobs(grid_jobs(tmp_path / "stacked"))
    assert {s["stack"]["size"] for s in stacked} == {len(grid)}
    for a, b in zip(alone, stacked, strict=True):
        close(a, b)
    return alone


GRID = [[f"loss={lo}", f"seed={s}", f"optim.lr={lr}"] for lo in ("bce", "bce_logits") for s in (0, 1)
        for lr in (0.02, 0.1)]


def test_a_mixed_sweep_stacked_equals_the_same_sweep_alone(tmp_path):
    alone = train.run_jobs(jobs(tmp_path / "alone", GRID), stacked=False)
    stacked = train.run_jobs(jobs(tmp_path / "stacked", GRID))
    assert {s["stack"]["size"] for s in stacked} == {len(GRID)}  # one stack of eight
    assert all("stack" not in s for s in alone)
    for a, b in zip(alone, stacked, strict=True):
        close(a, b)
        for k in ("saturated_frac_mean", "dead_frac_mean", "loss_gap_mean", "max_abs_logit", "max_grad_norm"):
            assert a["numerics"][k] == pytest.approx(b["numerics"][k], rel=1e-4, abs=1e-6), k
        assert a["per_class_recall"] == pytest.approx(b["per_class_recall"], abs=TOL)


def test_a_diverging_member_ends_as_alone_and_touches_no_other(tmp_path):
    """lr 1e6 on one member: it diverges at the same step as alone, with its first non-finite step, and
    the others' results equal their runs alone; on_nonfinite keeps its meaning per member."""
    grid = [["loss=bce", "seed=0"], ["loss=bce_logits", "seed=1"], ["loss=bce_manual", "seed=0", "optim.lr=1e6"],
            ["loss=bce_logits", "seed=0", "optim.lr=1e6", "trainer.on_nonfinite=continue"],
            ["loss=bce", "seed=1", "data.scale=50", "trainer.on_nonfinite=skip"]]
    alone = train.run_jobs(jobs(tmp_path / "alone", grid), stacked=False)
    stacked = train.run_jobs(jobs(tmp_path / "stacked", grid))
    assert [s["status"] for s in stacked] == ["completed", "completed", "diverged", "diverged", "completed"]
    assert stacked[2]["steps"] < 60 and stacked[3]["steps"] == 60
    for a, b in zip(alone, stacked, strict=True):
        close(a, b)
        assert a["numerics"]["first_nonfinite_step"] == b["numerics"]["first_nonfinite_step"]
        assert a["numerics"]["nonfinite_loss"] == b["numerics"]["nonfinite_loss"]
        assert b["stack"]["size"] == 5


def test_monitors_are_per_member_in_a_saturating_regime(tmp_path):
    """Saturation, clamp, dead samples and loss gap of each member, as alone: one member saturates, the
    other does not, and gradient norms are never taken over the whole stack."""
    grid = [["loss=bce", "model.head_bias=-100"], ["loss=bce_logits", "model.head_bias=-100"], ["loss=nll"]]
    alone = train.run_jobs(jobs(tmp_path / "alone", grid, "trainer.max_steps=30"), stacked=False)
    stacked = train.run_jobs(jobs(tmp_path / "stacked", grid, "trainer.max_steps=30"))
    assert stacked[0]["numerics"]["clamped_frac_mean"] > 0.4 and stacked[1]["numerics"]["clamped_frac_mean"] == 0
    for a, b in zip(alone, stacked, strict=True):
        for k in ("saturated_frac_mean", "clamped_frac_mean", "dead_frac_mean", "loss_gap_mean", "max_grad_norm"):
            assert a["numerics"][k] == pytest.approx(b["numerics"][k], rel=1e-4, abs=1e-6), k


def test_what_cannot_stack_goes_to_its_own_stack(tmp_path):
    grid = [["seed=0"], ["seed=1"], ["seed=2", "model.hidden=[8]"], ["seed=3", "trainer.batch_size=64"],
            ["seed=4", "trainer.precision=fp16"], ["seed=5", "trainer.precision=fp16"], ["seed=6", "data.n_train=300"]]
    results = train.run_jobs(jobs(tmp_path, grid))
    assert [s.get("stack", {}).get("size", 1) for s in results] == [2, 2, 1, 1, 1, 1, 1]
    assert all(s["status"] == "completed" for s in results)


def test_max_members_and_memory_split_stacks(tmp_path):
    grid = [[f"seed={s}"] for s in range(5)]
    results = train.run_jobs(jobs(tmp_path / "a", grid), max_members=2)
    assert [s["stack"]["size"] if "stack" in s else 1 for s in results] == [2, 2, 2, 2, 1]
    results = train.run_jobs(jobs(tmp_path / "b", grid), max_memory_gb=1e-9)
    assert all("stack" not in s for s in results)


def test_an_interrupted_stack_resumes_to_where_an_uninterrupted_stack_ends(tmp_path, monkeypatch):
    grid = [["loss=bce", "seed=0"], ["loss=bce_logits", "seed=1", "optim.lr=0.1"], ["loss=bce_manual", "seed=2"]]
    ref = train.run_jobs(jobs(tmp_path / "ref", grid))
    observe, fired = Monitor.observe, []

    def hooked(self, loss, z=None):  # SIGINT once, right after step 33 of the first member
        out = observe(self, loss, z)
        if self.step_t == 33 and not fired:
            fired.append(1)
            signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(Monitor, "observe", hooked)
    first = train.run_jobs(jobs(tmp_path / "run", grid))
    monkeypatch.undo()
    assert [(s["status"], s["steps"], s["exit_code"]) for s in first] == [("interrupted", 33, 130)] * 3
    assert all((tmp_path / "run" / d.name / store.CHECKPOINT).exists() for _, d in jobs(tmp_path / "run", grid))
    again = train.run_jobs(jobs(tmp_path / "run", grid, "trainer.skip_completed=true"))
    for a, b in zip(ref, again, strict=True):
        for key in ("status", "steps", "final", "best", "history", "convergence", "numerics", "per_class_recall"):
            assert a[key] == b[key], key  # bitwise: the same stack, resumed


def test_the_stacked_launcher_from_the_command_line(tmp_path):
    sweep = tmp_path / "sweep"
    r = cli("--multirun", "hydra/launcher=stacked", "loss=bce,bce_logits,bce_manual", "seed=0,1", *SMALL,
            f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr[-3000:]
    status = json.loads((sweep / "sweep_status.json").read_text())
    assert [j["status"] for j in status["jobs"]] == ["completed"] * 6
    dirs = job_dirs(sweep)  # <job number>_<swept overrides>, in job order
    assert [d.name for d in dirs][:2] == ["0_loss=bce,seed=0", "1_loss=bce,seed=1"]
    summaries = [store.read_json(d / store.SUMMARY) for d in dirs]
    assert len(summaries) == 6 and {s["stack"]["size"] for s in summaries} == {6}
    assert all((d / ".hydra" / "config.yaml").exists() for d in dirs)
    assert r.stdout.count("lossbench: completed 60 steps") == 6
    rep = cli("-m", "lossbench.report", str(sweep))
    assert rep.returncode == 0, rep.stderr


def test_stacked_launcher_with_submitit_local_sends_each_stack_as_one_job(tmp_path):
    pytest.importorskip("submitit")
    sweep = tmp_path / "sweep"
    r = cli("--multirun", "hydra/launcher=stacked", "hydra.launcher.executor=submitit_local", "seed=0,1",
            "model.hidden=[16],[8]", *[o for o in SMALL if not o.startswith("model.hidden")],
            f"hydra.sweep.dir={sweep}", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summaries = [store.read_json(d / store.SUMMARY) for d in job_dirs(sweep)]
    assert [s["status"] for s in summaries] == ["completed"] * 4
    assert [s["stack"]["size"] for s in summaries] == [2] * 4
    assert len(list((sweep / ".submitit").glob("*_result.pkl"))) == 2  # two stacks, two submitit jobs


@needs_mnist
def test_a_stack_of_cnns_on_mnist_equals_the_runs_alone(tmp_path):
    """The grouped convolution of a stack of CNNs, and data shared by its members (MNIST, held once)."""
    common = ["data=mnist", "model=cnn", "model.channels=[4,8]", "model.hidden=16", "loss=ce", "data.n_train=512",
              "data.n_val=256", "trainer.max_steps=30", "trainer.eval_every=15", "trainer.log_every=15",
              "trainer.threads=1", "seed=0"]
    alone_equals_stacked(tmp_path, common, [[], ["optim.lr=0.05"], ["loss.label_smoothing=0.1"]])



def test_same_as_compares_content():
    from lossbench import data as data_mod
    a, b = (data_mod.load(make_cfg(*SMALL, "seed=3").data) for _ in range(2))
    assert a is not b and a.same_as(b)
    assert not a.same_as(data_mod.load(make_cfg(*SMALL, "seed=4").data))
    assert not a.same_as(data_mod.load(make_cfg(*SMALL, "seed=3", "data.scale=2").data))


@needs_mnist
def test_members_hold_equal_data_once_and_different_data_apart(tmp_path):
    """The full MNIST under two run seeds is the same data: one copy in memory (a stack of K seeds does not
    hold K copies); a random subset per seed is different data and is never shared."""
    from lossbench.engine import member, plan
    datasets: dict = {}
    grid = [["seed=0"], ["seed=1", "loss=nll"], ["seed=1", "data.n_train=500"], ["seed=2", "data.n_train=500"]]
    cfgs = [make_cfg("data=mnist", "loss=ce", "trainer.max_steps=2", *ov) for ov in grid]
    ms = [member.build(c, plan.plan(c, tmp_path / str(i)), train.torch.device("cpu"), datasets, "fp32")
          for i, c in enumerate(cfgs)]
    assert ms[0].ds is ms[1].ds
    assert ms[2].ds is not ms[3].ds and ms[2].ds is not ms[0].ds


@pytest.mark.parametrize("grid", [
    [["loss=ce", f"loss.class_weight={cw}"] for cw in ("inverse", "effective", "[1.0,3.0,0.5]")],
    [["loss=nll", f"loss.class_weight={cw}"] for cw in ("inverse", "[2.0,1.0,1.0]")],
    [["loss=focal", "head=softmax", f"loss.class_weight={cw}"] for cw in ("inverse", "effective")],
    [["loss=bce_logits", "data.n_classes=2", f"loss.pos_weight={pw}"] for pw in ("auto", "sqrt_auto", "3.0")],
], ids=["ce", "nll", "focal", "pos_weight"])
def test_members_with_different_loss_weights_keep_their_own(tmp_path, grid):
    """Weights differ between members of one loss group (same signature, other values): each member trains
    with its own, as alone (a weight held under several names in the objective must be swapped under all)."""
    extra = ("data=imbalanced", "data.n_classes=3") if "data.n_classes=2" not in grid[0] else ("data=imbalanced",)
    alone = train.run_jobs(jobs(tmp_path / "alone", grid, *extra), stacked=False)
    stacked = train.run_jobs(jobs(tmp_path / "stacked", grid, *extra))
    assert {s["stack"]["size"] for s in stacked} == {len(grid)}
    for a, b in zip(alone, stacked, strict=True):
        close(a, b)
    assert len({a["history"][-1]["val/loss"] for a in alone}) == len(grid)  # the weights do change the runs


def test_a_run_alone_and_a_stack_meet_the_same_engine_contract(tmp_path):
    """stack.Engine: Alone (K = 1) and Stacked (K = 2) take and return the same shapes, member axis first."""
    import inspect

    import torch

    from lossbench.engine import member, plan, stack

    for cls in (stack.Alone, stack.Stacked):
        for name, fn in inspect.getmembers(stack.Engine, inspect.isfunction):
            if not name.startswith("_"):
                assert inspect.signature(getattr(cls, name)).parameters.keys() == \
                    inspect.signature(fn).parameters.keys(), (cls.__name__, name)
    cfgs = [make_cfg(*SMALL, f"seed={s}") for s in (0, 1)]
    ms = [member.build(c, plan.plan(c, tmp_path / str(i)), torch.device("cpu"), {}, "fp32")
          for i, c in enumerate(cfgs)]
    for engine in (stack.make(ms[:1]), stack.make(ms)):
        k = len(engine.members)
        batches = stack.Batches(engine.members)
        batches.new_epoch(torch.device("cpu"))
        x, t = batches.train(0, 32)
        z = engine.forward(x)
        losses = engine.losses(z, t)
        assert z.shape[:2] == (k, 32) and losses.shape == (k,)
        engine.backward(losses)
        assert engine.grads().shape == (k, len(list(ms[0].model.parameters())))
        engine.step()
        assert engine.predict(list(range(k)), batches.val(torch.arange(k), 0, 8)).shape[:2] == (k, 8)
        engine.sync()


@needs_mnist
@pytest.mark.parametrize("model", [["model=mlp", "model.hidden=[32,16]"], ["model=cnn", "model.channels=[4,8]",
                                                                          "model.hidden=16"]])
def test_dropout_and_jitter_members_equal_their_runs_alone(tmp_path, model):
    """model.dropout and data.jitter draw from each run's own generator: a member of a stack (mixed with members
    without them, and with another jitter) sees the masks and shifts of its run alone, and a different seed other
    ones."""
    common = ["data=mnist", *model, "loss=ce", "data.n_train=512", "data.n_val=256", "trainer.max_steps=30",
              "trainer.eval_every=15", "trainer.log_every=15", "trainer.threads=1"]
    alone = alone_equals_stacked(tmp_path, common, [
        ["model.dropout=0.5", "data.jitter=2", "seed=0"], ["model.dropout=0.5", "data.jitter=2", "seed=1"],
        ["model.dropout=0.5", "data.jitter=1", "seed=0"], ["model.dropout=0.5", "seed=0"]])
    finals = [a["final"]["val/loss"] for a in alone]
    assert len(set(finals)) == len(finals)  # seeds and jitters change the draws
