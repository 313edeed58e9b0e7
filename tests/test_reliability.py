"""Interrupts, resumes, crashes and reruns lose nothing, and a resumed run ends exactly where an uninterrupted
one does (CPU, same seed and config)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lossbench import store
from lossbench.analysis import runs
from lossbench.engine.numerics import Monitor
from lossbench.errors import ConfigError
from lossbench.runs.logger import EVENTS, has_events
from tests.conftest import ROOT, cli, run_cfg

# Small and single-threaded (the thread count changes float reductions, so it is part of "same config").
SMALL = ["trainer.threads=1", "model.hidden=[16]", "data.n_train=1000", "data.n_val=300", "trainer.log_every=20",
         "trainer.eval_every=60", "numerics.hist_every=50", "logger.flush_secs=1"]
# Everything a summary says about the training itself (times and paths aside).
COMPARED = ("status", "steps", "final", "best", "history", "convergence", "numerics", "per_class_recall")


def same_results(a: dict, b: dict) -> None:
    for key in COMPARED:
        assert a[key] == b[key], key  # bitwise: floats compared with ==


def scalars(run_dir: Path, skip=("watch/samples_per_sec",)) -> dict[str, list[tuple[int, float]]]:
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"] if not t.startswith(skip)}


def interrupt_at(monkeypatch, step: int, action) -> None:
    """Run `action` right after training step `step` (counted from 1) of the next in-process run."""
    observe = Monitor.observe

    def hooked(self, loss, z=None):
        out = observe(self, loss, z)
        if int(self.step_t) == step:
            action()
        return out

    monkeypatch.setattr(Monitor, "observe", hooked)


def sigint():
    signal.raise_signal(signal.SIGINT)


def crash():
    raise RuntimeError("simulated crash")


def start(run_dir: Path, *args: str) -> subprocess.Popen:
    """`python -m lossbench ARGS` in the background (a sweep when ARGS start with -m)."""
    where = f"hydra.sweep.dir={run_dir}" if args and args[0] == "-m" else f"hydra.run.dir={run_dir}"
    return subprocess.Popen([sys.executable, "-m", "lossbench", *args, where], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until_training(proc: subprocess.Popen, run_dir: Path, after_step: int = 0, timeout: float = 120) -> None:
    """Until summary.json says running and TensorBoard holds a few train/loss points past `after_step`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if (store.read_json(run_dir / store.SUMMARY) or {}).get("status") == "running" and has_events(run_dir):
            if len([s for s, _ in scalars(run_dir).get("train/loss", []) if s > after_step]) >= 2:
                return
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the run did not start training in time")


# --- real signals to real processes ---------------------------------------------------------------------


def test_sigint_stops_cleanly_and_resume_matches_an_uninterrupted_run(tmp_path):
    run_dir = tmp_path / "run"
    proc = start(run_dir, "trainer.max_steps=1000000", *SMALL)
    wait_until_training(proc, run_dir)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    s = json.loads((run_dir / store.SUMMARY).read_text())
    n = s["steps"]
    assert s["status"] == "interrupted" and n > 0
    assert f"interrupted at step {n}" in err and "trainer.resume=true" in err
    assert store.load_checkpoint(run_dir / store.CHECKPOINT)["step"] == n
    logged = scalars(run_dir)["train/loss"]
    assert logged and logged[-1][0] <= n  # flushed and closed: the points are on disk

    # Continue the same run a little further, then train the same config without interruption.
    end = n + 50
    r = cli(f"hydra.run.dir={run_dir}", "trainer.resume=true", f"trainer.max_steps={end}", *SMALL)
    assert r.returncode == 0, r.stderr
    assert f"resuming {run_dir} from step {n}" in r.stdout
    resumed = store.read_json(run_dir / store.SUMMARY)
    run_cfg(tmp_path / "ref", f"trainer.max_steps={end}", *SMALL)
    ref = store.read_json(tmp_path / "ref" / store.SUMMARY)
    assert resumed["status"] == "completed" and resumed["steps"] == end
    same_results(resumed, ref)
    assert scalars(run_dir) == scalars(tmp_path / "ref")  # one continuous TensorBoard run, no duplicates


