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
# Losses for imbalanced data (focal, LDAM, logit adjustment, balanced softmax, poly-1) and a third hand-written BCE.
IMBALANCE_LOSSES = ("focal", "ldam", "logit_adjusted", "balanced_softmax", "poly1", "bce_clipped")
LOSSES += IMBALANCE_LOSSES
HEADS = ("sigmoid", "softmax")
NATURAL_HEAD = {
    "bce": "sigmoid",
    "bce_logits": "sigmoid",
    "bce_manual": "sigmoid",
    "ce": "softmax",
    "nll": "softmax",
    "nll_manual": "softmax",
    "focal": "sigmoid",  # torchvision's sigmoid_focal_loss, the paper's form; head=softmax for (1 - p_y)^gamma CE
    "ldam": "softmax",
    "logit_adjusted": "softmax",
    "balanced_softmax": "softmax",
    "poly1": "softmax",  # Poly-1 cross-entropy, the paper's main form; head=sigmoid for Poly-1 BCE
    "bce_clipped": "sigmoid",
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
    ("sigmoid", "focal"),
    ("softmax", "focal"),
    ("softmax", "ldam"),
    ("softmax", "logit_adjusted"),
    ("softmax", "balanced_softmax"),
    ("sigmoid", "poly1"),
    ("softmax", "poly1"),
    ("sigmoid", "bce_clipped"),
    ("softmax", "bce_clipped"),  # clipped BCE on softmax probabilities, as the tutorial's one-hot example
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
    ("sigmoid", "ldam"): "LDAM subtracts a margin from the true class's logit inside a softmax cross-entropy, so the "
    "true class must beat the other classes' logits; a binary sigmoid head has one logit and nothing to beat it "
    "with. Use head=softmax (2 logits for a binary task)",
    ("sigmoid", "logit_adjusted"): "the logit adjustment tau*log(pi) shifts softmax logits relative to each other; "
    "on a sigmoid head the shift of each output is only a bias (for a prior-matched start use model.head_bias=prior)",
    ("sigmoid", "balanced_softmax"): "balanced softmax adds log n_c to softmax logits; it is defined for a softmax "
    "head only",
}
DATASETS = ("synthetic", "imbalanced", "longtail", "mnist")
MODELS = ("mlp", "linear", "cnn")
OPTIMS = ("sgd", "adam", "adamw")
PRECISIONS = ("fp32", "bf16", "fp16")
ON_NONFINITE = ("stop", "skip", "continue")
REDUCTIONS = ("mean", "sum")
METRICS = ("loss", "nll", "auc", "ap", "accuracy", "balanced_accuracy", "ece")
LOWER_IS_BETTER = {"val/loss", "val/nll", "val/ece", "val/posthoc/nll", "val/posthoc/ece"}
IMBALANCE_PROFILES = ("exp", "step")
FOCAL_IMPLS = ("stable", "naive")


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
    _validate_cosine_head(cfg, hb)

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
    _validate_imbalance_loss(lc, head)


