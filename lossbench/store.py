"""Files a run leaves behind, written atomically (temp file + rename): a crash mid-write keeps the old one."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lossbench import ConfigError

SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.pt"
LOCK = ".lock"


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def save_checkpoint(path: Path, state: dict) -> None:
    import torch  # here, not at the top: lossbench.report reads summaries without paying for torch

    _atomic(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict:
    """A checkpoint, loaded as data: ``weights_only=True`` unpickles only tensors, numbers, strings, bools,
    None and lists/tuples/dicts of them (what lossbench writes), never an object whose unpickling runs code.
    A damaged or foreign file is a ConfigError that names it; nothing is changed."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if not found:  # garbage bytes read as a (legacy) pickle
            raise _damaged(path, e) from None
        raise ConfigError(
            f"{path} holds objects that are not plain data (it names {found.group(1)}); lossbench writes only tensors, numbers, "
            "strings, lists and dicts, and refuses to unpickle anything else, because loading it could run code. "
            "Nothing was changed. Resume only checkpoints lossbench wrote, or start the run afresh."
        ) from None
    except Exception as e:  # truncated, not a zip archive, not a torch file
        raise _damaged(path, e) from None


def _damaged(path: Path, e: Exception) -> ConfigError:
    return ConfigError(
        f"{path} is damaged or not a checkpoint ({type(e).__name__}: {' '.join(str(e).split())[:160]}). Nothing "
        "was changed (its summary.json is kept). If the run finished, its results are in summary.json; to train "
        "it again, start afresh in another directory (or move the damaged file aside)."
    )


@contextlib.contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on a run directory while a run writes into it.

    flock(2) on out_dir/.lock: the kernel drops the lock when the process ends however it ends (SIGKILL,
    a preempted node), so a crashed run never leaves a stale lock behind for its resume to trip over.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    f = open(out_dir / LOCK, "a+")  # noqa: SIM115 (held open for the whole run)
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
