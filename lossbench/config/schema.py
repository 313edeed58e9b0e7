"""The type of every config key: Hydra structured configs, one schema per config group option.

The YAML files in configs/ hold the defaults and say what each key means; the dataclasses here hold only
the types (every field is MISSING, so a default lives in one place). Each option's YAML names its schema
first in its defaults list, and Hydra merges the YAML into it:

    # configs/loss/ce.yaml
    defaults:
      - /schema/loss/ce@_here_
      - _self_

so a value of the wrong type, from the command line or a preset, fails while Hydra composes, with the key's
name (`lossbench.config.preflight.preflight` turns that into one `lossbench: error:` line). Ranges, choices and
cross-key rules are checked in `lossbench.config.validate`.

Adding a dataset or a model:
1. a dataclass with its own keys, subclassing the family it belongs to;
2. one line in SCHEMAS: `"<option>": TheSchema`;
3. configs/<group>/<option>.yaml starting with `defaults: [/schema/<group>/<option>@_here_, _self_]`, then the
   keys with their defaults and comments;
4. the range of each new number in `lossbench.config.RANGES` (a test fails for a number without one).

A loss's schema is part of its one registration (lossbench.losses.registry.LossSpec: schema, ranges, heads, ...;
the built-in ones in lossbench/losses/catalog.py), plus configs/loss/<name>.yaml as above.

Types OmegaConf 2.3 supports: int, float, bool, str, `X | None`, `list[X]`. A key that takes values
of several types (pos_weight: null | auto | a number) is `Any` here and checked in config.py.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from lossbench.losses import registry as loss_registry

GROUP = "schema"  # ConfigStore group holding the schemas: /schema/<group>/<option>


@dataclass
class Config:
    """The root: configs/config.yaml, the group nodes, and what presets add at the top."""

    seed: int = MISSING
    head: str | None = MISSING
    objective_metric: str = MISSING
    data: Any = MISSING
    model: Any = MISSING
    loss: Any = MISSING
    optim: Any = MISSING
    trainer: Any = MISSING
    numerics: Any = MISSING
    logger: Any = MISSING
    # configs/experiment/*.yaml: the study's size knobs (study.steps, study.hidden, ...), interpolated into
    # the keys above, where their types are checked.
    study: Any = None


# --- data ---------------------------------------------------------------------------------------------------


@dataclass
class SyntheticData:
    name: str = MISSING
    n_classes: int = MISSING
    n_features: int = MISSING
    n_train: int = MISSING
    n_val: int = MISSING
    separation: float = MISSING
    scale: float = MISSING
    imbalance_ratio: float | None = MISSING
    imbalance_profile: str = MISSING
    balanced_val: bool = MISSING
    task_seed: int = MISSING
    seed: int = MISSING
    task: str = MISSING
    n_labels: int = MISSING  # task=multilabel: make_multilabel_classification's knobs
    length: int = MISSING
    allow_unlabeled: bool = MISSING
    label_noise: float = MISSING  # training labels
    soft_labels: str | None = MISSING
    unlabeled_frac: float = MISSING


@dataclass
class MnistData:
    name: str = MISSING
    root: str | None = MISSING
    download: bool = MISSING
    task: str = MISSING
    positive_classes: list[int] = MISSING
    imbalance_ratio: float | None = MISSING
    imbalance_profile: str = MISSING
    n_train: int | None = MISSING
    n_val: int | None = MISSING
    scale: float = MISSING
    seed: int = MISSING
    digits_per_image: list[int] = MISSING  # task=multilabel: digit grids
    grid: int = MISSING
    label_noise: float = MISSING  # training labels
    soft_labels: str | None = MISSING
    unlabeled_frac: float = MISSING
    jitter: int = MISSING  # random shifts of the training images, up to this many pixels (0 = off)


@dataclass
class RealData:
    """Real data (lossbench/data/real.py): the named sets breast_cancer, digits, yeast and shuttle as they are."""

    name: str = MISSING
    task: str | None = MISSING  # null = inferred from the labels
    n_train: int | None = MISSING
    n_val: int | None = MISSING
    val_frac: float = MISSING
    test_frac: float = MISSING
    standardize: bool = MISSING
    scale: float = MISSING
    imbalance_ratio: float | None = MISSING
    imbalance_profile: str = MISSING
    task_seed: int = MISSING
    seed: int = MISSING
    label_noise: float = MISSING  # training labels
    soft_labels: str | None = MISSING
    unlabeled_frac: float = MISSING


@dataclass
class ArraysData(RealData):
    """data=arrays: the user's own file."""

    path: str | None = MISSING
    label: Any = MISSING  # a column name or a list of them (CSV, parquet)


@dataclass
class OpenmlData(RealData):
    """data=openml: a dataset from OpenML through scikit-learn's fetch_openml."""

    root: str | None = MISSING
    dataset: str | None = MISSING
    id: int | None = MISSING
    version: int | None = MISSING
    label: Any = MISSING  # null (OpenML's default target) | a column name | a list of them (multi-label)


