"""`python -m lossbench.report PATH [PATH...] [--out DIR]`: turn finished runs into a comparison.

Reads every summary.json under the paths (a sweep dir, several, or a whole outputs/ tree), groups the runs
that differ only by seed, and writes to PATH/report/ (or --out):
  summary.csv    one row per run
  table.md       one row per group: mean ± std over seeds of the final and best validation metrics, steps to
                 the convergence target, numerics totals and status counts (printed too)
  curves.png     validation curves of each group (line: mean over seeds; band: min to max over seeds)
  numerics.png   train loss and numerics panels, read back from the runs' TensorBoard event files
Failed, diverged and interrupted runs are counted and shown, never dropped.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossbench.config import flatten
from lossbench.store import SUMMARY, read_json

# Config keys that do not change what a run computes (seeds, paths, resuming, bookkeeping): runs that differ
# only in these belong to one group.
IGNORED = {"seed", "data.seed", "data.root", "data.download", "trainer.resume", "trainer.skip_completed",
           "trainer.threads", "logger.flush_secs"}
METRICS = ("auc", "ap", "accuracy", "balanced_accuracy", "nll", "ece")
# multi-label runs' own metrics, as columns when a run has them (there ap = mAP, accuracy = subset accuracy)
MULTILABEL_METRICS = ("f1_micro", "f1_macro", "hamming_loss", "lrap", "auc_micro")
CURVES = ("val/auc", "val/ap", "val/balanced_accuracy", "val/nll", "val/ece", "val/loss", "val/f1_macro",
          "val/f1_micro")
NUMERICS = ("train/loss", "numerics/saturated_frac", "numerics/dead_frac", "numerics/clamped_frac",
            "numerics/max_abs_logit", "numerics/grad_norm")
NO_RUNS = "no runs found under {}: expected summary.json files written by python -m lossbench"


class ReportError(Exception):
    """Nothing to report on (bad path, no runs); the CLI prints it and exits 2."""


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
        return ", ".join(f"{n} {s}" for s, n in Counter(r.status for r in self.runs).items())

    def legend(self) -> str:
        bad = {s: n for s, n in Counter(r.status for r in self.runs).items() if s != "completed"}
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
            s = read_json(path)
            if s is None:
                print(f"lossbench.report: warning: cannot read {path}; not included", file=sys.stderr)
                continue
            params = {k: v for k, v in flatten(s.get("config") or {}).items() if k not in IGNORED}
            runs.append(Run(path.parent, s, params))
    seen, unique = set(), []
    for r in runs:  # overlapping paths (a sweep and its parent) list a run once
        if r.dir.resolve() not in seen:
            seen.add(r.dir.resolve())
            unique.append(r)
    return unique


def short_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None or isinstance(v, (list, dict, bool)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def short_key(k: str) -> str:
    """loss.name -> loss (the config group choice); everything else stays a dotted key."""
    return k.removesuffix(".name") if k.count(".") == 1 and k.endswith(".name") else k


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs with equal configs (seeds and IGNORED keys aside) form a group, labelled by the keys that differ
    between groups, e.g. "loss=bce data.scale=50". Groups keep the order of their first run."""
    by_key: dict[str, list[Run]] = {}
    for r in runs:
        by_key.setdefault(json.dumps(r.params, sort_keys=True, default=str), []).append(r)
    members = list(by_key.values())
    common = set.intersection(*(set(m[0].params) for m in members))
    order = list(members[0][0].params)  # config order: data, model, loss, optim, trainer, ...
    differing = [k for k in order if k in common
                 and len({json.dumps(m[0].params[k], default=str) for m in members}) > 1]
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


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds (0 for one run)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def cell(values: list, n: int, fmt: str = ".4f", agg: str = "mean") -> str:
    """'mean ± std' (or the sum / max) of the finite values; '(k/n)' when only k of the n runs have one."""
    xs = finite(values)
    if not xs:
        return "–"
    if agg == "sum":
        text = format(sum(xs), fmt)
    elif agg == "max":
        text = format(max(xs), fmt)
    else:
        m, s = mean_std(xs)
        text = format(m, fmt) + (f" ± {format(s, fmt)}" if len(xs) > 1 else "")
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


def tables(groups: list[Group]) -> str:
    """table.md: final and best validation metrics, convergence and numerics; one row per group."""
    out = []
    columns = metric_columns(groups)
    for kind, title in (("final", "Final validation metrics"), ("best", "Best validation metrics (best evaluation of each run)")):
        rows = []
        for g in groups:
            n = len(g.runs)
            row = [g.label, str(n)] + [cell([get(r.summary, kind, f"val/{m}") for r in g.runs], n) for m in columns]
            rows.append(row + ([g.statuses()] if kind == "final" else []))
        header = ["group", "runs", *columns] + (["status"] if kind == "final" else [])
        out.append(f"### {title}: mean ± std over seeds\n\n" + markdown(header, rows))
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
    out.append("### Convergence and numerics (fractions: mean over detail steps, then over seeds)\n\n"
               + markdown(header, rows))
    return "\n\n".join(out) + "\n"


def write_csv(path: Path, groups: list[Group]) -> None:
    """summary.csv: one row per run, its group, status and every final/best metric and numerics total."""
    rows = []
    for g in groups:
        for r in g.runs:
            s = r.summary
            row = {"group": g.label, "dir": str(r.dir), "status": r.status, "seed": get(s, "config", "seed"),
                   "steps": s.get("steps"), "max_steps": s.get("max_steps"), "wall_time_s": s.get("wall_time_s"),
                   "samples_per_sec": s.get("samples_per_sec"),
                   "steps_to_target": get(s, "convergence", "steps_to_target")}
            for kind in ("final", "best"):
                row.update({f"{kind}/{k}": v for k, v in (s.get(kind) or {}).items()})
            row.update({f"numerics/{k}": v for k, v in (s.get("numerics") or {}).items()})
            row["error"] = s.get("error")
            rows.append(row)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns and k != "error"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, [*columns, "error"], restval="")
        w.writeheader()
        w.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)


