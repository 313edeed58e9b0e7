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
they were. A child that fails, or is stopped, changes nothing but the time. A command line the preflight refuses
is reported as soon as the child has found it (one line, exit 2, nothing created), not after the imports.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable

from lossbench.config import fastconfig

_WAIT_S = 60.0  # longest wait for the child's compositions: then this process composes them itself
COMPOSED, REFUSED = b"C", b"E"  # the first byte of the child's message: compositions follow, or a refusal's text


class Ahead:
    """A child composing: `collect()` takes what it composed, `cancel()` ends it. A thread reads the child's
    message as it comes: a refusal of the command line is reported at once (one line, exit 2), while this
    process may still be importing torch; nothing has been created yet."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid, self.fd = pid, fd
        self.data: bytes | None = None  # the child's compositions (a pickle), once it has sent them all
        self.abandoned = False  # this process composes for itself: a late refusal is its to report
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        chunks = []
        try:
            while chunk := os.read(self.fd, 1 << 20):
                chunks.append(chunk)
        finally:
            os.close(self.fd)  # here, once the child has ended: never a number another open might reuse meanwhile
        data = b"".join(chunks)
        if data[:1] == REFUSED and not self.abandoned:
            print(f"lossbench: error: {data[1:].decode()}", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os.waitpid(self.pid, 0)
            os._exit(2)
        self.data = data[1:] if data[:1] == COMPOSED else None

    def collect(self) -> bool:
        """Wait for the child (at most _WAIT_S) and adopt its compositions. True if compose() returned in the
        child and every file it composed from is as it was (what it checked holds here too)."""
        try:
            self.reader.join(_WAIT_S)
            if self.reader.is_alive() or not self.data:
                return False
            from hydra.core.plugins import Plugins

            Plugins.instance()  # Hydra's plugin scan loads its modules anew: their classes, before unpickling
            try:
                made, returned = pickle.loads(self.data)
            except Exception:  # noqa: BLE001 (what does not load here is composed here)
                return False
            return fastconfig.adopt(made) and returned
        finally:
            self.cancel()

    def cancel(self) -> None:
        if self.abandoned:
            return
        self.abandoned = True
        try:
            os.kill(self.pid, signal.SIGKILL)  # done or not, it has nothing more to give
        except ProcessLookupError:
            pass
        self.reader.join()  # the child's end closes its pipe: the reader sees the end of it
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:  # reaped already
            pass


def start(compose: Callable[[], None], check: Callable[[], None] | None = None) -> Ahead | None:
    """Fork a child that runs compose() and sends fastconfig's compositions back; None where there is no fork
    or fastconfig is off (LOSSBENCH_FASTCONFIG=0). check: what this process would run in compose()'s place (the
    preflight without its prefetch); where compose() raises a LossbenchError and check() raises one too, the
    child sends that error's message, which this process reports at once (Ahead._read)."""
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
        data = memoryview(_run(compose, check))
        while data:
            data = data[os.write(write, data):]
    finally:
        os._exit(0)


def _run(compose: Callable[[], None], check: Callable[[], None] | None) -> bytes:
    """In the child: COMPOSED and a pickle of the compositions compose() made, or REFUSED and the message of the
    error check() raises where compose() raised one too (the refusal this process would report)."""
    from lossbench.errors import LossbenchError

    try:
        compose()
        returned = True
    except LossbenchError:
        if check is not None:
            try:
                check()
            except LossbenchError as e:
                return REFUSED + str(e).encode()
            except BaseException:  # noqa: BLE001 (the parent composes again, and reports what is wrong)
                pass
        returned = False
    except BaseException:  # the parent composes again, and reports what is wrong
        returned = False
    return COMPOSED + pickle.dumps((fastconfig.export(), returned), protocol=pickle.HIGHEST_PROTOCOL)
