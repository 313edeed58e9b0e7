"""Up-front validation of a composed config: a bad combination fails here, before any data is loaded.

Checks that need the data (class-weight lengths, positive classes, imbalance leaving a class empty) live
next to the code that uses them (data.py, losses.py) and run before the first training step.
"""

from __future__ import annotations

import math
from numbers import Number

from omegaconf import DictConfig, ListConfig

from lossbench import ConfigError

LOSSES = ("bce", "bce_logits", "ce", "nll", "bce_manual", "nll_manual")
HEADS = ("sigmoid", "softmax")
NATURAL_HEAD = {
    "bce": "sigmoid",
    "bce_logits": "sigmoid",
    "bce_manual": "sigmoid",
    "ce": "softmax",
    "nll": "softmax",
    "nll_manual": "softmax",
}
# (head, loss) pairs that train something meaningful.
VALID_PAIRS = {
    ("sigmoid", "bce"),
    ("sigmoid", "bce_logits"),
    ("sigmoid", "bce_manual"),
    ("softmax", "ce"),
    ("softmax", "nll"),
    ("softmax", "nll_manual"),
    ("softmax", "bce"),  # BCE on softmax probabilities against one-hot targets
}
WHY_INVALID = {
    ("sigmoid", "ce"): "CrossEntropyLoss normalises over the outputs with a softmax; on a binary sigmoid head "
    "(1 logit) softmax([z]) = 1 and the loss is always 0, so nothing trains",
    ("sigmoid", "nll"): "NLLLoss expects log-probabilities that sum to 1 over classes (LogSoftmax); "
    "a sigmoid head does not give them",
    ("sigmoid", "nll_manual"): "log(softmax(z)) needs a softmax head",
    ("softmax", "bce_logits"): "BCEWithLogitsLoss applies its own sigmoid to each output, i.e. it defines a "
    "sigmoid head; use head=sigmoid (or loss=bce for BCE on softmax probabilities)",
    ("softmax", "bce_manual"): "bce_manual is the hand-written sigmoid + BCE example; use head=sigmoid",
}
DATASETS = ("synthetic", "imbalanced", "mnist")
MODELS = ("mlp", "linear", "cnn")
OPTIMS = ("sgd", "adam", "adamw")
PRECISIONS = ("fp32", "bf16", "fp16")
ON_NONFINITE = ("stop", "skip", "continue")
REDUCTIONS = ("mean", "sum")
METRICS = ("loss", "nll", "auc", "ap", "accuracy", "balanced_accuracy", "ece")
LOWER_IS_BETTER = {"val/loss", "val/nll", "val/ece"}


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
    return cfg.head if cfg.head is not None else NATURAL_HEAD[cfg.loss.name]


def _number(value, name: str, *, positive: bool = False, minimum: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, Number) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}.")
    if positive and value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}. Set {name}=<a positive number>.")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}.")


