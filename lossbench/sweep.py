"""Hydra callbacks for sweeps: every job's outcome is printed and listed at the end of the sweep."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lossbench.store import SUMMARY, read_json, write_json


class SweepStatusCallback(Callback):
    """Prints each job's status and writes <sweep dir>/sweep_status.json when the sweep ends."""

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
        for path in sorted(root.glob(f"*/{SUMMARY}")):
            s = read_json(path) or {}
            jobs.append({"dir": str(path.parent), "status": s.get("status", "unknown"), "steps": s.get("steps"),
                         "error": s.get("error")})
        write_json(root / "sweep_status.json", {"jobs": jobs})
        counts = Counter(j["status"] for j in jobs)
        print(f"lossbench sweep: {len(jobs)} jobs in {root}: {json.dumps(dict(counts))}")
