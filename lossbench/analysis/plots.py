"""Plots of groups of runs that a person reads at a glance: one row of panels per regime, few lines a panel.

Layout (``layout``): the keys that vary between groups are split into
  - line keys: the loss (with any key the loss alone decides, e.g. the head in the multiclass_heads study),
    or, where the loss does not vary, every varying key but the first;
  - row keys: the rest (a "regime", e.g. data.scale + trainer.precision), or the first swept key.
Each row of panels holds the groups of one regime, at most ``MAX_LINES`` of them (more go to extra rows, each
with the regime's first line, the baseline, drawn again).
A line's colour is its loss's (``loss_color``: its registration's, the same in every plot of the project); lines of one loss in
one panel get lighter to darker shades of it and distinct dash patterns. Legends name only the keys that vary.
Curves that coincide are drawn with different dashes and merged in the legend ("bce = bce_logits, lines
overlap") instead of one hiding the other.
"""

from __future__ import annotations

import math
import textwrap
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lossbench.analysis import stats
from lossbench.losses import registry as loss_registry

if TYPE_CHECKING:
    from lossbench.analysis.runs import Group

# Unknown losses: a colour picked from the loss name's CRC32 (the same in every process, unlike hash()).
FALLBACK_COLORS = ("#7f7f7f", "#843c39", "#5254a3", "#8ca252", "#bd9e39", "#ad494a", "#6b6ecf", "#31a354",
                   "#756bb1", "#636363")
MAX_LINES = 6
DPI = 150
DASHES: tuple = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)))
MARKERS = ("o", "s", "^", "D", "v", "P")
OVERLAP = 0.005  # curves closer than this share of the panel's height everywhere are drawn on top of another


def loss_color(name: str | None) -> str:
    """The loss's colour: the one its registration gives (colour-blind-safe palettes; lossbench/losses/catalog.py),
    the same in every plot of the project."""
    if color := loss_registry.colors().get(name):
        return color
    return FALLBACK_COLORS[zlib.crc32(str(name).encode()) % len(FALLBACK_COLORS)]


def shade(color: str, i: int, n: int) -> tuple[float, float, float]:
    """The i-th of n shades of a colour, from lighter (mixed with white) to darker (mixed with black)."""
    from matplotlib.colors import to_rgb

    rgb = np.array(to_rgb(color))
    if n <= 1:
        return tuple(rgb)
    t = -0.45 + 0.8 * i / (n - 1)  # -0.45 (45% white) ... +0.35 (35% black)
    mixed = rgb + (1 - rgb) * -t if t < 0 else rgb * (1 - t)
    return tuple(float(c) for c in mixed)


@dataclass
class Line:
    group: Group
    label: str
    color: tuple[float, float, float]
    dash: str | tuple
    marker: str


@dataclass
class Row:
    title: str
    lines: list[Line] = field(default_factory=list)


def determined_by(key: str, keys: list[str], params: list[dict]) -> list[str]:
    """The keys whose value follows from key's value in every one of params (e.g. head from loss)."""
    out = []
    for k in keys:
        seen: dict[str, str] = {}
        if all(seen.setdefault(repr(p.get(key)), repr(p.get(k))) == repr(p.get(k)) for p in params):
            out.append(k)
    return out


def split_keys(params: list[dict]) -> tuple[list[str], list[str]]:
    """(row keys, line keys) for groups with these params (see the module docstring)."""
    from lossbench.analysis.runs import differing_keys

    keys = differing_keys(params)
    study = [k for k in keys if k.startswith("study.")]
    if study:  # a study's own axis (study.method, study.variant) names the lines; what it sets is not a row
        rest = [k for k in keys if k != study[0]]
        fixed = determined_by(study[0], rest, params)
        line = [study[0], *(["loss.name"] if "loss.name" in fixed else [])]
        return [k for k in rest if k not in fixed], line
    if "loss.name" in keys:
        rest = [k for k in keys if k != "loss.name"]
        line = ["loss.name", *determined_by("loss.name", rest, params)]
        return [k for k in rest if k not in line], line
    if len(keys) >= 2:
        return keys[:1], keys[1:]
    return [], keys


