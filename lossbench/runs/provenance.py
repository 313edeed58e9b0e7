"""What produced a run: the code and the machine, recorded in every summary.json (``code``), so that a number
can be traced back to the commit that computed it."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import torch

CHECKOUT = Path(__file__).resolve().parents[2]


def _version() -> str | None:
    """The installed distribution's version (pyproject.toml's), None when run without installing."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lossbench")
    except PackageNotFoundError:
        return None


@functools.cache
def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout this package runs from; (None, None) for an installed copy or no git."""
    if not (CHECKOUT / ".git").exists():
        return None, None
    try:
        run = lambda *a: subprocess.run(["git", "-C", str(CHECKOUT), *a], capture_output=True, text=True,  # noqa: E731
                                        timeout=10, check=True).stdout
        # dirty: tracked files changed (untracked files, such as outputs/, do not change the code)
        return run("rev-parse", "HEAD").strip(), bool(run("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (Linux: /proc/cpuinfo; elsewhere what platform knows)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def code(device: torch.device) -> dict:
    """summary.json's ``code``: lossbench's version, the git commit and whether the tree was dirty (from a
    checkout), torch's version, the device's name."""
    commit, dirty = git_state()
    return {"lossbench": _version(), "git_commit": commit, "git_dirty": dirty,
            "torch": torch.__version__, "device_name": device_name(device)}
