"""`python -m lossbench.report PATH [PATH...] [--out DIR] [--compare KEY]`: turn finished runs into a comparison.

Reads every summary.json under the paths (a sweep dir, several, or a whole outputs/ tree), groups the runs
that differ only by seed, and writes to PATH/report/ (or --out):
  summary.csv    one row per run (row=run), then one per group (row=group): the mean of each final and best
                 metric with its 95% CI ("<metric> ci_low", "<metric> ci_high") and its number of seeds ("n")
  table.md       one row per group: mean [95% CI] over seeds of the final and best validation metrics, the test
                 metrics at each run's evaluation best on validation (retrospective selection; runs from before
                 the test split existed show validation only, and say so), steps to the convergence target,
                 numerics and status counts (printed too)
  curves.png     validation curves, one row of panels per regime (line: mean over seeds; band: 95% CI of it)
  numerics.png   train loss and numerics panels, read back from the runs' TensorBoard event files
  compare_<KEY>.md/.csv  with --compare KEY (e.g. loss): for each pair of values of KEY, the paired difference of
                 each metric over matched seeds with its 95% CI and a verdict (see lossbench.compare)
Intervals: percentile bootstrap over seeds (lossbench.stats says why and how to read them with few seeds).
Failed, diverged and interrupted runs are counted and shown, never dropped.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossbench import LossbenchError, diagnosis, stats
from lossbench.config import flatten
from lossbench.store import SUMMARY, read_regular

# Config keys that do not change what a run computes (seeds, paths, resuming, bookkeeping): runs that differ
# only in these belong to one group.
IGNORED = {"seed", "data.seed", "data.root", "data.download", "trainer.resume", "trainer.skip_completed",
           "trainer.threads", "logger.flush_secs",
           "objective_metric"}  # what a sweep returns to its sweeper (lossbench.tune sets it): not what is trained
METRICS = ("auc", "ap", "accuracy", "balanced_accuracy", "nll", "ece")
# multi-label runs' own metrics, as columns when a run has them (there ap = mAP, accuracy = subset accuracy)
MULTILABEL_METRICS = ("f1_micro", "f1_macro", "hamming_loss", "lrap", "auc_micro")
CURVES = ("val/auc", "val/ap", "val/balanced_accuracy", "val/nll", "val/ece", "val/loss", "val/f1_macro",
          "val/f1_micro")
NUMERICS = ("train/loss", "numerics/saturated_frac", "numerics/dead_frac", "numerics/clamped_frac",
            "numerics/max_abs_logit", "numerics/grad_norm")
NO_RUNS = "no runs found under {}: expected summary.json files written by python -m lossbench"


class ReportError(LossbenchError):
    """Nothing to report on (bad path, no runs, a key that cannot be compared); the CLI prints it, exits 2."""


@dataclass
class Run:
    dir: Path
    summary: dict
    params: dict[str, Any]  # flattened config, IGNORED keys removed

    @property
    def status(self) -> str:
        return self.summary.get("status") or "unknown"


@dataclass
class Group:
    label: str
    runs: list[Run] = field(default_factory=list)

    def statuses(self) -> str:
        """'5 completed', '5 completed (2 stalled): split'. A group whose runs ended differently is split: its
        mean is of runs that did not behave alike (the per-run table shows each)."""
        text = ", ".join(f"{n} {s}" for s, n in Counter(r.status for r in self.runs).items())
        diagnosed = Counter(d for r in self.runs if (d := diagnosis.name(r.summary)))
        if diagnosed:
            text += f" ({', '.join(f'{n} {d}' for d, n in diagnosed.items())})"
        return text + (": split" if self.split() else "")

    def split(self) -> str | None:
        """'2 of 5 stalled' when some of the group's runs but not all ended alike (status and diagnosis)."""
        outcomes = Counter(diagnosis.name(r.summary) or r.status for r in self.runs)
        if len(outcomes) < 2:
            return None
        odd = min(outcomes, key=lambda k: (k == "completed", outcomes[k], k))  # name what went wrong
        return f"{outcomes[odd]} of {len(self.runs)} {odd}"

    def legend(self) -> str:
        bad = {s: n for s, n in Counter(diagnosis.name(r.summary) or r.status for r in self.runs).items()
               if s != "completed"}
        return self.label + (f" ({', '.join(f'{n} {s}' for s, n in bad.items())})" if bad else "")


