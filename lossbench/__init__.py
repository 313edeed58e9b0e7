"""lossbench: an experiment suite for how classification losses behave in training."""

import sys


def _started_as_cli() -> bool:
    """`python -m lossbench`: Python imports this package before its __main__, so the CLI's stop signals are
    taken here, before omegaconf, hydra or torch are imported (signals.install_cli_handlers)."""
    argv = list(getattr(sys, "orig_argv", []))
    return "-m" in argv and argv[argv.index("-m") + 1 : argv.index("-m") + 2] == ["lossbench"]


if _started_as_cli():
    from lossbench.runs.signals import install_cli_handlers

    install_cli_handlers(multirun=any(a in ("-m", "--multirun") for a in sys.argv[1:]))

import uuid  # noqa: E402

from omegaconf import OmegaConf  # noqa: E402

__version__ = "0.1.0"

# ${uid:} in configs/hydra/default.yaml: a random suffix so that runs started in the same second never share
# a directory. Cached like Hydra's ${now:}, so a sweep's jobs all see the sweep's value.
OmegaConf.register_new_resolver("uid", lambda: uuid.uuid4().hex[:6], use_cache=True, replace=True)


def _direction(metric: str) -> str:
    """${lossbench.direction:${objective_metric}} (configs/hparams_search/optuna.yaml): the way to optimise."""
    from lossbench.config import LOWER_IS_BETTER

    return "minimize" if metric in LOWER_IS_BETTER else "maximize"


OmegaConf.register_new_resolver("lossbench.direction", _direction, replace=True)


def _bookkeeping() -> list[str]:
    """${lossbench.bookkeeping:} (hydra.job.config.override_dirname.exclude_keys): the keys with role BOOKKEEPING."""
    from lossbench.config.keys import Role, keys_with

    return list(keys_with(Role.BOOKKEEPING))


OmegaConf.register_new_resolver("lossbench.bookkeeping", _bookkeeping, replace=True)


def _job_dir(*, _root_) -> str:
    """${lossbench.job_dir:} (hydra.sweep.subdir in configs/hydra/default.yaml): a sweep job's directory name,
    from its number, its overrides and its sweep (lossbench.sweeps.sweep.job_dir_name)."""
    from pathlib import Path

    from lossbench.runs.rundir import note_job_dir
    from lossbench.sweeps.sweep import job_dir_name

    h = _root_.hydra
    params = OmegaConf.select(h, "sweeper.params")
    name = job_dir_name(h.job.num, list(h.overrides.task), str(h.sweep.dir),
                        OmegaConf.to_container(params) if params else None)
    note_job_dir(Path(str(h.sweep.dir)) / name, h.output_subdir)  # before Hydra writes the job's record there
    return name


OmegaConf.register_new_resolver("lossbench.job_dir", _job_dir, replace=True)


def _help_groups(kind: str) -> str:
    """${lossbench.help_groups:user|study} (hydra.help.template): the config groups a run is composed from (the
    groups configs/config.yaml's defaults choose, the presets and the search spaces), or those only the study
    presets use, one `group: options` line each, from the files in configs/ (schema/ is internal)."""
    from lossbench.config import CONFIGS as configs
    defaults = OmegaConf.to_container(OmegaConf.load(configs / "config.yaml").defaults)
    user = {next(iter(d)) for d in defaults if isinstance(d, dict)} - {"hydra"}
    lines = []
    for group in sorted(p for p in configs.iterdir() if p.is_dir() and p.name not in ("hydra", "schema")):
        if (group.name in user) == (kind == "user"):
            lines.append(f"{group.name}: {', '.join(sorted(f.stem for f in group.glob('*.yaml')))}")
    return "\n".join(lines)


OmegaConf.register_new_resolver("lossbench.help_groups", _help_groups, replace=True)


from lossbench.config import schema as _schema  # noqa: E402 (the config types, registered before any composition)

_schema.register()


def __getattr__(name: str):
    """``lossbench.watch`` and ``lossbench.check_setup``, imported on first use: ``import lossbench`` stays
    free of torch and TensorBoard."""
    if name == "watch":
        from lossbench.tools.watcher import watch

        return watch
    if name == "check_setup":
        from lossbench.tools.doctor import check_setup

        return check_setup
    raise AttributeError(f"module 'lossbench' has no attribute {name!r}")