def layout(groups: list[Group]) -> tuple[list[Row], str]:
    """Rows of lines, and the legend title (the line keys). A line keeps its colour, shade and dashes in
    every row: they follow its loss and its place among the line-key values of the whole plot."""
    from lossbench.analysis.runs import short_key, short_value

    params = [g.runs[0].params for g in groups]
    row_keys, line_keys = split_keys(params)
    labels = [line_label(p, line_keys) or g.label for g, p in zip(groups, params, strict=True)]
    losses = [p.get("loss.name") for p in params]
    order = list(dict.fromkeys(labels))
    per_loss = {loss: list(dict.fromkeys(lb for lb, ls in zip(labels, losses, strict=True) if ls == loss))
                for loss in losses}
    rows: dict[str, list[Line]] = {}
    for g, p, label, loss in zip(groups, params, labels, losses, strict=True):
        k = order.index(label)
        color = shade(loss_color(loss), per_loss[loss].index(label), len(per_loss[loss]))
        line = Line(g, g.legend().replace(g.label, label, 1), color, DASHES[k % len(DASHES)], MARKERS[k % len(MARKERS)])
        rows.setdefault(", ".join(f"{short_key(k)}={short_value(p[k])}" for k in row_keys), []).append(line)
    out = []
    for title, lines in rows.items():
        if len(lines) <= MAX_LINES:
            out.append(Row(title, lines))
            continue
        # More lines than a panel holds: the regime's first line (the study's baseline, listed first) is drawn
        # in every chunk, so that each panel compares against it.
        base, rest = lines[0], lines[1:]
        n_chunks = math.ceil(len(rest) / (MAX_LINES - 1))
        size = math.ceil(len(rest) / n_chunks)  # 11 more lines: 4 + 4 + 3, not 5 + 5 + 1
        for start in range(0, len(rest), size):
            chunk = rest[start:start + size]
            part = f"lines {start + 2}-{start + 1 + len(chunk)} of {len(lines)} beside line 1, {base.label.split(' (')[0]}"
            out.append(Row(f"{title} ({part})" if title else part, [base, *chunk]))
    return out, short_key(line_keys[0]) if line_keys else ""


def line_label(params: dict, line_keys: list[str]) -> str:
    """'ce' for the legend titled 'loss'; the other line keys follow as 'ce (head=softmax)'."""
    from lossbench.analysis.runs import short_key, short_value

    if not line_keys:
        return ""
    rest = ", ".join(f"{short_key(k)}={short_value(params[k])}" for k in line_keys[1:])
    return short_value(params[line_keys[0]]) + (f" ({rest})" if rest else "")


# --- curves ------------------------------------------------------------------------------------------


Curves = list[dict[str, dict[int, float]]]  # one dict per run: tag -> {step: value}


