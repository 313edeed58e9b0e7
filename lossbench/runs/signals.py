"""Graceful stop on SIGINT/SIGTERM: the step in flight finishes, then the run saves and records itself.

`python -m lossbench` takes the stop signals from its first line (install_cli_handlers), so that no phase ends in
a traceback: before training a single run stops at once with one line (nothing to save yet); a sweep's parent
process records the signal and lets the jobs in flight stop gracefully (a Ctrl-C reaches the whole process
group: joblib's and submitit_local's workers too), starts no further job, writes the sweep's status and exits
with 128 + signal. During training, and while a run writes its results, StopRequest defers the signal to the
next step boundary. A second signal always ends the process at once.

Under submitit (hydra/launcher=submitit_slurm or submitit_local) the stop signal is submitit's preemption/timeout
signal (USR2 unless $SUBMITIT_PREEMPT_SIGNAL says otherwise) instead of SIGTERM, which submitit ignores on
purpose. After the run has saved its checkpoint, `hand_over` passes that signal on to submitit's own handler,
which requeues the job; the requeued job resumes from its checkpoint (train.py: skip_completed is implied under
submitit).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator


def _in_submitit_job() -> bool:
    return bool(os.environ.get("SUBMITIT_EXECUTOR"))


def stop_signals() -> tuple[signal.Signals, ...]:
    if _in_submitit_job():
        return (signal.SIGINT, getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")))
    return (signal.SIGINT, signal.SIGTERM)


_received: list[int] = []  # the stop signals this process received (first ones; a second one ends the process)
_pending: int | None = None  # received before training, to be honoured by the next StopRequest
_trained = False  # a StopRequest (a training loop) has been entered in this process
_guarded = False  # the CLI's `try` is entered: an Interrupted raised from here on is caught and reported
_sweep = False  # this process runs a sweep (its launcher may train stacks of runs here)
_loading = False  # a submitit job is loading a run (see loading())


class Interrupted(BaseException):
    """A stop signal outside training in a single `python -m lossbench` run: it unwinds at once."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    def message(self) -> str:
        when = "after the run's results were written" if _trained else "before training started; nothing to resume"
        return f"lossbench: interrupted by {signal.Signals(self.signum).name} {when}"


def install_cli_handlers(multirun: bool, signals: tuple[signal.Signals, ...] | None = None) -> None:
    """The handlers of `python -m lossbench`, installed before anything heavy is imported (see the docstring);
    signals: those to take (default: stop_signals())."""

    global _sweep

    def handle(signum, frame) -> None:
        global _pending
        if _received:  # a second signal: give up at once
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        _received.append(signum)
        _pending = signum
        if not _guarded:  # still importing, before the CLI's `try`: nothing is created yet, and no traceback
            sys.stderr.write(Interrupted(signum).message() + "\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        if not multirun:
            raise Interrupted(signum)

    _sweep = multirun
    if threading.current_thread() is threading.main_thread():
        for s in signals or stop_signals():
            signal.signal(s, handle)


def take_in_submitit_job() -> None:
    """In a submitit job (hydra/launcher=submitit_*, or the stacked launcher's executor), from the start of
    lossbench's task: a Ctrl-C while the job is loading (`loading()`) unwinds it at once with Interrupted (it has
    nothing to save, and submitit_local's controller kills its jobs a second after passing a Ctrl-C on); at any
    other time it is recorded, and training stops at the next step boundary. The copy of the Ctrl-C that the
    controller passes on is ignored. submitit keeps its own preemption signal (USR2). The worker process unpickles
    only the task, never lossbench.__main__, so the CLI's handlers are not there."""

    def handle(signum, frame) -> None:
        global _pending
        if _received:  # the controller passing on the Ctrl-C that reached the whole group
            return
        _received.append(signum)
        _pending = signum
        if _loading:
            raise Interrupted(signum)

    global _guarded
    if _in_submitit_job() and not _guarded and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handle)
        _guarded = True


@contextlib.contextmanager
def loading() -> Iterator[None]:
    """A job importing or loading what it trains: in a submitit job a stop signal, now or before, raises
    Interrupted here (take_in_submitit_job); elsewhere it changes nothing."""
    global _loading
    if _in_submitit_job() and _received:
        raise Interrupted(_received[0])
    _loading = True
    try:
        yield
    finally:
        _loading = False


def reset() -> None:
    """Forget the stop signals received so far: a new command in the same process (in-process tests of the CLI)
    starts as a fresh process would."""
    global _pending, _trained, _guarded, _sweep, _loading
    _received.clear()
    _pending, _trained, _guarded, _sweep, _loading = None, False, False, False, False


def guard() -> None:
    """The CLI's `try` is entered: from now on a stop signal before training raises Interrupted there."""
    global _guarded
    _guarded = True


def note(signum: int) -> None:
    """Record a stop that arrived as a KeyboardInterrupt (a process without lossbench's handlers)."""
    _received.append(signum)


def stop_requested() -> int | None:
    """The first stop signal a run of this process received (a sweep's later jobs do not start), or None."""
    return _received[0] if _received else None


def stops_received() -> int:
    """How many stop signals runs of this process have received: a caller compares counts before and after."""
    return len(_received)


class StopRequest:
    """While active, the first stop signal sets `signum`; a second one exits at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.extra = 0  # signals after the first, in a sweep's process (see _handle)
        self._old: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        global _pending, _trained
        _trained = True
        if _pending is not None:  # received while this job was loading: stop before the first step
            self.signum, _pending = _pending, None
        if threading.current_thread() is threading.main_thread():
            for s in stop_signals():
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        # A second signal gives up at once; in a sweep's own process (the stacked launcher trains many runs here)
        # and in a submitit job, a third: a double Ctrl-C still leaves every member checkpointed and the sweep's
        # status written, and submitit's local controller, which forwards a second SIGINT to its jobs as soon as
        # it is itself interrupted (then SIGKILL a second later), no longer kills a job half-way through its
        # results.
        if self.signum is not None and not ((_sweep or _in_submitit_job()) and self.extra == 0):
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        if self.signum is not None:
            self.extra += 1
            sys.stderr.write("lossbench: saving every run of the stack first; another signal ends at once\n")
            return
        self.signum = signum
        _received.append(signum)

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            if self.requested and s in (signal.SIGINT, signal.SIGTERM):
                # The process is on its way out: another signal ends it at once, except in a sweep's own process,
                # which still writes its status (the double Ctrl-C allowance of _handle holds until it exits).
                h = self._handle if _sweep or _in_submitit_job() else signal.SIG_DFL
            signal.signal(s, h)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or 0)


def hand_over(signum: int) -> None:
    """Call the handler that was installed for `signum` before the run (submitit's checkpoint-and-requeue,
    which exits). SIGINT and SIGTERM are not handed over: their exit code says what happened."""
    handler = signal.getsignal(signum)
    if signum not in (signal.SIGINT, signal.SIGTERM) and callable(handler):
        handler(signum, None)
