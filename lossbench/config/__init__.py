"""Up-front validation: a bad command line or config fails here, in one line, before anything is created.

Three layers, each naming the key:
- types: every key's type is part of the config (lossbench/config/schema.py), so Hydra refuses `seed=abc` while
  composing; `preflight` (preflight.py) composes the command line as `hydra.main` will and turns Hydra's message into one
  ConfigError;
- ranges and choices of single keys (RANGES, the *_CHOICES tuples) and cross-key rules: `validate`;
- what needs the data (class-weight lengths, an imbalance leaving a class empty, the MNIST files) is checked
  next to the code that uses it (data.py, lossbench/losses/factory.py), still before the first training step.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import fields
from numbers import Number
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from lossbench.config import schema
from lossbench.errors import ConfigError
from lossbench.losses import registry as loss_registry
from lossbench.store import path_problem
from lossbench.values import COUNT, INT64_MAX, NON_NEGATIVE_INT, POSITIVE, Range, show

CONFIGS = Path(__file__).resolve().parents[2] / "configs"  # the YAML configs, beside the package

# The losses' tables (names, natural heads, valid and multi-label pairs with their reasons, ranges of their keys,
# their own rules) derive from their registrations: lossbench.losses.registry, the built-in ones in
# lossbench/losses/catalog.py.
HEADS = loss_registry.HEADS
REAL_DATASETS = ("arrays", "openml", "breast_cancer", "digits", "yeast", "shuttle")  # lossbench/data/real.py
DATASETS = ("synthetic", "imbalanced", "longtail", "mnist", *REAL_DATASETS)
MODELS = ("mlp", "linear", "cnn")
OPTIMS = ("sgd", "adam", "adamw", "pesg")
PRECISIONS = ("fp32", "bf16", "fp16")
ON_NONFINITE = ("stop", "skip", "continue")
REDUCTIONS = ("mean", "sum", "num_pos")  # num_pos: loss=focal on a sigmoid head only (a cross-key rule)
TASKS = ("multiclass", "binary", "multilabel")
TASKS_OF = {"synthetic": ("multiclass", "multilabel"), "imbalanced": ("multiclass", "multilabel"),
            "longtail": ("multiclass",), "mnist": TASKS,  # binary is data.n_classes=2 for the synthetic sets
            "breast_cancer": ("binary",), "digits": ("multiclass",), "yeast": ("multilabel",), "shuttle": ("binary",)}
SOFT_LABELS = ("noise_aware", "bayes")
# The metric catalogue, in the report's column order (every evaluation computes these; lossbench/metrics.py)
METRICS = ("loss", "auc", "ap", "accuracy", "balanced_accuracy", "nll", "ece")
# multi-label runs also have these (metrics.evaluate_multilabel); there accuracy is the subset accuracy
MULTILABEL_METRICS = ("f1_micro", "f1_macro", "hamming_loss", "lrap", "auc_micro")
LOWER_IS_BETTER = {"val/loss", "val/nll", "val/ece", "val/hamming_loss", "val/posthoc/nll", "val/posthoc/ece"}
# the test split's metrics, named as validation's (reported only: never compared to choose)
LOWER_IS_BETTER |= {"test/" + k.removeprefix("val/") for k in LOWER_IS_BETTER}
BOUNDED_METRICS = {"val/auc", "val/ap", "val/accuracy", "val/balanced_accuracy", "val/ece",
                   *(f"val/{m}" for m in MULTILABEL_METRICS)}  # in [0, 1]
IMBALANCE_PROFILES = ("exp", "step")
MNIST_LABELS = 10
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


# The range of every number in the config (a list's entries each), checked whenever the key is set; the loss keys'
# ranges are in each loss's registration (range_of). A test (tests/test_config_schema.py) fails for a number in
# lossbench/config/schema.py without a range.
RANGES: dict[str, Range] = {
    "seed": NON_NEGATIVE_INT,
    "data.n_classes": Range(2, INT64_MAX),
    "data.n_features": COUNT,
    "data.n_train": COUNT,
    "data.n_val": COUNT,
    "data.separation": Range(0),
    "data.scale": POSITIVE,
    "data.imbalance_ratio": Range(1),  # majority : minority, 1 = balanced
    "data.task_seed": NON_NEGATIVE_INT,
    "data.seed": NON_NEGATIVE_INT,
    "data.positive_classes": Range(0, MNIST_LABELS - 1),
    "model.init_scale": POSITIVE,
    "model.hidden": COUNT,  # a width of 0 would train a constant model
    "model.channels": COUNT,
    "model.dropout": Range(0, 1, hi_open=True),
    "data.jitter": Range(0, INT64_MAX),  # pixels; below the image side (a cross-key rule below)
    "optim.lr": POSITIVE,
    "optim.weight_decay": Range(0),
    "optim.momentum": Range(0),  # adam/adamw: beta1, in [0, 1) (a cross-key rule below)
    "trainer.max_steps": COUNT,
    "trainer.epochs": COUNT,
    "trainer.batch_size": COUNT,
    "trainer.eval_every": COUNT,
    "trainer.log_every": COUNT,
    "trainer.eval_batch_size": COUNT,
    "trainer.ckpt_every": NON_NEGATIVE_INT,
    "trainer.target_value": Range(),  # [0, 1] for bounded metrics (a cross-key rule below)
    "trainer.threads": COUNT,  # at most the machine's cores (below)
    "numerics.every": COUNT,
    "numerics.hist_every": NON_NEGATIVE_INT,
    "logger.flush_secs": Range(1, 86_400),
    # multi-label tasks, training labels
    "data.n_labels": COUNT,
    "data.length": COUNT,
    "data.label_noise": Range(0, 1, hi_open=True),
    "data.unlabeled_frac": Range(0, 1, hi_open=True),
    "data.digits_per_image": COUNT,  # [lo, hi] within the grid's cells (a cross-key rule below)
    "data.grid": COUNT,
    # real data (lossbench/data/real.py)
    "data.val_frac": Range(0, 1, lo_open=True, hi_open=True),
    "data.test_frac": Range(0, 1, hi_open=True),
    "data.id": COUNT,
    "data.version": COUNT,
    # PESG and the positive-share sampler
    "optim.epoch_decay": Range(0),
    "optim.clip_value": POSITIVE,
    "optim.decay_steps": COUNT,
    "optim.decay_factor": Range(1),
    "trainer.pos_share": Range(0, 1, lo_open=True, hi_open=True),
    **{f"loss.{k}": r for k, r in loss_registry.BASE_RANGES.items()},  # the keys every loss has
}
class LossNames(Sequence):
    """loss.name's choices: every registered loss, also one registered after this module was imported."""

    def __getitem__(self, i):
        return loss_registry.names()[i]

    def __len__(self) -> int:
        return len(loss_registry.names())


