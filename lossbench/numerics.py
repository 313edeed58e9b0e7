"""Numeric-health monitors: accumulated on the device every step, read (one host sync) at log points.

Every step (the cheap part, also with monitors off: divergence is always recorded). A step costs one
``torch.stack`` of its loss and per-parameter gradient norms (``torch._foreach_norm``) into a row of a
device buffer; the rows are reduced together every BUFFER steps and at reads, with no host sync.
  nonfinite_loss   steps whose loss was NaN/Inf
  nonfinite_grad   steps with a NaN/Inf gradient (monitors on; under fp16 these are the steps the
                   GradScaler skips)
  grad_norm        global L2 norm of the (unscaled) gradients (monitors on)
Every ``numerics.every`` steps, on the batch (the detailed part)
  saturated_frac   fraction of predicted probabilities exactly 0 or 1 in the compute dtype
  clamped_frac     fraction of BCE log terms at BCELoss's -100 clamp (0 for losses without one)
  dead_frac        fraction of samples whose gradient w.r.t. their logits is exactly 0 while their
                   prediction is wrong: they can never be corrected
  max_abs_logit    largest finite |z|
  loss_gap         reported loss minus the same objective computed stably from logits (Objective.exact)
"""

from __future__ import annotations

import math

import torch

from lossbench.losses import Objective

WINDOW = ("loss", "nonfinite_loss", "nonfinite_grad", "grad_norm", "saturated_frac", "clamped_frac",
          "dead_frac", "loss_gap", "detail_steps")
MAXED = ("max_abs_logit", "max_grad_norm")
BUFFER = 64  # steps whose per-step values are buffered on the device before they are reduced


