"""The role of every config key, in one table.

A key's role says what changing it means, and five parts of lossbench read it from here:

- ``STACK``: may differ between the members of one stack (`hydra/launcher=stacked`); runs that differ in any
  other key train in separate stacks (``lossbench.engine.stack.stack_key``).
- ``RESUME``: may change when a run resumes from its checkpoint (how long, how often, where it logs); any
  other change is refused (``lossbench.engine.plan.config_changes``).
- ``BOOKKEEPING``: where or how a job runs, not what it trains: left out of sweep job directory names and
  Hydra's ``override_dirname``, so a rerun finds the same directories (``lossbench.sweeps.sweep``).
- ``REPLICATE``: not a difference between methods: the report pools runs that differ only in these keys
  (seeds, paths, threads) into one group (``lossbench.analysis.report``).
- ``TASK``: defines the inputs and labels; a distillation teacher must share it (``lossbench.engine.teacher``).

A key with none of them (``RUN``) is part of what the run is: equal within a stack, fixed on resume, a
column of its own in the report. Every key a schema declares must be listed (``tests/test_keys.py``), either
by name or, for the groups whose keys all share one role, by its group (``"loss."``).
"""

from __future__ import annotations

import enum


class Role(enum.Flag):
    RUN = 0
    STACK = enum.auto()
    RESUME = enum.auto()
    BOOKKEEPING = enum.auto()
    REPLICATE = enum.auto()
    TASK = enum.auto()


S, R, B, P, T, RUN = Role.STACK, Role.RESUME, Role.BOOKKEEPING, Role.REPLICATE, Role.TASK, Role.RUN
WHERE = S | R | B | P  # paths and resume switches: where a run is, not what it is

ROLES: dict[str, Role] = {
    # groups whose every key has the same role
    "loss.": S,
    "study": S,  # null outside the experiment presets
    "study.": S,  # an experiment preset's size knobs and labels, interpolated into the keys below
    "logger.": S | R,
    "numerics.": R,
    # the root
    "seed": S | P,
    "head": S,
    "objective_metric": S | P,  # what a sweep returns to its sweeper (tuning sets it), not what is trained
    # data: the task it defines, the split sizes and seeds
    "data.name": S,
    "data.task": S | T,
    "data.n_classes": S | T,
    "data.n_features": S | T,
    "data.separation": S | T,
    "data.task_seed": S | T,
    "data.scale": S | T,
    "data.positive_classes": S | T,
    "data.path": S | T,
    "data.label": S | T,
    "data.dataset": S | T,
    "data.id": S | T,
    "data.version": S | T,
    "data.val_frac": S | T,
    "data.test_frac": S | T,
    "data.standardize": S | T,
    "data.seed": S | P,
    "data.root": WHERE,
    "data.download": WHERE,
    "data.n_train": S,
    "data.n_val": S,
    "data.balanced_val": S,
    "data.imbalance_ratio": S,
    "data.imbalance_profile": S,
    "data.label_noise": S,
    "data.soft_labels": S,
    "data.allow_unlabeled": S,
    "data.unlabeled_frac": S,
    "data.n_labels": S,
    "data.digits_per_image": S,
    "data.grid": S,
    "data.length": S,
    "data.jitter": S,  # training images shifted per step by each member's own generator
    # model: the architecture is shared by a stack; its initialisation may differ
    "model.name": RUN,
    "model.hidden": RUN,
    "model.channels": RUN,
    "model.cosine_head": RUN,
    "model.init_from": RUN,
    "model.dropout": RUN,  # one architecture per stack: the template's dropout layers
    "model.init_scale": S,
    "model.head_bias": S,
    # optim: one optimiser type per stack, its step sizes per member
    "optim.name": RUN,
    "optim.lr": S,
    "optim.momentum": S,
    "optim.weight_decay": S,
    "optim.clip_value": RUN,
    "optim.epoch_decay": RUN,
    "optim.decay_steps": RUN,
    "optim.decay_factor": RUN,
    # trainer
    "trainer.max_steps": R,
    "trainer.epochs": R,
    "trainer.batch_size": RUN,
    "trainer.eval_every": R,
    "trainer.log_every": R,
    "trainer.eval_batch_size": R | B,
    "trainer.device": R | B,
    "trainer.precision": RUN,
    "trainer.compile": RUN,
    "trainer.deterministic": RUN,
    "trainer.threads": R | B | P,
    "trainer.sync_debug": R | B,
    "trainer.target_metric": S,
    "trainer.target_value": S,
    "trainer.on_nonfinite": S,
    "trainer.pos_share": S,
    "trainer.ckpt_every": S | R,
    "trainer.resume": WHERE,
    "trainer.skip_completed": WHERE,
}
# Exceptions inside a group listed as a whole: the logger's switch and flush interval are bookkeeping too.
ROLES |= {"logger.enabled": S | R | B, "logger.flush_secs": S | R | B | P, "logger.pr_curve": S | R}


def role(key: str) -> Role | None:
    """The role of a dotted key: its own entry, else its group's; None for a key the table does not know."""
    if key in ROLES:
        return ROLES[key]
    group = key.split(".", 1)[0] + "."
    return ROLES.get(group) if "." in key else None


def has(key: str, r: Role) -> bool:
    """Whether `key` has role `r` (an unknown key has none)."""
    return bool((role(key) or RUN) & r)


def keys_with(r: Role) -> tuple[str, ...]:
    """The keys listed by name with role `r`, in table order (e.g. Hydra's exclude_keys for BOOKKEEPING)."""
    return tuple(k for k, v in ROLES.items() if not k.endswith(".") and r in v)


def listed(r: Role) -> tuple[str, ...]:
    """The table's entries with role `r`, groups as `group.*`, a key left out when its group has the role too."""
    groups = {k for k, v in ROLES.items() if k.endswith(".") and r in v}
    return tuple(k + "*" if k.endswith(".") else k for k, v in ROLES.items()
                 if r in v and (k.endswith(".") or k.split(".", 1)[0] + "." not in groups))