# The valid values of every string key (a test checks that each string key has a rule).
METRIC_CHOICES = tuple(f"val/{m}" for m in (*METRICS, *MULTILABEL_METRICS))
CHOICES: dict[str, tuple[str, ...]] = {
    "head": HEADS,
    "objective_metric": METRIC_CHOICES,
    "data.name": DATASETS,
    "data.task": TASKS,
    "model.name": MODELS,
    "loss.name": LossNames(),
    "loss.reduction": REDUCTIONS,
    "data.imbalance_profile": IMBALANCE_PROFILES,
    "optim.name": OPTIMS,
    "trainer.precision": PRECISIONS,
    "trainer.on_nonfinite": ON_NONFINITE,
    "trainer.target_metric": METRIC_CHOICES,
    "data.soft_labels": SOFT_LABELS,
    # a loss's own string keys (loss.impl, loss.surrogate, loss.prior): in its registration
    **{f"loss.{k}": v for spec in loss_registry.specs() for k, v in spec.choices.items()},
}
# String keys whose values are not a fixed list: checked by their own rule (or any string is valid).
FREE_STRINGS = {
    "data.root": "a directory (null = ~/.cache/lossbench/data or $LOSSBENCH_DATA_DIR)",
    "trainer.device": "auto, cpu, cuda, cuda:N or mps",
    "data.path": "a .npz, .csv, .csv.gz, .parquet or .pt file (data=arrays; checked when the run starts)",
    "data.dataset": "an OpenML dataset name (data=openml)",
    "loss.teacher": "the run directory of a completed softmax run on the same task (checked when the run starts)",
    "model.init_from": "the run directory of a run whose checkpoint has this model's shape (checked when the run starts)",
}


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested dict -> {'a.b': value} (a resolved config as dotted keys)."""
    out: dict = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def choices(items) -> str:
    return ", ".join(sorted(items))


def resolve_head(cfg: DictConfig) -> str:
    """The head that will be used: the configured one, or the loss's natural head."""
    return cfg.head if cfg.head is not None else loss_registry.natural_head(cfg.loss.name)


def _is_number(x: Any) -> bool:
    return isinstance(x, Number) and not isinstance(x, bool)


def _out_of_range(value: Any, rng: Range, integer: bool) -> str | None:
    """Why value is not a number in rng ('an integer >= 1'), or None if it is."""
    if _is_number(value) and value in rng:
        return None
    if integer and _is_number(value) and rng.hi == INT64_MAX and value > INT64_MAX:
        return "at most 2**63 - 1 (a 64-bit integer)"
    if not _is_number(value) or not math.isfinite(value):
        return f"a finite number {rng}" if rng != Range() else "a finite number"
    return f"an integer {rng}" if integer else str(rng)