# --- model --------------------------------------------------------------------------------------------------


@dataclass
class LinearModel:
    name: str = MISSING
    init_scale: float = MISSING
    head_bias: Any = MISSING  # null | prior | a number
    cosine_head: bool = MISSING
    init_from: str | None = MISSING  # a run directory whose checkpoint's weights start this model


@dataclass
class MlpModel(LinearModel):
    hidden: list[int] = MISSING
    dropout: float = MISSING  # after each hidden layer (0 = off)


@dataclass
class CnnModel(LinearModel):
    channels: list[int] = MISSING
    hidden: int = MISSING
    dropout: float = MISSING  # after the fully connected hidden layer (0 = off)


# --- optimiser, trainer, numerics, logger -------------------------------------------------------------------


@dataclass
class Optim:
    name: str = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    momentum: float = MISSING


@dataclass
class PesgOptim(Optim):
    """optim=pesg (LibAUC's PESG, SGD mode)."""

    epoch_decay: float = MISSING
    clip_value: float = MISSING
    decay_steps: list[int] = MISSING
    decay_factor: float = MISSING


@dataclass
class Trainer:
    max_steps: int = MISSING
    epochs: int | None = MISSING
    batch_size: int = MISSING
    eval_every: int = MISSING
    log_every: int = MISSING
    device: str = MISSING
    precision: str = MISSING
    compile: bool = MISSING
    eval_batch_size: int = MISSING
    target_metric: str | None = MISSING
    target_value: float = MISSING
    on_nonfinite: str = MISSING
    ckpt_every: int = MISSING
    resume: Any = MISSING  # false | true | a run directory
    skip_completed: bool = MISSING
    deterministic: bool = MISSING
    threads: int | None = MISSING
    sync_debug: bool = MISSING
    pos_share: float | None = MISSING  # share of positives in each training batch (binary tasks); null = off


@dataclass
class Numerics:
    enabled: bool = MISSING
    every: int = MISSING
    hist_every: int = MISSING


@dataclass
class Logger:
    enabled: bool = MISSING
    pr_curve: bool = MISSING
    flush_secs: int = MISSING


# group -> option -> schema; configs/<group>/<option>.yaml (or the option it extends) names /schema/<group>/<option>.
SCHEMAS: dict[str, dict[str, type]] = {
    "data": {"synthetic": SyntheticData, "imbalanced": SyntheticData, "longtail": SyntheticData, "mnist": MnistData,
             "arrays": ArraysData, "openml": OpenmlData, **dict.fromkeys(("breast_cancer", "digits", "yeast", "shuttle"),
                                                                          RealData)},
    "model": {"linear": LinearModel, "mlp": MlpModel, "cnn": CnnModel},
    "loss": loss_registry.SCHEMAS,  # each loss's registration (lossbench/losses/catalog.py) names its schema
    "optim": {"sgd": Optim, "adam": Optim, "adamw": Optim, "pesg": PesgOptim},
    "trainer": {"default": Trainer},
    "numerics": {"default": Numerics, "off": Numerics},
    "logger": {"tensorboard": Logger},
}


def register() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent; lossbench's import calls it)."""
    cs = ConfigStore.instance()
    cs.store(group=GROUP, name="config", node=Config)
    for group, options in SCHEMAS.items():
        for option, node in options.items():
            cs.store(group=f"{GROUP}/{group}", name=option, node=node)


def field_types(schema: type) -> dict[str, Any]:
    """{field name: its annotation} (string annotations resolved)."""
    hints = typing.get_type_hints(schema)
    return {f.name: hints[f.name] for f in dataclasses.fields(schema)}


def leaves() -> list[tuple[str, str, str, Any]]:
    """Every key a user can set: (group, option, dotted key, type); group '' for the root's own keys."""
    out = [("", "", name, t) for name, t in field_types(Config).items() if t is not Any]
    for group, options in SCHEMAS.items():
        for option, schema in options.items():
            out += [(group, option, f"{group}.{name}", t) for name, t in field_types(schema).items()]
    return out


def integer_keys() -> frozenset[str]:
    """The keys whose values (or list entries) are integers, in any option."""
    return _integer_keys(len(loss_registry.SCHEMAS))  # again after a loss is registered


@functools.cache
def _integer_keys(n_losses: int) -> frozenset[str]:
    def element(t: Any) -> Any:
        t = next((a for a in typing.get_args(t) if a is not type(None)), t) if type(None) in typing.get_args(t) else t
        return typing.get_args(t)[0] if typing.get_origin(t) is list else t

    return frozenset(key for _, _, key, t in leaves() if element(t) is int)


def describe(t: Any) -> str:
    """An annotation in words: 'an integer', 'a list of integers or null', ..."""
    args = typing.get_args(t)
    if typing.get_origin(t) in (typing.Union, types.UnionType) and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        return f"{describe(inner)} or null"
    if typing.get_origin(t) is list:
        return f"a list of {_PLURAL.get(args[0], 'values') if args else 'values'}"
    return _WORDS.get(t, "a value")


_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_PLURAL = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}
