"""`python -m lossbench [overrides]`: one run, or a sweep with -m. Hydra composes configs/."""

from __future__ import annotations

import math
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lossbench import LossbenchError
from lossbench.store import SUMMARY, write_json


def parallel_jobs(hc) -> int:
    """How many jobs of this sweep share the machine (for the per-job CPU thread count)."""
    if hc.mode != RunMode.MULTIRUN:
        return 1
    launcher = hc.launcher
    n = launcher.get("n_jobs") or launcher.get("tasks_per_node") or 1
    return max(1, int(n)) if n and n > 0 else 1


def record_failure(out_dir: Path, cfg: DictConfig, error: str) -> None:
    """A job that could not run still leaves a summary saying why (unless the dir holds another run's)."""
    path = out_dir / SUMMARY
    from lossbench.store import read_json

    old = read_json(path)
    if old is None or old.get("status") == "running":
        write_json(path, {**(old or {}), "status": "failed", "error": error,
                          "config": OmegaConf.to_container(cfg, resolve=False)})


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from lossbench import train  # torch is imported here, after Hydra has parsed the command line

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        summary = train.run(cfg, out_dir, jobs=parallel_jobs(hc))
    except LossbenchError as e:
        print(f"lossbench: error: {e}", file=sys.stderr)
        record_failure(out_dir, cfg, str(e))
        if multirun:
            return math.nan  # a sweep goes on; the job's summary says failed
        sys.exit(2)
    except Exception as e:
        if not multirun:
            raise
        traceback.print_exc()
        record_failure(out_dir, cfg, f"{type(e).__name__}: {e}")
        return math.nan
    if summary.get("exit_code"):
        print(f"lossbench: {summary['status']} at step {summary['steps']}; checkpoint in {out_dir}", file=sys.stderr)
        sys.exit(summary["exit_code"])
    print(
        f"lossbench: {summary['status']} {summary['steps']} steps -> "
        + " ".join(f"{k}={v:.4f}" for k, v in summary["final"].items() if k in (
            "val/loss", "val/auc", "val/accuracy", "val/nll"))
        + f"  [{out_dir}]"
    )
    value = summary["final"].get(cfg.objective_metric, math.nan)
    return float(value) if value is not None else math.nan


if __name__ == "__main__":
    main()
