"""Stacks: runs of the same model shape trained together, one batched forward/backward per step.

Member k keeps its own parameters, optimiser, data order, loss and monitor (member.py); what is shared is
the arithmetic. Each step the members' parameters are stacked along a leading member axis and one vmapped
forward computes every member's logits, ``Z (K, B, outputs)`` from ``X (K, B, ...)``; each member's loss is
its own objective on its slice, and the loop backpropagates the SUM of the members' losses (a mean would
divide every member's gradient by K). Gradients reach each member's own parameters through the stack, so a
member's optimiser step, its NaN/Inf and its gradient norm are its alone.

A stack of one is a plain run: its model is called directly, with no stacking or vmap, so a single run is
exactly what it was before stacks existed.

Which runs stack (:data:`MAY_DIFFER`): runs whose resolved configs are equal except for the keys listed
there, and whose data, once loaded, have the same shapes (:func:`shape_key`). Everything else (model shape,
batch size, number of steps, precision, device, threads, cadences of logging, evaluation and monitors)
separates stacks; fp16 runs are never stacked, since one GradScaler per stack would skip every member's
step when one member overflows.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import torch
from torch.func import functional_call, vmap

from lossbench.config import flatten
from lossbench.member import Member

# Config keys whose values may differ between the members of one stack (prefixes end with '.').
MAY_DIFFER = ("seed", "head", "objective_metric", "study.", "data.", "loss.", "optim.", "model.init_scale",
              "model.head_bias", "trainer.target_metric", "trainer.target_value", "trainer.on_nonfinite",
              "trainer.ckpt_every", "trainer.resume", "trainer.skip_completed", "logger.")


def stack_key(resolved: dict) -> str:
    """Runs with equal keys may share a stack (their data shapes permitting, see shape_key)."""
    fixed = {k: v for k, v in flatten(resolved).items() if not k.startswith(MAY_DIFFER)}
    if fixed.get("trainer.precision") == "fp16":
        fixed["alone"] = id(resolved)  # a GradScaler per run
    return json.dumps(fixed, sort_keys=True, default=str)


def shape_key(m: Member) -> tuple:
    """What must agree once the data is loaded: input, target and output shapes, steps and start step."""
    t = m.ds.train_targets
    return (tuple(m.ds.x_train.shape), tuple(m.ds.x_val.shape), tuple(t.shape), t.dtype,
            tuple(m.ds.val_targets.shape), m.ds.val_targets.dtype, m.ds.n_classes,
            m.params[-1].shape, m.max_steps, m.steps_per_epoch, m.batch_size, m.start_step)


def memory_bytes(m: Member) -> int:
    """A rough per-member estimate: parameters, gradients, their stacked copies and two optimiser states,
    plus the activations of one batch (float32)."""
    n = sum(p.numel() for p in m.params)
    widths = sum(p.shape[0] for p in m.params if p.dim() == 1)
    return 4 * (6 * n + 3 * m.batch_size * (widths + m.ds.x_train[0].numel()))


class Stack:
    """The members being trained together: their stacked batches and their batched forward."""

    def __init__(self, members: list[Member], compile_model: bool = False):
        self.datasets = list({id(m.ds): m.ds for m in members}.values())
        self.index = {id(d): i for i, d in enumerate(self.datasets)}
        shared = len(self.datasets) == 1
        stack = (lambda get: get(self.datasets[0])) if shared else \
            (lambda get: torch.stack([get(d) for d in self.datasets]))
        # one dataset: (N, ...) indexed by (K, B) positions; several: (M, N, ...) indexed by (dataset, position)
        self.x, self.t = stack(lambda d: d.x_train), stack(lambda d: d.train_targets)
        self.x_val = stack(lambda d: d.x_val)
        self.shared = shared
        self.names = [n for n, _ in members[0].model.named_parameters()]
        self.template = members[0].model  # functional_call swaps each member's parameters into it
        self.alone = len(members) == 1  # a plain run: its model is called directly
        self.single = torch.compile(self.template) if compile_model and self.alone else self.template
        self.vmapped = vmap(lambda params, x: functional_call(self.template, params, (x,)))
        if compile_model and not self.alone:
            self.vmapped = torch.compile(self.vmapped)  # the whole vmapped forward (vmap of compile is unsupported)
        self.perms: torch.Tensor | None = None  # (K, N): the members' data orders, rebuilt when they change

    def dmap(self, members: list[Member]) -> torch.Tensor:
        return torch.tensor([self.index[id(m.ds)] for m in members], device=self.x.device)

    def batch(self, members: list[Member], i: int, bs: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch i of the current epoch for every member, by its own permutation: X (K, B, ...), T (K, B, ...)."""
        if self.perms is None:
            self.perms = torch.stack([m.perm for m in members])
        idx = self.perms[:, i * bs : (i + 1) * bs]
        if self.shared:
            return self.x[idx], self.t[idx]
        d = self.dmap(members)[:, None]
        return self.x[d, idx], self.t[d, idx]

    def forward(self, members: list[Member], x: torch.Tensor) -> torch.Tensor:
        """Logits Z (K, B, outputs) of each member on its own inputs x (K, B, ...)."""
        if self.alone:
            return self.single(x[0]).unsqueeze(0)
        params = [dict(m.model.named_parameters()) for m in members]
        stacked = {n: torch.stack([p[n] for p in params]) for n in self.names}
        return self.vmapped(stacked, x)

    @torch.no_grad()
    def predict(self, members: list[Member], batch_size: int, amp: Callable) -> torch.Tensor:
        """Validation logits of the given members, Z (K, N_val, outputs), float32."""
        for m in members:
            m.model.eval()
        d = None if self.shared else self.dmap(members)
        out = []
        with amp():
            for i in range(0, len(members[0].ds.x_val), batch_size):
                if self.shared:
                    chunk = self.x_val[i : i + batch_size]
                    x = chunk.unsqueeze(0).expand(len(members), *chunk.shape)
                else:
                    x = self.x_val[d, i : i + batch_size]
                out.append(self.forward(members, x).float())
        for m in members:
            m.model.train()
        return torch.cat(out, dim=1)