FLOAT32_MAX = 3.4028234663852886e38  # torch.finfo(torch.float32).max: weights, inputs and losses are float32
# Float keys whose too-large values are a result, not an error: an optimiser setting past float32's range makes
# the update infinite, and the run diverges (status diverged, exit 0) as any exploding learning rate does.
DIVERGE_WHEN_HUGE = ("optim.lr", "optim.weight_decay", "optim.momentum")
PATH_KEYS = ("trainer.resume", "loss.teacher", "data.root")


def _past_float32(key: str, value: Any) -> bool:
    return key not in DIVERGE_WHEN_HUGE and _is_number(value) and math.isfinite(value) and abs(value) > FLOAT32_MAX


def _check_number(key: str, value: Any, rng: Range, where: str = "") -> None:
    """A number, or each entry of a list of numbers, in its range (and, for a float, within float32's). where:
    ' for loss=<name>' when the range is that loss's and another loss gives the key another."""
    integer = key in schema.integer_keys()
    if not isinstance(value, (list, ListConfig)):
        if why := _out_of_range(value, rng, integer):
            raise ConfigError(f"{key} must be {why}{where}, got {show(value)}.")
        if not integer and _past_float32(key, value):
            raise ConfigError(f"{key}={show(value)} is past float32's range (|x| <= {FLOAT32_MAX:.4g}), in which "
                              "lossbench computes; it would be infinite. Use a smaller value.")
        return
    for v in value:
        if why := _out_of_range(v, rng, integer):
            raise ConfigError(f"each {key} entry must be {why}{where}, got {show(v)} in {key}={show(value)}.")
        if not integer and _past_float32(key, v):
            raise ConfigError(f"each {key} entry must be within float32's range (|x| <= {FLOAT32_MAX:.4g}), got "
                              f"{show(v)} in {key}={show(value)}.")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError with a one-line message if the config cannot train."""
    flat = {k: v for k, v in _leaves(cfg)}
    loss = cfg.loss.get("name")
    for key, value in flat.items():
        if (rng := range_of(key, loss)) is not None and value is not None:
            _check_number(key, value, rng, _range_owner(key, loss))
    own = loss_registry.get(loss).choices if loss in loss_registry.names() else {}
    for key, valid in [*CHOICES.items(), *((f"loss.{k}", v) for k, v in own.items())]:
        if flat.get(key) is not None and flat[key] not in valid:
            raise ConfigError(f"Unknown {key}={flat[key]!r}. Valid choices: {_choices_of(key, valid)}.")
    for group, options in schema.SCHEMAS.items():  # a typed node (as composed; a copy may be a plain dict)
        name, node_type = cfg[group].get("name"), OmegaConf.get_type(cfg[group])
        if name is not None and node_type is not dict and options.get(name) not in (None, node_type):
            raise ConfigError(
                f"{group}.name={name!r} does not match the keys of the chosen {group} config. Choose the {group} "
                f"with {group}=<name> (valid choices: {choices(options)}), not with {group}.name."
            )

    head = resolve_head(cfg)
    if (head, loss) not in (pairs := loss_registry.valid_pairs()):
        why = loss_registry.why_invalid(head, loss) or "this pair is not supported"
        valid = ", ".join(f"head={h} loss={lo}" for h, lo in sorted(pairs))
        raise ConfigError(f"Invalid head/loss pair head={head} loss={loss}: {why}. Valid pairs: {valid}.")

    if cfg.model.name == "cnn" and cfg.data.name != "mnist":
        raise ConfigError(
            f"model=cnn needs image data, but data={cfg.data.name} gives feature vectors. "
            "Use data=mnist with model=cnn, or model=mlp|linear."
        )
    if cfg.model.name == "cnn" and len(cfg.model.channels) != 2:
        raise ConfigError(f"model.channels must list the 2 conv layers' channels, e.g. [32, 64], got "
                          f"{show(cfg.model.channels)}.")
    hb = cfg.model.head_bias
    if hb is not None and hb != "prior" and not (_is_number(hb) and math.isfinite(hb)):
        raise ConfigError(f"model.head_bias must be null, prior or a finite number, got {show(hb)}.")
    if _past_float32("model.head_bias", hb):
        raise ConfigError(f"model.head_bias={show(hb)} is past float32's range (|x| <= {FLOAT32_MAX:.4g}); it "
                          "initialises float32 weights, which would be infinite. Use a smaller value.")
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, str) and (why := path_problem(value)):
            raise ConfigError(f"{key}={value[:60]}{'...' if len(value) > 60 else ''} cannot be a path: {why}.")
    _validate_cosine_head(cfg, hb)

    _validate_loss(cfg, head)
    _validate_data(cfg.data)
    _validate_labels(cfg, head)
    _validate_auc(cfg)

    if cfg.optim.name in ("adam", "adamw") and cfg.optim.momentum >= 1:
        raise ConfigError(f"optim.momentum is Adam's beta1 for optim={cfg.optim.name} and must be in [0, 1), "
                          f"got {cfg.optim.momentum}.")

    t = cfg.trainer
    if not DEVICE.fullmatch(t.device):
        raise ConfigError(f"Unknown trainer.device={t.device!r}. Valid choices: auto, cpu, cuda, cuda:N, mps.")
    cores = os.cpu_count() or 1
    if t.threads is not None and t.threads > cores:
        raise ConfigError(f"trainer.threads={t.threads} but this machine has {cores} cores: use at most "
                          f"{cores}, or null for cores / parallel jobs.")
    if t.target_metric in BOUNDED_METRICS and not 0 <= t.target_value <= 1:
        raise ConfigError(f"trainer.target_value must be in [0, 1] for trainer.target_metric={t.target_metric}, "
                          f"got {t.target_value}.")
    if t.target_metric in LOWER_IS_BETTER - BOUNDED_METRICS and t.target_value < 0:
        raise ConfigError(f"trainer.target_value must be >= 0 for trainer.target_metric={t.target_metric}, "
                          f"got {t.target_value}.")
    if not isinstance(t.resume, (bool, str)) or t.resume == "":
        raise ConfigError(f"trainer.resume must be false, true (this run's directory) or the path of a run "
                          f"directory, got {show(t.resume)}.")
    _check_memory(cfg)


def _leaves(cfg: DictConfig) -> list[tuple[str, Any]]:
    """(dotted key, value) of the keys lossbench checks: the root's own and the groups' (not hydra/study)."""
    out = [(k, cfg[k]) for k in ("seed", "head", "objective_metric") if k in cfg]
    for group in schema.SCHEMAS:
        out += [(f"{group}.{k}", v) for k, v in cfg[group].items()]
    return out


def _choices_of(key: str, valid: Sequence[str]) -> str:
    if key == "head":
        return f"head={choices(HEADS)}, or null for the loss's natural head"
    if key in ("trainer.precision", "loss.name", "data.name", "model.name", "optim.name"):
        group = key.split(".")[0] if key != "trainer.precision" else key
        return f"{group}={choices(CHOICES[key])}"
    if key == "data.soft_labels":
        return f"null, {choices(SOFT_LABELS)}"
    if key in ("objective_metric", "trainer.target_metric"):
        return ", ".join(METRIC_CHOICES) + (", or null for none" if key == "trainer.target_metric" else "")
    return choices(valid)


def range_of(key: str, loss: str | None = None) -> Range | None:
    """The range of a dotted key; loss.<key>: the one loss=<loss>'s registration gives it (its own, else the one
    every loss shares)."""
    if key.startswith("loss.") and loss in loss_registry.names():
        return loss_registry.get(loss).range_of(key.removeprefix("loss."))
    return RANGES.get(key)


def _range_owner(key: str, loss: str | None) -> str:
    """' for loss=<loss>' when another loss gives this key another range (loss.alpha: kd's [0, 1], focal's
    [-1, 1]), else ''."""
    if not key.startswith("loss.") or loss not in loss_registry.names():
        return ""
    k, mine = key.removeprefix("loss."), range_of(key, loss)
    shared = any(k in s.ranges and s.ranges[k] != mine for s in loss_registry.specs())
    return f" for loss={loss}" if shared else ""


def _validate_loss(cfg: DictConfig, head: str) -> None:
    lc = cfg.loss
    pw = lc.pos_weight
    if pw is not None:
        if head == "softmax":
            raise ConfigError(
                f"loss.pos_weight is for sigmoid (BCE) losses; loss={lc.name} with head=softmax has no "
                "positive class to weight. Use loss.class_weight (inverse | effective | a list) instead, "
                "or head=sigmoid with loss=bce_logits."
            )
        if pw not in ("auto", "sqrt_auto") and not (_is_number(pw) and pw in POSITIVE):
            raise ConfigError(
                f"loss.pos_weight={show(pw)} is not valid. Valid choices: null, auto (n_neg/n_pos of the training "
                "split), sqrt_auto (its square root), or a positive number, e.g. loss.pos_weight=5."
            )
    cw = lc.class_weight
    if isinstance(cw, ListConfig):
        if not len(cw):
            raise ConfigError("loss.class_weight=[] is empty: give one weight per class, or null for none.")
        _check_number("loss.class_weight", cw, Range(0))
        if not any(w > 0 for w in cw):
            raise ConfigError(f"loss.class_weight={show(cw)} must have at least one positive entry.")
    elif cw is not None and cw not in ("inverse", "effective"):
        raise ConfigError(
            f"Unknown loss.class_weight={show(cw)}. Valid choices: null, inverse, effective, or a list with "
            "one non-negative weight per class, e.g. loss.class_weight=[1.0,5.0]."
        )
    if lc.reduction == "num_pos" and (lc.name != "focal" or head != "sigmoid"):
        raise ConfigError(
            f"loss.reduction=num_pos (the sum divided by the batch's positive targets, RetinaNet's normalisation) is "
            f"for loss=focal on a sigmoid head; loss={lc.name} with head={head} takes loss.reduction=mean or sum"
            + (" (on a softmax head 'mean' already divides by the samples, one positive each)." if lc.name == "focal"
               else "."))
    spec = loss_registry.get(lc.name)
    if spec.binary_only and not _binary(cfg):
        raise ConfigError(f"loss={lc.name} ranks positives above negatives of a binary task; this task is not "
                          f"binary. Use {BINARY_HINT}.")
    if spec.check is not None:  # the loss's own cross-key rules, in its registration
        spec.check(cfg, head)
    _validate_softmax_options(lc, head)


def _validate_softmax_options(lc: DictConfig, head: str) -> None:
    """Deferred re-weighting and post-hoc logit adjustment: options of every loss on a softmax head."""
    for key, what in (("drw_step", "deferred re-weighting: class weights of a softmax loss from this step on"),
                      ("posthoc_tau", "post-hoc logit adjustment, argmax(z - tau log pi), of a softmax head")):
        value = lc.get(key)
        if value is not None and head != "softmax":
            raise ConfigError(f"loss.{key}={show(value)} is {what}; loss={lc.name} with head={head} is a sigmoid "
                              f"loss. Use head=softmax, or loss.{key}=null.")


def _validate_cosine_head(cfg: DictConfig, head_bias: Any) -> None:
    if not cfg.model.get("cosine_head", False):
        return
    scaled = [s.name for s in loss_registry.specs() if "cosine_head" in {f.name for f in fields(s.schema)}]
    if cfg.loss.name not in scaled:
        raise ConfigError(
            f"model.cosine_head=true bounds the logits to cosines in [-1, 1]; only loss={'|'.join(scaled)} scales "
            f"them back up (loss.s), so loss={cfg.loss.name} could never reach confident probabilities. Use "
            f"model.cosine_head=false, or loss={'|'.join(scaled)}."
        )
    if head_bias is not None:
        raise ConfigError("model.cosine_head=true has no output bias: use model.head_bias=null.")


def _validate_data(dc: DictConfig) -> None:
    if dc.name in REAL_DATASETS:
        _validate_real_data(dc)
    if dc.name in ("synthetic", "imbalanced", "longtail"):
        if dc.n_classes > min(dc.n_train, dc.n_val):
            raise ConfigError(
                f"data.n_classes={dc.n_classes} is more than data.n_train={dc.n_train} or data.n_val={dc.n_val}: "
                "every class needs a sample in each split. Lower data.n_classes or raise the split sizes."
            )
    if dc.name == "mnist":
        side = 28 * (dc.grid if dc.task == "multilabel" else 1)
        if dc.jitter >= side:
            raise ConfigError(f"data.jitter={dc.jitter} shifts the {side}x{side} training images by up to that many "
                              f"pixels, which moves a whole image out of view: use 0 (off) to {side - 1}; Hinton "
                              "et al. jittered MNIST by up to 2.")
        pos = list(dc.positive_classes)
        if not pos or len(set(pos)) != len(pos) or len(pos) == MNIST_LABELS:
            raise ConfigError(
                f"data.positive_classes={show(pos)} must be distinct MNIST labels in 0..9, at least one and not all "
                "ten (the rest are the negatives), e.g. data.positive_classes=[0]."
            )


def _validate_real_data(dc: DictConfig) -> None:
    if dc.val_frac + dc.test_frac >= 1:
        raise ConfigError(f"data.val_frac={dc.val_frac:g} + data.test_frac={dc.test_frac:g} must be below 1: the rest "
                          "of the training split is what trains.")
    if dc.name == "arrays" and not dc.path:
        raise ConfigError("data=arrays needs data.path=FILE: a .npz, .csv, .csv.gz, .parquet or .pt file "
                          "(docs/data.md says what each holds).")
    if dc.name == "openml":
        if (dc.dataset is None) == (dc.id is None):
            raise ConfigError("data=openml needs one of data.dataset=NAME or data.id=N (not both), e.g. "
                              "data.dataset=credit-g.")
        if dc.version is not None and dc.id is not None:
            raise ConfigError("data.version picks a version of data.dataset=NAME; data.id names one version already. "
                              "Use data.version=null with data.id.")
    label = dc.get("label", "x")
    if not (label is None and dc.name == "openml") and not (isinstance(label, str) and label) and not (
            isinstance(label, ListConfig) and len(label) and all(isinstance(c, str) and c for c in label)):
        raise ConfigError(f"data.label={show(label)} must be a column name or a non-empty list of them (multi-label)"
                          + (", or null for OpenML's default target" if dc.name == "openml" else "")
                          + ", e.g. data.label=target or data.label=[a,b].")


def check_task(cfg: DictConfig, task: str) -> None:
    """The rules that depend on the task (multi-label pairs, metrics), once data.task=null has been inferred from
    the labels (data=arrays|openml): raises ConfigError as `validate` would have."""
    if cfg.data.get("task", "set") is not None:
        return
    c = cfg.copy()
    OmegaConf.set_readonly(c, False)
    c.data.task = task
    _validate_labels(c, resolve_head(c))


EXECUTORS = (None, "submitit_local", "submitit_slurm")


def check_rungs(rungs: Any, name: str) -> None:
    """Halving rungs: fractions of the run, each in (0, 1), increasing."""
    values = list(rungs) if isinstance(rungs, (list, tuple)) or hasattr(rungs, "__iter__") and \
        not isinstance(rungs, str) else None
    ok = values is not None and all(isinstance(r, (int, float)) and not isinstance(r, bool) and 0 < r < 1
                                    for r in values) and values == sorted(set(values))
    if not ok:
        raise ConfigError(f"{name} must be a list of fractions of the run in (0, 1), increasing (e.g. [0.25, 0.5]; "
                          f"[] = no halving), got {rungs!r}.")


def plain_list(value: Any) -> Any:
    """A config list as a Python list (None as []); anything else as it is, for the check to name it."""
    if value is None:
        return []
    return list(value) if OmegaConf.is_list(value) or isinstance(value, (list, tuple)) else value


def check_launcher_options(max_members: Any, max_memory_gb: Any, executor: Any, stacked: Any = True,
                           halving_rungs: Any = ()) -> None:
    """The stacked launcher's options (hydra.launcher.*), each named when refused."""
    check_rungs(halving_rungs, "hydra.launcher.halving_rungs")
    if isinstance(max_members, bool) or not isinstance(max_members, int) or max_members < 1:
        raise ConfigError(f"hydra.launcher.max_members must be an integer >= 1, got {max_members!r}.")
    if isinstance(max_memory_gb, bool) or not isinstance(max_memory_gb, (int, float)) or \
            not 0 < max_memory_gb < float("inf"):
        raise ConfigError(f"hydra.launcher.max_memory_gb must be a finite number > 0, got {max_memory_gb!r}.")
    if executor not in EXECUTORS:
        raise ConfigError(f"Unknown hydra.launcher.executor={executor!r}. Valid choices: null (this process), "
                          "submitit_local, submitit_slurm.")
    if not isinstance(stacked, bool):
        raise ConfigError(f"hydra.launcher.stacked must be true or false, got {stacked!r}.")


