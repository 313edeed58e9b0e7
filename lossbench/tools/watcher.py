r"""``lossbench.watch``: lossbench's numerics monitors around a criterion in a user's own training loop.

    criterion = lossbench.watch(nn.BCELoss(), log_dir="runs/mine")   # or writer=SummaryWriter(...)
    for x, y in loader:
        loss = criterion(torch.sigmoid(model(x)), y)                  # exactly as nn.BCELoss(...)(p, y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
    print(criterion.report())                                         # also writes the last window

The wrapper returns what the wrapped criterion returns (it is called as it is: its weight, pos_weight,
reduction, ignore_index, label_smoothing and log_target apply) and records, with lossbench's own
:class:`lossbench.engine.numerics.Monitor`, the tags a lossbench run writes (``train/loss`` and ``watch/*``, whose
summary keys are ``numerics/*``):

- every call (while gradients are enabled: calls under ``torch.no_grad()``, e.g. validation, are passed
  through unrecorded): the loss, and whether it was NaN/Inf (``nonfinite_loss``). A loss with
  ``reduction="none"`` is recorded as its mean.
- every ``detail_every`` calls (the sampled calls), from the criterion's input, target and the gradient that
  reaches the input in the user's ``backward()`` (a tensor hook; read at the next call):

  ``saturated_frac``  the share of the probabilities the input stands for that are exactly 0 or 1 in the
                      input's dtype: sigmoid(z) (BCEWithLogitsLoss), softmax(z) (CrossEntropyLoss), the input
                      itself (BCELoss), exp(input) (NLLLoss, KLDivLoss: log-probabilities).
  ``clamped_frac``    BCELoss: the share of log terms at its -100 floor (t > 0 with log p <= -100, or t < 1
                      with log(1 - p) <= -100). 0 for the others, which have no clamp (lossbench's own losses
                      count their clamp or clip, see lossbench.losses).
  ``dead_frac``       the share of samples (rows) whose prediction is wrong and whose gradient w.r.t. the
                      logits is exactly 0 in every entry: they can never be corrected. For logit inputs
                      (BCEWithLogitsLoss, CrossEntropyLoss, lossbench's losses) that gradient is the input's.
                      BCELoss sees probabilities p, not logits: the gradient w.r.t. p of a wrong saturated
                      sample is about 1e12, not 0; what reaches the logits is what ``torch.sigmoid``'s
                      backward makes of it, g * p * (1 - p), which is what is counted: exactly 0 where p is
                      exactly 0 or 1 (for p from ``torch.sigmoid``; a softmax in front differs). Likewise for
                      log-probability inputs (NLLLoss, KLDivLoss) the gradient is carried through
                      ``log_softmax``'s backward, g - exp(input) * sum(g). "Wrong": a probability on the wrong
                      side of 0.5 (BCE losses, any entry of the row), argmax != the class (CE, NLL; ignored
                      targets never wrong), argmax != the target's argmax (KLDivLoss, probability targets).
                      A sampled call whose backward has not run by the next call (gradient accumulation,
                      no backward) counts no sample as dead.
  ``nonfinite_grad``  sampled calls whose gradient w.r.t. the criterion's input had a NaN/Inf.
  ``max_abs_logit``   the largest finite |input|: logit inputs only (it means nothing for probabilities).
  ``loss_gap``        lossbench's own losses only: reported loss - their ``exact`` objective, computed stably
                      from the logits in float32 (what a clamp or clip hides). Not recorded for the torch
                      criteria: BCEWithLogitsLoss and CrossEntropyLoss are that stable computation themselves
                      (in float32 even under autocast: recomputing them gives the same number), and BCELoss,
                      NLLLoss and KLDivLoss never see the logits: from probabilities that BCELoss clamped the
                      true loss cannot be recovered (p = 0 in float32 only says z < -88.7; p = 1, z > 16.6).

The gradient norm of a lossbench run (``numerics/grad_norm``, over the model's parameters) is not recorded:
the criterion does not see the model.

Nothing in a call reads a value on the host: the loss and the sampled batches stay on the device and are
reduced there; every ``every`` calls one read (a host sync) turns them into a window of averages, which is
written to TensorBoard at step = calls so far, kept for :meth:`Watched.report`, and checked by
:func:`diagnose`. Each diagnosis is warned (:class:`WatchWarning`) and written as TensorBoard text
(``watch/diagnosis``) once, with its numbers and its fix.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
import weakref
from dataclasses import dataclass, field

import torch
from torch import nn

from lossbench.engine.diagnosis import STALL_DEAD, STALL_SATURATED
from lossbench.engine.numerics import DETAIL, Monitor
from lossbench.losses import CLAMP, DRW, Objective

# --- the diagnoses (see diagnose) ---------------------------------------------------------------------------
# The stall's saturation and dead-sample thresholds are a lossbench run's (lossbench.engine.diagnosis); a user's loop
# has no validation AUC, so "at chance" becomes "the loss no longer moves".
STALL_LOSS_CHANGE = 0.01  # |relative change| of the window's mean loss since the previous window, at most
CLAMP_HIT = 0.0  # share of BCE log terms at BCELoss's -100 floor above which "clamped" is flagged

_TORCH_NN = os.path.dirname(nn.__file__)
SUPPORTED = "nn.BCELoss, nn.BCEWithLogitsLoss, nn.CrossEntropyLoss, nn.NLLLoss, nn.KLDivLoss and lossbench's losses"


def diagnose(window: dict[str, float], previous_loss: float | None) -> list[str]:
    """The diagnoses that one window of monitor values supports, by name:

    - ``diverged``: a NaN/Inf loss (``numerics/nonfinite_loss`` > 0) or gradient (``numerics/nonfinite_grad`` > 0).
    - ``clamped``: BCE log terms at BCELoss's -100 floor (``numerics/clamped_frac`` > CLAMP_HIT).
    - ``stalled``: saturated (``numerics/saturated_frac`` >= STALL_SATURATED) and dead
      (``numerics/dead_frac`` >= STALL_DEAD) with the loss stuck: ``train/loss`` moved by at most
      STALL_LOSS_CHANGE (relative) since the previous window (so never in the first window).

    ``window``: the keys a Monitor read gives (``train/loss``, ``numerics/*``); a key it lacks (no sampled
    call in the window) supports no diagnosis.
    """
    found = []
    if window.get("numerics/nonfinite_loss", 0) > 0 or window.get("numerics/nonfinite_grad", 0) > 0:
        found.append("diverged")
    if window.get("numerics/clamped_frac", 0.0) > CLAMP_HIT:
        found.append("clamped")
    loss = window.get("train/loss", math.nan)
    if (window.get("numerics/saturated_frac", 0.0) >= STALL_SATURATED
            and window.get("numerics/dead_frac", 0.0) >= STALL_DEAD
            and previous_loss is not None and math.isfinite(loss) and math.isfinite(previous_loss)
            and abs(loss - previous_loss) <= STALL_LOSS_CHANGE * max(abs(previous_loss), 1e-12)):
        found.append("stalled")
    return found


class WatchWarning(UserWarning):
    """A diagnosis of lossbench.watch (stalled, clamped, diverged), given once per watched criterion."""


# --- how the monitors read each criterion's input and target --------------------------------------------------
class _View:
    """A criterion's input and target as the Monitor reads them: rows = samples, (R, K) each (lossbench.losses'
    Objective interface: probs, clamped, wrong, exact, has_clamp)."""

    input_kind = "logits"  # logits | probs | log_probs
    has_clamp = False
    fix_stall = ("lower the learning rate, or scale the inputs or the initial weights down: the logits have "
                 "grown until the probabilities round to exactly 0 or 1")
    fix_clamp = "compute the loss from the logits"
    clamp_text = "terms sat at the loss's clamp or clip: each reports a fixed loss whatever its true value"

    def __init__(self, criterion: nn.Module):
        self.criterion, self.label = criterion, type(criterion).__name__

    def rows(self, t: torch.Tensor) -> torch.Tensor:
        """A tensor of the input's shape as rows (R, K)."""
        return t.reshape(1, 1) if t.dim() == 0 else t.reshape(len(t), -1)

    def prepare(self, input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rows(input.detach()), self.rows(target.detach().expand_as(input))

    def logit_grad(self, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The gradient w.r.t. the logits, from the input's gradient g (rows)."""
        return g

    def probs(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(z)

    def clamped(self, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(p, dtype=torch.bool)

    def wrong(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((self.probs(z) > 0.5) != (y > 0.5)).any(dim=1)

    def exact(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Not measured for torch's criteria (NaN; see loss_gap in the module docstring)."""
        return torch.full((), math.nan, device=z.device)


class _BCE(_View):
    input_kind = "probs"
    has_clamp = True
    clamp_text = "log terms sat at its floor of -100: each reports a loss of 100 whatever its true value"
    fix_stall = fix_clamp = ("drop the sigmoid and give the logits to nn.BCEWithLogitsLoss: it computes log "
                             "sigmoid(z) from z, and its gradient sigmoid(z) - y is never 0 for a wrong sample")

    def probs(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def logit_grad(self, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return g * z * (1 - z)  # torch.sigmoid's backward

    def clamped(self, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p, t = p.float(), y.float()
        return ((t > 0) & (torch.log(p) <= CLAMP)) | ((t < 1) & (torch.log(1 - p) <= CLAMP))


class _ClassIndex(_View):
    """CrossEntropyLoss (logits) and NLLLoss (log-probabilities): (N, C, d...) as rows of C, targets as class
    indices (R,) or probabilities (R, C)."""

    def rows(self, t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 2:
            return t
        return t.reshape(1, -1) if t.dim() == 1 else t.movedim(1, -1).reshape(-1, t.shape[1])

    def prepare(self, input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.rows(input.detach())
        target = target.detach()
        y = self.rows(target) if target.is_floating_point() else target.reshape(-1)
        return z, y

    def probs(self, z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(z, dim=1) if self.input_kind == "logits" else torch.exp(z)

    def logit_grad(self, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.input_kind == "logits":
            return g
        return g - torch.exp(z) * g.sum(dim=1, keepdim=True)  # log_softmax's backward

    def wrong(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y.dim() == 2:  # probability targets
            return z.argmax(dim=1) != y.argmax(dim=1)
        return (z.argmax(dim=1) != y) & (y != self.criterion.ignore_index)


class _NLL(_ClassIndex):
    input_kind = "log_probs"
    fix_stall = "give the logits to nn.CrossEntropyLoss, or log_softmax(z) (never log(softmax(z))) to NLLLoss"


class _KLDiv(_ClassIndex):
    input_kind = "log_probs"
    fix_stall = "pass log_softmax(z / T) as the input (never log(softmax(z / T))) and lower the learning rate"

    def prepare(self, input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rows(input.detach()), self.rows(target.detach().expand_as(input))

    def wrong(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return z.argmax(dim=1) != y.argmax(dim=1)


class _Own(_View):
    """lossbench's own losses (lossbench.losses.Objective, DRW): their own monitor methods, on logits."""

    def __init__(self, criterion: Objective | DRW):
        super().__init__(criterion)
        self.label, self.has_clamp = f"lossbench's {criterion.name}", criterion.has_clamp
        if criterion.has_clamp:
            self.fix_clamp = "use a loss computed from the logits (bce_logits, ce) instead of one that clamps or clips"

    def prepare(self, input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return input.detach(), target.detach()

    def probs(self, z):
        return self.criterion.probs(z)

    def clamped(self, p, y):
        return self.criterion.clamped(p, y)

    def wrong(self, z, y):
        return self.criterion.wrong(z, y)

    def exact(self, z, y):
        return self.criterion.exact(z, y)


def _caller_level() -> int:
    """warnings.warn's stacklevel of the first frame outside this module and torch.nn (the user's call)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_code.co_filename == __file__
                                 or frame.f_code.co_filename.startswith(_TORCH_NN)):
        frame, level = frame.f_back, level + 1
    return level


def _mean(loss: torch.Tensor) -> torch.Tensor:
    return loss if loss.dim() == 0 else loss.float().mean()


def _view(criterion: object) -> _View:
    """The view of a supported criterion; anything else is refused with one line."""
    if isinstance(criterion, (Objective, DRW)):
        return _Own(criterion)
    for cls, view in ((nn.BCELoss, _BCE), (nn.BCEWithLogitsLoss, _View), (nn.CrossEntropyLoss, _ClassIndex),
                      (nn.NLLLoss, _NLL), (nn.KLDivLoss, _KLDiv)):
        if isinstance(criterion, cls):
            return view(criterion)
    raise TypeError(f"lossbench.watch supports {SUPPORTED}, not {type(criterion).__name__}.")


# --- the wrapper ----------------------------------------------------------------------------------------------
@dataclass
class WatchReport:
    """What :meth:`Watched.report` returns: the last window and the totals over every recorded call."""

    criterion: str
    calls: int  # recorded calls (with gradients enabled)
    loss: float | None  # mean loss over the last window
    window: dict[str, float]  # the last window's numerics/* values, as logged
    means: dict[str, float]  # per-sampled-call means since the start: saturated_frac, clamped_frac, dead_frac, loss_gap
    max_abs_logit: float | None  # since the start (logit inputs only)
    nonfinite_loss: int  # calls with a NaN/Inf loss, since the start
    nonfinite_grad: int  # sampled calls with a NaN/Inf input gradient, since the start
    first_nonfinite_call: int | None  # index (from 0) of the first call with a NaN/Inf loss or gradient
    flags: dict[str, str] = field(default_factory=dict)  # diagnosis -> the message given


class Watched(nn.Module):
    """A criterion with lossbench's numerics monitors: call it as the criterion (see the module docstring)."""

    def __init__(self, criterion: nn.Module, log_dir: str | os.PathLike | None = None, writer=None,
                 every: int = 50, detail_every: int = 10, tensorboard: bool = True):
        super().__init__()
        view = _view(criterion)
        for name, value in (("every", every), ("detail_every", detail_every)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"lossbench.watch: {name} must be an integer >= 1, got {value!r}.")
        if writer is not None and log_dir is not None:
            raise ValueError("lossbench.watch: give log_dir or writer, not both.")
        self.criterion, self.view, self.every, self.detail_every = criterion, view, every, detail_every
        self.measured = {"saturated_frac", "clamped_frac", "dead_frac"}
        if view.input_kind == "logits":
            self.measured |= {"max_abs_logit"} | ({"loss_gap"} if isinstance(view, _Own) else set())
        self.writer, self.owns_writer = writer, False
        if writer is None and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer, self.owns_writer = SummaryWriter(None if log_dir is None else str(log_dir)), True
            weakref.finalize(self, self.writer.close)  # events written so far survive a forgotten close()
        self.monitor: Monitor | None = None  # built at the first call, on the input's device
        self.calls, self.logged_at = 0, 0
        self.pending: tuple | None = None  # the last sampled call, until its gradient has arrived
        self.last: dict[str, float] = {}
        self.previous_loss: float | None = None
        self.flags: dict[str, str] = {}

    # per-call bookkeeping, set as plain attributes: nn.Module.__setattr__ costs microseconds per assignment
    _PLAIN = frozenset({"calls", "logged_at", "pending", "monitor", "last", "previous_loss"})

    def __setattr__(self, name: str, value) -> None:
        if name in self._PLAIN:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def __getattr__(self, name: str):  # the wrapped criterion's attributes (reduction, weight, ...)
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if "criterion" not in modules:
                raise
            return getattr(modules["criterion"], name)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.criterion(input, target)
        if not torch.is_grad_enabled():
            return loss
        if self.monitor is None:
            self.monitor = Monitor(input.device, self.view, every=self.detail_every)
        self._take_pending()
        if self.calls and self.calls % self.every == 0:
            self._log()
        seen = self.monitor.observe(loss if loss.dim() == 0 else _mean(loss.detach()))  # observe() detaches
        if self.calls % self.detail_every == 0:
            z, y = self.view.prepare(input, target)
            grad: list[torch.Tensor] = []
            # the gradient that reaches the input in the user's backward(); removed when read (an input tensor
            # passed again and again, a leaf, would otherwise collect hooks)
            hook = input.register_hook(grad.append) if input.requires_grad else None
            self.pending = (seen, z, y, grad, hook)
        self.calls += 1
        return loss

    def _take_pending(self) -> None:
        """Hand the last sampled call to the monitor, with its input gradient if its backward has run."""
        if self.pending is None:
            return
        loss, z, y, grad, hook = self.pending
        self.pending = None
        if hook is not None:
            hook.remove()
        z_grad = self.view.logit_grad(z, self.view.rows(grad[0])) if grad else None
        if z_grad is not None:
            self.monitor.observe_grads([z_grad])
        self.monitor.observe_detail(loss, z, y, z_grad)

    def _log(self) -> None:
        """Read the window (one host sync), write it, diagnose it."""
        values = {k: v for k, v in self.monitor.read().items()
                  if not k.startswith("numerics/") or k.removeprefix("numerics/") in self.measured
                  or k in ("numerics/nonfinite_loss", "numerics/nonfinite_grad")}
        window, self.logged_at = self.calls - self.logged_at, self.calls
        if self.writer is not None:
            from lossbench.runs.logger import add_scalars

            add_scalars(self.writer, values, self.calls)
        for name in diagnose(values, self.previous_loss):
            if name not in self.flags:
                self._flag(name, values, window)
        self.previous_loss, self.last = values["train/loss"], values

    def _flag(self, name: str, w: dict[str, float], window: int) -> None:
        crit, at = self.view.label, f"at call {self.calls}"
        if name == "diverged":
            first = self.monitor.first_nonfinite_step
            msg = (f"{crit} diverged: a NaN/Inf loss in {w['numerics/nonfinite_loss']:.0f} of the last {window} calls "
                   f"and a NaN/Inf input gradient in {w['numerics/nonfinite_grad']:.0f} of their sampled calls ({at}; "
                   f"the first at call index {first}). Fix: lower the learning rate or clip the gradients "
                   f"(torch.nn.utils.clip_grad_norm_); compute the loss from logits (BCEWithLogitsLoss, "
                   f"CrossEntropyLoss, log_softmax) rather than log(p).")
        elif name == "clamped":
            msg = (f"{crit}'s clamp hit ({at}): {w['numerics/clamped_frac']:.1%} of the {self.view.clamp_text}, "
                   f"and a saturated probability passes no gradient back through its sigmoid. "
                   f"Fix: {self.view.fix_clamp}.")
        else:
            msg = (f"{crit} stalled: {w['numerics/saturated_frac']:.0%} of the probabilities are exactly 0 or 1 "
                   f"and {w['numerics/dead_frac']:.0%} of the samples are wrong with a zero gradient (they can "
                   f"never be corrected), and the loss has stopped moving ({self.previous_loss:.4g}, then "
                   f"{w['train/loss']:.4g}; {at}). Fix: {self.view.fix_stall}.")
        self.flags[name] = msg
        warnings.warn(f"lossbench.watch: {msg}", WatchWarning, stacklevel=_caller_level())
        if self.writer is not None:
            self.writer.add_text("watch/diagnosis", f"**{name}**: {msg}", self.calls)

    def flush(self) -> None:
        """Write the calls recorded since the last log point (one host sync) and flush the writer."""
        if self.monitor is not None:
            self._take_pending()
            if self.calls > self.logged_at:
                self._log()
        if self.writer is not None:
            self.writer.flush()

    def report(self) -> WatchReport:
        """The summary so far (it writes the calls since the last log point first)."""
        self.flush()
        t = self.monitor.summary() if self.monitor is not None else {}
        means = {k: t[f"{k}_mean"] for k in DETAIL if k in self.measured and t.get("detail_steps")}
        return WatchReport(
            criterion=self.view.label, calls=self.calls, loss=self.last.get("train/loss"),
            window={k: v for k, v in self.last.items() if k.startswith("numerics/")}, means=means,
            max_abs_logit=t.get("max_abs_logit") if "max_abs_logit" in self.measured and t.get("detail_steps") else None,
            nonfinite_loss=t.get("nonfinite_loss", 0), nonfinite_grad=t.get("nonfinite_grad", 0),
            first_nonfinite_call=t.get("first_nonfinite_step"), flags=dict(self.flags))

    def close(self) -> None:
        """flush(), then close the writer if watch opened it (a writer passed in stays open)."""
        self.flush()
        if self.owns_writer:
            self.writer.close()

    def __enter__(self) -> Watched:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def extra_repr(self) -> str:
        return f"every={self.every}, detail_every={self.detail_every}"


def watch(criterion: nn.Module, log_dir: str | os.PathLike | None = None, writer=None, every: int = 50,
          detail_every: int = 10, tensorboard: bool = True) -> Watched:
    """Wrap a criterion with lossbench's numerics monitors, for a user's own training loop.

    criterion: one of nn.BCELoss, nn.BCEWithLogitsLoss, nn.CrossEntropyLoss, nn.NLLLoss, nn.KLDivLoss (any options)
        or a lossbench loss (lossbench.losses.build); anything else raises TypeError.
    log_dir / writer: where the TensorBoard events go: a directory (a SummaryWriter is opened on it), or your
        own SummaryWriter (left open). Neither: SummaryWriter's default, ./runs/<time>_<host>.
        tensorboard=False: no events (report() and the warnings only).
    every: calls between log points (one host read each); detail_every: calls between sampled calls.

    Returns a module called exactly as the criterion; ``report()`` gives a :class:`WatchReport`, ``close()``
    (or a ``with`` block) writes the last window. What each monitor measures: the module docstring.
    """
    return Watched(criterion, log_dir=log_dir, writer=writer, every=every, detail_every=detail_every,
                   tensorboard=tensorboard)
