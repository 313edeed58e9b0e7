"""Config values in numbers and words: the ``Range`` of a number, and a value as the command line writes it.

Torch-free and Hydra-free, so that both the loss registry (lossbench.losses.registry) and the validation
(lossbench.config) use them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

INT64_MAX = 2**63 - 1  # torch keeps integers (seeds, sizes, steps) in 64 bits


@dataclass(frozen=True)
class Range:
    """An interval of finite numbers; None = unbounded on that side."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, x: float) -> bool:
        return math.isfinite(x) and not (
            (self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)))
            or (self.hi is not None and (x > self.hi or (self.hi_open and x == self.hi)))
        )

    def __str__(self) -> str:
        hi = None if self.hi == INT64_MAX else self.hi  # the int64 cap is said only when it is hit
        if self.lo is not None and hi is not None:
            return f"in {'(' if self.lo_open else '['}{self.lo:g}, {hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if hi is not None:
            return f"{'<' if self.hi_open else '<='} {hi:g}"
        return "finite"


COUNT = Range(1, INT64_MAX)
NON_NEGATIVE_INT = Range(0, INT64_MAX)
POSITIVE = Range(0, lo_open=True)


def show(value: Any) -> str:
    """A value as it is written on the command line: null, true, 'abc', [1, 2]."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return repr(value)
