r"""The seeds: each loss as the activation a user's model applies plus the PyTorch criterion.

=============  ====================  ===========================================================  =======
loss           activation + crit.    per element                                                   head
=============  ====================  ===========================================================  =======
bce            Sigmoid + BCELoss     -(t log p + (1-t) log(1-p)), each log clamped at >= -100      sigmoid
bce_logits     BCEWithLogitsLoss     (1-t) z - (1 + (pw-1) t) log sigmoid(z)  (stable, no clamp)   sigmoid
bce_manual     Sigmoid, by hand      -(t log p + (1-t) log(1-p)), no clamp: 0 * -inf = NaN         sigmoid
ce             CrossEntropyLoss      -log softmax(z)_y = -z_y + logsumexp(z)                       softmax
nll            LogSoftmax + NLLLoss  -log_softmax(z)_y (identical to ce)                           softmax
nll_manual     Softmax, log, NLL     -log(softmax(z)_y): softmax underflows to 0, log gives inf    softmax
bce (softmax)  Softmax + BCELoss     BCE of softmax probabilities against one-hot targets          softmax
=============  ====================  ===========================================================  =======

Reductions: the sigmoid (BCE) losses weight each sample's K terms by its class weight and reduce as
:meth:`Objective._reduce` ('mean' over N*K terms, or over the labelled ones); the class-index losses as
CrossEntropyLoss / NLLLoss ('mean' = sum_i w_{y_i} l_i / sum_i w_{y_i}). Shapes: see :mod:`lossbench.losses.base`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossbench.losses.base import CLAMP, BCEFamily, ClassIndexFamily, normalised


class BCE(BCEFamily):
    r"""``loss=bce``: nn.Sigmoid (or nn.Softmax on ``head=softmax``) in the model, then nn.BCELoss:

        l = -(pw t log p + (1 - t) log(1 - p)),   each log clamped at >= -100,   p = sigmoid(z) | softmax(z)

    'mean' divides by N*K (labelled terms with ignored labels), 'sum' sums. With ``pos_weight`` pw the loss is
    BCELoss against targets 1 and 0, weighted by pw t and 1 - t.

    BCELoss refuses NaN probabilities (a diverged model's): it raises on the CPU and fails a device assert on
    CUDA, which kills the process. A NaN is passed around it instead (+ 0 * p is 0 for finite p, NaN for NaN,
    and adds nothing to the gradient), so the loss is NaN and the run ends 'diverged' like any other.

    Monitors: ``clamped`` counts the log terms at the clamp; ``exact`` is the unclamped objective from logits.

    Shape: z (N, K) logits, y (N,) long (multi-hot (N, C) floats on a multi-label task); output scalar.
    """

    has_clamp = True

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.activation(z)
        t = self.targets(y, out.dtype)
        nan = 0 * out
        out = out.nan_to_num(0.5)
        if self.pos_weight is None:
            return self._reduce(F.binary_cross_entropy(out, t, reduction="none") + nan, y)
        ones, zeros = torch.ones_like(out), torch.zeros_like(out)
        terms = (self.pos_weight * t * F.binary_cross_entropy(out, ones, reduction="none")
                 + (1 - t) * F.binary_cross_entropy(out, zeros, reduction="none") + nan)
        return self._reduce(terms, y)

    def clamped(self, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per element of p: is the BCE log term that counts at BCELoss's -100 clamp? (bool, z's shape)"""
        t = self.targets(y, torch.float32)
        p = p.float()
        at = ((t > 0) & (torch.log(p) <= CLAMP)) | ((t < 1) & (torch.log(1 - p) <= CLAMP))
        return at & self.labelled(y) if self.partial else at


class BCEWithLogits(BCEFamily):
    r"""``loss=bce_logits``: nn.BCEWithLogitsLoss on raw logits (log-sum-exp inside, no clamp):

        l = (1 - t) z - (1 + (pw - 1) t) log sigmoid(z)

    reduced as :class:`BCE`. Monitors: no clamp; loss_gap is rounding only.

    Shape: z (N, K) logits, y (N,) long (multi-hot (N, C) floats on a multi-label task); output scalar.
    """

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = self.targets(y, z.dtype)
        return self._reduce(F.binary_cross_entropy_with_logits(z, t, pos_weight=self.pos_weight, reduction="none"), y)


class ManualBCE(BCEFamily):
    r"""BAD EXAMPLE ``loss=bce_manual``: -(pw t log p + (1 - t) log(1 - p)) on p = sigmoid(z), written by hand with
    no clamp: once sigmoid saturates to 0 or 1 a log is -inf, and 0 * -inf = NaN. Reduced as :class:`BCE`.

    Shape: z (N, K) logits, y (N,) long; output scalar.
    """

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = self.activation(z)
        t = self.targets(y, p.dtype)
        pw = 1 if self.pos_weight is None else self.pos_weight
        return self._reduce(-(pw * t * torch.log(p) + (1 - t) * torch.log(1 - p)), y)


class CrossEntropy(ClassIndexFamily):
    r"""``loss=ce``: nn.CrossEntropyLoss on raw logits, l = w_y (-z_y + logsumexp(z)); 'mean' = sum l / sum w_y.

    y: class indices (N,); class probabilities (N, C) (soft labels: 'mean' divides by N); on a multi-label task the
    tutorials' mistake kept as a comparison: softmax CE against the multi-hot target normalised to sum to 1
    (:func:`normalised`). ``label_smoothing`` is CrossEntropyLoss's own.

    Shape: z (N, C) logits, y (N,) long or (N, C) float; output scalar.
    """

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(z, normalised(y) if self.multilabel else y, weight=self.class_weight,
                               ignore_index=self.ignore_index, label_smoothing=self.smoothing,
                               reduction=self.reduction)


class NLL(ClassIndexFamily):
    r"""``loss=nll``: nn.LogSoftmax in the model, then nn.NLLLoss: l = -w_y log_softmax(z)_y (= ce; no
    label_smoothing). Shape: z (N, C) logits, y (N,) long; output scalar."""

    def __init__(self, **common):
        super().__init__(**common)
        if self.smoothing > 0:
            raise ValueError("NLLLoss has no label_smoothing")

    def log_probs(self, z: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(z, dim=1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(self.log_probs(z), y, weight=self.class_weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)


class ManualNLL(NLL):
    r"""BAD EXAMPLE ``loss=nll_manual``: torch.log(softmax(z)) then NLLLoss, written by hand: softmax underflows to
    0 and its log is -inf. Shape: z (N, C) logits, y (N,) long; output scalar."""

    def log_probs(self, z: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.softmax(z, dim=1))
