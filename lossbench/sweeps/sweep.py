"""Sweeps: job directory names, a sweep's job directories and axes, and the Hydra callback that prints every
job's outcome and lists them all at the end of the sweep."""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lossbench.engine import diagnosis
from lossbench.runs.overrides import (
    _frozen,
    _parsed,
    job_overrides,
    record_select,
    sweep_axes,
)
from lossbench.store import SUMMARY, read_json, write_json

MAX_NAME = 120  # characters of a job directory name; longer ones are cut and end with a hash of the whole


def job_dir_name(num: int, overrides: list[str], sweep_dir: str | None = None, params: dict | None = None) -> str:
    """`<job number>_<overrides>` (hydra.sweep.subdir), e.g. `3_loss=bce,seed=1`: the job number first keeps
    `ls` and TensorBoard in job order, the overrides say what the job is. Only the overrides of the keys that
    the sweep varies (sweep_axes: the sweep overrides recorded in <sweep_dir>/multirun.yaml, and the sweeper's
    `params`) are named: the sweep's constant ones are the same for every job and would push the varied ones
    out of sight. Without a record of the sweep, all of them, as Hydra's hydra.job.override_dirname (key=value
    sorted, joined with ","); BOOKKEEPING keys never. Characters that are unsafe in a path ("/" in
    `objective_metric=val/ap`, spaces, quotes) become "_"; a long name is cut, and a hash of the whole keeps it
    unique and the same on every rerun."""
    given = record_select(Path(sweep_dir) / "multirun.yaml", "hydra.overrides.task", []) if sweep_dir else []
    varied = sweep_axes(given, params) if given or params else None
    lines = sorted(o.input_line for o in _parsed(overrides) if varied is None or o.key_or_group in varied)
    name = re.sub(r"[^\w.,=+\-\[\]]", "_", ",".join(lines), flags=re.ASCII)
    if len(name) > MAX_NAME:
        name = f"{name[:MAX_NAME - 9]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    # The number zero-padded to the width of the sweep's last job number, so that `ls` sorts 00, 01, ..., 10;
    # a directory this job already has under another padding (a sweep from before, or of another size) is kept.
    total = sweep_size(given, params) if given or params else None
    width = len(str(total - 1)) if total else 1
    names = [f"{num:0{width}d}_{name}" if name else f"{num:0{width}d}", f"{num}_{name}" if name else str(num)]
    if sweep_dir and Path(sweep_dir).is_dir():
        existing = [d.name for d in Path(sweep_dir).iterdir() if job_number(d) == num and d.name.split("_", 1)[1:]
                    == names[0].split("_", 1)[1:]]
        if existing and names[0] not in existing:
            return existing[0]
    return names[0]


def sweep_size(given: list[str], params: dict | None) -> int | None:
    return _sweep_size(tuple(map(str, given)), _frozen(params))


@functools.lru_cache(maxsize=64)
def _sweep_size(given: tuple[str, ...], params: tuple | None) -> int | None:
    """How many jobs the basic sweeper makes of a sweep's overrides and params (their product); None when it
    cannot be told (another sweeper's syntax, e.g. Optuna's interval())."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # its own rule for expanding a sweep

    lines = [*(f"{k}={v}" for k, v in (params or ())), *given]  # the sweeper's order: the command line wins
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        return sum(len(b) for b in BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(lines), None))
    except Exception:  # noqa: BLE001 (not a basic sweep: no count, no padding)
        return None


def job_number(job_dir: Path) -> int | None:
    head = job_dir.name.split("_", 1)[0]
    return int(head) if head.isdigit() else None


def job_dirs(root: Path) -> list[Path]:
    """A sweep's job directories (those Hydra created, with their .hydra record), in job-number order."""
    dirs = {p.parent for p in root.glob(f"*/{SUMMARY}")} | {p.parent for p in root.glob("*/.hydra")}
    return sorted(dirs, key=lambda d: (job_number(d) is None, job_number(d) or 0, d.name))


