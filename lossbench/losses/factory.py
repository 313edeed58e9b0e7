"""The one place where a loss's config becomes its class's plain arguments: :func:`build`."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from lossbench.errors import ConfigError
from lossbench.losses import registry
from lossbench.losses.base import Objective
from lossbench.losses.imbalance import DRW


def weights(lc: Mapping, head: str, counts: torch.Tensor, n_labelled: torch.Tensor | None = None,
            multilabel: bool = False) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(pos_weight of shape (K,), class_weight of shape (C,)) from the config's pos_weight, class_weight and beta
    and the training split's labelled class counts (multi-label: positives per label, with n_labelled the
    labelled entries per label).

    ``pos_weight``: ``auto`` = n_neg / n_pos per output, ``sqrt_auto`` = its square root, or a number.
    ``class_weight``: ``inverse`` = N / (C n_c); ``effective`` = (1 - beta) / (1 - beta^n_c) normalised to sum
    to C (Cui et al. 2019); or one weight per class."""
    c = len(counts)
    counts = counts.double()
    n = counts.sum() if n_labelled is None else n_labelled.double()
    pos_weight, pw = None, lc["pos_weight"]
    if pw is not None:
        k = 1 if c == 2 and not multilabel else c
        pos = counts[1:] if k == 1 else counts
        if pw in ("auto", "sqrt_auto"):
            if (pos == 0).any():
                raise ConfigError(f"loss.pos_weight={pw} needs positives of every output in the training split.")
            pos_weight = (n - pos) / pos
            if pw == "sqrt_auto":  # a milder correction: sqrt(n_neg / n_pos)
                pos_weight = pos_weight.sqrt()
        else:
            pos_weight = torch.full((k,), float(pw), dtype=torch.float64)
    class_weight, cw = None, lc["class_weight"]
    if cw is not None:
        if cw in ("inverse", "effective") and (counts == 0).any():
            raise ConfigError(f"loss.class_weight={cw} needs every class in the training split: counts {counts.tolist()}.")
        if cw == "inverse":
            class_weight = n / (c * counts)
        elif cw == "effective":
            beta = lc["beta"]
            w = (1 - beta) / (1 - torch.tensor(beta, dtype=torch.float64) ** counts)
            class_weight = w / w.sum() * c
        else:
            if len(cw) != c:
                raise ConfigError(
                    f"loss.class_weight has {len(cw)} entries but the data has {c} classes: give one weight per "
                    f"class, e.g. loss.class_weight=[{','.join(['1.0'] * c)}]."
                )
            class_weight = torch.tensor(list(cw), dtype=torch.float64)
            if class_weight.sum() <= 0:
                raise ConfigError("loss.class_weight must have at least one positive entry.")
    f32 = lambda w: None if w is None else w.float()  # noqa: E731
    return f32(pos_weight), f32(class_weight)


def build(lc: DictConfig, head: str, n_classes: int, counts: torch.Tensor, n_labelled: torch.Tensor | None = None,
          *, multilabel: bool = False, partial: bool = False) -> Objective | DRW:
    """The run's objective from its loss config (``loss.*``), head and the training split's labelled class counts
    and labelled samples (multi-label: positives and labelled entries per label; see data.Dataset)."""
    spec = registry.get(lc.name)
    args = dict(lc=lc, spec=spec, head=head, n_classes=n_classes, counts=counts, n_labelled=n_labelled,
                multilabel=multilabel, partial=partial)
    if lc.get("drw_step") is not None:  # deferred re-weighting: two objectives, switched by begin_step
        return DRW(_objective(class_weight=None, **args),
                   _objective(class_weight=lc.class_weight or "effective", **args), int(lc.drw_step))
    return _objective(class_weight=lc.class_weight, **args)


def _objective(lc: DictConfig, spec: registry.LossSpec, class_weight: Any, head: str, n_classes: int,
               counts: torch.Tensor, n_labelled: torch.Tensor | None, multilabel: bool, partial: bool) -> Objective:
    pos_weight, class_weight = weights({"pos_weight": lc.pos_weight, "class_weight": class_weight,
                                        "beta": lc.get("beta")},
                                       head, counts, n_labelled, multilabel)
    if class_weight is not None and len(class_weight) != n_classes:
        raise ConfigError(f"loss.class_weight needs {n_classes} entries.")
    cls = spec.load()
    own = {k: _plain(lc[k]) for k in _own_keys(spec.schema) if k in _parameters(cls) and k in lc}
    obj = cls(**own, head=head, n_classes=n_classes, pos_weight=pos_weight, class_weight=class_weight,
              label_smoothing=float(lc.label_smoothing), reduction=lc.reduction,
              ignore_index=int(lc.get("ignore_index", -100)), multilabel=multilabel, partial=partial,
              posthoc_tau=lc.get("posthoc_tau"), counts=counts)
    obj.name = spec.name
    return obj


@functools.cache
def _own_keys(schema: type) -> tuple[str, ...]:
    """A loss's own keys: its schema's fields beyond the ones every loss has (the base class's arguments)."""
    common = {f.name for f in dataclasses.fields(registry.ClassIndexLoss)}
    return tuple(f.name for f in dataclasses.fields(schema) if f.name not in common)


@functools.cache
def _parameters(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls).parameters)


def _plain(value: Any) -> Any:
    return OmegaConf.to_object(value) if isinstance(value, (DictConfig, ListConfig)) else value
