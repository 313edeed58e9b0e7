"""`python -m lossbench.tune [OVERRIDES...]`: every method of a study at its own learning rate, chosen on
validation, then trained on the final seeds and reported on the test split.

The loss is the scientific hyperparameter, the learning rate a nuisance one that must be tuned per method to
compare fairly (Google's Deep Learning Tuning Playbook). For a study (``experiment=long_tail_binary``), or any
grid given as Hydra sweep overrides (``loss=bce_logits,focal``):

1. **Search.** Each method (one point of the study's grid, its seeds aside: ``hydra.sweeper.params`` and the sweep
   overrides given here, expanded as Hydra's basic sweeper does) trains at every learning rate of a log grid
   (``--lrs``; default the config's ``optim.lr`` x 10^{-1, -1/2, 0, 1/2, 1}) with the tuning seeds (``--tune-seeds``,
   disjoint from the final seeds), all stacked (lossbench/engine/stack.py: learning rates differ within a stack).
   Successive halving (``--rungs``, fractions of the run): at each rung, within each method, the learning rates whose
   mean over tuning seeds of the best validation metric so far ranks in the worse half end as ``pruned``
   (:class:`Halving`). A learning rate with a diverged seed is infeasible, and so is one with a seed that
   collapsed (completed at chance after learning: lossbench.engine.diagnosis).
2. **Choice.** Each method's learning rate: the best mean over its tuning seeds of the study's primary *validation*
   metric (``studies.PRIMARY``: balanced accuracy for long-tailed classes, AUC for binary imbalance, mAP for
   multi-label, accuracy for MNIST; ``--metric`` to set it; the best evaluation of each run, retrospective
   selection), among the learning rates trained to the end. When the choice sits at an edge of the grid, the grid
   is widened once, two steps beyond that edge, searched the same way, and the choice made again over both.
3. **Final.** Each method at its learning rate with the final seeds (``--final-seeds``), stacked.

Nothing reads the test split to choose: the halving and the choice read ``summary.json``'s ``best["val/..."]``
only. Written to ``--out`` (default ``outputs/tune/<study>/<time>``): ``search/`` and ``final/`` (ordinary run
directories: ``python -m lossbench.report`` and ``lossbench.analysis.studies`` read them), ``search.csv`` and ``search.md``
(every trial; per method the validation metric against the learning rate, the choice and the largest learning rate
that did not diverge), ``tuned.md`` (the choices; the final runs' validation and test metrics with 95% intervals and
the paired comparisons of lossbench.analysis.compare, test read at each run's evaluation best on validation), ``report/``
(lossbench.analysis.report of the final runs) and ``tune.json`` (choices and cost).

    python -m lossbench.tune experiment=long_tail_binary
    python -m lossbench.tune experiment=long_tail_binary study.steps=200 --lrs 0.01,0.1,1 --final-seeds 0,1,2
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lossbench.config import check_rungs
from lossbench.engine import diagnosis
from lossbench.errors import ConfigError, LossbenchError
from lossbench.sweeps.halving import signed

TUNE_SEEDS = (100, 101)  # disjoint from the studies' final seeds 0-4
FINAL_SEEDS = (0, 1, 2, 3, 4)
RUNGS = (0.25, 0.5)  # successive halving: 5 lrs -> 3 at a quarter of the run -> 2 at half: ~3 runs per tuning seed
STEPS = (-2, -1, 0, 1, 2)  # the default grid: optim.lr x SPREAD^k
SPREAD = 10**0.5  # half a decade between grid points


# --- the search's records and the choice -----------------------------------------------------------------------


@dataclass
class Trial:
    """One search run, as read back from its summary.json (validation only)."""

    method: str  # the method's label (its grid point)
    lr: float
    seed: int
    round: int  # 1: the first grid; 2: the points the widening added
    status: str
    steps: int
    val: float | None  # the best value of the primary validation metric over the run's evaluations
    dir: str


@dataclass
class Choice:
    """A method's outcome of the search."""

    method: str
    lr: float | None  # None: no learning rate trained to the end without diverging
    val: float | None  # its mean over the tuning seeds of the primary validation metric
    largest_stable_lr: float | None  # the largest lr none of whose seeds diverged
    grid: list[float] = field(default_factory=list)
    widened: list[float] = field(default_factory=list)
    at_edge: str | None = None  # "low" / "high": where the first round's choice sat


