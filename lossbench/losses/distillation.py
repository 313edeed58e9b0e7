r"""Knowledge distillation (Hinton et al. 2015) from a finished lossbench run's logits, and three bad examples."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossbench.losses.base import Objective


def pack_teacher(y: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """The targets of a distillation run: column 0 the class index (as a float; ignore_index for an unlabelled
    sample), columns 1..C the teacher's logits. One float tensor (N, 1 + C), so that the training loop
    batches it like any target; :func:`unpack_teacher` decodes it."""
    return torch.cat([y.to(teacher_logits.dtype).unsqueeze(1), teacher_logits], dim=1)


def unpack_teacher(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return t[:, 0].long(), t[:, 1:]


class Distillation(Objective):
    r"""``loss=kd``: knowledge distillation from a teacher's logits v:

        l = alpha * T^2 * KL(softmax(v/T) || softmax(z/T)) + (1 - alpha) * CE(z, y)

    with ``KLDivLoss(reduction="batchmean")`` on ``log_softmax(z/T)`` (the KL divergence per sample, as the
    PyTorch docs prescribe) and ``CrossEntropyLoss`` (class_weight, label_smoothing and ignore_index apply to this
    term; an unlabelled sample is still distilled). T^2 keeps the soft term's gradient at the scale of the hard
    term's as T grows (its gradient scales as 1/T^2). Reduction 'sum': both terms summed.

    Args: ``T`` > 0 the temperature (4), ``alpha`` in [0, 1] the soft term's weight (0.9); the rest as
    :class:`Objective`.

    The targets are the teacher's logits packed with the labels (:func:`pack_teacher`): (N, 1 + C) floats.

    Monitors: probs = softmax(z); dead = zero gradient on a wrong labelled sample; ``exact`` is the correct
    ``kd`` objective (batchmean, T^2, log-probabilities) in float32 for all four, so loss_gap is each
    pitfall's error.

    Shape: z (N, C) logits, t (N, 1 + C) packed targets; output scalar.
    """

    def __init__(self, T: float = 4.0, alpha: float = 0.9, **common):
        super().__init__(**common)
        if not T > 0 or not 0 <= alpha <= 1:
            raise ValueError(f"distillation: T > 0 and alpha in [0, 1], got T={T}, alpha={alpha}")
        self.T, self.alpha = float(T), float(alpha)
        self.kl_reduction = "batchmean" if self.reduction == "mean" else "sum"
        self.scale = self.T**2

    def student(self, z: torch.Tensor) -> torch.Tensor:
        """KLDivLoss's input: the student's log-probabilities at temperature T."""
        return torch.log_softmax(z / self.T, dim=1)

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        y, v = unpack_teacher(t)
        target = torch.softmax(v / self.T, dim=1)
        loss = self.alpha * self.scale * F.kl_div(self.student(z), target, reduction=self.kl_reduction)
        if self.alpha < 1:
            loss = loss + (1 - self.alpha) * F.cross_entropy(
                z, y, weight=self.class_weight, ignore_index=self.ignore_index, label_smoothing=self.smoothing,
                reduction=self.reduction)
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


class DistillationKLMean(Distillation):
    """BAD EXAMPLE ``loss=kd_mean``: ``KLDivLoss(reduction="mean")``, PyTorch's default, divides by N*C, not N: the
    soft term is C times too small (the docs warn that 'mean' is not the KL divergence)."""

    def __init__(self, T: float = 4.0, alpha: float = 0.9, **common):
        super().__init__(T, alpha, **common)
        self.kl_reduction = "mean"


class DistillationProbInput(Distillation):
    """BAD EXAMPLE ``loss=kd_prob``: softmax(z/T) (probabilities) as KLDivLoss's input, which expects
    log-probabilities: the value sum_c p_c (log p_c - q_c) is not a divergence (not 0 at q = p, can be negative)."""

    def student(self, z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(z / self.T, dim=1)


class DistillationNoT2(Distillation):
    """BAD EXAMPLE ``loss=kd_no_t2``: no T^2 factor: the right value of the KL, but its gradient is T^2 times too
    small."""

    def __init__(self, T: float = 4.0, alpha: float = 0.9, **common):
        super().__init__(T, alpha, **common)
        self.scale = 1.0
