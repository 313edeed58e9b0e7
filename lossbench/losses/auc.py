r"""Losses that optimise the AUC directly (LibAUC, Yuan et al. 2021): binary tasks, one sigmoid score per sample.

Both compute in float32 from the start (their ``exact`` is their forward): loss_gap is rounding only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lossbench.errors import ConfigError
from lossbench.losses.base import Objective
from lossbench.losses.catalog import AUC_PRIORS, SURROGATES


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

    minimised over the model, a and b, maximised over alpha >= 0 (``optim=pesg``, :mod:`lossbench.engine.pesg`). At the
    optimum a and b are the classes' mean scores and alpha = max(0, m - (E[h|y=1] - E[h|y=0])): a square loss on
    the gap between the classes' mean scores with margin m, plus each class's score variance. ``margin`` m = 1;
    p: ``prior=train`` the training split's positive rate (the paper's; fixed), ``prior=batch`` each batch's
    (LibAUC's default ``auto=True``). a, b and alpha start at 0 (LibAUC's) and are parameters of this module:
    checkpoints save them (the objective's state_dict).

    Monitors: no clamp; dead_frac counts wrong samples with a zero logit gradient (sigmoid saturation:
    h' = h(1-h) = 0); loss_gap: rounding only (forward in float32 is :meth:`exact`).

    Shape: z (N, 1), y (N,) long in {0, 1}; output scalar.
    """

    def __init__(self, margin: float = 1.0, prior: str = "train", *, counts: torch.Tensor, **common):
        super().__init__(counts=counts, **common)
        if not margin > 0 or prior not in AUC_PRIORS:
            raise ValueError(f"auc_margin: margin > 0 and prior in {AUC_PRIORS}, got {margin}, {prior!r}")
        self.margin, self.batch_prior = float(margin), prior == "batch"
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

    def __init__(self, margin: float = 1.0, surrogate: str = "squared_hinge", **common):
        super().__init__(**common)
        if not margin > 0 or surrogate not in SURROGATES:
            raise ValueError(f"auc_pairwise: margin > 0 and surrogate in {SURROGATES}, got {margin}, {surrogate!r}")
        self.margin, self.surrogate = float(margin), surrogate

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