def lr_table(trials: list[Trial], metric: str) -> dict[float, dict]:
    """Per learning rate of one method: its seeds' statuses, steps, mean validation value; feasible and finalist."""
    out: dict[float, dict] = {}
    for lr in sorted({t.lr for t in trials}):
        ts = [t for t in trials if t.lr == lr]
        finalist = all(t.status == "completed" for t in ts)
        values = [t.val for t in ts]
        mean = statistics.fmean(values) if all(v is not None and math.isfinite(v) for v in values) and values else None
        out[lr] = {"statuses": [t.status for t in ts], "steps": max(t.steps for t in ts), "val": mean,
                   "diverged": any(t.status in ("diverged", "collapsed") for t in ts),
                   "finalist": finalist and mean is not None,
                   "round": min(t.round for t in ts)}
    return out


def choose(trials: list[Trial], metric: str) -> dict[str, Choice]:
    """Each method's learning rate: the best mean validation value among those trained to the end by every tuning
    seed (pruned and diverged ones cannot win). Reads Trial.val only: validation."""
    choices = {}
    for method in dict.fromkeys(t.method for t in trials):
        table = lr_table([t for t in trials if t.method == method], metric)
        finalists = [lr for lr, row in table.items() if row["finalist"]]
        best = max(finalists, key=lambda lr: signed(metric, table[lr]["val"]), default=None)
        stable = [lr for lr, row in table.items() if not row["diverged"]]
        choices[method] = Choice(method, best, table[best]["val"] if best is not None else None,
                                 max(stable) if stable else None,
                                 grid=[lr for lr, row in table.items() if row["round"] == 1],
                                 widened=[lr for lr, row in table.items() if row["round"] > 1])
    return choices


def grid_factor(grid: Sequence[float]) -> float:
    """The grid's step as a factor (geometric mean of consecutive ratios; SPREAD for a single point)."""
    g = sorted(grid)
    return (g[-1] / g[0]) ** (1 / (len(g) - 1)) if len(g) > 1 else SPREAD


def widen(grid: Sequence[float], chosen: float | None) -> tuple[str | None, list[float]]:
    """Two more points beyond the edge the choice sits at, with the grid's own step: (edge, new lrs)."""
    if chosen is None or len(grid) < 2:
        return None, []
    f = grid_factor(grid)
    if chosen == min(grid):
        return "low", [chosen / f, chosen / f**2]
    if chosen == max(grid):
        return "high", [chosen * f, chosen * f**2]
    return None, []


# --- composing the jobs ----------------------------------------------------------------------------------------


def _compose(overrides: list[str], hydra: bool = False):
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from lossbench.config import CONFIGS

    try:
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            return compose("config", overrides=overrides, return_hydra_config=hydra)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(" ".join(str(e).split())[:400]) from None


def methods(overrides: list[str]) -> tuple[list[str], list[list[str]], Any]:
    """(the fixed overrides, each method's grid overrides, the composed study config). The grid: the study's
    hydra.sweeper.params and the sweep overrides given (a given key replaces the study's), expanded as Hydra's
    basic sweeper expands them, without seed (the tuning and final seeds replace it) and optim.lr (tuned)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parser = OverridesParser.create()
    try:
        given = parser.parse_overrides(overrides)
    except Exception as e:  # noqa: BLE001 (Hydra's grammar errors: one line)
        raise ConfigError(f"bad override: {' '.join(str(e).split())[:300]}") from None
    fixed = [o.input_line for o in given if not o.is_sweep_override()]
    base = _compose(fixed, hydra=True)
    params = OmegaConf.to_container(base.hydra.sweeper.params, resolve=False) if base.hydra.sweeper.get("params") else {}
    sweeps = {o.key_or_group: o.input_line for o in given if o.is_sweep_override()}
    lines = [f"{k}={v}" for k, v in (params or {}).items() if k.lstrip("+~") not in {s.lstrip("+~") for s in sweeps}]
    lines += list(sweeps.values())
    axes = [o for o in parser.parse_overrides(lines)]
    for o in axes:
        if o.key_or_group in ("optim.lr",):
            raise ConfigError("optim.lr is what lossbench.tune chooses: drop it from the grid (the sweep overrides or "
                              "the experiment's hydra.sweeper.params), and give the learning rates with --lrs.")
    kept = [o for o in axes if o.key_or_group.lstrip("+~") not in ("seed", "data.seed")]
    grid = [job for batch in BasicSweeper.split_arguments(kept, None) for job in batch] if kept else [[]]
    return fixed, [list(job) for job in grid], base


def label(job: list[str]) -> str:
    """A method's label: its grid overrides, e.g. '+binary_method=focal' -> 'binary_method=focal'."""
    return ",".join(o.lstrip("+~") for o in job) or "all"


