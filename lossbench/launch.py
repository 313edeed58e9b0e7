"""A sweep's jobs trained in stacks, in this process or as submitit jobs (one stack per job).

Used by the `stacked` Hydra launcher (hydra_plugins/lossbench_stacked). The stack is the unit of
scheduling: `executor=submitit_local|submitit_slurm` submits each group of stackable jobs as one submitit job,
which trains them through the same `train.run_jobs`; a preempted or timed-out job is requeued by submitit
and its members resume from their own checkpoints (under submitit, trainer.skip_completed is implied).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lossbench import ConfigError, LossbenchError

EXECUTORS = (None, "submitit_local", "submitit_slurm")


def check_launcher_options(max_members: Any, max_memory_gb: Any, executor: Any) -> None:
    if isinstance(max_members, bool) or not isinstance(max_members, int) or max_members < 1:
        raise ConfigError(f"hydra.launcher.max_members must be an integer >= 1, got {max_members!r}.")
    if isinstance(max_memory_gb, bool) or not isinstance(max_memory_gb, (int, float)) or not max_memory_gb > 0:
        raise ConfigError(f"hydra.launcher.max_memory_gb must be a number > 0, got {max_memory_gb!r}.")
    if executor not in EXECUTORS:
        raise ConfigError(f"Unknown hydra.launcher.executor={executor!r}. Valid choices: null (this process), "
                          "submitit_local, submitit_slurm.")


@dataclass
class Result:
    """One job's outcome: its summary, or the error that stopped it."""

    summary: dict | None = None
    error: str | None = None

    def task(self, cfg: DictConfig) -> float | None:
        """What the job's task returns to Hydra (the sweep value), printing its line as `python -m lossbench`
        does. A failed job returns None: its summary says failed, and the sweep goes on."""
        from lossbench.__main__ import result_line, sweep_value

        if self.summary is None:
            print(f"lossbench: error: {self.error}", file=sys.stderr)
            return None
        print(result_line(self.summary, Path(self.summary.get("out_dir", "."))))
        return sweep_value(self.summary, cfg.objective_metric)


def _result(r: dict | BaseException) -> Result:
    if isinstance(r, dict):
        return Result(summary=r)
    return Result(error=str(r) if isinstance(r, LossbenchError) else f"{type(r).__name__}: {r}")


class StackJob:
    """A group of stackable jobs as one submitit job (a `submitit.helpers.Checkpointable`: on preemption or
    timeout submitit calls checkpoint(), requeues this same job, and the requeued one resumes its members)."""

    def __init__(self, jobs: list[tuple[DictConfig, Path]], max_members: int, max_memory_gb: float, stacked: bool):
        self.jobs, self.max_members, self.max_memory_gb, self.stacked = jobs, max_members, max_memory_gb, stacked

    def __call__(self) -> list[Result]:
        from lossbench import train
        from lossbench.signals import hand_over, stop_requested

        results = [_result(r) for r in train.run_jobs(self.jobs, self.max_members, self.max_memory_gb, self.stacked)]
        if stop_requested():
            hand_over(stop_requested())  # submitit's handler: requeue this job, and exit
        return results

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def run_stacks(jobs: list[tuple[DictConfig, Path]], max_members: int = 64, max_memory_gb: float = 8.0,
               stacked: bool = True, executor: str | None = None, submitit: dict | None = None,
               folder: Path | None = None) -> list[Result]:
    from lossbench import train

    if executor is None:
        return [_result(r) for r in train.run_jobs(jobs, max_members, max_memory_gb, stacked)]
    import submitit as sub

    ex = sub.AutoExecutor(folder=str(folder or Path(".submitit")), cluster=executor.removeprefix("submitit_"))
    params = dict(submitit or {})
    ex.update_parameters(**params)
    groups = train.group_jobs([cfg for cfg, _ in jobs], stacked, max_members)
    submitted = [(idxs, ex.submit(StackJob([jobs[i] for i in idxs], max_members, max_memory_gb, stacked)))
                 for idxs in groups]
    results: list[Result] = [Result(error="not run")] * len(jobs)
    for idxs, job in submitted:
        try:
            out = job.results()[0]
        except Exception as e:  # the submitit job itself failed (killed, out of time without requeue, ...)
            out = [Result(error=f"submitit job {job.job_id} failed: {type(e).__name__}: {str(e)[-500:]}")] * len(idxs)
        for i, r in zip(idxs, out, strict=True):
            results[i] = r
    return results
