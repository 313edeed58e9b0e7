"""Training: one loop for one run or a stack of runs, read top to bottom.

    run(cfg, dir)            one run: a stack of one
    run_jobs([(cfg, dir)])   a sweep's jobs: grouped into stacks (stack.py), each stack trained by fit()
    fit(members)             the loop: batch -> step -> log every N -> evaluate every N -> checkpoint every N
                             -> stop?  Per member: its own data order, loss, monitor, record and status.

The hot loop never synchronises with the host: losses and monitor counters stay on the device and are read
at log and eval points (and, with trainer.on_nonfinite=skip, once per step to decide). A member that
diverges is evaluated, recorded and dropped from the stack at the log point where its first non-finite
value is read; the others go on; so is a member that successive halving prunes (fit's prune). The loop ends
when no member is left or a stop signal arrives.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from lossbench import losses, metrics
from lossbench.config import validate
from lossbench.engine import stack as stack_mod
from lossbench.engine.member import Member, build
from lossbench.engine.plan import Plan, discard, plan, record_failure
from lossbench.engine.stack import Batches, Engine, memory_bytes, shape_key, stack_key
from lossbench.errors import ConfigError, LossbenchError
from lossbench.losses import registry as loss_registry
from lossbench.runs.progress import Progress
from lossbench.runs.signals import Interrupted, StopRequest, loading, stops_received
from lossbench.store import DiskFull, run_lock

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
BCE_AUTOCAST_REFUSAL = (
    "torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast on CUDA "
    "(PyTorch raises for them under torch.autocast): a sigmoid followed by BCE in half precision saturates "
    "and its gradient divides by p(1-p), which underflows. Fix: use loss=bce_logits (BCEWithLogitsLoss, "
    "autocast-safe), or trainer.precision=fp32."
)
NOT_STARTED = "not started: the sweep was interrupted first"


def pick_device(name: str) -> torch.device:
    """auto = CUDA when present, else MPS, else CPU. Anything unavailable is a ConfigError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"Unknown trainer.device={name!r}. Valid choices: auto, cpu, cuda, cuda:N, mps.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.device={name} but CUDA is not available on this machine (torch "
                f"{torch.__version__}, built for CUDA {torch.version.cuda}, sees no GPU). "
                "Use trainer.device=cpu, or trainer.device=auto to take a GPU when there is one."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"trainer.device={name} but this machine has {torch.cuda.device_count()} CUDA device(s): "
                f"use cuda:0..cuda:{torch.cuda.device_count() - 1}."
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"trainer.device={name} but MPS is not available here. Use trainer.device=cpu or auto.")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"Unknown trainer.device={name!r}. Valid choices: auto, cpu, cuda, cuda:N, mps.")
    return dev


def check_precision(precision: str, device: torch.device, loss: str) -> None:
    if precision == "fp32":
        return
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise ConfigError(
                f"trainer.precision=bf16 but {torch.cuda.get_device_name(device)} has no bfloat16 support. "
                "Use trainer.precision=fp16 or fp32."
            )
        if not loss_registry.get(loss).cuda_autocast:
            raise ConfigError(f"trainer.precision={precision} with loss={loss} on CUDA: {BCE_AUTOCAST_REFUSAL}")
    if not torch.amp.is_autocast_available(device.type):
        raise ConfigError(
            f"trainer.precision={precision}: autocast is not available on {device.type}. Use trainer.precision=fp32."
        )


def use_deterministic(mode: bool) -> None:
    """torch.use_deterministic_algorithms(mode), without its import of torch._inductor (1-4 s, once per process)
    where that changes nothing: turning it off while it is off and the inductor, not yet imported, would start
    with it off too (its config reads TORCHINDUCTOR_DETERMINISTIC when imported)."""
    if (not mode and "torch._inductor.config" not in sys.modules and not torch.are_deterministic_algorithms_enabled()
            and not torch.is_deterministic_algorithms_warn_only_enabled()
            and os.environ.get("TORCHINDUCTOR_DETERMINISTIC") != "1"):
        return
    torch.use_deterministic_algorithms(mode)


