"""Stacks: runs of the same model shape trained together, one batched forward/backward/update per step.

A stack of K members holds, for each parameter of the model, one leaf tensor of shape (K, ...) whose row k is
member k's parameter (the member's own module keeps a view of that row, so its state_dict is always current).
Per step:

    X (K, B, ...), T (K, B, ...)    each member's batch, by its own data order (its own generator)
    Z (K, B, outputs)               one vmapped forward (torch.func.functional_call over the stacked parameters)
    losses (K,)                     each member's objective on its slice; members with the same kind of loss
                                    (same class and settings) in one vmapped call, their weights stacked
    backward of losses.sum()        the SUM: a mean would divide every member's gradient by K
    update                          torch.optim's SGD / Adam / AdamW formulas on the stacked tensors, with each
                                    member's own learning rate, momentum and weight decay (K, 1, ...)

Gradients, norms and updates never mix members: a NaN in one member's loss or weights stays in its row.

A stack of one is a run alone (`Alone`): its own model, torch optimiser and GradScaler, called directly, so a
single run is exactly what it was before stacks existed. Members of a stack agree with their runs alone up to
floating-point rounding (batched matmuls and the hand-written update group operations differently): the tests
check every evaluation within 1e-4.

Which runs stack: runs whose resolved configs are equal except for the keys with role STACK (lossbench.config.keys),
and whose data, once loaded, have the same shapes (:func:`shape_key`). Everything else (model shape, optimiser
type, batch size, number of steps, precision, device, threads, cadences of logging, evaluation and monitors)
separates stacks; fp16 runs are never stacked, since one GradScaler per stack would skip every member's step
when one member overflows; nor are optim=pesg runs (PESG's update and auc_margin's a, b, alpha live in the run's
own optimiser and loss, lossbench/engine/pesg.py): each trains alone, in the same sweep.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Protocol

import torch
from torch.func import functional_call, vmap

from lossbench import models
from lossbench.config import flatten, keys
from lossbench.data import share_order, shift_images
from lossbench.engine.member import Member
from lossbench.engine.numerics import Monitor

# Config keys whose values may differ between the members of one stack (prefixes end with '.').


_ALONE = itertools.count()


def stack_key(resolved: dict) -> str:
    """Runs with equal keys may share a stack (their data shapes permitting, see shape_key)."""
    fixed = {k: v for k, v in flatten(resolved).items() if not keys.has(k, keys.Role.STACK)}
    if fixed.get("trainer.precision") == "fp16":
        fixed["alone"] = next(_ALONE)  # a GradScaler per run (not id(resolved): a freed dict's id is reused)
    if fixed.get("optim.name") == "pesg":  # PESG's update and auc_margin's a, b, alpha are not stacked: alone
        fixed["alone"] = next(_ALONE)
    if fixed.get("model.dropout") and fixed.get("model.cosine_head"):  # vmap's forward cannot draw the masks
        fixed["alone"] = next(_ALONE)
    return json.dumps(fixed, sort_keys=True, default=str)


def shape_key(m: Member) -> tuple:
    """What must agree once the data is loaded: input, target and output shapes, steps and start step."""
    t, v, e = m.ds.train_targets, m.ds.val_targets, m.ds.test_targets
    test = None if e is None else (tuple(m.ds.x_test.shape), tuple(e.shape), e.dtype)
    return (tuple(m.ds.x_train.shape), tuple(m.ds.x_val.shape), tuple(t.shape), t.dtype, tuple(v.shape), v.dtype,
            test, m.ds.n_classes, tuple(m.params[-1].shape), m.max_steps, m.steps_per_epoch, m.batch_size, m.start_step)


def memory_bytes(m: Member) -> int:
    """A rough per-member estimate: parameters, gradients and two optimiser states, plus the activations of one
    batch (float32)."""
    n = sum(p.numel() for p in m.params)
    widths = sum(p.shape[0] for p in m.params if p.dim() == 1)
    return 4 * (4 * n + 3 * m.batch_size * (widths + m.ds.x_train[0].numel()))


class Batches:
    """Each member's batches, by its own permutation, from the datasets the members share (held once)."""

    def __init__(self, members: list[Member]):
        self.datasets = list({id(m.ds): m.ds for m in members}.values())
        self.index = {id(d): i for i, d in enumerate(self.datasets)}
        self.shared = len(self.datasets) == 1
        # one dataset: (N, ...) indexed by (K, B) positions; several: (M, N, ...) indexed by (dataset, position)
        pick = (lambda get: get(self.datasets[0])) if self.shared else \
            (lambda get: torch.stack([get(d) for d in self.datasets]))
        self.x, self.t, self.x_val = pick(lambda d: d.x_train), pick(lambda d: d.train_targets), pick(lambda d: d.x_val)
        # the test split (shape_key: every member has one of the same shape, or none has)
        self.x_test = None if self.datasets[0].x_test is None else pick(lambda d: d.x_test)
        self.set_members(members)

    def set_members(self, members: list[Member]) -> None:
        self.members = members
        self.dmap = torch.tensor([self.index[id(m.ds)] for m in members], device=self.x.device)[:, None]
        self.perms: torch.Tensor | None = None

    def new_epoch(self, device: torch.device) -> None:
        for m in self.members:
            if m.pos_share is None:
                m.perm = torch.randperm(len(m.ds.y_train), device=device, generator=m.gen)
            else:  # trainer.pos_share: n_pos positives in every batch
                pos, neg = m.class_indices()
                m.perm = share_order(pos, neg, round(m.pos_share * m.batch_size), m.steps_per_epoch, m.batch_size, m.gen)
        self.perms = None

    def train(self, i: int, bs: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch i of the current epoch of every member: X (K, B, ...), T (K, B, ...)."""
        if self.perms is None:  # an order covers steps_per_epoch * bs samples at least (a permutation: all of them)
            n = min(len(m.perm) for m in self.members)
            self.perms = torch.stack([m.perm[:n] for m in self.members])
        idx = self.perms[:, i * bs : (i + 1) * bs]
        if not self.shared:  # rows of the (M * N, ...) concatenation of the datasets
            idx = idx + self.dmap * self.x.shape[1]
            x, t = self.x.flatten(0, 1)[idx], self.t.flatten(0, 1)[idx]
        else:
            x, t = self.x[idx], self.t[idx]
        if any(m.jitter for m in self.members):  # data.jitter: each member's shifts from its own generator
            x = torch.stack([shift_images(x[k], m.jitter, m.gen) if m.jitter else x[k]
                             for k, m in enumerate(self.members)])
        return x, t

    def val(self, rows: torch.Tensor, start: int, size: int, split: str = "val") -> torch.Tensor:
        """Validation (or, split="test", test) inputs [start, start + size) of the members at `rows` of this
        stack: (K', b, ...)."""
        x = self.x_val if split == "val" else self.x_test
        if self.shared:
            chunk = x[start : start + size]
            return chunk.unsqueeze(0).expand(len(rows), *chunk.shape)
        return x[self.dmap[rows, 0], start : start + size]


def sequential_forward(model: torch.nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor,
                       generators: list[torch.Generator] | None = None) -> torch.Tensor:
    """The forward of lossbench's models (nn.Sequential of Flatten, Linear, ReLU, Conv2d, MaxPool2d, Dropout) over
    K members at once: Linear as one batched matmul (baddbmm), Conv2d as a grouped convolution, dropout with each
    member's mask drawn from its own generator (as its run alone draws it), the rest on the flattened (K*B) batch.
    About twice as fast as vmap(functional_call) for the small MLPs studies stack."""
    k, b = x.shape[:2]
    for name, layer in model.named_children():
        if isinstance(layer, models.Dropout):
            if layer.training and layer.p > 0:
                assert generators is not None and len(generators) == k, "a stack with dropout needs its generators"
                x = x * torch.stack([models.dropout_mask(x.shape[1:], layer.p, x.device, x.dtype, g)
                                     for g in generators])
        elif isinstance(layer, torch.nn.Linear):
            w, bias = params[f"{name}.weight"], params.get(f"{name}.bias")
            x = torch.bmm(x, w.transpose(1, 2)) if bias is None else torch.baddbmm(bias.unsqueeze(1), x, w.transpose(1, 2))
        elif isinstance(layer, torch.nn.Flatten):
            x = x.flatten(2)
        elif isinstance(layer, torch.nn.Conv2d):  # members as groups: (B, K*C, H, W) * (K*O, C, kh, kw)
            w, bias = params[f"{name}.weight"], params.get(f"{name}.bias")
            y = torch.nn.functional.conv2d(x.transpose(0, 1).flatten(1, 2), w.flatten(0, 1),
                                           None if bias is None else bias.flatten(), layer.stride, layer.padding,
                                           layer.dilation, groups=k)
            x = y.unflatten(1, (k, -1)).transpose(0, 1)
        else:  # parameter-free (ReLU, MaxPool2d): the same on the (K*B, ...) batch
            x = layer(x.flatten(0, 1)).unflatten(0, (k, b))
    return x


def stackable_model(model: torch.nn.Module) -> bool:
    """Whether sequential_forward computes this model (else vmap(functional_call) does)."""
    layers = list(model.children())
    return isinstance(model, torch.nn.Sequential) and all(
        isinstance(m, (torch.nn.Linear, torch.nn.ReLU, torch.nn.MaxPool2d, models.Dropout)) or
        (isinstance(m, torch.nn.Flatten) and m.start_dim == 1 and m.end_dim == -1) or
        (isinstance(m, torch.nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros") for m in layers)


class Engine(Protocol):
    """The contract fit() trains through, met by a run alone (`Alone`, K = 1) and a stack (`Stacked`, K > 1)
    with the same shapes: every tensor has the member axis first.

    State: the members' own objects (model, optimiser, monitor) are current only after `sync()`. Call it before
    anything reads them: a checkpoint, a member's finish (its summary), and before `drop` (which syncs itself).
    """

    members: list[Member]
    monitor: Monitor

    def begin_step(self, step: int) -> None:
        """Tell each member's objective the step about to run (DRW's re-weighting, PESG's schedule)."""

    def forward(self, x: torch.Tensor, keep_grad: bool = False) -> torch.Tensor:
        """Training inputs (K, B, ...) -> logits (K, B, outputs); keep_grad: their gradient is kept for
        `logit_grads` (the detailed monitors' dL/dz)."""

    def logit_grads(self, z: torch.Tensor) -> torch.Tensor:
        """dL/dz of the logits forward() returned, after backward() (forward with keep_grad=True)."""

    def losses(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Each member's loss on its own batch: (K,)."""

    def backward(self, losses: torch.Tensor) -> None:
        """Gradients of every member from its own loss (K,) (their sum: members never mix)."""

    def grads(self) -> torch.Tensor:
        """Per member and parameter, the gradient's L2 norm: (K, P)."""

    def step(self, apply: list[bool] | None = None) -> None:
        """One optimiser update of every member; apply[k] False skips member k's (on_nonfinite=skip)."""

    def predict(self, rows: list[int], x: torch.Tensor) -> torch.Tensor:
        """Evaluation logits of the members at `rows`: inputs (K', b, ...) -> (K', b, outputs)."""

    def val_losses(self, rows: list[int], z: torch.Tensor, t: list[torch.Tensor]) -> list[float]:
        """The objective of the members at `rows` on their validation logits (a host read)."""

    def drop(self, keep: list[int]) -> None:
        """Go on with the members at `keep` only (state synced first)."""

    def sync(self) -> None:
        """Write the engine's state (stacked parameters' optimiser state, monitor windows) back into each
        member's own objects."""


class Alone:
    """A stack of one: the member's own model, optimiser and scaler, exactly as a single run trains."""

    def __init__(self, member: Member, compile_model: bool = False):
        self.members = [member]
        self.model = torch.compile(member.model) if compile_model else member.model
        self.monitor = member.monitor

    def begin_step(self, step: int) -> None:
        self.members[0].objective.begin_step(step)

    # The run's own logits (B, outputs) and 0-d loss are what it backpropagates; the (1, ...) views the loop
    # reads are detached, so that no select/unsqueeze enters the run's graph (~15% of a small MLP's step).
    def forward(self, x: torch.Tensor, keep_grad: bool = False) -> torch.Tensor:
        self.z = self.model(x[0])
        if keep_grad:
            self.z.retain_grad()
        return self.z.detach()[None]

    def logit_grads(self, z: torch.Tensor) -> torch.Tensor:
        return self.z.grad[None]

    def losses(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.loss = self.members[0].objective(self.z, t[0])
        return self.loss.detach()[None]

    def backward(self, losses: torch.Tensor) -> None:
        m = self.members[0]
        m.optimizer.zero_grad(set_to_none=True)
        m.scaler.scale(self.loss).backward()  # the 0-d loss a run backpropagates, exactly as before stacks
        m.scaler.unscale_(m.optimizer)

    def grads(self) -> torch.Tensor:
        return torch.stack(torch._foreach_norm([p.grad for p in self.members[0].params if p.grad is not None]))[None]

    def step(self, apply: list[bool] | None = None) -> None:
        m = self.members[0]
        if apply is None or apply[0]:  # a skipped update (on_nonfinite=skip); the GradScaler skips its own
            m.scaler.step(m.optimizer)
        m.scaler.update()

    def predict(self, rows: list[int], x: torch.Tensor) -> torch.Tensor:
        return self.model(x[0]).unsqueeze(0)

    def val_losses(self, rows: list[int], z: torch.Tensor, t: list[torch.Tensor]) -> list[float]:
        return [float(self.members[0].objective(z[0], t[0]))]

    def drop(self, keep: list[int]) -> None:
        self.members = [self.members[i] for i in keep]

    def sync(self) -> None:
        """Nothing to write back: the member's own objects are the ones trained."""


def _call_with(module: torch.nn.Module, buffers: dict[str, torch.Tensor], *args) -> torch.Tensor:
    """module(*args) with its buffers replaced by the given tensors for the call (what functional_call does, without
    its generality: a loss is called every step)."""
    saved = []
    for name, tensor in buffers.items():
        owner, _, attr = name.rpartition(".")
        mod = module.get_submodule(owner) if owner else module
        saved.append((mod, attr, mod._buffers[attr]))
        mod._buffers[attr] = tensor
    try:
        return module(*args)
    finally:
        for mod, attr, old in saved:
            mod._buffers[attr] = old


def _signature(obj: torch.nn.Module) -> str:
    """Objectives with equal signatures compute the same function of (z, t, buffers): one vmapped call."""
    parts = []
    for name, mod in obj.named_modules():
        plain = {k: v for k, v in vars(mod).items() if isinstance(v, (bool, int, float, str, type(None), tuple))
                 and not k.startswith("_")}
        bufs = {k: (tuple(b.shape), str(b.dtype)) for k, b in mod.named_buffers(recurse=False)}
        parts.append((name, type(mod).__qualname__, sorted(plain.items()), sorted(bufs.items())))
    return repr(parts)


class LossGroups:
    """The members' objectives, grouped by signature, each group evaluated in one vmapped call with its members'
    buffers (pos_weight, class_weight, ...) stacked. A group whose loss cannot run under vmap falls back to one
    call per member."""

    def __init__(self, objectives: list[torch.nn.Module]):
        self.objectives = objectives
        groups: dict[str, list[int]] = {}
        for k, obj in enumerate(objectives):
            groups.setdefault(_signature(obj), []).append(k)
        self.groups = [{"rows": rows, "buffers": self._stacked(rows), "vmap": True} for rows in groups.values()]
        order = [k for g in self.groups for k in g["rows"]]
        self.unsort = None if order == list(range(len(objectives))) else torch.tensor(order).argsort()

    def _stacked(self, rows: list[int]) -> dict[str, torch.Tensor]:
        # remove_duplicate=False: a tensor held under several names (the objective's class_weight is also its
        # nll's and ce's weight) must be swapped under every name, or the template's copy would serve them all
        buffers = [dict(self.objectives[k].named_buffers(remove_duplicate=False)) for k in rows]
        return {n: torch.stack([b[n] for b in buffers]) for n in buffers[0]}

    def begin_step(self, step: int) -> None:
        for obj in self.objectives:  # a schedule flips plain attributes (DRW's `weighted`), never a buffer
            obj.begin_step(step)

    def __call__(self, z: torch.Tensor, t: torch.Tensor, rows: list[int] | None = None) -> torch.Tensor:
        """Each member's loss (K,) on its own z[k], t[k] (rows: the stack rows that z and t hold)."""
        rows = list(range(len(self.objectives))) if rows is None else rows
        at = {r: i for i, r in enumerate(rows)}
        out, order = [], []
        for g in self.groups:
            sel = [r for r in g["rows"] if r in at]
            if not sel:
                continue
            idx = [at[r] for r in sel]
            zg, tg = (z, t) if idx == list(range(len(rows))) else (z[idx], t[idx])
            out.append(self._group(g, sel, zg, tg))
            order += idx
        losses = torch.cat(out)
        return losses if order == list(range(len(rows))) else losses[torch.tensor(order).argsort().to(z.device)]

    def _group(self, g: dict, sel: list[int], z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        template = self.objectives[sel[0]]
        if g["vmap"]:
            buffers = g["buffers"] if sel == g["rows"] else \
                {n: b[[g["rows"].index(r) for r in sel]] for n, b in g["buffers"].items()}
            try:
                return vmap(lambda b, zz, tt: _call_with(template, b, zz, tt))(buffers, z, t)
            except RuntimeError:  # a loss with an op vmap cannot batch: one call per member from now on
                g["vmap"] = False
        return torch.stack([self.objectives[r](z[i], t[i]) for i, r in enumerate(sel)])


class StackedOptimizer:
    """torch.optim's SGD (momentum, dampening 0, no nesterov), Adam and AdamW updates (the single-tensor
    formulas of torch/optim/sgd.py and adam.py), applied to parameters stacked along the member axis with
    per-member hyperparameters. State is read from and written back to each member's own torch optimiser, in
    its own format, so checkpoints are those of the runs alone."""

    def __init__(self, members: list[Member], params: list[torch.Tensor]):
        kind = {type(m.optimizer).__name__ for m in members}
        assert len(kind) == 1, f"one optimiser type per stack, got {kind}"
        self.kind = kind.pop()
        self.params = params
        dev = params[0].device
        groups = [m.optimizer.param_groups[0] for m in members]

        def per_member(get: Callable[[dict], float]) -> torch.Tensor:
            return torch.tensor([float(get(g)) for g in groups], dtype=torch.float32, device=dev)

        self.lr, self.wd = per_member(lambda g: g["lr"]), per_member(lambda g: g["weight_decay"])
        self.any_wd = any(g["weight_decay"] != 0 for g in groups)  # known up front: no per-step sync
        if self.kind == "SGD":
            self.momentum = per_member(lambda g: g["momentum"])
        else:
            self.beta1, self.beta2 = per_member(lambda g: g["betas"][0]), groups[0]["betas"][1]
            self.eps = groups[0]["eps"]
            assert all(g["betas"][1] == self.beta2 and g["eps"] == self.eps for g in groups)
        states = [[m.optimizer.state.get(p, {}) for p in m.params] for m in members]
        self.state: list[dict[str, torch.Tensor]] = []
        for i, p in enumerate(params):
            s = [st[i] for st in states]
            if self.kind == "SGD":
                has = [x.get("momentum_buffer") is not None for x in s]
                buf = torch.stack([x["momentum_buffer"] for x in s]) if all(has) else None
                self.state.append({"momentum_buffer": buf})
            else:
                started = all("step" in x for x in s)
                self.state.append({
                    "step": torch.tensor([float(x["step"]) for x in s], device=dev) if started else
                    torch.zeros(len(members), device=dev),
                    "exp_avg": torch.stack([x["exp_avg"] for x in s]) if started else torch.zeros_like(p),
                    "exp_avg_sq": torch.stack([x["exp_avg_sq"] for x in s]) if started else torch.zeros_like(p)})

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, apply: torch.Tensor | None = None) -> None:
        """One update of every member; apply (K,) bool: members whose update is skipped keep everything."""
        for p, st in zip(self.params, self.state, strict=True):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            old = (p.clone(), {k: v.clone() for k, v in st.items() if v is not None}) if apply is not None else None
            if self.kind == "SGD":
                self._sgd(p, st, shape)
            else:
                self._adam(p, st, shape, apply)
            if apply is not None:
                keep = ~apply.view(shape)
                p.copy_(torch.where(keep, old[0], p))
                for k, v in old[1].items():
                    if k != "step":
                        st[k].copy_(torch.where(keep.view((-1,) + (1,) * (v.dim() - 1)), v, st[k]))

    def _sgd(self, p: torch.Tensor, st: dict, shape: tuple) -> None:
        wd, mu, lr = self.wd.view(shape), self.momentum.view(shape), self.lr.view(shape)
        g = torch.where(wd != 0, p.grad + wd * p, p.grad) if self.any_wd else p.grad
        if st["momentum_buffer"] is None:
            st["momentum_buffer"] = g.clone()
        else:
            st["momentum_buffer"].mul_(mu).add_(g)
        d = torch.where(mu != 0, st["momentum_buffer"], g)
        p.sub_(lr * d)

    def _adam(self, p: torch.Tensor, st: dict, shape: tuple, apply: torch.Tensor | None) -> None:
        wd, lr, b1 = self.wd.view(shape), self.lr.view(shape), self.beta1.view(shape)
        st["step"] += 1 if apply is None else apply.float()
        step = st["step"].view(shape)
        g = p.grad
        if self.any_wd and self.kind == "AdamW":
            p.mul_(torch.where(wd != 0, 1 - lr * wd, 1.0))
        elif self.any_wd:
            g = torch.where(wd != 0, g + wd * p, g)
        st["exp_avg"].lerp_(g, (1 - b1).expand_as(g))
        st["exp_avg_sq"].mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
        step_size = lr / (1 - b1**step)
        # torch's (exp_avg_sq.sqrt() / sqrt(bias_correction2)).add_(eps), then exp_avg / denom, in place
        update = st["exp_avg_sq"].sqrt().div_(torch.sqrt(1 - self.beta2**step)).add_(self.eps)
        torch.div(st["exp_avg"], update, out=update)
        p.sub_(update.mul_(step_size))

    def write_back(self, members: list[Member]) -> None:
        """Each member's slice of the state into its own torch optimiser's state (its format)."""
        for k, m in enumerate(members):
            for p_m, st in zip(m.params, self.state, strict=True):
                if self.kind == "SGD":
                    buf = st["momentum_buffer"]
                    m.optimizer.state[p_m] = {"momentum_buffer": None if buf is None else buf[k].clone()}
                elif float(st["step"][k]) > 0:
                    old = m.optimizer.state.get(p_m, {}).get("step")
                    step = torch.tensor(float(st["step"][k]), dtype=torch.float32,
                                        device=old.device if old is not None else p_m.device)
                    m.optimizer.state[p_m] = {"step": step, "exp_avg": st["exp_avg"][k].clone(),
                                              "exp_avg_sq": st["exp_avg_sq"][k].clone()}


class Stacked:
    """K > 1 members: stacked parameters, one vmapped forward, vmapped loss groups, one stacked update."""

    def __init__(self, members: list[Member], compile_model: bool = False):
        self.compile_model = compile_model
        self.template = members[0].model  # functional_call swaps the stacked parameters into it
        self.names = [n for n, _ in self.template.named_parameters()]
        self._build(members)

    def _build(self, members: list[Member]) -> None:
        self.members = members
        self.params = {n: torch.stack([dict(m.model.named_parameters())[n].detach() for m in members])
                       .requires_grad_() for n in self.names}
        for k, m in enumerate(members):  # each member's module keeps a view of its row: its state_dict is current
            for n, p in m.model.named_parameters():
                p.data = self.params[n].detach()[k]
        self.optimizer = StackedOptimizer(members, list(self.params.values()))
        self.loss_groups = LossGroups([m.objective for m in members])
        self.monitor = Monitor.concat([m.monitor for m in members])
        if stackable_model(self.template):
            gens = [m.gen for m in members]
            fn = lambda params, x: sequential_forward(self.template, params, x, gens[: len(x)])  # noqa: E731
        else:
            fn = vmap(lambda params, x: functional_call(self.template, params, (x,)))
        self.vmapped = torch.compile(fn) if self.compile_model else fn

    def begin_step(self, step: int) -> None:
        self.loss_groups.begin_step(step)

    def forward(self, x: torch.Tensor, keep_grad: bool = False) -> torch.Tensor:
        z = self.vmapped(self.params, x)
        if keep_grad:
            z.retain_grad()
        return z

    def logit_grads(self, z: torch.Tensor) -> torch.Tensor:
        return z.grad

    def losses(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.loss_groups(z, t)

    def backward(self, losses: torch.Tensor) -> None:
        self.optimizer.zero_grad()
        losses.sum().backward()  # a sum: each member's own gradient

    def grads(self) -> torch.Tensor:
        """Per member and parameter, the gradient's L2 norm: (K, P), never over the whole stack."""
        return torch.stack([torch.linalg.vector_norm(p.grad.flatten(1), dim=1) for p in self.params.values()], dim=1)

    def step(self, apply: list[bool] | None = None) -> None:
        mask = None if apply is None or all(apply) else torch.tensor(apply, device=self.template_device)
        self.optimizer.step(mask)

    @property
    def template_device(self) -> torch.device:
        return next(iter(self.params.values())).device

    def predict(self, rows: list[int], x: torch.Tensor) -> torch.Tensor:
        params = self.params if rows == list(range(len(self.members))) else \
            {n: p[rows] for n, p in self.params.items()}
        training = self.template.training  # the template is member 0's model, which `rows` may not include
        self.template.eval()
        try:
            return self.vmapped(params, x)
        finally:
            self.template.train(training)

    def val_losses(self, rows: list[int], z: torch.Tensor, t: list[torch.Tensor]) -> list[float]:
        return self.loss_groups(z, torch.stack(t), rows).tolist()

    def drop(self, keep: list[int]) -> None:
        """Rebuild the stack without the members not in keep (their state written back first)."""
        self.sync()
        self._build([self.members[i] for i in keep])

    def sync(self) -> None:
        """Write the stacked optimiser state and monitor back into each member's own objects."""
        self.optimizer.write_back(self.members)
        self.monitor.split([m.monitor for m in self.members])


def make(members: list[Member], compile_model: bool = False) -> Engine:
    return Alone(members[0], compile_model) if len(members) == 1 else Stacked(members, compile_model)

