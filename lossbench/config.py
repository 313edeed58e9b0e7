"""Up-front validation: a bad command line or config fails here, in one line, before anything is created.

Three layers, each naming the key:
- types: every key's type is part of the config (lossbench/schema.py), so Hydra refuses `seed=abc` while
  composing; `preflight` composes the command line as `hydra.main` will and turns Hydra's message into one
  ConfigError;
- ranges and choices of single keys (RANGES, the *_CHOICES tuples) and cross-key rules: `validate`;
- what needs the data (class-weight lengths, an imbalance leaving a class empty, the MNIST files) is checked
  next to the code that uses it (data.py, losses.py), still before the first training step.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from numbers import Number
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from lossbench import ConfigError, schema

KD_LOSSES = ("kd", "kd_mean", "kd_prob", "kd_no_t2")  # distillation and its bad examples
# Losses for imbalanced data (focal, LDAM, logit adjustment, balanced softmax, poly-1) and a third hand-written BCE.
IMBALANCE_LOSSES = ("focal", "ldam", "logit_adjusted", "balanced_softmax", "poly1", "bce_clipped")
# Losses that optimise the AUC directly (binary tasks, sigmoid scores): LibAUC's AUC-margin and pairwise surrogates.
AUC_LOSSES = ("auc_margin", "auc_pairwise")
LOSSES = ("bce", "bce_logits", "ce", "nll", "bce_manual", "nll_manual", "asl", *KD_LOSSES, *IMBALANCE_LOSSES,
          *AUC_LOSSES)
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
    "focal": "sigmoid",  # torchvision's sigmoid_focal_loss, the paper's form; head=softmax for (1 - p_y)^gamma CE
    "ldam": "softmax",
    "logit_adjusted": "softmax",
    "balanced_softmax": "softmax",
    "poly1": "softmax",  # Poly-1 cross-entropy, the paper's main form; head=sigmoid for Poly-1 BCE
    "bce_clipped": "sigmoid",
    **dict.fromkeys(AUC_LOSSES, "sigmoid"),
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
    ("sigmoid", "focal"),
    ("softmax", "focal"),
    ("softmax", "ldam"),
    ("softmax", "logit_adjusted"),
    ("softmax", "balanced_softmax"),
    ("sigmoid", "poly1"),
    ("softmax", "poly1"),
    ("sigmoid", "bce_clipped"),
    ("softmax", "bce_clipped"),  # clipped BCE on softmax probabilities, as the tutorial's one-hot example
    *(("sigmoid", auc) for auc in AUC_LOSSES),
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
    ("sigmoid", "ldam"): "LDAM subtracts a margin from the true class's logit inside a softmax cross-entropy, so the "
    "true class must beat the other classes' logits; a binary sigmoid head has one logit and nothing to beat it "
    "with. Use head=softmax (2 logits for a binary task)",
    ("sigmoid", "logit_adjusted"): "the logit adjustment tau*log(pi) shifts softmax logits relative to each other; "
    "on a sigmoid head the shift of each output is only a bias (for a prior-matched start use model.head_bias=prior)",
    ("sigmoid", "balanced_softmax"): "balanced softmax adds log n_c to softmax logits; it is defined for a softmax "
    "head only",
    **{("softmax", auc): "the AUC losses rank one score per sample, h = sigmoid(z) of a single logit (LibAUC's "
       "scores); a 2-logit softmax head's score would be softmax(z)_1 = sigmoid(z_1 - z_0), the same model with a "
       "redundant logit. Use head=sigmoid" for auc in AUC_LOSSES},
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
REAL_DATASETS = ("arrays", "openml", "breast_cancer", "digits", "yeast", "shuttle")  # lossbench/real.py
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
SURROGATES = ("squared", "squared_hinge", "logistic")  # loss=auc_pairwise (LibAUC's surrogate losses)
AUC_PRIORS = ("train", "batch")  # loss=auc_margin: p from the training split, or each batch (LibAUC's auto=True)
METRICS = ("loss", "nll", "auc", "ap", "accuracy", "balanced_accuracy", "ece")
# multi-label runs also have these (metrics.evaluate_multilabel); there accuracy is the subset accuracy
MULTILABEL_METRICS = ("auc_micro", "f1_micro", "f1_macro", "hamming_loss", "lrap")
LOWER_IS_BETTER = {"val/loss", "val/nll", "val/ece", "val/hamming_loss", "val/posthoc/nll", "val/posthoc/ece"}
# the test split's metrics, named as validation's (reported only: never compared to choose)
LOWER_IS_BETTER |= {"test/" + k.removeprefix("val/") for k in LOWER_IS_BETTER}
BOUNDED_METRICS = {"val/auc", "val/ap", "val/accuracy", "val/balanced_accuracy", "val/ece",
                   *(f"val/{m}" for m in MULTILABEL_METRICS)}  # in [0, 1]
IMBALANCE_PROFILES = ("exp", "step")
FOCAL_IMPLS = ("stable", "naive")
MNIST_LABELS = 10
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
INT64_MAX = 2**63 - 1  # torch keeps integers (seeds, sizes, steps) in 64 bits


@dataclass(frozen=True)
class Range:
    """An interval of finite numbers; None = unbounded on that side."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, x: float) -> bool:
        return math.isfinite(x) and not (
            (self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)))
            or (self.hi is not None and (x > self.hi or (self.hi_open and x == self.hi)))
        )

    def __str__(self) -> str:
        hi = None if self.hi == INT64_MAX else self.hi  # the int64 cap is said only when it is hit
        if self.lo is not None and hi is not None:
            return f"in {'(' if self.lo_open else '['}{self.lo:g}, {hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if hi is not None:
            return f"{'<' if self.hi_open else '<='} {hi:g}"
        return "finite"


