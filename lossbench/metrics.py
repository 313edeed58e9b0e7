"""Validation metrics, computed once per evaluation: ranking metrics on the device, the rest on the host.

Every run is scored on the same scales whatever its loss:
- ``nll``: the exact negative log-likelihood of the head's probabilities, computed stably from logits.
  Binary: the Bernoulli NLL of the positive-class probability. C classes: the categorical NLL; a sigmoid
  (one-vs-rest) head's scores are normalised to sum to 1 first.
- ``auc`` (ROC-AUC; macro one-vs-rest for C classes), ``ap`` (average precision, macro), ``accuracy``,
  ``balanced_accuracy``, ``ece`` (15 equal-width bins of top-label confidence, Guo et al. 2017; scikit-learn
  has no ECE). Binary tasks also get ``recall`` and ``mean_prob`` (positive class, threshold 0.5), and all
  tasks ``mean_confidence`` (mean top-label probability).
A metric that is undefined on the split (one class present) is recorded as NaN.

ROC-AUC and AP are computed here, batched over classes on the device (:func:`ranking`), not by
scikit-learn's ``roc_auc_score``/``average_precision_score``: those validate and sort each class column
separately (20 sorts per 10-class evaluation) and took about as long as the forward pass over MNIST's 10k
validation images. The formulas are scikit-learn's (one threshold per distinct score, trapezoidal ROC,
step-wise AP), and tests check the results against scikit-learn's, ties included. Balanced accuracy and
recall are scikit-learn's.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score, recall_score


def probabilities(z: torch.Tensor, head: str) -> torch.Tensor:
    """(N, C) class probabilities from logits (float32). A sigmoid one-vs-rest head is normalised."""
    z = z.float()
    if head == "softmax":
        return torch.softmax(z, dim=1)
    if z.shape[1] == 1:
        p1 = torch.sigmoid(z[:, 0])
        return torch.stack([1 - p1, p1], dim=1)
    s = torch.sigmoid(z)
    return s / s.sum(dim=1, keepdim=True)


def scores(z: torch.Tensor, head: str) -> torch.Tensor:
    """Ranking scores for AUC/AP: the positive-class probability (N,) for binary tasks, else (N, C)
    per-class probabilities (raw sigmoids for one-vs-rest, which need not sum to 1)."""
    z = z.float()
    if head == "sigmoid":
        return torch.sigmoid(z[:, 0]) if z.shape[1] == 1 else torch.sigmoid(z)
    p = torch.softmax(z, dim=1)
    return p[:, 1] if p.shape[1] == 2 else p


def nll(z: torch.Tensor, y: torch.Tensor, head: str) -> torch.Tensor:
    """Exact mean NLL of the head's probabilities, from logits (float32)."""
    z = z.float()
    if head == "softmax":
        return F.cross_entropy(z, y)
    if z.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(z[:, 0], y.float())
    log_s = F.logsigmoid(z)
    return (torch.logsumexp(log_s, dim=1) - log_s.gather(1, y[:, None]).squeeze(1)).mean()


def ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error: sum over equal-width bins of |accuracy - confidence| * bin share."""
    if not np.isfinite(confidence).all():
        return math.nan
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        m = bins == b
        total += m.mean() * abs(correct[m].mean() - confidence[m].mean())
    return float(total)


def _safe(fn, *args, **kwargs) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            v = float(fn(*args, **kwargs))
        except ValueError:  # one class present (older scikit-learn raises instead of returning NaN)
            return math.nan
    return v


def ranking(s: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ROC-AUC and average precision of each column of scores s (N, K) against binary labels pos (N, K),
    as scikit-learn's ``roc_auc_score`` and ``average_precision_score`` compute them for one column.

    Thresholds are the distinct scores, in decreasing order; at the k-th, TP_k and FP_k count the samples
    scored at or above it (TP_0 = FP_0 = 0). With P = TP_K and N = FP_K:
        AUC = sum_k (FP_k - FP_{k-1}) (TP_k + TP_{k-1}) / 2 / (P N)   (trapezoids: a tie counts one half)
        AP  = sum_k (TP_k - TP_{k-1}) / P * TP_k / (TP_k + FP_k)       (recall step times precision)
    In float64 on s's device; returns two (K,) tensors, NaN for a column with one class or a non-finite score.
    """
    s, pos = s.double().T.contiguous(), pos.double().T  # (K, N): each class's scores sorted in one row
    s_sorted, order = torch.sort(s, dim=1, descending=True)
    y = pos.gather(1, order)
    tp, fp = y.cumsum(1), (1 - y).cumsum(1)
    last = torch.ones_like(y, dtype=torch.bool)  # the last sample of each run of equal scores: a threshold
    last[:, :-1] = s_sorted[:, :-1] != s_sorted[:, 1:]
    zero = torch.zeros_like(tp[:, :1])
    # TP and FP at the previous threshold: the running maximum of the counts at thresholds so far (they only grow)
    tp_prev = torch.cat([zero, torch.where(last, tp, 0).cummax(1).values[:, :-1]], dim=1)
    fp_prev = torch.cat([zero, torch.where(last, fp, 0).cummax(1).values[:, :-1]], dim=1)
    n_pos, n_neg = tp[:, -1], fp[:, -1]
    auc = torch.where(last, (fp - fp_prev) * (tp + tp_prev), 0).sum(1) / (2 * n_pos * n_neg)
    ap = torch.where(last, (tp - tp_prev) * tp / (tp + fp), 0).sum(1) / n_pos
    defined = (n_pos > 0) & (n_neg > 0) & torch.isfinite(s).all(dim=1)
    return torch.where(defined, auc, math.nan), torch.where(defined, ap, math.nan)


def evaluate(z: torch.Tensor, y: torch.Tensor, head: str, n_classes: int) -> dict[str, float]:
    """All validation metrics except the configured loss, from logits (N, K) and labels (N,)."""
    probs = probabilities(z, head)
    s = scores(z, head)
    if n_classes == 2:
        auc, ap = ranking(s[:, None], y[:, None] == 1)
    else:  # one-vs-rest, macro: the mean over the classes for which the metric is defined
        auc, ap = ranking(s, F.one_hot(y, n_classes) == 1)
    macro = torch.stack([auc, ap]).nanmean(dim=1)  # all-NaN (no class defined) gives NaN
    out = dict(zip(("nll", "auc", "ap"), torch.cat([nll(z, y, head).double().reshape(1), macro]).tolist(), strict=True))
    probs_np = probs.cpu().numpy().astype(np.float64)
    y_np = y.cpu().numpy()
    pred = probs_np.argmax(axis=1)
    conf = probs_np.max(axis=1)
    out["accuracy"] = float((pred == y_np).mean())
    out["balanced_accuracy"] = _safe(balanced_accuracy_score, y_np, pred)
    out["ece"] = ece(conf, (pred == y_np).astype(np.float64))
    out["mean_confidence"] = float(conf.mean())
    if n_classes == 2:
        out["recall"] = _safe(recall_score, y_np, pred, zero_division=0)
        out["mean_prob"] = float(probs_np[:, 1].mean())
    return out


def posthoc(z_adjusted: torch.Tensor | None, y: torch.Tensor, head: str, n_classes: int) -> dict[str, float]:
    """The metrics of post-hoc logit-adjusted logits z - tau log pi (Menon et al. 2021; from
    ``Objective.posthoc_logits``) as ``posthoc/<metric>``, reported next to the plain ones; {} without them."""
    if z_adjusted is None:
        return {}
    return {f"posthoc/{k}": v for k, v in evaluate(z_adjusted, y, head, n_classes).items()}


def per_class_recall(z: torch.Tensor, y: torch.Tensor, head: str, n_classes: int) -> list[float]:
    pred = probabilities(z, head).argmax(dim=1).cpu()
    y = y.cpu()
    return [float((pred[y == c] == c).float().mean()) if (y == c).any() else math.nan for c in range(n_classes)]
