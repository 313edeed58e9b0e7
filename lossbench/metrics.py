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

Multi-label tasks (labels y: multi-hot (N, C)) are scored per label by :func:`evaluate_multilabel`, on the
per-label probabilities p (sigmoid head: sigmoid(z); softmax head, the "CE for multi-label" mistake:
softmax(z), taken as each label's probability); decisions at p > 0.5.

Every metric is computed here, on the device, for all the runs of a stack at once (:func:`evaluate_many`; a
run alone is a stack of one), not by scikit-learn's functions: those validate and sort each class column and
each run separately (20 sorts per 10-class evaluation of one run) and took about as long as the forward pass
over MNIST's 10k validation images, and dozens of times longer than the forward pass of a small stacked model.
The formulas are scikit-learn's (ROC-AUC and AP: one threshold per distinct score, trapezoidal ROC, step-wise
AP; balanced accuracy: the mean recall of the classes present; recall with zero_division=0), and
tests/test_metrics.py checks each result against scikit-learn's, ties and absent classes included.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lossbench.losses import head_probabilities, log1mexp


def probabilities(z: torch.Tensor, head: str) -> torch.Tensor:
    """(N, C) class probabilities from logits (float32). A sigmoid one-vs-rest head is normalised."""
    p = head_probabilities(z.float(), head)
    if head == "softmax":
        return p
    if p.shape[1] == 1:
        return torch.stack([1 - p[:, 0], p[:, 0]], dim=1)
    return p / p.sum(dim=1, keepdim=True)


def scores(z: torch.Tensor, head: str) -> torch.Tensor:
    """Ranking scores for AUC/AP: the positive-class probability (N,) for binary tasks, else (N, C)
    per-class probabilities (raw sigmoids for one-vs-rest, which need not sum to 1)."""
    p = head_probabilities(z.float(), head)
    if head == "sigmoid":
        return p[:, 0] if p.shape[1] == 1 else p
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


ECE_BINS = 15  # equal-width bins of top-label confidence (Guo et al. 2017)


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
    return evaluate_many(z[None], y[None], head, n_classes)[0]


def evaluate_many(z: torch.Tensor, y: torch.Tensor, head: str, n_classes: int) -> list[dict[str, float]]:
    """The metrics of M runs at once (the members of a stack, scored on their own validation labels): logits
    (M, N, K), labels (M, N). One set of device ops and one host read for all of them.

    Accuracy, balanced accuracy (the mean recall of the classes present, as scikit-learn's
    balanced_accuracy_score), recall of the positive class (scikit-learn's recall_score, zero_division=0) and
    ECE are counted here on the device rather than per run on the host: for the stacks of dozens of small runs a
    study trains, scikit-learn's per-call validation cost more than the forward pass. tests/test_metrics.py
    checks each against scikit-learn."""
    if y.dim() == 3:  # multi-hot labels (M, N, C)
        return [evaluate_multilabel(z[i], y[i], head) for i in range(len(y))]
    m, n = y.shape
    zf = z.float()
    probs = probabilities(zf.reshape(m * n, -1), head).view(m, n, -1)  # (M, N, C)
    s = scores(zf.reshape(m * n, -1), head)
    onehot = F.one_hot(y, n_classes).bool()  # (M, N, C)
    if n_classes == 2:
        auc, ap = ranking(s.view(m, n).T, (y == 1).T)  # one column per run
    else:  # one-vs-rest, macro: the mean over the classes for which the metric is defined
        auc, ap = ranking(s.view(m, n, -1).transpose(0, 1).reshape(n, m * n_classes),
                          onehot.transpose(0, 1).reshape(n, m * n_classes))
        auc, ap = auc.view(m, n_classes).nanmean(dim=1), ap.view(m, n_classes).nanmean(dim=1)
    nlls = torch.stack([nll(zf[i], y[i], head) for i in range(m)]).double()
    conf, pred = probs.max(dim=2)
    correct = (pred == y).double()
    counts = onehot.sum(dim=1).double()  # (M, C)
    hits = (onehot & (pred == y)[..., None]).sum(dim=1).double()
    present = counts > 0
    balanced = torch.where(present, hits / counts.clamp(min=1), 0).sum(dim=1) / present.sum(dim=1)
    bins = (conf.double() * ECE_BINS).long().clamp(0, ECE_BINS - 1)  # Guo et al.: equal-width bins
    gap = torch.zeros(m, ECE_BINS, dtype=torch.float64, device=z.device)
    gap.scatter_add_(1, bins, correct - conf.double())  # per bin: sum(correct) - sum(confidence)
    ece = torch.where(torch.isfinite(conf).all(dim=1), gap.abs().sum(dim=1) / n, math.nan)
    cols = [nlls, auc.double(), ap.double(), correct.mean(dim=1), balanced, ece, conf.double().mean(dim=1)]
    names = ["nll", "auc", "ap", "accuracy", "balanced_accuracy", "ece", "mean_confidence"]
    if n_classes == 2:
        cols += [torch.where(counts[:, 1] > 0, hits[:, 1] / counts[:, 1].clamp(min=1), 0.0), probs[..., 1].double().mean(1)]
        names += ["recall", "mean_prob"]
    rows = torch.stack(cols, dim=1).tolist()
    return [dict(zip(names, row, strict=True)) for row in rows]


