"""Files a run leaves behind, written atomically (temp file + rename): a crash mid-write keeps the old one.

A run directory is untrusted input: what is in it is checked before it is opened (`check_run_dir`,
`read_regular`), nothing in it is opened through a symbolic link (O_NOFOLLOW), and nothing is opened in a way
that can wait (O_NONBLOCK: a FIFO named summary.json is refused, never read).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import math
import os
import re
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lossbench.errors import ConfigError, LossbenchError

SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.pt"
LOCK = ".lock"
# Names in a run directory that must be regular files, and the directories lossbench or Hydra write into.
RUN_FILES = (SUMMARY, CHECKPOINT, LOCK)
RUN_DIRS = ("tb", ".hydra")
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class DiskFull(LossbenchError):
    """A write that the file system refused for lack of space (ENOSPC, EDQUOT) or a file size limit (EFBIG)."""


def kind_of(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "a regular file"


def path_problem(path: str | os.PathLike) -> str | None:
    """Why `path` can never be created or opened on this file system (a name or the whole path too long), or
    None. Checked before any os call, which would raise ENAMETOOLONG."""
    text = os.fsencode(os.path.abspath(path))
    name_max, path_max = 255, 4096
    with contextlib.suppress(OSError, ValueError):
        name_max = os.pathconf("/", "PC_NAME_MAX")
        path_max = os.pathconf("/", "PC_PATH_MAX")
    if len(text) >= path_max:
        return f"the path is {len(text)} bytes long and this file system allows {path_max - 1}"
    longest = max(text.split(b"/"), key=len)
    if len(longest) > name_max:
        return f"a name in it is {len(longest)} bytes long and this file system allows {name_max}"
    return None


def check_run_dir(run_dir: Path) -> None:
    """Refuse (one-line ConfigError) a run directory holding anything lossbench would have to follow or could
    block on: a symbolic link, FIFO, socket or device anywhere in its top level, tb/ or .hydra/, or a directory
    where lossbench's own files belong (or a file where tb/ or .hydra/ belong). Nothing is opened."""
    problems = []
    for d in (run_dir, *(run_dir / sub for sub in RUN_DIRS)):
        try:
            entries = list(os.scandir(d))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            raise ConfigError(
                f"{d} cannot be listed ({e.strerror}); lossbench will not write into it."
            ) from None
        for e in entries:
            mode = e.stat(follow_symlinks=False).st_mode
            regular = stat.S_ISREG(mode)
            wrong = (
                (not regular and not stat.S_ISDIR(mode))
                or (
                    d == run_dir
                    and ((e.name in RUN_FILES and not regular) or (e.name in RUN_DIRS and regular))
                )
                or (d != run_dir and not regular and d.name == ".hydra")
            )
            if wrong:
                problems.append(f"{Path(e.path)} is {kind_of(mode)}")
    if problems:
        raise ConfigError(
            f"{run_dir} is not a run directory lossbench will use: {'; '.join(problems[:3])}"
            f"{'; ...' if len(problems) > 3 else ''} (a run directory holds only regular files and the tb/ and "
            ".hydra/ directories; lossbench never follows a link or opens a FIFO or device in it). Nothing was "
            "changed: remove or move it aside, or use another directory."
        )


def open_regular(path: Path, flags: int = os.O_RDONLY, follow: bool = False) -> int:
    """os.open that never blocks and never follows a link (unless follow), and refuses anything but a regular
    file: FileNotFoundError if absent; a ConfigError naming the file and what it is otherwise."""
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW), 0o644)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENOTDIR):
            raise
        mode = os.lstat(path).st_mode
    else:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            os.set_blocking(fd, True)
            return fd
        os.close(fd)
    raise ConfigError(
        f"{path} is {kind_of(mode)}, not a regular file; lossbench does not read or write through it. "
        "Nothing was changed: remove it or move it aside."
    )