def dir_name(i: int, job: list[str], lr: float, seed: int) -> str:
    from lossbench.sweeps.sweep import job_dir_name

    return job_dir_name(i, [*job, f"optim.lr={lr:.6g}", f"seed={seed}"])


def make_jobs(fixed: list[str], grid: dict[str, list[str]], points: list[tuple[str, float, int]], metric: str,
              root: Path, start: int = 0) -> list[tuple[Any, Path, tuple[str, float, int]]]:
    """Composed configs and run directories of (method, lr, seed) points, with their .hydra record."""
    from omegaconf import OmegaConf

    from lossbench.config import validate
    from lossbench.config.fastconfig import to_yaml

    composed = []
    for method, lr, seed in points:  # every config composed and checked before any directory is made
        overrides = [*fixed, *grid[method], f"optim.lr={lr!r}", f"seed={seed}", f"objective_metric={metric}"]
        cfg = _compose(overrides)
        validate(cfg)
        composed.append((overrides, cfg))
    jobs = []
    for i, ((method, lr, seed), (overrides, cfg)) in enumerate(zip(points, composed, strict=True), start):
        d = root / dir_name(i, grid[method], lr, seed)
        (d / ".hydra").mkdir(parents=True, exist_ok=True)
        if not (d / ".hydra" / "overrides.yaml").exists():
            (d / ".hydra" / "overrides.yaml").write_text(to_yaml(OmegaConf.create(overrides)))
            (d / ".hydra" / "config.yaml").write_text(to_yaml(cfg))
        jobs.append((cfg, d, (method, lr, seed)))
    return jobs


class Stopped(LossbenchError):
    """A stop signal (Ctrl-C, SIGTERM) ended a phase: nothing further is chosen or trained."""

    def __init__(self, signum: int, root: Path):
        self.signum = signum
        super().__init__(f"stopped by signal {signum}; finished runs are kept and interrupted ones hold checkpoints: "
                         f"rerun the same command with trainer.skip_completed=true --out {root} to continue")


def run(jobs: list, rungs: Sequence[float], max_members: int, root: Path) -> tuple[list[dict | None], float]:
    """Train the jobs stacked (lossbench.sweeps.launch.run_stacks), with halving at rungs; (summaries, wall time s).
    Raises Stopped after a stop signal: a choice from an interrupted search would be a choice from partial runs."""
    from lossbench.runs.signals import stop_requested, stops_received
    from lossbench.sweeps.launch import run_stacks

    t0, stops = time.perf_counter(), stops_received()
    results = run_stacks([(cfg, d) for cfg, d, _ in jobs], max_members=max_members, halving_rungs=tuple(rungs))
    if stops_received() > stops:  # a stop signal during this phase (one before it belongs to someone else)
        raise Stopped(stop_requested() or 2, root)
    for (_, d, _), r in zip(jobs, results, strict=True):
        if r.summary is None:
            print(f"lossbench.tune: {d.name}: {r.error}", file=sys.stderr)
    return [r.summary for r in results], time.perf_counter() - t0


def trials_of(jobs: list, summaries: list[dict | None], metric: str, round_: int) -> list[Trial]:
    out = []
    for (_, d, (method, lr, seed)), s in zip(jobs, summaries, strict=True):
        s = s or {}
        val = (s.get("best") or {}).get(metric)  # validation only: the best evaluation of the run
        status = s.get("status") or "failed"
        if status == "completed" and diagnosis.name(s) == "collapsed":  # learned, then blew up: as diverged
            status = "collapsed"
        out.append(Trial(method, lr, seed, round_, status, int(s.get("steps") or 0),
                         float(val) if isinstance(val, (int, float)) and math.isfinite(val) else None, str(d)))
    return out


