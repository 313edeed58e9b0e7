"""Every key of every config group has a type (lossbench/config/schema.py) and a rule (lossbench/config/__init__.py), and a bad
value for any of them is refused the way the CLI promises: exit 2, one line naming the key, no traceback,
nothing created.

The keys are enumerated from the schema, so a key added there is drawn here without editing this file; the
coverage tests fail for a number without a range or a string without a rule. Bad values are drawn with
Hypothesis by category: a wrong type, out of range (non-finite and huge included), not one of the choices,
empty. Each draw runs `python -m lossbench` in this process (lossbench.__main__.cli, the same code path);
LOSSBENCH_HYPOTHESIS_EXAMPLES sets the draws per key and category (default 2).
"""

from __future__ import annotations

import math
import os
import typing
import uuid
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from lossbench import config
from lossbench.config import Range, preflight, schema
from lossbench.losses import registry
from tests.conftest import CONFIGS
from tests.inprocess import run_cli

EXAMPLES = int(os.environ.get("LOSSBENCH_HYPOTHESIS_EXAMPLES", "2"))
# Overrides an option needs to be valid at all (the bad value is then the only thing wrong).
NEEDS = {("model", "cnn"): ["data=mnist"], ("data", "arrays"): ["data.path=x.npz"], ("data", "openml"): ["data.dataset=iris"],
         ("loss", "auc_margin"): ["optim=pesg"]}
FAST = ["trainer.max_steps=5", "trainer.eval_every=5", "logger.enabled=false"]
# Bad values of the keys typed Any (several types valid), as command-line values.
ANY_BAD = {
    "model.head_bias": ["'abc'", "''", "nan", "inf", "-inf", "[1]", "true", "{a:1}"],
    "loss.pos_weight": ["0", "-1", "nan", "inf", "'abc'", "''", "[1]", "true", "{a:1}"],
    "loss.class_weight": ["'balanced'", "[]", "[-1,1]", "[nan,1]", "[inf,1]", "[0,0]", "3", "['a']", "true", "''"],
    "trainer.resume": ["5", "1.5", "[1]", "''", "{a:1}", "null"],
    "data.label": ["[]", "''", "5", "[1]", "true", "{a:1}", "[a,'']"],
}
FREE_BAD = {"trainer.device": ["'tpu'", "'gpu'", "'cuda:x'", "''"]}
EMPTY_OK = {"model.hidden", "optim.decay_steps"}  # an MLP without hidden layers is the linear model; PESG without decays
BOOL_WORDS = {"y", "yes", "on", "true", "n", "no", "off", "false", "1", "0"}
NUMBER_WORDS = {"nan", "inf", "infinity"}


def keys() -> list[tuple[str, str, str, Any]]:
    """(group, option, key, type), once per (key, schema): options sharing a schema share its keys."""
    seen, out = set(), []
    for group, option, key, t in schema.leaves():
        node = schema.SCHEMAS[group][option] if group else schema.Config
        if (key, node) not in seen:
            seen.add((key, node))
            out.append((group, option, key, t))
    return out


def base_type(t: Any) -> tuple[Any, bool]:
    """(the type without Optional, whether null is allowed)."""
    args = typing.get_args(t)
    if type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return t, False


# --- values written as on the command line ------------------------------------------------------------------


