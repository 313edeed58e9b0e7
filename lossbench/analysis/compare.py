"""Paired comparisons: `python -m lossbench.report PATH --compare KEY`.

For each pair of values (A, B) of a config key (e.g. loss: bce vs bce_logits), runs are matched on their seed
and every other config key (a run of A and one of B with the same seed and otherwise the same config), and
each final validation metric (and, for runs with a test split, each test metric at the run's evaluation best on
validation) is compared through the per-seed differences A - B: their mean, its 95% CI
(lossbench.analysis.stats: percentile bootstrap), and a verdict:
  "A better" / "A worse"  the interval excludes 0 (direction: nll, ece and loss are lower-is-better)
  "no difference detected at this sample size"  the interval contains 0
  "not enough seeds"      fewer than stats.MIN_SEEDS (3) matched pairs: no interval
The detectable difference is the interval's half-width: the smallest mean difference these seeds could
have told apart from 0 (Fisher's "least significant difference"); a true difference of that size is
detected about half the time, so "no difference detected" means "none much larger than this".
Pairing removes the seed-to-seed variation the two share (same data split and initialisation), so it
detects smaller differences than comparing the two groups' intervals.
Keys whose value follows from KEY's (the head in the multiclass_heads study, where each loss comes with its
head) belong to the compared value and are named with it. Runs without a partner and pairs without a metric
value (a failed or diverged run) are listed under the table, never dropped silently.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from lossbench.analysis import stats
from lossbench.analysis.plots import determined_by
from lossbench.analysis.runs import (
    METRICS,
    ReportError,
    Run,
    differing_keys,
    find_runs,
    finite,
    get,
    markdown,
    short_key,
    short_value,
)
from lossbench.config import LOWER_IS_BETTER

SEED_KEYS = ("seed", "data.seed")


@dataclass
class Comparison:
    key: str  # the short key, e.g. "loss"
    markdown: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def write_csv(self, path: Path) -> None:
        columns = ["stratum", "A", "B", "metric", "higher_is_better", "n", "mean_A", "mean_B", "diff",
                   "ci_low", "ci_high", "detectable", "verdict"]
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, columns)
            w.writeheader()
            w.writerows(self.rows)


def resolve_key(runs: list[Run], key: str) -> str:
    """The dotted config key meant by KEY: itself, or KEY.name for a config group (loss -> loss.name)."""
    varying = ", ".join(short_key(k) for k in differing_keys([r.params for r in runs])) or "none"
    if key in SEED_KEYS:
        raise ReportError(f"--compare {key}: runs are matched on their seed, so it cannot be compared; "
                          f"compare a key that varies: {varying}")
    present = {k for r in runs for k in r.params}
    for k in (key, f"{key}.name"):
        if k in present:
            return k
    raise ReportError(f"--compare {key}: no such config key in these runs. Keys that vary: {varying}")


def seed_of(run: Run) -> str | None:
    """The run's seed as a label ('2'; '2/data 5' when data.seed was set apart); None without one."""
    seed, data_seed = get(run.summary, "config", "seed"), get(run.summary, "config", "data", "seed")
    if seed is None:
        return None
    return str(seed) if data_seed in (None, seed) else f"{seed}/data {data_seed}"