# --- what it writes --------------------------------------------------------------------------------------------


def write_search(out: Path, trials: list[Trial], choices: dict[str, Choice], metric: str, max_steps: int) -> str:
    """search.csv (every trial) and search.md (per method: validation metric vs lr, the choice, the stable range)."""
    with open(out / "search.csv", "w", newline="") as f:
        w = csv.DictWriter(f, [*asdict(trials[0]).keys(), "chosen"])
        w.writeheader()
        for t in trials:
            w.writerow({**asdict(t), "chosen": choices[t.method].lr == t.lr})
    from lossbench.analysis.report import markdown

    parts = [f"# Learning-rate search: {metric} (validation; best evaluation of each run), mean over the tuning seeds\n\n"
             "Pruned: stopped by successive halving at the step given (its value is the best up to there); diverged or "
             "collapsed (ended at chance after learning): infeasible. The choice is the best learning rate trained to the end by every tuning seed. The test "
             "split is not read.\n"]
    for method, c in choices.items():
        table = lr_table([t for t in trials if t.method == method], metric)
        rows = [[f"{lr:.4g}", "–" if row["val"] is None else f"{row['val']:.4f}",
                 ", ".join(f"{n} {s}" for s, n in _counts(row["statuses"]).items()), f"{row['steps']}/{max_steps}",
                 "widened" if row["round"] > 1 else "", "**chosen**" if lr == c.lr else ""]
                for lr, row in table.items()]
        edge = f"; the first grid's best sat at its {c.at_edge} edge, so it was widened by {_lrs(c.widened)}" \
            if c.at_edge else ""
        parts.append(f"## {method}\n\nchosen lr: **{_lr(c.lr)}**; largest lr that did not diverge: "
                     f"{_lr(c.largest_stable_lr)}{edge}\n\n"
                     + markdown(["lr", f"{metric} (mean)", "seeds", "steps trained", "round", ""], rows))
    text = "\n\n".join(parts) + "\n"
    (out / "search.md").write_text(text)
    return text


