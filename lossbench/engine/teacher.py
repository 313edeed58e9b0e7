"""The teacher of a distillation run (``loss=kd``, ``loss.teacher=<run dir>``): a completed lossbench run.

:func:`check` (config validation, before any data is loaded) refuses a directory that is missing, holds no
completed run or no checkpoint, or was trained on another task. :func:`attach` (after the data is loaded)
rebuilds the teacher's model from its checkpoint's config, loads its weights (``store.load_checkpoint``),
computes its logits once for the training and validation sets (eval mode, float32, on the run's device) and
returns the dataset with them packed into its targets (``losses.pack_teacher``): the student's loop batches
them with the samples and never runs the teacher.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lossbench.config import keys
from lossbench.errors import ConfigError
from lossbench.losses import registry as loss_registry
from lossbench.store import CHECKPOINT, SUMMARY, check_run_dir, read_json

# Data keys that define the inputs and labels: a teacher trained with other values saw another task.
SAME_TASK = tuple(k.removeprefix("data.") for k in keys.keys_with(keys.Role.TASK))
DATA_FAMILY = {"synthetic": "synthetic", "imbalanced": "synthetic", "mnist": "mnist"}  # else the name itself


def check(cfg: DictConfig) -> dict:
    """The teacher run's summary, if loss.teacher names a completed, compatible run; else a ConfigError."""
    path = cfg.loss.teacher
    if path is None:
        raise ConfigError(
            f"loss={cfg.loss.name} needs a teacher: set loss.teacher=<run dir> to the directory of a completed "
            "lossbench run on the same data (e.g. python -m lossbench data=mnist loss=ce "
            "hydra.run.dir=outputs/teacher, then loss.teacher=outputs/teacher).")
    from lossbench.runs.record import summary_problem

    run_dir = Path(str(path))
    try:
        check_run_dir(run_dir)  # no link, FIFO or device is opened
    except ConfigError as e:
        raise ConfigError(f"loss.teacher={path}: {e}") from None
    summary = read_json(run_dir / SUMMARY)
    if summary is None:
        where = "does not exist" if not run_dir.exists() else f"holds no readable {SUMMARY}"
        raise ConfigError(f"loss.teacher={path}: the directory {where}; point it at a completed lossbench run.")
    if problem := summary_problem(summary):
        raise ConfigError(f"loss.teacher={path}: its {SUMMARY} is not a run's record ({problem}); point it at a "
                          "completed lossbench run.")
    status = summary.get("status")
    if status != "completed":
        raise ConfigError(
            f"loss.teacher={path}: the teacher run's status is {status!r}; a teacher must be a completed run "
            "(finish or resume it with trainer.resume=true, or train another).")
    if not (run_dir / CHECKPOINT).exists():
        raise ConfigError(f"loss.teacher={path}: no {CHECKPOINT} in the teacher run (its weights are needed).")
    tcfg = summary.get("config") or {}
    if summary.get("head") != "softmax":
        raise ConfigError(
            f"loss.teacher={path}: the teacher has a {summary.get('head')} head; distillation matches softmax "
            "distributions softmax(v/T), so the teacher must be a softmax run (e.g. loss=ce).")
    tdata, data = tcfg.get("data") or {}, OmegaConf.to_container(cfg.data, resolve=True)
    if DATA_FAMILY.get(tdata.get("name"), tdata.get("name")) != DATA_FAMILY.get(data["name"], data["name"]):
        raise ConfigError(
            f"loss.teacher={path}: the teacher was trained on data={tdata.get('name')}, this run uses "
            f"data={data['name']}; a teacher must have seen the same inputs and labels.")
    diff = [f"data.{k}: teacher {tdata.get(k, 'multiclass' if k == 'task' else None)!r}, student {data.get(k)!r}"
            for k in SAME_TASK if k in data and tdata.get(k, "multiclass" if k == "task" else None) != data[k]]
    if diff:
        raise ConfigError(
            f"loss.teacher={path}: the teacher was trained on another task ({'; '.join(diff)}). Distil from a "
            "teacher trained with the same data settings, or change this run's to match.")
    return summary


def attach(cfg: DictConfig, ds, device, batch_size: int = 8192):
    """ds with t_train / t_val / t_test = the labels packed with the teacher's logits (loss=kd*); ds itself otherwise."""
    if not loss_registry.get(cfg.loss.name).teacher:
        return ds
    import torch

    from lossbench import losses, models
    from lossbench.data import IGNORE_INDEX
    from lossbench.runs.record import read_checkpoint

    summary = check(cfg)
    run_dir = Path(str(cfg.loss.teacher))
    ck = read_checkpoint(run_dir / CHECKPOINT)  # loaded as data, and checked entry by entry
    if ck["config"].get("model") != (summary.get("config") or {}).get("model"):
        raise ConfigError(
            f"loss.teacher={cfg.loss.teacher}: its {CHECKPOINT} names another model than its {SUMMARY} "
            f"({ck['config'].get('model')} vs {(summary.get('config') or {}).get('model')}): the two files are "
            "not of one run. Point loss.teacher at an untouched completed run.")
    tcfg = OmegaConf.create(ck["config"])
    try:
        model = models.build(tcfg.model, ds.input_shape, loss_registry.n_outputs("softmax", ds.n_classes))
        model.load_state_dict(ck["model"])
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:
        first = str(e).split("\n")[1].strip() if "\n" in str(e) else str(e)
        raise ConfigError(
            f"loss.teacher={cfg.loss.teacher}: its weights do not fit a model for this data (input shape "
            f"{ds.input_shape}, {ds.n_classes} classes): {first}") from None
    model.to(device).eval()

    @torch.no_grad()
    def logits(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([model(x[i : i + batch_size].to(device)).float() for i in range(0, len(x), batch_size)])

    v_train, v_val = logits(ds.x_train), logits(ds.x_val)
    y_train, y_val = ds.y_train.to(device), ds.y_val.to(device)
    labelled = y_train != IGNORE_INDEX
    info = dict(ds.info)
    info["teacher"] = {
        "dir": str(run_dir), "loss": (summary.get("config") or {}).get("loss", {}).get("name"),
        "model": OmegaConf.to_container(tcfg.model), "val_accuracy": (summary.get("final") or {}).get("val/accuracy"),
        "train_accuracy": float((v_train.argmax(1)[labelled] == y_train[labelled]).float().mean()),
        "val_accuracy_here": float((v_val.argmax(1) == y_val).float().mean()),
    }
    t_test = None
    if ds.x_test is not None:  # the teacher's own test accuracy (its final weights, as distilled), never chosen on
        y_test, v_test = ds.y_test.to(device), logits(ds.x_test)
        info["teacher"]["test_accuracy_here"] = float((v_test.argmax(1) == y_test).float().mean())
        t_test = losses.pack_teacher(y_test, v_test)
    return replace(ds, t_train=losses.pack_teacher(y_train, v_train), t_val=losses.pack_teacher(y_val, v_val),
                   t_test=t_test, info=info)
