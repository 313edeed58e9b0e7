"""The directory a single run's attempt writes into: made sure to be creatable, and left as it was when the
run is refused before training.

Hydra creates hydra.run.dir (with its parents), writes .hydra/{config,hydra,overrides}.yaml and opens
<job>.log before lossbench's task starts, so a run refused by the task (MNIST missing, no CUDA, a resume
without a checkpoint) would leave a directory behind that later shows up in reports. `RunDirCallback` notes
what was there before Hydra writes; `discard` removes what the attempt added and puts back what it
overwrote, never touching a directory that another run holds. Sweeps keep every job's directory: a refused
job is recorded there as failed.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lossbench.errors import ConfigError
from lossbench.store import (
    LOCK,
    SUMMARY,
    check_run_dir,
    kind_of,
    path_problem,
    read_regular,
    run_lock,
    write_bytes,
)


@dataclass
class Before:
    """A run directory as it was before this attempt."""

    run_dir: Path
    created: list[Path]  # the run directory and the parents this attempt creates, deepest first
    entries: set[str] = field(default_factory=set)  # names in run_dir
    hydra_files: dict[str, bytes] = field(default_factory=dict)  # <output_subdir>/<name> -> content
    log_sizes: dict[str, int] = field(default_factory=dict)  # *.log -> size (Hydra appends to its log)
    summary: bytes | None = None
    lock: bytes | None = None  # .lock's content (the pid of the last run that held it)
    output_subdir: str | None = ".hydra"  # hydra.output_subdir


_before: Before | None = None
_jobs: dict[Path, Before] = {}  # a sweep job's directory as it was before Hydra wrote its .hydra record and log


def _refuse(message: str) -> None:
    """Inside Hydra (which catches Exception and prints a traceback): the CLI's one line, exit 2."""
    print(f"lossbench: error: {message}", file=sys.stderr)
    sys.exit(2)


