"""A stop signal in every phase of a run and of a sweep: one line, the promised exit code, nothing lost.

Phases of a run: importing, loading data, training (tests/test_reliability.py), the final evaluation. Sweeps:
a Ctrl-C (SIGINT to the process group) to joblib, submitit_local and stacked sweeps: every job ends with its
true status on disk, the sweep writes its status file, exits 130, and a rerun with skip_completed finishes it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import lossbench
from lossbench import store
from tests.conftest import ROOT, cli

TINY = ["trainer.threads=1", "model.hidden=[16]", "data.n_train=400", "data.n_val=200", "trainer.max_steps=50"]
# `python -m lossbench ARGS`, sending itself SIG in the given phase (the same __main__ as the real command).
IN_PHASE = textwrap.dedent("""
    import os, runpy, signal, sys, time
    phase, sig = sys.argv[1], getattr(signal, sys.argv[2])
    sys.argv = ["lossbench", *sys.argv[3:]]
    if phase == "data":
        import lossbench.data as d
        load = d.load
        d.load = lambda dc: (os.kill(os.getpid(), sig), time.sleep(0.5), load(dc))[-1]
    if phase == "final_eval":
        import lossbench.engine.train as t
        evaluate = t.evaluate
        def last(stack, batches, rows, step, rt):
            if step == stack.members[0].max_steps:
                os.kill(os.getpid(), sig)
                time.sleep(0.2)
            return evaluate(stack, batches, rows, step, rt)
        t.evaluate = last
    runpy.run_module("lossbench", run_name="__main__", alter_sys=True)
""")


def in_phase(phase: str, sig: str, run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", IN_PHASE, phase, sig, *TINY, *args, f"hydra.run.dir={run_dir}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("after", [0.4, 1.2])
def test_a_signal_while_importing_stops_with_one_line(tmp_path, sig, after):
    """Sent to the command alone while it imports Hydra or torch (and its child composes the configs,
    lossbench.config.ahead): one line, nothing written, and no process of its group left behind."""
    proc = subprocess.Popen([sys.executable, "-m", "lossbench", *TINY, f"hydra.run.dir={tmp_path}"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(after)  # python is importing Hydra or torch (training starts seconds later)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + getattr(signal, sig), err
    assert err.strip() == f"lossbench: interrupted by {sig} before training started; nothing to resume"
    assert not (tmp_path / store.SUMMARY).exists()
    deadline = time.monotonic() + 0.5
    while True:  # the child composing the configs was ended with it (killed and waited for before the exit)
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "a process of the command's group outlived it"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_while_loading_data_stops_with_one_line(tmp_path, sig):
    r = in_phase("data", sig, tmp_path)
    assert r.returncode == 128 + getattr(signal, sig), r.stderr
    assert r.stderr.strip() == f"lossbench: interrupted by {sig} before training started; nothing to resume"
    assert not (tmp_path / store.SUMMARY).exists() and not any(tmp_path.rglob("events.out.tfevents.*"))


def test_a_signal_during_the_final_evaluation_is_honoured_after_the_results(tmp_path):
    r = in_phase("final_eval", "SIGINT", tmp_path)
    assert r.returncode == 130, r.stderr
    assert "a stop signal came after the last step; the completed run's results were written first" in r.stderr
    s = store.read_json(tmp_path / store.SUMMARY)
    assert s["status"] == "completed" and s["steps"] == 50 and s["history"][-1]["step"] == 50


# --- sweeps ------------------------------------------------------------------------------------------------

SWEEP = ["seed=0,1,2,3", "trainer.max_steps=1500", "trainer.batch_size=64", "trainer.ckpt_every=20",
         "trainer.log_every=20", "trainer.eval_every=500", "model.hidden=[16]", "data.n_train=1000", "data.n_val=200"]


def package_frames(stderr: str) -> list[str]:
    """Traceback lines of frames inside the lossbench package itself (not merely under a checkout or venv that
    happens to be named lossbench, as `git clone` names it)."""
    pkg = f'File "{Path(lossbench.__file__).parent}{os.sep}'
    return [line for line in stderr.splitlines() if pkg in line]


def ctrl_c_sweep(sweep: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict[Path, dict | None]]:
    """Start a sweep in its own process group, Ctrl-C it (SIGINT to the group) once a job has a checkpoint."""
    proc = subprocess.Popen([sys.executable, "-m", "lossbench", "-m", *SWEEP, *args, f"hydra.sweep.dir={sweep}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while not any(sweep.glob("*/checkpoint.pt")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=240)
    # submitit_local's workers are processes of the group that may still be writing their summary when the
    # command has returned (seen on a loaded machine: a job read as 'running'): the files are read once all ended
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    jobs = sorted((d for d in sweep.iterdir() if d.name[0].isdigit()), key=lambda d: int(d.name.split("_")[0]))
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), \
        {d: store.read_json(d / store.SUMMARY) for d in jobs}


@pytest.mark.parametrize("launcher", [["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                                      ["hydra/launcher=submitit_local"], ["hydra/launcher=stacked"]],
                         ids=["joblib", "submitit_local", "stacked"])
def test_ctrl_c_to_a_parallel_sweep_loses_nothing_and_a_rerun_finishes_it(tmp_path, launcher):
    sweep = tmp_path / "sweep"
    r, first = ctrl_c_sweep(sweep, *launcher)
    assert r.returncode == 130, r.stderr[-3000:]
    # submitit_local's own controller processes print their KeyboardInterrupt; lossbench's processes print none
    assert not package_frames(r.stderr), r.stderr[-3000:]
    assert [s and s["status"] for s in first.values()].count("interrupted") >= 1
    for d, s in first.items():  # trained ones interrupted with their checkpoint, the others not started
        assert s is None or (s["status"] == "interrupted" and store.load_checkpoint(d / store.CHECKPOINT)["step"]
                             == s["steps"])
    status = json.loads((sweep / "sweep_status.json").read_text())
    assert len(status["jobs"]) == 4

    again = cli("--multirun", *SWEEP, *launcher, "trainer.skip_completed=true", f"hydra.sweep.dir={sweep}", timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    done = {d: store.read_json(d / store.SUMMARY) for d in first}
    assert all(s["status"] == "completed" and s["steps"] == 1500 for s in done.values())
    for d, s in first.items():  # each interrupted job continued from its own checkpoint (step 0: one that loaded)
        assert done[d].get("resumed_from_step") == (s["steps"] if s else None)


# A sitecustomize for the sweep's processes: lossbench.data.load marks that it has started (a file named by the pid
# under $LB_LOADING) and takes 4 s, so that a Ctrl-C lands while every job is loading (in a launcher's workers too).
SLOW_LOAD = textwrap.dedent("""
    import importlib.abc, importlib.machinery, os, pathlib, sys, time

    class SlowLoad(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "lossbench.data":
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                load = module.load

                def slow(dc):
                    pathlib.Path(os.environ["LB_LOADING"], str(os.getpid())).touch()
                    time.sleep(4)
                    return load(dc)
                module.load = slow
            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, SlowLoad())