class Monitor:
    def __init__(self, device: torch.device, objective: Objective, enabled: bool = True, every: int = 1,
                 scaled_grads: bool = False):
        self.objective, self.enabled, self.every = objective, enabled, every
        # Under fp16 the GradScaler expects overflowing gradients and skips those steps: only a non-finite
        # loss is divergence there.
        self.scaled_grads = scaled_grads
        self.device = device
        self.win = torch.zeros(len(WINDOW), device=device)
        self.win_max = torch.zeros(len(MAXED), device=device)
        self.first_bad = torch.full((), -1.0, device=device)  # first step with a non-finite loss or grad
        self.step_t = 0  # steps observed so far, over the whole run
        self.window_steps = 0
        self.rows: torch.Tensor | None = None  # per step: loss, then the gradient norm of each parameter
        self.n_rows = 0
        self.totals = {"nonfinite_loss": 0, "nonfinite_grad": 0, "max_abs_logit": 0.0, "max_grad_norm": 0.0,
                       "saturated_frac_mean": 0.0, "clamped_frac_mean": 0.0, "dead_frac_mean": 0.0,
                       "loss_gap_mean": 0.0, "detail_steps": 0, "steps": 0}
        self.first_nonfinite_step: int | None = None

    def wants_detail(self, step: int) -> bool:
        return self.enabled and step % self.every == 0

    def observe(self, loss: torch.Tensor, grads: list[torch.Tensor] | None) -> torch.Tensor:
        """Record one step (no host sync). Returns the step's row: its loss and, with grads, each gradient's
        L2 norm; all finite iff neither the loss nor a gradient holds a NaN/Inf."""
        values = [loss.detach()]
        if grads:
            values += torch._foreach_norm(grads)  # stack() below casts into the float32 buffer
        if self.rows is None or self.rows.shape[1] != len(values) or self.n_rows == len(self.rows):
            self._reduce()
            if self.rows is None or self.rows.shape[1] != len(values):
                self.rows = torch.empty(BUFFER, len(values), device=self.device)
        row = self.rows[self.n_rows]
        torch.stack(values, out=row)
        self.n_rows += 1
        self.step_t += 1
        return row

    def _reduce(self) -> None:
        """Fold the buffered rows into the window sums and maxima, on the device."""
        n = self.n_rows
        if not n:
            return
        rows = self.rows[:n]
        loss = rows[:, 0]
        bad_loss = ~torch.isfinite(loss)
        if rows.shape[1] > 1:
            gnorm = rows[:, 1:].double().square().sum(dim=1).sqrt()  # float64: no overflow of the squares
            bad_grad = ~torch.isfinite(gnorm)
            gnorm = torch.where(bad_grad, 0.0, gnorm).float()
        else:
            bad_grad, gnorm = torch.zeros_like(bad_loss), torch.zeros_like(loss)
        bad = bad_loss if self.scaled_grads else bad_loss | bad_grad
        step = torch.arange(self.step_t - n, self.step_t, device=loss.device, dtype=torch.float32)
        first = torch.where(bad, step, math.inf).min()
        self.first_bad = torch.where((self.first_bad < 0) & torch.isfinite(first), first, self.first_bad)
        self.win[:4] += torch.stack([loss.sum(), bad_loss.sum(), bad_grad.sum(), gnorm.sum()])
        self.win_max[1] = torch.maximum(self.win_max[1], gnorm.max())
        self.window_steps += n
        self.n_rows = 0

    def observe_detail(self, loss: torch.Tensor, z: torch.Tensor, y: torch.Tensor, z_grad: torch.Tensor | None):
        """Saturation, clamp, dead-gradient, logit-range and loss-gap samples of this batch."""
        obj = self.objective
        with torch.no_grad():
            z = z.detach()
            p = obj.probs(z)
            saturated = ((p == 0) | (p == 1)).float().mean()
            clamped = obj.clamped(p, y).float().mean() if obj.has_clamp else torch.zeros_like(saturated)
            if z_grad is not None:
                wrong = obj.predict(z) != y
                dead = ((z_grad == 0).all(dim=1) & wrong).float().mean()
            else:
                dead = torch.zeros_like(saturated)
            gap = loss.detach().float() - obj.exact(z, y)
            finite_abs = torch.where(torch.isfinite(z), z.abs(), torch.zeros_like(z)).max().float()
            self.win[4:] += torch.stack([saturated, clamped, dead, gap, torch.ones_like(gap)])
            self.win_max[0] = torch.maximum(self.win_max[0], finite_abs)

    def read(self) -> dict[str, float]:
        """Window averages since the last read (one host sync), folded into the run totals."""
        self._reduce()
        values = torch.cat([self.win, self.win_max, self.first_bad.reshape(1)]).tolist()
        self.win.zero_()
        self.win_max.zero_()
        w = dict(zip(WINDOW + MAXED + ("first_bad",), values, strict=True))
        n, nd = max(self.window_steps, 1), w["detail_steps"]
        self.window_steps = 0
        if w["first_bad"] >= 0 and self.first_nonfinite_step is None:
            self.first_nonfinite_step = int(w["first_bad"])
        t = self.totals
        t["steps"] += n
        t["nonfinite_loss"] += int(w["nonfinite_loss"])
        t["nonfinite_grad"] += int(w["nonfinite_grad"])
        t["max_abs_logit"] = max(t["max_abs_logit"], w["max_abs_logit"])
        t["max_grad_norm"] = max(t["max_grad_norm"], w["max_grad_norm"])
        if nd:
            done = t["detail_steps"]
            for k in ("saturated_frac", "clamped_frac", "dead_frac", "loss_gap"):
                t[f"{k}_mean"] = (t[f"{k}_mean"] * done + w[k]) / (done + nd)
            t["detail_steps"] = done + int(nd)
        out = {"train/loss": w["loss"] / n, "numerics/nonfinite_loss": w["nonfinite_loss"],
               "numerics/nonfinite_grad": w["nonfinite_grad"]}
        if self.enabled:
            out["numerics/grad_norm"] = w["grad_norm"] / n
            out["numerics/max_grad_norm"] = w["max_grad_norm"]
        if nd:
            for k in ("saturated_frac", "clamped_frac", "dead_frac", "loss_gap"):
                out[f"numerics/{k}"] = w[k] / nd
            out["numerics/max_abs_logit"] = w["max_abs_logit"]
        return out

    def summary(self) -> dict:
        return {**self.totals, "first_nonfinite_step": self.first_nonfinite_step}

    # The unread window (buffered rows included, unreduced: the sums must add up in the same order) goes
    # into checkpoints too, so that a resumed run logs the same windows and totals as an uninterrupted one.
    _STATE = ("win", "win_max", "first_bad", "step_t", "window_steps", "rows", "n_rows", "totals",
              "first_nonfinite_step")

    def state_dict(self) -> dict:
        return {k: (v.cpu().clone() if isinstance(v, torch.Tensor) else v)
                for k, v in ((k, getattr(self, k)) for k in self._STATE)}

    def load_state_dict(self, state: dict) -> None:
        for k in self._STATE:
            setattr(self, k, state[k].to(self.device) if isinstance(state[k], torch.Tensor) else state[k])


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
        if values.numel():
            writer.add_histogram(f"hist/{name}", values, step)
