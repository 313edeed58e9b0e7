"""lossbench.tune: the learning rate chosen on validation only, diverged = infeasible, the grid widened at an
edge, successive halving, and the test split never influencing a choice."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import cli
from omegaconf import OmegaConf

from lossbench import config, data
from lossbench.errors import ConfigError
from lossbench.sweeps import halving
from lossbench.tools import tune

TINY = ["data.n_train=400", "data.n_val=300", "trainer.max_steps=40", "trainer.eval_every=10", "trainer.log_every=10",
        "model.hidden=[8]", "numerics.every=5"]


def summary(status: str, val_auc: float | None, test_auc: float, steps: int = 40) -> dict:
    """A run record as summary.json holds it: best[test/X] is the test X at the evaluation best on val/X."""
    best = {} if val_auc is None else {"val/auc": val_auc, "test/auc": test_auc}
    return {"status": status, "steps": steps, "best": best, "final": dict(best)}


def trials(records: dict[tuple[str, float, int], dict]) -> list[tune.Trial]:
    jobs = [(None, Path(f"/x/{m}_{lr}_{s}"), (m, lr, s)) for m, lr, s in records]
    return tune.trials_of(jobs, list(records.values()), "val/auc", 1)


def test_the_choice_follows_validation_where_test_disagrees():
    # lr 0.01 is best on validation, lr 0.1 is best on test: the choice is 0.01
    records = {("a", 0.01, s): summary("completed", 0.90, 0.70) for s in (100, 101)}
    records |= {("a", 0.1, s): summary("completed", 0.80, 0.99) for s in (100, 101)}
    records |= {("b", 0.01, s): summary("completed", 0.60, 0.99) for s in (100, 101)}
    records |= {("b", 0.1, s): summary("completed", 0.65 + 0.01 * (s - 100), 0.50) for s in (100, 101)}
    choices = tune.choose(trials(records), "val/auc")
    assert choices["a"].lr == 0.01 and choices["a"].val == pytest.approx(0.90)
    assert choices["b"].lr == 0.1 and choices["b"].val == pytest.approx(0.655)
    # any test values at all: the same choices
    for r in records.values():
        r["best"]["test/auc"] = 1 - r["best"]["test/auc"]
    again = tune.choose(trials(records), "val/auc")
    assert {m: c.lr for m, c in again.items()} == {m: c.lr for m, c in choices.items()}


def test_lower_is_better_metrics_are_minimised():
    records = {("a", lr, 100): {"status": "completed", "steps": 40, "best": {"val/nll": v, "test/nll": 1 - v}}
               for lr, v in ((0.01, 0.3), (0.1, 0.2), (1.0, 0.5))}
    jobs = [(None, Path("/x"), k) for k in records]
    assert tune.choose(tune.trials_of(jobs, list(records.values()), "val/nll", 1), "val/nll")["a"].lr == 0.1


def test_diverged_is_infeasible_and_the_largest_stable_lr_is_recorded():
    records = {("a", 0.01, s): summary("completed", 0.80, 0.8) for s in (100, 101)}
    records |= {("a", 0.1, s): summary("completed", 0.85, 0.8) for s in (100, 101)}
    # lr 1: one seed has the best validation value of all, the other diverged: infeasible
    records |= {("a", 1.0, 100): summary("completed", 0.99, 0.99), ("a", 1.0, 101): summary("diverged", None, 0.5)}
    records |= {("a", 10.0, s): summary("diverged", None, 0.5, steps=10) for s in (100, 101)}
    c = tune.choose(trials(records), "val/auc")["a"]
    assert c.lr == 0.1 and c.largest_stable_lr == 0.1
    # every lr diverged: no choice, no stable lr
    bad = {("b", lr, 100): summary("diverged", None, 0.5, steps=10) for lr in (1.0, 10.0)}
    c = tune.choose(trials(bad), "val/auc")["b"]
    assert c.lr is None and c.largest_stable_lr is None


def test_a_collapsed_seed_makes_its_lr_infeasible():
    """A seed that learned (its best validation value the highest of all) and ended at chance counts as diverged."""
    records = {("a", 0.01, s): summary("completed", 0.80, 0.8) for s in (100, 101)}
    collapsed = {**summary("completed", 0.99, 0.99), "final": {"val/auc": 0.5}}
    records |= {("a", 0.1, 100): summary("completed", 0.98, 0.98), ("a", 0.1, 101): collapsed}
    t = trials(records)
    assert [x.status for x in t if x.lr == 0.1] == ["completed", "collapsed"]
    c = tune.choose(t, "val/auc")["a"]
    assert c.lr == 0.01 and c.largest_stable_lr == 0.01


def test_pruned_runs_cannot_be_chosen():
    records = {("a", 0.01, 100): summary("completed", 0.80, 0.8), ("a", 0.1, 100): summary("pruned", 0.95, 0.9, 20)}
    assert tune.choose(trials(records), "val/auc")["a"].lr == 0.01


def test_the_grid_widens_once_beyond_the_edge_it_chose():
    grid = [0.001, 0.01, 0.1]
    edge, new = tune.widen(grid, 0.1)
    assert edge == "high" and new == pytest.approx([1.0, 10.0])
    edge, new = tune.widen(grid, 0.001)
    assert edge == "low" and new == pytest.approx([1e-4, 1e-5])
    assert tune.widen(grid, 0.01) == (None, [])
    assert tune.widen(grid, None) == (None, [])


def member(lr: float, seed: int, auc: float | None, status: str = "running", method: str = "a"):
    cfg = OmegaConf.create({"optim": {"lr": lr}, "seed": seed, "objective_metric": "val/auc",
                            "trainer": {"eval_every": 10}})
    resolved = {"optim": {"lr": lr}, "seed": seed, "loss": {"name": method}, "objective_metric": "val/auc"}
    return SimpleNamespace(cfg=cfg, resolved=resolved, status=status, max_steps=100,
                           best={} if auc is None else {"val/auc": auc, "test/auc": 1 - auc})


def test_successive_halving_drops_the_worse_half_of_each_methods_lrs():
    aucs = {0.001: 0.70, 0.01: 0.90, 0.1: 0.85, 1.0: 0.60}
    members = [member(lr, s, auc + 0.01 * s) for lr, auc in aucs.items() for s in (0, 1)]
    members += [member(lr, 0, auc, method="b") for lr, auc in ((0.01, 0.5), (0.1, 0.6), (1.0, 0.7))]
    prune = halving.Halving([0.25, 0.5])
    assert halving.rung_steps([0.25, 0.5], 100, 10) == [30, 50]  # the evaluation steps nearest the rungs
    assert prune(20, members, members) == []  # not a rung
    dropped = {(members[k].resolved["loss"]["name"], members[k].cfg.optim.lr) for k in prune(30, members, members)}
    # method a: 4 lrs, the worse 2 (0.001, 1.0) with both their seeds; method b: 3 lrs, the worst one (0.01)
    assert dropped == {("a", 0.001), ("a", 1.0), ("b", 0.01)}
    assert len(prune(30, members, members)) == 5
    # the test values play no part: reversing them changes nothing
    for m in members:
        m.best["test/auc"] = -m.best["test/auc"]
    assert {(members[k].resolved["loss"]["name"], members[k].cfg.optim.lr) for k in prune(30, members, members)} \
        == dropped


def test_a_diverged_seed_makes_its_lr_the_first_to_go():
    members = [member(0.01, 0, 0.8), member(0.01, 1, 0.8), member(0.1, 0, 0.99), member(0.1, 1, None, "diverged")]
    active = [m for m in members if m.status == "running"]
    dropped = halving.Halving([0.5])(50, active, members)
    assert [active[k].cfg.optim.lr for k in dropped] == [0.1]


def test_bad_rungs_and_seeds_are_refused_in_one_line(tmp_path):
    for rungs in ([0.5, 0.25], [1.5], ["a"], 0.5):
        with pytest.raises(ConfigError, match="--rungs must be a list of fractions"):
            config.check_rungs(rungs, "--rungs")
    with pytest.raises(ConfigError, match="disjoint"):
        tune.tune(["loss=bce_logits"], tune_seeds=[0, 1], final_seeds=[1, 2], out=tmp_path)
    with pytest.raises(ConfigError, match="optim.lr is what lossbench.tune chooses"):
        tune.tune(["optim.lr=0.1,1"], out=tmp_path)
    with pytest.raises(ConfigError, match="trainer.max_steps"):  # a job's config refused before any run directory
        tune.tune(["trainer.max_steps=-5"], out=tmp_path / "bad")
    assert not (tmp_path / "bad" / "search").exists()
    with pytest.raises(ConfigError):
        tune.tune(["no_such_key=1"], out=tmp_path / "bad2")


def run_tune(out: Path) -> dict:
    return tune.tune(["loss=bce_logits,ce", *TINY], lrs=[0.01, 0.3, 10.0], tune_seeds=[100, 101], final_seeds=[0, 1, 2],
                     rungs=[0.5], out=out)


def test_tune_searches_on_validation_then_trains_the_final_seeds(tmp_path, monkeypatch):
    record = run_tune(tmp_path / "a")
    out = tmp_path / "a"
    assert set(record["choices"]) == {"loss=bce_logits", "loss=ce"}
    rows = list(__import__("csv").DictReader(open(out / "search.csv")))
    statuses = {r["status"] for r in rows}
    assert "pruned" in statuses  # halving at half the run: one of each method's three lrs stopped
    # each method's search: 3 lrs x 2 seeds; 1 lr pruned at step 20 of 40 (both seeds)
    for m in record["choices"]:
        mine = [r for r in rows if r["method"] == m and r["round"] == "1"]
        assert len(mine) == 6 and sum(r["status"] == "pruned" for r in mine) in (0, 2)
    finals = sorted((out / "final").glob("*/summary.json"))
    assert len(finals) == 2 * 3
    for path in finals:
        s = json.loads(path.read_text())
        m = "loss=" + s["config"]["loss"]["name"]
        assert s["config"]["optim"]["lr"] == record["choices"][m]["lr"] and s["config"]["seed"] in (0, 1, 2)
        assert "test/auc" in s["best"] and "test/auc" in s["final"]
    text = (out / "tuned.md").read_text()
    assert "chosen on validation" in text and "test" in text and "Paired differences" in text
    assert (out / "report" / "table.md").exists() and "chosen lr" in (out / "search.md").read_text()
    assert record["cost"]["search_run_equivalents_per_method"] > 0

    # The same tuning with the test labels scrambled: every search value and every choice is the same.
    real = data.synthetic

    def scrambled(dc):
        ds = real(dc)
        return ds.__class__(**{**ds.__dict__, "y_test": ds.y_test[torch.randperm(len(ds.y_test),
                                                                            generator=torch.Generator().manual_seed(1))]})

    monkeypatch.setattr(data, "synthetic", scrambled)
    again = run_tune(tmp_path / "b")
    assert {m: c["lr"] for m, c in again["choices"].items()} == {m: c["lr"] for m, c in record["choices"].items()}
    rows_b = list(__import__("csv").DictReader(open(tmp_path / "b" / "search.csv")))
    assert [(r["method"], r["lr"], r["seed"], r["status"], r["val"]) for r in rows_b] == \
        [(r["method"], r["lr"], r["seed"], r["status"], r["val"]) for r in rows]
    test_a = json.loads(finals[0].read_text())["final"]["test/auc"]
    test_b = json.loads(sorted((tmp_path / "b" / "final").glob("*/summary.json"))[0].read_text())["final"]["test/auc"]
    assert not math.isclose(test_a, test_b)  # the scrambling did reach the test split


def test_halving_as_a_stacked_launcher_option(tmp_path):
    r = cli("--multirun", "hydra/launcher=stacked", "hydra.launcher.halving_rungs=[0.5]", "optim.lr=0.01,0.3,10", "seed=0,1",
            *TINY, f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    statuses = [json.loads(p.read_text())["status"] for p in sorted(tmp_path.glob("*/summary.json"))]
    assert len(statuses) == 6 and statuses.count("pruned") in (2, 4)
    bad = cli("--multirun", "hydra/launcher=stacked", "hydra.launcher.halving_rungs=[2]", "seed=0,1", *TINY,
              f"hydra.sweep.dir={tmp_path / 'bad'}")
    assert bad.returncode == 2 and "hydra.launcher.halving_rungs must be a list of fractions" in bad.stderr


def test_a_stop_signal_ends_the_tuning_before_anything_is_chosen(tmp_path, monkeypatch):
    from lossbench.runs import signals
    from lossbench.sweeps import launch

    def interrupted(jobs, **kwargs):
        signals._received.append(15)  # as the handler records a SIGTERM during the phase
        return [launch.Result(error="interrupted") for _ in jobs]

    monkeypatch.setattr(signals, "_received", [])
    monkeypatch.setattr(launch, "run_stacks", interrupted)
    with pytest.raises(tune.Stopped, match="trainer.skip_completed=true"):
        tune.tune(["loss=bce_logits", *TINY], lrs=[0.1, 1.0], out=tmp_path)
    assert not (tmp_path / "search.md").exists() and not (tmp_path / "final").exists()