def arg(value: Any) -> str:
    """A Python value as a Hydra override value (strings quoted, so they stay strings)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ",".join(arg(v) for v in value) + "]"
    return f"'{value}'"


words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-/.", min_size=0, max_size=12)
non_numeric_words = words.filter(lambda s: s.lower() not in NUMBER_WORDS | BOOL_WORDS and not s.strip(".").isdigit())
fractions = st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])


def wrong_type(t: Any) -> st.SearchStrategy[str]:
    """Values that are not of type t (null only where t is not Optional)."""
    inner, optional = base_type(t)
    null = [st.just("null")] if not optional else []
    lists = st.lists(st.integers(-5, 5), min_size=0, max_size=3).map(arg)
    if inner is int:
        return st.one_of(*null, fractions.map(arg), non_finite.map(arg), non_numeric_words.map(arg), lists,
                         st.booleans().map(arg))
    if inner is float:
        return st.one_of(*null, non_numeric_words.map(arg), lists, st.booleans().map(arg))
    if inner is bool:
        return st.one_of(*null, non_numeric_words.map(arg), fractions.map(arg), lists)
    if inner is str:
        return st.one_of(*null, lists, st.just("{a:1}"))
    if typing.get_origin(inner) is list:
        return st.one_of(*null, st.integers(-5, 5).map(arg), non_numeric_words.map(arg),
                         st.lists(non_numeric_words, min_size=1, max_size=3).map(arg),
                         st.lists(fractions, min_size=1, max_size=3).map(arg), st.just("[null]"))
    raise AssertionError(f"no wrong-type values for {t}")


def out_of_range(rng: Range, integer: bool) -> st.SearchStrategy:
    """Numbers outside rng: below, above (huge past int64 for integers), non-finite for floats."""
    parts = []
    if rng.lo is not None:
        below = st.integers(max_value=int(rng.lo) - (0 if rng.lo_open else 1)) if integer else (
            st.floats(max_value=rng.lo, exclude_max=not rng.lo_open, allow_nan=False, allow_infinity=False))
        parts.append(below)
    if rng.hi is not None:
        parts.append(st.integers(min_value=int(rng.hi) + (0 if rng.hi_open else 1), max_value=10**30) if integer else
                     st.floats(min_value=rng.hi, exclude_min=not rng.hi_open, allow_nan=False, allow_infinity=False))
    if not integer:
        parts.append(non_finite)
    return st.one_of(*parts)


def bad_values(key: str, t: Any, option: str | None = None) -> dict[str, st.SearchStrategy[str]]:
    """{category: strategy} of the bad values of one key (loss keys: of loss=<option>, whose range it is)."""
    inner, _ = base_type(t)
    out = {} if t is Any else {"type": wrong_type(t)}
    if (rng := config.range_of(key, option)) is not None:
        element = typing.get_args(inner)[0] if typing.get_origin(inner) is list else inner
        values = out_of_range(rng, element is int)
        out["range"] = values.map(lambda v: arg([v])) if typing.get_origin(inner) is list else values.map(arg)
    if key in config.CHOICES:
        valid = set(config.CHOICES[key])
        out["choice"] = words.filter(lambda s: s not in valid).map(arg)
    if key in ANY_BAD or key in FREE_BAD:
        out["value"] = st.sampled_from(ANY_BAD.get(key) or FREE_BAD[key])
    if typing.get_origin(inner) is list and key not in EMPTY_OK:
        out["empty"] = st.just("[]")
    return out


def cases() -> list:
    """One test case per (key, category of bad value)."""
    return [pytest.param(group, option, key, category, strategy, id=f"{key}-{category}")
            for group, option, key, t in keys() for category, strategy in bad_values(key, t, option).items()]


# --- coverage: every key has a type and a rule ----------------------------------------------------------------


def test_every_option_of_every_group_is_typed_by_its_schema():
    assert (set(config.DATASETS), set(config.MODELS), set(registry.names()), set(config.OPTIMS)) == tuple(
        set(schema.SCHEMAS[g]) for g in ("data", "model", "loss", "optim"))
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        for group, options in schema.SCHEMAS.items():
            files = {p.stem for p in (CONFIGS / group).glob("*.yaml")}
            assert files == set(options), f"configs/{group}/*.yaml vs schema.SCHEMAS[{group!r}]"
            for option, node in options.items():
                cfg = compose("config", overrides=[f"{group}={option}", *NEEDS.get((group, option), [])])
                assert OmegaConf.get_type(cfg) is schema.Config
                assert OmegaConf.get_type(cfg[group]) is node, (group, option)
                assert not OmegaConf.missing_keys(cfg), f"{group}={option} leaves keys without a default"
                config.validate(cfg)  # the defaults are valid


def test_every_number_has_a_range_and_every_string_a_rule():
    for _, option, key, t in keys():
        inner, _ = base_type(t)
        element = typing.get_args(inner)[0] if typing.get_origin(inner) is list else inner
        rng = config.range_of(key, option)
        if element in (int, float):
            assert rng is not None, f"{key} ({t}) has no range in lossbench.config.RANGES or its loss's registration"
        elif element is str:
            assert key in config.CHOICES or key in config.FREE_STRINGS, f"{key}: add it to CHOICES or FREE_STRINGS"
        elif t is Any:
            assert key in ANY_BAD, f"{key} takes values of several types: list bad ones in ANY_BAD"
        assert rng is not None or key in config.CHOICES or key in ANY_BAD or key in config.FREE_STRINGS \
            or element is bool, f"{key}: no rule beyond its type"
    assert set(config.RANGES) <= {k for _, _, k, _ in keys()}, "a range for a key that does not exist"


# --- the property: any bad value is refused in one line, before anything is created --------------------------


@pytest.mark.parametrize(("group", "option", "key", "category", "values"), cases())
def test_a_bad_value_of_any_key_is_refused_in_one_line(tmp_path_factory, group, option, key, category, values):
    root = tmp_path_factory.mktemp("runs")
    base = ([f"{group}={option}"] if group else []) + NEEDS.get((group, option), [])

    @settings(max_examples=EXAMPLES, deadline=None, database=None)
    @given(values)
    def refused(value: str) -> None:
        run_dir = root / uuid.uuid4().hex
        r = run_cli(*FAST, *base, f"{key}={value}", f"hydra.run.dir={run_dir}")
        where = f"{key}={value}: rc {r.returncode}\n{r.stderr}{r.stdout[-2000:]}"
        assert r.returncode == 2, where
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("lossbench: error: "), where
        assert key in lines[0], where
        assert "Traceback" not in r.stderr + r.stdout, where
        assert not run_dir.exists(), f"{where}\nleft {sorted(p.name for p in run_dir.iterdir())}"

    refused()


def test_the_issue_examples_in_process(tmp_path):
    """Issue 15's examples, each: exit 2, one line naming the key, nothing created."""
    cases = {
        ("model.hidden=[-1]",): "each model.hidden entry must be an integer >= 1, got -1",
        ("model.hidden=abc",): "model.hidden must be a list of integers, got 'abc'",
        ("model.hidden=null",): "model.hidden must be a list of integers, got null",
        ("model.hidden=[0]",): "each model.hidden entry must be an integer >= 1, got 0",
        ("data=mnist", "data.positive_classes=3"): "data.positive_classes must be a list of integers, got 3. "
                                                   "For a list of one, write data.positive_classes=[3]",
        ("data=mnist", "data.positive_classes=[a]"): "data.positive_classes[0] must be an integer, got 'a'",
        ("seed=abc",): "seed must be an integer, got 'abc'",
        ("optim=adam", "optim.momentum=1.5"): "optim.momentum is Adam's beta1 for optim=adam and must be in [0, 1)",
        ("optim=adamw", "optim.momentum=1"): "optim.momentum is Adam's beta1 for optim=adamw",
        ("trainer.target_value=abc",): "trainer.target_value must be a number, got 'abc'",
    }
    for overrides, message in cases.items():
        r = run_cli(*overrides, f"hydra.run.dir={tmp_path / 'run'}")
        assert (r.returncode, r.stderr) == (2, f"lossbench: error: {message}.\n") or (
            r.returncode == 2 and r.stderr.startswith(f"lossbench: error: {message}") and r.stderr.count("\n") == 1
        ), (overrides, r.returncode, r.stderr)
        assert not (tmp_path / "run").exists()


