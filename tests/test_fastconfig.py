"""lossbench.config.fastconfig: a job's config equals Hydra's own composition (every job of every preset, random
override sets), no job is composed twice, a sweep writes the same files, and `--help` loads no torch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, ListConfig, OmegaConf

from lossbench.config import ahead, fastconfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
PRESETS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))


@pytest.fixture
def loader():
    """Hydra's config loader for configs/, with fastconfig's methods kept aside so that both can be called."""
    fastconfig.uninstall()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        yield GlobalHydra.instance().config_loader()
    fastconfig.uninstall()


def hydra_and_fast(loader, call):
    """call(loader) with Hydra's own loader, then with fastconfig's: both results (or both exceptions)."""
    out = []
    for fast in (False, True):
        (fastconfig.install if fast else fastconfig.uninstall)()
        try:
            out.append(call(loader))
        except Exception as e:  # noqa: BLE001 (compared below: the same error from both)
            out.append(e)
    fastconfig.uninstall()
    return out


def nodes(cfg, path: str = ""):
    """Every node with what OmegaConf keeps about it: its class, declared type, flags, and (leaves) its value as
    written (an interpolation stays one)."""
    yield path, type(cfg).__name__, OmegaConf.get_type(cfg) if isinstance(cfg, DictConfig) else None, \
        cfg._metadata.ref_type, cfg._metadata.object_type, dict(cfg._metadata.flags), \
        None if isinstance(cfg, DictConfig | ListConfig) else cfg._value()
    if isinstance(cfg, DictConfig | ListConfig) and not cfg._is_none() and not cfg._is_missing():
        for key in (cfg.keys() if isinstance(cfg, DictConfig) else range(len(cfg))):
            yield from nodes(cfg._get_node(key), f"{path}.{key}")


def resolved(cfg: DictConfig) -> str:
    """The job's task config resolved as its run sees it (its HydraConfig set), as YAML."""
    from hydra_plugins.lossbench_stacked.stacked_launcher import task_config

    return OmegaConf.to_yaml(task_config(cfg))


def assert_same(a, b) -> None:
    if isinstance(a, Exception) or isinstance(b, Exception):
        assert type(a) is type(b) and str(a) == str(b), (a, b)
        return
    assert OmegaConf.to_yaml(a) == OmegaConf.to_yaml(b)  # the .hydra/ records are these, saved
    assert list(nodes(a)) == list(nodes(b))
    saved = HydraConfig.instance().cfg
    try:
        ra, rb = (_or_error(resolved, c) for c in (a, b))
    finally:
        HydraConfig.instance().cfg = saved
    assert (type(ra), str(ra)) == (type(rb), str(rb))


def _or_error(f, *args):
    try:
        return f(*args)
    except Exception as e:  # noqa: BLE001 (an interpolation that does not resolve: the same error both ways)
        return e


