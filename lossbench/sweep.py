"""Hydra callbacks for sweeps: every job's outcome is printed and listed at the end of the sweep."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lossbench.store import SUMMARY, read_json, write_json


def job_dirs(root: Path) -> list[Path]:
    """A sweep's job directories (those Hydra created, with their .hydra record), in job-number order."""
    dirs = {p.parent for p in root.glob(f"*/{SUMMARY}")} | {p.parent for p in root.glob("*/.hydra")}
    return sorted(dirs, key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))


def job_overrides(job_dir: Path) -> list[str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.exists() else []


class SweepStatusCallback(Callback):
    """Prints each job's status and writes <sweep dir>/sweep_status.json when the sweep ends.

    A job that left no summary.json (killed by the scheduler, say) is listed as "missing", never dropped.
    """

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode is None or str(config.hydra.mode) != "RunMode.MULTIRUN":
            return
        out = Path(config.hydra.runtime.output_dir)
        s = read_json(out / SUMMARY) or {}
        status = s.get("status") or ("failed" if job_return.status == JobStatus.FAILED else "unknown")
        print(f"lossbench sweep: job {config.hydra.job.num} {status} "
              f"{' '.join(config.hydra.overrides.task)} -> {out}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(config.hydra.sweep.dir)
        jobs = []
        for d in job_dirs(root):
            s = read_json(d / SUMMARY) or {}
            jobs.append({"dir": str(d), "overrides": job_overrides(d), "status": s.get("status", "missing"),
                         "steps": s.get("steps"), "error": s.get("error")})
        write_json(root / "sweep_status.json", {"jobs": jobs})
        counts = Counter(j["status"] for j in jobs)
        print(f"lossbench sweep: {len(jobs)} jobs in {root}: {json.dumps(dict(counts))}. "
              f"Compare them with: python -m lossbench.report {root}")
