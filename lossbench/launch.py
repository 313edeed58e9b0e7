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


def check_launcher_options(max_members: Any, max_memory_gb: Any, executor: Any, stacked: Any = True,
                           halving_rungs: Any = ()) -> None:
    """The stacked launcher's options (hydra.launcher.*), each named when refused."""
    from lossbench.tune import check_rungs

    check_rungs(halving_rungs, "hydra.launcher.halving_rungs")
    if isinstance(max_members, bool) or not isinstance(max_members, int) or max_members < 1:
        raise ConfigError(f"hydra.launcher.max_members must be an integer >= 1, got {max_members!r}.")
    if isinstance(max_memory_gb, bool) or not isinstance(max_memory_gb, (int, float)) or \
            not 0 < max_memory_gb < float("inf"):
        raise ConfigError(f"hydra.launcher.max_memory_gb must be a finite number > 0, got {max_memory_gb!r}.")
    if executor not in EXECUTORS:
        raise ConfigError(f"Unknown hydra.launcher.executor={executor!r}. Valid choices: null (this process), "
                          "submitit_local, submitit_slurm.")
    if not isinstance(stacked, bool):
        raise ConfigError(f"hydra.launcher.stacked must be true or false, got {stacked!r}.")


def check_launcher(launcher: Any) -> None:
    """A sweep's launcher options (the composed hydra.launcher node), checked before anything is created: the
    stacked launcher's, and joblib's n_jobs (joblib refuses 0 only once the sweep has started)."""
    target = str(launcher.get("_target_") or "")
    if target.endswith("StackedLauncher"):
        rungs = launcher.get("halving_rungs")
        check_launcher_options(launcher.get("max_members"), launcher.get("max_memory_gb"), launcher.get("executor"),
                               launcher.get("stacked"), plain_list(rungs))
    if "joblib" in target and launcher.get("n_jobs") == 0:
        raise ConfigError("hydra.launcher.n_jobs must not be 0: give the number of parallel jobs (>= 1), or a "
                          "negative number counting back from the cores (-1 = one job per core).")


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
        from lossbench.__main__ import result_line, sweep_value

        if self.summary is None:
            print(f"lossbench: error: {self.error}", file=sys.stderr)
            if self.refused:
                from hydra.core.hydra_config import HydraConfig

                from lossbench.__main__ import refuse_job

                hc = HydraConfig.get()
                refuse_job(Path(hc.runtime.output_dir), hc, self.error or "")
            return None
        if self.summary.get("skipped"):
            from hydra.core.hydra_config import HydraConfig

            from lossbench import rundir

            hc = HydraConfig.get()
            rundir.restore_job(Path(hc.runtime.output_dir), hc.output_subdir)
        print(result_line(self.summary, Path(self.summary.get("out_dir", "."))))
        return sweep_value(self.summary, cfg.objective_metric)


def _result(r: dict | BaseException) -> Result:
    from lossbench.train import Refused

    if isinstance(r, dict):
        return Result(summary=r)
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
        from lossbench import train
        from lossbench.signals import hand_over, stop_requested
        from lossbench.tune import Halving

        prune = Halving(self.halving_rungs) if self.halving_rungs else None
        results = [_result(r) for r in train.run_jobs(self.jobs, self.max_members, self.max_memory_gb, self.stacked,
                                                      prune)]
        if stop_requested():
            hand_over(stop_requested())  # submitit's handler: requeue this job, and exit
        return results

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def run_stacks(jobs: list[tuple[DictConfig, Path]], max_members: int = 64, max_memory_gb: float = 8.0,
               stacked: bool = True, executor: str | None = None, submitit: dict | None = None,
               folder: Path | None = None, halving_rungs: tuple[float, ...] = ()) -> list[Result]:
    """halving_rungs: fractions of the run at which successive halving prunes the worse half of each method's
    learning rates within a stack (lossbench.tune.Halving); () = off."""
    from lossbench import train

    if executor is None:
        from lossbench.tune import Halving

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