def preset_jobs(loader, preset: str) -> tuple[DictConfig, list[list[str]]]:
    """The preset's sweep as the basic sweeper makes it: its master config and every job's overrides."""
    master = loader.load_configuration("config", [f"experiment={preset}", "hydra.sweep.dir=/tmp/fastconfig"],
                                       run_mode=RunMode.MULTIRUN)
    params = master.hydra.sweeper.get("params") or {}
    lines = [f"experiment={preset}", *(f"{k}={v}" for k, v in params.items())]
    parsed = OverridesParser.create().parse_overrides(lines)
    jobs = [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    return master, jobs


@pytest.mark.parametrize("preset", PRESETS)
def test_every_job_of_every_preset_equals_hydras_composition(loader, preset: str) -> None:
    master, jobs = preset_jobs(loader, preset)
    assert jobs
    for job in jobs:
        ref, fast = hydra_and_fast(loader, lambda ld, j=job: ld.load_sweep_config(master, j))
        assert not isinstance(ref, Exception), ref
        assert_same(ref, fast)


GROUP_CHOICES = {
    "loss": ["bce", "bce_logits", "bce_manual", "bce_clipped", "ce", "nll", "focal", "poly1", "ldam"],
    "optim": ["sgd", "adam", "adamw"],
    "model": ["mlp", "linear"],
    "data": ["synthetic", "imbalanced", "longtail"],
    "+regime": ["scale50", "bias_neg100", "scale50_fp16"],
    "experiment": ["saturation", "equivalence", "class_weights", "label_smoothing"],
    "numerics": ["default", "off"],
}
VALUES = {
    "seed": st.integers(0, 9).map(str),
    "optim.lr": st.sampled_from(["0.1", "1e-3", "2", "${optim.momentum}", "abc"]),
    "trainer.max_steps": st.sampled_from(["5", "300", "-1", "null"]),
    "model.hidden": st.sampled_from(["[8]", "[16,16]", "[]", "8"]),
    "data.scale": st.sampled_from(["1", "50.0", "inf"]),
    "+data.not_a_key": st.just("1"),
    "++trainer.batch_size": st.sampled_from(["64", "128"]),
    "loss.label_smoothing": st.sampled_from(["0.1", "0.0"]),
    "hydra.job.chdir": st.sampled_from(["false", "true"]),
    "~numerics.every": st.just(""),
}


@st.composite
def override_sets(draw) -> list[str]:
    groups = draw(st.dictionaries(st.sampled_from(sorted(GROUP_CHOICES)), st.just(None), max_size=4))
    lines = [f"{g}={draw(st.sampled_from(GROUP_CHOICES[g]))}" for g in groups]
    for key in draw(st.lists(st.sampled_from(sorted(VALUES)), max_size=4, unique=True)):
        value = draw(VALUES[key])
        lines.append(key if key.startswith("~") else f"{key}={value}")
    return draw(st.permutations(lines))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=override_sets())
def test_random_override_sets_equal_hydras_composition(loader, overrides: list[str]) -> None:
    ref, fast = hydra_and_fast(loader, lambda ld: ld.load_configuration("config", overrides, run_mode=RunMode.RUN))
    assert_same(ref, fast)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_presets_sweep_master_equals_hydras_composition(loader, preset: str) -> None:
    """The two MULTIRUN compositions of `python -m lossbench -m experiment=<preset>`: Hydra's get_mode, then its
    multirun's (hydra.mode appended)."""
    args = [f"experiment={preset}", "hydra.sweep.dir=/tmp/fastconfig"]
    for overrides, validate in ((args, False), ([*args, "hydra.mode=MULTIRUN"], True)):
        ref, fast = hydra_and_fast(loader, lambda ld, o=overrides, v=validate: ld.load_configuration(
            "config", o, run_mode=RunMode.MULTIRUN, validate_sweep_overrides=v))
        assert not isinstance(ref, Exception), ref
        assert_same(ref, fast)


SWEEPS = ["seed=0,1", "loss=bce,nll", "optim.lr=0.1,0.01", "+regime=scale50,bias_neg100", "model=mlp,linear"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=override_sets(), sweeps=st.lists(st.sampled_from(SWEEPS), max_size=2, unique=True))
def test_random_sweep_masters_equal_hydras_composition(loader, overrides: list[str], sweeps: list[str]) -> None:
    ref, fast = hydra_and_fast(loader, lambda ld: ld.load_configuration(
        "config", [*overrides, *sweeps, "hydra.mode=MULTIRUN"], run_mode=RunMode.MULTIRUN))
    assert_same(ref, fast)


