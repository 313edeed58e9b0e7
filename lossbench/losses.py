r"""The losses under study, each as the activation a user's model applies plus the PyTorch criterion.

Notation: z are the model's raw logits, shape (N, K); y are integer class labels, shape (N,);
t are float targets of z's shape (one-hot for K = C outputs, y itself for one binary output), smoothed
when ``label_smoothing`` = a > 0; p = activation(z).

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
asl            Sigmoid, asymmetric   -(1-p)^g+ log p (t=1); -p_m^g- log(1-p_m), p_m=max(p-clip,0)   sigmoid
kd             KLDivLoss + CE        a T^2 KL(softmax(v/T) || softmax(z/T)) + (1-a) CE(z, y)        softmax
kd_mean        (bad example)         as kd with KLDivLoss(reduction="mean"): KL / C                  softmax
kd_prob        (bad example)         as kd with probabilities softmax(z/T) as KLDivLoss's input      softmax
kd_no_t2       (bad example)         as kd without T^2: soft gradient T^2 too small                  softmax
=============  ====================  ===========================================================  =======

Losses for imbalanced data, and a third hand-written BCE (classes below :class:`Focal`; n_c: training count
of class c, pi_c = n_c / N, w: class_weight):

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

Shapes: sigmoid losses take z and t of shape (N, K) (K = 1 for binary, C for one-vs-rest); softmax
losses take z of shape (N, C) and y of shape (N,) (long). All return a scalar.

Multi-label tasks (data.task=multilabel): y is multi-hot (N, C) (float) and K = C. The sigmoid losses
train each label independently (t = y); ``ce`` on a multi-label task is the tutorials' mistake kept as a
comparison: softmax CE against the multi-hot target normalised to sum to 1 (:func:`normalised`).
Probability ("soft") targets (data.soft_labels): ``ce`` takes y of shape (N, C) (float rows summing to 1),
as CrossEntropyLoss does ('mean' divides by N, with or without class weights).
Ignored labels (ignore_index, from data.unlabeled_frac): softmax losses leave them to CrossEntropyLoss /
NLLLoss; the sigmoid losses mask their terms and 'mean' divides by the labelled terms (Objective._reduce).

Weights (computed from the training split by :func:`weights`):
- ``pos_weight`` (sigmoid losses, shape (K,)): multiplies the positive term t log p, as
  BCEWithLogitsLoss does; 'mean' still divides by N*K. ``auto`` = n_neg / n_pos per output,
  ``sqrt_auto`` = its square root.
- ``class_weight`` (shape (C,)): softmax losses pass it as CrossEntropyLoss/NLLLoss ``weight``, whose
  'mean' divides by the sum of the target classes' weights; sigmoid losses multiply each sample's terms by
  the weight of its class and divide by N*K. ``inverse`` = N / (C n_c); ``effective`` =
  (1 - beta) / (1 - beta^n_c) normalised to sum to C (Cui et al. 2019).
- ``label_smoothing`` a: CrossEntropyLoss's own for ce; t = (1-a) t + a/2 for sigmoid losses and
  (1-a) t + a/C for BCE on softmax probabilities. (NLLLoss has none.)

:meth:`Objective.exact` recomputes the same objective stably from z in float32: the difference between
what a loss reports and this is ``numerics/loss_gap`` (what the BCELoss clamp hides, or the inf that a
hand-written log produces).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lossbench import ConfigError
from lossbench.config import KD_LOSSES

SIGMOID_FAMILY = ("bce", "bce_logits", "bce_manual")
CLAMP = -100.0  # BCELoss's floor on each log term


def weights(lc: DictConfig, head: str, counts: torch.Tensor, n_labelled: torch.Tensor | None = None,
            multilabel: bool = False) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(pos_weight of shape (K,), class_weight of shape (C,)) from the config and the training split's labelled
    class counts (multi-label: positives per label, with n_labelled the labelled entries per label)."""
    c = len(counts)
    counts = counts.double()
    n = counts.sum() if n_labelled is None else n_labelled.double()
    pos_weight = None
    if lc.pos_weight is not None:
        k = 1 if c == 2 and not multilabel else c
        pos = counts[1:] if k == 1 else counts
        if lc.pos_weight in ("auto", "sqrt_auto"):
            if (pos == 0).any():
                raise ConfigError(f"loss.pos_weight={lc.pos_weight} needs positives of every output in the training split.")
            pos_weight = (n - pos) / pos
            if lc.pos_weight == "sqrt_auto":  # a milder correction: sqrt(n_neg / n_pos)
                pos_weight = pos_weight.sqrt()
        else:
            pos_weight = torch.full((k,), float(lc.pos_weight), dtype=torch.float64)
    class_weight = None
    cw = lc.class_weight
    if cw is not None:
        if cw in ("inverse", "effective") and (counts == 0).any():
            raise ConfigError(f"loss.class_weight={cw} needs every class in the training split: counts {counts.tolist()}.")
        if cw == "inverse":
            class_weight = n / (c * counts)
        elif cw == "effective":
            w = (1 - lc.beta) / (1 - torch.tensor(lc.beta, dtype=torch.float64) ** counts)
            class_weight = w / w.sum() * c
        else:
            if len(cw) != c:
                raise ConfigError(
                    f"loss.class_weight has {len(cw)} entries but the data has {c} classes: give one weight per "
                    f"class, e.g. loss.class_weight=[{','.join(['1.0'] * c)}]."
                )
            class_weight = torch.tensor(list(cw), dtype=torch.float64)
            if class_weight.sum() <= 0:
                raise ConfigError("loss.class_weight must have at least one positive entry.")
    f32 = lambda w: None if w is None else w.float()  # noqa: E731
    return f32(pos_weight), f32(class_weight)


