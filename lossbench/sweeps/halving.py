"""Successive halving over the learning rate inside a stack: the prune hook `train.fit` calls after each
evaluation (`train.Prune`), given to the stacked launcher as ``hydra.launcher.halving_rungs`` and used by
``python -m lossbench.tune``."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from typing import Any

from lossbench.config import LOWER_IS_BETTER, flatten, keys

# Config keys that do not tell methods apart: a method is everything else (the seeds and the lr compete within it)
NOT_METHOD = (*keys.keys_with(keys.Role.REPLICATE), "optim.lr")


def method_key(resolved: dict) -> str:
    """The method a run belongs to: its config without seeds, learning rate and bookkeeping keys."""
    return json.dumps({k: v for k, v in flatten(resolved).items() if k not in NOT_METHOD}, sort_keys=True, default=str)


def rung_steps(rungs: Sequence[float], max_steps: int, eval_every: int) -> list[int]:
    """The evaluation steps nearest each rung's fraction of the run (halving reads evaluations only)."""
    steps = {max(eval_every, int(r * max_steps / eval_every + 0.5) * eval_every) for r in rungs}  # half up
    return sorted(s for s in steps if s < max_steps)


def signed(metric: str, value: Any) -> float:
    """A validation value as 'higher is better' (-inf when missing or not finite: infeasible)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return -math.inf
    return -float(value) if metric in LOWER_IS_BETTER else float(value)


class Halving:
    """Successive halving over the learning rate inside a stack (train.fit's prune hook).

    At each rung step, the running members are grouped by method (method_key); within a method, each learning rate
    is scored by the mean over its seeds of the best value so far of the member's ``objective_metric``, a *validation*
    metric (config.METRIC_CHOICES), and the worse half of the learning rates (floor(n/2) of n) end as 'pruned'. A
    learning rate one of whose seeds diverged or was pruned before counts as infeasible (ranked last)."""

    def __init__(self, rungs: Sequence[float]):
        self.rungs = tuple(float(r) for r in rungs)

    def __call__(self, step: int, active: list, members: list) -> list[int]:
        m0 = active[0]
        if step not in rung_steps(self.rungs, m0.max_steps, int(m0.cfg.trainer.eval_every)):
            return []
        by_method: dict[str, dict[float, list]] = {}
        for m in members:
            by_method.setdefault(method_key(m.resolved), {}).setdefault(float(m.cfg.optim.lr), []).append(m)
        drop: list[int] = []
        index = {id(m): k for k, m in enumerate(active)}
        for lrs in by_method.values():
            alive = {lr: ms for lr, ms in lrs.items() if any(m.status == "running" for m in ms)}
            if len(alive) < 2:
                continue
            ranked = sorted(alive, key=lambda lr: -self.score(alive[lr]))  # stable: ties keep the grid's order
            for lr in ranked[len(alive) - len(alive) // 2:]:
                drop += [index[id(m)] for m in alive[lr] if m.status == "running" and id(m) in index]
        return sorted(drop)

    @staticmethod
    def score(members: list) -> float:
        if any(m.status != "running" for m in members):  # a diverged seed: infeasible
            return -math.inf
        metric = members[0].cfg.objective_metric
        return statistics.fmean(signed(metric, m.best.get(metric)) for m in members)