def test_second_sigint_exits_at_once():
    code = (
        "import signal\n"
        "from lossbench.runs.signals import StopRequest\n"
        "with StopRequest() as stop:\n"
        "    signal.raise_signal(signal.SIGINT)\n"
        "    assert stop.requested and stop.exit_code == 130\n"
        "    print('first handled', flush=True)\n"
        "    signal.raise_signal(signal.SIGINT)\n"
        "    print('still running')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.stdout == "first handled\n"
    assert r.returncode == -signal.SIGINT


def test_under_submitit_its_preemption_signal_stops_the_run_and_is_handed_over(monkeypatch):
    """submitit ignores SIGTERM and sends USR2 before a timeout or preemption; lossbench stops on USR2,
    saves, then calls submitit's handler (which requeues the job and exits)."""
    from lossbench.runs.signals import StopRequest, hand_over

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    calls = []
    old = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))  # stands in for submitit's
    try:
        with StopRequest() as stop:
            assert signal.getsignal(signal.SIGTERM) is not stop._handle  # left to submitit
            signal.raise_signal(signal.SIGUSR2)
            assert stop.requested and calls == []  # the run finishes its step and saves first
        hand_over(stop.signum)
        assert calls == [signal.SIGUSR2] and stop.exit_code == 128 + signal.SIGUSR2
    finally:
        signal.signal(signal.SIGUSR2, old)


# --- resume and determinism, in-process ------------------------------------------------------------------


def test_same_seed_and_config_give_bitwise_identical_runs(tmp_path):
    a = run_cfg(tmp_path / "a", "trainer.max_steps=120", *SMALL)
    b = run_cfg(tmp_path / "b", "trainer.max_steps=120", *SMALL)
    same_results(a, b)
    assert scalars(tmp_path / "a") == scalars(tmp_path / "b")


@pytest.mark.parametrize("how", ["interrupt", "crash"])
def test_resume_ends_exactly_like_an_uninterrupted_run(tmp_path, monkeypatch, how):
    """Interrupted at step 133 (checkpoint written then), or crashed there with the last checkpoint at 90
    (steps 91..133 are trained again, and TensorBoard drops what the crashed attempt logged after 90)."""
    ov = ["trainer.max_steps=240", "trainer.ckpt_every=90", *SMALL]
    ref = run_cfg(tmp_path / "ref", *ov)
    run_dir = tmp_path / "run"
    interrupt_at(monkeypatch, 133, sigint if how == "interrupt" else crash)
    if how == "interrupt":
        first = run_cfg(run_dir, *ov)
        assert (first["status"], first["steps"], first["exit_code"]) == ("interrupted", 133, 130)
        assert first["history"] == [h for h in ref["history"] if h["step"] <= 133]
    else:
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_cfg(run_dir, *ov)
        assert store.read_json(run_dir / store.SUMMARY)["status"] == "failed"
    monkeypatch.undo()
    resumed = run_cfg(run_dir, *ov, "trainer.resume=true")
    same_results(resumed, ref)
    assert scalars(run_dir) == scalars(tmp_path / "ref")


def test_resume_into_another_directory_writes_there(tmp_path, monkeypatch):
    ov = ["trainer.max_steps=100", *SMALL]
    interrupt_at(monkeypatch, 30, sigint)
    run_cfg(tmp_path / "run", *ov)
    monkeypatch.undo()
    s = run_cfg(tmp_path / "elsewhere", *ov, f"trainer.resume={tmp_path / 'run'}")
    assert s["status"] == "completed" and s["out_dir"] == str(tmp_path / "run")
    assert store.read_json(tmp_path / "run" / store.SUMMARY)["status"] == "completed"
    assert not (tmp_path / "elsewhere" / store.SUMMARY).exists()


def test_resume_refuses_a_different_config_or_a_finished_checkpoint(tmp_path, monkeypatch):
    ov = ["trainer.max_steps=60", *SMALL]
    run_cfg(tmp_path, *ov)
    with pytest.raises(ConfigError, match=r"config differs.*optim.lr: 0.02 -> 0.5.*overrides.yaml"):
        run_cfg(tmp_path, *ov, "optim.lr=0.5", "trainer.resume=true")
    with pytest.raises(ConfigError, match="checkpoint is at step 60.*Raise trainer.max_steps"):
        run_cfg(tmp_path, *ov, "trainer.resume=true")
    longer = run_cfg(tmp_path, *ov, "trainer.max_steps=80", "trainer.resume=true")  # train further: allowed
    assert longer["steps"] == 80 and longer["history"][0]["step"] == 60


# --- results are never lost or mixed up ------------------------------------------------------------------