class SweepStatusCallback(Callback):
    """Prints each job's status and writes <sweep dir>/sweep_status.json when the sweep ends.

    A job that left no summary.json is listed as "not started" (its directory has Hydra's record only: a sweep
    interrupted before it) or "missing" (killed by the scheduler, say), never dropped.
    """

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode is None or str(config.hydra.mode) != "RunMode.MULTIRUN":
            return
        out = Path(config.hydra.runtime.output_dir)
        s = read_json(out / SUMMARY) or {}
        status = s.get("status") or ("failed" if job_return.status == JobStatus.FAILED else "unknown")
        if _refusal(Path(str(config.hydra.sweep.dir)), out) is not None:
            status, s = "refused", {}  # the summary there is another run's, not this job's
        print(f"lossbench sweep: [{progress(Path(config.hydra.sweep.dir), config)}] job {config.hydra.job.num} "
              f"{status}{diagnosis.short(s)} {' '.join(config.hydra.overrides.task)} -> {out}", flush=True)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global current, refused
        current, refused = Path(config.hydra.sweep.dir), 0
        _ended.pop(str(current), None)  # counted afresh (a rerun may redo jobs)
        shutil.rmtree(current / REFUSED, ignore_errors=True)  # a killed earlier sweep's

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_status(Path(config.hydra.sweep.dir))


current: Path | None = None  # the sweep this process runs (set when it starts)
refused = 0  # how many of its jobs were refused (the sweep's exit code says not every job ran)
REFUSED = ".refused"  # <sweep dir>/.refused/<job dir name>.json: a job refused in this sweep (any process)


def mark_refused(sweep_dir: Path, job_dir: Path, error: str) -> None:
    """Record that this sweep did not run the job in job_dir (its directory holds another run): written beside
    the job directories, which stay byte-identical; write_status lists the job as refused."""
    write_json(sweep_dir / REFUSED / f"{job_dir.name}.json", {"dir": str(job_dir), "error": error})


def _refusal(sweep_dir: Path, job_dir: Path) -> dict | None:
    return read_json(sweep_dir / REFUSED / f"{job_dir.name}.json")


_ended: dict[str, set[str]] = {}  # sweep dir -> its job directories whose summary says they ended (progress)


def progress(root: Path, config: DictConfig) -> str:
    """'done/total' jobs of a sweep, counted from its directory (the jobs of a parallel launcher end in other
    processes): the jobs whose summary says they ended, out of the sweep's size (Optuna: n_trials)."""
    done = _ended.setdefault(str(root), set())  # a job that ended stays ended: its summary is read once
    for d in job_dirs(root):
        if d.name not in done and isinstance(s := read_json(d / SUMMARY), dict) and \
                s.get("status") not in (None, "running"):
            done.add(d.name)
    ended = len(done)
    given = record_select(root / "multirun.yaml", "hydra.overrides.task", [])
    params = OmegaConf.select(config, "hydra.sweeper.params")
    total = OmegaConf.select(config, "hydra.sweeper.n_trials") or sweep_size(
        given, OmegaConf.to_container(params) if params else None)
    return f"{ended}/{total}" if total else str(ended)


def write_status(root: Path) -> None:
    """<sweep dir>/sweep_status.json: every job's status, job-number order; printed as counts."""
    global refused
    jobs = []
    for d in job_dirs(root):
        s = read_json(d / SUMMARY)
        s = s if isinstance(s, dict) else {}
        status = s.get("status") or ("not started" if (d / ".hydra").is_dir() else "missing")
        job = {"dir": str(d), "overrides": job_overrides(d), "status": status, "steps": s.get("steps"),
               "diagnosis": diagnosis.name(s) or None, "error": s.get("error")}
        if (r := _refusal(root, d)) is not None:  # its summary is the run it already held
            job.update(status="refused", steps=None, diagnosis=None, error=r.get("error"))
        jobs.append(job)
    shutil.rmtree(root / REFUSED, ignore_errors=True)
    refused = sum(j["status"] == "refused" for j in jobs)
    write_json(root / "sweep_status.json", {"jobs": jobs})
    counts = Counter(j["status"] for j in jobs)
    diagnosed = Counter(j["diagnosis"] for j in jobs if j["diagnosis"])
    notes = f" Diagnosed: {json.dumps(dict(diagnosed))} (see each job's summary.json)." if diagnosed else ""
    print(f"lossbench sweep: {len(jobs)} jobs in {root}: {json.dumps(dict(counts))}.{notes} "
          f"Compare them with: python -m lossbench.report {root}")


def refuse_job(out_dir: Path, hc, error: str) -> None:
    """A sweep job that did not run because its directory holds another run: the directory is left byte-identical
    (Hydra's .hydra record and log put back) and the sweep lists the job as refused."""
    from lossbench.runs import rundir

    rundir.restore_job(out_dir, hc.output_subdir)
    mark_refused(Path(str(hc.sweep.dir)), out_dir, error)
