"""A run directory, a teacher directory and a report's input are untrusted input (issue 26).

Property tests build directories from parts (each file absent, valid, truncated, one entry of the wrong type or
missing, a symbolic link, a FIFO, a directory) and run every kind of attempt on them in this process, with an
alarm as the timeout: each ends in a result or a one-line ConfigError, never a traceback or a hang; no byte of
what was there changes (a rebuilt summary keeps the old one aside, byte for byte) and nothing is written
outside the directory. Then one test per class of the issue's examples, most in this process, a few through the
command line.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lossbench import config, store
from lossbench.analysis import runs
from lossbench.engine import plan, teacher, train
from lossbench.errors import ConfigError, LossbenchError
from lossbench.runs import record
from tests.conftest import ROOT, make_cfg, run_cfg
from tests.inprocess import run_cli

SMALL = ["trainer.threads=1", "model.hidden=[8]", "data.n_train=200", "data.n_val=100", "trainer.max_steps=20",
         "trainer.eval_every=10", "trainer.log_every=10", "logger.enabled=false"]
HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
CASES = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=HEALTH)
FEWER = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=HEALTH)
VALID = 4  # how many times more often a part is valid than each way of being wrong


class Hang(BaseException):
    """Raised by time_limit; a BaseException, so that no `except OSError` in the code under test swallows it."""


@contextlib.contextmanager
def time_limit(seconds: int):
    """Fail instead of hanging: SIGALRM interrupts a blocking open() (of a FIFO, say) in this process."""
    def expire(signum, frame):
        raise Hang(f"still waiting after {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def state(root: Path) -> dict[str, str]:
    """Everything under root, read without following links or opening FIFOs: name -> kind and content hash."""
    out = {}
    for p in sorted(root.rglob("*")):
        st_ = p.lstat()
        if p.is_symlink():
            out[str(p.relative_to(root))] = f"link -> {os.readlink(p)}"
        elif p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p.relative_to(root))] = f"mode {st_.st_mode:o}"
    return out


def one_line(e: BaseException) -> None:
    assert isinstance(e, LossbenchError), repr(e)
    assert "\n" not in str(e) and str(e).strip(), str(e)


# --- the parts --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("finished") / "run"
    assert run_cfg(d, *SMALL, "loss=ce")["status"] == "completed"
    return d


@pytest.fixture(scope="module")
def parts(finished) -> dict[str, object]:
    summary = json.loads((finished / store.SUMMARY).read_text())
    ck = torch.load(finished / store.CHECKPOINT, weights_only=True)
    return {"summary": summary, "checkpoint": ck}


WRONG = [1.5, "x", [1], None]  # values of the wrong type for some entry
SUMMARY_KINDS = st.one_of(
    st.sampled_from(["absent"] * VALID + ["completed"] * VALID + ["failed", "interrupted", "diverged", "truncated",
                                                                  "link", "fifo", "dir"]),
    st.tuples(st.sampled_from(list(record.SUMMARY_SCHEMA)), st.sampled_from([*WRONG, "missing"])),
)
CHECKPOINT_KINDS = st.one_of(
    st.sampled_from(["absent"] * VALID + ["final"] * VALID + ["mid"] * VALID + ["truncated", "link", "fifo", "dir"]),
    st.tuples(st.sampled_from(list(record.CHECKPOINT_SCHEMA)), st.sampled_from([*WRONG, "missing"])),
)
LOCK_KINDS = st.sampled_from(["absent"] * VALID + ["file"] * VALID + ["link", "fifo", "dir"])
# Hydra's record and the TensorBoard directory: as written, or with a link, FIFO or file where they belong
EXTRA_KINDS = st.sampled_from(["none"] * VALID + [".hydra/config.yaml link", ".hydra/config.yaml fifo", "tb file",
                                                 "tb/events link", ".hydra/sub dir"])


def place_extra(d: Path, kind: str, victim: Path) -> None:
    if kind == "none":
        return
    (d / ".hydra").mkdir()
    (d / ".hydra" / "overrides.yaml").write_text("[]\n")
    if kind == ".hydra/config.yaml link":
        (d / ".hydra" / "config.yaml").symlink_to(victim)
    elif kind == ".hydra/config.yaml fifo":
        os.mkfifo(d / ".hydra" / "config.yaml")
    elif kind == "tb file":
        (d / "tb").write_text("not a directory")
    elif kind == "tb/events link":
        (d / "tb").mkdir()
        (d / "tb" / "events.out.tfevents.1.host.1.0").symlink_to(victim)
    else:
        (d / ".hydra" / "sub").mkdir()
ATTEMPTS = {"fresh": [], "resume=true": ["trainer.resume=true"], "resume=DIR": ["trainer.resume=DIR"],
            "skip_completed": ["trainer.skip_completed=true"]}


def place(path: Path, kind, valid: bytes, victim: Path) -> None:
    """Put one part at path: its valid bytes, a damaged form, a link (to a file outside), a FIFO or a directory."""
    if kind == "absent":
        return
    if kind == "link":
        path.symlink_to(victim)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    elif kind == "truncated":
        path.write_bytes(valid[: len(valid) // 2])
    else:
        path.write_bytes(valid)


def summary_bytes(parts: dict, kind) -> bytes:
    s = json.loads(json.dumps(parts["summary"]))
    if isinstance(kind, tuple):
        key, value = kind
        if value == "missing":
            s.pop(key, None)
        else:
            s[key] = value
    elif kind in ("failed", "interrupted", "diverged"):
        s["status"] = kind
        if kind == "failed":
            s["error"] = "RuntimeError: something broke after the last step"
    return json.dumps(s).encode()


def checkpoint_bytes(parts: dict, kind) -> bytes:
    ck = dict(parts["checkpoint"])
    if isinstance(kind, tuple):
        key, value = kind
        if value == "missing":
            ck.pop(key, None)
        else:
            ck[key] = value
    elif kind == "mid":
        ck["step"] = 10
    buf = io.BytesIO()
    torch.save(ck, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def base_cfg():
    return make_cfg(*SMALL, "loss=ce")


# --- run directories --------------------------------------------------------------------------------------------


@CASES
@given(summary=SUMMARY_KINDS, checkpoint=CHECKPOINT_KINDS, lock=LOCK_KINDS, extra=EXTRA_KINDS,
       attempt=st.sampled_from(list(ATTEMPTS)))
def test_every_run_directory_gives_a_result_or_one_line(tmp_path_factory, parts, base_cfg, summary, checkpoint, lock,
                                                         extra, attempt):
    root = tmp_path_factory.mktemp("case")
    victim = root / "victim"
    victim.write_text("precious\n")
    d = root / "run"
    d.mkdir()
    place(d / store.SUMMARY, summary, summary_bytes(parts, summary), victim)
    place(d / store.CHECKPOINT, checkpoint, checkpoint_bytes(parts, checkpoint), victim)
    place(d / store.LOCK, lock, b"pid 1 on elsewhere\n", victim)
    place_extra(d, extra, victim)
    before = state(root)
    cfg = base_cfg.copy()
    for o in ATTEMPTS[attempt]:
        key, value = o.split("=")
        cfg.trainer[key.split(".")[1]] = True if value == "true" else str(d)
    with time_limit(20):
        try:
            p = plan.plan(cfg, d, cfg.trainer.max_steps)
            with store.run_lock(p.out_dir):  # what train.run does next
                pass
        except ConfigError as e:
            one_line(e)
            p = None
    after = state(root)
    assert victim.read_text() == "precious\n"
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    if p is not None and p.action == "skip" and p.previous.get("rebuilt"):
        # the summary was rebuilt from a final checkpoint: the old one is kept aside, byte for byte
        aside = [k for k in changed if ".unreadable-" in k or ".replaced-" in k]
        assert changed <= {f"run/{store.SUMMARY}", f"run/{store.LOCK}", *aside}
        if f"run/{store.SUMMARY}" in before:
            assert len(aside) == 1 and after[aside[0]] == before[f"run/{store.SUMMARY}"]
    else:
        assert changed <= {f"run/{store.LOCK}"}, changed  # a run that goes ahead takes its lock, nothing more
    if f"run/{store.LOCK}" in changed:
        assert p is not None and (d / store.LOCK).is_file() and not (d / store.LOCK).is_symlink()
        assert lock in ("absent", "file")
    if p is not None:  # only a directory of regular files (and the tb/ and .hydra/ directories) goes ahead
        assert extra == "none" and summary not in ("link", "fifo", "dir") and checkpoint not in ("link", "fifo", "dir")


def test_a_sweep_into_a_directory_holding_a_link_is_refused_before_hydra_writes(tmp_path):
    sweep, victim = tmp_path / "sweep", tmp_path / "victim"
    victim.write_text("precious\n")
    (sweep / "0_seed=0" / ".hydra").mkdir(parents=True)
    (sweep / "0_seed=0" / ".hydra" / "config.yaml").symlink_to(victim)
    before = state(tmp_path)
    r = run_cli("-m", *SMALL, "seed=0,1", "trainer.skip_completed=true", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "config.yaml is a symbolic link" in r.stderr, r.stderr
    assert state(tmp_path) == before


# --- teacher directories ----------------------------------------------------------------------------------------

TEACHER_SUMMARY = st.one_of(
    st.sampled_from(["completed"] * 2 * VALID + ["absent", "interrupted", "truncated", "link", "fifo", "dir"]),
    st.tuples(st.sampled_from(["final", "config", "status", "history"]), st.sampled_from(["x", "missing"])),
)
TEACHER_CHECKPOINT = st.one_of(
    st.sampled_from(["final"] * 2 * VALID + ["absent", "truncated", "link", "fifo", "dir", "other model"]),
    st.tuples(st.sampled_from(["config", "model", "step"]), st.sampled_from(["x", "missing"])),
)


@pytest.fixture(scope="module")
def student(finished):
    cfg = make_cfg(*SMALL, "loss=kd", f"loss.teacher={finished}")
    from lossbench import data

    return cfg, data.load(cfg.data)


@FEWER
@given(summary=TEACHER_SUMMARY, checkpoint=TEACHER_CHECKPOINT)
def test_every_teacher_directory_gives_a_teacher_or_one_line(tmp_path_factory, parts, student, summary, checkpoint):
    root = tmp_path_factory.mktemp("teacher")
    victim = root / "victim"
    victim.write_text("precious\n")
    d = root / "teacher"
    d.mkdir()
    place(d / store.SUMMARY, summary, summary_bytes(parts, summary), victim)
    ck = checkpoint
    if checkpoint == "other model":
        other = dict(parts["checkpoint"])
        other["config"] = {**other["config"], "model": {**other["config"]["model"], "hidden": [99]}}
        buf = io.BytesIO()
        torch.save(other, buf)
        valid = buf.getvalue()
        ck = "final"
    else:
        valid = checkpoint_bytes(parts, checkpoint)
    place(d / store.CHECKPOINT, ck, valid, victim)
    cfg, ds = student
    cfg = cfg.copy()
    cfg.loss.teacher = str(d)
    before = state(root)
    with time_limit(20):
        try:
            out = teacher.attach(cfg, ds, torch.device("cpu"))
            assert out.t_train is not None
            assert summary == "completed" and checkpoint == "final"
        except ConfigError as e:
            one_line(e)
            assert str(d) in str(e)
    assert state(root) == before


# --- report inputs ----------------------------------------------------------------------------------------------

REPORT_PARTS = st.sampled_from(["completed"] * VALID + ["truncated", "link", "link to fifo", "fifo", "dir", "list",
                                ("final", "x"), ("final", "missing"), ("history", "x")])


@FEWER
@given(kinds=st.lists(REPORT_PARTS, min_size=1, max_size=4))
def test_every_report_input_gives_runs_or_one_line(tmp_path_factory, parts, kinds):
    root = tmp_path_factory.mktemp("report")
    sweep = root / "sweep"
    sweep.mkdir()
    fifo = root / "fifo"
    os.mkfifo(fifo)
    good = root / "good.json"
    good.write_bytes(summary_bytes(parts, "completed"))
    for i, kind in enumerate(kinds):
        (sweep / str(i)).mkdir()
        path = sweep / str(i) / store.SUMMARY
        if kind == "link":
            path.symlink_to(good)
        elif kind == "link to fifo":
            path.symlink_to(fifo)
        elif kind == "list":
            path.write_text("[1, 2]")
        else:
            place(path, kind, summary_bytes(parts, kind), good)
    before = state(root)
    with time_limit(20), contextlib.redirect_stderr(io.StringIO()):
        try:
            found = runs.find_runs([sweep])
            assert len(found) == sum(k in ("completed", "link", ("final", "missing")) for k in kinds)
        except runs.ReportError as e:
            one_line(e)
    assert state(root) == before


# --- 1. security and data loss ----------------------------------------------------------------------------------


def cli_run(*args: str, timeout: int = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lossbench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kw)


@pytest.mark.parametrize("kind", ["lock link", "summary fifo"])
def test_a_link_or_fifo_in_a_run_directory_is_refused_in_one_line_through_the_cli(tmp_path, kind):
    d, victim = tmp_path / "run", tmp_path / "victim"
    d.mkdir()
    victim.write_text("precious\n")
    if kind == "lock link":
        (d / store.LOCK).symlink_to(victim)
    else:
        os.mkfifo(d / store.SUMMARY)
    before = state(tmp_path)
    r = cli_run(*SMALL, f"hydra.run.dir={d}", "trainer.skip_completed=true", timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "symbolic link" in r.stderr if kind == "lock link" else "is a FIFO" in r.stderr
    assert state(tmp_path) == before  # Hydra's .hydra record and log were never written there either


def test_a_diverged_run_keeps_no_checkpoint_and_is_not_resumed(tmp_path):
    s = run_cfg(tmp_path, *SMALL, "optim.lr=1e30", "trainer.ckpt_every=5")
    assert s["status"] == "diverged" and not (tmp_path / store.CHECKPOINT).exists()
    before = state(tmp_path)
    for how in ("trainer.resume=true", f"trainer.resume={tmp_path}"):
        with pytest.raises(ConfigError, match="holds a diverged run"):
            run_cfg(tmp_path / "elsewhere" if "/" in how else tmp_path, *SMALL, "optim.lr=1e30", how)
    assert state(tmp_path) == before


def test_a_failed_summary_is_kept_aside_when_rebuilt_from_a_final_checkpoint(finished, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(finished, d)
    failed = {**json.loads((d / store.SUMMARY).read_text()), "status": "failed", "error": "OSError: boom"}
    (d / store.SUMMARY).write_text(json.dumps(failed))
    old = (d / store.SUMMARY).read_bytes()
    s = run_cfg(d, *SMALL, "loss=ce", "trainer.skip_completed=true")
    assert s["skipped"] and s["status"] == "completed" and s["replaced"]["error"] == "OSError: boom"
    aside = list(d.glob(f"{store.SUMMARY}.replaced-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == old


def test_a_refused_sweep_rerun_leaves_every_job_directory_byte_identical(tmp_path):
    sweep = tmp_path / "sweep"
    first = run_cli("-m", *SMALL, "seed=0,1", f"hydra.sweep.dir={sweep}")
    assert first.returncode == 0, first.stderr
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    before = {j: state(j) for j in jobs}
    again = run_cli("-m", *SMALL, "seed=0,1", "optim.momentum=0.5", "trainer.skip_completed=true",
                    f"hydra.sweep.dir={sweep}")
    assert again.returncode == 2, again.stderr  # not every job ran
    assert {j: state(j) for j in jobs} == before  # .hydra/ and the job log included
    errors = [line for line in again.stderr.splitlines() if line.startswith("lossbench: error:")]
    assert len(errors) == 2 and all("different config" in e for e in errors)  # each once
    assert re.findall(r"lossbench sweep: \[[\d/]+\] job \d+ (\w+)", again.stdout) == ["refused", "refused"]  # not old statuses
    status = json.loads((sweep / "sweep_status.json").read_text())
    assert [j["status"] for j in status["jobs"]] == ["refused", "refused"]
    assert all("optim.momentum: 0.9 -> 0.5" in j["error"] for j in status["jobs"])


# --- 2. hangs ---------------------------------------------------------------------------------------------------


def test_multilabel_generation_is_validated_and_bounded():
    with pytest.raises(ConfigError, match=r"data.n_labels=50 .* at most data.n_classes=3"):
        config.validate(make_cfg("data.task=multilabel", "data.n_classes=3", "data.n_labels=50"))
    import numpy as np

    from lossbench import data
    from lossbench.errors import DataError

    with time_limit(30), pytest.raises(DataError, match="rejection sampling"):  # past validation: still ends
        data._documents(np.random.default_rng(0), 10, np.full(3, 1 / 3), np.full((5, 3), 0.2), 50, 5, False)


# --- 3. one line where a traceback was --------------------------------------------------------------------------


def test_an_lr_past_float32_diverges_and_an_init_past_it_is_a_config_error(tmp_path):
    assert run_cfg(tmp_path, *SMALL, "optim.lr=1e308")["status"] == "diverged"
    float_keys = {(k, option if group == "loss" else None) for group, option, k, _ in config.schema.leaves()}
    for key, loss in sorted(float_keys, key=str):  # every float key of the config (of every loss), each named
        if key in config.DIVERGE_WHEN_HUGE or key in config.schema.integer_keys() or \
                (rng := config.range_of(key, loss)) is None:
            continue
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
            config._check_number(key, 1e308, rng)
        one_line(e.value)
    with pytest.raises(ConfigError, match="model.head_bias"):
        config.validate(make_cfg("model.head_bias=1e308"))


LONG = "x" * 300


@pytest.mark.parametrize("args", [
    [f"seed={'9' * 5000}"], [f"hydra.run.dir=/tmp/{LONG}"], [f"trainer.resume=/tmp/{LONG}"],
    ["loss=kd", f"loss.teacher=/tmp/{LONG}"], ["+foo=bar"], ["+trainer.foo=1"], ["++loss.foo=1"],
    ["+trainr.max_steps=3"],
    ["-m", "hydra/launcher=stacked", "hydra.launcher.stacked=maybe"],
    ["-m", "hydra/launcher=stacked", "hydra.launcher.max_members=abc"],
    ["-m", "hydra/launcher=stacked", "hydra.launcher.max_memory_gb=0"],
    ["-m", "hydra/launcher=stacked", "hydra.launcher.executor=slurmy"],
    ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0"],
], ids=lambda a: a[-1][:40])
def test_command_line_shapes_are_refused_in_one_line_naming_the_key(tmp_path, args):
    where = [a for a in (f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
             if not any(x.startswith(a.split("=")[0]) for x in args)]
    r = run_cli(*args, *SMALL, *where)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    key = next(a for a in reversed(args) if "=" in a).split("=")[0].lstrip("+")
    assert key in r.stderr, r.stderr
    if key.startswith(("foo", "trainer.foo", "trainr")):
        assert "did you mean" in r.stderr or key == "foo"
    assert not any(tmp_path.iterdir())


def test_every_blocked_global_of_a_planted_pickle_is_named(tmp_path):
    class Calls:
        def __init__(self, f, args):
            self.f, self.args = f, args

        def __reduce__(self):
            return self.f, self.args

    marker = tmp_path / "ran"
    for f, args in [(os.system, (f"touch {marker}",)), (subprocess.Popen, (["touch", str(marker)],)),
                    (eval, ("1",)), (exec, ("1",)), (open, (str(marker), "w")), (os.remove, (str(marker),)),
                    (shutil.rmtree, (str(marker),)), (Path, (str(marker),))]:
        torch.save({"step": 1, "payload": Calls(f, args)}, tmp_path / store.CHECKPOINT)
        with pytest.raises(ConfigError) as e:
            store.load_checkpoint(tmp_path / store.CHECKPOINT)
        one_line(e.value)
        assert f"{tmp_path / store.CHECKPOINT} holds objects that are not plain data (it asks for " in str(e.value)
        assert f.__name__ in str(e.value) and str(e.value).endswith("start the run afresh.")
        assert not marker.exists()


def test_a_full_disk_fails_the_run_at_its_checkpoint(tmp_path, monkeypatch):
    """The second checkpoint write finds the disk full: the run ends failed with one line naming the file; the
    first checkpoint is intact and the summary's steps are its step."""
    fsync, seen = os.fsync, []

    def full(fd):
        if ".checkpoint.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            seen.append(fd)
            if len(seen) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(store.DiskFull) as e:
        run_cfg(tmp_path, *SMALL, "trainer.ckpt_every=10")
    one_line(e.value)
    assert f"the disk is full writing {tmp_path / store.CHECKPOINT}" in str(e.value)
    s, ck = store.read_json(tmp_path / store.SUMMARY), torch.load(tmp_path / store.CHECKPOINT, weights_only=True)
    assert s["status"] == "failed" and "disk is full" in s["error"] and s["steps"] == ck["step"] == 10
    assert not list(tmp_path.glob(".checkpoint.pt.*"))