""")


@pytest.mark.parametrize(("launcher", "loaders"), [
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], 2), (["hydra/launcher=submitit_local"], 4),
    (["hydra/launcher=stacked"], 1), (["hydra/launcher=stacked", "hydra.launcher.executor=submitit_local"], 1)],
    ids=["joblib", "submitit_local", "stacked", "stacked_submitit"])
def test_ctrl_c_while_a_parallel_sweep_loads_loses_nothing_and_a_rerun_finishes_it(tmp_path, launcher, loaders):
    """The same Ctrl-C while the jobs are still loading their data (each worker process of joblib and submitit_local
    too, where no CLI installed lossbench's handlers): no job's traceback, exit 130, and the rerun trains them all."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(SLOW_LOAD)
    loading, sweep = tmp_path / "loading", tmp_path / "sweep"
    loading.mkdir()
    args = [*SWEEP[:1], "trainer.max_steps=30", *SWEEP[2:], *launcher]
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "hook"), "LB_LOADING": str(loading)}
    proc = subprocess.Popen([sys.executable, "-m", "lossbench", "-m", *args, f"hydra.sweep.dir={sweep}"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while len(list(loading.iterdir())) < loaders and time.monotonic() < deadline:  # each process loading at once
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err[-3000:]
    assert not package_frames(err), err[-3000:]
    jobs = [d for d in sweep.iterdir() if d.name[0].isdigit()]
    for d in jobs:  # none trained: no summary, or one that says the job stopped before its first step
        s = store.read_json(d / store.SUMMARY) if (d / store.SUMMARY).exists() else None
        assert s is None or (s["status"] == "interrupted" and s["steps"] == 0), s
    assert len(json.loads((sweep / "sweep_status.json").read_text())["jobs"]) == 4

    again = cli("--multirun", *args, "trainer.skip_completed=true", f"hydra.sweep.dir={sweep}", timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    done = [store.read_json(d / store.SUMMARY) for d in sweep.iterdir() if d.name[0].isdigit()]
    assert len(done) == 4 and all(s["status"] == "completed" and s["steps"] == 30 for s in done)


def test_a_submitit_jobs_ctrl_c_unwinds_only_while_loading_and_its_forwarded_copy_is_ignored(monkeypatch):
    """signals.take_in_submitit_job, in this process as in a submitit worker: a SIGINT while loading raises
    Interrupted; outside loading it is recorded for the next step boundary; the second SIGINT (submitit_local's
    controller passes the Ctrl-C on) changes nothing; a later loading() raises at once."""
    from lossbench.runs import signals

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    old = signal.getsignal(signal.SIGINT)
    signals.reset()
    try:
        signals.take_in_submitit_job()
        with pytest.raises(signals.Interrupted), signals.loading():
            signal.raise_signal(signal.SIGINT)  # its Python handler runs before the next statement
        assert signals.stop_requested() == signal.SIGINT
        signals.reset()
        signals.take_in_submitit_job()
        signal.raise_signal(signal.SIGINT)  # not loading: recorded only
        signal.raise_signal(signal.SIGINT)  # the forwarded copy: ignored, the process lives on
        assert signals.stops_received() == 1
        with pytest.raises(signals.Interrupted), signals.loading():
            pytest.fail("a job loads nothing after a stop signal")
    finally:
        signal.signal(signal.SIGINT, old)
        signals.reset()
