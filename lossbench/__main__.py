"""`python -m lossbench [overrides]`: one run, or a sweep with -m. Hydra composes configs/."""

from __future__ import annotations

import math
import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lossbench import LossbenchError
from lossbench.config import preflight
from lossbench.signals import hand_over
from lossbench.store import SUMMARY, write_json

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")  # absolute: the same when imported in-process


def parallel_jobs(hc) -> int:
    """How many jobs of this sweep share the machine; each job uses cores // jobs torch threads.

    basic launcher: 1 (jobs run one after another). joblib: n_jobs, negative counting back from the cores as
    joblib does (-1, its default, = one job per core). submitit: every job gets cpus_per_task cores (SLURM's
    allocation; submitit_local starts all jobs at once), so cores // cpus_per_task; unset = 1 core per job.
    """
    if hc.mode != RunMode.MULTIRUN:
        return 1
    launcher = hc.launcher
    target = str(launcher.get("_target_") or "")
    cores = os.cpu_count() or 1
    if "joblib" in target:
        n = int(launcher.get("n_jobs") or 1)
        return max(1, n if n > 0 else cores + 1 + n)
    if "submitit" in target:
        cpus = launcher.get("cpus_per_task")
        return max(1, cores // int(cpus)) if cpus else cores
    return 1


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


def _config(cfg: DictConfig) -> dict:
    """The resolved config (what lossbench.report groups runs by), unresolved if it cannot be resolved."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:
        return OmegaConf.to_container(cfg, resolve=False)


def record_failure(out_dir: Path, cfg: DictConfig, error: str) -> None:
    """A job that could not run still leaves a summary saying why (unless the dir holds another run's)."""
    from lossbench.store import read_json, run_lock

    path = out_dir / SUMMARY
    try:
        with run_lock(out_dir):  # never into a directory that a live run holds
            old = read_json(path)
            if old is None or old.get("status") == "running":
                write_json(path, {**(old or {}), "status": "failed", "error": error,
                                  "config": _config(cfg)})
    except LossbenchError:
        pass


@hydra.main(config_path=CONFIGS, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from lossbench import rundir, train  # torch is imported here, after Hydra has parsed the command line

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        summary = train.run(cfg, out_dir, jobs=parallel_jobs(hc))
    except KeyboardInterrupt:  # Ctrl-C before the training loop took over the signal (loading data, say)
        print("lossbench: interrupted before training started; nothing to resume", file=sys.stderr)
        sys.exit(130)
    except LossbenchError as e:
        print(f"lossbench: error: {e}", file=sys.stderr)
        # A single run refused before training leaves no directory behind; a sweep job's says failed.
        if multirun or not rundir.discard(out_dir, hc.output_subdir):
            record_failure(out_dir, cfg, str(e))
        if multirun:
            return None  # a sweep goes on; the job's summary says failed (see sweep_value)
        sys.exit(2)
    except Exception as e:
        if not multirun:
            raise
        traceback.print_exc()
        record_failure(out_dir, cfg, f"{type(e).__name__}: {e}")
        return None
    out_dir = Path(summary.get("out_dir", out_dir))  # trainer.resume=<run dir> continues in that dir
    if summary.get("exit_code"):
        how = ("a sweep continues it when rerun with trainer.skip_completed=true" if multirun else
               f"continue it with: python -m lossbench <same overrides> hydra.run.dir={out_dir} trainer.resume=true")
        print(f"lossbench: {summary['status']} at step {summary['steps']}; checkpoint in {out_dir}; {how}",
              file=sys.stderr)
        hand_over(summary["exit_code"] - 128)  # under submitit: its handler requeues the job, and exits
        sys.exit(summary["exit_code"])
    print(
        f"lossbench: {summary['status']} {summary['steps']} steps -> "
        + " ".join(f"{k}={v:.4f}" for k, v in summary["final"].items() if k in (
            "val/loss", "val/auc", "val/accuracy", "val/nll"))
        + f"  [{out_dir}]"
    )
    return sweep_value(summary, cfg.objective_metric)


def cli() -> None:
    """`python -m lossbench`: a command line Hydra or lossbench would refuse is refused here, in one line with
    exit 2, before Hydra creates any directory (config.preflight); then Hydra runs `main`."""
    try:
        preflight(sys.argv[1:], main, CONFIGS, "config")
    except LossbenchError as e:
        print(f"lossbench: error: {e}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