def posthoc(z_adjusted: torch.Tensor | None, y: torch.Tensor, head: str, n_classes: int) -> dict[str, float]:
    """The metrics of post-hoc logit-adjusted logits z - tau log pi (Menon et al. 2021; from
    ``Objective.posthoc_logits``) as ``posthoc/<metric>``, reported next to the plain ones; {} without them."""
    if z_adjusted is None:
        return {}
    return {f"posthoc/{k}": v for k, v in evaluate(z_adjusted, y, head, n_classes).items()}


def per_class_recall(z: torch.Tensor, y: torch.Tensor, head: str, n_classes: int) -> list[float]:
    """Recall of each class (multi-label: of each label at p > 0.5); NaN for a class absent from the split."""
    if y.dim() == 2:
        pos, pred = y.cpu() == 1, label_probabilities(z, head).cpu() > 0.5
        hits, n_pos = (pos & pred).sum(dim=0), pos.sum(dim=0)
        return [float(h / n) if n else math.nan for h, n in zip(hits.tolist(), n_pos.tolist(), strict=True)]
    pred = probabilities(z, head).argmax(dim=1).cpu()
    y = y.cpu()
    return [float((pred[y == c] == c).float().mean()) if (y == c).any() else math.nan for c in range(n_classes)]


# --- multi-label ---------------------------------------------------------------------------------------------
def label_probabilities(z: torch.Tensor, head: str) -> torch.Tensor:
    """Per-label probabilities (N, C) of a multi-label model, float32: sigmoid(z), or softmax(z) for a softmax
    head (which cannot give two labels more than 0.5 each: the point of comparing it)."""
    return head_probabilities(z.float(), head)


def bernoulli_nll(z: torch.Tensor, y: torch.Tensor, head: str) -> torch.Tensor:
    """Mean over the N*C (sample, label) pairs of -[y log p + (1-y) log(1-p)], stably from logits (float32)."""
    z, y = z.float(), y.float()
    if head == "sigmoid":
        return F.binary_cross_entropy_with_logits(z, y)
    log_p = F.log_softmax(z, dim=1)
    return -torch.where(y == 1, log_p, log1mexp(log_p)).mean()  # log1mexp(log p) = log(1 - p), accurately


