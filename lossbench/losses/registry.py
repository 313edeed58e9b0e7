"""One registration per loss: a :class:`LossSpec` says everything the rest of lossbench needs to know about it.

    register(LossSpec(name="focal", cls="lossbench.losses.imbalance:Focal", schema=FocalLoss,
                      natural_head="sigmoid", color="#882255", ranges={"gamma": Range(0)}, ...))

From the specs derive: the config schema of each ``loss=<name>`` option (lossbench.config.schema.SCHEMAS["loss"], stored
in Hydra's ConfigStore by :func:`register`), the choices of ``loss.name``, the natural head, the valid and refused
(head, loss) pairs with the reason, the multi-label pairs, the ranges of the loss keys (per loss: two losses may
give one key name different ranges), the loss's own cross-key rules, its plot colour, and the facts that other
modules branch on (a teacher, binary tasks only, ...). :func:`lossbench.losses.build` turns a config into the
class's plain arguments. The built-in losses are registered in lossbench/losses/catalog.py.

This module imports neither torch nor the loss classes: validation and reports read the specs without torch.
A built-in spec names its class as ``"module:Class"`` (imported when the loss is built); a loss defined elsewhere
may pass the class itself.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from lossbench.values import INT64_MAX, NON_NEGATIVE_INT, Range

HEADS = ("sigmoid", "softmax")


def n_outputs(head: str, n_classes: int, multilabel: bool = False) -> int:
    """The model's outputs K: one per class, except a binary sigmoid head (1 unit); a multi-label task has one per
    label. The head's rule, read by the model's output layer and by every loss."""
    return 1 if head == "sigmoid" and n_classes == 2 and not multilabel else n_classes


# --- the keys every loss has: the schema families a loss's own schema subclasses ----------------------------------
@dataclass
class Loss:
    """The keys every loss has."""

    name: str = MISSING
    pos_weight: Any = MISSING  # null | auto | sqrt_auto | a number
    class_weight: Any = MISSING  # null | inverse | effective | a list of numbers
    beta: float = MISSING
    label_smoothing: float = MISSING
    reduction: str = MISSING


@dataclass
class SoftmaxHeadLoss(Loss):
    """Losses that can run on a softmax head: deferred re-weighting and post-hoc logit adjustment."""

    drw_step: int | None = MISSING
    posthoc_tau: float | None = MISSING


@dataclass
class SoftmaxLoss(Loss):
    """Losses on class indices (CrossEntropyLoss, NLLLoss)."""

    ignore_index: int = MISSING


@dataclass
class ClassIndexLoss(SoftmaxLoss, SoftmaxHeadLoss):
    """ce, nll, nll_manual: class-index losses, with deferred re-weighting and post-hoc logit adjustment."""


# The ranges of the keys above (loss.<key>); a loss's own keys have theirs in its spec.
BASE_RANGES: dict[str, Range] = {
    "beta": Range(0, 1, lo_open=True, hi_open=True),
    "label_smoothing": Range(0, 1, hi_open=True),
    "ignore_index": Range(-INT64_MAX - 1, INT64_MAX),
    "drw_step": NON_NEGATIVE_INT,
    "posthoc_tau": Range(0),
}


@dataclass(frozen=True)
class LossSpec:
    """Everything about one loss that is not its formula (that is its class)."""

    name: str  # loss=<name>: configs/loss/<name>.yaml, whose defaults list names /schema/loss/<name>
    cls: type | str  # the nn.Module, or "module:Class" (imported when built)
    schema: type  # the dataclass typing its config keys (a subclass of Loss)
    natural_head: str  # the head used when head=null
    refuses: Mapping[str, str] = field(default_factory=dict)  # head -> why that head cannot train this loss
    multilabel: tuple[str, ...] = ()  # heads on which it takes multi-hot targets (data.task=multilabel)
    not_multilabel: Mapping[str, str] = field(default_factory=dict)  # head -> why not multi-label, where worth saying
    color: str | None = None  # its colour in every plot (None: one picked from the name)
    ranges: Mapping[str, Range] = field(default_factory=dict)  # its own number keys (loss.<key>): their ranges
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # its own string keys: their valid values
    check: Callable[[Any, str], None] | None = None  # its cross-key rules: check(cfg, head) raises ConfigError
    teacher: bool = False  # its targets are a teacher run's logits packed with the labels (loss.teacher)
    binary_only: bool = False  # single-label binary tasks only
    skips_unlabelled: bool = True  # skips samples marked ignore_index (data.unlabeled_frac)
    soft_targets: bool = False  # takes probability targets (data.soft_labels)
    cuda_autocast: bool = True  # may run under CUDA autocast (trainer.precision=bf16|fp16)
    bad_example: bool = False  # a pitfall kept for comparison, not a loss to recommend

    @property
    def heads(self) -> tuple[str, ...]:
        """The heads it trains on."""
        return tuple(h for h in HEADS if h not in self.refuses)

    def range_of(self, key: str) -> Range | None:
        """The range of loss.<key> for this loss (its own, else the one every loss shares)."""
        return self.ranges.get(key, BASE_RANGES.get(key))

    def load(self) -> type:
        """The loss class (imported on first use)."""
        if isinstance(self.cls, str):
            module, _, name = self.cls.partition(":")
            return getattr(importlib.import_module(module), name)
        return self.cls


_SPECS: dict[str, LossSpec] = {}
# name -> schema, in registration order; lossbench.config.schema.SCHEMAS["loss"] is this dict (it follows registrations)
SCHEMAS: dict[str, type] = {}


def register(spec: LossSpec) -> LossSpec:
    """Add a loss: its spec to the tables, its schema to Hydra's ConfigStore as /schema/loss/<name>. A name can be
    registered once (again with an equal spec: a module imported twice)."""
    if _SPECS.get(spec.name, spec) != spec:
        raise ValueError(f"loss {spec.name!r} is registered already")
    if spec.natural_head not in spec.heads:
        raise ValueError(f"loss {spec.name!r}: natural head {spec.natural_head!r} is not one of its heads {spec.heads}")
    if not set(spec.multilabel) <= set(spec.heads) or set(spec.refuses) - set(HEADS):
        raise ValueError(f"loss {spec.name!r}: unknown or refused heads in multilabel/refuses")
    if not dataclasses.is_dataclass(spec.schema) or not issubclass(spec.schema, Loss):
        raise ValueError(f"loss {spec.name!r}: schema must be a dataclass subclassing {__name__}.Loss")
    unknown = {*spec.ranges, *spec.choices} - {f.name for f in dataclasses.fields(spec.schema)}
    if unknown:
        raise ValueError(f"loss {spec.name!r}: ranges or choices for keys its schema lacks: {sorted(unknown)}")
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="schema/loss", name=spec.name, node=spec.schema)  # lossbench.config.schema.GROUP
    _SPECS[spec.name] = spec
    SCHEMAS[spec.name] = spec.schema
    return spec


def unregister(name: str) -> None:
    """Remove a loss from the tables (tests; its schema stays in the ConfigStore, unreachable without its YAML)."""
    _SPECS.pop(name, None)
    SCHEMAS.pop(name, None)


def get(name: str) -> LossSpec:
    return _SPECS[name]


def names() -> tuple[str, ...]:
    """Every loss.name, in registration order."""
    return tuple(_SPECS)


def specs() -> tuple[LossSpec, ...]:
    return tuple(_SPECS.values())


def natural_head(name: str) -> str:
    return _SPECS[name].natural_head


def valid_pairs() -> set[tuple[str, str]]:
    """(head, loss) pairs that train something meaningful."""
    return {(h, s.name) for s in _SPECS.values() for h in s.heads}


def why_invalid(head: str, name: str) -> str | None:
    return _SPECS[name].refuses.get(head) if name in _SPECS else None


def multilabel_pairs() -> set[tuple[str, str]]:
    """(head, loss) pairs valid on multi-label tasks."""
    return {(h, s.name) for s in _SPECS.values() for h in s.multilabel}


def why_not_multilabel(head: str, name: str) -> str | None:
    s = _SPECS.get(name)
    return None if s is None else s.not_multilabel.get(head)


def colors() -> dict[str, str]:
    """loss name -> its plot colour (the losses that have one)."""
    return {s.name: s.color for s in _SPECS.values() if s.color is not None}
