"""The losses under study: one class each (lossbench.losses.basic, asymmetric, distillation, imbalance, auc, on
the shared base lossbench.losses.base) and one registration each (lossbench.losses.catalog, through
lossbench.losses.registry). ``build`` (lossbench.losses.factory) turns a run's loss config into a loss.

Importing this package imports neither torch nor the classes (validation reads the registry without them); the
names below are imported on first use: ``from lossbench.losses import build, Objective``.
"""

from __future__ import annotations

import importlib

from lossbench.losses import catalog as _catalog  # noqa: F401 (registers the built-in losses)
from lossbench.losses.registry import LossSpec, register

_LAZY = {  # name -> the module that defines it
    "build": "factory", "weights": "factory",
    "Objective": "base", "BCEFamily": "base", "ClassIndexFamily": "base", "CLAMP": "base", "log1mexp": "base",
    "log1m_softmax": "base", "head_probabilities": "base", "log_prior": "base", "normalised": "base", "softmax_reduce": "base",
    "BCE": "basic", "BCEWithLogits": "basic", "ManualBCE": "basic", "CrossEntropy": "basic", "NLL": "basic",
    "ManualNLL": "basic", "Asymmetric": "asymmetric",
    "Distillation": "distillation", "DistillationKLMean": "distillation", "DistillationProbInput": "distillation",
    "DistillationNoT2": "distillation", "pack_teacher": "distillation", "unpack_teacher": "distillation",
    "Focal": "imbalance", "LDAM": "imbalance", "LogitAdjusted": "imbalance", "BalancedSoftmax": "imbalance",
    "Poly1": "imbalance", "ClippedBCE": "imbalance", "DRW": "imbalance",
    "AUCMargin": "auc", "AUCPairwise": "auc",
}
__all__ = ["LossSpec", "register", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