def mean_band(runs: Curves, tag: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Steps, mean over runs and its 95% CI at each step where some run has a finite value; None if none."""
    steps = sorted({s for c in runs for s in c.get(tag, {})})
    if not steps:
        return None
    y = np.array([[c.get(tag, {}).get(s, np.nan) for s in steps] for c in runs], dtype=float)
    ok = np.isfinite(y).any(axis=0)
    if not ok.any():
        return None
    mean, low, high = stats.curve_ci(y[:, ok])
    return np.array(steps)[ok], mean, low, high


def coincide(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], span: tuple[float, float, bool]) -> str | None:
    """'=' if two mean curves (steps, values) are identical, '≈' if they are everywhere within OVERLAP of the
    panel's height (so one hides the other), None otherwise."""
    (xa, ya), (xb, yb) = a, b
    if len(xa) != len(xb) or (xa != xb).any():
        return None
    if np.array_equal(ya, yb):
        return "="
    lo, hi, log = span
    ta, tb = (np.log10(ya), np.log10(yb)) if log else (ya, yb)
    return "≈" if np.all(np.abs(ta - tb) <= OVERLAP * max(hi - lo, 1e-12)) else None


def overlapping(a: dict, b: dict, spans: dict[str, tuple[float, float, bool]]) -> str | None:
    """Whether two lines coincide in every panel ('=' or '≈'); None if not, or if either has no curve."""
    if not a or set(a) != set(b):
        return None
    signs = [coincide(a[t], b[t], spans[t]) for t in a]
    return None if None in signs else "=" if set(signs) == {"="} else "≈"


def clusters(n: int, same) -> list[tuple[list[int], str]]:
    """Items 0..n-1 gathered with the later items that same(i, j) calls equal ('=' or '≈'): (members, sign)."""
    out, done = [], set()
    for i in range(n):
        if i in done:
            continue
        members, signs = [i], []
        for j in range(i + 1, n):
            if j not in done and (sign := same(i, j)):
                members.append(j)
                signs.append(sign)
        done.update(members)
        out.append((members, " = " if set(signs) <= {"="} else " ≈ "))
    return out


def legend_entries(lines: list[Line], means: list[dict], spans: dict) -> list[tuple[list[int], str]]:
    """Legend entries: line indices and label; lines that coincide in every panel share one entry."""
    entries = []
    for members, sep in clusters(len(lines), lambda i, j: overlapping(means[i], means[j], spans)):
        if len(members) == 1:
            entries.append((members, lines[members[0]].label + ("" if means[members[0]] else ": no curve")))
        else:
            entries.append((members, sep.join(lines[j].label for j in members) + ", lines overlap"))
    return entries


def panel_notes(lines: list[Line], means: list[dict], tag: str, span: tuple, merged: set[frozenset]) -> list[str]:
    """'a ≈ b' for lines that coincide in this panel but not in every panel (those share a legend entry)."""
    drawn = [k for k in range(len(lines)) if tag in means[k]]
    found = clusters(len(drawn), lambda i, j: coincide(means[drawn[i]][tag], means[drawn[j]][tag], span))
    return [sep.join(lines[drawn[i]].label for i in members) for members, sep in found
            if len(members) > 1 and not any({drawn[i] for i in members} <= s for s in merged)]


def log_ticks(ax) -> None:
    """Plain numbers on a log axis (0.5, 1, 2, 5, 10), the 2s and 5s labelled only when few decades show."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(fmt)
    lo, hi = ax.get_ylim()
    if hi / lo < 300:
        ax.yaxis.set_minor_locator(LogLocator(subs=(2, 5)))
        ax.yaxis.set_minor_formatter(fmt)
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


def plot_grid(path: Path, groups: list[Group], curves: list[Curves], tags: tuple[str, ...], title: str) -> bool:
    """One row of panels per regime (see layout), one panel per tag, one line per group: the mean over its
    runs at each step, with a band for the 95% CI of that mean, and each run's own curve thin beside it (x).
    With a single regime the panels wrap three to a row. Lines that coincide in every panel share a legend entry; those that coincide in one panel only
    are named in that panel. False (nothing written) if no tag has data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.legend_handler import HandlerTuple
    from matplotlib.lines import Line2D

    present = [t for t in tags if any(t in c for runs in curves for c in runs)]
    if not present:
        return False
    rows, legend_title = layout(groups)
    seeds = {id(g): runs for g, runs in zip(groups, curves, strict=True)}  # each run's own curve, drawn thin
    means, bands, spans = panel_data(groups, curves, present)
    entries = [legend_entries(r.lines, [means[id(ln.group)] for ln in r.lines], spans) for r in rows]
    longest = max(len(s) for s in [legend_title, *(label for e in entries for _, label in e)])
    legend_w = min(max(1.5, 0.065 * longest + 0.8), 5.0)
    ncols = len(present) if len(rows) > 1 else min(3, len(present))
    nr = math.ceil(len(present) / ncols)
    panel_w, panel_h, head_h = 2.7, 2.1, 0.5
    heights = [nr * panel_h + (0.3 if r.title else 0) for r in rows]
    fig = plt.figure(figsize=(panel_w * ncols + legend_w, head_h + sum(heights)))
    subfigs = fig.subfigures(len(rows) + 1, 1, height_ratios=[head_h, *heights])
    subfigs[0].suptitle(title, fontsize=11, y=0.5, va="center")
    for sub, row, h, row_entries in zip(subfigs[1:], rows, heights, entries, strict=True):
        gs = sub.add_gridspec(nr, ncols + 1, width_ratios=[panel_w] * ncols + [legend_w], left=0.05, right=0.99,
                              top=1 - (0.3 * bool(row.title) + 0.35) / h, bottom=0.4 / h, wspace=0.3,
                              hspace=0.55)
        axes = [sub.add_subplot(gs[i // ncols, i % ncols]) for i in range(len(present))]
        if row.title:
            sub.suptitle(row.title, x=0.01, y=1 - 0.05 / h, ha="left", va="top", fontsize=10, fontweight="bold")
        handles = []
        for k, ln in enumerate(row.lines):
            m = means[id(ln.group)]
            for ax, tag in zip(axes, present, strict=True):
                if tag not in m:
                    continue
                x, mean = m[tag]
                low, high = bands[id(ln.group), tag]
                ax.plot(x, mean, color=ln.color, ls=ln.dash, lw=1.6, marker=ln.marker if len(x) < 25 else None,
                        ms=3, zorder=3 + k)
                ax.fill_between(x, low, high, color=ln.color, alpha=0.18, lw=0, zorder=1)
                seed_lines(ax, seeds[id(ln.group)], tag, ln)
            handles.append(Line2D([], [], color=ln.color, ls=ln.dash, lw=1.6 if m else 0,
                                  marker=ln.marker if m else "x", ms=4))
        merged = {frozenset(members) for members, _ in row_entries}
        for ax, tag in zip(axes, present, strict=True):
            style_panel(ax, tag, spans[tag],
                        panel_notes(row.lines, [means[id(ln.group)] for ln in row.lines], tag, spans[tag], merged))
        leg = sub.add_subplot(gs[:, -1])
        leg.axis("off")
        leg.legend([tuple(handles[j] for j in members) if len(members) > 1 else handles[members[0]]
                    for members, _ in row_entries], [label for _, label in row_entries],
                   handler_map={tuple: HandlerTuple(ndivide=None, pad=0.3)}, handlelength=3.2,
                   title=legend_title or None, loc="center left", fontsize=8, title_fontsize=8, frameon=False)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return True


def panel_data(groups: list[Group], curves: list[Curves], present: list[str]) -> tuple[dict, dict, dict]:
    """Per group and tag the mean curve (x, mean) and its band (low, high); per tag the span of all of them
    (lo, hi, log): a log scale where the values span more than two decades (losses, logits)."""
    means: dict[int, dict] = {id(g): {} for g in groups}
    bands = {}
    spans: dict[str, tuple[float, float, bool]] = {}
    for tag in present:
        values = []
        for g, runs in zip(groups, curves, strict=True):
            mb = mean_band(runs, tag)
            if mb is not None:
                x, mean, low, high = mb
                means[id(g)][tag] = (x, mean)
                bands[id(g), tag] = (low, high)
                values.append(np.concatenate([mean, low, high]))
        v = np.concatenate(values) if values else np.array([])
        v = v[np.isfinite(v)]
        log = bool(len(v) and v.min() > 0 and v.max() / v.min() > 100)
        t = np.log10(v) if log else v
        spans[tag] = (float(t.min()), float(t.max()), log) if len(t) else (0.0, 1.0, False)
    return means, bands, spans


def style_panel(ax, tag: str, span: tuple[float, float, bool], notes: list[str]) -> None:
    """A panel's scale, title, overlap notes (wrapped to its width, ~46 characters, under the title and not over
    the data), axis label and grid."""
    if span[2]:
        ax.set_yscale("log")
        log_ticks(ax)
    text = [w for n in notes for w in textwrap.wrap(f"{n}: lines overlap", 46)]
    ax.set_title(tag, fontsize=9, pad=5 + 9 * len(text))
    if text:
        ax.text(0.5, 1.01, "\n".join(text), transform=ax.transAxes, fontsize=6.5, color="0.25", ha="center",
                va="bottom")
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(which="both", labelsize=7)
    ax.grid(alpha=0.3)


def seed_lines(ax, runs: Curves, tag: str, line: Line) -> None:
    """Each run's own curve, thin, beside its group's mean: a split group (one stuck seed) shows."""
    if len(runs) < 2:
        return
    for run in runs:
        pts = sorted((step, v) for step, v in run.get(tag, {}).items() if math.isfinite(v))
        if pts:
            ax.plot(*zip(*pts, strict=True), color=line.color, ls=line.dash, lw=0.6, alpha=0.5, zorder=2,
                    marker="x" if len(pts) < 25 else None, ms=3)


def plot_bars(path: Path, groups: list[Group], values: list[np.ndarray], xlabel: str, ylabel: str, title: str) -> None:
    """Grouped bars, one panel per row of the layout: for each group, values (runs, categories) as the mean
    over its runs with the 95% CI of that mean as the error bar (e.g. per-class recall)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, legend_title = layout(groups)
    index = {id(g): i for i, g in enumerate(groups)}
    n_cat = max(v.shape[1] for v in values)
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 2.6 * len(rows) + 0.9), squeeze=False)
    for ax, row in zip(axes[:, 0], rows, strict=True):
        width = 0.8 / len(row.lines)
        for k, ln in enumerate(row.lines):
            y = values[index[id(ln.group)]]
            y = np.pad(y, ((0, 0), (0, n_cat - y.shape[1])), constant_values=np.nan)
            mean, low, high = stats.curve_ci(y)
            err = np.vstack([mean - low, high - mean])
            x = np.arange(n_cat) + (k - (len(row.lines) - 1) / 2) * width
            ax.bar(x, mean, width, color=ln.color, label=ln.label, hatch=("", "//", "..", "xx", "\\\\", "++")[k % 6],
                   edgecolor="white", lw=0.3, yerr=np.where(np.isfinite(err), err, 0), capsize=1.5,
                   error_kw={"lw": 0.8})
        ax.set_xticks(range(n_cat))
        ax.set_ylabel(ylabel, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(row.title, fontsize=10, fontweight="bold", loc="left")
        ax.legend(title=legend_title or None, fontsize=8, title_fontsize=8, loc="center left",
                  bbox_to_anchor=(1.01, 0.5), frameon=False)
    axes[-1, 0].set_xlabel(xlabel)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
