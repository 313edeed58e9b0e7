"""One run inside the training loop: its state (a `Member` of a stack), assembled from its config (`build`),
its evaluations, checkpoints and final summary. What an attempt may do with its directory is decided before,
in plan.py; what the records must hold, in lossbench/runs/record.py."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lossbench import data, losses, metrics, models
from lossbench.config import LOWER_IS_BETTER, check_task, resolve_head
from lossbench.engine import diagnosis, teacher
from lossbench.engine.numerics import Monitor
from lossbench.engine.plan import Plan, check_resumable
from lossbench.errors import ConfigError
from lossbench.losses import registry as loss_registry
from lossbench.runs.logger import Logger, has_events, histogram_every
from lossbench.runs.provenance import code as code_provenance
from lossbench.runs.record import CHECKPOINT_FORMAT, load_entry, read_checkpoint
from lossbench.store import (
    CHECKPOINT,
    SUMMARY,
    save_checkpoint,
    write_json,
)


def better(metric: str, new: float, old: float | None) -> bool:
    if not math.isfinite(new):
        return False
    if old is None or not math.isfinite(old):
        return True
    return new < old if metric in LOWER_IS_BETTER else new > old


def reached(metric: str, value: float, target: float) -> bool:
    return math.isfinite(value) and (value <= target if metric in LOWER_IS_BETTER else value >= target)


def _float32(x: float) -> float:
    """x as the float32 weights see it: past float32's range it is infinite (torch refuses to convert it, where
    the update it gives would be infinite anyway), so that such an lr diverges like any exploding one."""
    return x if abs(x) <= torch.finfo(torch.float32).max else math.copysign(math.inf, x)


def make_optimizer(oc: DictConfig, params, objective: nn.Module | None = None) -> torch.optim.Optimizer:
    """The run's optimiser over the model's parameters (and, for optim=pesg, the loss's dual variables)."""
    lr, momentum, weight_decay = _float32(oc.lr), _float32(oc.momentum), _float32(oc.weight_decay)
    if oc.name == "pesg":
        from lossbench.engine.pesg import PESG

        duals = dict(objective.named_parameters()) if objective is not None else {}  # auc_margin: a, b, alpha
        return PESG(params, duals, getattr(objective, "margin", 1.0), lr=lr, momentum=momentum,
                    weight_decay=weight_decay, epoch_decay=oc.epoch_decay, clip_value=oc.clip_value,
                    decay_steps=tuple(oc.decay_steps), decay_factor=oc.decay_factor)
    if oc.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    cls = torch.optim.Adam if oc.name == "adam" else torch.optim.AdamW
    params = list(params)
    # Fused: one kernel per parameter instead of a handful of ops (about 20% less CPU time per MLP step).
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return cls(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay, fused=fused or None)


@dataclass
class Member:
    """One run's state in the loop: its config and directory, model, optimiser, data order, monitor, logger
    and record (history, best, status). The loop drives it; it never looks at other members."""

    cfg: DictConfig
    plan: Plan
    resolved: dict
    head: str
    ds: data.Dataset
    objective: losses.Objective
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    gen: torch.Generator
    monitor: Monitor
    log: Logger
    max_steps: int
    steps_per_epoch: int
    batch_size: int
    start_step: int = 0
    saved_step: int | None = None  # the step of the checkpoint on disk (written or resumed from), if any
    perm: torch.Tensor | None = None
    status: str = "running"
    history: list = field(default_factory=list)
    best: dict = field(default_factory=dict)
    final: dict = field(default_factory=dict)
    steps_to_target: int | None = None
    steps: int = 0
    z_val: torch.Tensor | None = None
    z_test: torch.Tensor | None = None  # the last evaluation's test logits (None: the data has no test split)
    summary: dict = field(default_factory=dict)
    last_window: dict = field(default_factory=dict)  # the monitors' last detail window (numerics.last)
    finished: bool = False  # its last records are written

    def __post_init__(self) -> None:
        tc = self.cfg.trainer  # plain values for the hot loop: a DictConfig attribute read costs ~20 us
        self.on_nonfinite, self.ckpt_every = tc.on_nonfinite, tc.ckpt_every
        self.target_metric, self.target_value = tc.target_metric, tc.target_value
        self.hist_every = histogram_every(self.cfg.numerics.hist_every, self.max_steps)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.pos_share = tc.get("pos_share")
        self.jitter = int(self.cfg.data.get("jitter") or 0)  # random shifts of the training images, in pixels
        self._class_indices: tuple[torch.Tensor, torch.Tensor] | None = None
        self.skip_nonfinite = self.on_nonfinite == "skip" and not self.scaler.is_enabled()
        # Gradients are checked every step only where a per-step answer is needed (see numerics.py): the skip
        # decision, and fp16's count of the steps the GradScaler skips.
        self.grads_every_step = self.skip_nonfinite or self.scaler.is_enabled()

    def class_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training split's positive and negative indices (device tensors; found once: one host sync)."""
        if self._class_indices is None:
            y = self.ds.y_train
            self._class_indices = ((y == 1).nonzero().squeeze(1), (y == 0).nonzero().squeeze(1))
            if not all(len(i) for i in self._class_indices):
                raise ConfigError(f"trainer.pos_share={self.pos_share:g} needs positives and negatives in the "
                                  f"training split; it has {[len(i) for i in self._class_indices]}.")
        return self._class_indices

    @property
    def out_dir(self) -> Path:
        return self.plan.out_dir

    def record_eval(self, step: int, values: dict[str, float]) -> None:
        """One evaluation: the final values, the history, the best and the convergence target. Best is chosen on
        validation only: best[val/X] is the best val/X so far, and best[test/X] the test/X of that same
        evaluation (retrospective selection on validation); no test value is ever compared."""
        self.final = values
        self.history.append({"step": step, **values})
        for k, v in values.items():
            if k.startswith("val/") and better(k, v, self.best.get(k)):
                self.best[k] = v
                if (t := "test/" + k.removeprefix("val/")) in values:
                    self.best[t] = values[t]
        if self.target_metric and self.steps_to_target is None and reached(
            self.target_metric, values.get(self.target_metric, math.nan), self.target_value
        ):
            self.steps_to_target = step

    def checkpoint(self, step: int) -> None:
        """The run's whole state as plain data (tensors, numbers, strings, lists, dicts): what
        ``torch.load(weights_only=True)`` accepts."""
        save_checkpoint(self.out_dir / CHECKPOINT, {
            "format": CHECKPOINT_FORMAT, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "generator": self.gen.get_state(), "perm": self.perm, "step": step,
            "best": self.best, "steps_to_target": self.steps_to_target, "monitor": self.monitor.state_dict(),
            "history": self.history, "config": self.resolved, "device": self.device_type,
            "objective": self.objective.state_dict(),  # auc_margin's a, b, alpha; the others' fixed buffers
            "last_window": self.last_window,  # what the diagnosis reads (a summary rebuilt from here has it too)
        })
        self.saved_step = step

    @property
    def device_type(self) -> str:
        return self.params[0].device.type

    def restore(self, ck: dict) -> None:
        check_resumable(ck, self.resolved, self.device_type, self.max_steps, self.out_dir)
        path = self.out_dir / CHECKPOINT
        load_entry(path, "model", lambda: self.model.load_state_dict(ck["model"]))
        if "objective" in ck:  # checkpoints before the AUC losses have none (and no loss state to restore)
            load_entry(path, "objective", lambda: self.objective.load_state_dict(ck["objective"]))
        load_entry(path, "optimizer", lambda: self.optimizer.load_state_dict(ck["optimizer"]))
        load_entry(path, "scaler", lambda: self.scaler.load_state_dict(ck["scaler"]))
        load_entry(path, "generator", lambda: self.gen.set_state(ck["generator"]))
        load_entry(path, "monitor", lambda: self.monitor.load_state_dict(ck["monitor"]))
        self.perm = ck["perm"].to(self.params[0].device) if ck["perm"] is not None else None
        n = len(self.ds.y_train)
        # an epoch's order of training rows: a permutation, or with trainer.pos_share the sampler's draw
        if self.perm is not None and (self.perm.dim() != 1 or not len(self.perm) or int(self.perm.min()) < 0
                                      or int(self.perm.max()) >= n):
            raise ConfigError(f"{path}: its 'perm' entry is not an order of this run's {n} training samples. "
                              "Nothing was changed; the checkpoint is damaged or not this run's.")
        self.start_step = self.steps = self.saved_step = ck["step"]
        self.best, self.steps_to_target, self.history = ck["best"], ck["steps_to_target"], ck["history"]
        self.final = {k: v for k, v in self.history[-1].items() if k != "step"} if self.history else {}
        self.last_window = dict(ck.get("last_window") or {})
        print(f"lossbench: resuming {self.out_dir} from step {self.start_step}")

    def back_to_checkpoint(self) -> None:
        """Record the run as far as its checkpoint (or its start) reaches: after a write failed for a full disk,
        the summary's steps are the checkpoint's, so that a resume continues exactly what the summary says."""
        self.steps = self.saved_step if self.saved_step is not None else self.start_step
        self.history = [h for h in self.history if h["step"] <= self.steps]
        self.final = {k: v for k, v in self.history[-1].items() if k != "step"} if self.history else {}

    def finish(self, times: dict[str, float]) -> dict:
        """Write the run's last records: per-class recall, PR curve, hparams, summary.json; close the writer."""
        s = self.summary
        s.update({
            "status": self.status, "steps": self.steps, **times,
            "samples_per_sec": ((self.steps - self.start_step) * self.batch_size / times["train_time_s"]
                                if times["train_time_s"] > 0 else None),
            "final": self.final, "best": self.best,
            "convergence": {"target_metric": self.target_metric, "target_value": self.target_value,
                            "steps_to_target": self.steps_to_target},
            "numerics": {**self.monitor.summary(), "last": self.last_window}, "history": self.history,
        })
        s["diagnosis"] = diagnosis.diagnose(s)
        if duals := self.objective.duals() if isinstance(self.objective, losses.Objective) else {}:
            s["dual"] = {k: float(v) for k, v in duals.items()}  # auc_margin: a, b, alpha at the end
        if self.scaler.is_enabled():
            s["amp"] = {"final_scale": self.scaler.get_scale(), "skipped_steps": self.monitor.totals[0]["nonfinite_grad"]}
        try:
            if self.z_val is not None and self.status != "failed":
                s["per_class_recall"] = metrics.per_class_recall(self.z_val, self.ds.y_val, self.head, self.ds.n_classes)
                if (z_adj := self.objective.posthoc_logits(self.z_val)) is not None:  # loss.posthoc_tau: both ways
                    s["posthoc_per_class_recall"] = metrics.per_class_recall(z_adj, self.ds.y_val, self.head,
                                                                             self.ds.n_classes)
                if self.z_test is not None:  # the test split's, at the same (last) evaluation
                    s["test_per_class_recall"] = metrics.per_class_recall(self.z_test, self.ds.y_test, self.head,
                                                                          self.ds.n_classes)
                if self.ds.n_classes == 2 and not self.ds.multilabel and self.status != "interrupted":
                    self.log.pr_curve(self.ds.y_val, metrics.scores(self.z_val, self.head), self.steps)
            if self.status not in ("interrupted", "failed"):  # an interrupted run writes its hparams when it ends
                hp_metrics = dict(self.final)
                hp_metrics["val/steps_to_target"] = float(self.steps_to_target) if self.steps_to_target else math.nan
                hp_metrics["val/diverged"] = float(self.status == "diverged")
                # the diagnosis and the numerics beside the metrics (HPARAM_METRICS puts them among the first five)
                hp_metrics["numerics/stalled"] = float(diagnosis.name(s) == "stalled")
                hp_metrics |= {f"numerics/{k}": s["numerics"]["last"].get(k, s["numerics"][f"{k}_mean"])
                               for k in ("saturated_frac", "dead_frac", "clamped_frac")}
                self.log.hparams({**hparams(self.resolved), "head": self.head, "status": self.status}, hp_metrics)
        finally:
            self.log.close()
            write_json(self.out_dir / SUMMARY, s)
            if self.status == "diverged":  # a final result: nothing to resume (a periodic checkpoint predates it)
                (self.out_dir / CHECKPOINT).unlink(missing_ok=True)
            self.finished = True
        return s


def hparams(resolved: dict) -> dict:
    """The config entries worth a column in TensorBoard's HPARAMS tab."""
    keep = ("data", "model", "loss", "optim", "seed")
    out = {k: resolved[k] for k in keep if k in resolved}
    out["trainer"] = {k: resolved["trainer"][k] for k in ("batch_size", "precision", "max_steps", "epochs")}
    return out


def init_from(model: nn.Module, run_dir: Path) -> None:
    """model.init_from: the weights of another run's checkpoint (loaded as data, weights_only=True), e.g. a BCE
    run to fine-tune with loss=auc_margin as LibAUC recommends. Only the model: not its optimiser or loss."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        raise ConfigError(f"model.init_from={run_dir}: no {CHECKPOINT} there. Point it at the directory of a "
                          "finished (or checkpointed) lossbench run with the same model.")
    weights = read_checkpoint(path)["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise ConfigError(f"model.init_from={run_dir}: its model does not fit this one ("
                          f"{str(e).splitlines()[-1].strip()}). Use a run with the same model, head and data shape.") \
            from None


def build(cfg: DictConfig, plan: Plan, device: torch.device, datasets: dict, precision: str) -> Member:
    """Data (shared with the stack's other members when the data config is the same), loss, model, optimiser,
    monitor and logger of one run; restored from its checkpoint when resuming. Writes the 'running' summary."""
    tc, head = cfg.trainer, resolve_head(cfg)
    spec = loss_registry.get(cfg.loss.name)
    if spec.teacher:
        teacher.check(cfg)  # a missing, unfinished or foreign teacher: refused before the data is loaded
    resolved = OmegaConf.to_container(cfg, resolve=True)
    key = str(resolved["data"])
    if key not in datasets:
        loaded = data.load(cfg.data).to(device)
        # the same data under another config (e.g. the full MNIST under another seed): held once
        datasets[key] = next((d for d in datasets.values() if d.same_as(loaded)), loaded)
    ds = datasets[key]
    check_task(cfg, ds.task)  # data.task=null (data=arrays|openml): the task-dependent rules, now that it is known
    counts, n_labelled = ds.class_counts(), ds.n_labelled()
    objective = losses.build(cfg.loss, head, ds.n_classes, counts, n_labelled, multilabel=ds.multilabel,
                             partial=ds.partial()).to(device)
    if spec.teacher:  # the teacher's logits as targets, computed once per teacher and data
        key = (id(ds), str(cfg.loss.teacher))  # by the data held, so that equal data gets one copy of the logits
        if key not in datasets:
            datasets[key] = teacher.attach(cfg, ds, device, tc.eval_batch_size)
        ds = datasets[key]
    torch.manual_seed(cfg.seed)  # the model's initial weights: the same whether the run is alone or stacked
    model = models.build(cfg.model, ds.input_shape, loss_registry.n_outputs(head, ds.n_classes, ds.multilabel))
    models.init_head_bias(model, cfg.model.head_bias, head, counts, n_labelled)
    if cfg.model.get("init_from"):
        init_from(model, Path(cfg.model.init_from))
    model.to(device)
    # the run's own generator: its data order, and its jitter shifts and dropout masks when those are on
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    models.use_generator(model, gen)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    n_train = len(ds.y_train)
    bs = min(tc.batch_size, n_train)
    steps_per_epoch = n_train // bs
    m = Member(
        cfg=cfg, plan=plan, resolved=resolved, head=head, ds=ds,
        objective=objective, model=model, optimizer=make_optimizer(cfg.optim, model.parameters(), objective), scaler=scaler,
        gen=gen,
        monitor=Monitor(device, objective, cfg.numerics.enabled, cfg.numerics.every, scaled_grads=scaler.is_enabled()),
        log=None,  # opened below, once the start step is known
        max_steps=tc.epochs * steps_per_epoch if tc.epochs else tc.max_steps,
        steps_per_epoch=steps_per_epoch, batch_size=bs,
    )
    if m.pos_share is not None:
        m.class_indices()  # refused now if a class is missing, not at the first epoch
    if plan.action == "resume":
        m.restore(plan.checkpoint)
    # A directory with events from an earlier attempt (resume, or a restart after a failure): TensorBoard drops
    # what that attempt logged after start_step (the checkpoint's step, whose own points are kept), so the
    # curves continue without duplicates.
    purge = m.start_step + 1 if has_events(m.out_dir) else None
    m.log = Logger(m.out_dir, cfg.logger.enabled, cfg.logger.flush_secs, purge_step=purge)
    m.summary = {
        "status": "running", "config": m.resolved, "head": head, "steps": m.start_step, "max_steps": m.max_steps,
        "device": str(device), "precision": precision, "threads": torch.get_num_threads(), "data": {
            "n_train": n_train, "n_val": len(ds.y_val), "n_test": 0 if ds.y_test is None else len(ds.y_test),
            "n_classes": ds.n_classes,
            "train_class_counts": counts.tolist(), "task": ds.task, **ds.info,
        },
        "n_params": sum(p.numel() for p in m.params),
        # what produced the run, read before training (git is asked once per process), so that a stopped run's
        # results are written as fast as before
        "code": code_provenance(device),
    }
    if plan.action == "resume":
        m.summary["resumed_from_step"] = m.start_step
    write_json(m.out_dir / SUMMARY, m.summary)
    if m.start_step == 0:
        m.log.layout()
    return m
