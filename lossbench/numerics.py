"""Numeric-health monitors: accumulated on the device, read (one host sync) at log points.

Every step (also with monitors off: divergence is always recorded)
  nonfinite_loss   steps whose loss was NaN/Inf. The step's loss tensor is kept, and the kept ones are
                   reduced together every BUFFER steps and at reads: no host sync and no kernel per step.
Every ``numerics.every`` steps (the sampled steps; monitors on)
  grad_norm        global L2 norm of the (unscaled) gradients (one ``torch._foreach_norm``)
  nonfinite_grad   sampled steps with a NaN/Inf gradient
  saturated_frac   fraction of predicted probabilities exactly 0 or 1 in the compute dtype
  clamped_frac     fraction of BCE log terms at BCELoss's -100 clamp (0 for losses without one)
  dead_frac        fraction of samples whose gradient w.r.t. their logits is exactly 0 while their
                   prediction is wrong: they can never be corrected
  max_abs_logit    largest finite |z|
  loss_gap         reported loss minus the same objective computed stably from logits (Objective.exact)
The last five come from the sampled batches' losses, logits, labels and logit gradients, which are kept
(references, not copies) and processed together at the next read: one set of ops per read instead of a
couple of dozen small ops per sampled step.

Gradients are checked on every step where a per-step answer is needed: with trainer.on_nonfinite=skip (the
update is skipped on a non-finite gradient) and under fp16, where nonfinite_grad counts the steps that the
GradScaler skips (monitors on or off). Elsewhere a sampled check suffices to place a divergence: a NaN/Inf
gradient makes the weights NaN/Inf at that update, so the next step's loss is NaN/Inf. The per-step gradient
norm (about 50 us per MLP step on one CPU core, 2% of the step) is what the sampling saves.
"""

from __future__ import annotations

import math

import torch

from lossbench.losses import Objective

DETAIL = ("saturated_frac", "clamped_frac", "dead_frac", "loss_gap")
BUFFER = 64  # steps whose losses are kept on the device before they are reduced
DETAIL_BUFFER = 16  # sampled batches kept at most before their statistics are computed