# --- reading and grouping ------------------------------------------------------------------------------


def natural_key(path: Path) -> list:
    """Sort job dirs 0, 1, 2, ..., 10 rather than 0, 1, 10, 2."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def find_runs(paths: list[Path]) -> list[Run]:
    runs: list[Run] = []
    for root in paths:
        if not root.is_dir():
            raise ReportError(f"{root} is not a directory. Pass sweep or run directories (e.g. outputs/multirun/<dir>).")
        found = sorted(root.rglob(SUMMARY), key=natural_key)
        if not found:
            raise ReportError(NO_RUNS.format(root))
        for path in found:
            try:
                s = json.loads(read_regular(path, follow=True))  # never a FIFO or device: nothing blocks
                problem = not_a_run(s)
            except (OSError, UnicodeDecodeError, ValueError) as e:
                s, problem = None, f"cannot read it as JSON ({type(e).__name__})"
            except LossbenchError as e:  # a FIFO, device or directory named summary.json
                s, problem = None, str(e).split(";")[0]
            if problem:
                print(f"lossbench.report: warning: skipping {path}: {problem}", file=sys.stderr)
                continue
            params = {k: v for k, v in flatten(s["config"]).items() if k not in IGNORED}
            if params.get("model.init_from"):  # one start per seed (<dir>/seed<k>): runs group by where they come from
                params["model.init_from"] = str(Path(params["model.init_from"]).parent)
            runs.append(Run(path.parent, s, params))
    if not runs:
        raise ReportError(f"no usable runs under {', '.join(map(str, paths))}: every {SUMMARY} found was skipped "
                          "(see the warnings)")
    seen, unique = set(), []
    for r in runs:  # overlapping paths (a sweep and its parent) list a run once
        if r.dir.resolve() not in seen:
            seen.add(r.dir.resolve())
            unique.append(r)
    return unique


def not_a_run(s: Any) -> str | None:
    """Why a parsed summary.json is not a lossbench run summary (None if it is one)."""
    if not isinstance(s, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(type(s), "null")
        return f"not a run summary (the JSON is {kind}, not an object)"
    if not isinstance(s.get("config"), dict) or not isinstance(s.get("status"), str):
        return "not a run summary (no 'config' object and 'status' string)"
    bad = [k for k, t in (("final", dict), ("best", dict), ("numerics", dict), ("convergence", dict),
                          ("history", list)) if s.get(k) is not None and not isinstance(s[k], t)]
    if bad or not all(isinstance(h, dict) and isinstance(h.get("step"), (int, float)) for h in s.get("history") or []):
        return f"not a run summary (malformed {', '.join(bad) or 'history'})"
    return None


def short_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None or isinstance(v, (list, dict, bool)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def short_key(k: str) -> str:
    """loss.name -> loss (the config group choice); everything else stays a dotted key."""
    return k.removesuffix(".name") if k.count(".") == 1 and k.endswith(".name") else k


def differing_keys(params: list[dict]) -> list[str]:
    """The keys present in every one of params whose values differ, in config order (data, model, loss, ...)."""
    if not params:
        return []
    common = set.intersection(*(set(p) for p in params))
    return [k for k in params[0] if k in common and len({json.dumps(p[k], default=str) for p in params}) > 1]


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs with equal configs (seeds and IGNORED keys aside) form a group, labelled by the keys that differ
    between groups, e.g. "loss=bce data.scale=50". Groups keep the order of their first run."""
    by_key: dict[str, list[Run]] = {}
    for r in runs:
        by_key.setdefault(json.dumps(r.params, sort_keys=True, default=str), []).append(r)
    members = list(by_key.values())
    differing = differing_keys([m[0].params for m in members])
    groups, labels = [], Counter()
    for m in members:
        p = m[0].params
        if differing:
            label = " ".join(f"{short_key(k)}={short_value(p[k])}" for k in differing)
        else:
            label = " ".join(f"{g}={p[f'{g}.name']}" for g in ("data", "loss") if f"{g}.name" in p) or "all runs"
        labels[label] += 1
        groups.append(Group(label if labels[label] == 1 else f"{label} #{labels[label]}", m))
    return groups