# --- keys of the imbalance losses, DRW and post-hoc logit adjustment --------------------------------------------
def _validate_imbalance_loss(lc: DictConfig, head: str) -> None:
    name = lc.name
    if name == "focal":
        _number(lc.gamma, "loss.gamma", minimum=0)
        if lc.impl not in FOCAL_IMPLS:
            raise ConfigError(f"Unknown loss.impl={lc.impl!r}. Valid choices: {choices(FOCAL_IMPLS)} (stable computes "
                              "(1-p_t)^gamma from logits; naive is torchvision's sigmoid_focal_loss / exp(-CE)).")
        alpha = lc.alpha
        if alpha is not None:
            if head == "softmax":
                raise ConfigError(
                    f"loss.alpha={alpha} weighs positive against negative terms of a sigmoid head; on head=softmax "
                    "give per-class weights instead: loss.class_weight=effective|inverse|[w_0,...], and loss.alpha=null."
                )
            _number(alpha, "loss.alpha")
            if alpha != -1 and not 0 <= alpha <= 1:
                raise ConfigError(f"loss.alpha must be in [0, 1], or -1 (off) as in torchvision, or null, got {alpha}.")
        if lc.pos_weight is not None:
            raise ConfigError("loss=focal weighs positives with loss.alpha (and classes with loss.class_weight); "
                              "pos_weight is BCEWithLogitsLoss's. Use loss.pos_weight=null.")
        if lc.label_smoothing > 0:
            raise ConfigError("loss=focal has no label_smoothing: its p_t is defined for 0/1 targets. Use "
                              "loss.label_smoothing=0, or loss=ce|poly1 with label smoothing.")
    if name == "ldam":
        _number(lc.max_m, "loss.max_m", minimum=0)
        _number(lc.s, "loss.s", positive=True)
    if name == "logit_adjusted":
        _number(lc.tau, "loss.tau", minimum=0)
    if name == "poly1":
        _number(lc.epsilon, "loss.epsilon", minimum=-1)
    if name == "bce_clipped":
        eps = lc.eps
        _number(eps, "loss.eps", positive=True)
        if eps >= 0.5:
            raise ConfigError(f"loss.eps={eps} must be in (0, 0.5): probabilities are clipped to [eps, 1 - eps]. "
                              "Keras uses 1e-7 (the default), the tutorial 1e-5.")
    drw, tau = lc.get("drw_step"), lc.get("posthoc_tau")
    if drw is not None:
        if head != "softmax":
            raise ConfigError(
                f"loss.drw_step={drw} (deferred re-weighting) switches on class weights of a softmax loss; "
                f"loss={name} with head={head} is a sigmoid loss. Use head=softmax, or loss.drw_step=null."
            )
        _integer(drw, "loss.drw_step", minimum=0)
        if lc.class_weight in (None, "effective") and not (0 < lc.beta < 1):
            raise ConfigError(f"loss.beta must be in (0, 1) for the effective-number weights of DRW, got {lc.beta}.")
    if tau is not None:
        if head != "softmax":
            raise ConfigError(
                f"loss.posthoc_tau={tau} (post-hoc logit adjustment, argmax(z - tau log pi)) is for softmax heads; "
                f"head={head} has no class prior to subtract. Use head=softmax, or loss.posthoc_tau=null."
            )
        _number(tau, "loss.posthoc_tau", minimum=0)


def _validate_cosine_head(cfg: DictConfig, head_bias) -> None:
    cosine = cfg.model.get("cosine_head", False)
    if cosine not in (True, False):
        raise ConfigError(f"model.cosine_head must be true or false, got {cosine!r}.")
    if cosine and cfg.loss.name != "ldam":
        raise ConfigError(
            f"model.cosine_head=true bounds the logits to cosines in [-1, 1]; only loss=ldam scales them back up "
            f"(loss.s), so loss={cfg.loss.name} could never reach confident probabilities. Use model.cosine_head=false, "
            "or loss=ldam."
        )
    if cosine and head_bias is not None:
        raise ConfigError("model.cosine_head=true has no output bias: use model.head_bias=null.")


def _validate_data(dc: DictConfig) -> None:
    _number(dc.scale, "data.scale", positive=True)
    profile = dc.get("imbalance_profile", "exp")
    if profile not in IMBALANCE_PROFILES:
        raise ConfigError(
            f"Unknown data.imbalance_profile={profile!r}. Valid choices: {choices(IMBALANCE_PROFILES)} (exp: class c "
            "keeps n_max ratio^(-c/(C-1)); step: half the classes keep n_max, the other half n_max/ratio)."
        )
    if dc.get("balanced_val", False) not in (True, False):
        raise ConfigError(f"data.balanced_val must be true or false, got {dc.balanced_val!r}.")
    ratio = dc.imbalance_ratio
    if ratio is not None:
        _number(ratio, "data.imbalance_ratio")
        if ratio < 1:
            raise ConfigError(
                f"data.imbalance_ratio is majority : minority and must be >= 1 (1 = balanced), got {ratio}."
            )
    if dc.name in ("synthetic", "imbalanced", "longtail"):
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
