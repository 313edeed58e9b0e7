"""A sweep's jobs trained in stacks, in this process or as submitit jobs (one stack per job).

Used by the `stacked` Hydra launcher (hydra_plugins/lossbench_stacked). The stack is the unit of
scheduling: `executor=submitit_local|submitit_slurm` submits each group of stackable jobs as one submitit job,
which trains them through the same `train.run_jobs`; a preempted or timed-out job is requeued by submitit
and its members resume from their own checkpoints (under submitit, trainer.skip_completed is implied).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lossbench.engine import diagnosis
from lossbench.errors import LossbenchError


def sweep_value(summary: dict, metric: str) -> float | None:
    """What a sweeper sees: the metric of a completed run; None for a failed or diverged one, or a NaN.

    Not NaN: hydra-optuna-sweeper 1.3.0 with optuna 2.10 aborts the whole study on a NaN (hydra issue
    #2237: it tells Optuna FAIL together with the NaN, which Optuna refuses), while a value that is not
    float-castable is told as a FAIL trial and the study goes on.
    """
    value = (summary.get("final") or {}).get(metric)
    if summary.get("status") != "completed" or value is None or not math.isfinite(value):
        return None
    return float(value)


def result_line(summary: dict, out_dir: Path) -> str:
    """The line a finished run prints: status (and diagnosis), steps, the headline validation metrics, its
    directory; a stalled run's diagnosis follows on its own line, with its numbers and the fix."""
    values = " ".join(f"{k}={v:.4f}" for k, v in summary["final"].items()
                      if k in ("val/loss", "val/auc", "val/accuracy", "val/nll") and v is not None)
    line = f"lossbench: {outcome(summary)} -> {values}  [{out_dir}]"
    d = summary.get("diagnosis")
    return line + (f"\nlossbench: {d['message']}" if isinstance(d, dict) and d.get("message") else "")


def outcome(summary: dict) -> str:
    """'completed 200 steps', 'completed 200 steps, STALLED', 'diverged at step 25', ..."""
    status, steps = summary.get("status"), summary.get("steps")
    text = f"diverged at step {steps}" if status == "diverged" else f"{status} {steps} steps"
    return text + diagnosis.short(summary)


def plain_list(value: Any) -> Any:
    """A config list as a Python list (None as []); anything else as it is, for the check to name it."""
    from omegaconf import OmegaConf

    if value is None:
        return []
    return list(value) if OmegaConf.is_list(value) or isinstance(value, (list, tuple)) else value


@dataclass
class Result:
    """One job's outcome: its summary, or the error that stopped it."""

    summary: dict | None = None
    error: str | None = None
    refused: bool = False  # its directory holds another run: left as it was

    def task(self, cfg: DictConfig) -> float | None:
        """What the job's task returns to Hydra (the sweep value), printing its line as `python -m lossbench`
        does. A failed job returns None: its summary says failed, and the sweep goes on."""
        if self.summary is None:
            print(f"lossbench: error: {self.error}", file=sys.stderr)
            if self.refused:
                from hydra.core.hydra_config import HydraConfig

                from lossbench.sweeps.sweep import refuse_job

                hc = HydraConfig.get()
                refuse_job(Path(hc.runtime.output_dir), hc, self.error or "")
            return None
        if self.summary.get("skipped"):
            from hydra.core.hydra_config import HydraConfig

            from lossbench.runs import rundir

            hc = HydraConfig.get()
            rundir.restore_job(Path(hc.runtime.output_dir), hc.output_subdir)
        print(result_line(self.summary, Path(self.summary.get("out_dir", "."))))
        return sweep_value(self.summary, cfg.objective_metric)


def _result(r: dict | BaseException) -> Result:
    from lossbench.engine.train import Refused
    from lossbench.runs.signals import Interrupted

    if isinstance(r, dict):
        return Result(summary=r)
    if isinstance(r, Interrupted):  # a submitit job's member stopped while loading
        return Result(error=r.message().removeprefix("lossbench: "))
    return Result(error=str(r) if isinstance(r, LossbenchError) else f"{type(r).__name__}: {r}",
                  refused=isinstance(r, Refused))


class StackJob:
    """A group of stackable jobs as one submitit job (a `submitit.helpers.Checkpointable`: on preemption or
    timeout submitit calls checkpoint(), requeues this same job, and the requeued one resumes its members)."""

    def __init__(self, jobs: list[tuple[DictConfig, Path]], max_members: int, max_memory_gb: float, stacked: bool,
                 halving_rungs: tuple[float, ...] = ()):
        self.jobs, self.max_members, self.max_memory_gb, self.stacked = jobs, max_members, max_memory_gb, stacked
        self.halving_rungs = tuple(halving_rungs)

    def __call__(self) -> list[Result]:
        from lossbench.runs import signals

        signals.take_in_submitit_job()
        try:
            with signals.loading():
                from lossbench.engine import train
        except signals.Interrupted as e:
            return [_result(e)] * len(self.jobs)
        from lossbench.sweeps.halving import Halving

        prune = Halving(self.halving_rungs) if self.halving_rungs else None
        results = [_result(r) for r in train.run_jobs(self.jobs, self.max_members, self.max_memory_gb, self.stacked,
                                                      prune)]
        if signals.stop_requested():
            signals.hand_over(signals.stop_requested())  # submitit's handler: requeue this job, and exit
        return results

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def run_stacks(jobs: list[tuple[DictConfig, Path]], max_members: int = 64, max_memory_gb: float = 8.0,
               stacked: bool = True, executor: str | None = None, submitit: dict | None = None,
               folder: Path | None = None, halving_rungs: tuple[float, ...] = ()) -> list[Result]:
    """halving_rungs: fractions of the run at which successive halving prunes the worse half of each method's
    learning rates within a stack (lossbench.sweeps.halving.Halving); () = off."""
    from lossbench.engine import train

    if executor is None:
        from lossbench.sweeps.halving import Halving

        prune = Halving(halving_rungs) if halving_rungs else None
        return [_result(r) for r in train.run_jobs(jobs, max_members, max_memory_gb, stacked, prune)]
    import submitit as sub

    ex = sub.AutoExecutor(folder=str(folder or Path(".submitit")), cluster=executor.removeprefix("submitit_"))
    params = dict(submitit or {})
    ex.update_parameters(**params)
    groups = train.group_jobs([cfg for cfg, _ in jobs], stacked, max_members)
    submitted = [(idxs, ex.submit(StackJob([jobs[i] for i in idxs], max_members, max_memory_gb, stacked,
                                           halving_rungs)))
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
