"""One training run, top to bottom: validate, load data onto the device, train, evaluate, log, summarise.

The hot loop never synchronises with the host: losses and monitor counters accumulate on the device and
are read only at log and eval points (and, with trainer.on_nonfinite=skip, once per step to decide).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from lossbench import ConfigError, data, losses, metrics, models, teacher
from lossbench.config import LOWER_IS_BETTER, flatten, resolve_head, validate
from lossbench.logger import Logger
from lossbench.numerics import Monitor
from lossbench.signals import StopRequest
from lossbench.store import (
    CHECKPOINT,
    SUMMARY,
    load_checkpoint,
    read_json,
    run_lock,
    save_checkpoint,
    write_json,
)

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
FINISHED = ("completed", "diverged")  # final results: trainer.skip_completed does not train them again
# Config keys a resume may change: they do not change what is trained (max_steps/epochs: train longer).
RESUME_MAY_CHANGE = ("trainer.resume", "trainer.skip_completed", "trainer.max_steps", "trainer.epochs",
                     "trainer.threads", "trainer.log_every", "trainer.eval_every", "trainer.eval_batch_size",
                     "trainer.ckpt_every", "trainer.device", "trainer.sync_debug", "data.root", "data.download",
                     "logger.", "numerics.")
BCE_AUTOCAST_REFUSAL = (
    "torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast on CUDA "
    "(PyTorch raises for them under torch.autocast): a sigmoid followed by BCE in half precision saturates "
    "and its gradient divides by p(1-p), which underflows. Fix: use loss=bce_logits (BCEWithLogitsLoss, "
    "autocast-safe), or trainer.precision=fp32."
)


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
        if loss == "bce":
            raise ConfigError(f"trainer.precision={precision} with loss=bce on CUDA: {BCE_AUTOCAST_REFUSAL}")
    if not torch.amp.is_autocast_available(device.type):
        raise ConfigError(
            f"trainer.precision={precision}: autocast is not available on {device.type}. Use trainer.precision=fp32."
        )


def make_optimizer(oc: DictConfig, params) -> torch.optim.Optimizer:
    if oc.name == "sgd":
        return torch.optim.SGD(params, lr=oc.lr, momentum=oc.momentum, weight_decay=oc.weight_decay)
    cls = torch.optim.Adam if oc.name == "adam" else torch.optim.AdamW
    params = list(params)
    # Fused: one kernel per parameter instead of a handful of ops (about 20% less CPU time per MLP step).
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return cls(params, lr=oc.lr, betas=(oc.momentum, 0.999), weight_decay=oc.weight_decay, fused=fused or None)


@torch.no_grad()
def predict_logits(model, x: torch.Tensor, batch_size: int, amp) -> torch.Tensor:
    was_training = model.training
    model.eval()
    with amp():
        z = torch.cat([model(x[i : i + batch_size]).float() for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return z


def evaluate(model, objective, ds: data.Dataset, head: str, batch_size: int, amp) -> tuple[dict, torch.Tensor]:
    """Validation metrics (host floats) and the logits they came from."""
    z = predict_logits(model, ds.x_val, batch_size, amp)
    with torch.no_grad():
        out = {"loss": float(objective(z, ds.val_targets))}
    out.update(metrics.evaluate(z, ds.y_val, head, ds.n_classes))
    return {f"val/{k}": v for k, v in out.items()}, z


def better(metric: str, new: float, old: float | None) -> bool:
    if not math.isfinite(new):
        return False
    if old is None or not math.isfinite(old):
        return True
    return new < old if metric in LOWER_IS_BETTER else new > old


def reached(metric: str, value: float, target: float) -> bool:
    return math.isfinite(value) and (value <= target if metric in LOWER_IS_BETTER else value >= target)


def check_resumable(ck: dict, resolved: dict, device: torch.device, max_steps: int, run_dir: Path) -> None:
    """A checkpoint continues only the run it came from: same config (up to RESUME_MAY_CHANGE), same device
    type, and steps left to train."""
    old, new = flatten(ck["config"]), flatten(resolved)
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(old.keys() | new.keys())
               if old.get(k) != new.get(k) and not k.startswith(RESUME_MAY_CHANGE)]
    if changed:
        raise ConfigError(
            f"Cannot resume {run_dir}: the config differs from the checkpoint's ({'; '.join(changed)}). A resume "
            "must repeat the original run's overrides (they are in <run dir>/.hydra/overrides.yaml); only "
            f"{', '.join(k.rstrip('.') for k in RESUME_MAY_CHANGE)} may change. To train a different config, "
            "start a new run."
        )
    if ck["device"] != device.type:
        raise ConfigError(
            f"Cannot resume {run_dir} on {device.type}: its checkpoint was written on {ck['device']} (the "
            f"random-number state belongs to that device). Resume with trainer.device={ck['device']}."
        )
    if ck["step"] >= max_steps:
        raise ConfigError(
            f"Nothing to resume in {run_dir}: its checkpoint is at step {ck['step']} and this config trains "
            f"{max_steps} steps. Raise trainer.max_steps (or trainer.epochs) to train it further."
        )


def run(cfg: DictConfig, out_dir: Path, jobs: int = 1) -> dict:
    """Train and evaluate one configuration. Writes out_dir/summary.json (atomically) and TensorBoard
    events under out_dir/tb; returns the summary. Raises LossbenchError for bad input, before training."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    validate(cfg)
    resume = cfg.trainer.resume
    if resume and resume is not True:
        out_dir = Path(str(resume))  # trainer.resume=<run dir>: continue that run, in that directory
    if resume and not (out_dir / CHECKPOINT).exists():
        raise ConfigError(
            f"trainer.resume={str(resume).lower() if resume is True else resume}: no checkpoint at "
            f"{out_dir / CHECKPOINT}. Point trainer.resume at a run "
            "directory that holds one (trainer.resume=true means this run's hydra.run.dir), or drop "
            "trainer.resume to start afresh."
        )
    with run_lock(out_dir):  # two processes never write into one directory at once
        return _run(cfg, out_dir, jobs, t0)