def _counts(xs: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in xs:
        out[x] = out.get(x, 0) + 1
    return out


def _lr(lr: float | None) -> str:
    return "none" if lr is None else f"{lr:.4g}"


def _lrs(lrs: list[float]) -> str:
    return ", ".join(f"{x:.4g}" for x in lrs) or "nothing"


def tuned_tables(final_dir: Path, study: str | None, compare_key: str) -> str:
    """The final runs' study table (validation final; test at the val-best point) and paired comparisons."""
    from lossbench.analysis import studies
    from lossbench.analysis.compare import compare_runs
    from lossbench.analysis.report import tables
    from lossbench.analysis.runs import ReportError, find_runs, group_runs

    runs = find_runs([final_dir])
    groups = group_runs(runs)
    text = studies.study_table(study, groups) if study in studies.COLUMNS else tables(groups)
    try:
        text += "\n\n" + compare_runs(runs, compare_key, bundle=("optim.lr",)).markdown
    except ReportError as e:
        text += f"\n\nNo paired comparison: {e}\n"
    return text


def tune(overrides: list[str], lrs: list[float] | None = None, tune_seeds: Sequence[int] = TUNE_SEEDS,
         final_seeds: Sequence[int] = FINAL_SEEDS, rungs: Sequence[float] = RUNGS, metric: str | None = None,
         out: Path | None = None, max_members: int = 64, widen_once: bool = True) -> dict:
    """The whole protocol (see the module docstring); returns what tune.json holds."""
    from lossbench.analysis import studies
    from lossbench.config import METRIC_CHOICES, fastconfig

    fastconfig.install()  # each method's config composed once, not once per (lr, seed): 281 -> 44 ms a trial
    if set(tune_seeds) & set(final_seeds):
        raise ConfigError(f"--tune-seeds {list(tune_seeds)} and --final-seeds {list(final_seeds)} share "
                          f"{sorted(set(tune_seeds) & set(final_seeds))}: tuning seeds must be disjoint from the final ones.")
    check_rungs(list(rungs), "--rungs")
    if max_members < 1:
        raise ConfigError(f"--max-members must be an integer >= 1, got {max_members}.")
    if not tune_seeds or not final_seeds:
        raise ConfigError("--tune-seeds and --final-seeds each need at least one seed.")
    fixed, grid_jobs, base = methods(overrides)
    study = base.get("study", {}).get("name") if base.get("study") else None
    metric = metric or studies.PRIMARY.get(study) or str(base.objective_metric)
    if metric not in METRIC_CHOICES:
        raise ConfigError(f"--metric {metric}: not a validation metric. Valid choices: {', '.join(METRIC_CHOICES)}.")
    lr0 = float(base.optim.lr)
    grid = sorted(lrs or [lr0 * SPREAD**k for k in STEPS])
    if any(not (x > 0 and math.isfinite(x)) for x in grid):
        raise ConfigError(f"--lrs must be positive finite numbers, got {grid}.")
    methods_ = {label(j): j for j in grid_jobs}
    root = out or Path("outputs") / "tune" / (study or "sweep") / time.strftime("%Y-%m-%d_%H-%M-%S")
    root.mkdir(parents=True, exist_ok=True)
    max_steps = int(base.trainer.max_steps) if not base.trainer.get("epochs") else None
    per_method = len(grid) * len(tune_seeds)
    members = max(per_method, (max_members // per_method) * per_method)  # a method's search in one stack: halving sees it whole

    say(f"tuning optim.lr of {len(methods_)} methods on {metric}: {len(grid)} lrs x {len(tune_seeds)} tuning seeds, "
        f"halving at {list(rungs)} of the run; then {len(final_seeds)} final seeds")
    points = [(m, lr, s) for m in methods_ for lr in grid for s in tune_seeds]
    jobs = make_jobs(fixed, methods_, points, metric, root / "search")
    summaries, search_s = run(jobs, rungs, members, root)
    trials = trials_of(jobs, summaries, metric, 1)
    choices = choose(trials, metric)

    edges = {m: widen(grid, c.lr) for m, c in choices.items()} if widen_once else {}
    extra = [(m, lr, s) for m, (_, new) in edges.items() for lr in new for s in tune_seeds]
    if extra:
        say(f"widening: {', '.join(f'{m} {e} edge' for m, (e, new) in edges.items() if new)}")
        jobs2 = make_jobs(fixed, methods_, extra, metric, root / "search", start=len(jobs))
        summaries2, s2 = run(jobs2, rungs, members, root)
        search_s += s2
        trials += trials_of(jobs2, summaries2, metric, 2)
        jobs += jobs2
        summaries += summaries2
        choices = choose(trials, metric)
    for m, c in choices.items():
        c.at_edge = edges.get(m, (None, []))[0]
    max_steps = max_steps or max((t.steps for t in trials), default=0)
    search_md = write_search(root, trials, choices, metric, max_steps)

    final_points = [(m, c.lr, s) for m, c in choices.items() if c.lr is not None for s in final_seeds]
    say(f"final: {len(final_points)} runs at the chosen learning rates")
    final_jobs = make_jobs(fixed, methods_, final_points, metric, root / "final")
    final_summaries, final_s = run(final_jobs, (), max_members, root) if final_jobs else ([], 0.0)

    search_steps = sum(t.steps for t in trials)
    cost = {
        "search_wall_s": round(search_s, 1), "final_wall_s": round(final_s, 1),
        "search_runs": len(trials), "final_runs": len(final_jobs),
        # hardware-independent: steps trained by a method's search, in runs of max_steps
        "search_run_equivalents_per_method": round(search_steps / max(1, max_steps) / max(1, len(methods_)), 2),
        "search_run_equivalents_per_method_and_tuning_seed":
            round(search_steps / max(1, max_steps) / max(1, len(methods_)) / len(tune_seeds), 2),
        "search_wall_over_final_wall": round(search_s / final_s, 2) if final_s else None,
    }
    record = {"overrides": overrides, "study": study, "metric": metric, "grid": grid, "tune_seeds": list(tune_seeds),
              "final_seeds": list(final_seeds), "rungs": list(rungs), "max_steps": max_steps, "cost": cost,
              "choices": {m: asdict(c) for m, c in choices.items()}}
    (root / "tune.json").write_text(json.dumps(record, indent=1))
    if final_jobs:
        write_tuned(root, record, study, search_md)
    return record


def write_tuned(root: Path, record: dict, study: str | None, search_md: str) -> None:
    """tuned.md and report/: the final runs, validation and test (test at each run's val-best evaluation)."""
    from lossbench.analysis import studies
    from lossbench.analysis.report import markdown, report

    metric, cost = record["metric"], record["cost"]
    compare_key = studies.COMPARE.get(study, "loss") if study else "loss"
    report([root / "final"], root / "report")
    rows = [[m, _lr(c["lr"]), "–" if c["val"] is None else f"{c['val']:.4f}", _lr(c["largest_stable_lr"]),
             f"{c['at_edge']} edge: + {_lrs(c['widened'])}" if c["at_edge"] else "no"]
            for m, c in record["choices"].items()]
    text = (f"# Tuned: each method at its own learning rate, chosen on validation ({metric}), reported on test\n\n"
            f"Overrides: `{' '.join(record['overrides']) or '(none)'}`. Grid: optim.lr in {_lrs(record['grid'])} "
            f"(widened once at an edge), tuning seeds {record['tune_seeds']}, successive halving at "
            f"{record['rungs']} of the run ({record['max_steps']} steps); final seeds {record['final_seeds']}. "
            "Each learning rate was chosen by the mean over the tuning seeds of each run's best validation "
            f"{metric}; the test split chose nothing. Test metrics are each run's test value at its evaluation "
            "best on validation for that metric (retrospective checkpoint selection).\n\n"
            + markdown(["method", "chosen lr", f"{metric} (tuning seeds)", "largest lr not diverged", "widened"], rows)
            + f"\n\nTuning cost: search {cost['search_runs']} runs in {cost['search_wall_s']} s, final "
            f"{cost['final_runs']} runs in {cost['final_wall_s']} s (search / final wall time "
            f"{cost['search_wall_over_final_wall']}); a method's search trained "
            f"{cost['search_run_equivalents_per_method']} run-lengths "
            f"({cost['search_run_equivalents_per_method_and_tuning_seed']} per tuning seed).\n\n"
            + tuned_tables(root / "final", study, compare_key) + "\n")
    (root / "tuned.md").write_text(text)


def say(what: str) -> None:
    print(f"lossbench.tune: {what}", file=sys.stderr, flush=True)


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lossbench.tune", description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=long_tail_binary study.steps=200; "
                    "sweep overrides (loss=a,b) are the methods")
    ap.add_argument("--lrs", type=lambda t: _floats(t, "--lrs"), default=None,
                    help="the learning-rate grid (default: optim.lr x 10^{-1,-0.5,0,0.5,1})")
    ap.add_argument("--tune-seeds", type=_ints, default=list(TUNE_SEEDS), help="default 100,101")
    ap.add_argument("--final-seeds", type=_ints, default=list(FINAL_SEEDS), help="default 0,1,2,3,4")
    ap.add_argument("--rungs", type=lambda t: _floats(t, "--rungs"), default=list(RUNGS),
                    help="successive-halving rungs as fractions of the run (default 0.25,0.5; empty string: none)")
    ap.add_argument("--metric", default=None, help="the validation metric to choose by (default: the study's primary)")
    ap.add_argument("--no-widen", action="store_true", help="never widen the grid at an edge")
    ap.add_argument("--max-members", type=int, default=64, help="at most this many runs in one stack")
    ap.add_argument("--out", type=Path, default=None, help="default outputs/tune/<study>/<time>")
    args = ap.parse_args(argv)
    try:
        record = tune(args.overrides, args.lrs, args.tune_seeds, args.final_seeds, args.rungs, args.metric, args.out,
                      args.max_members, not args.no_widen)
    except Stopped as e:
        print(f"lossbench.tune: {e}", file=sys.stderr)
        return 128 + e.signum
    except LossbenchError as e:
        print(f"lossbench.tune: error: {e}", file=sys.stderr)
        return 2
    for m, c in record["choices"].items():
        print(f"{m}: lr {_lr(c['lr'])} ({record['metric']} {c['val']})")
    print(f"cost: {record['cost']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
