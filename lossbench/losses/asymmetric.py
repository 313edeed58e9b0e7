r"""Multi-label: the asymmetric loss (Ridnik et al., ICCV 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossbench.losses.base import Objective


class Asymmetric(Objective):
    r"""``loss=asl``: the asymmetric loss, as Alibaba-MIIL/ASL's ``AsymmetricLoss`` computes it, per label on
    sigmoid probabilities p = sigmoid(z):

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

    has_clamp = True

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8,
                 **common):
        super().__init__(**common)
        if min(gamma_neg, gamma_pos) < 0 or not 0 <= clip < 1 or not 0 < eps < 1:
            raise ValueError(f"asl: gamma_neg, gamma_pos >= 0, clip in [0, 1), eps in (0, 1); got {gamma_neg}, "
                             f"{gamma_pos}, {clip}, {eps}")
        self.gamma_pos, self.gamma_neg = float(gamma_pos), float(gamma_neg)
        self.clip, self.eps = float(clip), float(eps)

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