COUNT = Range(1, INT64_MAX)
NON_NEGATIVE_INT = Range(0, INT64_MAX)
POSITIVE = Range(0, lo_open=True)
# The range of every number in the config (a list's entries each), checked whenever the key is set. A test
# (tests/test_config_schema.py) fails for a number in lossbench/schema.py without an entry here.
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
    "loss.beta": Range(0, 1, lo_open=True, hi_open=True),
    "loss.label_smoothing": Range(0, 1, hi_open=True),
    "loss.ignore_index": Range(-INT64_MAX - 1, INT64_MAX),
    # the imbalance losses' own keys, and the options of every softmax loss
    "loss.gamma": Range(0),  # focal: 0 = cross-entropy
    "loss.max_m": Range(0),  # ldam: 0 = CE on s z
    "loss.s": POSITIVE,
    "loss.tau": Range(0),  # logit_adjusted: 0 = CE
    "loss.epsilon": Range(-1),  # poly1: the paper's range
    "loss.drw_step": NON_NEGATIVE_INT,
    "loss.posthoc_tau": Range(0),
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
    # multi-label tasks, training labels, asl and distillation
    "data.n_labels": COUNT,
    "data.length": COUNT,
    "data.label_noise": Range(0, 1, hi_open=True),
    "data.unlabeled_frac": Range(0, 1, hi_open=True),
    "data.digits_per_image": COUNT,  # [lo, hi] within the grid's cells (a cross-key rule below)
    "data.grid": COUNT,
    # real data (lossbench/real.py)
    "data.val_frac": Range(0, 1, lo_open=True, hi_open=True),
    "data.test_frac": Range(0, 1, hi_open=True),
    "data.id": COUNT,
    "data.version": COUNT,
    "loss.gamma_neg": Range(0),
    "loss.gamma_pos": Range(0),
    "loss.clip": Range(0, 1, hi_open=True),
    "loss.eps": Range(0, 1, lo_open=True, hi_open=True),  # asl; bce_clipped: below 0.5 (a cross-key rule)
    "loss.T": POSITIVE,
    "loss.alpha": Range(-1, 1),  # kd: in [0, 1]; focal: [0, 1] or -1 = off, as torchvision (cross-key rules)
    # AUC losses, PESG and the positive-share sampler
    "loss.margin": POSITIVE,
    "optim.epoch_decay": Range(0),
    "optim.clip_value": POSITIVE,
    "optim.decay_steps": COUNT,
    "optim.decay_factor": Range(1),
    "trainer.pos_share": Range(0, 1, lo_open=True, hi_open=True),
}
# The valid values of every string key (a test checks that each string key has a rule).
METRIC_CHOICES = tuple(f"val/{m}" for m in (*METRICS, *MULTILABEL_METRICS))
CHOICES: dict[str, tuple[str, ...]] = {
    "head": HEADS,
    "objective_metric": METRIC_CHOICES,
    "data.name": DATASETS,
    "data.task": TASKS,
    "model.name": MODELS,
    "loss.name": LOSSES,
    "loss.reduction": REDUCTIONS,
    "loss.impl": FOCAL_IMPLS,
    "data.imbalance_profile": IMBALANCE_PROFILES,
    "optim.name": OPTIMS,
    "trainer.precision": PRECISIONS,
    "trainer.on_nonfinite": ON_NONFINITE,
    "trainer.target_metric": METRIC_CHOICES,
    "data.soft_labels": SOFT_LABELS,
    "loss.surrogate": SURROGATES,
    "loss.prior": AUC_PRIORS,
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
    return cfg.head if cfg.head is not None else NATURAL_HEAD[cfg.loss.name]


def show(value: Any) -> str:
    """A value as it is written on the command line: null, true, 'abc', [1, 2]."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return repr(value)


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


def _check_number(key: str, value: Any, rng: Range) -> None:
    """A number, or each entry of a list of numbers, in its range (and, for a float, within float32's)."""
    integer = key in schema.integer_keys()
    if not isinstance(value, (list, ListConfig)):
        if why := _out_of_range(value, rng, integer):
            raise ConfigError(f"{key} must be {why}, got {show(value)}.")
        if not integer and _past_float32(key, value):
            raise ConfigError(f"{key}={show(value)} is past float32's range (|x| <= {FLOAT32_MAX:.4g}), in which "
                              "lossbench computes; it would be infinite. Use a smaller value.")
        return
    for v in value:
        if why := _out_of_range(v, rng, integer):
            raise ConfigError(f"each {key} entry must be {why}, got {show(v)} in {key}={show(value)}.")
        if not integer and _past_float32(key, v):
            raise ConfigError(f"each {key} entry must be within float32's range (|x| <= {FLOAT32_MAX:.4g}), got "
                              f"{show(v)} in {key}={show(value)}.")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError with a one-line message if the config cannot train."""
    flat = {k: v for k, v in _leaves(cfg)}
    for key, value in flat.items():
        if key in RANGES and value is not None:
            _check_number(key, value, RANGES[key])
    for key, valid in CHOICES.items():
        if flat.get(key) is not None and flat[key] not in valid:
            raise ConfigError(f"Unknown {key}={flat[key]!r}. Valid choices: {_choices_of(key)}.")
    for group, options in schema.SCHEMAS.items():  # a typed node (as composed; a copy may be a plain dict)
        name, node_type = cfg[group].get("name"), OmegaConf.get_type(cfg[group])
        if name is not None and node_type is not dict and options.get(name) not in (None, node_type):
            raise ConfigError(
                f"{group}.name={name!r} does not match the keys of the chosen {group} config. Choose the {group} "
                f"with {group}=<name> (valid choices: {choices(options)}), not with {group}.name."
            )

    loss = cfg.loss.name
    head = resolve_head(cfg)
    if (head, loss) not in VALID_PAIRS:
        why = WHY_INVALID.get((head, loss), "this pair is not supported")
        valid = ", ".join(f"head={h} loss={lo}" for h, lo in sorted(VALID_PAIRS))
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
        if isinstance(value, str) and (why := _path_problem(value)):
            raise ConfigError(f"{key}={value[:60]}{'...' if len(value) > 60 else ''} cannot be a path: {why}.")
    _validate_cosine_head(cfg, hb)

    _validate_loss(cfg.loss, head)
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


def _choices_of(key: str) -> str:
    if key == "head":
        return f"head={choices(HEADS)}, or null for the loss's natural head"
    if key in ("trainer.precision", "loss.name", "data.name", "model.name", "optim.name"):
        group = key.split(".")[0] if key != "trainer.precision" else key
        return f"{group}={choices(CHOICES[key])}"
    if key == "data.soft_labels":
        return f"null, {choices(SOFT_LABELS)}"
    if key in ("objective_metric", "trainer.target_metric"):
        return ", ".join(METRIC_CHOICES) + (", or null for none" if key == "trainer.target_metric" else "")
    return choices(CHOICES[key])


def _validate_loss(lc: DictConfig, head: str) -> None:
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
    if lc.label_smoothing > 0 and lc.name in ("nll", "nll_manual"):
        raise ConfigError(
            f"loss={lc.name} (NLLLoss) has no label_smoothing. Use loss=ce, whose label_smoothing is "
            "the same objective computed from logits."
        )
    _validate_imbalance_loss(lc, head)


# --- cross-key rules of the imbalance losses, DRW and post-hoc logit adjustment (ranges: RANGES) -----------------
def _validate_imbalance_loss(lc: DictConfig, head: str) -> None:
    if lc.name in KD_LOSSES and lc.alpha < 0:  # loss.alpha's range is shared with focal's -1 (off)
        raise ConfigError(f"loss.alpha must be in [0, 1] for loss={lc.name}, got {show(lc.alpha)}.")
    if lc.name == "bce_clipped" and lc.eps >= 0.5:
        raise ConfigError(f"loss.eps must be in (0, 0.5) for loss=bce_clipped (p is clipped to [eps, 1 - eps]), got "
                          f"{show(lc.eps)}. Keras uses 1e-7 (the default), the tutorial 1e-5.")
    if lc.reduction == "num_pos" and (lc.name != "focal" or head != "sigmoid"):
        raise ConfigError(
            f"loss.reduction=num_pos (the sum divided by the batch's positive targets, RetinaNet's normalisation) is "
            f"for loss=focal on a sigmoid head; loss={lc.name} with head={head} takes loss.reduction=mean or sum"
            + (" (on a softmax head 'mean' already divides by the samples, one positive each)." if lc.name == "focal"
               else "."))
    if lc.name == "focal":
        alpha = lc.alpha
        if alpha is not None and head == "softmax":
            raise ConfigError(
                f"loss.alpha={show(alpha)} weighs positive against negative terms of a sigmoid head; on head=softmax "
                "give per-class weights instead: loss.class_weight=effective|inverse|[w_0,...], and loss.alpha=null."
            )
        if alpha is not None and alpha != -1 and not 0 <= alpha <= 1:
            raise ConfigError(f"loss.alpha must be in [0, 1], or -1 (off) as in torchvision, or null, got {show(alpha)}.")
        if lc.pos_weight is not None:
            raise ConfigError("loss=focal weighs positives with loss.alpha (and classes with loss.class_weight); "
                              "pos_weight is BCEWithLogitsLoss's. Use loss.pos_weight=null.")
        if lc.label_smoothing > 0:
            raise ConfigError("loss=focal has no label_smoothing: its p_t is defined for 0/1 targets. Use "
                              "loss.label_smoothing=0, or loss=ce|poly1 with label smoothing.")
    for key, what in (("drw_step", "deferred re-weighting: class weights of a softmax loss from this step on"),
                      ("posthoc_tau", "post-hoc logit adjustment, argmax(z - tau log pi), of a softmax head")):
        value = lc.get(key)
        if value is not None and head != "softmax":
            raise ConfigError(f"loss.{key}={show(value)} is {what}; loss={lc.name} with head={head} is a sigmoid "
                              f"loss. Use head=softmax, or loss.{key}=null.")


def _validate_cosine_head(cfg: DictConfig, head_bias: Any) -> None:
    if not cfg.model.get("cosine_head", False):
        return
    if cfg.loss.name != "ldam":
        raise ConfigError(
            f"model.cosine_head=true bounds the logits to cosines in [-1, 1]; only loss=ldam scales them back up "
            f"(loss.s), so loss={cfg.loss.name} could never reach confident probabilities. Use "
            "model.cosine_head=false, or loss=ldam."
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


def _path_problem(path: str) -> str | None:
    from lossbench.store import path_problem

    return path_problem(path)


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
        data_keys = f"data.n_train={d.n_train} + 2 x data.n_val={d.n_val} (validation and test) multi-label MNIST " \
                    f"images of {n_in} pixels"
    elif d.name == "mnist":
        n_in, n_out, data_bytes = 28 * 28, MNIST_LABELS, 70_000 * 28 * 28 * 9  # uint8 files + float32 copies
        data_keys = "the MNIST tensors"
    else:
        n_in, n_out = d.n_features, d.n_classes
        data_bytes = (d.n_train + 2 * d.n_val) * d.n_features * 4 * 2 + d.n_classes * d.n_features * 4
        data_keys = f"data.n_train={d.n_train} + 2 x data.n_val={d.n_val} (validation and test) samples of " \
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


# --- the command line, composed as Hydra will compose it, before Hydra creates anything ------------------------


def preflight(argv: list[str], task_function: Any, config_path: str, config_name: str) -> None:
    """Compose the configs of this command line the way `hydra.main` will, and validate them.

    Raises ConfigError (one line, naming the key) where Hydra would print a multi-line composition error and
    exit 1 (a wrong type, an unknown key or option, a malformed override), or where `validate` refuses a
    single run's config; nothing has been created yet. Hydra is set up with the helpers its own
    `_run_hydra` uses (hydra/_internal/utils.py), so the search path (-cp, -cd), config name (-cn) and
    plugins are the same; hydra-core is pinned to 1.3.

    A single run: its config, resolved, then `validate`. A sweep (-m, or a preset that sets
    hydra.mode=MULTIRUN such as hparams_search=optuna): the fixed overrides, then each value of each swept key
    (the command line's and the sweeper's params) once, and an interval's lower end for its type. Ranges are
    left to each job, where a refused job is recorded as failed and the sweep goes on.
    """
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import (
        create_automatic_config_search_path,
        detect_calling_file_or_module_from_task_function,
        detect_task_name,
        get_args_parser,
    )
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    args = get_args_parser().parse_args(argv)
    if args.help or args.hydra_help or args.info or args.shell_completion or args.experimental_rerun:
        return
    for override in args.overrides:  # Python refuses to read integers this long, in a traceback
        if (digits := max((len(m) for m in re.findall(r"\d+", override)), default=0)) > 1000:
            raise ConfigError(f"{override.split('=')[0]}: the value has a number of {digits} digits; no lossbench "
                              "key takes one (integers are at most 2**63 - 1, 19 digits).")
    calling_file, calling_module = detect_calling_file_or_module_from_task_function(task_function)
    search_path = create_automatic_config_search_path(calling_file, calling_module, args.config_path or config_path)
    if args.config_dir is not None:
        config_dir = os.path.abspath(args.config_dir)
        if not os.path.isdir(config_dir):
            raise ConfigError(f"--config-dir {args.config_dir}: no such directory.")
        search_path.prepend(provider="command-line", path=f"file://{config_dir}",
                            anchor=SearchPathQuery(provider="schema"))
    try:
        hydra = Hydra.create_main_hydra2(task_name=detect_task_name(calling_file, calling_module),
                                         config_search_path=search_path)
        try:
            _compose_command_line(hydra, args, args.config_name or config_name)
        finally:
            GlobalHydra.instance().clear()
    except (HydraException, OmegaConfBaseException) as e:
        raise composition_error(e) from None


def _compose_command_line(hydra: Any, args: Any, name: str) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep
    from hydra.types import RunMode

    def compose(overrides: list[str]) -> DictConfig:
        cfg = hydra.compose_config(name, overrides, run_mode=RunMode.RUN)
        for key in cfg:  # resolve the interpolations (of a preset's study.* knobs, say) where types are checked
            if key != "hydra" and isinstance(node := cfg[key], (DictConfig, ListConfig)):
                OmegaConf.to_container(node, resolve=True)
        return cfg

    parser = OverridesParser.create(config_loader=hydra.config_loader)
    given = parser.parse_overrides(args.overrides)
    fixed = [o for o in given if not o.is_sweep_override()]
    adds = [o for o in given if (o.is_add() or o.is_force_add()) and not o.key_or_group.startswith("hydra.")
            and not hydra.config_loader.repository.group_exists(o.key_or_group.replace(".", "/"))]
    if adds:  # `+key=value` / `++key=value` add keys: each must be one that some lossbench schema knows
        _check_added_keys(compose([o.input_line for o in fixed if o not in adds]), [o.key_or_group for o in adds])
    cfg = compose([o.input_line for o in fixed])
    if args.multirun or cfg.hydra.mode == RunMode.MULTIRUN:
        from lossbench.launch import check_launcher

        check_launcher(cfg.hydra.launcher)
    if args.cfg or not (args.multirun or cfg.hydra.mode == RunMode.MULTIRUN):
        if len(fixed) < len(given):
            compose(args.overrides)  # Hydra's own message: a sweep needs --multirun
        if not args.cfg:
            validate(cfg)
        return
    params = cfg.hydra.sweeper.get("params") or {}
    swept = {o.get_key_element(): o for o in parser.parse_overrides([f"{k}={v}" for k, v in params.items()])}
    swept.update({o.get_key_element(): o for o in given})  # the command line wins, as in Hydra's sweepers
    base = [o.input_line for o in swept.values() if not o.is_sweep_override()]
    for key, o in swept.items():
        if o.is_discrete_sweep():
            values = list(o.sweep_string_iterator())
        elif isinstance(o.value(), IntervalSweep):
            values = [str(o.value().start)]
        else:
            continue
        for value in values:
            compose([*(b for b in base if not b.startswith(f"{key}=")), f"{key}={value}"])


def _check_added_keys(base: DictConfig, keys: list[str]) -> None:
    """Refuse a key added with + or ++ that the chosen options' schemas (or the config as composed without it)
    do not have, naming the nearest valid key: an unknown key would otherwise be carried along and ignored."""
    import dataclasses
    import difflib

    for key in keys:
        group = key.split(".")[0]
        if group in schema.SCHEMAS and dataclasses.is_dataclass(node_type := OmegaConf.get_type(base[group])):
            valid = {f"{group}.{f.name}" for f in dataclasses.fields(node_type)}
            where = f"{group}={OmegaConf.select(base, f'hydra.runtime.choices.{group}')}"
        else:
            valid = set(flatten(OmegaConf.to_container(base, resolve=False))) - {"hydra"}
            valid = {k for k in valid if not k.startswith("hydra.")} | set(base.keys()) - {"hydra"}
            where = "the config"
        if key not in valid:
            near = difflib.get_close_matches(key, sorted(valid), n=1) or \
                difflib.get_close_matches(key, sorted(k for *_, k, _ in schema.leaves()), n=1)
            raise ConfigError(f"{key} is not a key of {where}" + (f" (did you mean {near[0]}?)" if near else "") +
                              ". A key added with + or ++ must be one that lossbench reads; see "
                              "docs/configuration.md for the keys.")


def composition_error(e: Exception) -> ConfigError:
    """Hydra's or OmegaConf's composition error as one line that names the key."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    cause = e if isinstance(e, OmegaConfBaseException) else (e.__cause__ or e.__context__)
    if isinstance(cause, OmegaConfBaseException) and cause.full_key:
        return ConfigError(_omegaconf_message(cause))
    if isinstance(e, MissingConfigException) and e.options is not None:
        what = str(e).splitlines()[0].split(": ", 1)[-1]  # "In 'config': Could not find 'loss/focal'"
        group = (e.missing_cfg_file or "").rpartition("/")[0]
        return ConfigError(f"{what}. Available options in '{group}': {', '.join(e.options)}.")
    lines = [line.strip().rstrip(".:") for line in str(e).splitlines()]
    lines = [line for line in lines if line and not line.startswith(("See https://", "Config search path", "provider="))]
    if isinstance(e, OverrideParseException):
        lines.insert(0, f"Cannot parse the override {e.override!r}")
    return ConfigError("; ".join(lines) + ".")


def _omegaconf_message(e: Any) -> str:
    import dataclasses
    import difflib

    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    key, parent_key = e.full_key, e.full_key.rpartition(".")[0]
    first = (e.msg or type(e).__name__).splitlines()[0]
    if isinstance(e, (ConfigKeyError, ConfigAttributeError)) and " not in " in first:
        leaf = str(e.key)
        valid = sorted(str(k) for k in e.parent_node.keys()) if isinstance(e.parent_node, DictConfig) else []
        near = difflib.get_close_matches(leaf, valid, n=1)
        return (f"{key} is not a key of {parent_key or 'the config'}"
                + (f" (did you mean {parent_key}.{near[0]}?)" if near else "")
                + (f". Valid keys: {', '.join(valid)}." if valid else "."))
    if isinstance(e, ValidationError):
        expected = None
        if isinstance(e.key, int) and e.ref_type is not None:  # an entry of a typed list
            expected = schema.describe(next(iter(getattr(e.ref_type, "__args__", ())), Any))
        elif dataclasses.is_dataclass(e.object_type):
            expected = schema.describe(schema.field_types(e.object_type).get(e.key, Any))
        if expected and expected != "a value":
            value = e.value
            message = f"{key} must be {expected}, got {show(value)}."
            if expected.startswith("a list of") and _is_number(value):
                message += f" For a list of one, write {key}=[{show(value)}]."
            return message
    return f"{key}: {first}"


# --- multi-label tasks, soft targets, unlabelled samples, distillation ---------------------------------------


def _validate_labels(cfg: DictConfig, head: str) -> None:
    """data.task=multilabel, data.label_noise / soft_labels / unlabeled_frac, loss=kd*: the rules across keys.
    (A distillation teacher's directory is checked when the run starts: lossbench.teacher.check.)"""
    dc, loss = cfg.data, cfg.loss.name
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
        if loss in IMBALANCE_LOSSES or loss in AUC_LOSSES:
            raise ConfigError(
                f"data.unlabeled_frac marks unlabelled samples with -100, and loss={loss} does not skip them (it has "
                "no ignore_index). Use data.unlabeled_frac=0, or a loss that skips them: bce, bce_logits, ce, nll, asl.")
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
    if (head, lc.name) not in MULTILABEL_PAIRS:
        why = WHY_NOT_MULTILABEL.get((head, lc.name), "this pair is not supported on multi-label tasks")
        valid = ", ".join(f"head={h} loss={lo}" for h, lo in sorted(MULTILABEL_PAIRS))
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
    if lc.name == "ce" and (dc.get("unlabeled_frac") or 0) > 0:
        raise ConfigError("loss=ce on a multi-label task normalises each sample's label set, which has no meaning "
                          "with some of its labels unknown (data.unlabeled_frac). Use a sigmoid loss.")


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


def _binary(cfg: DictConfig) -> bool:
    """A single-label binary task: data.n_classes=2 (synthetic sets) or data.task=binary (MNIST)."""
    dc = cfg.data
    if dc.get("task", "multiclass") == "multilabel":
        return False
    return dc.task == "binary" if dc.name == "mnist" else dc.get("n_classes") == 2


def _validate_auc(cfg: DictConfig) -> None:
    lc, oc, share = cfg.loss, cfg.optim, cfg.trainer.get("pos_share")
    binary_hint = "data.n_classes=2 (data=imbalanced is 1:100) or data=mnist data.task=binary"
    if lc.name in AUC_LOSSES:
        if not _binary(cfg):
            raise ConfigError(f"loss={lc.name} ranks positives above negatives of a binary task; this task is not "
                              f"binary. Use {binary_hint}.")
        extra = [k for k, off in (("pos_weight", None), ("class_weight", None)) if lc.get(k) is not off]
        extra += ["label_smoothing"] if lc.label_smoothing else []
        extra += ["reduction"] if lc.reduction != "mean" else []
        if extra:
            raise ConfigError(f"loss={lc.name} has no {', '.join(f'loss.{k}' for k in extra)}: it is a mean over "
                              "(positive, negative) pairs or classes, not over weighted samples. Leave them at "
                              "null / 0 / mean; to change the share of positives per batch use trainer.pos_share.")
    if lc.name == "auc_margin" and oc.name != "pesg":
        raise ConfigError(
            f"loss=auc_margin is a min-max objective: the model, a and b are minimised and alpha maximised, which "
            f"optim={oc.name} cannot do (it would descend on alpha too, driving the margin term's weight to -inf). "
            "Use optim=pesg (LibAUC's primal-dual optimiser).")
    if oc.name == "pesg" and sorted(oc.decay_steps) != list(oc.decay_steps):
        raise ConfigError(f"optim.decay_steps={show(oc.decay_steps)} must be in increasing order.")
    if share is not None:
        if not _binary(cfg):
            raise ConfigError(f"trainer.pos_share={share:g} sets the share of positives in each batch of a binary "
                              f"task; this task is not binary. Use {binary_hint}, or trainer.pos_share=null.")
        bs = cfg.trainer.batch_size
        n_pos = round(share * bs)
        if not 1 <= n_pos <= bs - 1:
            raise ConfigError(f"trainer.pos_share={share:g} with trainer.batch_size={bs} gives {n_pos} positives a "
                              "batch: a batch needs at least one positive and one negative. Raise or lower "
                              "trainer.pos_share, or raise trainer.batch_size.")