# --- numbers ---------------------------------------------------------------------------------------------


def finite(values) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def get(summary: dict, *keys: str) -> Any:
    for k in keys:
        summary = summary.get(k) if isinstance(summary, dict) else None
    return summary


def cell(values: list, n: int, fmt: str = ".4f", agg: str = "mean") -> str:
    """'mean [95% CI]' (or the sum / max) of the finite values; '(k/n)' when only k of the n runs have one.
    One value gives 'mean [not enough seeds]': no interval from a single seed."""
    xs = finite(values)
    if not xs:
        return "–"
    if agg == "sum":
        text = format(sum(xs), fmt)
    elif agg == "max":
        text = format(max(xs), fmt)
    else:
        text = stats.format_interval(stats.mean_ci(xs), fmt)
    return text + (f" ({len(xs)}/{n})" if len(xs) < n else "")


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def target_name(groups: list[Group]) -> str:
    conv = next((r.summary.get("convergence") for g in groups for r in g.runs if r.summary.get("convergence")), None)
    if not conv or not conv.get("target_metric"):
        return "steps to target"
    from lossbench.config import LOWER_IS_BETTER

    op = "≤" if conv["target_metric"] in LOWER_IS_BETTER else "≥"
    return f"steps to {conv['target_metric']} {op} {conv['target_value']}"


def metric_columns(groups: list[Group]) -> tuple[str, ...]:
    """METRICS, and the multi-label ones when some run has them."""
    ml = [m for m in MULTILABEL_METRICS if any(f"val/{m}" in (r.summary.get("final") or {}) for g in groups for r in g.runs)]
    return METRICS + tuple(ml)


TEST_AT_BEST = ("Test metrics at each run's evaluation best on validation (retrospective selection: test X is read "
                "at the evaluation where val X was best; the test split is reported, never chosen on)")
NO_TEST = ("No test split in these runs (written before lossbench evaluated one): validation metrics only, and "
           "they are also the split the best point was chosen on.")


def has_test(groups: list[Group]) -> bool:
    """Does any run carry test/* metrics (runs from before the test split existed do not)?"""
    return any(k.startswith("test/") for g in groups for r in g.runs for k in (r.summary.get("best") or {}))


def tables(groups: list[Group]) -> str:
    """table.md: final and best validation metrics, test metrics at the val-best point, convergence and numerics;
    one row per group."""
    out = []
    columns = metric_columns(groups)
    views = [("final", "val", "Final validation metrics"), ("best", "val", "Best validation metrics (best evaluation of each run)")]
    views += [("best", "test", TEST_AT_BEST)] if has_test(groups) else []
    for kind, split, title in views:
        rows = []
        for g in groups:
            n = len(g.runs)
            row = [g.label, str(n)] + [cell([get(r.summary, kind, f"{split}/{m}") for r in g.runs], n) for m in columns]
            rows.append(row + ([g.statuses()] if kind == "final" else []))
        header = ["group", "runs", *columns] + (["status"] if kind == "final" else [])
        out.append(f"### {title}: mean [{stats.DESCRIPTION}; none below {stats.MIN_SEEDS} seeds]\n\n"
                   + markdown(header, rows))
        if kind == "final":
            out[-1] += split_notes(groups)
    if not has_test(groups):
        out.append(NO_TEST)
    rows = []
    for g in groups:
        n = len(g.runs)

        def col(*keys: str, fmt: str = ".4f", agg: str = "mean", g=g, n=n) -> str:
            return cell([get(r.summary, *keys) for r in g.runs], n, fmt, agg)

        reached = sum(get(r.summary, "convergence", "steps_to_target") is not None for r in g.runs)
        steps = finite(get(r.summary, "convergence", "steps_to_target") for r in g.runs)
        rows.append([
            g.label,
            (cell(steps, len(steps), ".0f") if steps else "–") + f" (reached {reached}/{n})",
            col("numerics", "saturated_frac_mean"), col("numerics", "clamped_frac_mean"),
            col("numerics", "dead_frac_mean"),
            col("numerics", "nonfinite_loss", fmt=".0f", agg="sum"), col("numerics", "nonfinite_grad", fmt=".0f", agg="sum"),
            col("numerics", "max_abs_logit", fmt=".3g", agg="max"), col("steps", fmt=".0f"),
            col("wall_time_s", fmt=".1f"),
        ])
    header = ["group", target_name(groups), "saturated frac", "clamped frac", "dead frac", "non-finite loss steps (sum)",
              "non-finite grad steps (sum)", "max abs logit (max)", "steps", "wall time s"]
    out.append("### Convergence and numerics (fractions: mean over detail steps, then over seeds; "
               f"mean [{stats.DESCRIPTION}])\n\n" + markdown(header, rows))
    out.append(run_table(groups, columns))
    return "\n\n".join(out) + "\n"