def compare_runs(runs: list[Run], key: str, bundle: tuple[str, ...] = ()) -> Comparison:
    """The paired comparison of KEY's values (see the module docstring). bundle: keys compared as part of KEY's
    value even where they do not follow from it everywhere (optim.lr in lossbench.tune's final runs: each method
    at its own learning rate, which may differ between strata)."""
    key = resolve_key(runs, key)
    name = short_key(key)
    notes: list[str] = [f"{r.dir}: no {key} in its config" for r in runs if key not in r.params]
    runs = [r for r in runs if key in r.params]
    params = [r.params for r in runs]
    values = list(dict.fromkeys(json.dumps(p[key], default=str) for p in params))
    varying = ", ".join(short_key(k) for k in differing_keys(params)) or "none"
    if len(values) < 2:
        raise ReportError(f"--compare {name}: every run has {name}={short_value(params[0][key])}; nothing to "
                          f"compare. Keys that vary: {varying}")
    others = [k for k in differing_keys(params) if k != key]
    bundled = determined_by(key, others, params)
    bundled += [k for k in others if k in bundle and k not in bundled]
    strata_keys = [k for k in others if k not in bundled]

    def label(r: Run) -> str:
        extra = ", ".join(f"{short_key(k)}={short_value(r.params[k])}" for k in bundled)
        return short_value(r.params[key]) + (f" ({extra})" if extra else "")

    strata: dict[str, list[Run]] = {}
    for r in runs:
        strata.setdefault(", ".join(f"{short_key(k)}={short_value(r.params[k])}" for k in strata_keys), []).append(r)
    rows: list[dict[str, Any]] = []
    sections = []
    for stratum, members in strata.items():
        by_value = by_seed(members, key, label, notes)
        present = [v for v in values if v in by_value]
        if len(present) < 2:
            for v in present:
                for seed, r in by_value[v].items():
                    notes.append(f"{label(r)} seed {seed}{' at ' + stratum if stratum else ''} ({r.dir}): no run of "
                                 f"another {name} with the same config to compare with")
        table = []
        for va, vb in combinations(present, 2):
            pair_rows, pair_table = compare_pair(by_value[va], by_value[vb], label, stratum, notes)
            rows += pair_rows
            table += pair_table
        if table:
            header = ["A − B", "metric", "seeds", "A", "B", "A − B [95% CI]", "detectable", "verdict"]
            sections.append((f"### {stratum}\n\n" if stratum else "") + markdown(header, table))
    if not rows:
        raise ReportError(f"--compare {name}: no two runs share a seed and the rest of their config; nothing to "
                          f"pair. Keys that vary: {varying}")
    text = intro(name, rows, bundled) + "\n" + "\n\n".join(sections) + "\n"
    if notes:
        text += "\nNot compared (listed, not dropped):\n" + "".join(f"- {n}\n" for n in dict.fromkeys(notes))
    return Comparison(name, text, rows)


def by_seed(members: list[Run], key: str, label, notes: list[str]) -> dict[str, dict[str, Run]]:
    """The runs of one stratum by KEY's value, then by seed (a run without a seed, or a second run of a seed, is
    noted and left out)."""
    by_value: dict[str, dict[str, Run]] = {}
    for r in members:
        seed = seed_of(r)
        seeds = by_value.setdefault(json.dumps(r.params[key], default=str), {})
        if seed is None:
            notes.append(f"{label(r)} ({r.dir}): no seed in its config; cannot be matched")
        elif seed in seeds:
            notes.append(f"{label(r)} seed {seed} ({r.dir}): a second run of the same config and seed; "
                         f"{seeds[seed].dir} is used")
        else:
            seeds[seed] = r
    return by_value