def test_a_file_size_limit_ends_the_cli_run_in_one_line(tmp_path):
    d = tmp_path / "run"
    # 16 KiB: Hydra's record and the summary fit, the checkpoint of a 256-wide MLP does not
    r = subprocess.run(["bash", "-c", f"ulimit -f 16; exec {sys.executable} -m lossbench {' '.join(SMALL)} "
                        f"model.hidden=[256] trainer.ckpt_every=10 hydra.run.dir={d}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "the disk is full writing" in r.stderr, r.stderr
    s = store.read_json(d / store.SUMMARY)
    assert s["status"] == "failed" and s["steps"] == 0 and not (d / store.CHECKPOINT).exists()


def caught(pid: int, signum: int) -> bool:
    """Whether the process has a handler for signum (/proc/<pid>/status, SigCgt)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@pytest.mark.parametrize(("sig", "after"), [("SIGINT", 0.0), ("SIGINT", 0.15), ("SIGTERM", 0.0)])
def test_a_signal_in_the_first_second_gives_one_line_and_no_directory(tmp_path, sig, after):
    """From the moment lossbench's handlers exist (the package's first lines, before omegaconf, Hydra and torch
    are imported): one line, exit 128 + signal, no directory."""
    d = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "lossbench", *SMALL, f"hydra.run.dir={d}"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not caught(proc.pid, signal.SIGTERM) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    time.sleep(after)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + getattr(signal, sig), err
    assert err.strip() == f"lossbench: interrupted by {sig} before training started; nothing to resume"
    assert not d.exists()


def test_optuna_with_every_trial_diverging_records_the_study(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli("-m", "hparams_search=optuna", *SMALL, "optim.lr=1e30", "hydra.sweeper.n_trials=2",
                "hydra.sweeper.n_jobs=1", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "no trial completed" in r.stdout
    status = json.loads((sweep / "sweep_status.json").read_text())
    assert [j["status"] for j in status["jobs"]] == ["diverged", "diverged"]


def test_a_checkpoint_entry_that_does_not_fit_is_named(finished, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(finished, d)
    ck = torch.load(d / store.CHECKPOINT, weights_only=True)
    ck["step"] = 10
    name = next(iter(ck["model"]))
    ck["model"][name] = torch.zeros(3)  # the right type, the wrong shape
    torch.save(ck, d / store.CHECKPOINT)
    (d / store.SUMMARY).write_text('{"status": "interrupted", "steps": 10, "config": {}}')
    with pytest.raises(ConfigError, match=rf"{d / store.CHECKPOINT}: its 'model' entry does not fit") as e:
        run_cfg(d, *SMALL, "loss=ce", "trainer.resume=true")
    one_line(e.value)


# --- 4. statuses ------------------------------------------------------------------------------------------------


def test_a_stacked_member_that_errors_gets_its_own_failed_summary(tmp_path):
    jobs = [(make_cfg(*SMALL, "loss=ce"), tmp_path / "0"),
            (make_cfg(*SMALL, "loss=kd", f"loss.teacher={tmp_path / 'no teacher'}"), tmp_path / "1")]
    results = train.run_jobs(jobs)
    assert results[0]["status"] == "completed" and isinstance(results[1], ConfigError)
    s = store.read_json(tmp_path / "1" / store.SUMMARY)
    assert s["status"] == "failed" and "loss.teacher=" in s["error"]


def test_a_double_ctrl_c_to_a_stacked_sweep_saves_every_member(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["seed=0,1,2", "trainer.max_steps=3000", "trainer.ckpt_every=20", "trainer.log_every=20",
            "trainer.eval_every=1000", "model.hidden=[16]", "data.n_train=1000", "data.n_val=200", "trainer.threads=1"]
    proc = subprocess.Popen([sys.executable, "-m", "lossbench", "-m", "hydra/launcher=stacked", *args,
                             f"hydra.sweep.dir={sweep}"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not any(sweep.glob("*/checkpoint.pt")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    status = json.loads((sweep / "sweep_status.json").read_text())
    assert [j["status"] for j in status["jobs"]] == ["interrupted"] * 3
    for j in status["jobs"]:
        assert torch.load(Path(j["dir"]) / store.CHECKPOINT, weights_only=True)["step"] == j["steps"]
