"""What an attempt may do with its run directory: train afresh, resume, skip, or be refused.

A run directory belongs to one run. What a new attempt may do with a directory is decided here, before any
data is loaded, from what the directory holds (:func:`plan`):

==============================  ============================  =============================  ================
directory holds                 plain run                     trainer.resume                 skip_completed
==============================  ============================  =============================  ================
nothing                         train                         refused (no checkpoint)        train
a finished run (completed or    refused                       refused (nothing to resume)    skipped
diverged), or a checkpoint at
max_steps whose summary.json
is unreadable or lost
a checkpoint before max_steps   refused                       resumed                        resumed
a failed attempt, no checkpoint refused                       refused (no checkpoint)        trained again
a failed run whose checkpoint   refused                       refused (nothing to resume)    skipped (summary
is at max_steps                                                                              rebuilt, the old
                                                                                             one kept aside)
a diverged run                  refused                       refused (nothing to resume)    skipped
an unreadable summary.json and  refused                       refused                        refused
no checkpoint
another config's run            refused                       refused                        refused
a link, FIFO or device, or a    refused                       refused                        refused
directory where a file belongs
==============================  ============================  =============================  ================

"Refused" is a one-line ConfigError that names what the directory holds and what to do; nothing in the
directory is written. A summary is checked against SUMMARY_SCHEMA (one that fails counts as unreadable) and a
checkpoint is loaded as data (``torch.load(weights_only=True)``, store.py) and checked against
CHECKPOINT_SCHEMA: a damaged or foreign one is refused naming the file and the entry, and the summary next to
it is kept.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from lossbench.config import flatten, keys
from lossbench.engine import diagnosis
from lossbench.engine.numerics import Monitor
from lossbench.errors import ConfigError, LossbenchError
from lossbench.runs.logger import has_events
from lossbench.runs.record import FINISHED, load_entry, read_checkpoint, summary_problem
from lossbench.store import (
    CHECKPOINT,
    SUMMARY,
    check_run_dir,
    read_json,
    read_regular,
    write_bytes,
    write_json,
)

OFF = (None, 0, False)  # the value of an option that is off (model.dropout=0, data.jitter=0, ...)


def config_changes(old: dict, new: dict) -> list[str]:
    """The keys without role RESUME (lossbench.config.keys) whose values differ: 'key: old -> new'. A key the old
    config does not have (added to lossbench since it was written) at its off value changes nothing."""
    old, new = flatten(old), flatten(new)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(old.keys() | new.keys())
            if old.get(k) != new.get(k) and not keys.has(k, keys.Role.RESUME)
            and not (k not in old and new[k] in OFF)]


def _same_run(old_config: dict | None, resolved: dict, run_dir: Path, what: str) -> None:
    changed = config_changes(old_config or {}, resolved) if old_config is not None else []
    if changed:
        raise ConfigError(
            f"{run_dir} holds {what} of a different config ({'; '.join(changed[:6])}"
            f"{'; ...' if len(changed) > 6 else ''}); lossbench never writes one run into another's directory. "
            "Repeat the original overrides (in <run dir>/.hydra/overrides.yaml), or use another hydra.run.dir "
            "(for a sweep: another hydra.sweep.dir)."
        )


@dataclass
class Plan:
    """What an attempt does with its run directory: 'fresh', 'resume' or 'skip'."""

    action: str
    out_dir: Path
    checkpoint: dict | None = None  # loaded, for 'resume'
    previous: dict | None = None  # the finished run's summary, for 'skip'


def plan(cfg: DictConfig, out_dir: Path, max_steps: int | None = None) -> Plan:
    """Decide from the directory's contents what this attempt may do (see the module docstring).

    max_steps: the run's length when known without its data (None with trainer.epochs: a checkpoint is then
    taken as finished only by its summary)."""
    tc = cfg.trainer
    resolved = functools.cache(lambda: OmegaConf.to_container(cfg, resolve=True))  # only a rerun compares it
    resume = tc.resume
    if resume and resume is not True:
        out_dir = Path(str(resume))  # trainer.resume=<run dir>: continue that run, in that directory
    check_run_dir(out_dir)  # links, FIFOs, devices, a directory named summary.json: refused before anything
    summary_path, ck_path = out_dir / SUMMARY, out_dir / CHECKPOINT
    previous = read_json(summary_path)
    why_damaged = summary_problem(previous) if summary_path.exists() else None
    damaged = why_damaged is not None
    if damaged:
        previous = None
    if resume:
        if previous is not None and previous.get("status") == "diverged":
            raise ConfigError(
                f"Nothing to resume in {out_dir}: it holds a diverged run, a final result (a diverged run keeps no "
                "checkpoint; it would diverge again). Start a new run in another directory to train this config.")
        if not ck_path.exists():
            raise ConfigError(
                f"trainer.resume={str(resume).lower() if resume is True else resume}: no checkpoint at {ck_path}. "
                "Point trainer.resume at a run directory that holds one (trainer.resume=true means this run's "
                "hydra.run.dir), or drop trainer.resume to start afresh."
            )
        return Plan("resume", out_dir, checkpoint=read_checkpoint(ck_path))

    # A job that submitit (SLURM, or submitit_local) requeued after a preemption or timeout runs again in its own
    # directory and must continue from its checkpoint: under submitit, skip_completed is implied.
    if tc.skip_completed or os.environ.get("SUBMITIT_EXECUTOR"):
        if previous is not None and previous.get("status") in FINISHED:
            _same_run(previous.get("config"), resolved(), out_dir, f"a {previous['status']} run")
            return Plan("skip", out_dir, previous=previous)
        if ck_path.exists():
            ck = read_checkpoint(ck_path)
            _same_run(ck.get("config"), resolved(), out_dir, "a checkpoint")
            if max_steps is not None and ck["step"] >= max_steps:  # finished, but its summary is lost or wrong
                return Plan("skip", out_dir, previous=rebuild_summary(out_dir, ck, why_damaged, previous))
            return Plan("resume", out_dir, checkpoint=ck)
        if damaged:
            raise ConfigError(
                f"{summary_path} is unreadable ({why_damaged}) and {out_dir} holds no checkpoint, so what "
                "it recorded cannot be told (a diverged run keeps no checkpoint). lossbench will not write into "
                "it: move the directory aside, or use another hydra.sweep.dir."
            )
        if previous is not None:
            _same_run(previous.get("config"), resolved(), out_dir, f"a {previous.get('status')} attempt")
        return Plan("fresh", out_dir)  # never started, or failed before its first checkpoint: from step 0

    held = ([f"a run (status {previous.get('status')})"] if previous is not None else []) + \
        (["an unreadable summary.json"] if damaged else []) + (["a checkpoint"] if ck_path.exists() else []) + \
        (["TensorBoard events"] if has_events(out_dir) else [])
    if held:
        raise ConfigError(
            f"{out_dir} already holds {' and '.join(held)}; lossbench never writes two runs into one directory. "
            "Use trainer.resume=true to continue it, trainer.skip_completed=true in a rerun sweep, or another "
            "hydra.run.dir."
        )
    return Plan("fresh", out_dir)


def rebuild_summary(out_dir: Path, ck: dict, why_damaged: str | None, previous: dict | None = None) -> dict:
    """The summary of a run whose checkpoint shows it finished, when summary.json was unreadable, lost, or not
    final (a run that failed after its last checkpoint): what the checkpoint holds (history, best, convergence,
    monitor totals). The file it replaces is kept aside, byte for byte."""
    monitor = Monitor(torch.device("cpu"), None)
    load_entry(out_dir / CHECKPOINT, "monitor", lambda: monitor.load_state_dict(ck["monitor"]))
    if (out_dir / SUMMARY).exists():
        what = "unreadable" if why_damaged else "replaced"
        aside = out_dir / f"{SUMMARY}.{what}-{int(time.time())}"
        write_bytes(aside, read_regular(out_dir / SUMMARY))
    history = ck.get("history") or []
    summary = {
        "status": "completed", "config": ck["config"], "steps": ck["step"], "max_steps": ck["step"],
        "device": ck.get("device"), "final": {k: v for k, v in history[-1].items() if k != "step"} if history else {},
        "best": ck.get("best", {}), "convergence": {
            "target_metric": ck["config"]["trainer"].get("target_metric"),
            "target_value": ck["config"]["trainer"].get("target_value"),
            "steps_to_target": ck.get("steps_to_target")},
        "numerics": {**monitor.summary(), "last": dict(ck.get("last_window") or {})}, "history": history,
        "rebuilt": f"from {CHECKPOINT}: {SUMMARY} was " + (f"unreadable ({why_damaged})" if why_damaged else
                                                          "missing" if previous is None else
                                                          f"not final (status {previous.get('status')})"),
    }
    summary["diagnosis"] = diagnosis.diagnose(summary)
    if previous is not None:
        summary["replaced"] = {k: previous.get(k) for k in ("status", "steps", "error") if k in previous}
    write_json(out_dir / SUMMARY, summary)
    was = "unreadable" if why_damaged else "lost" if previous is None else f"{previous.get('status')}, not final"
    kept = "" if previous is None and not why_damaged else " (the old one kept aside)"
    print(f"lossbench: {out_dir} holds a finished run whose {SUMMARY} was {was}; rebuilt it from {CHECKPOINT}{kept}")
    return summary


def record_failure(out_dir: Path, cfg: DictConfig, error: str, locked: bool = False) -> bool:
    """A job that could not run leaves a summary saying why, in a directory that holds no other run's files
    (nothing yet, or only an earlier failed attempt's summary). locked: the caller holds the run's lock.
    Returns whether it wrote one (False: the directory is another run's, and nothing in it was touched)."""
    from lossbench.store import run_lock

    path = out_dir / SUMMARY
    try:
        check_run_dir(out_dir)
        old = read_json(path)
        if (path.exists() and not (isinstance(old, dict) and old.get("status") in ("running", "failed"))) or \
                (out_dir / CHECKPOINT).exists() or (old is None and has_events(out_dir)):
            return False
        with contextlib.nullcontext() if locked else run_lock(out_dir):  # never into a live run's directory
            try:
                config = OmegaConf.to_container(cfg, resolve=True)
            except Exception:  # an interpolation that cannot be resolved: keep it as written
                config = OmegaConf.to_container(cfg, resolve=False)
            write_json(path, {**(old or {}), "status": "failed", "error": error, "config": config})
            return True
    except (LossbenchError, OSError):
        return False


def discard(out_dir: Path) -> None:
    """Remove what a fresh attempt wrote before it trained (its 'running' summary, its empty event files)."""
    (out_dir / SUMMARY).unlink(missing_ok=True)
    for f in out_dir.rglob("events.out.tfevents.*"):
        f.unlink()
    if (out_dir / "tb").is_dir() and not any((out_dir / "tb").iterdir()):
        (out_dir / "tb").rmdir()


def check_resumable(ck: dict, resolved: dict, device_type: str, max_steps: int, run_dir: Path) -> None:
    """A checkpoint continues only the run it came from: same config (up to the keys with role RESUME), same device
    type, and steps left to train."""
    changed = config_changes(ck["config"], resolved)
    if changed:
        raise ConfigError(
            f"Cannot resume {run_dir}: the config differs from the checkpoint's ({'; '.join(changed)}). A resume "
            "must repeat the original run's overrides (they are in <run dir>/.hydra/overrides.yaml); only "
            f"{', '.join(keys.listed(keys.Role.RESUME))} may change. To train a different config, "
            "start a new run."
        )
    if ck["device"] != device_type:
        raise ConfigError(
            f"Cannot resume {run_dir} on {device_type}: its checkpoint was written on {ck['device']} (the "
            f"random-number state belongs to that device). Resume with trainer.device={ck['device']}."
        )
    if ck["step"] >= max_steps:
        raise ConfigError(
            f"Nothing to resume in {run_dir}: its checkpoint is at step {ck['step']} and this config trains "
            f"{max_steps} steps. Raise trainer.max_steps (or trainer.epochs) to train it further."
        )
