"""lossbench.config.keys: every config key has a role, and the five places that read roles agree with the table."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lossbench.analysis import runs
from lossbench.config import flatten, keys
from lossbench.config.keys import Role
from lossbench.config.schema import leaves
from lossbench.engine import teacher
from lossbench.runs import overrides

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRESETS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("key", sorted({k for _, _, k, _ in leaves()}))
def test_every_schema_key_has_a_role(key):
    assert keys.role(key) is not None, f"{key} has no entry in lossbench.config.keys.ROLES: give it its role there"


@pytest.mark.parametrize("preset", PRESETS)
def test_every_key_of_every_preset_has_a_role(preset):
    """Keys a preset adds in YAML only (without a schema field) need a role too."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = compose("config", overrides=[f"experiment={preset}"])
    resolved = OmegaConf.to_container(cfg, resolve=False)
    missing = [k for k in flatten(resolved) if keys.role(k) is None]
    assert not missing, f"experiment={preset}: no role for {missing}"


def test_a_key_missing_from_the_table_is_caught():
    assert keys.role("trainer.no_such_key") is None and keys.role("no_such_root_key") is None
    assert keys.role("loss.no_such_key") == Role.STACK  # a group listed as a whole covers its new keys


def test_entries_override_their_group():
    assert keys.has("logger.pr_curve", Role.RESUME) and not keys.has("logger.pr_curve", Role.BOOKKEEPING)
    assert keys.has("logger.flush_secs", Role.BOOKKEEPING)


def test_derived_lists_follow_the_table():
    assert set(overrides.BOOKKEEPING) == {k for k, r in keys.ROLES.items() if Role.BOOKKEEPING in r}
    assert runs.IGNORED == {k for k, r in keys.ROLES.items() if Role.REPLICATE in r}
    assert {f"data.{k}" for k in teacher.SAME_TASK} == {k for k, r in keys.ROLES.items() if Role.TASK in r}


def test_roles_are_consistent():
    """Bookkeeping is where or how a job runs: it may change on resume; a replicate key may differ in a stack
    unless it is only about the process (threads); a task key is a data key."""
    for k, r in keys.ROLES.items():
        if Role.BOOKKEEPING in r:
            assert Role.RESUME in r, k
        if Role.TASK in r:
            assert k.startswith("data.") and Role.STACK in r, k
        if Role.REPLICATE in r and k != "trainer.threads":
            assert Role.STACK in r, k


def test_resume_message_names_groups_once():
    listed = keys.listed(Role.RESUME)
    assert "logger.*" in listed and "numerics.*" in listed
    assert not any(k.startswith(("logger.", "numerics.")) and not k.endswith("*") for k in listed)
