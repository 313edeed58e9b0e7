"""`python -m lossbench.studies STUDY SWEEP_DIR [--out DIR]`: the report of one study in experiments/.

Runs :mod:`lossbench.analysis.report` on the sweep (table.md, summary.csv, curves.png, numerics.png, and the paired
comparison of the study's axis, compare_<key>.md) and adds ``study.md``: the columns that answer the study's
question as mean [95% CI] over seeds per group (lossbench.analysis.stats), e.g. recall and mean predicted probability
for ``pos_weight``, recall of the rarest classes for ``class_weights``, and for ``equivalence`` how far the
validation curves of two losses trained from the same seed ever drift apart; then the paired differences
with their verdicts and detectable differences (lossbench.analysis.compare).

    python -m lossbench -m experiment=pos_weight
    python -m lossbench.studies pos_weight outputs/studies/pos_weight/<time> --out experiments/pos_weight
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from lossbench.analysis import plots, stats
from lossbench.analysis.report import NO_TEST, TEST_AT_BEST, cell, has_test, report
from lossbench.analysis.runs import Group, ReportError, find_runs, get, group_runs, markdown

Getter = Callable[[dict], float | None]


def at_val_best(metric: str) -> Getter:
    """The test value of a metric at the run's evaluation best on validation for it (retrospective selection)."""
    return lambda s: get(s, "best", f"test/{metric}")


def final(metric: str) -> Getter:
    f = lambda s: get(s, "final", f"val/{metric}")  # noqa: E731
    f.test = at_val_best(metric)  # its column in the test table
    return f


def best(metric: str) -> Getter:
    f = lambda s: get(s, "best", f"val/{metric}")  # noqa: E731
    f.test = at_val_best(metric)
    return f


def numerics(key: str) -> Getter:
    return lambda s: get(s, "numerics", key)


def class_recall(c: int) -> Getter:
    def f(s: dict) -> float | None:
        pcr = s.get("per_class_recall") or []
        return pcr[c] if c < len(pcr) else None
    return f


def mean_recall(classes: range, key: str = "per_class_recall") -> Getter:
    """Mean recall over some classes (e.g. the head or the tail of a long-tailed training set)."""
    def f(s: dict) -> float | None:
        pcr = s.get(key) or []
        xs = [pcr[c] for c in classes if c < len(pcr) and isinstance(pcr[c], (int, float)) and math.isfinite(pcr[c])]
        return statistics.fmean(xs) if xs else None
    return f


def steps_to_target(s: dict) -> float | None:
    return get(s, "convergence", "steps_to_target")


def first_step(metric: str, value: float) -> Getter:
    """First evaluated step at which val/<metric> >= value (from the run's history); None if never."""
    def f(s: dict) -> float | None:
        return next((h["step"] for h in s.get("history") or [] if (h.get(f"val/{metric}") or -math.inf) >= value),
                    None)
    return f




def val_errors(s: dict) -> float | None:
    """Misclassified validation images ((1 - accuracy) * n_val): of MNIST's 10,000 test images in runs from before
    the test split, of its 5,000-image validation half since."""
    acc, n = get(s, "final", "val/accuracy"), get(s, "data", "n_val")
    return None if acc is None or n is None else round((1 - acc) * n)


def test_errors(s: dict) -> float | None:
    """Misclassified test images at the evaluation best on validation accuracy: (1 - test accuracy) * n_test."""
    acc, n = get(s, "best", "test/accuracy"), get(s, "data", "n_test")
    return None if acc is None or not n else round((1 - acc) * n)


val_errors.test = test_errors


