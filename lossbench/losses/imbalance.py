r"""Losses for imbalanced data, and a third hand-written BCE (n_c: training count of class c, pi_c = n_c / N,
w: class_weight):

================  ============================================================================  ================
loss              per sample / element                                                          head (natural *)
================  ============================================================================  ================
focal             alpha_t (1-p_t)^gamma BCEWithLogits(z, t) | w_y (1-p_y)^gamma (-log p_y)      sigmoid* softmax
ldam              CE(s (z - m_y onehot(y)), y), m_c = max_m (n_min / n_c)^(1/4)                  softmax*
logit_adjusted    CE(z + tau log pi, y)                                                         softmax*
balanced_softmax  CE(z + log n_c, y)  (= logit_adjusted at tau = 1)                             softmax*
poly1             CE + epsilon (1 - p_y) | BCEWithLogits + epsilon (1 - p_t)                     softmax* sigmoid
bce_clipped       -(t log p_c + (1-t) log(1-p_c)), p_c = clamp(p, eps, 1-eps): bad example      sigmoid* softmax
================  ============================================================================  ================

Options of every softmax loss: ``drw_step`` (deferred re-weighting, :class:`DRW`) and ``posthoc_tau``
(post-hoc logit adjustment at evaluation: :meth:`Objective.posthoc_logits`, metrics as val/posthoc/*).

Conventions shared by these losses (documented per class):
- Softmax losses reduce as CrossEntropyLoss does: 'mean' = sum_i w_{y_i} l_i / sum_i w_{y_i} (= the mean over N
  without class weights), 'sum' = sum_i w_{y_i} l_i. So each one with its extra term switched off (gamma = 0,
  max_m = 0 and s = 1, tau = 0, eps = 0) equals nn.CrossEntropyLoss, class weights included.
- Sigmoid losses reduce as the seeds' BCE losses do: each sample's K terms times its class weight, 'mean' over
  all N*K elements (torchvision's 'mean' for the focal loss; not RetinaNet's sum / number of positives, see Focal).
- The class weights of CB (Cui et al. 2019) are ``loss.class_weight=effective`` with ``loss.beta``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lossbench.losses.base import BCEFamily, Objective, log_prior, softmax_reduce
from lossbench.losses.catalog import FOCAL_IMPLS


class Focal(Objective):
    r"""Focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p_t)^gamma, on either head.

    Sigmoid head (``loss=focal``, natural), per element with t in {0, 1} and p = sigmoid(z):

        l = alpha_t (1 - p_t)^gamma BCEWithLogits(z, t),   p_t = p t + (1 - p)(1 - t),
        alpha_t = alpha t + (1 - alpha)(1 - t)

    the value of ``torchvision.ops.sigmoid_focal_loss(z, t, alpha, gamma, reduction="none")``. Softmax head
    (``head=softmax``), per sample: l = w_y (1 - p_y)^gamma (-log p_y), p = softmax(z).

    ``loss.impl=stable`` (default) computes the focusing term from the logits: log(1 - p_t) = logsigmoid(z (1 - 2t))
    on the sigmoid head, log(1 - p_y) = logsumexp_{c != y} z_c - logsumexp_c z_c on the softmax head, so the
    gradient is finite for every gamma >= 0. ``loss.impl=naive`` is the form as commonly written, kept as documented
    behaviour: torchvision's own function on the sigmoid head, (1 - exp(-CE))^gamma CE on the softmax head (the
    LDAM-DRW code's form). It forms 1 - p_t first; once the head saturates, 1 - p_t is exactly 0, and for
    0 < gamma < 1 the derivative of (1 - p_t)^gamma there is infinite: infinity times sigmoid's zero slope gives
    NaN gradients (numerics/nonfinite_grad; reported against torchvision, kornia and optax). For gamma = 0 and
    gamma >= 1 the two forms agree.

    Weights. ``alpha`` (sigmoid head only): null = 0.25 (torchvision's and RetinaNet's default), or off when
    ``class_weight`` is set (Cui et al.'s CB focal replaces alpha by the class-balanced weight); ``-1`` = off, as
    in torchvision. ``class_weight`` (both heads; ``effective`` = CB focal) multiplies each sample's terms.
    On the softmax head the focusing term uses the *unweighted* p_y: the LDAM-DRW code computes
    p = exp(-CE) after class weighting, which mixes the weight into the focusing term.

    Reduction. Sigmoid: 'mean' over all N*K elements, as torchvision's 'mean' and as BCEWithLogitsLoss, so that
    gamma = 0 with alpha off is exactly ``bce_logits``. RetinaNet divides the sum by the number of positive
    anchors instead: in detection nearly all anchors are easy negatives; in classification with one label per
    sample that count is N for a one-vs-rest head (a constant factor K) and, for a binary head on a 1:100 task,
    about one positive per batch of 128: a per-batch step size that swings with it (and is undefined at zero).
    Softmax: as CrossEntropyLoss, 'mean' = sum w_y l / sum w_y (the LDAM-DRW code divides by N).

    Monitors: no clamp (clamped_frac 0); dead_frac counts wrong samples whose logit gradient is exactly 0 (none
    in the stable form); loss_gap is rounding only (the stable form in float32 is :meth:`exact`).

    Reductions: ``mean`` (torchvision's: over all N*K elements), ``sum``, and on the sigmoid head ``num_pos``, the
    papers' normalisation: the sum divided by the number of positive targets in the batch, max(1, sum t)
    (detectron2's RetinaNet divides ``sigmoid_focal_loss(reduction="sum")`` by max(1, positive anchors), smoothed by
    a running average; Cui et al.'s class-balanced code divides the weighted sum by the number of positive labels;
    ignored labels are not counted). In detection nearly all anchors are easy negatives; in classification with one
    label per sample that count is N for a one-vs-rest head (a constant factor K over 'mean') and, for a binary head
    on a 1:100 task, about one positive per batch of 128: about 100x 'mean', a per-batch step size that swings with
    the count, and max(1, 0) = 1 (the plain sum) for a batch without positives.

    Shape: z (N, K), y (N,) long; output scalar.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | None = None, impl: str = "stable", **common):
        self.num_pos = common.get("reduction") == "num_pos"
        if self.num_pos:
            if common.get("head", "sigmoid") != "sigmoid":
                raise ValueError("focal: reduction='num_pos' is for the sigmoid head")
            common["reduction"] = "sum"  # then divided by the positives (_loss)
        super().__init__(**common)
        if not gamma >= 0 or impl not in FOCAL_IMPLS or (alpha is not None and alpha != -1 and not 0 <= alpha <= 1):
            raise ValueError(f"focal: gamma >= 0, alpha in [0, 1], -1 or None, impl in {FOCAL_IMPLS}; got {gamma}, "
                             f"{alpha}, {impl!r}")
        self.gamma, self.impl = float(gamma), impl
        if alpha is None:
            alpha = 0.25 if self.head == "sigmoid" and self.class_weight is None else -1
        self.alpha = float(alpha) if self.head == "sigmoid" else -1.0

    def terms(self, z: torch.Tensor, y: torch.Tensor, impl: str) -> torch.Tensor:
        """Unreduced, unweighted by class: (N, K) on the sigmoid head (alpha_t included), (N,) on the softmax."""
        if self.head == "softmax":
            if impl == "naive":
                ce = F.cross_entropy(z, y, reduction="none")
                return (1 - torch.exp(-ce)) ** self.gamma * ce
            log_p = F.log_softmax(z, dim=1)
            others = z.masked_fill(F.one_hot(y, self.n_classes).bool(), -math.inf)
            log_1m_py = torch.logsumexp(others, dim=1) - torch.logsumexp(z, dim=1)
            return -torch.exp(self.gamma * log_1m_py) * log_p.gather(1, y[:, None]).squeeze(1)
        t = self.targets(y, z.dtype)
        if impl == "naive":  # torchvision is imported here: it adds about 1 s to every start-up
            from torchvision.ops import sigmoid_focal_loss

            return sigmoid_focal_loss(z, t, alpha=self.alpha, gamma=self.gamma, reduction="none")
        terms = F.binary_cross_entropy_with_logits(z, t, reduction="none")
        terms = terms * torch.exp(self.gamma * F.logsigmoid(z * (1 - 2 * t)))
        if self.alpha >= 0:
            terms = terms * (self.alpha * t + (1 - self.alpha) * (1 - t))
        return terms

    def _loss(self, z: torch.Tensor, y: torch.Tensor, impl: str) -> torch.Tensor:
        terms = self.terms(z, y, impl)
        if self.head == "sigmoid":
            loss = self._reduce(terms, y)  # the sum, for reduction=num_pos
            if self.num_pos:
                t = self.targets(y, terms.dtype)
                pos = torch.where(self.labelled(y), t, 0).sum() if self.partial else t.sum()  # ignored: not counted
                loss = loss / pos.clamp_min(1)
            return loss
        w = self.class_weight
        return softmax_reduce(terms if w is None else terms * w[y].to(terms.dtype), y, w, self.reduction)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._loss(z, y, self.impl)

    def exact(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._loss(z.float(), y, "stable")


class LDAM(Objective):
    r"""Label-distribution-aware margin loss (Cao et al. 2019, kaidic/LDAM-DRW), softmax head:

        l = CrossEntropyLoss(weight=w)(s (z - m_y onehot(y)), y),   m_c = max_m (n_min / n_c)^(1/4)

    margins proportional to n_c^(-1/4), the largest (the rarest class's) = ``max_m`` (0.5), logits scaled by
    ``s`` (30). With max_m = 0 this is CrossEntropyLoss on s z. Predictions are argmax z (no margin at test).
    Reduction as CrossEntropyLoss (with ``class_weight``: sum w_y l / sum w_y); label_smoothing is CE's.

    The head. The reference code pairs the loss with a normalised (cosine) output layer, z_c = cos(h, W_c)
    in [-1, 1] (``use_norm`` for LDAM), and s = 30 is chosen for that range: the margins (<= 0.5) are then a
    fixed share of the logit range. lossbench offers that layer as ``model.cosine_head`` and ``loss=ldam``
    turns it on by default (``loss.cosine_head: true``, which model.cosine_head follows unless set). On a plain
    linear head (``model.cosine_head=false``) z is unbounded: s multiplies the logits' gradient by 30 and the
    margins shrink relative to the logits as they grow.

    The model's probabilities are softmax(s z) (margins are a training device): :meth:`eval_logits` gives s z to
    the metrics (val/nll, ECE, AUC, post-hoc adjustment) and :meth:`probs` softmax(s z) to the monitors.

    DRW (deferred re-weighting, the paper's LDAM-DRW) is ``loss.drw_step``, available to every softmax loss
    (:class:`DRW`).

    Monitors: no clamp; dead_frac: wrong samples with an exactly zero logit gradient (softmax underflow of s z;
    none on a cosine head in float32); loss_gap: rounding only.

    Shape: z (N, C), y (N,) long; output scalar.
    """

    def __init__(self, max_m: float = 0.5, s: float = 30.0, *, counts: torch.Tensor, **common):
        super().__init__(counts=counts, **common)
        if not max_m >= 0 or not s > 0:
            raise ValueError(f"ldam: max_m >= 0 and s > 0, got {max_m}, {s}")
        m = (-0.25 * log_prior(counts, "loss=ldam")).exp()  # n_c^(-1/4) up to a constant factor
        self.register_buffer("margins", m * (float(max_m) / m.max()))
        self.s = float(s)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z_m = z - F.one_hot(y, self.n_classes) * self.margins[y].unsqueeze(1)
        return F.cross_entropy(self.s * z_m, y, weight=self.class_weight, label_smoothing=self.smoothing,
                               reduction=self.reduction)

    def eval_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.s * z

    def probs(self, z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.s * z, dim=1)


class LogitAdjusted(Objective):
    r"""Logit-adjusted cross-entropy (Menon et al. 2021) and balanced softmax (Ren et al. 2020), softmax head:

        logit_adjusted:    l = CrossEntropyLoss(weight=w)(z + tau log pi, y),   pi_c = n_c / N,  tau = 1.0
        balanced_softmax:  l = CrossEntropyLoss(weight=w)(z + log n_c, y)

    The two are one loss at tau = 1: log n_c = log pi_c + log N, and softmax ignores a constant shift.
    Predictions are argmax z: the shift is applied in training only, so z estimates the balanced posterior.
    (The opposite, training plain CE and predicting argmax(z - tau log pi), is ``loss.posthoc_tau``.)
    Reduction and label_smoothing as CrossEntropyLoss.

    Monitors: no clamp; dead_frac: wrong samples with an exactly zero logit gradient (softmax underflow);
    loss_gap: rounding only. saturated_frac counts softmax(z), the model's own probabilities.

    Shape: z (N, C), y (N,) long; output scalar.
    """

    def __init__(self, tau: float = 1.0, *, counts: torch.Tensor, **common):
        super().__init__(counts=counts, **common)
        if not tau >= 0:
            raise ValueError(f"logit_adjusted: tau >= 0, got {tau}")
        self.register_buffer("shift", self.log_shift(tau, counts))

    def log_shift(self, tau: float, counts: torch.Tensor) -> torch.Tensor:
        """tau log pi (C,)."""
        return float(tau) * log_prior(counts, "loss=logit_adjusted")

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(z + self.shift, y, weight=self.class_weight, label_smoothing=self.smoothing,
                               reduction=self.reduction)


class BalancedSoftmax(LogitAdjusted):
    r"""``loss=balanced_softmax`` (Ren et al. 2020): l = CrossEntropyLoss(weight=w)(z + log n_c, y), the
    :class:`LogitAdjusted` loss at tau = 1 with the shift written as log n_c = log pi_c + log N.

    Shape: z (N, C), y (N,) long; output scalar.
    """

    def __init__(self, *, counts: torch.Tensor, **common):
        super().__init__(1.0, counts=counts, **common)

    def log_shift(self, tau: float, counts: torch.Tensor) -> torch.Tensor:
        return log_prior(counts, "loss=balanced_softmax") + math.log(float(counts.sum()))  # log n_c


class Poly1(Objective):
    r"""Poly-1 loss (Leng et al. 2022): the cross-entropy plus epsilon times its first polynomial term.

    Softmax head (natural): l = w_y (CE(z, y) + epsilon (1 - p_t)), p_t = sum_c t_c softmax(z)_c (= p_y, or the
    smoothed target's share with label_smoothing), CE with CrossEntropyLoss's weight and label_smoothing;
    'mean' = sum l / sum w_y. Sigmoid head, per element: BCEWithLogits(z, t; pos_weight) + epsilon (1 - p_t),
    1 - p_t = t sigmoid(-z) + (1 - t) sigmoid(z); reduced as bce_logits. ``epsilon`` = 1 by default; the paper
    allows epsilon >= -1. With epsilon = 0 it is ``ce`` / ``bce_logits`` exactly.

    Monitors: no clamp; dead_frac: wrong samples with an exactly zero logit gradient; loss_gap: rounding only.

    Shape: z (N, K), y (N,) long; output scalar.
    """

    def __init__(self, epsilon: float = 1.0, **common):
        super().__init__(**common)
        if not epsilon >= -1:
            raise ValueError(f"poly1: epsilon >= -1, got {epsilon}")
        self.epsilon = float(epsilon)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = self.targets(y, z.dtype)
        if self.head == "sigmoid":
            one_minus_pt = t * torch.sigmoid(-z) + (1 - t) * torch.sigmoid(z)
            bce = F.binary_cross_entropy_with_logits(z, t, pos_weight=self.pos_weight, reduction="none")
            return self._reduce(bce + self.epsilon * one_minus_pt, y)
        w = self.class_weight
        ce = F.cross_entropy(z, y, weight=w, label_smoothing=self.smoothing, reduction="none")
        poly = self.epsilon * (1 - (t * torch.softmax(z, dim=1)).sum(dim=1))
        return softmax_reduce(ce + (poly if w is None else poly * w[y].to(poly.dtype)), y, w, self.reduction)


class ClippedBCE(BCEFamily):
    r"""BAD EXAMPLE: binary cross-entropy on probabilities clipped to [eps, 1 - eps] first (``loss=bce_clipped``),
    as tutorials write it by hand and as Keras' ``binary_crossentropy`` does on probabilities (eps = 1e-7):

        l = -(pw t log p_c + (1 - t) log(1 - p_c)),   p_c = clamp(p, eps, 1 - eps),  p = sigmoid(z) or softmax(z)

    reduced like ``bce`` (class weights per sample, 'mean' over N*K). The clip keeps the logs finite, but the
    gradient of a clipped probability is exactly 0: a saturated, wrong sample is dead, as under BCELoss' clamp,
    at a far smaller loss (-log eps = 16.1 for eps = 1e-7 instead of 100) and from a far smaller logit
    (|z| > 16.1 instead of sigmoid's exact 0 at z < -88.7). In float32, 1 - 1e-7 rounds to 1 - 2^-23, so the
    upper clip reports -log(1.19e-7) = 15.9. In bfloat16 and float16 (autocast) 1 - eps rounds to 1.0: the upper
    clip does nothing and log(1 - p) = -inf comes back.

    Monitors: clamped_frac = probabilities the clip changes (p < eps or p > 1 - eps); dead_frac = wrong samples
    it leaves with zero gradient; loss_gap = reported - the unclipped objective computed stably from logits
    (what the clip hides: about 16 - |z| per dead sample).

    Shape: z (N, K), y (N,) long; output scalar.
    """

    has_clamp = True

    def __init__(self, eps: float = 1e-7, **common):
        super().__init__(**common)
        if not 0 < eps < 0.5:
            raise ValueError(f"bce_clipped: eps in (0, 0.5), got {eps}")
        self.eps = float(eps)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = self.activation(z).clamp(self.eps, 1 - self.eps)
        t = self.targets(y, p.dtype)
        pw = 1 if self.pos_weight is None else self.pos_weight
        return self._reduce(-(pw * t * torch.log(p) + (1 - t) * torch.log(1 - p)), y)

    def clamped(self, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per element of p: did the clip change it? (bool, z's shape)"""
        return (p < self.eps) | (p > 1 - self.eps)


class DRW(nn.Module):
    r"""Deferred re-weighting (Cao et al. 2019) for any softmax loss: ``loss.drw_step`` = S.

    Steps 0 .. S-1 train ``before`` (the loss unweighted); from step S on ``after`` (the same loss with
    ``loss.class_weight``, ``effective`` with ``loss.beta`` when unset; the reference uses beta = 0.9999 from epoch
    160 of 200). The loop calls :meth:`begin_step` with the step (a host int) before each step: the switch is a
    Python attribute, with no host sync and no tensor op. Every other attribute and method (probs, exact, wrong,
    name, head, ...) is the objective's in force, so val/loss and the monitors measure the loss being trained.

    Shape: as the wrapped loss.
    """

    def __init__(self, before: Objective, after: Objective, step: int):
        super().__init__()
        if step < 0:
            raise ValueError(f"drw_step must be >= 0, got {step}")
        self.drw_step = int(step)
        self.before, self.after = before, after
        self.weighted = False  # a plain attribute, not a submodule: stacks group objectives by their attributes

    @property
    def active(self) -> Objective:
        return self.after if self.weighted else self.before

    def begin_step(self, step: int) -> None:
        self.weighted = step >= self.drw_step

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.active(z, y)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)  # parameters, buffers, submodules (before, after)
        except AttributeError:
            if name in ("before", "after", "weighted") or name.startswith("__"):
                raise
            return getattr(self.active, name)
