"""`hydra/launcher=stacked`: a sweep's jobs trained together in stacks (lossbench/engine/stack.py).

Each job is composed exactly as Hydra's basic launcher composes it (its own config, directory, `.hydra/`
record, callbacks and return value), but the training runs through `lossbench.engine.train.run_jobs`, which groups
the jobs that can share a stack and trains each stack in one loop. With `executor=submitit_local` or
`submitit_slurm`, each stack is one submitit job (a cluster's GPU node trains a stack of runs; submitit's
preemption requeue resumes the whole stack from its members' checkpoints).

Hydra only instantiates launchers found by its plugin scan of the `hydra_plugins` namespace package, hence
this location (installed with the project, see pyproject.toml).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)


def job_parts(config: DictConfig) -> tuple[Path, DictConfig]:
    """The job's output directory, as Hydra's run_job computes it (hydra.sweep.dir / hydra.sweep.subdir), and its
    config without the hydra node (a copy, as run_job hands a job its config), resolved: both while the job's
    HydraConfig is set."""
    from lossbench.config.fastconfig import copy_config

    old = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(config)
    try:
        out_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        cfg = copy_config(config)
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]
        OmegaConf.resolve(cfg)
        return out_dir, cfg
    finally:
        HydraConfig.instance().cfg = old


class StackedLauncher(Launcher):
    def __init__(self, max_members: int = 64, max_memory_gb: float = 8.0, stacked: bool = True,
                 executor: str | None = None, submitit: Any = None, halving_rungs: Any = None) -> None:
        from lossbench.config import check_launcher_options, plain_list

        rungs = plain_list(halving_rungs)
        check_launcher_options(max_members, max_memory_gb, executor, stacked, rungs)  # each named, before any conversion
        self.max_members, self.max_memory_gb, self.stacked = max_members, float(max_memory_gb), stacked
        self.halving_rungs = tuple(float(r) for r in rungs)
        self.executor = executor
        self.submitit = OmegaConf.to_container(submitit, resolve=True) if submitit is not None else {}
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from lossbench.engine.train import NOT_STARTED
        from lossbench.runs.signals import stop_requested
        from lossbench.sweeps.launch import Result, run_stacks

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        configs = []
        for n, overrides in enumerate(job_overrides):
            config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(config):
                config.hydra.job.id = config.hydra.job.num = initial_job_idx + n
            configs.append(config)
        parts = [job_parts(c) for c in configs]
        for config, (d, _) in zip(configs, parts, strict=True):  # the .hydra record first: a job that never trains has it
            hydra_dir = d / str(config.hydra.output_subdir)  # (job_parts() noted what the directory held before)
            if not (hydra_dir / "overrides.yaml").exists():
                hydra_dir.mkdir(parents=True, exist_ok=True)
                OmegaConf.save(config.hydra.overrides.task, hydra_dir / "overrides.yaml")
        log.info(f"Launching {len(configs)} jobs in stacks of up to {self.max_members}")
        results = [Result(error=NOT_STARTED)] * len(configs) if stop_requested() else run_stacks([(cfg, d) for d, cfg in parts],
                             max_members=self.max_members, max_memory_gb=self.max_memory_gb, stacked=self.stacked,
                             executor=self.executor, submitit=self.submitit,
                             folder=Path(str(self.config.hydra.sweep.dir)) / ".submitit",
                             halving_rungs=self.halving_rungs)
        # Each job's record and callbacks, as Hydra's run_job makes them; its "task" hands back the result.
        returns = []
        for config, result in zip(configs, results, strict=True):
            returns.append(run_job(hydra_context=self.hydra_context, task_function=lambda cfg, r=result: r.task(cfg),
                                   config=config, job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir"))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return returns