# Per study: (column header, getter, format). Every column is mean [95% CI] over the group's seeds.
COLUMNS: dict[str, list[tuple[str, Getter, str]]] = {
    "saturation": [
        ("final AUC", final("auc"), ".3f"), ("best AUC", best("auc"), ".3f"), ("final val NLL", final("nll"), ".3g"),
        ("saturated frac", numerics("saturated_frac_mean"), ".3f"), ("clamped frac", numerics("clamped_frac_mean"), ".3f"),
        ("dead frac", numerics("dead_frac_mean"), ".3f"), ("max abs logit", numerics("max_abs_logit"), ".3g"),
        ("first non-finite step", numerics("first_nonfinite_step"), ".0f"),
    ],
    "equivalence": [
        ("final AUC", final("auc"), ".4f"), ("final val NLL", final("nll"), ".4f"),
        ("final accuracy", final("accuracy"), ".4f"), ("final ECE", final("ece"), ".4f"),
    ],
    "pos_weight": [
        ("AUC", final("auc"), ".3f"), ("AP", final("ap"), ".3f"), ("balanced acc", final("balanced_accuracy"), ".3f"),
        ("recall@0.5", final("recall"), ".3f"), ("accuracy", final("accuracy"), ".3f"),
        ("mean p(pos)", final("mean_prob"), ".3f"), ("val NLL", final("nll"), ".3f"),
    ],
    "class_weights": [
        ("balanced acc", final("balanced_accuracy"), ".4f"), ("macro AUC", final("auc"), ".4f"),
        ("recall class 7", class_recall(7), ".3f"), ("recall class 8", class_recall(8), ".3f"),
        ("recall class 9 (rarest)", class_recall(9), ".3f"), ("recall class 0 (largest)", class_recall(0), ".3f"),
        ("ECE", final("ece"), ".4f"),
    ],
    "multiclass_heads": [
        ("steps to acc 0.90", first_step("accuracy", 0.90), ".0f"),
        ("steps to acc 0.93", first_step("accuracy", 0.93), ".0f"),
        ("steps to acc 0.95", steps_to_target, ".0f"), ("accuracy", final("accuracy"), ".4f"),
        ("ECE", final("ece"), ".4f"), ("mean confidence", final("mean_confidence"), ".4f"),
        ("val NLL", final("nll"), ".4f"), ("macro AUC", final("auc"), ".4f"),
    ],
    "label_smoothing": [
        ("accuracy", final("accuracy"), ".4f"), ("ECE", final("ece"), ".4f"),
        ("mean max prob", final("mean_confidence"), ".4f"), ("val NLL", final("nll"), ".4f"),
        ("steps to acc 0.95", steps_to_target, ".0f"),
    ],
    "long_tail": [
        ("balanced acc", final("balanced_accuracy"), ".4f"),
        ("balanced acc, post-hoc τ=1", final("posthoc/balanced_accuracy"), ".4f"),
        ("recall 0-4 (head)", mean_recall(range(0, 5)), ".3f"), ("recall 5-9 (tail)", mean_recall(range(5, 10)), ".3f"),
        ("recall 5-9, post-hoc", mean_recall(range(5, 10), "posthoc_per_class_recall"), ".3f"),
        ("recall class 9 (rarest)", class_recall(9), ".3f"), ("macro AUC", final("auc"), ".4f"),
        ("ECE", final("ece"), ".4f"), ("steps to bal. acc 0.9", steps_to_target, ".0f"),
        ("max abs logit", numerics("max_abs_logit"), ".3g"), ("non-finite loss steps", numerics("nonfinite_loss"), ".0f"),
    ],
    "long_tail_binary": [
        ("AUC", final("auc"), ".3f"), ("AP", final("ap"), ".3f"), ("balanced acc", final("balanced_accuracy"), ".3f"),
        ("recall@0.5", final("recall"), ".3f"), ("accuracy", final("accuracy"), ".3f"),
        ("mean p(pos)", final("mean_prob"), ".3f"), ("val NLL", final("nll"), ".3f"),
        ("steps to AP 0.5", steps_to_target, ".0f"),
    ],
    "auc": [
        ("AUC", final("auc"), ".4f"), ("AP", final("ap"), ".4f"), ("best AUC", best("auc"), ".4f"),
        ("best AP", best("ap"), ".4f"), ("steps to AUC target", steps_to_target, ".0f"),
        ("batches without a pair", numerics("pairless_frac_mean"), ".3f"),
        ("max abs logit", numerics("max_abs_logit"), ".3g"),
    ],
    "multilabel": [
        ("mAP", final("ap"), ".4f"), ("macro AUC", final("auc"), ".4f"), ("F1 micro@0.5", final("f1_micro"), ".4f"),
        ("F1 macro@0.5", final("f1_macro"), ".4f"), ("subset acc", final("accuracy"), ".4f"),
        ("Hamming loss", final("hamming_loss"), ".4f"), ("LRAP", final("lrap"), ".4f"),
        ("labels/sample predicted", final("labels_per_sample"), ".2f"), ("val NLL (per label)", final("nll"), ".4f"),
        ("ECE (per label)", final("ece"), ".4f"),
    ],
    "distillation": [
        ("errors", val_errors, ".0f"), ("accuracy", final("accuracy"), ".4f"), ("val NLL", final("nll"), ".4f"),
        ("ECE", final("ece"), ".4f"), ("best accuracy", best("accuracy"), ".4f"),
        ("loss gap (reported - correct kd)", numerics("loss_gap_mean"), ".3g"),
    ],
}
COLUMNS["real_binary"] = COLUMNS["long_tail_binary"][:-1] + [("steps to AP 0.95", steps_to_target, ".0f")]
COLUMNS["real_multilabel"] = COLUMNS["multilabel"]  # the same questions on real data (lossbench/data/real.py)
# Studies whose groups are named by a few config keys: their method presets (configs/method, configs/binary_method)
# change several loss and model keys at once, which would all appear in the default label.
LABEL_KEYS = {"long_tail": ("data.imbalance_profile", "study.method"), "long_tail_binary": ("study.method",),
              "real_binary": ("study.method",), "auc": ("study.method", "optim.lr")}