@dataclass
class Runtime:
    """What a stack's members share: device, precision, threads, determinism, compile, the sync check."""

    device: torch.device
    precision: str
    compile: bool
    sync_check: bool
    eval_batch_size: int
    log_every: int
    eval_every: int

    @classmethod
    def start(cls, cfg: DictConfig, jobs: int = 1) -> Runtime:
        tc = cfg.trainer
        device = pick_device(tc.device)
        torch.set_num_threads(tc.threads or max(1, (os.cpu_count() or 1) // max(1, jobs)))
        if tc.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        use_deterministic(bool(tc.deterministic))  # reset too: sweep jobs share a process
        sync_check = bool(tc.get("sync_debug")) and device.type == "cuda"
        if sync_check and (tc.on_nonfinite == "skip" or tc.precision == "fp16"):
            raise ConfigError(
                "trainer.sync_debug=true checks that no training step synchronises with the host, but "
                "trainer.on_nonfinite=skip (a per-step decision on the host) and precision=fp16 (the GradScaler "
                "reads its inf check each step) synchronise by design. Use on_nonfinite=stop or continue and "
                "precision=fp32 or bf16 for the check."
            )
        return cls(device, tc.precision, bool(tc.compile), sync_check, tc.eval_batch_size, tc.log_every,
                   tc.eval_every)

    def amp(self):
        dtype = AMP_DTYPES.get(self.precision)
        return contextlib.nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)

    def no_sync(self) -> contextlib.AbstractContextManager:
        """From the batch to the optimiser's update: any host sync raises (trainer.sync_debug=true, CUDA)."""
        return _sync_raises() if self.sync_check else contextlib.nullcontext()


@contextlib.contextmanager
def _sync_raises():
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


# --- entry points ----------------------------------------------------------------------------------------------


def run(cfg: DictConfig, out_dir: Path, jobs: int = 1, record: bool = False) -> dict:
    """Train and evaluate one configuration: run_jobs' path with a stack of one. Writes out_dir/summary.json
    (atomically) and TensorBoard events; returns the summary. Raises the error that stopped it (LossbenchError
    for bad input, before training), recorded in the directory only with record=True (a sweep's job; a single
    run refused leaves nothing behind). jobs: how many jobs share this machine's cores."""
    result = run_jobs([(cfg, Path(out_dir))], stacked=False, record=record, jobs_per_machine=jobs)[0]
    if isinstance(result, BaseException):
        raise result
    return result


def skipped(p: Plan) -> dict:
    print(f"lossbench: {p.out_dir} already holds a {p.previous['status']} run; skipped (trainer.skip_completed=true).")
    return {**p.previous, "skipped": True, "exit_code": 0, "out_dir": str(p.out_dir)}


def group_jobs(cfgs: list[DictConfig], stacked: bool = True, max_members: int = 64) -> list[list[int]]:
    """Job indices grouped by stack_key (the config alone; shapes are checked once the data is loaded), at
    most max_members a group. stacked=False: one job a group."""
    groups: dict[str, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        key = stack_key(OmegaConf.to_container(cfg, resolve=True)) if stacked else str(i)
        groups.setdefault(key, []).append(i)
    return [idxs[j : j + max_members] for idxs in groups.values() for j in range(0, len(idxs), max_members)]


Prune = Callable[[int, list[Member], list[Member]], list[int]]


def run_jobs(jobs: list[tuple[DictConfig, Path]], max_members: int = 64, max_memory_gb: float = 8.0,
             stacked: bool = True, prune: Prune | None = None, record: bool = True,
             jobs_per_machine: int = 1) -> list[dict | BaseException]:
    """The one path of every job, alone or in a sweep: validate, plan, lock, start, build, fit. Jobs are trained
    in stacks (or one by one with stacked=False). Returns, per job, its summary or the error that stopped it; a
    failed job never stops the others. record: each job's failure is recorded in its directory (status failed)
    unless the directory holds another run's files; without it, a fresh directory interrupted while loading is
    removed again. prune: see fit(). jobs_per_machine: processes sharing the cores (torch's threads)."""
    results: list[dict | BaseException | None] = [None] * len(jobs)
    plans: dict[int, Plan] = {}
    stops = stops_received()  # a stop signal during this call: the jobs not yet started are not started
    for i, (cfg, out_dir) in enumerate(jobs):
        try:
            validate(cfg)
            plans[i] = plan(cfg, Path(out_dir), None if cfg.trainer.epochs else cfg.trainer.max_steps)
        except Exception as e:
            results[i] = _failed(cfg, Path(out_dir), e) if record else e
            continue
        if plans[i].action == "skip":
            results[i] = skipped(plans[i])
    todo = [i for i in plans if results[i] is None]
    for group in group_jobs([jobs[i][0] for i in todo], stacked, max_members):
        idxs = [todo[j] for j in group]
        with contextlib.ExitStack() as locks:
            t_group = time.perf_counter()  # a run's wall time counts its loading (the first stack's: the group's)
            built, datasets, rt = [], {}, None  # members of this group share the datasets they have in common
            for i in idxs:
                cfg = jobs[i][0]
                if stops_received() > stops:
                    results[i] = RuntimeError(NOT_STARTED)
                    continue
                try:
                    locks.enter_context(run_lock(plans[i].out_dir))
                except LossbenchError as e:  # another process holds it: nothing of it is touched
                    results[i] = Refused(str(e))
                    continue
                try:
                    with loading():
                        rt = rt or Runtime.start(cfg, jobs_per_machine)
                        check_precision(rt.precision, rt.device, cfg.loss.name)
                        built.append((i, build(cfg, plans[i], rt.device, datasets, rt.precision)))
                except Interrupted as e:
                    if record:  # a submitit job's: the members built stop before their first step, in fit
                        results[i] = e
                        continue
                    if plans[i].action == "fresh":  # a single run: a fresh one leaves nothing behind
                        discard(plans[i].out_dir)
                    raise
                except Exception as e:  # recorded in its own summary (this process holds its lock)
                    results[i] = _failed(cfg, plans[i].out_dir, e, locked=True) if record else e
            for n, stack in enumerate(split(built, max_memory_gb * 2**30)):
                t0 = t_group if n == 0 else time.perf_counter()
                try:
                    for (i, _), summary in zip(stack, fit([m for _, m in stack], rt, t0, prune), strict=True):
                        results[i] = summary
                except Exception as e:  # recorded in each member's summary by fit(); the sweep goes on
                    for i, _ in stack:
                        results[i] = e
    return results  # type: ignore[return-value]


class Refused(ConfigError):
    """A job not run because its directory holds another run's files (or another process holds it): nothing in
    the directory was touched."""


def _failed(cfg: DictConfig, out_dir: Path, e: Exception, locked: bool = False) -> Exception:
    """The job's failure, recorded in its directory as 'failed'; a Refused if the directory is another run's."""
    error = str(e) if isinstance(e, LossbenchError) else f"{type(e).__name__}: {e}"
    if not record_failure(out_dir, cfg, error, locked=locked) and not locked:
        return Refused(error)
    return e


def split(members: list[tuple[int, Member]], max_bytes: float) -> list[list[tuple[int, Member]]]:
    """Members of one config group -> stacks: equal data and step shapes, within the memory estimate."""
    by_shape: dict[tuple, list[tuple[int, Member]]] = {}
    for i, m in members:
        by_shape.setdefault(shape_key(m), []).append((i, m))
    stacks = []
    for group in by_shape.values():
        per = max(memory_bytes(group[0][1]), 1)
        size = max(1, int(max_bytes // per))
        stacks += [group[j : j + size] for j in range(0, len(group), size)]
    return stacks


# --- the loop --------------------------------------------------------------------------------------------------


def train_step(stack: Engine, batches: Batches, i: int, bs: int, step: int, detail: bool, amp,
               grads_every_step: bool, skip: list[bool] | None) -> torch.Tensor:
    """One forward/backward/update of every member of the stack. Returns the logits Z (K, B, outputs)."""
    x, t = batches.train(i, bs)
    stack.begin_step(step)
    with amp():
        z = stack.forward(x, keep_grad=detail)
        losses = stack.losses(z, t)  # (K,)
    stack.backward(losses)
    seen, norms = stack.monitor.observe(losses, z), None
    if detail or grads_every_step:
        norms = stack.monitor.observe_grads(stack.grads())
    if detail:
        stack.monitor.observe_detail(losses.detach().reshape(-1), z, t, stack.logit_grads(z))
    apply = None
    if skip is not None:  # trainer.on_nonfinite=skip: a per-step host read decides, per member
        finite = (torch.isfinite(seen.reshape(-1)) & torch.isfinite(norms.reshape(len(skip), -1)).all(dim=1)).tolist()
        apply = [ok or not s for ok, s in zip(finite, skip, strict=True)]
    stack.step(apply)
    return z


def evaluate(stack: Engine, batches: Batches, rows: list[int], step: int, rt: Runtime) -> None:
    """Validation and test metrics of the stack's members at `rows`, logged and recorded (score). Test metrics
    are reported beside validation's (test/*) and never chosen on: the best point, early stopping and tuning read
    val/* only (Member.record_eval)."""
    splits = ("val", "test") if batches.x_test is not None else ("val",)
    for r, values in zip(rows, score(stack, batches, rows, splits, rt), strict=True):
        m = stack.members[r]
        m.log.scalars(values, step)
        m.record_eval(step, values)


def score(stack: Engine, batches: Batches, rows: list[int], splits: tuple[str, ...], rt: Runtime) -> list[dict]:
    """The metrics of the members at `rows` on each split ("val", "test"), keyed "<split>/<metric>": one batched
    prediction pass per split, then the metrics of every (split, member) scored alike in one computation. Each
    member's logits of each split are kept (z_val, z_test) for its per-class recall at the end."""
    members = [stack.members[r] for r in rows]
    idx = torch.tensor(rows, device=rt.device)
    chunk = max(128, rt.eval_batch_size // len(rows))  # per member: a stack's activations stay as large as one run's
    for m in members:
        m.model.eval()
    logits = {}
    with torch.no_grad(), rt.amp():
        for s in splits:
            n = len(members[0].ds.x_val if s == "val" else members[0].ds.x_test)
            logits[s] = torch.cat([stack.predict(rows, batches.val(idx, i, chunk, s)).float()
                                   for i in range(0, n, chunk)], dim=1)
    for m in members:
        m.model.train()
    values: dict[tuple[str, int], dict] = {}  # (split, member) -> metric -> value
    kinds: dict[tuple, list] = {}  # (split, member, logits, labels) scored alike: one batched computation a kind
    for s, z in logits.items():
        with torch.no_grad():
            targets = [m.ds.val_targets if s == "val" else m.ds.test_targets for m in members]
            for k, loss in enumerate(stack.val_losses(rows, z, targets)):
                values[s, k] = {"loss": loss}
        for k, m in enumerate(members):
            zk = m.objective.eval_logits(z[k])  # the logits of the model's probabilities (z, or s z for LDAM)
            setattr(m, f"z_{s}", zk)
            y = m.ds.y_val if s == "val" else m.ds.y_test
            kinds.setdefault((m.head, m.ds.n_classes, y.dim(), len(y)), []).append((s, k, zk, y))
    for (head, n_classes, dim, _), items in kinds.items():
        if dim == 1:  # class-index labels
            got = metrics.evaluate_many(torch.stack([i[2] for i in items]), torch.stack([i[3] for i in items]),
                                        head, n_classes)
        else:
            got = [metrics.evaluate(zk, y, head, n_classes) for _, _, zk, y in items]
        for (s, k, zk, y), row in zip(items, got, strict=True):
            # loss.posthoc_tau: the metrics after post-hoc logit adjustment too ({} without it)
            posthoc = metrics.posthoc(members[k].objective.posthoc_logits(zk), y, head, n_classes)
            values[s, k].update({**row, **posthoc})
    return [{f"{s}/{name}": v for s in splits for name, v in values[s, k].items()} for k in range(len(members))]


def log_point(m: Member, values: dict[str, float], first_nonfinite: int | None, done: int,
              window: tuple[float, int]) -> None:
    """Log a member's monitor window; a non-finite value under on_nonfinite=stop ends it ('diverged')."""
    t_window, last_logged = window
    values["perf/samples_per_sec"] = (done - last_logged) * m.batch_size / max(time.perf_counter() - t_window, 1e-9)
    if isinstance(m.objective, losses.Objective):  # auc_margin's a, b, alpha: their own TensorBoard group, sorted after val
        values.update({f"variables/{k}": float(v) for k, v in m.objective.duals().items()})
    if m.scaler.is_enabled():
        values["amp/scale"] = m.scaler.get_scale()
        values["amp/skipped_steps"] = values["numerics/nonfinite_grad"]
    m.log.scalars(values, done)
    if "numerics/saturated_frac" in values:  # the detail monitors' latest window: what a diagnosis reads
        m.last_window = {k.split("/", 1)[1]: v for k, v in values.items() if k.startswith("numerics/")}
    if first_nonfinite is not None and m.on_nonfinite == "stop":
        m.status = "diverged"


def end_status(m: Member) -> str:
    """How a run that trained to its last step ended: 'diverged' if a non-finite value was met on the way
    (on_nonfinite=continue), its final validation loss is not finite, or every update was skipped."""
    nonfinite = m.monitor.totals[0]["nonfinite_loss"] + m.monitor.totals[0]["nonfinite_grad"]
    if m.on_nonfinite == "continue" and m.monitor.first_nonfinite_step is not None:
        return "diverged"
    if not math.isfinite(m.final.get("val/loss", math.nan)):
        m.summary["diverged_because"] = "the final validation loss is not finite"
        return "diverged"
    if m.skip_nonfinite and m.monitor.totals[0]["grad_steps"] and nonfinite >= m.steps - m.start_step:
        m.summary["diverged_because"] = "every update was skipped (non-finite loss or gradient)"
        return "diverged"
    return "completed"


def _times(t0: float, train: float, evalt: float, loop: float, cpu: float) -> dict[str, float]:
    return {"wall_time_s": time.perf_counter() - t0, "train_time_s": train, "eval_time_s": evalt,
            "loop_time_s": loop, "loop_cpu_s": cpu}


def fit(members: list[Member], rt: Runtime, t0: float, prune: Prune | None = None) -> list[dict]:
    """Train the members together from their common start step to their common last step. Every member ends
    with its summary written, whatever happens (an exception is re-raised after that). Returns the summaries,
    each with the process's exit code (128 + signal after a stop signal, else 0) and its directory.

    prune(step, active, members): called after each evaluation of every active member (successive halving,
    lossbench.sweeps.halving.Halving); the indices into active it returns end there as 'pruned' (recorded, then
    dropped from the stack as a diverged member is). It may read validation records only."""
    max_steps, spe, bs = members[0].max_steps, members[0].steps_per_epoch, members[0].batch_size
    if len(members) > 1:
        for k, m in enumerate(members):
            m.summary["stack"] = {"index": k, "size": len(members), "members": [str(o.out_dir) for o in members]}
    stack, batches = stack_mod.make(members, rt.compile), Batches(members)
    clock = {"train": 0.0, "eval": 0.0, "loop": 0.0, "cpu": 0.0}
    times = lambda: _times(t0, clock["train"], clock["eval"], clock["loop"], clock["cpu"])  # noqa: E731
    stop = StopRequest()
    label = members[0].out_dir.name if len(members) == 1 else f"stack of {len(members)}"
    shown = Progress(label, members[0].start_step, max_steps, members[0].target_metric or "val/auc")
    try:
        with stop:  # a stop signal is honoured between steps, and deferred while results are being written
            t_loop, c_loop = time.perf_counter(), time.process_time()
            window = (time.perf_counter(), members[0].start_step)  # since the last log point: (time, step)
            for step in range(members[0].start_step, max_steps):
                # stop between steps (or before the first: a signal while the stack was loading)
                if stop.requested:
                    clock["train"] += time.perf_counter() - window[0]
                    for m in stack.members:
                        m.status = "interrupted"
                    break
                # the batch: a new epoch gives each member its own order
                active = stack.members
                if step % spe == 0 or active[0].perm is None:
                    batches.new_epoch(rt.device)
                # forward, backward, update: no host sync from here to the update
                skip = [m.skip_nonfinite for m in active] if any(m.skip_nonfinite for m in active) else None
                with rt.no_sync():
                    z = train_step(stack, batches, step % spe, bs, step, stack.monitor.wants_detail(step), rt.amp,
                                   any(m.grads_every_step for m in active), skip)
                done = step + 1
                step_records(active, z, done)
                # log: the monitors' window. An interrupt logs and evaluates nothing extra: the unread window goes
                # into the checkpoint, so that a resumed run logs exactly what an uninterrupted one would.
                if done % rt.log_every == 0 or done == max_steps:
                    windows = stack.monitor.read_all()  # the host read: the device's queued work is done here
                    clock["train"] += time.perf_counter() - window[0]
                    for k, (m, values) in enumerate(zip(active, windows, strict=True)):
                        log_point(m, values, stack.monitor.first_nonfinite[k], done, window)
                    shown.update(done, [w["train/loss"] for w in windows],
                                 [m.final.get(shown.metric) for m in active], len(active))
                    window = (time.perf_counter(), done)
                # evaluate (the diverged at once: their last values), then prune on validation
                rows = [k for k, m in enumerate(active)
                        if m.status == "diverged" or done % rt.eval_every == 0 or done == max_steps]
                if rows:
                    te = time.perf_counter()
                    evaluate(stack, batches, rows, done, rt)
                    clock["eval"] += time.perf_counter() - te
                    window = (time.perf_counter(), window[1])
                    if prune is not None and len(rows) == len(active) and done < max_steps:
                        for k in prune(done, active, members):
                            active[k].status = "pruned"
                # checkpoint, then drop the members that ended (diverged, pruned): results, recorded now
                save_checkpoints(stack, active, done)
                if not drop_ended(stack, batches, active, times):
                    break
            clock["loop"], clock["cpu"] = time.perf_counter() - t_loop, time.process_time() - c_loop
            finish_all(stack, times)
    except BaseException as e:
        shown.close()
        record_failed(stack, members, e, times)
        if (why := no_deterministic_kernel(e, rt)) is not None:
            raise why from None
        raise
    shown.close()
    # A stop signal also counts when it came during the last evaluation or the writing of the results.
    exit_code = stop.exit_code if stop.requested else 0
    for m in members:
        m.summary.update(exit_code=exit_code, out_dir=str(m.out_dir))
    return [m.summary for m in members]


def step_records(active: list[Member], z: torch.Tensor, done: int) -> None:
    """Each member's step count, and its logits' and probabilities' histograms when due."""
    for k, m in enumerate(active):
        m.steps = done
        if m.hist_every and done % m.hist_every == 0:
            zk = z[k].detach()
            m.log.histograms(done, zk, m.objective.probs(zk))


def save_checkpoints(stack: Engine, active: list[Member], done: int) -> None:
    """The running members whose trainer.ckpt_every falls on this step (the stack's state synced first)."""
    saving = [m for m in active if m.ckpt_every and done % m.ckpt_every == 0 and m.status == "running"]
    if saving:
        stack.sync()
        for m in saving:
            m.checkpoint(done)


def drop_ended(stack: Engine, batches: Batches, active: list[Member], times: Callable[[], dict]) -> bool:
    """Finish the members that diverged or were pruned and go on without them; False when none is left."""
    if not any(m.status in ("diverged", "pruned") for m in active):
        return True
    stack.sync()
    for m in active:
        if m.status in ("diverged", "pruned"):
            m.finish(times())
    keep = [k for k, m in enumerate(active) if m.status == "running"]
    if not keep:
        return False
    stack.drop(keep)
    batches.set_members(stack.members)
    return True


def finish_all(stack: Engine, times: Callable[[], dict]) -> None:
    """The loop's end: each member still in the stack gets its status, its last checkpoint and its summary."""
    stack.sync()
    for m in [m for m in stack.members if not m.finished]:
        if m.status == "running":
            m.status = end_status(m)
        if m.status in ("completed", "interrupted"):
            m.checkpoint(m.steps)
        m.finish(times())


def record_failed(stack: Engine, members: list[Member], e: BaseException, times: Callable[[], dict]) -> None:
    """An exception in the loop: every unfinished member ends 'failed' with the error, its summary written
    (after a full disk, from its last checkpoint)."""
    with contextlib.suppress(Exception):  # what the stack holds of each member: as far as it can be had
        stack.sync()
    for m in members:
        if not m.finished:
            if m.status != "diverged":
                m.status, m.summary["error"] = "failed", str(e) if isinstance(e, DiskFull) else \
                    f"{type(e).__name__}: {e}"
            if isinstance(e, DiskFull):
                m.back_to_checkpoint()
            m.finish(times())


def no_deterministic_kernel(e: BaseException, rt: Runtime) -> ConfigError | None:
    """trainer.deterministic=true met an operation without a deterministic kernel: said as the config's fault."""
    if isinstance(e, RuntimeError) and "does not have a deterministic implementation" in str(e) and \
            torch.are_deterministic_algorithms_enabled():
        return ConfigError(
            f"trainer.deterministic=true, but an operation of this run has no deterministic kernel on "
            f"{rt.device.type}: PyTorch says \"{str(e).split('.')[0]}\". Use trainer.deterministic=false (runs "
            "are then reproducible only up to floating-point summation order), or another model/loss.")
    return None
