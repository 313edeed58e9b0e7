"""The commands in README.md and docs/*.md run as written.

A fenced block preceded by an HTML comment `<!-- test: KIND -->` is checked:
- `run`: every command runs as written and exits 0;
- `run tiny`: the same, with TINY appended to each training command (`python -m lossbench ...`);
- `output`: `$ command` lines, each followed by what it prints (stdout and stderr), compared exactly;
- `install`: `python3.11 -m venv .venv && . .venv/bin/activate && pip install -e <spec> && <command>`: the
  spec names extras that pyproject.toml defines, and the command runs (TINY appended); the block after it,
  marked `prints`, is the line it prints, compared with numbers, times and ids masked;
- `ci`: the test command, which .ci/run must run exactly as written.
Blocks of one file run one after another in one temporary directory (a sweep, then its report), with this
checkout's lossbench first on PYTHONPATH. Unmarked blocks (placeholders such as <dir>, servers, hour-long
benchmarks) are not run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

TINY = ["trainer.max_steps=20", "trainer.eval_every=10", "trainer.log_every=10", "data.n_train=500",
        "data.n_val=200"]
MARK = re.compile(r"<!-- test: ([a-z ]+) -->\n```[a-z]*\n(.*?)```", re.S)
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(path: Path) -> list[tuple[str, str]]:
    """(kind, text) of each marked block, in order."""
    return [(kind, text) for kind, text in MARK.findall(path.read_text())]


def commands(text: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines dropped."""
    return [c.strip() for c in text.replace("\\\n", " ").splitlines() if c.strip() and not c.lstrip().startswith("#")]


def tiny(command: str) -> str:
    words = shlex.split(command)
    return f"{command} {' '.join(TINY)}" if words[:3] == ["python", "-m", "lossbench"] else command


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def shape(line: str) -> re.Pattern:
    """A printed `... [<cwd>/outputs/<run dir>]` line, its numbers, the directory it ran from and the run's
    random id masked."""
    text, _, where = line.strip().partition("  [")
    run = where.split("outputs/", 1)[1].rstrip("]").rsplit("_", 1)[0]

    def digits(s: str) -> str:
        return re.sub(r"\d+", r"\\d+", re.escape(s))

    return re.compile(rf"{digits(text)}  \[.*outputs/{digits(run)}_[0-9a-f]{{6}}\]")


@pytest.mark.parametrize("path", DOCS, ids=[p.relative_to(ROOT).as_posix() for p in DOCS])
def test_marked_commands_run_as_written(path, tmp_path):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    printed = None
    for kind, text in blocks(path):
        if kind in ("run", "run tiny"):
            for command in commands(text):
                assert not command.startswith("tensorboard"), "a server: do not mark this block"
                r = shell(tiny(command) if kind == "run tiny" else command, tmp_path)
                assert r.returncode == 0, f"{command}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        elif kind == "output":
            for command, expected in re.findall(r"^\$ (.+)\n((?:(?!\$ ).*\n?)*)", text, re.M):
                r = shell(command, tmp_path)
                assert (r.stdout + r.stderr).strip() == expected.strip(), command
        elif kind in ("install", "ci"):
            (line,) = commands(text)
            venv, activate, install, *rest = line.split(" && ")
            assert venv == "python3.11 -m venv .venv" and activate == ". .venv/bin/activate"
            spec = shlex.split(install)
            assert spec[:3] == ["pip", "install", "-e"] and re.fullmatch(r"\.(\[[a-z,]+\])?", spec[3])
            assert set(re.findall(r"[a-z]+", spec[3])) <= extras.keys()
            if kind == "ci":  # .ci/run runs exactly this line
                assert (ROOT / ".ci" / "run").read_text().splitlines()[-1] == line, ".ci/run"
                continue
            (command,) = rest
            r = shell(tiny(command), tmp_path)
            assert r.returncode == 0, r.stderr[-3000:]
            printed = r.stdout.strip().splitlines()[-1]
        elif kind == "prints":
            assert printed is not None, "a prints block follows the block whose output it shows"
            assert shape(text).fullmatch(printed), (text, printed)
        else:
            pytest.fail(f"unknown marker <!-- test: {kind} -->")


def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    kinds = [kind for kind, _ in blocks(ROOT / "README.md")]
    assert kinds[:3] == ["install", "prints", "ci"]  # the two commands, and what the first one prints
    for link in re.findall(r"\]\(([^)#]+)", text):  # every link into the repository resolves
        if not link.startswith("http"):
            assert (ROOT / link).exists(), link
    for doc in ROOT.glob("docs/*.md"):
        for link in re.findall(r"\]\(([^)#]+)", doc.read_text()):
            if not link.startswith("http"):
                assert (doc.parent / link).exists(), (doc.name, link)
