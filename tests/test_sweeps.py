"""Real Hydra multiruns (basic, joblib, submitit_local launchers; the optuna preset) on tiny synthetic jobs.

Each test starts one `python -m lossbench -m ...` subprocess (~5 s of imports), so they are few and small.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra.types import RunMode
from omegaconf import OmegaConf

from lossbench.__main__ import parallel_jobs
from lossbench.sweeps.launch import sweep_value
from tests.conftest import CONFIGS, ROOT, cli

TINY = ["trainer.max_steps=30", "trainer.eval_every=15", "data.n_train=500", "data.n_val=200"]


def summaries(root: Path) -> dict[str, dict]:
    """{job dir name: summary} for every job of a sweep."""
    return {p.parent.name: json.loads(p.read_text()) for p in root.glob("*/summary.json")}


def test_basic_multirun_records_every_job_even_a_failed_one(tmp_path):
    sweep = tmp_path / "sweep"
    r = cli("--multirun", "loss.pos_weight=2,-1", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr[-3000:]
    runs = summaries(sweep)
    assert len(runs) == 4
    by_pw = {}
    for s in runs.values():
        by_pw.setdefault(s["config"]["loss"]["pos_weight"], []).append(s)
    assert [s["status"] for s in by_pw[2]] == ["completed", "completed"]
    assert [s["status"] for s in by_pw[-1]] == ["failed", "failed"]
    assert all("loss.pos_weight" in s["error"] and "positive number" in s["error"] for s in by_pw[-1])
    # The failed job's config is resolved like a trained one's, so lossbench.analysis.report can group it.
    assert sorted(s["config"]["data"]["seed"] for s in by_pw[-1]) == [0, 1]
    assert all(s["threads"] == (os.cpu_count() or 1) for s in by_pw[2])  # basic launcher: one job at a time

    assert sorted(runs) == ["0_loss.pos_weight=2,seed=0", "1_loss.pos_weight=2,seed=1",
                            "2_loss.pos_weight=-1,seed=0", "3_loss.pos_weight=-1,seed=1"]  # only the swept keys
    status = json.loads((sweep / "sweep_status.json").read_text())
    assert [j["status"] for j in status["jobs"]] == ["completed", "completed", "failed", "failed"]  # job order
    assert all(any(o.startswith("loss.pos_weight=") for o in j["overrides"]) for j in status["jobs"])
    assert '4 jobs in' in r.stdout and '"failed": 2' in r.stdout and '"completed": 2' in r.stdout


def test_joblib_jobs_run_in_parallel_in_the_launchers_sweep_dir(tmp_path):
    # ${uid:} must resolve once, in the launcher: the loky workers see the sweep dir the launcher made.
    r = cli("--multirun", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1", *TINY,
            f"hydra.sweep.dir={tmp_path}/sweep_${{uid:}}")
    assert r.returncode == 0, r.stderr[-3000:]
    dirs = list(tmp_path.glob("sweep_*"))
    assert len(dirs) == 1, dirs
    runs = summaries(dirs[0])
    assert sorted(runs) == ["0_seed=0", "1_seed=1"]  # job number, then the swept key
    assert {s["status"] for s in runs.values()} == {"completed"}
    assert sorted(s["config"]["seed"] for s in runs.values()) == [0, 1]
    cores = os.cpu_count() or 1
    assert {s["threads"] for s in runs.values()} == {max(1, cores // 2)}
    assert (dirs[0] / "sweep_status.json").exists()


def test_sweeps_started_together_never_share_a_directory(tmp_path):
    """Two sweeps whose directories would be the same but for ${uid:} (single runs use it the same way)."""
    import subprocess
    import sys


    # The pattern is the default one without ${now:}: as if both started in the same second.
    job = [*TINY, "trainer.max_steps=1", "logger.enabled=false"]
    commands = [["-m", *job, f"hydra.sweep.dir={tmp_path}/multi/same_${{uid:}}"]] * 2
    procs = [subprocess.Popen([sys.executable, "-m", "lossbench", *c], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for c in commands]
    for p in procs:
        out = p.communicate(timeout=300)[0].decode()
        assert p.returncode == 0, out[-3000:]
    assert len(list(tmp_path.glob("multi/same_*/0/summary.json"))) == 2


def test_submitit_local_runs_a_sweep(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    r = cli("--multirun", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "seed=0", *TINY,
            f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr[-3000:]
    runs = summaries(sweep)
    assert sorted(runs) == ["0"] and runs["0"]["status"] == "completed"
    assert list(sweep.glob(".submitit/*/*_log.out"))  # it ran as a submitit job
    assert {s["threads"] for s in runs.values()} == {1}  # no cpus_per_task: one core per job


def test_optuna_preset_maximises_and_survives_failed_trials(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "study"
    # label_smoothing >= 1 is refused by validation: with the preset's sampler seed (1234) the first two trials
    # draw 1.05 and 1.06 (failed), the third 0.85 (completed). A NaN return would abort the study (hydra#2237).
    r = cli("hparams_search=optuna", "hydra.sweeper.n_trials=3", "loss.label_smoothing=interval(0.5,1.2)", *TINY,
            f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr[-3000:]
    runs = summaries(sweep)
    assert len(runs) == 3
    statuses = sorted(s["status"] for s in runs.values())
    assert "failed" in statuses and "completed" in statuses, statuses
    for s in runs.values():
        assert 0.5 <= s["config"]["loss"]["label_smoothing"] <= 1.2
        assert 1e-4 <= s["config"]["optim"]["lr"] <= 1e-1 and 1 <= s["config"]["loss"]["pos_weight"] <= 200
    result = OmegaConf.load(sweep / "optimization_results.yaml")
    best = max(s["final"]["val/auc"] for s in runs.values() if s["status"] == "completed")
    assert result["best_value"] == pytest.approx(best)


def test_optuna_direction_follows_the_objective_metric():
    from hydra import compose, initialize_config_dir


    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        for metric, direction in (("val/auc", "maximize"), ("val/nll", "minimize"), ("val/ece", "minimize")):
            cfg = compose("config", overrides=["hparams_search=optuna", f"objective_metric={metric}"],
                          return_hydra_config=True)
            assert cfg.hydra.sweeper.direction == direction
            assert cfg.hydra.sweeper.max_failure_rate == 1.0
            assert set(cfg.hydra.sweeper.params) == {"optim.lr", "optim.weight_decay", "loss.pos_weight",
                                                     "loss.label_smoothing"}


def _hc(target: str, mode=RunMode.MULTIRUN, **launcher):
    return SimpleNamespace(mode=mode, launcher=OmegaConf.create({"_target_": target, **launcher}))


def test_parallel_jobs_per_launcher(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    submitit = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    basic = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert parallel_jobs(_hc(basic)) == 1
    assert parallel_jobs(_hc(joblib, n_jobs=4)) == 4
    assert parallel_jobs(_hc(joblib, n_jobs=-1)) == 16  # joblib's default: one job per core -> 1 thread each
    assert parallel_jobs(_hc(joblib, n_jobs=-2)) == 15
    assert parallel_jobs(_hc(submitit, cpus_per_task=4)) == 4  # 16 // 4 jobs -> 4 threads, the allocation
    assert parallel_jobs(_hc(submitit, cpus_per_task=None)) == 16
    assert parallel_jobs(_hc(joblib, mode=RunMode.RUN, n_jobs=4)) == 1


def test_sweep_value_is_none_unless_completed_and_finite():
    assert sweep_value({"status": "completed", "final": {"val/auc": 0.9}}, "val/auc") == 0.9
    assert sweep_value({"status": "completed", "final": {"val/auc": None}}, "val/auc") is None
    assert sweep_value({"status": "completed", "final": {"val/auc": float("nan")}}, "val/auc") is None
    assert sweep_value({"status": "diverged", "final": {"val/auc": 0.7}}, "val/auc") is None
    assert sweep_value({"status": "failed"}, "val/auc") is None


def test_slurm_preset_gives_a_valid_sbatch_script(tmp_path, monkeypatch):
    """configs/hydra/launcher/slurm.yaml through submitit's own sbatch writer (no cluster: a stub srun)."""
    submitit = pytest.importorskip("submitit")
    from hydra import compose, initialize_config_dir
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf


    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                           "hydra.launcher.timeout_min=240"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert params.pop("_target_").endswith("SlurmLauncher")
    (tmp_path / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    # The parameter mapping of hydra-submitit-launcher's BaseSubmititLauncher.launch:
    ex = submitit.AutoExecutor(cluster="slurm", folder=tmp_path / "%j", slurm_max_num_timeout=params["max_num_timeout"])
    base = set(OmegaConf.structured(BaseQueueConf))
    ex.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()
                            if k not in ("submitit_folder", "max_num_timeout", "name")})
    script = ex._executor._make_submission_file_text("python -m lossbench", "uid")
    for line in ("--partition=gpu", "--time=240", "--gpus-per-node=1", "--cpus-per-task=4", "--mem=16GB",
                 "--ntasks-per-node=1"):
        assert f"#SBATCH {line}\n" in script, (line, script)
