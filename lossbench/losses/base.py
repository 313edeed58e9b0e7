r"""What every loss shares: :class:`Objective`, the base (head, reduction, class and positive weights, targets,
and the methods the monitors and metrics call), and the numerics helpers.

Notation: z are the model's raw logits, shape (N, K); y are integer class labels, shape (N,); t are float
targets of z's shape (one-hot for K = C outputs, y itself for one binary output), smoothed when
``label_smoothing`` = a > 0; p = activation(z).

Shapes: sigmoid losses take z and t of shape (N, K) (K = 1 for binary, C for one-vs-rest); softmax losses take z
of shape (N, C) and y of shape (N,) (long). All return a scalar.

Multi-label tasks (``multilabel=True``): y is multi-hot (N, C) (float) and K = C; the sigmoid losses train each
label independently (t = y). Ignored labels (``ignore_index``, from data.unlabeled_frac; ``partial=True``):
softmax losses leave them to CrossEntropyLoss / NLLLoss; the sigmoid losses mask their terms and 'mean' divides
by the labelled terms (:meth:`Objective._reduce`).

Weights (lossbench.losses.factory.weights computes them from the training split):
- ``pos_weight`` (sigmoid losses, shape (K,)): multiplies the positive term t log p, as BCEWithLogitsLoss does;
  'mean' still divides by N*K.
- ``class_weight`` (shape (C,)): softmax losses pass it as CrossEntropyLoss/NLLLoss ``weight``, whose 'mean'
  divides by the sum of the target classes' weights; sigmoid losses multiply each sample's terms by the weight of
  its class and divide by N*K.
- ``label_smoothing`` a: CrossEntropyLoss's own for ce; t = (1-a) t + a/2 for sigmoid losses and
  (1-a) t + a/C for BCE on softmax probabilities. (NLLLoss has none.)

:meth:`Objective.exact` recomputes the same objective stably from z in float32: the difference between what a
loss reports and this is ``numerics/loss_gap`` (what the BCELoss clamp hides, or the inf that a hand-written log
produces).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lossbench.errors import ConfigError
from lossbench.losses.registry import HEADS, n_outputs

CLAMP = -100.0  # BCELoss's floor on each log term
REDUCTIONS = ("mean", "sum")
# buffers of the submodules that losses held before they called torch.nn.functional (checkpoints written then
# carry them): copies of pos_weight and class_weight, dropped on load
_LEGACY_BUFFERS = ("bce_logits.pos_weight", "nll.weight", "ce.weight")


def head_probabilities(z: torch.Tensor, head: str) -> torch.Tensor:
    """The head's probabilities, in z's dtype: sigmoid(z) per output, or softmax(z) over the outputs."""
    return torch.sigmoid(z) if head == "sigmoid" else torch.softmax(z, dim=1)


def log1m_softmax(z: torch.Tensor) -> torch.Tensor:
    """log(1 - softmax(z)_c) for every c, (N, C): logsumexp of the other logits minus logsumexp of all. Finite
    where softmax(z)_c rounds to 1 (log1mexp of log_softmax would give -inf there)."""
    c = z.shape[1]
    others = z.unsqueeze(1).expand(-1, c, -1).masked_fill(torch.eye(c, dtype=torch.bool, device=z.device), -math.inf)
    return torch.logsumexp(others, dim=2) - torch.logsumexp(z, dim=1, keepdim=True)


def log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a <= 0, accurate everywhere (Mächler 2012)."""
    return torch.where(a > -0.6931471805599453, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


def log_prior(counts: torch.Tensor | None, key: str) -> torch.Tensor:
    """log pi_c = log(n_c / N) of the training split (float32, shape (C,)); every class must be present."""
    if counts is None or (counts == 0).any():
        raise ConfigError(f"{key} needs the training class counts with every class present: counts "
                          f"{None if counts is None else counts.tolist()}.")
    counts = counts.double()
    return (counts / counts.sum()).log().float()


def normalised(y: torch.Tensor) -> torch.Tensor:
    """A multi-hot target (N, C) as a distribution: y / (number of labels); a sample without labels stays 0
    (its CE term is 0)."""
    return y / y.sum(dim=1, keepdim=True).clamp(min=1)


def softmax_reduce(terms: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """CrossEntropyLoss's reduction of per-sample terms (N,) that already carry their class weight w_y."""
    if reduction == "sum":
        return terms.sum()
    return terms.mean() if w is None else terms.sum() / w[y].sum().to(terms.dtype)


class Objective(nn.Module):
    r"""The base of every lossbench loss: ``forward(z, y)`` is the training loss, as a user would write it.

    Args:
        head: ``sigmoid`` (one logit per output) or ``softmax`` (one logit per class).
        n_classes: C, the task's classes (labels on a multi-label task).
        pos_weight: (K,) multiplier of the positive terms of a sigmoid loss, or None.
        class_weight: (C,) weight of each class, or None.
        label_smoothing: a in [0, 1).
        reduction: ``mean`` | ``sum``.
        ignore_index: the label of an unlabelled sample (data.unlabeled_frac).
        multilabel: y is multi-hot (N, C).
        partial: some training labels are ``ignore_index``; the sigmoid losses mask their terms.
        posthoc_tau: also evaluate argmax(z - tau log pi) (:meth:`posthoc_logits`); needs ``counts``.
        counts: (C,) the training split's labelled class counts (for the class prior).

    Subclasses write ``forward`` and, where the reported loss is not computed stably, ``exact``; the monitors call
    ``probs``, ``wrong``, ``exact`` and, when ``has_clamp``, ``clamped``.
    """

    has_clamp = False  # numerics/clamped_frac counts this loss's clamp or clip (:meth:`clamped`)

    def __init__(self, head: str = "sigmoid", n_classes: int = 2, *, pos_weight: torch.Tensor | None = None,
                 class_weight: torch.Tensor | None = None, label_smoothing: float = 0.0, reduction: str = "mean",
                 ignore_index: int = -100, multilabel: bool = False, partial: bool = False,
                 posthoc_tau: float | None = None, counts: torch.Tensor | None = None):
        super().__init__()
        if head not in HEADS or reduction not in REDUCTIONS or not 0 <= label_smoothing < 1 or n_classes < 2:
            raise ValueError(f"head must be one of {HEADS}, reduction one of {REDUCTIONS}, label_smoothing in "
                             f"[0, 1), n_classes >= 2; got {head!r}, {reduction!r}, {label_smoothing}, {n_classes}")
        self.name = type(self).__name__  # lossbench.losses.build sets the registered name
        self.head, self.n_classes = head, n_classes
        self.multilabel, self.partial = multilabel, partial
        self.k = n_outputs(head, n_classes, multilabel)
        self.smoothing = float(label_smoothing)
        self.reduction = reduction
        self.ignore_index = int(ignore_index)
        self.register_buffer("pos_weight", pos_weight)
        self.register_buffer("class_weight", class_weight)
        self.posthoc_tau = None if posthoc_tau is None else float(posthoc_tau)
        prior = None if posthoc_tau is None else log_prior(counts, "loss.posthoc_tau")
        self.register_buffer("log_prior", prior)
        self._register_load_state_dict_pre_hook(_drop_legacy_buffers)

    # --- targets and weights ---------------------------------------------------------------------------
    def targets(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Float targets t of z's shape for the BCE family (smoothed): one-hot of class indices y (N,), y itself
        for one binary output, the multi-hot y (N, C) of a multi-label task. An ignored label gives t = 0
        there; :meth:`_reduce` masks its terms out."""
        if self.partial:
            y = torch.where(y == self.ignore_index, 0, y)
        if self.multilabel:
            t = y.to(dtype)
        else:
            t = y.unsqueeze(1).to(dtype) if self.k == 1 else F.one_hot(y, self.n_classes).to(dtype)
        if self.smoothing > 0:
            t = t * (1 - self.smoothing) + self.smoothing / (2 if self.head == "sigmoid" else self.n_classes)
        return t

    def labelled(self, y: torch.Tensor) -> torch.Tensor:
        """Which terms have a label (bool, broadcastable to z's shape): (N, C) for multi-label, else (N, 1)."""
        keep = y != self.ignore_index
        return keep if self.multilabel else keep.unsqueeze(1)

    def _reduce(self, terms: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Weight and reduce per-element terms (N, K). With ignored labels (partial), their terms are dropped
        and 'mean' divides by the number of labelled terms (BCEWithLogitsLoss's 'mean' divides by the number
        of terms, CrossEntropyLoss's by the labelled samples: the same rule, minus the ignored); a batch
        with no label gives NaN, as CrossEntropyLoss does."""
        if self.class_weight is not None:
            cls = torch.where(y == self.ignore_index, 0, y) if self.partial else y
            terms = terms * self.class_weight[cls].unsqueeze(1).to(terms.dtype)
        if self.partial:
            keep = self.labelled(y).expand_as(terms)
            terms = torch.where(keep, terms, 0)  # where, not *: an ignored term's inf/NaN must not leak
            return terms.sum() / keep.sum() if self.reduction == "mean" else terms.sum()
        return terms.mean() if self.reduction == "mean" else terms.sum()

    # --- what the monitors and metrics need ----------------------------------------------------------------
    def probs(self, z: torch.Tensor) -> torch.Tensor:
        """The head's probabilities, in z's dtype (for saturation counts)."""
        return head_probabilities(z, self.head)

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        return (z[:, 0] > 0).long() if self.k == 1 else z.argmax(dim=1)

    def wrong(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per sample (bool, (N,)): is the prediction wrong? (numerics/dead_frac counts the dead among them)
        Multi-label: is any labelled label wrong at p > 0.5. Probability targets: is the prediction not their
        most likely class. A sample without label is never wrong."""
        if self.multilabel:
            wrong = (self.probs(z) > 0.5) != (y == 1)
            return (wrong & (y != self.ignore_index)).any(dim=1)
        if y.dim() == 2:
            y = y.argmax(dim=1)
        return (self.predict(z) != y) & (y != self.ignore_index)

    def exact(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The same objective computed stably from logits in float32 (here: the loss itself, in float32, for a
        loss computed stably from logits; loss_gap is then rounding only)."""
        return self.forward(z.float(), y)

    def clamped(self, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per element of p: is its term at the loss's clamp or clip? (bool, z's shape). Only called when
        ``has_clamp``."""
        return torch.zeros_like(p, dtype=torch.bool)

    def begin_step(self, step: int) -> None:
        """Called by the training loop before each step (a host int, no sync): losses with a schedule
        (e.g. deferred re-weighting) switch here."""

    def duals(self) -> dict[str, torch.Tensor]:
        """The loss's own trained variables, logged as variables/<name> (auc_margin's duals a, b, alpha)."""
        return {}

    @property
    def binary(self) -> bool:
        """A single-label binary task: the monitors count its batches without a (positive, negative) pair."""
        return self.n_classes == 2 and not self.multilabel

    def eval_logits(self, z: torch.Tensor) -> torch.Tensor:
        """The logits whose sigmoid/softmax are the model's predicted probabilities, for the metrics: z itself,
        except for losses that scale the logits inside (LDAM: s z)."""
        return z

    def posthoc_logits(self, z: torch.Tensor) -> torch.Tensor | None:
        """z - tau log pi (Menon et al. 2021) of the evaluation logits z (:meth:`eval_logits`) when
        posthoc_tau is set, else None: their metrics are reported next to the plain ones as val/posthoc/*."""
        if self.posthoc_tau is None:
            return None
        return z.float() - self.posthoc_tau * self.log_prior


def _drop_legacy_buffers(state_dict: dict, prefix: str, *args) -> None:
    for key in _LEGACY_BUFFERS:
        state_dict.pop(prefix + key, None)


class BCEFamily(Objective):
    """Binary cross-entropy on the head's probabilities, sigmoid(z) or softmax(z): :meth:`exact` is the same
    objective from the logits (BCEWithLogits on a sigmoid head; log_softmax and :func:`log1m_softmax` on a
    softmax head)."""

    def activation(self, z: torch.Tensor) -> torch.Tensor:
        """What the model's last layer outputs for this loss (the criterion's input)."""
        return torch.sigmoid(z) if self.head == "sigmoid" else torch.softmax(z, dim=1)

    def exact(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = z.float()
        t = self.targets(y, torch.float32)
        if self.head == "sigmoid":
            terms = F.binary_cross_entropy_with_logits(z, t, pos_weight=self.pos_weight, reduction="none")
        else:  # BCE on softmax probabilities
            terms = -(t * F.log_softmax(z, dim=1) + (1 - t) * log1m_softmax(z))
        return self._reduce(terms, y)


class ClassIndexFamily(Objective):
    """Cross-entropy on class indices (CrossEntropyLoss, NLLLoss): :meth:`exact` is CrossEntropyLoss in float32."""

    def exact(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(z.float(), normalised(y) if self.multilabel else y, weight=self.class_weight,
                               ignore_index=self.ignore_index, label_smoothing=self.smoothing,
                               reduction=self.reduction)