def test_sizes_that_cannot_fit_in_memory_are_refused(tmp_path):
    for overrides, part in {
        ("model.hidden=[1000000000000]",): "model=mlp with model.hidden=[1000000000000] has",
        ("data.n_train=1000000000000000",): "data.n_train=1000000000000000 + data.n_val=5000 samples",
        ("data.n_classes=20000",): "data.n_classes=20000 is more than data.n_train=10000 or data.n_val=5000",
    }.items():
        r = run_cli(*overrides, f"hydra.run.dir={tmp_path / 'run'}")
        assert r.returncode == 2 and part in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_presets_and_sweeps_pass_the_preflight(tmp_path):
    """Every preset composes and validates through the CLI's check; sweep values (the presets' own params,
    -m values, Optuna's intervals) are type-checked there, and a bad one refuses the whole sweep."""
    from lossbench.__main__ import CONFIGS as MAIN_CONFIGS
    from lossbench.__main__ import main

    presets = [f"experiment={p.stem}" for p in (CONFIGS / "experiment").glob("*.yaml")]
    for preset in [*presets, "hparams_search=optuna", "+regime=scale50_fp16", "+heads=softmax_bce"]:
        preflight.preflight([preset], main, MAIN_CONFIGS, "config")
        preflight.preflight(["-m", preset, "seed=0,1"], main, MAIN_CONFIGS, "config")
    r = run_cli("-m", "seed=0,abc", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert r.returncode == 2 and r.stderr == "lossbench: error: seed must be an integer, got 'abc'.\n"
    r = run_cli("hparams_search=optuna", "trainer.batch_size=interval(0.5,8.5)", f"hydra.sweep.dir={tmp_path / 's'}")
    assert r.returncode == 2 and "trainer.batch_size must be an integer, got 0.5" in r.stderr
    r = run_cli("-m", "experiment=saturation", "study.steps=3,x", f"hydra.sweep.dir={tmp_path / 's'}")
    assert r.returncode == 2 and "trainer.max_steps must be an integer, got 'x'" in r.stderr
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "s").exists()


def test_hydra_composition_errors_are_one_line(tmp_path):
    run = f"hydra.run.dir={tmp_path / 'run'}"
    for overrides, message in {
        ("loss=hinge",): "Could not find 'loss/hinge'. Available options in 'loss': asl, auc_margin, auc_pairwise, "
                         "balanced_softmax, bce, bce_clipped, bce_logits, bce_manual, ce, focal, kd, kd_mean, "
                         "kd_no_t2, kd_prob, ldam, logit_adjusted, nll, nll_manual, poly1.",
        ("trainer.max_stpes=5",): "trainer.max_stpes is not a key of trainer (did you mean trainer.max_steps?). "
                                  "Valid keys: batch_size,",
        ("seed=0,1",): "Ambiguous value for argument 'seed=0,1'",
        ("seed=[1",): "Cannot parse the override 'seed=[1'",
        ("hydra/launcher=nope",): "Could not find 'hydra/launcher/nope'. Available options in 'hydra/launcher':",
    }.items():
        r = run_cli(*overrides, run)
        assert r.returncode == 2 and r.stderr.startswith(f"lossbench: error: {message}"), (overrides, r.stderr)
        assert r.stderr.count("\n") == 1 and not (tmp_path / "run").exists()

