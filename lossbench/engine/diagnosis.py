"""What a finished run's numbers mean for the user: a diagnosis beside its status.

The status says how a run ended (completed, diverged, failed, interrupted). A run can complete every step and
still have learned nothing: with Sigmoid + BCELoss on large logits every probability rounds to exactly 0 or 1,
BCELoss clamps the log at -100, the gradient of every wrong sample is exactly 0, and the model is stuck at
chance for good (docs/numerics.md#stalled-runs). That run is ``stalled``:

  stalled   at the end of training, at least STALL_SATURATED of the predicted probabilities are exactly 0 or 1,
            at least STALL_DEAD of the samples are wrong with a gradient of exactly 0, and the validation
            ranking is at chance (|val/auc - 0.5| <= CHANCE_MARGIN).

  collapsed at the end of training the validation ranking is at chance (|val/auc - 0.5| <= CHANCE_MARGIN) after
            the run's best evaluation was at least COLLAPSE_FROM above it: it learned, then a step blew the weights
            up (a learning rate at the edge of stability; largest |logit| 3e18 in the case that found it) and the
            model now predicts one constant. Its best point is still recorded (``best``, test at val-best).

All three signs of a stall must hold. Saturation alone is what a confident healthy model shows (a correct probability of 1.0);
zero-gradient wrong samples with an AUC above chance is a run that learned and left some samples behind (the
numerics columns show it). Chance alone is a hard or unlearnable task. Checked against every run of the ten
studies (tests/test_diagnosis.py): exactly the Sigmoid + BCELoss (and clipped BCE) runs at inputs x50 or a
head bias of -100 that sit at AUC 0.500 are flagged.

The numbers come from the monitors' last window (``numerics.last``, the steps since the previous log point),
or from the whole-run means for summaries written before that was recorded.
"""

from __future__ import annotations

import math
from typing import Any

STALL_SATURATED = 0.5
STALL_DEAD = 0.05
CHANCE_MARGIN = 0.02
COLLAPSE_FROM = 0.1  # a best val/auc this far above chance, then chance at the end: collapsed
DOCS = "docs/numerics.md#stalled-runs"
# What to use instead, for the losses whose stall is their own design flaw.
FIX = {
    "bce": "use loss=bce_logits (BCEWithLogitsLoss on raw logits) or loss=ce on 2 logits",
    "bce_manual": "use loss=bce_logits (BCEWithLogitsLoss on raw logits)",
    "bce_clipped": "use loss=bce_logits (BCEWithLogitsLoss on raw logits): clipping also zeroes the gradient",
    "nll_manual": "use loss=ce (CrossEntropyLoss: log-softmax computed stably)",
}
DEFAULT_FIX = "lower the learning rate, standardise the inputs, or start the output bias near 0"


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def evidence(summary: dict) -> dict[str, float | None]:
    """The numbers a diagnosis reads: saturated and dead fractions at the end of training, the final val/auc."""
    n = summary.get("numerics") if isinstance(summary.get("numerics"), dict) else {}
    last = n.get("last") if isinstance(n.get("last"), dict) else {}
    final = summary.get("final") if isinstance(summary.get("final"), dict) else {}
    pick = lambda key: _number(last.get(key)) if _number(last.get(key)) is not None else _number(n.get(f"{key}_mean"))  # noqa: E731
    return {"saturated_frac": pick("saturated_frac"), "dead_frac": pick("dead_frac"),
            "val/auc": _number(final.get("val/auc"))}


def diagnose(summary: dict) -> dict | None:
    """The run's diagnosis ({"name", "message", "evidence", "see"}), or None when nothing is wrong. Only runs that
    trained to their end are diagnosed: 'diverged' is already a status, and an unfinished run is not judged."""
    if summary.get("status") != "completed":
        return None
    e = evidence(summary)
    sat, dead, auc = e["saturated_frac"], e["dead_frac"], e["val/auc"]
    if auc is None:
        return None
    stalled = sat is not None and dead is not None and sat >= STALL_SATURATED and dead >= STALL_DEAD
    if stalled and abs(auc - 0.5) <= CHANCE_MARGIN:
        loss = ((summary.get("config") or {}).get("loss") or {}).get("name")
        message = (f"stalled: {sat:.0%} of probabilities are exactly 0 or 1 and {dead:.0%} of samples are wrong "
                   f"with a gradient of exactly 0, val/auc {auc:.3f} (chance 0.5); it cannot recover. "
                   f"Fix: {FIX.get(loss, DEFAULT_FIX)}. See {DOCS}")
        short = f"STALLED ({sat:.0%} saturated, {dead:.0%} dead, val/auc {auc:.3f})"
        return {"name": "stalled", "short": short, "message": message, "evidence": e, "see": DOCS}
    return _collapsed(summary, auc, e)


def _collapsed(summary: dict, auc: float, e: dict) -> dict | None:
    """The 'collapsed' diagnosis: val/auc at chance at the end after a best at least COLLAPSE_FROM above it."""
    best = _number((summary.get("best") if isinstance(summary.get("best"), dict) else {}).get("val/auc"))
    if abs(auc - 0.5) > CHANCE_MARGIN or best is None or best - 0.5 < COLLAPSE_FROM:
        return None
    history = summary.get("history") if isinstance(summary.get("history"), list) else []
    step = next((h.get("step") for h in history if isinstance(h, dict) and h.get("val/auc") == best), None)
    n = summary.get("numerics") if isinstance(summary.get("numerics"), dict) else {}
    logit = _number(n.get("max_abs_logit"))
    at = f" at step {step}" if step is not None else ""
    message = (f"collapsed: val/auc {auc:.3f} at the end (chance 0.5) after {best:.3f}{at}"
               + (f"; the largest |logit| reached {logit:.3g}" if logit is not None else "")
               + ": a step blew the weights up and the model now predicts one constant. Its best point is "
               f"recorded (best, test at val-best). Fix: {DEFAULT_FIX}, or clip the gradient norm.")
    return {"name": "collapsed", "short": f"COLLAPSED (val/auc {best:.3f}{at} -> {auc:.3f})", "message": message,
            "evidence": {**e, "best val/auc": best, "best step": step, "max_abs_logit": logit}, "see": DOCS}

def name(summary: dict) -> str:
    """The diagnosis's name as the report shows it ('' for none). A summary written before diagnoses were
    recorded (no "diagnosis" key) is diagnosed from what it holds."""
    d = summary.get("diagnosis") if "diagnosis" in summary else diagnose(summary)
    return str(d.get("name", "")) if isinstance(d, dict) else ""


def short(summary: dict) -> str:
    """', STALLED (100% saturated, 49% dead, val/auc 0.500)' for a run line ('' for none)."""
    d = summary.get("diagnosis")
    return f", {d['short']}" if isinstance(d, dict) and isinstance(d.get("short"), str) else ""