def split_notes(groups: list[Group]) -> str:
    """Under the final table: each group whose runs did not end alike, so that its mean is read as a mix."""
    notes = [f"- **{g.label}**: {g.split()}; its mean averages runs that behaved differently: read the runs "
             "one by one below." for g in groups if g.split()]
    return "\n\nSplit groups:\n" + "\n".join(notes) if notes else ""


def run_table(groups: list[Group], columns: tuple[str, ...]) -> str:
    """Every run: its seed, status, diagnosis and final metrics (a mean hides a stuck seed; this does not)."""
    rows = []
    for g in groups:
        for r in g.runs:
            s = r.summary
            final = [get(s, "final", f"val/{m}") for m in columns]
            rows.append([g.label, short_value(get(s, "config", "seed")), r.status, diagnosis.name(s) or "–",
                         *(format(v, ".4f") if finite([v]) else "–" for v in final), short_value(s.get("steps")),
                         r.dir.name])
    return "### Each run (final validation metrics)\n\n" + markdown(
        ["group", "seed", "status", "diagnosis", *columns, "steps", "dir"], rows)


def write_csv(path: Path, groups: list[Group]) -> None:
    """summary.csv: one row per run (row=run): its group, status and every final/best metric and numerics
    total; then one row per group (row=group): each final/best metric of table.md as its mean over the group's
    runs, with "<metric> ci_low", "<metric> ci_high" (the 95% CI; empty for one seed) and "<metric> n".
    best/test/X is the test X at the evaluation where val/X was best (retrospective selection on validation)."""
    rows = []
    for g in groups:
        for r in g.runs:
            s = r.summary
            row = {"row": "run", "group": g.label, "dir": str(r.dir), "status": r.status,
                   "diagnosis": diagnosis.name(s), "seed": get(s, "config", "seed"),
                   "steps": s.get("steps"), "max_steps": s.get("max_steps"), "wall_time_s": s.get("wall_time_s"),
                   "samples_per_sec": s.get("samples_per_sec"),
                   "steps_to_target": get(s, "convergence", "steps_to_target")}
            for kind in ("final", "best"):
                row.update({f"{kind}/{k}": v for k, v in (s.get(kind) or {}).items()})
            row.update({f"numerics/{k}": v for k, v in (s.get("numerics") or {}).items()})
            row["error"] = s.get("error")
            rows.append(row)
    for g in groups:
        row = {"row": "group", "group": g.label, "runs": len(g.runs), "status": g.statuses(), "split": g.split() or ""}
        for kind, split in (("final", "val"), ("best", "val"), ("final", "test"), ("best", "test")):
            for m in METRICS:
                key = f"{kind}/{split}/{m}"  # best/test/X: test X at the evaluation best on val X
                iv = stats.mean_ci(finite(get(r.summary, kind, f"{split}/{m}") for r in g.runs))
                if iv.n:
                    row |= {key: iv.mean, f"{key} ci_low": iv.low, f"{key} ci_high": iv.high, f"{key} n": iv.n}
        rows.append(row)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns and k != "error"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, [*columns, "error"], restval="")
        w.writeheader()
        w.writerows({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in row.items()}
                    for row in rows)


