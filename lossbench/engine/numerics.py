"""Numeric-health monitors: accumulated on the device, read (one host sync) at log points.

Every step (also with monitors off: divergence is always recorded)
  nonfinite_loss   steps whose loss or logits were NaN/Inf. The step's loss and logits are kept (references),
                   and the kept ones are reduced together every BUFFER steps and at reads: no host sync and
                   no kernel per step. The logits count because a loss that clamps (BCELoss, asl) or clips
                   stays finite on overflowed logits, with a zero gradient: whether the step's sums also
                   produce a NaN (inf - inf) depends on the CPU's summation order, so the loss alone would
                   call the same run diverged on one machine and completed on another.
Every ``numerics.every`` steps (the sampled steps; monitors on)
  grad_norm        global L2 norm of the (unscaled) gradients (one ``torch._foreach_norm``)
  nonfinite_grad   sampled steps with a NaN/Inf gradient
  saturated_frac   fraction of predicted probabilities exactly 0 or 1 in the compute dtype
  clamped_frac     fraction of BCE log terms at BCELoss's -100 clamp (0 for losses without one)
  dead_frac        fraction of samples whose gradient w.r.t. their logits is exactly 0 while their
                   prediction is wrong: they can never be corrected
  max_abs_logit    largest finite |z|
  loss_gap         reported loss minus the same objective computed stably from logits (Objective.exact)
  pairless_frac    binary tasks: fraction of batches without a (positive, negative) pair, where the AUC
                   losses contribute 0 (logged for binary single-label tasks only; trainer.pos_share makes it 0)
The last six come from the sampled batches' losses, logits, labels and logit gradients, which are kept
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

DETAIL = ("saturated_frac", "clamped_frac", "dead_frac", "loss_gap", "pairless_frac")
BUFFER = 64  # steps whose losses are kept on the device before they are reduced
DETAIL_BUFFER = 16  # sampled batches kept at most before their statistics are computed


class Monitor:
    """The monitors of K runs (members of a stack; K = 1 for a run alone), with a leading member axis: one set of
    device ops and one host read serve every member. Per member k, ``objectives[k]`` interprets its batches."""

    def __init__(self, device: torch.device, objectives: Objective | list[Objective] | None, enabled: bool = True,
                 every: int = 1, scaled_grads: bool = False):
        self.objectives = list(objectives) if isinstance(objectives, (list, tuple)) else [objectives]
        self.k = k = len(self.objectives)
        self.enabled, self.every, self.device = enabled, every, device
        # Under fp16 the GradScaler expects overflowing gradients and skips those steps: only a non-finite
        # loss is divergence there.
        self.scaled_grads = scaled_grads
        # Device sums over the window since the last read, per member: loss, nonfinite_loss, nonfinite_grad,
        # grad_norm, then DETAIL; maxima: max_abs_logit, max_grad_norm; the first step with a non-finite loss or
        # gradient.
        self.win = torch.zeros(k, 4 + len(DETAIL), device=device)
        self.win_max = torch.zeros(k, 2, device=device)
        self.first_bad = torch.full((k,), math.inf, device=device)
        self.losses: list[torch.Tensor] = []  # unreduced per-step losses, (K,) each
        # and the steps' logits (K, B, ...) or, restored from a checkpoint, their flags (K,) bool: True if not finite
        self.outputs: list[torch.Tensor] = []
        self.grad_rows: list[torch.Tensor] = []  # unreduced per-parameter gradient norms of sampled steps, (K, P)
        self.grad_steps: list[torch.Tensor] = []  # and their step numbers (0-d device tensors: no host copy)
        self.kept: list[tuple[torch.Tensor, ...]] = []  # unprocessed sampled batches: loss (K,), z, t, dL/dz (K, B, ...)
        self.step_t = 0  # steps observed so far, over the whole run (the members of a stack share their steps)
        self.window = {"steps": 0, "grad_steps": 0, "detail_steps": 0}  # counted on the host: no sync
        self.totals = [_new_totals() for _ in range(k)]
        self.first_nonfinite: list[int | None] = [None] * k

    @property
    def first_nonfinite_step(self) -> int | None:  # a run alone
        return self.first_nonfinite[0]

    def wants_detail(self, step: int) -> bool:
        return self.enabled and step % self.every == 0

    def observe(self, loss: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Record one step's loss, a 0-d tensor (K = 1) or (K,), and its logits z (B, ...) or (K, B, ...) (no
        host sync, no op); returns the loss, detached."""
        loss = loss.detach()
        self.losses.append(loss)
        if z is not None:
            self.outputs.append(z.detach())
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
        # (K, n): each member's steps in one row (a run alone observes 0-d losses; a restored window holds (1,))
        loss = torch.stack([t.reshape(self.k) for t in self.losses]).float().T
        bad = ~torch.isfinite(loss)
        if self.outputs:  # the latest steps' logits (a checkpoint from before they were kept has none)
            flags = self._output_flags()
            bad[:, n - flags.shape[1]:] |= flags
        step = torch.arange(self.step_t - n, self.step_t, device=loss.device, dtype=torch.float32)
        self.first_bad = torch.minimum(self.first_bad, torch.where(bad, step, math.inf).min(dim=1).values)
        self.win[:, :2] += torch.stack([loss.sum(dim=1), bad.sum(dim=1)], dim=1)
        self.losses, self.outputs = [], []

    def _output_flags(self) -> torch.Tensor:
        """(K, n): True where a kept step's logits hold a NaN/Inf; one set of ops per shape (the last batch of
        an epoch may be shorter)."""
        flags = torch.zeros(self.k, len(self.outputs), dtype=torch.bool, device=self.first_bad.device)
        groups: dict[tuple, list[int]] = {}
        for j, z in enumerate(self.outputs):
            groups.setdefault((z.shape, z.dtype), []).append(j)
        for (_, dtype), js in groups.items():
            zs = torch.stack([self.outputs[j] for j in js]).reshape(len(js), self.k, -1)
            flags[:, js] = (zs[..., 0] if dtype == torch.bool else ~torch.isfinite(zs).all(dim=2)).T
        return flags

    def observe_grads(self, grads: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Record the per-parameter gradient norms of the step just observed: from a run's gradients (one
        ``torch._foreach_norm``; returns (P,)) or a stack's norms (K, P), no host sync. Kept and reduced together
        at the next read. All finite iff every gradient is."""
        norms = torch.stack(torch._foreach_norm(grads)) if isinstance(grads, (list, tuple)) else grads
        self.grad_rows.append(norms.reshape(self.k, -1))
        self.grad_steps.append(torch.full((), self.step_t - 1, dtype=torch.float32, device=norms.device))
        self.window["grad_steps"] += 1
        if len(self.grad_rows) == BUFFER:
            self._reduce_grads()
        return norms

    def _reduce_grads(self) -> None:
        """Fold the kept gradient norms into the window sums and maxima, on the device."""
        if not self.grad_rows:
            return
        # (K, n): each member's global norm per sampled step; float64, so that the squares don't overflow
        gnorm = torch.stack(self.grad_rows, dim=1).double().square().sum(dim=2).sqrt()
        bad = ~torch.isfinite(gnorm)
        gnorm = torch.where(bad, 0.0, gnorm).float()
        self.win[:, 2:4] += torch.stack([bad.sum(dim=1).float(), gnorm.sum(dim=1)], dim=1)
        self.win_max[:, 1] = torch.maximum(self.win_max[:, 1], gnorm.max(dim=1).values)
        if not self.scaled_grads:
            first = torch.where(bad, torch.stack(self.grad_steps), math.inf).min(dim=1).values
            self.first_bad = torch.minimum(self.first_bad, first)
        self.grad_rows, self.grad_steps = [], []

    def observe_detail(self, loss: torch.Tensor, z: torch.Tensor, y: torch.Tensor, z_grad: torch.Tensor | None):
        """Keep this batch for the saturation, clamp, dead-gradient, logit-range and loss-gap statistics: a run's
        (loss 0-d, z (B, ...)) or a stack's (loss (K,), z (K, B, ...))."""
        z_grad = torch.ones_like(z) if z_grad is None else z_grad  # no gradient: none counts as dead
        if loss.dim() == 0:
            loss, z, y, z_grad = loss[None], z[None], y[None], z_grad[None]
        if self.kept and (z.shape, y.shape) != (self.kept[0][1].shape, self.kept[0][2].shape):
            self._reduce_detail()  # a batch of another shape (lossbench.watch: a user's short last batch)
        self.kept.append((loss.detach(), z.detach(), y, z_grad))
        self.window["detail_steps"] += 1
        if len(self.kept) == DETAIL_BUFFER:
            self._reduce_detail()

    def _reduce_detail(self) -> None:
        """The kept batches' statistics, all at once per member, into the window sums (per batch: a mean over it)."""
        if not self.kept:
            return
        loss, z, y, z_grad = (torch.stack(t, dim=1) for t in zip(*self.kept, strict=True))  # (K, n, B, ...)
        n, b = z.shape[1], z.shape[2]
        rows = []
        with torch.no_grad():
            for i, obj in enumerate(self.objectives):
                zf, yf = z[i].reshape(n * b, *z.shape[3:]), y[i].reshape(n * b, *y.shape[3:])
                p = obj.probs(zf)
                saturated = ((p == 0) | (p == 1)).float().view(n, -1).mean(1)
                clamped = obj.clamped(p, yf).float().view(n, -1).mean(1) if obj.has_clamp else torch.zeros_like(saturated)
                dead = ((z_grad[i].reshape(n * b, -1) == 0).all(dim=1) & obj.wrong(zf, yf)).float().view(n, b).mean(1)
                # one exact() per kept batch (at most DETAIL_BUFFER): it reduces over its batch as the loss does
                gap = loss[i].float() - torch.stack([obj.exact(z[i, j], y[i, j]) for j in range(n)])
                pairless = torch.zeros_like(saturated)
                if getattr(obj, "binary", False) and y[i].dim() == 2:  # (n, B) class indices
                    pairless = (~((y[i] == 1).any(dim=1) & (y[i] == 0).any(dim=1))).float()
                rows.append(torch.stack([saturated, clamped, dead, gap, pairless]).sum(dim=1))
            finite_abs = torch.where(torch.isfinite(z), z.abs(), 0.0).reshape(self.k, -1).max(dim=1).values.float()
            self.win[:, 4:] += torch.stack(rows)
            self.win_max[:, 0] = torch.maximum(self.win_max[:, 0], finite_abs)
        self.kept = []

    def read(self) -> dict[str, float]:
        """A run alone: read_all()'s one dict."""
        return self.read_all()[0]

    def read_all(self) -> list[dict[str, float]]:
        """Each member's window averages since the last read (one host sync), folded into its totals."""
        self._reduce()
        self._reduce_grads()
        self._reduce_detail()
        rows = torch.cat([self.win, self.win_max, self.first_bad[:, None]], dim=1).tolist()
        self.win.zero_()
        self.win_max.zero_()
        n, ng, nd = self.window["steps"], self.window["grad_steps"], self.window["detail_steps"]
        self.window = dict.fromkeys(self.window, 0)
        return [self._fold(k, dict(zip(FIELDS, row, strict=True)), n, ng, nd) for k, row in enumerate(rows)]

    def _fold(self, k: int, w: dict[str, float], n: int, ng: int, nd: int) -> dict[str, float]:
        if math.isfinite(w["first_bad"]) and self.first_nonfinite[k] is None:
            self.first_nonfinite[k] = int(w["first_bad"])
        t = self.totals[k]
        t["steps"] += n
        t["grad_steps"] += ng
        t["nonfinite_loss"] += int(w["nonfinite_loss"])
        t["nonfinite_grad"] += int(w["nonfinite_grad"])
        t["max_abs_logit"] = max(t["max_abs_logit"], w["max_abs_logit"])
        t["max_grad_norm"] = max(t["max_grad_norm"], w["max_grad_norm"])
        if nd:
            done = t["detail_steps"]
            for key in DETAIL:
                t[f"{key}_mean"] = (t[f"{key}_mean"] * done + w[key]) / (done + nd)
            t["detail_steps"] = done + nd
        out = {"train/loss": w["loss"] / max(n, 1), "numerics/nonfinite_loss": w["nonfinite_loss"],
               "numerics/nonfinite_grad": w["nonfinite_grad"]}
        if ng:
            out["numerics/grad_norm"] = w["grad_norm"] / ng
            out["numerics/max_grad_norm"] = w["max_grad_norm"]
        if nd:
            binary = getattr(self.objectives[k], "binary", False)
            for key in DETAIL:
                if key != "pairless_frac" or binary:
                    out[f"numerics/{key}"] = w[key] / nd
            out["numerics/max_abs_logit"] = w["max_abs_logit"]
        return out

    def summary(self, k: int = 0) -> dict:
        return {**self.totals[k], "first_nonfinite_step": self.first_nonfinite[k]}

    # --- stacks: the members' monitors joined along the member axis, and split back ---------------------------
    @classmethod
    def concat(cls, monitors: list[Monitor]) -> Monitor:
        """One monitor for a stack's members (their windows joined; they share their step count)."""
        if len(monitors) == 1:
            return monitors[0]
        first = monitors[0]
        m = cls(first.device, [o for mon in monitors for o in mon.objectives], first.enabled, first.every,
                first.scaled_grads)
        m.load_states([s for mon in monitors for s in mon.states()])
        return m

    def split(self, monitors: list[Monitor]) -> None:
        """Write each member's part back into its own monitor (K = 1), e.g. before its checkpoint or summary."""
        if len(monitors) == 1 and monitors[0] is self:
            return
        for mon, state in zip(monitors, self.states(), strict=True):
            mon.load_states([state])

    # The unread window (kept losses and batches included, unreduced: the sums must add up in the same order)
    # goes into checkpoints too, so that a resumed run logs the same windows and totals as an uninterrupted one.
    def states(self) -> list[dict]:
        """Each member's state, in the layout of a run alone (no member axis)."""
        cpu = lambda t: t.cpu().clone()  # noqa: E731
        return [{
            "win": cpu(self.win[k]), "win_max": cpu(self.win_max[k]), "first_bad": cpu(self.first_bad[k]),
            "step_t": self.step_t, "window": dict(self.window), "totals": dict(self.totals[k]),
            "first_nonfinite_step": self.first_nonfinite[k],
            "losses": [cpu(t.reshape(self.k)[k]) for t in self.losses],
            "output_flags": [cpu(f) for f in self._output_flags()[k]] if self.outputs else [],
            "grad_rows": [cpu(t[k]) for t in self.grad_rows], "grad_steps": [t.cpu() for t in self.grad_steps],
            "kept": [tuple(cpu(t[k]) for t in batch) for batch in self.kept],
        } for k in range(self.k)]

    def load_states(self, states: list[dict]) -> None:
        dev = lambda ts: torch.stack(ts).to(self.device)  # noqa: E731
        first = states[0]
        self.win, self.win_max = dev([s["win"] for s in states]), dev([s["win_max"] for s in states])
        # a checkpoint from before pairless_frac holds one column fewer: the missing ones start at 0
        self.win = torch.nn.functional.pad(self.win, (0, 4 + len(DETAIL) - self.win.shape[1]))
        self.first_bad = dev([s["first_bad"] for s in states])
        self.step_t, self.window = first["step_t"], dict(first["window"])
        self.totals = [{**_new_totals(), **s["totals"]} for s in states]
        self.first_nonfinite = [s["first_nonfinite_step"] for s in states]
        self.losses = [dev(ts) for ts in zip(*[s["losses"] for s in states], strict=True)]
        # (K,) flags per kept step; checkpoints written before the logits were checked have none
        self.outputs = [dev(ts) for ts in zip(*[s.get("output_flags", []) for s in states], strict=True)]
        self.grad_rows = [dev(ts) for ts in zip(*[s["grad_rows"] for s in states], strict=True)]
        self.grad_steps = [t.to(self.device) for t in first["grad_steps"]]
        self.kept = [tuple(dev(ts) for ts in zip(*batches, strict=True))
                     for batches in zip(*[s["kept"] for s in states], strict=True)]

    def state_dict(self) -> dict:
        """A run alone's state (checkpoint.pt)."""
        return self.states()[0]

    def load_state_dict(self, state: dict) -> None:
        self.load_states([state])


FIELDS = ("loss", "nonfinite_loss", "nonfinite_grad", "grad_norm", *DETAIL, "max_abs_logit", "max_grad_norm",
          "first_bad")


def _new_totals() -> dict:
    return {"nonfinite_loss": 0, "nonfinite_grad": 0, "max_abs_logit": 0.0, "max_grad_norm": 0.0,
            "saturated_frac_mean": 0.0, "clamped_frac_mean": 0.0, "dead_frac_mean": 0.0, "loss_gap_mean": 0.0,
            "pairless_frac_mean": 0.0,
            "detail_steps": 0, "grad_steps": 0, "steps": 0}