def test_prefetched_configs_are_those_hydra_composes_each_for_one_call(loader) -> None:
    """fastconfig.prefetch makes the calls hydra.main and the basic sweeper will make; each later call gets its
    result once, equal to Hydra's own composition."""
    args = ["experiment=saturation", "+regime=scale50,bias_neg100", "seed=0,1", "hydra.sweep.dir=/tmp/fastconfig"]
    fastconfig.install()
    try:
        fastconfig.prefetch(loader, "config", args, multirun=True)
        assert len(fastconfig._prefetched) == 2 + 2 * 5 * 2  # get_mode's, the master, 20 jobs (2 x 5 losses x 2)
        before = dict(fastconfig.stats)
        mode = loader.load_configuration("config", args, run_mode=RunMode.MULTIRUN, validate_sweep_overrides=False)
        master = loader.load_configuration("config", [*args, "hydra.mode=MULTIRUN"], run_mode=RunMode.MULTIRUN)
        params = master.hydra.sweeper.params
        parsed = OverridesParser.create().parse_overrides([*(f"{k}={v}" for k, v in params.items()),
                                                           *master.hydra.overrides.task])
        jobs = [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
        fast = [loader.load_sweep_config(master, job) for job in jobs]
        assert fastconfig.stats["prefetched"] - before["prefetched"] == 22 and not fastconfig._prefetched
        assert fastconfig.stats["composed"] == before["composed"]
        again = loader.load_sweep_config(master, jobs[0])  # a second call is composed anew (from the template)
        assert fastconfig.stats["prefetched"] - before["prefetched"] == 22
    finally:
        fastconfig.uninstall()
    assert_same(loader.load_configuration("config", args, run_mode=RunMode.MULTIRUN, validate_sweep_overrides=False),
                mode)
    ref_master = loader.load_configuration("config", [*args, "hydra.mode=MULTIRUN"], run_mode=RunMode.MULTIRUN)
    assert_same(ref_master, master)
    for job, cfg in zip(jobs, fast, strict=True):
        assert_same(loader.load_sweep_config(ref_master, job), cfg)
    assert_same(fast[0], again)


def test_the_same_group_choices_in_another_order_share_one_composition(loader) -> None:
    fastconfig.install()
    try:
        a = loader.load_configuration("config", ["loss=nll", "optim=adam", "seed=1"], run_mode=RunMode.RUN)
        before = dict(fastconfig.stats)
        b = loader.load_configuration("config", ["optim=adam", "seed=2", "loss=nll"], run_mode=RunMode.RUN)
        assert fastconfig.stats["composed"] == before["composed"]  # a copy, not a composition
        assert (a.seed, b.seed) == (1, 2) and a.hydra.overrides.task != b.hydra.overrides.task
    finally:
        fastconfig.uninstall()


AHEAD = [["experiment=saturation", "+regime=scale50", "loss=bce"], ["experiment=saturation", "loss=nll", "seed=3"]]


def test_compositions_made_in_the_child_are_hydras_and_not_made_again(loader, capfd) -> None:
    fastconfig.install()
    try:
        before = dict(fastconfig.stats)
        child = ahead.start(lambda: [print("from the child") or
                                     loader.load_configuration("config", o, run_mode=RunMode.RUN) for o in AHEAD])
        assert child is not None
        assert child.collect()  # compose() returned there, on files as they still are
        assert fastconfig.stats["adopted"] - before["adopted"] == 2 and fastconfig.stats["composed"] == before["composed"]
        fast = [loader.load_configuration("config", o, run_mode=RunMode.RUN) for o in AHEAD]
        assert fastconfig.stats["composed"] == before["composed"]  # copies of what the child composed
    finally:
        fastconfig.uninstall()
    for o, cfg in zip(AHEAD, fast, strict=True):
        assert_same(loader.load_configuration("config", o, run_mode=RunMode.RUN), cfg)
    assert "from the child" not in capfd.readouterr().out  # the child is quiet


def test_a_child_that_fails_or_composed_from_files_changed_since_gives_nothing(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(CONFIGS, tmp_path / "configs")
    fastconfig.uninstall()
    fastconfig.install()
    try:
        with initialize_config_dir(config_dir=str(tmp_path / "configs"), version_base="1.3"):
            loader = GlobalHydra.instance().config_loader()
            compose = [loader.load_configuration("config", o, run_mode=RunMode.RUN) for o in AHEAD]
            fastconfig.clear()
            child = ahead.start(lambda: [loader.load_configuration("config", o, run_mode=RunMode.RUN) for o in AHEAD])
            import time

            time.sleep(1.0)  # the child has composed by now (or it is still composing: then it is waited for)
            with (tmp_path / "configs" / "loss" / "nll.yaml").open("a") as f:
                f.write("\n# edited after the child composed\n")  # the second set's file: that one is not adopted
            before = fastconfig.stats["adopted"]
            assert not child.collect()  # what it checked does not hold for the file changed since
            assert fastconfig.stats["adopted"] - before == 1
            fastconfig.clear()
            child = ahead.start(lambda: 1 / 0)
            assert not child.collect()
            assert fastconfig.stats["adopted"] - before == 1 and not fastconfig._templates
            assert compose  # composed before, in this process: the child started from a warm cache too
    finally:
        fastconfig.uninstall()


def test_a_refusal_found_ahead_is_what_the_command_would_report() -> None:
    """ahead._run, in the child: a LossbenchError from compose() (the preflight with its prefetch) that check()
    (the preflight alone, as the command runs it) raises too is sent as check()'s message; an error check() does
    not raise (the prefetch's own), or any other error, sends the compositions: the command composes again and
    reports what it finds."""
    import pickle

    from lossbench.errors import ConfigError

    def refuse(message: str):
        def f() -> None:
            raise ConfigError(message)
        return f

    assert ahead._run(refuse("from compose"), refuse("from check")) == ahead.REFUSED + b"from check"
    for compose, check in [(refuse("x"), lambda: None), (refuse("x"), lambda: 1 / 0), (refuse("x"), None),
                           (lambda: 1 / 0, refuse("y"))]:
        sent = ahead._run(compose, check)
        assert sent[:1] == ahead.COMPOSED and pickle.loads(sent[1:])[1] is False
    assert pickle.loads(ahead._run(lambda: None, refuse("y"))[1:])[1] is True


@pytest.mark.parametrize("args", [["loss=nope"], ["-m", "seed=a,b"], ["optim.lr=-1"]])
def test_a_refused_command_line_is_reported_by_the_child_before_the_imports_end(tmp_path: Path, args) -> None:
    """The one line and exit 2 of a refused command line, from the reader of the child's message: the process
    ends there (its exit handlers never run, so STATS is not printed), whenever the imports would have ended."""
    got = run("-c", COUNT, *args, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert got.returncode == 2, got.stderr[-2000:]
    assert got.stderr.count("\n") == 1 and got.stderr.startswith("lossbench: error: "), got.stderr
    assert "STATS" not in got.stderr and not list(tmp_path.iterdir())
    same = run("-m", "lossbench", *args, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
               env={"LOSSBENCH_FASTCONFIG": "0"})  # no child: the command's own preflight
    assert (same.returncode, same.stderr) == (2, got.stderr)


@pytest.mark.parametrize("code, status", [("None", 0), ("3", 3), ("'a message'", 1)])
@pytest.mark.parametrize("thread", [False, True])
def test_a_command_ends_as_pythons_exit_would_without_the_teardown(code: str, status: int, thread: bool) -> None:
    """exit_without_teardown: the exit status of sys.exit(code), a running non-daemon thread joined, the exit
    handlers run and the output flushed; the teardown skipped (also with a thread exit hook registered, as
    torch's imports register concurrent.futures')."""
    script = textwrap.dedent(f"""
        import atexit, concurrent.futures.thread, sys, threading, time
        from lossbench import __main__ as m

        class TornDown:
            def __del__(self):
                print("torn down", flush=True)

        kept = TornDown()  # freed by the interpreter's teardown only
        atexit.register(lambda: print("exit handler", flush=True))
        sys.argv = ["lossbench", "loss=bce"]  # a command that trains in this process

        def command():
            if {thread}:
                threading.Thread(target=lambda: (time.sleep(0.5), print("thread ended", flush=True))).start()
            sys.stdout.write("written, not flushed")
            sys.exit({code})

        m.exit_without_teardown(command)
        """)
    got = run("-c", script)
    assert got.returncode == status, got.stderr[-2000:]
    assert got.stdout.startswith("written, not flushed") and "exit handler" in got.stdout
    assert ("a message" in got.stderr) == (status == 1)
    assert ("thread ended" in got.stdout) == thread and "torn down" not in got.stdout


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


COUNT = """
import atexit, sys
from lossbench import __main__ as m
from lossbench.config import ahead, fastconfig
atexit.register(lambda: print("STATS", fastconfig.stats, file=sys.stderr))
sys.argv = ["lossbench", *sys.argv[1:]]
m.cli()
"""


@pytest.mark.parametrize("launcher", ["basic", "stacked"])
def test_a_sweep_composes_each_job_once_and_writes_the_same_files(tmp_path: Path, launcher: str) -> None:
    args = ["experiment=saturation", "+regime=scale50,bias_neg100", "loss=bce,nll", "seed=0,1", "study.steps=10",
            f"hydra/launcher={launcher}"]
    fast = run("-c", COUNT, "-m", *args, f"hydra.sweep.dir={tmp_path / 'fast'}")
    assert fast.returncode == 0, fast.stderr[-3000:]
    stats = eval(fast.stderr.split("STATS ")[-1].splitlines()[0])  # noqa: S307 (our own dict's repr)
    # 4 combinations of the swept groups (+regime x loss), composed once each (by the preflight); the 8 jobs are
    # copies, each composed once and handed from the sweeper's check to the launcher
    # ... in a child process, while this one imported torch (lossbench.config.ahead): adopted here, none composed again
    # and, there too, the configs Hydra then asks for (lossbench.config.fastconfig.prefetch: get_mode's, the master's,
    # each job's), each handed over for its one call
    assert stats["composed"] == 0 and stats["adopted"] == 2 + 4 and stats["handed_over"] == 8, stats
    assert stats["prefetched"] == 2 + 8 and stats["hydra"] == 0, stats
    slow = run("-m", "lossbench", "-m", *args, f"hydra.sweep.dir={tmp_path / 'hydra'}",
               env={"LOSSBENCH_FASTCONFIG": "0"})
    assert slow.returncode == 0, slow.stderr[-3000:]
    files = {d: sorted(str(p.relative_to(tmp_path / d)).split(".tfevents")[0].split("events.out")[0]
                       for p in (tmp_path / d).rglob("*") if p.is_file()) for d in ("fast", "hydra")}
    assert files["fast"] == files["hydra"]
    for record in (tmp_path / "hydra").glob("*/.hydra/*.yaml"):
        other = tmp_path / "fast" / record.relative_to(tmp_path / "hydra")
        text = record.read_text().replace(str(tmp_path / "hydra"), "SWEEP")
        assert other.read_text().replace(str(tmp_path / "fast"), "SWEEP") == text, other
    assert (tmp_path / "fast" / "multirun.yaml").read_text().replace(str(tmp_path / "fast"), "SWEEP") == \
        (tmp_path / "hydra" / "multirun.yaml").read_text().replace(str(tmp_path / "hydra"), "SWEEP")
    for summary in (tmp_path / "hydra").glob("*/summary.json"):
        import json

        keys = set(json.loads(summary.read_text()))
        other = tmp_path / "fast" / summary.relative_to(tmp_path / "hydra")
        assert set(json.loads(other.read_text())) == keys


_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=120),
                    st.sampled_from(["true", "off", "1e-3", "0x1F", "a: b", "# c", "- d", "*e", "x" * 90,
                                     " ".join(["word"] * 30), "ünïcode ✓", "line\nbreak", "${loss.name}", ""]))
_trees = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(min_size=1, max_size=12), inner,
                                                                        max_size=4)), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=12), _trees, max_size=5))
