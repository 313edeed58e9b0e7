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

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
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


def log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a <= 0, accurate everywhere (Mächler 2012)."""
    return torch.where(a > -0.6931471805599453, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


class Objective(nn.Module):
    """Head activation + criterion: ``forward(z, y)`` is the training loss, as a user would write it."""

    def __init__(self, lc: DictConfig, head: str, n_classes: int, pos_weight=None, class_weight=None,
                 multilabel: bool = False, partial: bool = False):
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
            log_p = F.log_softmax(z, dim=1)
            terms = -(t * log_p + (1 - t) * log1mexp(log_p))
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


def build(lc: DictConfig, head: str, n_classes: int, counts: torch.Tensor, n_labelled: torch.Tensor | None = None,
          *, multilabel: bool = False, partial: bool = False) -> Objective:
    """The run's objective. counts/n_labelled: the training split's labelled class counts and labelled
    samples (multi-label: positives and labelled entries per label; see data.Dataset)."""
    pos_weight, class_weight = weights(lc, head, counts, n_labelled, multilabel)
    if class_weight is not None and len(class_weight) != n_classes:
        raise ConfigError(f"loss.class_weight needs {n_classes} entries.")
    cls = {"asl": Asymmetric, **dict.fromkeys(KD_LOSSES, Distillation)}.get(lc.name, Objective)
    return cls(lc, head, n_classes, pos_weight, class_weight, multilabel=multilabel, partial=partial)
