"""Compose a command line's configs in a forked child while this process imports torch.

The start of `python -m lossbench` is two waits in a row that do not need each other: Hydra composing each
set of config-group choices the command line asks for (pure Python, ~70 ms each on this project's 2-core CPU;
eleven for the saturation grid) and importing torch with torch._dynamo (~2.5 s; torch.optim imports the
latter when the first optimiser is made). One core does both, one after the other, while the second idles.
`start(compose)` forks a child that runs `compose` (the preflight, which fills fastconfig's cache, then
`fastconfig.prefetch`: the compositions `hydra.main` will ask for) and sends them back through a pipe;
`Ahead.collect()` adds them to this process's cache (`fastconfig.adopt`). This process then runs the same Hydra
and launcher code as before and finds those compositions made: the same code on the same files (a composition
whose files changed meanwhile is not adopted); the preflight too, unless the child's passed on files still as
they were. A child that fails, or is stopped, changes nothing but the time.
"""

from __future__ import annotations

import gc
import os
import pickle
import select
import signal
import sys
import time
from collections.abc import Callable

from lossbench.config import fastconfig

_WAIT_S = 60.0  # longest wait for the child's compositions: then this process composes them itself


class Ahead:
    """A child composing: `collect()` takes what it composed, `cancel()` ends it."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid, self.fd = pid, fd

    def collect(self) -> bool:
        """Wait for the child (at most _WAIT_S) and adopt its compositions. True if compose() returned in the
        child and every file it composed from is as it was (what it checked holds here too)."""
        chunks, deadline = [], time.monotonic() + _WAIT_S
        try:
            while select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                if not (chunk := os.read(self.fd, 1 << 20)):
                    break
                chunks.append(chunk)
            else:
                return False
            if not (data := b"".join(chunks)):
                return False
            from hydra.core.plugins import Plugins

            Plugins.instance()  # Hydra's plugin scan loads its modules anew: their classes, before unpickling
            try:
                made, returned = pickle.loads(data)
            except Exception:  # noqa: BLE001 (what does not load here is composed here)
                return False
            return fastconfig.adopt(made) and returned
        finally:
            self.cancel()

    def cancel(self) -> None:
        if self.fd < 0:
            return
        os.close(self.fd)
        self.fd = -1
        try:
            os.kill(self.pid, signal.SIGKILL)  # done or not, it has nothing more to give
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)


def start(compose: Callable[[], None]) -> Ahead | None:
    """Fork a child that runs compose() and sends fastconfig's compositions back; None where there is no fork
    or fastconfig is off (LOSSBENCH_FASTCONFIG=0)."""
    if not hasattr(os, "fork") or os.environ.get("LOSSBENCH_FASTCONFIG") == "0":
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    read, write = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write)
        return Ahead(pid, read)
    try:  # the child: quiet, stopped by any signal at once, never running the parent's exit handlers
        os.close(read)
        gc.enable()  # the parent holds it off while it imports; a sweep's compositions make garbage
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(s, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (and whatever objects stood in for them)
        try:
            compose()
            returned = True
        except BaseException:  # the parent composes again, and reports what is wrong
            returned = False
        data = memoryview(pickle.dumps((fastconfig.export(), returned), protocol=pickle.HIGHEST_PROTOCOL))
        while data:
            data = data[os.write(write, data):]
    finally:
        os._exit(0)