def test_records_are_written_as_omegaconfs_own_yaml(tree: dict) -> None:
    """The `.hydra/` records through libyaml's emitter: the text of OmegaConf.to_yaml, for any config."""
    try:
        cfg = OmegaConf.create(tree)
    except Exception:  # a key or value OmegaConf itself refuses (an interpolation it cannot parse, ...)
        return
    assert fastconfig.to_yaml(cfg) == OmegaConf.to_yaml(cfg)


def test_records_with_multiline_strings_are_omegaconfs_own_yaml() -> None:
    """Strings libyaml writes otherwise than PyYAML (newlines, non-ASCII; Hydra's help templates) at every kind of
    place, in records that differ elsewhere, written again once PyYAML's text of them is kept: OmegaConf's text;
    a plain string that holds the placeholder itself does not confuse it."""
    odd = ["first line\nsecond line", "ünïcode ✓", "tab\there", "x" * 70 + "\n" + "y " * 60, "a\n\n  b: c\n"]
    for rnd in range(2):
        for i, text in enumerate(odd):
            tree = {"hydra": {"help": {"header": text, "footer": odd[i - 1], "app": f"app{rnd}"},
                              "runs": [{"dir": text, "n": rnd}, text], "job": {"num": rnd}},
                    "top": text, "plain": fastconfig.SLOT if rnd else "plain"}
            cfg = OmegaConf.create(tree)
            assert fastconfig.to_yaml(cfg) == OmegaConf.to_yaml(cfg)
    assert fastconfig._fragments  # the second round used the kept texts