def _integer(value, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError with a one-paragraph message if the config cannot train."""
    loss = cfg.loss.name
    if loss not in LOSSES:
        raise ConfigError(f"Unknown loss {loss!r}. Valid choices: loss={choices(LOSSES)}.")
    if cfg.head is not None and cfg.head not in HEADS:
        raise ConfigError(
            f"Unknown head {cfg.head!r}. Valid choices: head={choices(HEADS)}, or leave it unset to use "
            f"the loss's natural head ({loss} -> {NATURAL_HEAD[loss]})."
        )
    head = resolve_head(cfg)
    if (head, loss) not in VALID_PAIRS:
        why = WHY_INVALID.get((head, loss), "this pair is not supported")
        valid = ", ".join(f"head={h} loss={lo}" for h, lo in sorted(VALID_PAIRS))
        raise ConfigError(f"Invalid head/loss pair head={head} loss={loss}: {why}. Valid pairs: {valid}.")

    if cfg.data.name not in DATASETS:
        raise ConfigError(f"Unknown data {cfg.data.name!r}. Valid choices: data={choices(DATASETS)}.")
    if cfg.model.name not in MODELS:
        raise ConfigError(f"Unknown model {cfg.model.name!r}. Valid choices: model={choices(MODELS)}.")
    if cfg.model.name == "cnn" and cfg.data.name != "mnist":
        raise ConfigError(
            f"model=cnn needs image data, but data={cfg.data.name} gives feature vectors. "
            "Use data=mnist with model=cnn, or model=mlp|linear."
        )
    _number(cfg.model.init_scale, "model.init_scale", positive=True)
    hb = cfg.model.head_bias
    if hb is not None and hb != "prior":
        _number(hb, "model.head_bias")

    _validate_loss(cfg.loss, head)
    _validate_data(cfg.data)

    opt = cfg.optim
    if opt.name not in OPTIMS:
        raise ConfigError(f"Unknown optimiser {opt.name!r}. Valid choices: optim={choices(OPTIMS)}.")
    _number(opt.lr, "optim.lr", positive=True)
    _number(opt.weight_decay, "optim.weight_decay", minimum=0)
    _number(opt.momentum, "optim.momentum", minimum=0)

    t = cfg.trainer
    if t.epochs is None:
        _integer(t.max_steps, "trainer.max_steps", minimum=1)
    else:
        _integer(t.epochs, "trainer.epochs", minimum=1)
    for key in ("batch_size", "eval_every", "log_every", "eval_batch_size"):
        _integer(t[key], f"trainer.{key}", minimum=1)
    _integer(t.ckpt_every, "trainer.ckpt_every", minimum=0)
    if t.precision not in PRECISIONS:
        raise ConfigError(
            f"Unknown precision {t.precision!r}. Valid choices: trainer.precision={choices(PRECISIONS)}."
        )
    if t.on_nonfinite not in ON_NONFINITE:
        raise ConfigError(
            f"Unknown trainer.on_nonfinite={t.on_nonfinite!r}. Valid choices: {choices(ON_NONFINITE)}."
        )
    if t.target_metric is not None:
        _metric(t.target_metric, "trainer.target_metric")
    _metric(cfg.objective_metric, "objective_metric")
    if t.threads is not None:
        _integer(t.threads, "trainer.threads", minimum=1)
    _integer(cfg.numerics.every, "numerics.every", minimum=1)
    _integer(cfg.numerics.hist_every, "numerics.hist_every", minimum=0)


def _metric(name: str, key: str) -> None:
    if name.removeprefix("val/") not in METRICS:
        raise ConfigError(
            f"Unknown {key}={name!r}. Valid choices: " + ", ".join(f"val/{m}" for m in METRICS) + "."
        )


def _validate_loss(lc: DictConfig, head: str) -> None:
    if lc.reduction not in REDUCTIONS:
        raise ConfigError(
            f"Unknown loss.reduction={lc.reduction!r}. Valid choices: {choices(REDUCTIONS)} "
            "('none' gives a vector, and training needs a scalar)."
        )
    pw = lc.pos_weight
    if pw is not None:
        if head == "softmax":
            raise ConfigError(
                f"loss.pos_weight is for sigmoid (BCE) losses; loss={lc.name} with head=softmax has no "
                "positive class to weight. Use loss.class_weight (inverse | effective | a list) instead, "
                "or head=sigmoid with loss=bce_logits."
            )
        if pw not in ("auto", "sqrt_auto") and (
            isinstance(pw, bool) or not isinstance(pw, Number) or not math.isfinite(pw) or pw <= 0
        ):
            raise ConfigError(
                f"loss.pos_weight={pw!r} is not valid. Valid choices: null, auto (n_neg/n_pos of the training "
                "split), sqrt_auto (its square root), or a positive number, e.g. loss.pos_weight=5."
            )
    cw = lc.class_weight
    if cw is not None and not isinstance(cw, (list, ListConfig)) and cw not in ("inverse", "effective"):
        raise ConfigError(
            f"Unknown loss.class_weight={cw!r}. Valid choices: null, inverse, effective, or a list with "
            "one non-negative weight per class, e.g. loss.class_weight=[1.0,5.0]."
        )
    if isinstance(cw, (list, ListConfig)):
        for w in cw:
            _number(w, "each loss.class_weight entry", minimum=0)
    if cw == "effective" and not (0 < lc.beta < 1):
        raise ConfigError(f"loss.beta must be in (0, 1) for class_weight=effective, got {lc.beta}.")
    _number(lc.label_smoothing, "loss.label_smoothing", minimum=0)
    if lc.label_smoothing >= 1:
        raise ConfigError(f"loss.label_smoothing must be in [0, 1), got {lc.label_smoothing}.")
    if lc.label_smoothing > 0 and lc.name in ("nll", "nll_manual"):
        raise ConfigError(
            f"loss={lc.name} (NLLLoss) has no label_smoothing. Use loss=ce, whose label_smoothing is "
            "the same objective computed from logits."
        )


def _validate_data(dc: DictConfig) -> None:
    _number(dc.scale, "data.scale", positive=True)
    ratio = dc.imbalance_ratio
    if ratio is not None:
        _number(ratio, "data.imbalance_ratio")
        if ratio < 1:
            raise ConfigError(
                f"data.imbalance_ratio is majority : minority and must be >= 1 (1 = balanced), got {ratio}."
            )
    if dc.name in ("synthetic", "imbalanced"):
        _integer(dc.n_classes, "data.n_classes", minimum=2)
        for key in ("n_features", "n_train", "n_val"):
            _integer(dc[key], f"data.{key}", minimum=1)
        _number(dc.separation, "data.separation", minimum=0)
    if dc.name == "mnist":
        if dc.task not in ("multiclass", "binary"):
            raise ConfigError(f"Unknown data.task={dc.task!r}. Valid choices: binary, multiclass.")
        for key in ("n_train", "n_val"):
            if dc[key] is not None:
                _integer(dc[key], f"data.{key}", minimum=1)