def check_launcher(launcher: Any) -> None:
    """A sweep's launcher options (the composed hydra.launcher node), checked before anything is created: the
    stacked launcher's, and joblib's n_jobs (joblib refuses 0 only once the sweep has started)."""
    target = str(launcher.get("_target_") or "")
    if target.endswith("StackedLauncher"):
        rungs = launcher.get("halving_rungs")
        check_launcher_options(launcher.get("max_members"), launcher.get("max_memory_gb"), launcher.get("executor"),
                               launcher.get("stacked"), plain_list(rungs))
    if "joblib" in target and launcher.get("n_jobs") == 0:
        raise ConfigError("hydra.launcher.n_jobs must not be 0: give the number of parallel jobs (>= 1), or a "
                          "negative number counting back from the cores (-1 = one job per core).")


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX
        return None


def _check_memory(cfg: DictConfig) -> None:
    """Data and model are built in host memory first: refuse sizes that cannot fit before allocating them.

    A rough lower bound: the float32 inputs of both splits (synthetic data is drawn with one temporary copy),
    the parameters with their gradients and two Adam moments, and one batch's activations.
    """
    total = _memory_bytes()
    if total is None or cfg.data.name in REAL_DATASETS:  # real data: sizes known once the file is read
        return
    d, m = cfg.data, cfg.model
    if d.name == "mnist" and d.task == "multilabel":  # grid images built from the digits, uint8 then float32
        n_in, n_out = (28 * d.grid) ** 2, MNIST_LABELS
        data_bytes = 70_000 * 28 * 28 * 5 + ((d.n_train or 60_000) + 2 * (d.n_val or 10_000)) * n_in * 6
        data_keys = f"data.n_train={d.n_train} + data.n_val={d.n_val} multi-label MNIST images (and as many test " \
                    f"images) of {n_in} pixels"
    elif d.name == "mnist":
        n_in, n_out, data_bytes = 28 * 28, MNIST_LABELS, 70_000 * 28 * 28 * 9  # uint8 files + float32 copies
        data_keys = "the MNIST tensors"
    else:
        n_in, n_out = d.n_features, d.n_classes
        data_bytes = (d.n_train + 2 * d.n_val) * d.n_features * 4 * 2 + d.n_classes * d.n_features * 4
        data_keys = f"data.n_train={d.n_train} + data.n_val={d.n_val} samples (and as many test samples) of " \
                    f"data.n_features={d.n_features}"
    widths = [n_in, *m.get("hidden", [])] if m.name == "mlp" else [n_in]
    if m.name == "cnn":
        c1, c2 = m.channels
        params = 9 * c1 + c1 + 9 * c1 * c2 + c2 + c2 * 49 * m.hidden + m.hidden + m.hidden * n_out + n_out
        widths = [c1 * 28 * 28, c2 * 14 * 14, m.hidden]
    else:
        widths = [*widths, n_out]
        params = sum(a * b + b for a, b in zip(widths, widths[1:], strict=False))
    n_rows = 70_000 if d.name == "mnist" and d.task != "multilabel" else \
        (d.n_train or 60_000) + (d.n_val or 10_000) if d.name == "mnist" else d.n_train + d.n_val
    rows = min(max(cfg.trainer.batch_size, cfg.trainer.eval_batch_size), n_rows)
    model_bytes = params * 4 * 4 + rows * sum(widths) * 4 * 2
    if data_bytes + model_bytes > total:
        gib = 2**30
        if model_bytes >= data_bytes:
            size = show(m.hidden) if "hidden" in m else ""
            what = f"model={m.name}{f' with model.hidden={size}' if size else ''} has {params:.3g} parameters"
        else:
            what = f"{data_keys} are {data_bytes / gib:.3g} GiB of inputs"
        raise ConfigError(
            f"{what}: training needs at least {(data_bytes + model_bytes) / gib:.3g} GiB of memory and this "
            f"machine has {total / gib:.3g} GiB. Lower the sizes."
        )