def make_dir(path: Path, key: str) -> list[Path]:
    """mkdir -p path; returns the directories it created (deepest first). Refuses in one line if it cannot."""
    if why := path_problem(path):
        _refuse(f"{key}={path} cannot be created: {why}.")
    if path.exists() and not path.is_dir():
        _refuse(f"{key}={path} is an existing file, not a directory. Point {key} at a new or empty directory.")
    created = []
    p = path
    while not p.exists() and p != p.parent:
        created.append(p)
        p = p.parent
    if p.exists() and not p.is_dir():
        _refuse(f"{key}={path} cannot be created: {p} is a file, not a directory.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        for d in created:
            _rmdir(d)
        _refuse(f"{key}={path} cannot be created: {e.strerror or e} ({e.filename or path}).")
    if not os.access(path, os.W_OK | os.X_OK):
        _refuse(f"{key}={path} is not writable.")
    return created


def _rmdir(d: Path) -> bool:
    try:
        d.rmdir()
        return True
    except OSError:
        return False


def _read(path: Path) -> bytes | None:
    try:
        return read_regular(path)
    except (OSError, ConfigError):
        return None


def snapshot(run_dir: Path, output_subdir: str | None) -> Before:
    """What run_dir holds now: its entries, its Hydra record's bytes, its logs' sizes, its summary and lock."""
    before = Before(run_dir, [])
    if run_dir.is_dir():
        before.entries = {p.name for p in run_dir.iterdir()}
        sub = run_dir / output_subdir if output_subdir is not None else None
        if sub is not None and sub.is_dir() and not sub.is_symlink():
            before.hydra_files = {p.name: _read(p) or b"" for p in sub.iterdir() if p.is_file() and not p.is_symlink()}
        before.log_sizes = {p.name: p.lstat().st_size for p in run_dir.glob("*.log") if p.is_file() and not p.is_symlink()}
        before.summary = _read(run_dir / SUMMARY)
        before.lock = _read(run_dir / LOCK)
    return before


def note_job_dir(job_dir: Path, output_subdir: str | None) -> None:
    """Note a sweep job's directory as it is before Hydra's run_job writes into it (the ${lossbench.job_dir:}
    resolver calls this: run_job resolves the job's directory before it writes the job's .hydra record and
    log), so that a job refused because its directory holds another run leaves it byte-identical."""
    job_dir = Path(os.path.abspath(job_dir))
    if job_dir not in _jobs:
        _jobs[job_dir] = snapshot(job_dir, output_subdir)


def restore_job(job_dir: Path, output_subdir: str | None) -> None:
    """Put back the .hydra record and log of a sweep job that did not run (refused, or skipped as finished): the
    directory then holds exactly what it held before this sweep, the record of the run whose results it has."""
    b = _jobs.pop(Path(os.path.abspath(job_dir)), None)
    if b is None or not b.entries:
        return
    sub = job_dir / output_subdir if output_subdir is not None else None
    if sub is not None and sub.is_dir() and not sub.is_symlink():
        for p in sub.iterdir():
            if p.name in b.hydra_files:
                if _read(p) != b.hydra_files[p.name]:
                    write_bytes(p, b.hydra_files[p.name])
            elif p.is_file() or p.is_symlink():
                p.unlink()
        if output_subdir not in b.entries:
            _rmdir(sub)
    for log in job_dir.glob("*.log"):
        if log.name not in b.entries and (log.is_file() or log.is_symlink()):
            log.unlink()
        elif log.name in b.log_sizes and log.is_file() and log.lstat().st_size > b.log_sizes[log.name]:
            os.truncate(log, b.log_sizes[log.name])


class RunDirCallback(Callback):
    """configs/hydra/default.yaml: checks hydra.run.dir / hydra.sweep.dir before Hydra creates them, and notes
    what a single run's directory held before this attempt (for `discard`)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _before
        HydraConfig.instance().set_config(config)  # ${hydra:...} in run.dir resolves as in Hydra's run_job
        run_dir = Path(os.path.abspath(str(OmegaConf.select(config, "hydra.run.dir"))))
        if why := path_problem(run_dir):
            _refuse(f"hydra.run.dir={run_dir} cannot be created: {why}.")
        existed = run_dir.is_dir()
        if existed:
            try:  # before Hydra writes its record and log there: never through a link, never into a FIFO
                check_run_dir(run_dir)
            except ConfigError as e:
                _refuse(str(e))
        lock = _read(run_dir / LOCK) if existed else None
        if lock is not None:
            try:  # a live run holds it: refuse before Hydra overwrites that run's .hydra record
                with run_lock(run_dir):
                    pass
            except ConfigError as e:
                _refuse(str(e))
        before = snapshot(run_dir, config.hydra.output_subdir)
        before.lock, before.output_subdir = lock, config.hydra.output_subdir  # .lock as it was before the test
        before.created = make_dir(run_dir, "hydra.run.dir")
        _before = before

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Before the sweep writes anything: the sweep directory, and every job directory an earlier sweep left
        in it, hold nothing that Hydra's own writes (multirun.yaml, each job's .hydra record and log) would follow
        or block on."""
        sweep_dir = Path(os.path.abspath(str(config.hydra.sweep.dir)))
        make_dir(sweep_dir, "hydra.sweep.dir")
        _jobs.clear()
        try:
            check_sweep_dir(sweep_dir)
        except ConfigError as e:
            _refuse(str(e))


def check_sweep_dir(sweep_dir: Path) -> None:
    """No link, FIFO or device in the sweep directory, and each job directory in it passes check_run_dir."""
    for entry in os.scandir(sweep_dir):
        if entry.is_dir(follow_symlinks=False):
            if not entry.name.startswith("."):
                check_run_dir(Path(entry.path))
        elif not entry.is_file(follow_symlinks=False):
            mode = entry.stat(follow_symlinks=False).st_mode
            raise ConfigError(
                f"{entry.path} is {kind_of(mode)}; a sweep directory holds only regular files and job directories "
                "(lossbench never follows a link or opens a FIFO or device in it). Nothing was changed: remove or "
                "move it aside, or use another hydra.sweep.dir.")


def discard_current() -> bool:
    """discard() this process's single run, when a stop signal came while Hydra set it up."""
    return _before is not None and discard(_before.run_dir, _before.output_subdir)


def discard(run_dir: Path, output_subdir: str | None) -> bool:
    """Undo what this single run's attempt did to run_dir, when it was refused before writing a summary.

    Removes what the attempt added (its .hydra record, its log, the directory and the parents it created, if
    nothing else is in them) and restores what it overwrote (an earlier run's .hydra files and log). False,
    and nothing touched, when the attempt is not the one noted, it wrote a summary (it started a run: that
    record stays), or another run holds the directory.
    """
    b = _before
    if b is None or b.run_dir != Path(os.path.abspath(run_dir)) or not run_dir.is_dir():
        return False
    if _read(run_dir / SUMMARY) != b.summary:
        return False
    try:
        with run_lock(run_dir):
            for entry in run_dir.iterdir():
                if entry.name not in b.entries and entry.name != LOCK:
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            sub = run_dir / output_subdir if output_subdir is not None else None
            if sub is not None and output_subdir in b.entries and sub.is_dir():
                for p in sub.iterdir():
                    if p.name in b.hydra_files:
                        write_bytes(p, b.hydra_files[p.name])
                    elif p.is_file():
                        p.unlink()
            for name, size in b.log_sizes.items():
                log = run_dir / name
                if log.is_file() and log.stat().st_size > size:
                    os.truncate(log, size)
            if b.lock is None:
                (run_dir / LOCK).unlink(missing_ok=True)
            else:
                write_bytes(run_dir / LOCK, b.lock)
    except ConfigError:
        return False
    _drop_log_handlers(run_dir)
    for d in b.created:  # deepest first; stops at the first that holds something else
        if not _rmdir(d):
            break
    return True


def _drop_log_handlers(run_dir: Path) -> None:
    """Close the logging handlers Hydra opened on the run's log file: they open it lazily, and one left pointing
    into a removed directory raises on the next message logged in this process (a later in-process run)."""
    import logging

    root = os.path.abspath(run_dir) + os.sep
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for h in list(getattr(logger, "handlers", [])):
            if isinstance(h, logging.FileHandler) and h.baseFilename.startswith(root):
                logger.removeHandler(h)
                h.close()
