r"""PESG: the primal-dual optimiser of the AUC-margin loss (Yuan et al., ICCV 2021), as LibAUC's
``libauc/optimizers/pesg.py`` defines it in its SGD mode, written here rather than imported (LibAUC's wheel
pulls graph and language-model libraries for this file).

Primal variables v (the model's parameters and the loss's a, b), per step, with g the gradient:

    d   = clip(g, -clip_value, clip_value) + epoch_decay (v - v_ref) + weight_decay v
    buf = d at the first step, then (1 - momentum) buf + momentum d      (LibAUC's convention, not torch.optim's)
    v   = v - lr buf

Dual variable alpha (the loss's), after the primal step (LibAUC's closed-form ascent direction, not autograd's
gradient: 2 (m + b - a) - 2 alpha is dF/dalpha of the prior-free objective with the class means replaced by
a and b):

    alpha = clip(alpha + lr (2 (margin + b - a) - 2 alpha), 0, 999)

Epoch decay: at each step listed in ``decay_steps`` (counted from 1 after the update), lr /= decay_factor and
v_ref becomes the mean of the iterates since the last such step (LibAUC's ``update_regularizer``, which its
examples call at 50% and 75% of training). v_ref starts at v_0, the initial point (the paper's step 1; LibAUC's
code draws it from N(0, 0.01) instead).

Everything is in ``state_dict()``: the momentum buffers, v_ref and the running sum of iterates per parameter,
the step count and iterates since the last decay, and the current lr (param groups), so a resumed run continues
bitwise. Without a, b, alpha (another loss) this is SGD with clipping, epoch decay and LibAUC's momentum.
"""

from __future__ import annotations

import torch


class PESG(torch.optim.Optimizer):
    """PESG over ``params`` (the model's), and the loss's duals when given: {"a", "b", "alpha"} (1-element
    parameters) and its margin."""

    def __init__(self, params, duals: dict[str, torch.Tensor] | None = None, margin: float = 1.0, lr: float = 0.1,
                 momentum: float = 0.9, weight_decay: float = 1e-5, epoch_decay: float = 2e-3,
                 clip_value: float = 1.0, decay_steps: tuple[int, ...] = (), decay_factor: float = 10.0):
        params = list(params)
        duals = duals or {}
        self.has_duals = bool(duals)
        groups = [{"params": params + ([duals["a"], duals["b"]] if duals else [])}]
        if duals:
            groups.append({"params": [duals["alpha"]], "dual": True})
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "epoch_decay": epoch_decay,
                    "clip_value": clip_value, "margin": margin, "dual": False, "step": 0, "since_decay": 0,
                    "decay_steps": list(decay_steps), "decay_factor": decay_factor}
        super().__init__(groups, defaults)
        for p in groups[0]["params"]:  # v_ref = v_0 and the sum of iterates since the last decay
            self.state[p]["ref"] = p.detach().clone()
            self.state[p]["acc"] = torch.zeros_like(p)

    @torch.no_grad()
    def step(self, closure=None):
        primal = self.param_groups[0]
        lr, mu, c = primal["lr"], primal["momentum"], primal["clip_value"]
        wd, ed = primal["weight_decay"], primal["epoch_decay"]
        for p in primal["params"]:
            if p.grad is None:
                continue
            st = self.state[p]
            d = p.grad.clamp(-c, c)
            if ed > 0:
                d = d + ed * (p - st["ref"])
            d = d + wd * p
            if mu != 0:
                if "momentum_buffer" not in st:
                    st["momentum_buffer"] = d.clone()
                else:
                    st["momentum_buffer"].mul_(1 - mu).add_(d, alpha=mu)
                d = st["momentum_buffer"]
            p.sub_(lr * d)
            st["acc"].add_(p)
        if self.has_duals:
            a, b = primal["params"][-2], primal["params"][-1]
            alpha = self.param_groups[1]["params"][0]
            if alpha.grad is not None:
                alpha.add_(lr * (2 * (primal["margin"] + b - a) - 2 * alpha)).clamp_(0, 999)
        primal["step"] += 1
        primal["since_decay"] += 1
        if primal["step"] in primal["decay_steps"]:
            self._decay()

    def _decay(self) -> None:
        """lr /= decay_factor for every group; v_ref = the mean iterate since the last decay; the sum restarts."""
        primal = self.param_groups[0]
        for g in self.param_groups:
            g["lr"] = g["lr"] / primal["decay_factor"]
        for p in primal["params"]:
            st = self.state[p]
            st["ref"] = st["acc"] / primal["since_decay"]
            st["acc"] = torch.zeros_like(p)
        primal["since_decay"] = 0