def _run(cfg: DictConfig, out_dir: Path, jobs: int, t0: float) -> dict:
    tc, head = cfg.trainer, resolve_head(cfg)

    # --- resume / skip ---------------------------------------------------------------------------------
    resume_dir = out_dir if tc.resume else None
    previous = read_json(out_dir / SUMMARY)
    # A job that submitit (SLURM, or submitit_local) requeued after a preemption or timeout runs again in its
    # own directory and must continue from its checkpoint: under submitit, skip_completed is implied.
    if (tc.skip_completed or os.environ.get("SUBMITIT_EXECUTOR")) and resume_dir is None:
        if previous and previous.get("status") in FINISHED:
            print(f"lossbench: {out_dir} already holds a {previous['status']} run; skipped "
                  "(trainer.skip_completed=true).")
            return {**previous, "skipped": True}
        if (out_dir / CHECKPOINT).exists():
            resume_dir = out_dir  # an unfinished job of an interrupted or requeued sweep: continue it
        # else: an attempt that left no checkpoint (failed, killed early): start it again from step 0
    elif previous and resume_dir is None:
        raise ConfigError(
            f"{out_dir} already holds a run (status {previous.get('status')}); lossbench never writes two runs "
            "into one directory. Use trainer.resume=true to continue it, trainer.skip_completed=true in a "
            "rerun sweep, or another hydra.run.dir."
        )

    # --- device, precision, seeds ------------------------------------------------------------------------
    device = pick_device(tc.device)
    check_precision(tc.precision, device, cfg.loss.name)
    torch.set_num_threads(tc.threads or max(1, (os.cpu_count() or 1) // max(1, jobs)))
    if tc.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(bool(tc.deterministic))  # reset too: sweep jobs share a process
    torch.manual_seed(cfg.seed)
    amp_dtype = AMP_DTYPES.get(tc.precision)

    def amp():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=amp_dtype)

    # --- data, model, loss, optimiser -------------------------------------------------------------------------
    ds = data.load(cfg.data)
    counts, n_labelled = ds.class_counts(), ds.n_labelled()
    objective = losses.build(cfg.loss, head, ds.n_classes, counts, n_labelled, multilabel=ds.multilabel,
                             partial=ds.partial()).to(device)
    ds = teacher.attach(cfg, ds.to(device), device, tc.eval_batch_size)  # loss=kd: the teacher's logits as targets
    model = models.build(cfg.model, ds.input_shape, models.n_outputs(head, ds.n_classes, ds.multilabel))
    models.init_head_bias(model, cfg.model.head_bias, head, counts, n_labelled)
    model.to(device)
    optimizer = make_optimizer(cfg.optim, model.parameters())
    scaler = torch.amp.GradScaler(device.type, enabled=tc.precision == "fp16")
    check_sync = bool(tc.get("sync_debug")) and device.type == "cuda"
    if check_sync and (tc.on_nonfinite == "skip" or tc.precision == "fp16"):
        raise ConfigError(
            "trainer.sync_debug=true checks that no training step synchronises with the host, but "
            "trainer.on_nonfinite=skip (a per-step decision on the host) and precision=fp16 (the GradScaler "
            "reads its inf check each step) synchronise by design. Use on_nonfinite=stop or continue and "
            "precision=fp32 or bf16 for the check."
        )
    step_model = torch.compile(model) if tc.compile else model

    n_train, bs = len(ds.y_train), min(tc.batch_size, len(ds.y_train))
    steps_per_epoch = n_train // bs
    max_steps = tc.epochs * steps_per_epoch if tc.epochs else tc.max_steps
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    monitor = Monitor(device, objective, cfg.numerics.enabled, cfg.numerics.every, scaled_grads=scaler.is_enabled())
    params = [p for p in model.parameters() if p.requires_grad]

    start_step, perm, best, steps_to_target, history = 0, None, {}, None, []
    if resume_dir is not None:
        ck = load_checkpoint(resume_dir / CHECKPOINT)
        check_resumable(ck, OmegaConf.to_container(cfg, resolve=True), device, max_steps, resume_dir)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        gen.set_state(ck["generator"])
        torch.set_rng_state(ck["torch_rng"])
        perm = ck["perm"].to(device)
        start_step, best, steps_to_target = ck["step"], ck["best"], ck["steps_to_target"]
        monitor.load_state_dict(ck["monitor"])
        history = ck["history"]
        print(f"lossbench: resuming {resume_dir} from step {start_step}")

    def checkpoint(step: int) -> None:
        save_checkpoint(out_dir / CHECKPOINT, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "generator": gen.get_state(), "torch_rng": torch.get_rng_state(), "perm": perm, "step": step,
            "best": best, "steps_to_target": steps_to_target, "monitor": monitor.state_dict(),
            "history": history, "config": OmegaConf.to_container(cfg, resolve=True), "device": device.type,
        })

    # A directory with events from an earlier attempt (resume, or a restart after a failure): TensorBoard
    # drops what that attempt logged after start_step (the checkpoint's step, whose own points are kept), so
    # the curves continue without duplicates.
    purge = start_step + 1 if any((out_dir / "tb").glob("events.out.tfevents.*")) else None
    log = Logger(out_dir / "tb", cfg.logger.enabled, cfg.logger.flush_secs, purge_step=purge)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    summary = {
        "status": "running", "config": resolved, "head": head, "steps": start_step, "max_steps": max_steps,
        "device": str(device), "precision": tc.precision, "threads": torch.get_num_threads(), "data": {
            "n_train": n_train, "n_val": len(ds.y_val), "n_classes": ds.n_classes,
            "train_class_counts": counts.tolist(), "task": ds.task, **ds.info,
        },
        "n_params": sum(p.numel() for p in params),
    }
    write_json(out_dir / SUMMARY, summary)
    final: dict[str, float] = {k: v for k, v in history[-1].items() if k != "step"} if history else {}
    step, status, train_time, eval_time, z_val = start_step, "completed", 0.0, 0.0, None
    # Plain Python values for the hot loop: reading a DictConfig attribute costs ~20 us, a few per step.
    on_nonfinite, log_every, eval_every, ckpt_every = tc.on_nonfinite, tc.log_every, tc.eval_every, tc.ckpt_every
    hist_every = cfg.numerics.hist_every
    skip_nonfinite = on_nonfinite == "skip" and not scaler.is_enabled()
    # Gradients are checked every step only where a per-step answer is needed (see numerics.py): the skip
    # decision, and fp16's count of the steps the GradScaler skips.
    grads_every_step = skip_nonfinite or scaler.is_enabled()
    loop_time, loop_cpu, t_loop, c_loop = 0.0, 0.0, time.perf_counter(), time.process_time()
    try:
        if start_step == 0:
            log.layout()
        with StopRequest() as stop:
            t_window, last_logged = time.perf_counter(), start_step
            for step in range(start_step, max_steps):
                if step % steps_per_epoch == 0 or perm is None:
                    perm = torch.randperm(n_train, device=device, generator=gen)
                if check_sync:  # from here to the optimiser's update: any host sync raises
                    torch.cuda.set_sync_debug_mode("error")
                i = step % steps_per_epoch
                idx = perm[i * bs : (i + 1) * bs]
                xb, yb = ds.x_train[idx], ds.train_targets[idx]
                detail = monitor.wants_detail(step)

                objective.begin_step(step)
                with amp():
                    z = step_model(xb)
                    loss = objective(z, yb)
                if detail:
                    z.retain_grad()
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                loss_seen, grad_norms = monitor.observe(loss), None
                if detail or grads_every_step:
                    grad_norms = monitor.observe_grads([p.grad for p in params if p.grad is not None])
                if detail:
                    monitor.observe_detail(loss, z, yb, z.grad)
                if skip_nonfinite and not bool(torch.isfinite(loss_seen) & torch.isfinite(grad_norms).all()):
                    pass  # skip this update (the GradScaler already skips them under fp16)
                else:
                    scaler.step(optimizer)
                scaler.update()
                if check_sync:  # log and eval points read from the device by design
                    torch.cuda.set_sync_debug_mode("default")
                done = step + 1

                if hist_every and done % hist_every == 0:
                    log.histograms(done, z, objective.probs(z.detach()))
                # An interrupt logs and evaluates nothing extra: the unread monitor window goes into the
                # checkpoint, so that a resumed run logs exactly what an uninterrupted one would.
                if done % log_every == 0 or done == max_steps:
                    values = monitor.read()
                    now = time.perf_counter()
                    train_time += now - t_window
                    values["perf/samples_per_sec"] = (done - last_logged) * bs / max(now - t_window, 1e-9)
                    if scaler.is_enabled():
                        values["amp/scale"] = scaler.get_scale()
                        values["amp/skipped_steps"] = values["numerics/nonfinite_grad"]
                    log.scalars(values, done)
                    t_window, last_logged = time.perf_counter(), done
                    if monitor.first_nonfinite_step is not None and on_nonfinite == "stop":
                        status = "diverged"
                if status == "diverged" or done % eval_every == 0 or done == max_steps:
                    te = time.perf_counter()
                    final, z_val = evaluate(model, objective, ds, head, tc.eval_batch_size, amp)
                    log.scalars(final, done)
                    history.append({"step": done, **final})
                    for k, v in final.items():
                        if better(k, v, best.get(k)):
                            best[k] = v
                    if tc.target_metric and steps_to_target is None and reached(
                        tc.target_metric, final.get(tc.target_metric, math.nan), tc.target_value
                    ):
                        steps_to_target = done
                    eval_time += time.perf_counter() - te
                    t_window = time.perf_counter()
                if ckpt_every and done % ckpt_every == 0 and status != "diverged":
                    checkpoint(done)
                if status == "diverged":
                    break
                if stop.requested and done < max_steps:
                    status = "interrupted"
                    train_time += time.perf_counter() - t_window
                    break
            else:
                done = max(start_step, max_steps)
                if on_nonfinite == "continue" and monitor.first_nonfinite_step is not None:
                    status = "diverged"  # it went on to the end, but a loss or gradient was NaN/Inf on the way
            loop_time = time.perf_counter() - t_loop  # steps, monitors, logging, evaluation
            loop_cpu = time.process_time() - c_loop  # the same, in this process's CPU time
            step = done
            if status in ("completed", "interrupted"):
                checkpoint(step)
            exit_code = stop.exit_code if status == "interrupted" else 0
    except BaseException as e:
        status = "failed"
        summary["error"] = f"{type(e).__name__}: {e}"
        if tc.deterministic and isinstance(e, RuntimeError) and "does not have a deterministic implementation" in str(e):
            raise ConfigError(
                f"trainer.deterministic=true, but an operation of this run has no deterministic kernel on "
                f"{device.type}: PyTorch says \"{str(e).split('.')[0]}\". Use trainer.deterministic=false (runs "
                "are then reproducible only up to floating-point summation order), or another model/loss."
            ) from None
        raise
    finally:
        if check_sync:
            torch.cuda.set_sync_debug_mode("default")
        summary.update({
            "status": status, "steps": step, "wall_time_s": time.perf_counter() - t0,
            "train_time_s": train_time, "eval_time_s": eval_time, "loop_time_s": loop_time,
            "loop_cpu_s": loop_cpu,
            "samples_per_sec": (step - start_step) * bs / train_time if train_time > 0 else None,
            "final": final, "best": best,
            "convergence": {"target_metric": tc.target_metric, "target_value": tc.target_value,
                            "steps_to_target": steps_to_target},
            "numerics": monitor.summary(), "history": history,
        })
        if scaler.is_enabled():
            summary["amp"] = {"final_scale": scaler.get_scale(), "skipped_steps": monitor.totals["nonfinite_grad"]}
        if z_val is not None and status != "failed":
            summary["per_class_recall"] = metrics.per_class_recall(z_val, ds.y_val, head, ds.n_classes)
            if ds.n_classes == 2 and not ds.multilabel and status != "interrupted":
                log.pr_curve(ds.y_val, metrics.scores(z_val, head), step)
        if status != "interrupted":  # an interrupted run writes its hparams when it ends (after a resume)
            hp_metrics = {k: v for k, v in final.items()}
            hp_metrics["hparam/steps_to_target"] = float(steps_to_target) if steps_to_target else math.nan
            hp_metrics["hparam/diverged"] = float(status == "diverged")
            log.hparams({**_hparams(resolved), "head": head, "status": status}, hp_metrics)
        log.close()
        write_json(out_dir / SUMMARY, summary)
    summary["exit_code"], summary["out_dir"] = exit_code, str(out_dir)
    return summary


def _hparams(resolved: dict) -> dict:
    """The config entries worth a column in TensorBoard's HPARAMS tab."""
    keep = ("data", "model", "loss", "optim", "seed")
    out = {k: resolved[k] for k in keep if k in resolved}
    out["trainer"] = {k: resolved["trainer"][k] for k in ("batch_size", "precision", "max_steps", "epochs")}
    return out