# The key each study's paired comparison is over (report --compare): the question's axis.
COMPARE = {"saturation": "loss", "equivalence": "loss", "pos_weight": "loss.pos_weight",
           "class_weights": "loss.class_weight", "multiclass_heads": "loss", "label_smoothing": "loss.label_smoothing",
           "long_tail": "study.method", "long_tail_binary": "study.method",
           "multilabel": "study.variant", "distillation": "study.variant",
           "real_binary": "study.method", "real_multilabel": "study.variant", "auc": "study.method"}
# equivalence: pairs of losses whose curves are compared run by run (same seed, same data, same init)
PAIRS = (("ce", "nll"), ("bce_logits", "bce"), ("bce_logits", "ce"))
CURVE_METRICS = ("val/nll", "val/auc")


# Each study's primary validation metric: what tuning (lossbench.tune) chooses each method's learning rate by, and
# the column the tuned tables lead with. Balanced accuracy for long-tailed classes, AUC for binary imbalance, mAP
# for multi-label tasks, accuracy (= error) for balanced MNIST.
PRIMARY = {"saturation": "val/auc", "equivalence": "val/auc", "pos_weight": "val/auc", "auc": "val/auc",
           "long_tail_binary": "val/auc", "real_binary": "val/auc", "class_weights": "val/balanced_accuracy",
           "long_tail": "val/balanced_accuracy", "multilabel": "val/ap", "real_multilabel": "val/ap",
           "multiclass_heads": "val/accuracy", "label_smoothing": "val/accuracy", "distillation": "val/accuracy"}


def label(study: str, g: Group) -> str:
    keys = LABEL_KEYS.get(study)
    if not keys:
        return g.label
    return " ".join(str(get(g.runs[0].summary, "config", *k.split("."))) for k in keys)


def study_table(study: str, groups: list[Group]) -> str:
    """The study's columns on validation (final evaluation), then, for runs with a test split, the same metrics
    on test at each run's evaluation best on validation; runs without one are labelled validation only."""
    cols = COLUMNS[study]
    rows = []
    for g in groups:
        n = len(g.runs)
        rows.append([label(study, g), str(n)] + [cell([get_(r.summary) for r in g.runs], n, fmt) for _, get_, fmt in cols]
                    + [g.statuses()])
    text = "### Validation, final evaluation\n\n" + markdown(["group", "runs", *(c[0] for c in cols), "status"], rows)
    tcols = [(name, get_.test, fmt) for name, get_, fmt in cols if hasattr(get_, "test")]
    if not has_test(groups):
        return text + "\n\n" + NO_TEST
    rows = [[label(study, g), str(len(g.runs))] + [cell([get_(r.summary) for r in g.runs], len(g.runs), fmt)
                                                   for _, get_, fmt in tcols] for g in groups]
    return (text + f"\n\n### {TEST_AT_BEST}\n\n"
            + markdown(["group", "runs", *(f"test {c[0].removeprefix('val ')}" for c in tcols)], rows))


def curve_gaps(groups: list[Group]) -> str:
    """Largest |difference| over all evaluations between the curves of two losses run with the same seed."""
    by_loss: dict[str, dict[int, dict]] = {}
    for g in groups:
        for r in g.runs:
            loss = get(r.summary, "config", "loss", "name")
            by_loss.setdefault(loss, {})[get(r.summary, "config", "seed")] = r.summary
    rows = []
    for a, b in PAIRS:
        if a not in by_loss or b not in by_loss:
            continue
        seeds = sorted(set(by_loss[a]) & set(by_loss[b]))
        row = [f"{a} vs {b}", str(len(seeds))]
        for m in CURVE_METRICS:
            gaps = []
            for seed in seeds:
                ha = {h["step"]: h.get(m) for h in by_loss[a][seed].get("history") or []}
                hb = {h["step"]: h.get(m) for h in by_loss[b][seed].get("history") or []}
                d = [abs(ha[s] - hb[s]) for s in ha if s in hb and ha[s] is not None and hb[s] is not None]
                gaps.append(max(d) if d else math.nan)
            row.append(cell(gaps, len(seeds), ".3g"))
        rows.append(row)
    header = ["pair (same seed)", "seeds", *(f"max over steps of abs diff in {m}" for m in CURVE_METRICS)]
    return markdown(header, rows)


