"""Up-front validation of a composed config: a bad combination fails here, before any data is loaded.

Checks that need the data (class-weight lengths, positive classes, imbalance leaving a class empty) live
next to the code that uses them (data.py, losses.py) and run before the first training step.
"""

from __future__ import annotations

import math
from numbers import Number

from omegaconf import DictConfig, ListConfig

from lossbench import ConfigError

KD_LOSSES = ("kd", "kd_mean", "kd_prob", "kd_no_t2")  # distillation and its bad examples
LOSSES = ("bce", "bce_logits", "ce", "nll", "bce_manual", "nll_manual", "asl", *KD_LOSSES)
HEADS = ("sigmoid", "softmax")
NATURAL_HEAD = {
    "bce": "sigmoid",
    "bce_logits": "sigmoid",
    "bce_manual": "sigmoid",
    "ce": "softmax",
    "nll": "softmax",
    "nll_manual": "softmax",
    "asl": "sigmoid",
    **dict.fromkeys(KD_LOSSES, "softmax"),
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
    ("sigmoid", "asl"),
    *(("softmax", kd) for kd in KD_LOSSES),
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
    ("softmax", "asl"): "the asymmetric loss is a per-output sigmoid loss (it focuses each label's sigmoid "
    "probability); use head=sigmoid",
    **{("sigmoid", kd): "distillation matches the teacher's and the student's softmax distributions at "
       "temperature T; use head=softmax" for kd in KD_LOSSES},
}
# On multi-label tasks (data.task=multilabel) only these (head, loss) pairs apply; the rest say why not.
MULTILABEL_PAIRS = {
    ("sigmoid", "bce"), ("sigmoid", "bce_logits"), ("sigmoid", "bce_manual"), ("sigmoid", "asl"),
    ("softmax", "ce"),  # the tutorials' mistake, kept as a comparison: CE against the normalised multi-hot target
}
WHY_NOT_MULTILABEL = {
    ("softmax", "nll"): "NLLLoss takes one class index per sample, and a multi-label sample has several",
    ("softmax", "nll_manual"): "NLLLoss takes one class index per sample, and a multi-label sample has several",
    ("softmax", "bce"): "softmax probabilities sum to 1, so two present labels can never both reach p = 1; "
    "use head=sigmoid (per-label sigmoids) with loss=bce or bce_logits",
    **{("softmax", kd): "distillation here matches a teacher's softmax distribution over mutually exclusive "
       "classes; a multi-label teacher has per-label sigmoids" for kd in KD_LOSSES},
}
DATASETS = ("synthetic", "imbalanced", "mnist")
MODELS = ("mlp", "linear", "cnn")
OPTIMS = ("sgd", "adam", "adamw")
PRECISIONS = ("fp32", "bf16", "fp16")
ON_NONFINITE = ("stop", "skip", "continue")
REDUCTIONS = ("mean", "sum")
METRICS = ("loss", "nll", "auc", "ap", "accuracy", "balanced_accuracy", "ece")
# multi-label runs also have these (metrics.evaluate_multilabel); there accuracy is the subset accuracy
MULTILABEL_METRICS = ("auc_micro", "f1_micro", "f1_macro", "hamming_loss", "lrap")
LOWER_IS_BETTER = {"val/loss", "val/nll", "val/ece", "val/hamming_loss"}
TASKS = {"synthetic": ("multiclass", "multilabel"), "imbalanced": ("multiclass", "multilabel"),
         "mnist": ("multiclass", "binary", "multilabel")}
