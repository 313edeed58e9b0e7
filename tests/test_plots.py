"""lossbench.analysis.plots: rows per regime, few lines a panel, one colour per loss, legends of what varies, and
curves that coincide named rather than hidden."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb

from lossbench.analysis import plots, runs
from lossbench.losses import registry

COMING = ("focal", "ldam", "logit_adjusted", "balanced_softmax", "poly1", "bce_clipped", "asl", "kd")


def group(label: str, **params) -> runs.Group:
    run = runs.Run(Path(f"/x/{label}"), {"status": "completed", "config": {}}, params)
    return runs.Group(label, [run])


def saturation_like() -> list[runs.Group]:
    regimes = [{"data.scale": 50.0, "model.head_bias": None, "trainer.precision": "fp32"},
               {"data.scale": 50.0, "model.head_bias": None, "trainer.precision": "fp16"},
               {"data.scale": 1.0, "model.head_bias": -100.0, "trainer.precision": "fp32"}]
    return [group(f"{i}-{loss}", **{**r, "loss.name": loss, "optim.lr": 0.01})
            for i, r in enumerate(regimes) for loss in ("bce", "bce_logits", "bce_manual", "nll")]


def test_every_loss_has_its_own_fixed_colour():
    names = list(dict.fromkeys([*registry.names(), *COMING]))  # COMING losses may be in LOSSES already
    colours = [plots.loss_color(n) for n in names]
    assert set(names) <= set(registry.colors())
    assert len({to_rgb(c) for c in colours}) == len(names)


def test_unknown_losses_get_the_same_fallback_colour_in_every_process():
    code = "from lossbench.analysis import plots; print(plots.loss_color('my_new_loss'), plots.loss_color('other'))"
    out = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={"PYTHONHASHSEED": str(seed), "PATH": ""}, cwd=Path(__file__).parents[1]).stdout
           for seed in (1, 2)}
    assert len(out) == 1
    a, b = out.pop().split()
    assert a in plots.FALLBACK_COLORS and a not in registry.colors().values()


def test_one_row_per_regime_lines_per_loss_and_legends_of_what_varies():
    groups = saturation_like()
    rows, title = plots.layout(groups)
    assert title == "loss"
    assert [r.title for r in rows] == ["data.scale=50, model.head_bias=null, trainer.precision=fp32",
                                       "data.scale=50, model.head_bias=null, trainer.precision=fp16",
                                       "data.scale=1, model.head_bias=-100, trainer.precision=fp32"]
    for r in rows:
        assert [ln.label for ln in r.lines] == ["bce", "bce_logits", "bce_manual", "nll"]  # no optim.lr: constant
        assert [ln.color for ln in r.lines] == [to_rgb(registry.colors()[n]) for n in ("bce", "bce_logits", "bce_manual", "nll")]
        assert len({str(ln.dash) for ln in r.lines}) == 4
    assert [str(ln.dash) for ln in rows[0].lines] == [str(ln.dash) for ln in rows[2].lines]  # the same in every row


def test_without_a_loss_axis_rows_follow_the_first_key_and_shades_tell_lines_apart():
    groups = [group(f"{r}-{pw}", **{"data.imbalance_ratio": r, "loss.name": "bce_logits", "loss.pos_weight": pw})
              for r in (5.0, 100.0) for pw in (None, "auto", "sqrt_auto")]
    rows, title = plots.layout(groups)
    assert title == "loss.pos_weight"
    assert [r.title for r in rows] == ["data.imbalance_ratio=5", "data.imbalance_ratio=100"]
    colours = [ln.color for ln in rows[0].lines]
    assert [ln.label for ln in rows[0].lines] == ["null", "auto", "sqrt_auto"]
    assert len(set(colours)) == 3 and colours == [ln.color for ln in rows[1].lines]
    base = np.array(to_rgb(registry.colors()["bce_logits"]))
    for c in map(np.array, colours):  # shades of bce_logits' orange: between white and it, or it and black
        toward_white = (c - base)[base < 1] / (1 - base)[base < 1]
        toward_black = c[base > 0] / base[base > 0]
        assert np.ptp(toward_white) < 1e-9 or np.ptp(toward_black) < 1e-9


def test_a_key_that_follows_the_loss_stays_on_its_line():
    groups = [group(n, **{"loss.name": n, "head": h}) for n, h in (("ce", "softmax"), ("bce_logits", "sigmoid"), ("bce", "softmax"))]
    rows, title = plots.layout(groups)
    assert len(rows) == 1 and title == "loss"
    assert [ln.label for ln in rows[0].lines] == ["ce (head=softmax)", "bce_logits (head=sigmoid)", "bce (head=softmax)"]


def test_a_study_axis_names_the_lines_and_what_it_sets_makes_no_rows():
    """long_tail-like: study.method sets the loss and its weights; methods sharing a loss are told apart."""
    methods = {"ce": ("ce", None), "ce_inverse": ("ce", "inverse"), "cb": ("ce", "effective"), "focal": ("focal", None)}
    groups = [group(f"{prof} {m}", **{"data.imbalance_profile": prof, "study.method": m, "loss.name": lo,
                                      "loss.class_weight": cw}) for prof in ("exp", "step") for m, (lo, cw) in methods.items()]
    rows, title = plots.layout(groups)
    assert title == "study.method" and [r.title for r in rows] == ["data.imbalance_profile=exp", "data.imbalance_profile=step"]
    assert [ln.label for ln in rows[0].lines] == ["ce (loss=ce)", "ce_inverse (loss=ce)", "cb (loss=ce)",
                                                  "focal (loss=focal)"]


def test_at_most_six_lines_a_panel_in_balanced_rows_each_with_the_baseline():
    groups = [group(str(a), **{"loss.name": "ce", "loss.label_smoothing": a}) for a in np.arange(7) / 20]
    rows, _ = plots.layout(groups)
    assert [len(r.lines) for r in rows] == [4, 4]
    assert [r.title for r in rows] == ["lines 2-4 of 7 beside line 1, 0", "lines 5-7 of 7 beside line 1, 0"]
    assert all(r.lines[0].label == "0" for r in rows)  # the first line (the baseline) in every panel
    assert len({ln.color for r in rows for ln in r.lines}) == 7  # shades run on across the rows


def curve(values) -> tuple[np.ndarray, np.ndarray]:
    return np.array([10, 20, 30]), np.array(values, dtype=float)


def test_coinciding_curves_share_a_legend_entry_instead_of_hiding():
    lines = [plots.Line(group(n, **{"loss.name": n}), n, (0, 0, 0), "-", "o") for n in ("bce", "bce_logits", "ce", "nll")]
    spans = {"val/auc": (0.5, 0.9, False), "val/nll": (0.3, 0.7, False)}
    means = [{"val/auc": curve([0.6, 0.8, 0.9]), "val/nll": curve([0.6, 0.4, 0.3])},
             {"val/auc": curve([0.6, 0.8, 0.9]), "val/nll": curve([0.6, 0.4, 0.3 + 1e-7])},  # ≈ bce
             {"val/auc": curve([0.55, 0.7, 0.85]), "val/nll": curve([0.7, 0.5, 0.4])},
             {"val/auc": curve([0.55, 0.7, 0.85]), "val/nll": curve([0.7, 0.5, 0.4])}]  # = ce, bit for bit
    entries = plots.legend_entries(lines, means, spans)
    assert entries == [([0, 1], "bce ≈ bce_logits, lines overlap"), ([2, 3], "ce = nll, lines overlap")]
    # Lines that meet in one panel only keep their own entries and are named in that panel.
    means[3] = {"val/auc": curve([0.55, 0.7, 0.85]), "val/nll": curve([0.7, 0.6, 0.5])}
    entries = plots.legend_entries(lines, means, spans)
    assert [label for _, label in entries] == ["bce ≈ bce_logits, lines overlap", "ce", "nll"]
    merged = {frozenset(m) for m, _ in entries}
    assert plots.panel_notes(lines, means, "val/auc", spans["val/auc"], merged) == ["ce = nll"]
    assert plots.panel_notes(lines, means, "val/nll", spans["val/nll"], merged) == []


@pytest.mark.parametrize("same", [True, False])
def test_plot_grid_writes_a_png_per_regime_row(tmp_path, same):
    groups = saturation_like()
    rng = np.random.default_rng(0)
    curves = []
    for i, _ in enumerate(groups):
        seeds = []
        for _seed in range(3):
            y = (np.linspace(0.6, 0.9, 5) if same and i % 4 < 2 else rng.uniform(0.5, 1, 5))
            seeds.append({"val/auc": dict(zip(range(10, 60, 10), y, strict=True)),
                         "val/nll": dict(zip(range(10, 60, 10), 100 * y if i == 8 else y, strict=True))})
        curves.append(seeds)
    path = tmp_path / "curves.png"
    assert plots.plot_grid(path, groups, curves, ("val/auc", "val/nll", "val/ece"), "test")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert not plots.plot_grid(tmp_path / "none.png", groups, curves, ("val/ece",), "test")