# --- multi-label tasks, soft targets, unlabelled samples, distillation ---------------------------------------


def _validate_labels(cfg: DictConfig, head: str) -> None:
    """data.task=multilabel, data.label_noise / soft_labels / unlabeled_frac, loss=kd*: the rules across keys.
    (A distillation teacher's directory is checked when the run starts: lossbench.engine.teacher.check.)"""
    dc, loss = cfg.data, cfg.loss.name
    spec = loss_registry.get(loss)
    task = dc.get("task", "multiclass")
    if task is None:  # data=arrays|openml: inferred from the labels, checked again once loaded (check_task)
        task = "any"
    elif task not in TASKS_OF.get(dc.name, TASKS):
        raise ConfigError(f"data.task={task} is not available for data={dc.name}. Valid choices: "
                          f"{choices(TASKS_OF[dc.name])}" + (" (binary: data.n_classes=2)." if dc.name != "mnist" else "."))
    if dc.name == "mnist":
        lo_hi, grid = list(dc.digits_per_image), dc.grid
        if len(lo_hi) != 2 or not 1 <= lo_hi[0] <= lo_hi[1] <= grid * grid:
            raise ConfigError(
                f"data.digits_per_image={show(lo_hi)} must be [lo, hi] with 1 <= lo <= hi <= data.grid^2 = "
                f"{grid * grid} (one digit per cell), e.g. data.digits_per_image=[2,3].")
    if task == "multilabel":
        _validate_multilabel(cfg, head)
    elif task != "any":
        for key in (cfg.trainer.target_metric, cfg.objective_metric):
            if key is not None and key.removeprefix("val/") in MULTILABEL_METRICS:
                raise ConfigError(f"{key} is a multi-label metric, but data.task={task}. Valid choices: "
                                  + ", ".join(f"val/{m}" for m in METRICS) + ".")
    noise, frac, soft = dc.get("label_noise") or 0.0, dc.get("unlabeled_frac") or 0.0, dc.get("soft_labels")
    if soft is not None:
        if not spec.soft_targets:
            takers = "|".join(s.name for s in loss_registry.specs() if s.soft_targets)
            raise ConfigError(
                f"data.soft_labels={soft} gives probability targets, which loss={takers} takes (CrossEntropyLoss "
                f"accepts class probabilities); loss={loss} "
                + ("takes the teacher's targets." if spec.teacher else f"does not. Use loss={takers}."))
        if soft == "bayes" and dc.name not in ("synthetic", "imbalanced"):
            raise ConfigError(
                "data.soft_labels=bayes is the generating model's class posterior p(y | x), which only the synthetic "
                "data has. For MNIST use data.soft_labels=noise_aware (with data.label_noise) or a teacher (loss=kd).")
        if soft == "noise_aware" and noise == 0:
            raise ConfigError(
                "data.soft_labels=noise_aware smooths each label by the noise rate data.label_noise, which is 0 "
                "(that gives one-hot targets). Set data.label_noise=<rate>, e.g. 0.2.")
        if frac > 0:
            raise ConfigError(
                "data.soft_labels with data.unlabeled_frac > 0: CrossEntropyLoss has no ignore_index for probability "
                "targets, so unlabelled samples cannot be skipped. Use one or the other.")
    if frac > 0:
        if not spec.skips_unlabelled:
            skip = ", ".join(s.name for s in loss_registry.specs()
                             if s.skips_unlabelled and not s.bad_example and not s.teacher)
            raise ConfigError(
                f"data.unlabeled_frac marks unlabelled samples with -100, and loss={loss} does not skip them (it has "
                f"no ignore_index). Use data.unlabeled_frac=0, or a loss that skips them: {skip}.")
        ignore = cfg.loss.get("ignore_index", -100)
        if ignore != -100:
            raise ConfigError(
                f"data.unlabeled_frac marks unlabelled samples with -100, but loss.ignore_index={ignore}. "
                "Leave loss.ignore_index at -100.")
        _check_all_unlabelled_batches(cfg, frac, task == "multilabel")