def plot_class_recall(path: Path, groups: list[Group]) -> None:
    """Per-class recall: one panel per imbalance ratio (the layout of lossbench.analysis.plots), one bar per group and
    class at the mean over seeds, the error bar its 95% CI."""
    import numpy as np

    n_classes = max(len(r.summary.get("per_class_recall") or []) for g in groups for r in g.runs)
    values = [np.array([(r.summary.get("per_class_recall") or [np.nan] * n_classes) for r in g.runs], dtype=float)
              for g in groups]
    plots.plot_bars(path, groups, values, "class (training samples fall with the class index)", "recall",
                    f"Per-class validation recall (bar: mean over seeds; error bar: {stats.DESCRIPTION_CURVES})")


def plot_recall_by_class(path: Path, groups: list[Group]) -> None:
    """Per-class recall (mean over seeds) of each method, one panel per imbalance profile (long_tail)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    profiles = sorted({get(g.runs[0].summary, "config", "data", "imbalance_profile") for g in groups})
    fig, axes = plt.subplots(1, len(profiles), figsize=(5.2 * len(profiles), 3.8), sharey=True, squeeze=False)
    for ax, profile in zip(axes[0], profiles, strict=True):
        for g in groups:
            if get(g.runs[0].summary, "config", "data", "imbalance_profile") != profile:
                continue
            rec = np.array([r.summary.get("per_class_recall") or [] for r in g.runs], dtype=float)
            if rec.ndim == 2 and rec.shape[1]:
                ax.plot(range(rec.shape[1]), np.nanmean(rec, axis=0), marker="o", ms=3, lw=1,
                        label=get(g.runs[0].summary, "config", "study", "method"))
        ax.set_title(f"profile={profile}", fontsize=10)
        ax.set_xlabel("class (training samples fall with the class index)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("recall (mean over seeds)")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.savefig(path, dpi=plots.DPI, bbox_inches="tight")
    plt.close(fig)


MAX_PNG_BYTES = 200_000  # plots are committed to experiments/: keep them small


def shrink_png(path: Path) -> None:
    """Re-encode a large plot with a 64-colour palette (line plots lose nothing visible)."""
    if path.stat().st_size <= MAX_PNG_BYTES:
        return
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=64)
    small.save(path, optimize=True)


def write(study: str, sweep: Path | list[Path], out: Path) -> str:
    """The study's report of the runs under sweep (a directory, or several: e.g. the final/ folders of lossbench.tune
    processes that each tuned part of the grid)."""
    sweeps = sweep if isinstance(sweep, list) else [sweep]
    groups = group_runs(find_runs(sweeps))
    try:
        _, written = report(sweeps, out, COMPARE[study])
    except ReportError as e:  # e.g. one value of the axis only, or no two runs to pair: the rest still stands
        print(f"lossbench.studies: warning: no paired comparison: {e}", file=sys.stderr)
        _, written = report(sweeps, out)
    md = f"# {study}: mean [{stats.DESCRIPTION}]\n\nFrom: {', '.join(map(str, sweeps))}\n\n" + study_table(study, groups) + "\n"
    if study == "equivalence":
        md += "\n## How far the curves of two losses drift apart (same seed, same data and init)\n\n"
        md += curve_gaps(groups) + "\n"
    if study == "class_weights":
        plot_class_recall(out / "class_recall.png", groups)
    if study == "long_tail":
        plot_recall_by_class(out / "class_recall.png", groups)
    compared = [p for p in written if p.suffix == ".md" and p.name.startswith("compare_")]
    if compared:
        md += "\n" + compared[0].read_text()
    (out / "study.md").write_text(md)
    for path in [*written, out / "class_recall.png"]:
        if path.suffix == ".png" and path.exists():
            shrink_png(path)
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lossbench.studies", description=__doc__.split("\n\n")[0])
    ap.add_argument("study", choices=sorted(COLUMNS))
    ap.add_argument("sweep", type=Path, nargs="+", help="the study's sweep directory (outputs/studies/<study>/<time>), "
                    "or several (e.g. the final/ folders of lossbench.tune processes that each tuned part of the grid)")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default: experiments/<study>)")
    args = ap.parse_args(argv)
    out = args.out or Path("experiments") / args.study
    out.mkdir(parents=True, exist_ok=True)
    try:
        print(write(args.study, args.sweep, out))
    except ReportError as e:
        print(f"lossbench.studies: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