def test_crash_during_a_summary_or_checkpoint_write_keeps_the_previous_version(tmp_path, monkeypatch):
    path = tmp_path / store.SUMMARY
    store.write_json(path, {"status": "running", "steps": 10})
    ck = tmp_path / store.CHECKPOINT
    store.save_checkpoint(ck, {"step": 10})

    def half_written_then_crash(fd):
        os.write(fd, b"{ partial")  # part of the new file is on disk, then the process dies
        raise OSError("disk gone")

    monkeypatch.setattr(store.os, "fsync", half_written_then_crash)
    with pytest.raises(OSError, match="disk gone"):
        store.write_json(path, {"status": "completed", "steps": 20})
    with pytest.raises(OSError, match="disk gone"):
        store.save_checkpoint(ck, {"step": 20})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"status": "running", "steps": 10}
    assert store.load_checkpoint(ck) == {"step": 10}
    assert sorted(p.name for p in tmp_path.iterdir()) == [store.CHECKPOINT, store.SUMMARY]  # no temp files


def test_two_runs_never_write_into_one_directory(tmp_path):
    run_cfg(tmp_path, "trainer.max_steps=20", *SMALL)
    with pytest.raises(ConfigError, match=r"already holds a run \(status completed\).*trainer.resume=true"):
        run_cfg(tmp_path, "trainer.max_steps=20", *SMALL)
    other = tmp_path / "busy"
    with store.run_lock(other):  # as if another process were training there right now
        with pytest.raises(ConfigError, match=f"in use by another lossbench run \\(pid {os.getpid()}"):
            run_cfg(other, "trainer.max_steps=20", *SMALL)
    assert not (other / store.SUMMARY).exists()


def test_rerun_with_skip_completed_trains_only_what_is_missing(tmp_path, monkeypatch):
    """The four states a sweep job can be left in: completed, interrupted (checkpoint), failed before its
    first checkpoint, never started. A rerun skips the first, resumes the second, restarts the others."""
    ov = ["trainer.max_steps=100", *SMALL]
    run_cfg(tmp_path / "ref", *ov)
    jobs = [tmp_path / str(i) for i in range(4)]
    run_cfg(jobs[0], *ov)
    interrupt_at(monkeypatch, 40, sigint)
    run_cfg(jobs[1], *ov)
    interrupt_at(monkeypatch, 40, crash)
    with pytest.raises(RuntimeError):
        run_cfg(jobs[2], *ov)
    monkeypatch.undo()
    assert [(store.read_json(j / store.SUMMARY) or {}).get("status") for j in jobs] == [
        "completed", "interrupted", "failed", None]

    again = [run_cfg(j, *ov, "trainer.skip_completed=true") for j in jobs]
    assert [s.get("skipped", False) for s in again] == [True, False, False, False]
    for j in jobs:
        same_results(store.read_json(j / store.SUMMARY), store.read_json(tmp_path / "ref" / store.SUMMARY))
    assert scalars(jobs[2]) == scalars(tmp_path / "ref")  # the failed attempt's curves are dropped
    found = runs.find_runs(jobs)  # what python -m lossbench.report would tabulate: every job, all completed
    assert [(r.dir, r.status) for r in found] == [(j, "completed") for j in jobs]


def test_interrupted_sweep_rerun_only_trains_the_unfinished_job(tmp_path):
    """A real multirun (basic launcher): SIGTERM while job 1 trains; the same command again with
    trainer.skip_completed=true skips job 0 and continues job 1 from its checkpoint (stopped once more, by
    Ctrl-C, so that the test need not wait for a long job)."""
    sweep = tmp_path / "sweep"
    args = ["-m", "trainer.max_steps=60,1000000", *SMALL]
    # Job directories: number, then the swept key; the rerun (trainer.skip_completed=true) finds the same ones.
    jobs = ["0_trainer.max_steps=60", "1_trainer.max_steps=1000000"]

    def interrupt_sweep(sig: int, *extra: str, after_step: int = 0) -> tuple[list[dict], str]:
        proc = start(sweep, *args, *extra)
        wait_until_training(proc, sweep / jobs[1], after_step)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + sig, err  # 143 for SIGTERM, 130 for SIGINT
        assert "Traceback" not in err
        return [store.read_json(sweep / job / store.SUMMARY) for job in jobs], out

    first, _ = interrupt_sweep(signal.SIGTERM)
    assert [s["status"] for s in first] == ["completed", "interrupted"]
    events0 = sorted((sweep / jobs[0]).glob(EVENTS))
    again, out = interrupt_sweep(signal.SIGINT, "trainer.skip_completed=true", after_step=first[1]["steps"])
    assert f"{sweep / jobs[0]} already holds a completed run; skipped" in out
    assert f"resuming {sweep / jobs[1]} from step {first[1]['steps']}" in out
    assert again[0] == first[0] and sorted((sweep / jobs[0]).glob(EVENTS)) == events0  # job 0 untouched
    assert again[1]["status"] == "interrupted" and again[1]["steps"] > first[1]["steps"]
    assert again[1]["history"][: len(first[1]["history"])] == first[1]["history"]
