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
=============  ====================  ===========================================================  =======

Shapes: sigmoid losses take z and t of shape (N, K) (K = 1 for binary, C for one-vs-rest); softmax
losses take z of shape (N, C) and y of shape (N,) (long). All return a scalar.

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

SIGMOID_FAMILY = ("bce", "bce_logits", "bce_manual")
CLAMP = -100.0  # BCELoss's floor on each log term


def weights(lc: DictConfig, head: str, counts: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(pos_weight of shape (K,), class_weight of shape (C,)) from the config and training class counts."""
    c = len(counts)
    counts = counts.double()
    n = counts.sum()
    pos_weight = None
    if lc.pos_weight is not None:
        k = 1 if c == 2 else c
        pos = counts[1:] if c == 2 else counts
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

    def __init__(self, lc: DictConfig, head: str, n_classes: int, pos_weight=None, class_weight=None):
        super().__init__()
        self.name, self.head, self.n_classes = lc.name, head, n_classes
        self.k = 1 if head == "sigmoid" and n_classes == 2 else n_classes
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
        """Float targets t of z's shape for the BCE family (smoothed)."""
        t = y.unsqueeze(1).to(dtype) if self.k == 1 else F.one_hot(y, self.n_classes).to(dtype)
        if self.smoothing > 0:
            t = t * (1 - self.smoothing) + self.smoothing / (2 if self.head == "sigmoid" else self.n_classes)
        return t

    def _reduce(self, terms: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.class_weight is not None:
            terms = terms * self.class_weight[y].unsqueeze(1).to(terms.dtype)
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
            return self.ce(z, y)
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
        """Per sample (bool, (N,)): is the prediction wrong? (numerics/dead_frac counts the dead among them)"""
        return self.predict(z) != y

    def begin_step(self, step: int) -> None:
        """Called by the training loop before each step (a host int, no sync): losses with a schedule
        (e.g. deferred re-weighting) switch here. The seeds' losses have none."""

    def exact(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The same objective computed stably from logits in float32."""
        z = z.float()
        if self.name in ("ce", "nll", "nll_manual"):
            smoothing = self.smoothing if self.name == "ce" else 0.0
            return F.cross_entropy(
                z, y, weight=self.class_weight, ignore_index=self.ignore_index, label_smoothing=smoothing,
                reduction=self.reduction,
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
        return ((t > 0) & (torch.log(p) <= CLAMP)) | ((t < 1) & (torch.log(1 - p) <= CLAMP))


def build(lc: DictConfig, head: str, n_classes: int, counts: torch.Tensor) -> Objective:
    pos_weight, class_weight = weights(lc, head, counts)
    if class_weight is not None and len(class_weight) != n_classes:
        raise ConfigError(f"loss.class_weight needs {n_classes} entries.")
    return Objective(lc, head, n_classes, pos_weight, class_weight)
