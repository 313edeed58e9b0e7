"""Shared helpers: compose a config the way `python -m lossbench` does, and run it in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
# Small, fast defaults for tests; a test's own overrides come after and win.
FAST = ["trainer.max_steps=200", "trainer.eval_every=100", "trainer.log_every=50"]


def make_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=[*FAST, *overrides])


def run_cfg(tmp_path: Path, *overrides: str) -> dict:
    from lossbench.engine import train

    return train.run(make_cfg(*overrides), tmp_path)


def cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m lossbench ARGS` (or another module when args[0] starts with '-m')."""
    cmd = [sys.executable, *args] if args and args[0] == "-m" else [sys.executable, "-m", "lossbench", *args]
    return subprocess.run(cmd, cwd=cwd or ROOT, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


def mnist_root() -> Path | None:
    root = os.environ.get("LOSSBENCH_DATA_DIR")
    if root and (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        return Path(root)
    return None


needs_mnist = pytest.mark.skipif(mnist_root() is None, reason="MNIST not found under $LOSSBENCH_DATA_DIR")


_TEACHERS: dict[tuple[str, ...], Path] = {}


def teacher_run(tmp_path_factory: pytest.TempPathFactory, *data: str) -> Path:
    """A completed softmax run on the synthetic task the data overrides give (once per session and task)."""
    if data not in _TEACHERS:
        d = tmp_path_factory.mktemp("teacher")
        s = run_cfg(d, "loss=ce", "trainer.max_steps=100", "model.hidden=[32]", "data.n_train=2000",
                    "data.n_val=1000", "logger.enabled=false", *data)
        assert s["status"] == "completed"
        _TEACHERS[data] = d
    return _TEACHERS[data]


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory) -> Path:
    """A completed softmax run on the default synthetic task: what loss=kd* needs as loss.teacher."""
    return teacher_run(tmp_path_factory)


def loss_overrides(loss: str, request: pytest.FixtureRequest, *data: str) -> list[str]:
    """What a loss needs beyond its name in a test run: optim=pesg for auc_margin; for the distillation losses, a teacher trained on the
    task the data overrides give (only those that define the task matter: n_classes, n_features, scale, ...)."""
    from lossbench.losses import registry

    if loss == "auc_margin":
        return ["optim=pesg"]  # a min-max objective: only its primal-dual optimiser trains it
    if not registry.get(loss).teacher:
        return []
    return [f"loss.teacher={teacher_run(request.getfixturevalue('tmp_path_factory'), *data)}"]
