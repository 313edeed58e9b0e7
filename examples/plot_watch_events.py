"""Draw what lossbench.watch wrote to TensorBoard, read back from the event files, as one PNG.

    python examples/plot_watch_events.py runs/watch/bce runs/watch/bce_logits --out watch.png

One panel per tag (train/loss and the watch/* monitors), one line per run directory, named and coloured after
it (lossbench's colour for a loss when the directory is named after one). The same scalars as TensorBoard's
TIME SERIES tab, for a page or a report without a browser.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lossbench.runs.logger import read_scalars, tb_tag  # noqa: E402
from lossbench.analysis.plots import loss_color  # noqa: E402

KEYS = ("train/loss", "numerics/saturated_frac", "numerics/dead_frac", "numerics/clamped_frac")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="directories holding the event files of lossbench.watch")
    p.add_argument("--out", type=Path, default=Path("watch.png"))
    args = p.parse_args()
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), dpi=150)
    axes = axes.ravel()
    for run in args.runs:
        scalars = read_scalars(run, KEYS)
        if not scalars:
            raise SystemExit(f"plot_watch_events: {run}: no lossbench.watch events there")
        for ax, key in zip(axes, KEYS, strict=True):
            if key in scalars:
                steps = sorted(scalars[key])
                ax.plot(steps, [scalars[key][s] for s in steps], marker="o", ms=3, label=run.name,
                        color=loss_color(run.name))
    for ax, key in zip(axes, KEYS, strict=True):
        ax.set_title(tb_tag(key))
        ax.set_xlabel("calls")
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