def compare_pair(a: dict[str, Run], b: dict[str, Run], label, stratum: str,
                 notes: list[str]) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """Two values' runs, paired by seed: per metric (final val/*, and test/* at the val-best evaluation when the
    runs have a test split) the rows of the CSV and of the markdown table."""
    la, lb = label(next(iter(a.values()))), label(next(iter(b.values())))
    for seed, r in [*((s, r) for s, r in a.items() if s not in b), *((s, r) for s, r in b.items() if s not in a)]:
        other = lb if r in a.values() else la
        notes.append(f"{label(r)} seed {seed} ({r.dir}): no {other} run with seed {seed} to pair with")
    matched = [s for s in a if s in b]
    tested = any(get(r.summary, "best", f"test/{m}") is not None for r in (*a.values(), *b.values()) for m in METRICS)
    rows, table = [], []
    for kind, metric in [*(("final", f"val/{m}") for m in METRICS),
                         *((("best", f"test/{m}") for m in METRICS) if tested else ())]:
        m = metric.removeprefix("val/") if kind == "final" else f"{metric} at val-best"
        used, missing = [], []
        for s in matched:
            xa, xb = (finite([get(r.summary, kind, metric)]) for r in (a[s], b[s]))
            if xa and xb:
                used.append((xa[0], xb[0]))
            else:
                missing += [f"{label(r)} seed {s} ({r.status})" for r, x in ((a[s], xa), (b[s], xb)) if not x]
        if missing:
            what = f"final {metric}" if kind == "final" else f"{metric} at its val-best evaluation"
            notes.append(f"{la} − {lb}, {m}: pairs left out, no {what}: {'; '.join(missing)}")
        higher = metric not in LOWER_IS_BETTER
        diff = stats.mean_ci([x - y for x, y in used])
        verdict = stats.verdict(diff, higher, la) if diff.n else "no matched pair has this metric"
        if used and all(x == y for x, y in used) and len(used) >= 2:
            verdict += " (identical in every seed)"
        ma, mb = stats.mean_ci([x for x, _ in used]).mean, stats.mean_ci([y for _, y in used]).mean
        rows.append({"stratum": stratum, "A": la, "B": lb, "metric": metric if kind == "final" else
                     f"{metric} at val-best", "higher_is_better": higher,
                     "n": diff.n, "mean_A": ma, "mean_B": mb, "diff": diff.mean, "ci_low": diff.low,
                     "ci_high": diff.high, "detectable": diff.half_width, "verdict": verdict})
        ci = "–" if diff.n == 0 else stats.format_interval(diff, ".3g")
        table.append([f"{la} − {lb}", f"{m} {'↑' if higher else '↓'}", str(diff.n),
                      *(f"{x:.4f}" if diff.n else "–" for x in (ma, mb)), ci,
                      f"{diff.half_width:.3g}" if diff.n >= stats.MIN_SEEDS else "–", verdict])
    return rows, table


def intro(name: str, rows: list[dict[str, Any]], bundled: list[str]) -> str:
    """What the comparison's table says, and its caveats (few seeds, keys compared together with KEY)."""
    text = (f"## Paired differences by {name}: A − B over matched seeds (same seed, same other config), "
            f"mean [{stats.DESCRIPTION}]\n\n"
            "val metrics: final evaluation. test metrics (when the runs have a test split): each run's test value at "
            "its evaluation best on validation for that metric (retrospective selection on validation; the test "
            "split chooses nothing). "
            "↑ higher is better, ↓ lower is better. Verdict: better / worse when the interval excludes 0, else "
            f'"{stats.NO_DIFFERENCE}". detectable: the interval\'s half-width, the smallest mean difference these '
            "seeds could tell from 0 (a true difference of that size is detected about half the time).\n")
    if rows and min(r["n"] for r in rows) < 5:
        text += ("\nFew seeds: a bootstrap interval from n < 5 values is too narrow (from 3 seeds it is the range of "
                 "the 3 differences, which holds the true difference only ~75% of the time), so read these verdicts "
                 "as provisional.\n")
    if bundled:
        text += (f"\n{', '.join(short_key(k) for k in bundled)} changes with {name} in these runs and is compared "
                 f"as part of it.\n")
    return text


def main(argv: list[str] | None = None) -> int:
    """`python -m lossbench.compare PATH [PATH...] [--key KEY]`: the paired comparison alone, printed (the
    report writes it to files with `python -m lossbench.report PATH --compare KEY`)."""
    import argparse
    import sys

    from lossbench.errors import LossbenchError

    parser = argparse.ArgumentParser(
        prog="python -m lossbench.compare",
        description="Paired differences between the values of a config key over matched seeds (same seed, same "
        "other config), with 95% intervals and verdicts; printed as markdown. To also write the report's files: "
        "python -m lossbench.report PATH --compare KEY.")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="sweep or run directories (searched recursively)")
    parser.add_argument("--key", default="loss", help="the config key whose values are compared (default: loss)")
    args = parser.parse_args(argv)
    try:
        print(compare_runs(find_runs(args.paths), args.key).markdown)
    except LossbenchError as e:
        print(f"lossbench.compare: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