def log1m_softmax(z: torch.Tensor) -> torch.Tensor:
    """log(1 - softmax(z)_c) for every c, (N, C): logsumexp of the other logits minus logsumexp of all. Finite
    where softmax(z)_c rounds to 1 (log1mexp of log_softmax would give -inf there)."""
    c = z.shape[1]
    others = z.unsqueeze(1).expand(-1, c, -1).masked_fill(torch.eye(c, dtype=torch.bool, device=z.device), -math.inf)
    return torch.logsumexp(others, dim=2) - torch.logsumexp(z, dim=1, keepdim=True)


def log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a <= 0, accurate everywhere (Mächler 2012)."""
    return torch.where(a > -0.6931471805599453, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


class Objective(nn.Module):
    """Head activation + criterion: ``forward(z, y)`` is the training loss, as a user would write it."""

    def __init__(self, lc: DictConfig, head: str, n_classes: int, pos_weight=None, class_weight=None,
                 multilabel: bool = False, partial: bool = False, counts: torch.Tensor | None = None):
        super().__init__()
        self.name, self.head, self.n_classes = lc.name, head, n_classes
        # multilabel: targets are multi-hot (N, C) floats; partial: some training labels are ignore_index
        # (data.unlabeled_frac), whose terms the sigmoid losses mask out (see _reduce)
        self.multilabel, self.partial = multilabel, partial
        self.k = n_classes if multilabel else 1 if head == "sigmoid" and n_classes == 2 else n_classes
        self.smoothing = float(lc.label_smoothing)
        self.reduction = lc.reduction
        self.ignore_index = int(lc.get("ignore_index", -100))
        self.register_buffer("pos_weight", pos_weight)
        self.register_buffer("class_weight", class_weight)
        self.has_clamp = self.name == "bce"
        # Post-hoc logit adjustment (softmax heads): also evaluate argmax(z - tau log pi), pi = training prior.
        self.posthoc_tau = lc.get("posthoc_tau")
        prior = None if self.posthoc_tau is None else log_prior(counts, "loss.posthoc_tau")
        self.register_buffer("log_prior", prior)
        # The modules a user would write; reduction is applied here so that weights can be folded in.
        self.bce = nn.BCELoss(reduction="none")
        self.bce_logits = nn.BCEWithLogitsLoss(reduction="none", pos_weight=pos_weight)
        self.log_softmax = nn.LogSoftmax(dim=1)
        self.nll = nn.NLLLoss(weight=class_weight, ignore_index=self.ignore_index, reduction=self.reduction)
        self.ce = nn.CrossEntropyLoss(
            weight=class_weight, ignore_index=self.ignore_index, label_smoothing=self.smoothing,
            reduction=self.reduction,
        )

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

    # --- the loss as trained ---------------------------------------------------------------------------
    def activation(self, z: torch.Tensor) -> torch.Tensor:
        """What the model's last layer outputs for this loss (the criterion's input)."""
        if self.name in ("bce", "bce_manual"):
            return torch.sigmoid(z) if self.head == "sigmoid" else torch.softmax(z, dim=1)
        if self.name == "nll":
            return self.log_softmax(z)
        if self.name == "nll_manual":
            return torch.log(torch.softmax(z, dim=1))
        return z  # bce_logits, ce: raw logits

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.name == "ce":  # the common case first: it runs every step
            # y: class indices (N,), class probabilities (N, C) (soft labels), or on a multi-label task the
            # tutorials' mistake: softmax CE against the multi-hot target normalised to sum to 1
            return self.ce(z, normalised(y) if self.multilabel else y)
        out = self.activation(z)
        if self.name in ("nll", "nll_manual"):
            return self.nll(out, y)
        t = self.targets(y, out.dtype)
        if self.name == "bce_logits":
            return self._reduce(self.bce_logits(out, t), y)
        if self.name == "bce_manual":
            pw = 1 if self.pos_weight is None else self.pos_weight
            return self._reduce(-(pw * t * torch.log(out) + (1 - t) * torch.log(1 - out)), y)
        # bce: nn.BCELoss, log terms clamped at -100. BCELoss refuses NaN probabilities (a diverged model's):
        # it raises on the CPU and fails a device assert on CUDA, which kills the process. A NaN is passed
        # around it instead (+ 0 * p is 0 for finite p, NaN for NaN, and adds nothing to the gradient), so
        # the loss is NaN and the run ends 'diverged' like any other.
        nan = 0 * out
        out = out.nan_to_num(0.5)
        if self.pos_weight is None:
            return self._reduce(self.bce(out, t) + nan, y)
        ones, zeros = torch.ones_like(out), torch.zeros_like(out)
        terms = self.pos_weight * t * self.bce(out, ones) + (1 - t) * self.bce(out, zeros) + nan
        return self._reduce(terms, y)

    # --- what the monitors and metrics need ----------------------------------------------------------------
    def probs(self, z: torch.Tensor) -> torch.Tensor:
        """The head's probabilities, in z's dtype (for saturation counts)."""
        return torch.sigmoid(z) if self.head == "sigmoid" else torch.softmax(z, dim=1)

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

    def begin_step(self, step: int) -> None:
        """Called by the training loop before each step (a host int, no sync): losses with a schedule
        (e.g. deferred re-weighting) switch here. The seeds' losses have none."""

    def duals(self) -> dict[str, torch.Tensor]:
        """The loss's own trained variables, logged as variables/<name> (auc_margin's duals a, b, alpha); none here."""
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
        loss.posthoc_tau is set, else None: their metrics are reported next to the plain ones as val/posthoc/*."""
        if self.posthoc_tau is None:
            return None
        return z.float() - self.posthoc_tau * self.log_prior

    def exact(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The same objective computed stably from logits in float32."""
        z = z.float()
        if self.name in ("ce", "nll", "nll_manual"):
            smoothing = self.smoothing if self.name == "ce" else 0.0
            return F.cross_entropy(
                z, normalised(y) if self.multilabel else y, weight=self.class_weight,
                ignore_index=self.ignore_index, label_smoothing=smoothing, reduction=self.reduction,
            )
        t = self.targets(y, torch.float32)
        if self.head == "sigmoid":
            terms = F.binary_cross_entropy_with_logits(z, t, pos_weight=self.pos_weight, reduction="none")
        else:  # BCE on softmax probabilities
            terms = -(t * F.log_softmax(z, dim=1) + (1 - t) * log1m_softmax(z))
        return self._reduce(terms, y)

    def clamped(self, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per element of p: is the BCE log term that counts at BCELoss's -100 clamp? (bool, z's shape).
        Only called when ``has_clamp``; a loss with its own clamp or clip counts that one here."""
        t = self.targets(y, torch.float32)
        p = p.float()
        at = ((t > 0) & (torch.log(p) <= CLAMP)) | ((t < 1) & (torch.log(1 - p) <= CLAMP))
        return at & self.labelled(y) if self.partial else at


# --- multi-label: the asymmetric loss --------------------------------------------------------------------------
class Asymmetric(Objective):
    r"""``loss=asl``: the asymmetric loss (Ridnik et al., ICCV 2021), as Alibaba-MIIL/ASL's ``AsymmetricLoss``
    computes it, per label on sigmoid probabilities p = sigmoid(z):

        positive terms (t = 1):  -(1 - p)^gamma_pos * log(max(p, eps))
        negative terms (t = 0):  -p_m^gamma_neg * log(max(1 - p_m, eps)),  p_m = max(p - clip, 0)

    (for soft t the reference's blend: pt = p t + (1 - p_m)(1 - t), weight (1 - pt)^(gamma_pos t +
    gamma_neg (1 - t)), log terms weighted by t and 1 - t). Defaults gamma_neg = 4, gamma_pos = 0 (the
    reference's training script; its class default is 1), clip = 0.05, eps = 1e-8. The focusing weight is
    differentiated, as in the reference's ``AsymmetricLoss`` (its lines that would detach it are commented
    out). ``pos_weight`` multiplies the positive terms, as for BCEWithLogitsLoss.

    Reduction: the reference returns the sum over batch and labels; here 'mean' (the default) divides by
    N*K like BCEWithLogitsLoss, so that the learning rate means the same for bce_logits and asl, and
    'sum' is the reference's. Ignored labels are masked (see Objective._reduce).

    Computed in float32 (the reference casts the model output to float before the loss under autocast):
    in half precision p.clamp(min=1e-8) rounds to 0 and a confident negative gives 0 * log(0) = NaN.

    Monitors: ``clamped`` counts the terms at a clamp or clip: positives whose p is below eps (log
    floored, zero gradient) and negatives inside the margin (p <= clip: zero loss and gradient, by design).
    ``exact`` is the same loss from log-sigmoids without the eps floor: loss_gap is what that floor hides.

    Shape: z (N, K) logits, y labels as for bce_logits (multi-hot (N, C) on a multi-label task); output scalar.
    """

    def __init__(self, lc: DictConfig, head: str, n_classes: int, pos_weight=None, class_weight=None,
                 multilabel: bool = False, partial: bool = False):
        super().__init__(lc, head, n_classes, pos_weight, class_weight, multilabel=multilabel, partial=partial)
        self.gamma_pos, self.gamma_neg = float(lc.gamma_pos), float(lc.gamma_neg)
        self.clip, self.eps = float(lc.clip), float(lc.eps)
        self.has_clamp = True

    def _focus(self, t: torch.Tensor) -> torch.Tensor:
        return self.gamma_pos * t + self.gamma_neg * (1 - t)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = z.float()
        t = self.targets(y, z.dtype)
        p = torch.sigmoid(z)
        p_neg = (1 - p + self.clip).clamp(max=1) if self.clip > 0 else 1 - p  # 1 - p_m
        pw = 1 if self.pos_weight is None else self.pos_weight
        log_terms = pw * t * torch.log(p.clamp(min=self.eps)) + (1 - t) * torch.log(p_neg.clamp(min=self.eps))
        pt = p * t + p_neg * (1 - t)
        return self._reduce(-log_terms * torch.pow(1 - pt, self._focus(t)), y)

    def exact(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = z.float()
        t = self.targets(y, torch.float32)
        q = torch.sigmoid(-z)  # 1 - p, without cancellation
        if self.clip > 0:
            log_p_neg, p_m = torch.log((q + self.clip).clamp(max=1)), (torch.sigmoid(z) - self.clip).clamp(min=0)
        else:
            log_p_neg, p_m = F.logsigmoid(-z), torch.sigmoid(z)
        pw = 1 if self.pos_weight is None else self.pos_weight
        log_terms = pw * t * F.logsigmoid(z) + (1 - t) * log_p_neg
        return self._reduce(-log_terms * torch.pow(t * q + (1 - t) * p_m, self._focus(t)), y)

    def clamped(self, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t, p = self.targets(y, torch.float32), p.float()
        neg = p <= self.clip if self.clip > 0 else 1 - p < self.eps
        at = ((t > 0) & (p < self.eps)) | ((t < 1) & neg)
        return at & self.labelled(y) if self.partial else at


# --- knowledge distillation ----------------------------------------------------------------------------------
def pack_teacher(y: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """The targets of a distillation run: column 0 the class index (as a float; ignore_index for an unlabelled
    sample), columns 1..C the teacher's logits. One float tensor (N, 1 + C), so that the training loop
    batches it like any target; :func:`unpack_teacher` decodes it."""
    return torch.cat([y.to(teacher_logits.dtype).unsqueeze(1), teacher_logits], dim=1)


def unpack_teacher(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return t[:, 0].long(), t[:, 1:]


class Distillation(Objective):
    r"""``loss=kd``: knowledge distillation (Hinton et al. 2015) from a finished lossbench run's logits v:

        alpha * T^2 * KL(softmax(v/T) || softmax(z/T)) + (1 - alpha) * CE(z, y)

    with ``nn.KLDivLoss(reduction="batchmean")`` on ``log_softmax(z/T)`` (the KL divergence per sample, as
    the PyTorch docs prescribe) and ``nn.CrossEntropyLoss`` (class_weight, label_smoothing and ignore_index
    apply to this term; an unlabelled sample is still distilled). T^2 keeps the soft term's gradient at the
    scale of the hard term's as T grows (its gradient scales as 1/T^2). Reduction 'sum': both terms summed.

    The targets are the teacher's logits packed with the labels (:func:`pack_teacher`): (N, 1 + C) floats.

    Bad examples, kept for comparison (like bce_manual):
    - ``kd_mean``: ``KLDivLoss(reduction="mean")``, PyTorch's default, divides by N*C, not N: the soft term is
      C times too small (the docs warn that 'mean' is not the KL divergence).
    - ``kd_prob``: softmax(z/T) (probabilities) as KLDivLoss's input, which expects log-probabilities: the
      value sum_c p_c (log p_c - q_c) is not a divergence (not 0 at q = p, can be negative).
    - ``kd_no_t2``: no T^2 factor: the right value of the KL, but its gradient is T^2 times too small.

    Monitors: probs = softmax(z); dead = zero gradient on a wrong labelled sample; ``exact`` is the correct
    ``kd`` objective (batchmean, T^2, log-probabilities) in float32 for all four, so loss_gap is each
    pitfall's error.

    Shape: z (N, C) logits, t (N, 1 + C) packed targets; output scalar.
    """

    def __init__(self, lc: DictConfig, head: str, n_classes: int, pos_weight=None, class_weight=None,
                 multilabel: bool = False, partial: bool = False):
        super().__init__(lc, head, n_classes, pos_weight, class_weight, multilabel=multilabel, partial=partial)
        self.T, self.alpha = float(lc.T), float(lc.alpha)
        kl_reduction = "mean" if self.name == "kd_mean" else "batchmean" if self.reduction == "mean" else "sum"
        self.kl = nn.KLDivLoss(reduction=kl_reduction)
        self.scale = 1.0 if self.name == "kd_no_t2" else self.T**2

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        y, v = unpack_teacher(t)
        target = torch.softmax(v / self.T, dim=1)
        student = torch.softmax(z / self.T, dim=1) if self.name == "kd_prob" else torch.log_softmax(z / self.T, dim=1)
        loss = self.alpha * self.scale * self.kl(student, target)
        if self.alpha < 1:
            loss = loss + (1 - self.alpha) * self.ce(z, y)
        return loss

    def exact(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        y, v = unpack_teacher(t)
        z = z.float()
        kl = F.kl_div(F.log_softmax(z / self.T, dim=1), F.log_softmax(v.float() / self.T, dim=1), log_target=True,
                      reduction="batchmean" if self.reduction == "mean" else "sum")
        loss = self.alpha * self.T**2 * kl
        if self.alpha < 1:
            loss = loss + (1 - self.alpha) * F.cross_entropy(
                z, y, weight=self.class_weight, ignore_index=self.ignore_index, label_smoothing=self.smoothing,
                reduction=self.reduction)
        return loss

    def wrong(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        y, _ = unpack_teacher(t)
        return (z.argmax(dim=1) != y) & (y != self.ignore_index)


def normalised(y: torch.Tensor) -> torch.Tensor:
    """A multi-hot target (N, C) as a distribution: y / (number of labels); a sample without labels stays 0
    (its CE term is 0)."""
    return y / y.sum(dim=1, keepdim=True).clamp(min=1)


# --- losses for imbalanced data: focal, LDAM (+ DRW), logit adjustment, balanced softmax, poly-1; bce_clipped ---
#
# Conventions shared by these losses (settled here, documented per class):
# - Softmax losses reduce as CrossEntropyLoss does: 'mean' = sum_i w_{y_i} l_i / sum_i w_{y_i} (= the mean over N
#   without class weights), 'sum' = sum_i w_{y_i} l_i. So each one with its extra term switched off (gamma = 0,
#   max_m = 0 and s = 1, tau = 0, eps = 0) equals nn.CrossEntropyLoss, class weights included.
# - Sigmoid losses reduce as the seeds' BCE losses do: each sample's K terms times its class weight, 'mean' over
#   all N*K elements (torchvision's 'mean' for the focal loss; not RetinaNet's sum / number of positives, see Focal).
# - The class weights of CB (Cui et al. 2019) are ``loss.class_weight=effective`` with ``loss.beta``.


def log_prior(counts: torch.Tensor | None, key: str) -> torch.Tensor:
    """log pi_c = log(n_c / N) of the training split (float32, shape (C,)); every class must be present."""
    if counts is None or (counts == 0).any():
        raise ConfigError(f"{key} needs the training class counts with every class present: counts "
                          f"{None if counts is None else counts.tolist()}.")
    counts = counts.double()
    return (counts / counts.sum()).log().float()


def _softmax_reduce(terms: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """CrossEntropyLoss's reduction of per-sample terms (N,) that already carry their class weight w_y."""
    if reduction == "sum":
        return terms.sum()
    return terms.mean() if w is None else terms.sum() / w[y].sum().to(terms.dtype)


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
    gamma = 0 with alpha off is exactly ``bce_logits``. ``num_pos`` is the papers' normalisation: the sum
    divided by the number of positive targets in the batch, max(1, sum t) (detectron2's RetinaNet divides
    ``sigmoid_focal_loss(reduction="sum")`` by max(1, positive anchors), smoothed by a running average; Cui et
    al.'s class-balanced code divides the weighted sum by the number of positive labels; ignored labels are not
    counted). In detection nearly all anchors are easy negatives; in classification with one label per sample
    that count is N for a one-vs-rest head (a constant factor K over 'mean') and, for a binary head on a 1:100
    task, about one positive per batch of 128: about 100x 'mean', a per-batch step size that swings with the
    count, and max(1, 0) = 1 (the plain sum) for a batch without positives.
    Softmax: as CrossEntropyLoss, 'mean' = sum w_y l / sum w_y (the LDAM-DRW code divides by N).

    Monitors: no clamp (clamped_frac 0); dead_frac counts wrong samples whose logit gradient is exactly 0 (none
    in the stable form); loss_gap is rounding only (the stable form in float32 is :meth:`exact`).

    Shape: z (N, K), y (N,) long; output scalar.
    """

    def __init__(self, lc: DictConfig, head: str, n_classes: int, pos_weight=None, class_weight=None,
                 multilabel: bool = False, partial: bool = False, counts: torch.Tensor | None = None):
        super().__init__(lc, head, n_classes, pos_weight, class_weight, multilabel=multilabel, partial=partial,
                         counts=counts)
        self.gamma, self.impl = float(lc.gamma), lc.impl
        alpha = lc.alpha
        if alpha is None:
            alpha = 0.25 if head == "sigmoid" and class_weight is None else -1
        self.alpha = float(alpha) if head == "sigmoid" else -1.0

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
            if self.reduction == "num_pos":
                t = self.targets(y, terms.dtype)
                pos = torch.where(self.labelled(y), t, 0).sum() if self.partial else t.sum()  # ignored: not counted
                loss = loss / pos.clamp_min(1)
            return loss
        w = self.class_weight
        return _softmax_reduce(terms if w is None else terms * w[y].to(terms.dtype), y, w, self.reduction)

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

    def __init__(self, lc: DictConfig, head: str, n_classes: int, pos_weight=None, class_weight=None,
                 multilabel: bool = False, partial: bool = False, counts: torch.Tensor | None = None):
        super().__init__(lc, head, n_classes, pos_weight, class_weight, multilabel=multilabel, partial=partial,
                         counts=counts)
        m = (-0.25 * log_prior(counts, "loss=ldam")).exp()  # n_c^(-1/4) up to a constant factor
        self.register_buffer("margins", m * (float(lc.max_m) / m.max()))
        self.s = float(lc.s)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z_m = z - F.one_hot(y, self.n_classes) * self.margins[y].unsqueeze(1)
        return F.cross_entropy(self.s * z_m, y, weight=self.class_weight, label_smoothing=self.smoothing,
                               reduction=self.reduction)

    def eval_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.s * z

    def probs(self, z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.s * z, dim=1)

    def exact(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.forward(z.float(), y)


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

    def __init__(self, lc: DictConfig, head: str, n_classes: int, pos_weight=None, class_weight=None,
                 multilabel: bool = False, partial: bool = False, counts: torch.Tensor | None = None):
        super().__init__(lc, head, n_classes, pos_weight, class_weight, multilabel=multilabel, partial=partial,
                         counts=counts)
        if lc.name == "balanced_softmax":
            shift = log_prior(counts, "loss=balanced_softmax") + math.log(float(counts.sum()))  # log n_c
        else:
            shift = float(lc.tau) * log_prior(counts, "loss=logit_adjusted")
        self.register_buffer("shift", shift)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(z + self.shift, y, weight=self.class_weight, label_smoothing=self.smoothing,
                               reduction=self.reduction)

    def exact(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.forward(z.float(), y)


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

    def __init__(self, lc: DictConfig, head: str, n_classes: int, pos_weight=None, class_weight=None,
                 multilabel: bool = False, partial: bool = False, counts: torch.Tensor | None = None):
        super().__init__(lc, head, n_classes, pos_weight, class_weight, multilabel=multilabel, partial=partial,
                         counts=counts)
        self.epsilon = float(lc.epsilon)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = self.targets(y, z.dtype)
        if self.head == "sigmoid":
            one_minus_pt = t * torch.sigmoid(-z) + (1 - t) * torch.sigmoid(z)
            return self._reduce(self.bce_logits(z, t) + self.epsilon * one_minus_pt, y)
        w = self.class_weight
        ce = F.cross_entropy(z, y, weight=w, label_smoothing=self.smoothing, reduction="none")
        poly = self.epsilon * (1 - (t * torch.softmax(z, dim=1)).sum(dim=1))
        return _softmax_reduce(ce + (poly if w is None else poly * w[y].to(poly.dtype)), y, w, self.reduction)

    def exact(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.forward(z.float(), y)


class ClippedBCE(Objective):
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

    def __init__(self, lc: DictConfig, head: str, n_classes: int, pos_weight=None, class_weight=None,
                 multilabel: bool = False, partial: bool = False, counts: torch.Tensor | None = None):
        super().__init__(lc, head, n_classes, pos_weight, class_weight, multilabel=multilabel, partial=partial,
                         counts=counts)
        self.eps = float(lc.eps)
        self.has_clamp = True

    def activation(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(z) if self.head == "sigmoid" else torch.softmax(z, dim=1)

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

    Steps 0 .. S-1 train the loss unweighted; from step S on, with ``loss.class_weight`` (``effective`` with
    ``loss.beta`` when unset; the reference uses beta = 0.9999 from epoch 160 of 200). The loop calls
    :meth:`begin_step` with the step (a host int) before each step: the switch is a Python attribute, with no
    host sync and no tensor op. Everything the loop and the monitors call goes to the objective in force, so
    val/loss and the monitors measure the loss being trained.
    """

    def __init__(self, lc: DictConfig, head: str, n_classes: int, counts: torch.Tensor, **kw):
        super().__init__()
        self.drw_step = int(lc.drw_step)
        plain = OmegaConf.merge(lc, {"class_weight": None, "drw_step": None})
        weighted = OmegaConf.merge(lc, {"class_weight": lc.class_weight or "effective", "drw_step": None})
        self.before = build(plain, head, n_classes, counts, **kw)
        self.after = build(weighted, head, n_classes, counts, **kw)
        self.weighted = False  # a plain attribute, not a submodule: stacks group objectives by their attributes
        self.name, self.head, self.n_classes, self.k = lc.name, head, n_classes, self.before.k
        self.has_clamp, self.reduction = self.before.has_clamp, self.before.reduction
        self.binary = self.before.binary

    @property
    def active(self) -> Objective:
        return self.after if self.weighted else self.before

    def begin_step(self, step: int) -> None:
        self.weighted = step >= self.drw_step

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.active(z, y)

    def probs(self, z: torch.Tensor) -> torch.Tensor:
        return self.active.probs(z)

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        return self.active.predict(z)

    def wrong(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.active.wrong(z, y)

    def exact(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.active.exact(z, y)

    def clamped(self, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.active.clamped(p, y)

    def eval_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.active.eval_logits(z)

    def posthoc_logits(self, z: torch.Tensor) -> torch.Tensor | None:
        return self.active.posthoc_logits(z)


# --- losses that optimise the AUC directly (LibAUC, Yuan et al. 2021) ------------------------------------------
def _positive_rate(counts: torch.Tensor | None, key: str) -> float:
    """p = n_pos / n of the training split; both classes must be present."""
    if counts is None or len(counts) != 2 or (counts == 0).any():
        raise ConfigError(f"{key} needs positives and negatives in the training split: counts "
                          f"{None if counts is None else counts.tolist()}.")
    return float(counts[1]) / float(counts.sum())


class AUCMargin(Objective):
    r"""``loss=auc_margin``: the AUC-margin min-max objective (Yuan et al., ICCV 2021, "Large-scale Robust Deep AUC
    Maximization"), as LibAUC's ``AUCMLoss`` (libauc/losses/auc.py, version v1) computes it, written here (LibAUC's
    wheel pulls graph and language-model libraries for these few lines). On scores h = sigmoid(z) of a binary
    sigmoid head, with E the mean over the batch's N samples:

        F = (1-p) E[(h-a)^2 1{y=1}] + p E[(h-b)^2 1{y=0}]
            + 2 alpha (p(1-p) m + E[p h 1{y=0} - (1-p) h 1{y=1}]) - p(1-p) alpha^2

    minimised over the model, a and b, maximised over alpha >= 0 (``optim=pesg``, :mod:`lossbench.pesg`). At the
    optimum a and b are the classes' mean scores and alpha = max(0, m - (E[h|y=1] - E[h|y=0])): a square loss on
    the gap between the classes' mean scores with margin m, plus each class's score variance. ``margin`` m = 1;
    p: ``prior=train`` the training split's positive rate (the paper's; fixed), ``prior=batch`` each batch's
    (LibAUC's default ``auto=True``). a, b and alpha start at 0 (LibAUC's) and are parameters of this module:
    checkpoints save them (the objective's state_dict).

    Monitors: no clamp; dead_frac counts wrong samples with a zero logit gradient (sigmoid saturation:
    h' = h(1-h) = 0); loss_gap: rounding only (forward in float32 is :meth:`exact`).

    Shape: z (N, 1), y (N,) long in {0, 1}; output scalar.
    """

    def __init__(self, lc: DictConfig, head: str, n_classes: int, pos_weight=None, class_weight=None,
                 multilabel: bool = False, partial: bool = False, counts: torch.Tensor | None = None):
        super().__init__(lc, head, n_classes, pos_weight, class_weight, multilabel=multilabel, partial=partial,
                         counts=counts)
        self.margin, self.batch_prior = float(lc.margin), lc.prior == "batch"
        self.p = _positive_rate(counts, "loss=auc_margin")
        self.a, self.b, self.alpha = (nn.Parameter(torch.zeros(1)) for _ in range(3))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = torch.sigmoid(z.float()[:, 0])
        pos = (y == 1).float()
        neg = 1 - pos
        p = pos.mean() if self.batch_prior else self.p
        a, b, alpha = self.a[0], self.b[0], self.alpha[0]
        return ((1 - p) * ((h - a) ** 2 * pos).mean() + p * ((h - b) ** 2 * neg).mean()
                + 2 * alpha * (p * (1 - p) * self.margin + (p * h * neg - (1 - p) * h * pos).mean())
                - p * (1 - p) * alpha**2)

    def exact(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.forward(z, y)

    def duals(self) -> dict[str, torch.Tensor]:
        return {"a": self.a.detach(), "b": self.b.detach(), "alpha": self.alpha.detach()}


PAIR_CHUNK = 1 << 22  # (row, column) entries of the pair matrix computed at once: an evaluation set is chunked


class AUCPairwise(Objective):
    r"""``loss=auc_pairwise``: a surrogate of 1 - AUC over every (positive i, negative j) pair of the batch, as
    LibAUC's ``PairwiseAUCLoss`` (libauc/losses/auc.py; surrogates from libauc/losses/surrogate.py), on scores
    h = sigmoid(z), d_ij = h_i - h_j:

        l = sum_{i: y=1} sum_{j: y=0} s(d_ij) / (n_pos n_neg)
        s = squared (m - d)^2 | squared_hinge max(m - d, 0)^2 (default) | logistic log(1 + exp(-m d))

    ``margin`` m = 1 (the logistic surrogate's scale, LibAUC's hparam). Vectorised: the N x N difference matrix
    masked to the (positive, negative) pairs, in chunks of rows for large N (an evaluation set), with no host sync
    and no data-dependent shape. A batch without a positive or without a negative has no pair: it contributes 0
    with a zero gradient (LibAUC asserts instead), and ``numerics/pairless_frac`` counts such batches
    (``trainer.pos_share`` guarantees both classes in every batch).

    Monitors: no clamp; dead_frac: wrong samples with a zero logit gradient (saturated sigmoid, or a sample in no
    pair); loss_gap: rounding only.

    Shape: z (N, 1), y (N,) long in {0, 1}; output scalar.
    """

    def __init__(self, lc: DictConfig, head: str, n_classes: int, pos_weight=None, class_weight=None,
                 multilabel: bool = False, partial: bool = False, counts: torch.Tensor | None = None):
        super().__init__(lc, head, n_classes, pos_weight, class_weight, multilabel=multilabel, partial=partial,
                         counts=counts)
        self.margin, self.surrogate = float(lc.margin), lc.surrogate

    def _surrogate(self, d: torch.Tensor) -> torch.Tensor:
        if self.surrogate == "squared":
            return (self.margin - d) ** 2
        if self.surrogate == "squared_hinge":
            return torch.clamp(self.margin - d, min=0) ** 2
        return F.softplus(-self.margin * d)  # log(1 + exp(-m d)), without overflow

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = torch.sigmoid(z.float()[:, 0])
        pos, neg = y == 1, y == 0
        rows = max(1, PAIR_CHUNK // len(h))
        total = h.new_zeros(())
        for i in range(0, len(h), rows):  # one chunk for a training batch
            d = h[i : i + rows, None] - h[None, :]
            pairs = pos[i : i + rows, None] & neg[None, :]
            total = total + torch.where(pairs, self._surrogate(d), 0).sum()
        n_pairs = pos.sum() * neg.sum()
        return total / n_pairs.clamp(min=1)

    def exact(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.forward(z, y)


LOSS_CLASSES = {"focal": Focal, "ldam": LDAM, "logit_adjusted": LogitAdjusted, "balanced_softmax": LogitAdjusted,
                "poly1": Poly1, "bce_clipped": ClippedBCE, "auc_margin": AUCMargin, "auc_pairwise": AUCPairwise}


def build(lc: DictConfig, head: str, n_classes: int, counts: torch.Tensor, n_labelled: torch.Tensor | None = None,
          *, multilabel: bool = False, partial: bool = False) -> Objective | DRW:
    """The run's objective. counts/n_labelled: the training split's labelled class counts and labelled
    samples (multi-label: positives and labelled entries per label; see data.Dataset)."""
    if lc.get("drw_step") is not None:  # deferred re-weighting: two objectives, switched by begin_step
        return DRW(lc, head, n_classes, counts, n_labelled=n_labelled, multilabel=multilabel, partial=partial)
    pos_weight, class_weight = weights(lc, head, counts, n_labelled, multilabel)
    if class_weight is not None and len(class_weight) != n_classes:
        raise ConfigError(f"loss.class_weight needs {n_classes} entries.")
    cls = {"asl": Asymmetric, **dict.fromkeys(KD_LOSSES, Distillation), **LOSS_CLASSES}.get(lc.name, Objective)
    extra = {"counts": counts} if cls is Objective or lc.name in LOSS_CLASSES else {}  # the class prior's users
    return cls(lc, head, n_classes, pos_weight, class_weight, multilabel=multilabel, partial=partial, **extra)