# --- plots -----------------------------------------------------------------------------------------------


def history_curves(run: Run) -> dict[str, dict[int, float]]:
    curves: dict[str, dict[int, float]] = {}
    for h in run.summary.get("history") or []:
        for k, v in h.items():
            if k != "step":
                number = isinstance(v, (int, float)) and not isinstance(v, bool)
                curves.setdefault(k, {})[int(h["step"])] = float(v) if number else math.nan
    return curves


def event_curves(run: Run) -> dict[str, dict[int, float]]:
    """Scalars from the run's TensorBoard event files (all of them, in order; a later value for a step wins)."""
    from lossbench.logger import read_scalars  # imports torch: only when there are plots to draw

    return read_scalars(run.dir, NUMERICS)


# --- entry point -----------------------------------------------------------------------------------------


def report(paths: list[Path], out: Path | None = None, compare: str | None = None) -> tuple[str, list[Path]]:
    """Write the report for the runs under paths; returns the tables (markdown) and the files written.
    With compare (a config key, e.g. "loss"), also the paired comparison of its values (lossbench.compare)."""
    from lossbench import plots

    runs = find_runs(paths)
    groups = group_runs(runs)
    text = tables(groups)
    comparison = None
    if compare is not None:
        from lossbench.compare import compare_runs

        comparison = compare_runs(runs, compare)  # before writing anything: a bad key is an error, not a half report
    out = out or paths[0] / "report"
    out.mkdir(parents=True, exist_ok=True)
    n_runs = sum(len(g.runs) for g in groups)
    say(f"{n_runs} runs in {len(groups)} groups; writing tables, then plots (reading each run's TensorBoard events)")
    (out / "table.md").write_text(
        f"# lossbench report: {n_runs} runs in {len(groups)} groups\n\nFrom: "
        + ", ".join(str(p) for p in paths) + "\n\n" + text)
    written = [out / "table.md", out / "summary.csv"]
    write_csv(out / "summary.csv", groups)
    band = f"line: mean over seeds; x, thin: each seed; band: {stats.DESCRIPTION_CURVES}"
    if plots.plot_grid(out / "curves.png", groups, [[history_curves(r) for r in g.runs] for g in groups], CURVES,
                       f"Validation curves ({band})"):
        written.append(out / "curves.png")
    if plots.plot_grid(out / "numerics.png", groups, [[event_curves(r) for r in g.runs] for g in groups], NUMERICS,
                       f"Training numerics from TensorBoard events ({band})"):
        written.append(out / "numerics.png")
    if comparison is not None:
        name = comparison.key.replace("/", "_")
        (out / f"compare_{name}.md").write_text(comparison.markdown)
        comparison.write_csv(out / f"compare_{name}.csv")
        text += "\n" + comparison.markdown
        written += [out / f"compare_{name}.md", out / f"compare_{name}.csv"]
    return text, written


def say(what: str) -> None:
    """What the report is doing, on stderr (the tables go to stdout)."""
    print(f"lossbench.report: {what}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lossbench.report",
        description="Compare lossbench runs: group runs that differ only by seed, write summary.csv, table.md "
        "and plots to PATH/report/ (or --out), and print the table.")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="sweep or run directories (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: the first PATH/report)")
    parser.add_argument("--compare", metavar="KEY", default=None,
                        help="paired differences between the values of this config key over matched seeds, e.g. "
                        "loss (= loss.name), data.scale, optim.lr; writes compare_<KEY>.md and .csv")
    args = parser.parse_args(argv)
    try:
        text, written = report(args.paths, args.out, args.compare)
    except LossbenchError as e:  # ReportError, raised from lossbench.report, which is not __main__'s copy
        print(f"lossbench.report: error: {e}", file=sys.stderr)
        return 2
    print(text)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