def _validate_multilabel(cfg: DictConfig, head: str) -> None:
    dc, lc = cfg.data, cfg.loss
    if dc.name != "mnist" and dc.get("n_labels") is not None and dc.n_labels > dc.n_classes:  # real sets: no n_labels
        # each sample draws Poisson(n_labels) labels, redrawn until at most n_classes: past that, almost never
        raise ConfigError(f"data.n_labels={dc.n_labels} (the mean number of labels per sample) must be at most "
                          f"data.n_classes={dc.n_classes}: a sample cannot have more labels than there are classes.")
    if (head, lc.name) not in (pairs := loss_registry.multilabel_pairs()):
        why = loss_registry.why_not_multilabel(head, lc.name) or "this pair is not supported on multi-label tasks"
        valid = ", ".join(f"head={h} loss={lo}" for h, lo in sorted(pairs))
        raise ConfigError(f"data.task=multilabel with head={head} loss={lc.name}: {why}. Valid on multi-label "
                          f"tasks: {valid} (softmax + ce is kept as the tutorials' mistake).")
    if lc.get("class_weight") is not None:
        raise ConfigError("loss.class_weight weights classes of single-label tasks; on a multi-label task use "
                          "loss.pos_weight (auto = n_neg/n_pos per label).")
    if dc.get("imbalance_ratio") not in (None, 1, 1.0):
        raise ConfigError(f"data.imbalance_ratio={dc.imbalance_ratio:g} applies to single-label tasks; a multi-label "
                          "task's label frequencies come from its generator. Use data.imbalance_ratio=null (or 1).")
    if dc.get("label_noise") or dc.get("soft_labels") is not None:
        raise ConfigError("data.label_noise and data.soft_labels apply to single-label tasks (one class per "
                          "sample), not to data.task=multilabel.")