class Monitor:
    def __init__(self, device: torch.device, objective: Objective, enabled: bool = True, every: int = 1,
                 scaled_grads: bool = False):
        self.objective, self.enabled, self.every = objective, enabled, every
        # Under fp16 the GradScaler expects overflowing gradients and skips those steps: only a non-finite
        # loss is divergence there.
        self.scaled_grads = scaled_grads
        self.device = device
        # Device sums over the window since the last read: loss, nonfinite_loss, nonfinite_grad, grad_norm,
        # then DETAIL; maxima: max_abs_logit, max_grad_norm; the first step with a non-finite loss or gradient.
        self.win = torch.zeros(4 + len(DETAIL), device=device)
        self.win_max = torch.zeros(2, device=device)
        self.first_bad = torch.full((), math.inf, device=device)
        self.losses: list[torch.Tensor] = []  # unreduced per-step losses (0-d device tensors)
        self.grad_rows: list[torch.Tensor] = []  # unreduced per-parameter gradient norms of sampled steps
        self.grad_steps: list[torch.Tensor] = []  # and their step numbers (0-d device tensors: no host copy)
        self.kept: list[tuple[torch.Tensor, ...]] = []  # unprocessed sampled batches: loss, z, y, dL/dz
        self.step_t = 0  # steps observed so far, over the whole run
        self.window = {"steps": 0, "grad_steps": 0, "detail_steps": 0}  # counted on the host: no sync
        self.totals = {"nonfinite_loss": 0, "nonfinite_grad": 0, "max_abs_logit": 0.0, "max_grad_norm": 0.0,
                       "saturated_frac_mean": 0.0, "clamped_frac_mean": 0.0, "dead_frac_mean": 0.0,
                       "loss_gap_mean": 0.0, "detail_steps": 0, "grad_steps": 0, "steps": 0}
        self.first_nonfinite_step: int | None = None

    def wants_detail(self, step: int) -> bool:
        return self.enabled and step % self.every == 0

    def observe(self, loss: torch.Tensor) -> torch.Tensor:
        """Record one step's loss (no host sync, no op); returns it, detached."""
        loss = loss.detach()
        self.losses.append(loss)
        self.step_t += 1
        self.window["steps"] += 1
        if len(self.losses) == BUFFER:
            self._reduce()
        return loss

    def _reduce(self) -> None:
        """Fold the kept losses into the window sums, on the device."""
        n = len(self.losses)
        if not n:
            return
        loss = torch.stack(self.losses).float()
        bad = ~torch.isfinite(loss)
        step = torch.arange(self.step_t - n, self.step_t, device=loss.device, dtype=torch.float32)
        self.first_bad = torch.minimum(self.first_bad, torch.where(bad, step, math.inf).min())
        self.win[:2] += torch.stack([loss.sum(), bad.sum()])
        self.losses = []

    def observe_grads(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """Record the per-parameter gradient norms of the step just observed (one ``torch._foreach_norm``, no
        host sync): kept and reduced together at the next read. Returns them; all finite iff every gradient is."""
        norms = torch.stack(torch._foreach_norm(grads))
        self.grad_rows.append(norms)
        self.grad_steps.append(torch.full((), self.step_t - 1, dtype=torch.float32, device=norms.device))
        self.window["grad_steps"] += 1
        if len(self.grad_rows) == BUFFER:
            self._reduce_grads()
        return norms

    def _reduce_grads(self) -> None:
        """Fold the kept gradient norms into the window sums and maxima, on the device."""
        if not self.grad_rows:
            return
        gnorm = torch.stack(self.grad_rows).double().square().sum(dim=1).sqrt()  # float64: squares don't overflow
        bad = ~torch.isfinite(gnorm)
        gnorm = torch.where(bad, 0.0, gnorm).float()
        self.win[2:4] += torch.stack([bad.sum().float(), gnorm.sum()])
        self.win_max[1] = torch.maximum(self.win_max[1], gnorm.max())
        if not self.scaled_grads:
            first = torch.where(bad, torch.stack(self.grad_steps), math.inf).min()
            self.first_bad = torch.minimum(self.first_bad, first)
        self.grad_rows, self.grad_steps = [], []

    def observe_detail(self, loss: torch.Tensor, z: torch.Tensor, y: torch.Tensor, z_grad: torch.Tensor | None):
        """Keep this batch for the saturation, clamp, dead-gradient, logit-range and loss-gap statistics."""
        z_grad = torch.ones_like(z) if z_grad is None else z_grad  # no gradient: none counts as dead
        self.kept.append((loss.detach(), z.detach(), y, z_grad))
        self.window["detail_steps"] += 1
        if len(self.kept) == DETAIL_BUFFER:
            self._reduce_detail()

    def _reduce_detail(self) -> None:
        """The kept batches' statistics, all at once, into the window sums (per batch: a mean over it)."""
        if not self.kept:
            return
        obj = self.objective
        loss, z, y, z_grad = (torch.stack(t) for t in zip(*self.kept, strict=True))  # (n,) (n,B,K) (n,B) (n,B,K)
        n, b, k = z.shape
        with torch.no_grad():
            zf, yf = z.reshape(n * b, k), y.reshape(n * b, *y.shape[2:])  # targets may be (B,) or (B, ...)
            p = obj.probs(zf)
            saturated = ((p == 0) | (p == 1)).float().view(n, -1).mean(1)
            clamped = obj.clamped(p, yf).float().view(n, -1).mean(1) if obj.has_clamp else torch.zeros_like(saturated)
            dead = ((z_grad.reshape(n * b, k) == 0).all(dim=1) & obj.wrong(zf, yf)).float().view(n, b).mean(1)
            # one exact() per kept batch (at most DETAIL_BUFFER): it reduces over its batch as the loss does
            gap = loss.float() - torch.stack([obj.exact(z[i], y[i]) for i in range(n)])
            finite_abs = torch.where(torch.isfinite(z), z.abs(), 0.0).max().float()
            self.win[4:] += torch.stack([saturated, clamped, dead, gap]).sum(dim=1)
            self.win_max[0] = torch.maximum(self.win_max[0], finite_abs)
        self.kept = []

    def read(self) -> dict[str, float]:
        """Window averages since the last read (one host sync), folded into the run totals."""
        self._reduce()
        self._reduce_grads()
        self._reduce_detail()
        values = torch.cat([self.win, self.win_max, self.first_bad.reshape(1)]).tolist()
        self.win.zero_()
        self.win_max.zero_()
        w = dict(zip(("loss", "nonfinite_loss", "nonfinite_grad", "grad_norm", *DETAIL, "max_abs_logit",
                      "max_grad_norm", "first_bad"), values, strict=True))
        n, ng, nd = self.window["steps"], self.window["grad_steps"], self.window["detail_steps"]
        self.window = dict.fromkeys(self.window, 0)
        if math.isfinite(w["first_bad"]) and self.first_nonfinite_step is None:
            self.first_nonfinite_step = int(w["first_bad"])
        t = self.totals
        t["steps"] += n
        t["grad_steps"] += ng
        t["nonfinite_loss"] += int(w["nonfinite_loss"])
        t["nonfinite_grad"] += int(w["nonfinite_grad"])
        t["max_abs_logit"] = max(t["max_abs_logit"], w["max_abs_logit"])
        t["max_grad_norm"] = max(t["max_grad_norm"], w["max_grad_norm"])
        if nd:
            done = t["detail_steps"]
            for k in DETAIL:
                t[f"{k}_mean"] = (t[f"{k}_mean"] * done + w[k]) / (done + nd)
            t["detail_steps"] = done + nd
        out = {"train/loss": w["loss"] / max(n, 1), "numerics/nonfinite_loss": w["nonfinite_loss"],
               "numerics/nonfinite_grad": w["nonfinite_grad"]}
        if ng:
            out["numerics/grad_norm"] = w["grad_norm"] / ng
            out["numerics/max_grad_norm"] = w["max_grad_norm"]
        if nd:
            for k in DETAIL:
                out[f"numerics/{k}"] = w[k] / nd
            out["numerics/max_abs_logit"] = w["max_abs_logit"]
        return out

    def summary(self) -> dict:
        return {**self.totals, "first_nonfinite_step": self.first_nonfinite_step}

    # The unread window (kept losses and batches included, unreduced: the sums must add up in the same order)
    # goes into checkpoints too, so that a resumed run logs the same windows and totals as an uninterrupted one.
    _STATE = ("win", "win_max", "first_bad", "step_t", "window", "totals", "first_nonfinite_step")

    def state_dict(self) -> dict:
        state = {k: (v.cpu().clone() if isinstance(v, torch.Tensor) else v)
                 for k, v in ((k, getattr(self, k)) for k in self._STATE)}
        state["losses"] = [t.cpu() for t in self.losses]
        state["grad_rows"] = [t.cpu() for t in self.grad_rows]
        state["grad_steps"] = [t.cpu() for t in self.grad_steps]
        state["kept"] = [tuple(t.cpu() for t in batch) for batch in self.kept]
        return state

    def load_state_dict(self, state: dict) -> None:
        for k in self._STATE:
            v = state[k]
            setattr(self, k, v.to(self.device) if isinstance(v, torch.Tensor) else dict(v) if isinstance(v, dict) else v)
        self.losses = [t.to(self.device) for t in state["losses"]]
        self.grad_rows = [t.to(self.device) for t in state["grad_rows"]]
        self.grad_steps = [t.to(self.device) for t in state["grad_steps"]]
        self.kept = [tuple(t.to(self.device) for t in batch) for batch in state["kept"]]


def finite_part(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The finite values of x (flattened, float32, on the host) and how many were not finite."""
    x = x.detach().float().flatten().cpu()
    ok = torch.isfinite(x)
    return x[ok], int((~ok).sum())


def log_histograms(writer, step: int, z: torch.Tensor, p: torch.Tensor) -> None:
    """Histograms of logits and probabilities; non-finite values are counted, never histogrammed."""
    for name, t in (("logits", z), ("probs", p)):
        values, bad = finite_part(t)
        writer.add_scalar(f"numerics/{name}_nonfinite", bad, step)
        if values.numel():  # 30 buckets, as TensorBoard's own histogram summary (its default: ~1500, 4x the time)
            writer.add_histogram(f"hist/{name}", values, step, bins=30)