SOFT_LABELS = ("noise_aware", "bayes")


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
    _validate_labels(cfg, head)

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
    if name.removeprefix("val/") not in METRICS + MULTILABEL_METRICS:
        raise ConfigError(
            f"Unknown {key}={name!r}. Valid choices: " + ", ".join(f"val/{m}" for m in METRICS)
            + "; on multi-label tasks also " + ", ".join(f"val/{m}" for m in MULTILABEL_METRICS) + "."
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
        if dc.task not in TASKS["mnist"]:
            raise ConfigError(f"Unknown data.task={dc.task!r}. Valid choices: {choices(TASKS['mnist'])}.")
        for key in ("n_train", "n_val"):
            if dc[key] is not None:
                _integer(dc[key], f"data.{key}", minimum=1)


# --- multi-label tasks, soft targets, unlabelled samples, distillation ---------------------------------------


def _validate_labels(cfg: DictConfig, head: str) -> None:
    """data.task=multilabel, data.label_noise / soft_labels / unlabeled_frac, and loss=kd*."""
    dc, lc, loss = cfg.data, cfg.loss, cfg.loss.name
    task = dc.get("task", "multiclass")
    if task not in TASKS.get(dc.name, (task,)):
        raise ConfigError(f"Unknown data.task={task!r} for data={dc.name}. Valid choices: {choices(TASKS[dc.name])}.")
    if task == "multilabel":
        _validate_multilabel(cfg, head)
    else:
        for key in (cfg.trainer.target_metric, cfg.objective_metric):
            if key is not None and key.removeprefix("val/") in MULTILABEL_METRICS:
                raise ConfigError(f"{key} is a multi-label metric, but data.task={task}. Use one of: "
                                  + ", ".join(f"val/{m}" for m in METRICS) + ".")

    noise = dc.get("label_noise") or 0.0
    _number(noise, "data.label_noise", minimum=0)
    if noise >= 1:
        raise ConfigError(f"data.label_noise is the share of flipped training labels and must be in [0, 1), got {noise}.")
    frac = dc.get("unlabeled_frac") or 0.0
    _number(frac, "data.unlabeled_frac", minimum=0)
    if frac >= 1:
        raise ConfigError(f"data.unlabeled_frac must be in [0, 1) (some training labels must remain), got {frac}.")
    soft = dc.get("soft_labels")
    if soft is not None:
        if soft not in SOFT_LABELS:
            raise ConfigError(f"Unknown data.soft_labels={soft!r}. Valid choices: null, {choices(SOFT_LABELS)}.")
        if loss != "ce":
            raise ConfigError(
                f"data.soft_labels={soft} gives probability targets, which loss=ce takes (CrossEntropyLoss accepts "
                f"class probabilities); loss={loss} "
                + ("takes the teacher's targets." if loss in KD_LOSSES else "does not. Use loss=ce."))
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
        if lc.get("ignore_index", -100) != -100:
            raise ConfigError(
                f"data.unlabeled_frac marks unlabelled samples with -100, but loss.ignore_index={lc.ignore_index}. "
                "Leave loss.ignore_index at -100.")
        _check_all_unlabelled_batches(cfg, frac, task == "multilabel")
    if loss in KD_LOSSES:
        _number(lc.T, "loss.T", positive=True)
        _number(lc.alpha, "loss.alpha", minimum=0)
        if lc.alpha > 1:
            raise ConfigError(f"loss.alpha is the soft term's weight and must be in [0, 1], got {lc.alpha}.")
        from lossbench import teacher  # reads the teacher's summary.json (no torch)

        teacher.check(cfg)


def _validate_multilabel(cfg: DictConfig, head: str) -> None:
    dc, lc = cfg.data, cfg.loss
    if (head, lc.name) not in MULTILABEL_PAIRS:
        why = WHY_NOT_MULTILABEL.get((head, lc.name), "this pair is not supported on multi-label tasks")
        valid = ", ".join(f"head={h} loss={lo}" for h, lo in sorted(MULTILABEL_PAIRS))
        raise ConfigError(f"data.task=multilabel with head={head} loss={lc.name}: {why}. Valid on multi-label "
                          f"tasks: {valid} (softmax + ce is kept as the tutorials' mistake).")
    if lc.get("class_weight") is not None:
        raise ConfigError("loss.class_weight weights classes of single-label tasks; on a multi-label task use "
                          "loss.pos_weight (auto = n_neg/n_pos per label).")
    if dc.get("imbalance_ratio") not in (None, 1, 1.0):
        raise ConfigError(f"data.imbalance_ratio={dc.imbalance_ratio} applies to single-label tasks; a multi-label "
                          "task's label frequencies come from its generator. Use data.imbalance_ratio=null (or 1).")
    if dc.get("label_noise") or dc.get("soft_labels") is not None:
        raise ConfigError("data.label_noise and data.soft_labels apply to single-label tasks (one class per "
                          "sample), not to data.task=multilabel.")
    if lc.name == "ce" and (dc.get("unlabeled_frac") or 0) > 0:
        raise ConfigError("loss=ce on a multi-label task normalises each sample's label set, which has no meaning "
                          "with some of its labels unknown (data.unlabeled_frac). Use a sigmoid loss.")
    if dc.name == "mnist":
        grid = dc.grid
        _integer(grid, "data.grid", minimum=1)
        lo_hi = list(dc.digits_per_image) if isinstance(dc.digits_per_image, (list, ListConfig)) else None
        if not lo_hi or len(lo_hi) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in lo_hi) \
                or not 1 <= lo_hi[0] <= lo_hi[1] <= grid * grid:
            raise ConfigError(
                f"data.digits_per_image={dc.digits_per_image} must be [lo, hi] with 1 <= lo <= hi <= data.grid^2 = "
                f"{grid * grid} (one digit per cell), e.g. data.digits_per_image=[2,3].")
    else:
        _integer(dc.n_labels, "data.n_labels", minimum=1)
        _integer(dc.length, "data.length", minimum=1)
        if not isinstance(dc.allow_unlabeled, bool):
            raise ConfigError(f"data.allow_unlabeled must be true or false, got {dc.allow_unlabeled!r}.")


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