def lrap(s: torch.Tensor, pos: torch.Tensor, chunk: int = 1 << 22) -> torch.Tensor:
    """Label ranking average precision, as scikit-learn's ``label_ranking_average_precision_score``: per sample,
    the mean over its relevant labels j of |{relevant k: s_k >= s_j}| / |{k: s_k >= s_j}| (ties count as
    ranked above), then the mean over samples; a sample with no relevant label, or with all labels relevant,
    scores 1. On s's device, in chunks of samples (a chunk holds an (n, C, C) comparison).
    scikit-learn's loops over samples on the host (about 1 s per 10000 x 10 evaluation here)."""
    n, c = s.shape
    step, out = max(1, chunk // (c * c)), []
    for i in range(0, n, step):
        si, pi = s[i : i + step].double(), pos[i : i + step].bool()
        above = si[:, None, :] >= si[:, :, None]  # [b, j, k]: label k scored at or above label j
        rank = above.sum(dim=2).double()
        rank_pos = (above & pi[:, None, :]).sum(dim=2).double()
        n_pos = pi.sum(dim=1)
        per = torch.where(pi, rank_pos / rank, 0.0).sum(dim=1) / n_pos.clamp(min=1)
        out.append(torch.where((n_pos == 0) | (n_pos == c), 1.0, per))
    return torch.cat(out).mean()


def evaluate_multilabel(z: torch.Tensor, y: torch.Tensor, head: str) -> dict[str, float]:
    """Validation metrics of a multi-label model from logits (N, C) and multi-hot labels (N, C), with
    scikit-learn's definitions (tests/test_multilabel.py checks each against scikit-learn):

    - ``auc`` / ``ap``: macro ROC-AUC and macro average precision (``ap`` is the mAP), over the labels with
      both a positive and a negative sample in the split (the others are skipped; summary.json's data section
      counts them); ``auc_micro``: ROC-AUC of all (sample, label) pairs pooled.
    - at p > 0.5: ``accuracy`` = subset accuracy (all C labels right, as ``accuracy_score`` on indicator
      matrices), ``hamming_loss`` (share of wrong labels), ``f1_micro``, ``f1_macro`` (over the labels with a
      positive sample; zero_division=0), ``balanced_accuracy`` (mean over labels with both classes of
      (TPR + TNR) / 2), ``labels_per_sample`` (mean number of labels predicted; compare with the data's).
    - ``lrap``: label ranking average precision (:func:`lrap`).
    - calibration: ``nll`` = mean per-pair Bernoulli NLL (:func:`bernoulli_nll`); ``ece`` = the binary ECE of
      all (sample, label) decisions pooled (confidence max(p, 1-p), correct = decision equals the label);
      ``mean_confidence`` = mean max(p, 1-p).
    All on the device, read in one host transfer, as for single-label runs.
    """
    p = label_probabilities(z, head)
    pos = y == 1
    auc, ap = ranking(p, pos)
    auc_micro, _ = ranking(p.reshape(-1, 1), pos.reshape(-1, 1))
    pred = p > 0.5
    tp, fp = (pred & pos).sum(0).double(), (pred & ~pos).sum(0).double()
    fn, tn = (~pred & pos).sum(0).double(), (~pred & ~pos).sum(0).double()
    with_pos, both = pos.any(0), pos.any(0) & (~pos).any(0)
    f1 = torch.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    micro_den = 2 * tp.sum() + fp.sum() + fn.sum()
    balanced = (tp / (tp + fn) + tn / (tn + fp)) / 2
    pd = p.double().reshape(-1)
    conf, correct = torch.maximum(pd, 1 - pd), (pred == pos).reshape(-1).double()
    bins = (conf * ECE_BINS).long().clamp(0, ECE_BINS - 1)
    gap = torch.zeros(ECE_BINS, dtype=torch.float64, device=z.device).scatter_add_(0, bins, correct - conf)
    finite = torch.isfinite(p).all()
    values = {
        "auc": auc.nanmean(), "ap": ap.nanmean(), "auc_micro": auc_micro[0],
        "lrap": torch.where(finite, lrap(p, pos), math.nan), "nll": bernoulli_nll(z, y, head).double(),
        "accuracy": (pred == pos).all(dim=1).double().mean(), "hamming_loss": (pred != pos).double().mean(),
        "f1_micro": torch.where(micro_den > 0, 2 * tp.sum() / micro_den, 0.0),
        "f1_macro": (f1 * with_pos).sum() / with_pos.sum(),  # 0/0 = NaN when no label has a positive
        "balanced_accuracy": torch.where(both, balanced, 0.0).sum() / both.sum(),
        "labels_per_sample": pred.sum(dim=1).double().mean(),
        "ece": torch.where(finite, gap.abs().sum() / len(conf), math.nan), "mean_confidence": conf.mean(),
    }
    return dict(zip(values, torch.stack([v.double() for v in values.values()]).tolist(), strict=True))
