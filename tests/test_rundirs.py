"""A run directory is data. A finished run's files stay byte-identical whatever is run into its directory
afterwards; an unreadable summary or checkpoint is refused with one line, never taken as "no run"; a
checkpoint is loaded with weights_only=True, so a pickle that would run code is refused and never runs."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from lossbench import store
from lossbench.engine import train
from lossbench.errors import ConfigError
from tests.conftest import cli, make_cfg, run_cfg

SMALL = ["trainer.threads=1", "model.hidden=[16]", "data.n_train=400", "data.n_val=200", "trainer.max_steps=40",
         "trainer.eval_every=20", "trainer.log_every=20", "logger.flush_secs=1"]


def fingerprint(run_dir: Path) -> dict[str, str]:
    """sha256 of every file a run wrote (aside: the lock file, and Hydra's own records: .hydra/, which any command
    run into the directory rewrites, and the job log, which Hydra appends to)."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != store.LOCK and ".hydra" not in p.parts and p.suffix != ".log"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("finished") / "run"
    assert run_cfg(d, *SMALL)["status"] == "completed"
    return d


def copy_of(finished: Path, tmp_path: Path, damage: str | None = None) -> Path:
    d = tmp_path / "run"
    shutil.copytree(finished, d)
    if damage == "truncate":
        (d / store.SUMMARY).write_bytes((d / store.SUMMARY).read_bytes()[:50])
    elif damage == "delete":
        (d / store.SUMMARY).unlink()
    return d


# (damage to the finished run's summary, the overrides of the new attempt). Every one is refused or skipped.
ATTEMPTS = [
    (None, []), (None, ["seed=7"]), (None, ["trainer.resume=true"]), (None, ["trainer.resume=true", "seed=7"]),
    (None, ["trainer.skip_completed=true"]), (None, ["trainer.skip_completed=true", "seed=7"]),
    (None, ["trainer.skip_completed=true", "trainer.resume=true"]),
    ("truncate", []), ("truncate", ["seed=7"]), ("truncate", ["trainer.resume=true"]),
    ("truncate", ["trainer.skip_completed=true", "seed=7"]),
    ("delete", []), ("delete", ["seed=7"]), ("delete", ["trainer.skip_completed=true", "loss=bce"]),
]


@pytest.mark.parametrize(("damage", "overrides"), ATTEMPTS)
def test_a_finished_run_is_never_overwritten(finished, tmp_path, damage, overrides):
    d = copy_of(finished, tmp_path, damage)
    before = fingerprint(d)
    try:
        s = run_cfg(d, *SMALL, *overrides)
        assert s.get("skipped"), s["status"]  # the only way through: recognised as finished, and skipped
    except ConfigError as e:
        assert str(d) in str(e) and "\n" not in str(e)
    assert fingerprint(d) == before


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_skip_completed_recognises_a_finished_run_whose_summary_was_lost(finished, tmp_path, damage):
    """Its checkpoint shows it finished: the summary is rebuilt from it (the unreadable bytes are kept aside),
    never turned into 'failed'; the checkpoint and events are untouched."""
    d = copy_of(finished, tmp_path, damage)
    before = fingerprint(d)
    s = run_cfg(d, *SMALL, "trainer.skip_completed=true")
    assert s["skipped"] and s["status"] == "completed" and s["rebuilt"]
    original = store.read_json(finished / store.SUMMARY)
    for key in ("steps", "final", "best", "history", "convergence", "numerics"):
        assert s[key] == original[key], key
    after = fingerprint(d)
    assert {k: v for k, v in after.items() if k != store.SUMMARY and ".unreadable-" not in k} == \
        {k: v for k, v in before.items() if k != store.SUMMARY}
    kept = [k for k in after if ".unreadable-" in k]
    assert (kept and after[kept[0]] == before[store.SUMMARY]) if damage == "truncate" else not kept


def test_a_stacked_rerun_into_a_finished_sweep_changes_nothing(finished, tmp_path):
    jobs = [(make_cfg(*SMALL, f"seed={s}", "trainer.skip_completed=true"), tmp_path / str(s)) for s in (0, 1)]
    train.run_jobs(jobs)
    before = {s: fingerprint(tmp_path / str(s)) for s in (0, 1)}
    results = train.run_jobs(jobs)
    assert all(r["skipped"] for r in results)
    assert {s: fingerprint(tmp_path / str(s)) for s in (0, 1)} == before
    other = [(make_cfg(*SMALL, f"seed={s}", "loss=bce", "trainer.skip_completed=true"), tmp_path / str(s)) for s in (0, 1)]
    assert all(isinstance(r, ConfigError) and "different config" in str(r) for r in train.run_jobs(other))
    assert {s: fingerprint(tmp_path / str(s)) for s in (0, 1)} == before


