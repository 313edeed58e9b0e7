"""Validation metrics: scikit-learn where it has them, computed once per evaluation on the host.

Every run is scored on the same scales whatever its loss:
- ``nll``: the exact negative log-likelihood of the head's probabilities, computed stably from logits.
  Binary: the Bernoulli NLL of the positive-class probability. C classes: the categorical NLL; a sigmoid
  (one-vs-rest) head's scores are normalised to sum to 1 first.
- ``auc`` (ROC-AUC; macro one-vs-rest for C classes), ``ap`` (average precision, macro), ``accuracy``,
  ``balanced_accuracy``, ``ece`` (15 equal-width bins of top-label confidence, Guo et al. 2017; scikit-learn
  has no ECE). Binary tasks also get ``recall`` and ``mean_prob`` (positive class, threshold 0.5), and all
  tasks ``mean_confidence`` (mean top-label probability).
A metric that is undefined on the split (one class present) is recorded as NaN.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    recall_score,
    roc_auc_score,
)


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


def evaluate(z: torch.Tensor, y: torch.Tensor, head: str, n_classes: int) -> dict[str, float]:
    """All validation metrics except the configured loss, from logits (N, K) and labels (N,)."""
    probs = probabilities(z, head)
    out = {"nll": float(nll(z, y, head))}
    probs_np = probs.cpu().numpy().astype(np.float64)
    s = scores(z, head).cpu().numpy().astype(np.float64)
    y_np = y.cpu().numpy()
    pred = probs_np.argmax(axis=1)
    conf = probs_np.max(axis=1)
    if n_classes == 2:
        out["auc"] = _safe(roc_auc_score, y_np, s)
        out["ap"] = _safe(average_precision_score, y_np, s)
    else:
        onehot = np.eye(n_classes)[y_np]
        present = onehot.any(axis=0) & (~onehot.all(axis=0))  # columns with both classes
        out["auc"] = _safe(roc_auc_score, onehot[:, present], s[:, present], average="macro") if present.any() else math.nan
        out["ap"] = _safe(average_precision_score, onehot[:, present], s[:, present], average="macro") if present.any() else math.nan
    out["accuracy"] = float((pred == y_np).mean())
    out["balanced_accuracy"] = _safe(balanced_accuracy_score, y_np, pred)
    out["ece"] = ece(conf, (pred == y_np).astype(np.float64))
    out["mean_confidence"] = float(conf.mean())
    if n_classes == 2:
        out["recall"] = _safe(recall_score, y_np, pred, zero_division=0)
        out["mean_prob"] = float(probs_np[:, 1].mean())
    return out


def per_class_recall(z: torch.Tensor, y: torch.Tensor, head: str, n_classes: int) -> list[float]:
    pred = probabilities(z, head).argmax(dim=1).cpu()
    y = y.cpu()
    return [float((pred[y == c] == c).float().mean()) if (y == c).any() else math.nan for c in range(n_classes)]