# --- plots -----------------------------------------------------------------------------------------------


def history_curves(run: Run) -> dict[str, dict[int, float]]:
    curves: dict[str, dict[int, float]] = {}
    for h in run.summary.get("history") or []:
        for k, v in h.items():
            if k != "step":
                curves.setdefault(k, {})[int(h["step"])] = math.nan if v is None else float(v)
    return curves


def event_curves(run: Run) -> dict[str, dict[int, float]]:
    """Scalars from the run's TensorBoard event files (all of them, in order; a later value for a step wins)."""
    tb = run.dir / "tb"
    if not tb.is_dir():
        return {}
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(tb), size_guidance={ea.SCALARS: 0, ea.TENSORS: 1, ea.HISTOGRAMS: 1,
                                                      ea.COMPRESSED_HISTOGRAMS: 1, ea.IMAGES: 1, ea.AUDIO: 1})
    acc.Reload()
    tags = set(acc.Tags().get("scalars", []))
    return {t: {e.step: e.value for e in acc.Scalars(t)} for t in NUMERICS if t in tags}


def plot_panels(path: Path, groups: list[Group], curves: list[list[dict]], tags: tuple[str, ...], title: str) -> bool:
    """One panel per tag; per group a line (mean over its runs at each step) and a min-max band over seeds.
    Every group is in the legend, those without a curve (all runs failed) too."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.lines import Line2D

    present = [t for t in tags if any(t in c for runs in curves for c in runs)]
    if not present:
        return False
    cols, rows = 3, math.ceil(len(present) / 3)
    longest = max((len(g.legend()) for g in groups), default=0)
    ncol = 3 if longest <= 45 else 2 if longest <= 70 else 1  # long group labels get whole rows
    legend_rows = math.ceil(len(groups) / ncol)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows + 0.6 + 0.25 * legend_rows), squeeze=False)
    colors = [plt.get_cmap("tab10")(i % 10) for i in range(len(groups))]
    styles = [("-", "--", "-.", ":")[i % 4] for i in range(len(groups))]  # groups that coincide stay visible
    drawn = [False] * len(groups)
    for ax, tag in zip(axes.flat, present, strict=False):
        low, high = math.inf, -math.inf
        for i, runs in enumerate(curves):
            steps = sorted({s for c in runs for s in c.get(tag, {})})
            y = np.array([[c.get(tag, {}).get(s, np.nan) for s in steps] for c in runs], dtype=float)
            ok = np.isfinite(y).any(axis=0) if steps else np.array([], dtype=bool)
            if not ok.any():
                continue
            x, y = np.array(steps)[ok], y[:, ok]
            ax.plot(x, np.nanmean(y, axis=0), color=colors[i], ls=styles[i], lw=1.5,
                    marker="o" if len(x) < 25 else None, ms=3)
            if len(runs) > 1:
                ax.fill_between(x, np.nanmin(y, axis=0), np.nanmax(y, axis=0), color=colors[i], alpha=0.2, lw=0)
            drawn[i], low, high = True, min(low, float(np.nanmin(y))), max(high, float(np.nanmax(y)))
        if low > 0 and high / low > 100:  # losses and logits spanning decades
            ax.set_yscale("log")
        ax.set_title(tag, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(present):]:
        ax.axis("off")
    handles = [Line2D([], [], color=c, ls=ls, lw=1.5 if d else 0, marker=None if d else "x")
               for c, ls, d in zip(colors, styles, drawn, strict=True)]
    labels = [g.legend() + ("" if d else ": no curve") for g, d in zip(groups, drawn, strict=True)]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), ncol), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.06, right=0.98, top=1 - 0.75 / height, bottom=(0.45 + 0.22 * legend_rows) / height,
                        wspace=0.25, hspace=0.45)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return True


# --- entry point -----------------------------------------------------------------------------------------


def report(paths: list[Path], out: Path | None = None) -> tuple[str, list[Path]]:
    """Write the report for the runs under paths; returns the tables (markdown) and the files written."""
    groups = group_runs(find_runs(paths))
    out = out or paths[0] / "report"
    out.mkdir(parents=True, exist_ok=True)
    text = tables(groups)
    n_runs = sum(len(g.runs) for g in groups)
    (out / "table.md").write_text(
        f"# lossbench report: {n_runs} runs in {len(groups)} groups\n\nFrom: "
        + ", ".join(str(p) for p in paths) + "\n\n" + text)
    written = [out / "table.md", out / "summary.csv"]
    write_csv(out / "summary.csv", groups)
    band = "line: mean over seeds, band: min to max"
    if plot_panels(out / "curves.png", groups, [[history_curves(r) for r in g.runs] for g in groups], CURVES,
                   f"Validation curves ({band})"):
        written.append(out / "curves.png")
    if plot_panels(out / "numerics.png", groups, [[event_curves(r) for r in g.runs] for g in groups], NUMERICS,
                   f"Training numerics from TensorBoard events ({band})"):
        written.append(out / "numerics.png")
    return text, written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lossbench.report",
        description="Compare lossbench runs: group runs that differ only by seed, write summary.csv, table.md "
        "and plots to PATH/report/ (or --out), and print the table.")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="sweep or run directories (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: the first PATH/report)")
    args = parser.parse_args(argv)
    try:
        text, written = report(args.paths, args.out)
    except ReportError as e:
        print(f"lossbench.report: error: {e}", file=sys.stderr)
        return 2
    print(text)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