def test_a_job_copy_is_hydras_deep_copy() -> None:
    """run_job's copies through the pickle round trip: equal, and a masked copy (a child whose parent is another
    tree) keeps deepcopy's parenting; HydraConfig.set_config's copy the same as Hydra's."""
    import copy

    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        from hydra import compose

        cfg = compose("config", ["experiment=saturation", "+regime=scale50"], return_hydra_config=True)
    fast = fastconfig.copy_config(cfg)
    assert fast is not cfg and OmegaConf.to_yaml(fast) == OmegaConf.to_yaml(copy.deepcopy(cfg))
    assert all(v._get_parent() is fast for v in fast.__dict__["_content"].values())
    installed = bool(fastconfig._original)
    fastconfig.uninstall()
    try:
        HydraConfig.instance().set_config(cfg)  # Hydra's own
        hydras = HydraConfig.instance().cfg
    finally:
        if installed:
            fastconfig.install()
    fastconfig.set_config(HydraConfig.instance(), cfg)
    masked = HydraConfig.instance().cfg
    assert OmegaConf.to_yaml(masked) == OmegaConf.to_yaml(hydras) and masked.hydra._get_parent() is cfg
    assert OmegaConf.is_readonly(masked.hydra) and OmegaConf.is_readonly(cfg.hydra)
    assert HydraConfig.get().job.name == hydras.hydra.job.name
    fast, slow = fastconfig.copy_config(masked), copy.deepcopy(masked)
    assert fast.hydra._get_parent() is fast and slow.hydra._get_parent() is slow
    assert OmegaConf.to_yaml(fast) == OmegaConf.to_yaml(slow)


ENTRY_POINTS = ["lossbench", "lossbench.bench", "lossbench.check", "lossbench.compare", "lossbench.doctor",
                "lossbench.report", "lossbench.studies", "lossbench.tune"]


def test_the_entry_points_are_all_listed() -> None:
    found = {f"lossbench.{p.stem}" for p in (ROOT / "lossbench").glob("*.py")
             if 'if __name__ == "__main__"' in p.read_text() and p.stem != "__main__"}
    assert found | {"lossbench"} == set(ENTRY_POINTS)


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_help_imports_neither_torch_nor_scikit_learn(module: str) -> None:
    proc = run("-X", "importtime", "-m", module, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage" in proc.stdout.lower() or "lossbench" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "hydra" in imported or module != "lossbench"  # importtime's report was read
    assert not {m for m in imported if m.split(".")[0] in ("torch", "sklearn", "tensorboard")}, module