def read_regular(path: Path, follow: bool = False) -> bytes:
    """The bytes of a regular file (see open_regular)."""
    with os.fdopen(open_regular(path, follow=follow), "rb") as f:
        return f.read()


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )  # O_EXCL: never a link
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # replaces a link itself, never its target
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            raise DiskFull(
                f"the disk is full writing {path} ({os.strerror(e.errno)}); any previous version of it is kept. "
                "Free some space (or raise the file size limit), then continue the run with trainer.resume=true "
                "(a sweep: trainer.skip_completed=true)."
            ) from None
        raise


def _jsonable(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None  # strict JSON has no NaN/Inf
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def write_json(path: Path, data: dict) -> None:
    text = json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n"
    _atomic(path, lambda f: f.write(text.encode()))


def write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def read_json(path: Path, follow: bool = False) -> dict | None:
    """The parsed JSON of a regular file; None if it is absent, unreadable, not JSON, or not a regular file
    (a FIFO, device, directory or link: never opened in a way that blocks)."""
    try:
        return json.loads(read_regular(Path(path), follow=follow))
    except (OSError, ValueError, ConfigError):
        return None


def save_checkpoint(path: Path, state: dict) -> None:
    import torch  # here, not at the top: lossbench.analysis.report reads summaries without paying for torch

    buffer = io.BytesIO()  # serialised first, so that a full disk is an OSError of the write itself
    torch.save(state, buffer)
    _atomic(path, lambda f: f.write(buffer.getbuffer()))


def load_checkpoint(path: Path) -> dict:
    """A checkpoint, loaded as data: ``weights_only=True`` unpickles only tensors, numbers, strings, bools,
    None and lists/tuples/dicts of them (what lossbench writes), never an object whose unpickling runs code.
    A damaged or foreign file is a ConfigError that names it; nothing is changed."""
    import pickle

    import torch

    fd = open_regular(Path(path))  # FileNotFoundError if absent; a link, FIFO or directory: ConfigError
    try:
        with os.fdopen(fd, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = blocked_global(str(e))
        if not found:  # garbage bytes read as a (legacy) pickle
            raise _damaged(path, e) from None
        raise ConfigError(
            f"{path} holds objects that are not plain data (it asks for {found}); lossbench writes only tensors, "
            "numbers, strings, lists and dicts, and refuses to unpickle anything else, because loading it could run "
            "code. Nothing was changed. Resume only checkpoints lossbench wrote, or start the run afresh."
        ) from None
    except Exception as e:  # truncated, not a zip archive, not a torch file
        raise _damaged(path, e) from None


def blocked_global(message: str) -> str | None:
    """The global a refused weights_only unpickling asked for, from torch's message (its wording differs by
    what was asked: a GLOBAL opcode, a reduce with an unrecognised function, a class to build)."""
    for pattern in (
        r"Unsupported global: GLOBAL (\S+)",
        r"unsupported GLOBAL ([\w.]+)",
        r"unrecognized function `?([^`\s]+)`?",
        r"Unsupported class ([\w.]+)",
    ):
        if found := re.search(pattern, message):
            return found.group(1).rstrip(".,:")
    return None


def _damaged(path: Path, e: Exception) -> ConfigError:
    first = " ".join(str(e).split())
    first = first.split(". ")[0][
        :200
    ]  # torch's first sentence, whole (its advice about weights_only is not ours)
    return ConfigError(
        f"{path} is damaged or not a checkpoint ({type(e).__name__}: {first}). Nothing was changed (its "
        "summary.json is kept). If the run finished, its results are in summary.json; to train it again, start "
        "afresh in another directory (or move the damaged file aside)."
    )


@contextlib.contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on a run directory while a run writes into it.

    flock(2) on out_dir/.lock: the kernel drops the lock when the process ends however it ends (SIGKILL,
    a preempted node), so a crashed run never leaves a stale lock behind for its resume to trip over.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = open_regular(out_dir / LOCK, os.O_RDWR | os.O_CREAT)  # never through a link, never a FIFO
    f = os.fdopen(fd, "r+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown process"
        f.close()
        raise ConfigError(
            f"{out_dir} is in use by another lossbench run ({holder}); two runs never write into one "
            "directory. Wait for it to finish, stop it, or use another hydra.run.dir."
        ) from None
    try:
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