def _check_all_unlabelled_batches(cfg: DictConfig, frac: float, multilabel: bool) -> None:
    """A batch without one labelled sample makes the mean loss 0/0 = NaN (PyTorch's rule), and the run would
    end 'diverged' by chance: refuse settings where that is likely (> 1% over the run)."""
    t = cfg.trainer
    if multilabel or t.epochs is not None:
        return  # multi-label entries are masked one by one; with epochs the step count needs the data
    p_batch = frac ** t.batch_size
    p_run = 1 - (1 - p_batch) ** t.max_steps
    if p_run > 0.01:
        raise ConfigError(
            f"data.unlabeled_frac={frac} with trainer.batch_size={t.batch_size}: a batch has no labelled sample with "
            f"probability {p_batch:.2g}, so over {t.max_steps} steps some batch very likely does ({p_run:.0%}), and its "
            "mean loss is 0/0 = NaN (PyTorch's rule for an all-ignored batch). Raise trainer.batch_size or lower "
            "data.unlabeled_frac.")


# --- AUC losses, PESG and the positive-share sampler ----------------------------------------------------------


BINARY_HINT = "data.n_classes=2 (data=imbalanced is 1:100) or data=mnist data.task=binary"


def _binary(cfg: DictConfig) -> bool:
    """A single-label binary task: data.n_classes=2 (synthetic sets) or data.task=binary (MNIST)."""
    dc = cfg.data
    if dc.get("task", "multiclass") == "multilabel":
        return False
    return dc.task == "binary" if dc.name == "mnist" else dc.get("n_classes") == 2


def _validate_auc(cfg: DictConfig) -> None:
    oc, share = cfg.optim, cfg.trainer.get("pos_share")
    if oc.name == "pesg" and sorted(oc.decay_steps) != list(oc.decay_steps):
        raise ConfigError(f"optim.decay_steps={show(oc.decay_steps)} must be in increasing order.")
    if share is not None:
        if not _binary(cfg):
            raise ConfigError(f"trainer.pos_share={share:g} sets the share of positives in each batch of a binary "
                              f"task; this task is not binary. Use {BINARY_HINT}, or trainer.pos_share=null.")
        bs = cfg.trainer.batch_size
        n_pos = round(share * bs)
        if not 1 <= n_pos <= bs - 1:
            raise ConfigError(f"trainer.pos_share={share:g} with trainer.batch_size={bs} gives {n_pos} positives a "
                              "batch: a batch needs at least one positive and one negative. Raise or lower "
                              "trainer.pos_share, or raise trainer.batch_size.")