def test_the_issue_example_exits_2_with_one_line_and_keeps_the_checkpoint(finished, tmp_path):
    d = copy_of(finished, tmp_path, "truncate")
    before = fingerprint(d)
    r = cli(f"hydra.run.dir={d}", "trainer.max_steps=30", "seed=7", *SMALL[:-4])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "unreadable summary.json" in r.stderr
    assert fingerprint(d) == before


# --- checkpoints are loaded as data ----------------------------------------------------------------------


class RunsCode:
    """What a hostile checkpoint.pt can hold: unpickling it calls open(marker, 'w')."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("how", [["trainer.resume=true"], ["trainer.skip_completed=true"], ["trainer.resume=DIR"]])
def test_a_checkpoint_that_would_run_code_is_refused_and_never_runs(finished, tmp_path, how):
    d = copy_of(finished, tmp_path)
    marker = tmp_path / "pwned"
    ck = store.load_checkpoint(d / store.CHECKPOINT)
    ck["step"] = 1  # a resumable step, so that nothing but the payload stops it
    torch.save({**ck, "payload": RunsCode(marker)}, d / store.CHECKPOINT)
    (d / store.SUMMARY).write_text('{"status": "interrupted", "steps": 1}')  # an unfinished run: it would resume
    args = [a.replace("DIR", str(d)) for a in how]
    r = cli(f"hydra.run.dir={tmp_path / 'elsewhere' if 'DIR' in how[0] else d}", *args, *SMALL)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0
    assert f"{d / store.CHECKPOINT} holds objects that are not plain data" in r.stderr
    assert "io.open" in r.stderr or "builtins.open" in r.stderr
    assert not marker.exists()
    assert store.read_json(d / store.SUMMARY) == {"status": "interrupted", "steps": 1}


@pytest.mark.parametrize("damage", [b"", b"not a zip archive", None])
def test_a_damaged_checkpoint_is_named_and_the_summary_kept(finished, tmp_path, damage):
    d = copy_of(finished, tmp_path)
    data = (d / store.CHECKPOINT).read_bytes()
    (d / store.CHECKPOINT).write_bytes(data[: len(data) // 2] if damage is None else damage)
    (d / store.SUMMARY).write_text('{"status": "interrupted", "steps": 20}')
    for extra in (["trainer.resume=true"], ["trainer.skip_completed=true"]):
        with pytest.raises(ConfigError, match=rf"{d / store.CHECKPOINT} is damaged or not a checkpoint"):
            run_cfg(d, *SMALL, *extra)
    assert store.read_json(d / store.SUMMARY) == {"status": "interrupted", "steps": 20}


def test_checkpoints_hold_only_plain_data_and_resume_bitwise(tmp_path):
    """Everything lossbench writes loads with weights_only=True (the malicious-pickle guard costs nothing)."""
    s = run_cfg(tmp_path / "a", *SMALL, "optim=adam", "trainer.precision=bf16", "trainer.ckpt_every=20")
    ck = torch.load(tmp_path / "a" / store.CHECKPOINT, weights_only=True)
    assert ck["format"] == 2 and ck["step"] == s["steps"]


def test_a_key_added_since_a_checkpoint_was_written_changes_nothing_at_its_off_value():
    """A run checkpointed before model.dropout and data.jitter existed resumes with them off; on, they are a change."""
    from lossbench.engine.plan import config_changes

    old = {"seed": 0, "model": {"name": "mlp"}, "data": {"name": "mnist"}}
    new = {"seed": 0, "model": {"name": "mlp", "dropout": 0.0}, "data": {"name": "mnist", "jitter": 0}}
    assert config_changes(old, new) == []
    new["model"]["dropout"] = 0.5
    assert config_changes(old, new) == ["model.dropout: None -> 0.5"]
    assert config_changes(new, old) == ["data.jitter: 0 -> None", "model.dropout: 0.5 -> None"]  # dropped: changes
