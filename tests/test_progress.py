"""Long work shows it is alive: a run prints its progress (a bar on a terminal, plain lines elsewhere), a stack
its members', and --help of the CLIs answers without training anything."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stderr

from lossbench.__main__ import resume_command
from lossbench.engine import train
from lossbench.runs import progress
from tests.conftest import cli, make_cfg

SMALL = ["data.n_train=500", "data.n_val=200", "trainer.max_steps=100", "trainer.log_every=10",
         "trainer.eval_every=50", "trainer.threads=1"]
LINE = re.compile(r"^lossbench: (\S.*): step (\d+)/100 \(\d+%\) loss \S+( val/auc \S+)?( \(\d+ running\))?, eta \d+ s$")


def test_a_run_prints_its_progress_as_plain_lines_when_not_on_a_terminal(tmp_path, capsys):
    train.run(make_cfg(*SMALL), tmp_path)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ": step " in ln]
    steps = [int(LINE.match(ln)[2]) for ln in lines]
    assert steps == list(range(10, 100, 10))  # about every tenth of the run; the result line ends it
    assert all(LINE.match(ln)[1] == tmp_path.name for ln in lines)
    assert "val/auc" in lines[-1]  # the last validation metric once there is one


def test_a_stack_prints_its_members_progress(tmp_path, capsys):
    jobs = [(make_cfg(*SMALL, f"seed={s}"), tmp_path / str(s)) for s in range(3)]
    train.run_jobs(jobs)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ": step " in ln]
    assert lines and all(LINE.match(ln)[1] == "stack of 3" and "(3 running)" in ln for ln in lines)
    assert "val/auc " in lines[-1] and ".." in lines[-1]  # the members' range of the metric


def test_on_a_terminal_it_is_a_live_bar():
    err = io.StringIO()
    with redirect_stderr(err):
        p = progress.Progress("run", 0, 100, "val/auc", bar=True)
        p.update(50, [0.5], [0.9], 1)
        p.bar.refresh()
        p.close()
    assert "50/100" in err.getvalue() and "loss 0.5 val/auc 0.9" in err.getvalue()


def test_the_resume_command_is_the_runs_own():
    cmd = resume_command(["loss=bce", "data.scale=50", "hydra.run.dir=old", "trainer.resume=false"], "out/x y")
    assert cmd == "python -m lossbench loss=bce data.scale=50 'hydra.run.dir=out/x y' trainer.resume=true"


def test_help_heads_the_users_groups_apart_from_the_studies():
    out = cli("--help").stdout
    user, study = out.split("== Groups the study presets use")
    for group in ("data:", "loss:", "model:", "optim:", "experiment:"):
        assert f"\n{group} " in user and f"\n{group} " not in study
    for group in ("students:", "binary_method:", "multilabel_loss:", "regime:"):
        assert f"\n{group} " in study.split("== Config ==")[0] and f"\n{group} " not in user
    assert "schema" not in out.split("== Config ==")[0]


def test_compare_has_a_help_and_refuses_a_bad_path(tmp_path):
    r = cli("-m", "lossbench.compare", "--help")
    assert r.returncode == 0 and "usage: python -m lossbench.compare" in r.stdout
    r = cli("-m", "lossbench.compare", str(tmp_path / "none"))
    assert r.returncode == 2 and r.stderr.startswith("lossbench.compare: error: ") and "Traceback" not in r.stderr


def test_a_sweeps_size_counts_the_command_line_over_the_presets_axes(tmp_path):
    """A key swept by both the preset (seed: 0,1,2) and the command line (seed=0,1): Hydra's sweeper takes the
    command line's values, and so does the progress count (it printed [2/3] for a sweep of 2 jobs)."""
    from tests.inprocess import run_cli

    r = run_cli("-m", "experiment=equivalence", "loss=ce", "seed=0,1", "study.steps=2", "trainer.eval_every=1",
                f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert len([d for d in tmp_path.iterdir() if d.is_dir()]) == 2
    assert "lossbench sweep: [2/2]" in r.stdout and "/3]" not in r.stdout, r.stdout
