"""The built-in losses' registrations: each loss's config schema, its spec (lossbench.losses.registry.LossSpec)
and its own cross-key rules, one block per loss, grouped as the classes are (basic, asymmetric, distillation,
imbalance, auc). The order of registration is the order of ``loss.name``'s choices (TensorBoard's hparams domain).

Colours: Okabe & Ito's eight colour-blind-safe colours (its yellow is too pale for shades) for the losses most
studies compare, then Paul Tol's "muted" and "bright" schemes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from lossbench.errors import ConfigError
from lossbench.losses.registry import ClassIndexLoss, Loss, LossSpec, SoftmaxHeadLoss, SoftmaxLoss, register
from lossbench.values import POSITIVE, Range, show

_BASIC, _ASL = "lossbench.losses.basic", "lossbench.losses.asymmetric"
_KD, _IMB, _AUC = "lossbench.losses.distillation", "lossbench.losses.imbalance", "lossbench.losses.auc"
FOCAL_IMPLS = ("stable", "naive")  # loss.impl: (1 - p_t)^gamma from logits | as commonly written
AUC_PRIORS = ("train", "batch")  # loss.prior of auc_margin: the training split's positive rate | each batch's
SURROGATES = ("squared", "squared_hinge", "logistic")  # loss.surrogate of auc_pairwise (LibAUC's surrogate losses)


# --- the seeds: BCE on sigmoid or softmax probabilities, BCEWithLogits, CE, NLL and two hand-written ones ----------
def _no_label_smoothing(cfg: Any, head: str) -> None:
    lc = cfg.loss
    if lc.label_smoothing > 0:
        raise ConfigError(f"loss={lc.name} (NLLLoss) has no label_smoothing. Use loss=ce, whose label_smoothing is "
                          "the same objective computed from logits.")


def _ce_multilabel(cfg: Any, head: str) -> None:
    if cfg.data.get("task") == "multilabel" and (cfg.data.get("unlabeled_frac") or 0) > 0:
        raise ConfigError("loss=ce on a multi-label task normalises each sample's label set, which has no meaning "
                          "with some of its labels unknown (data.unlabeled_frac). Use a sigmoid loss.")


NLL_ONE_INDEX = "NLLLoss takes one class index per sample, and a multi-label sample has several"

register(LossSpec(
    "bce", f"{_BASIC}:BCE", SoftmaxHeadLoss, "sigmoid", multilabel=("sigmoid",), color="#0072B2",  # blue
    not_multilabel={"softmax": "softmax probabilities sum to 1, so two present labels can never both reach p = 1; "
                               "use head=sigmoid (per-label sigmoids) with loss=bce or bce_logits"},
    cuda_autocast=False))
register(LossSpec(
    "bce_logits", f"{_BASIC}:BCEWithLogits", Loss, "sigmoid", multilabel=("sigmoid",), color="#E69F00",  # orange
    refuses={"softmax": "BCEWithLogitsLoss applies its own sigmoid to each output, i.e. it defines a sigmoid head; "
                        "use head=sigmoid (or loss=bce for BCE on softmax probabilities)"}))
register(LossSpec(
    "ce", f"{_BASIC}:CrossEntropy", ClassIndexLoss, "softmax", multilabel=("softmax",), color="#009E73",  # green
    refuses={"sigmoid": "CrossEntropyLoss normalises over the outputs with a softmax; on a binary sigmoid head "
                        "(1 logit) softmax([z]) = 1 and the loss is always 0, so nothing trains"},
    soft_targets=True, check=_ce_multilabel))
register(LossSpec(
    "nll", f"{_BASIC}:NLL", ClassIndexLoss, "softmax", color="#CC79A7",  # reddish purple
    refuses={"sigmoid": "NLLLoss expects log-probabilities that sum to 1 over classes (LogSoftmax); a sigmoid "
                        "head does not give them"},
    not_multilabel={"softmax": NLL_ONE_INDEX}, check=_no_label_smoothing))
register(LossSpec(
    "bce_manual", f"{_BASIC}:ManualBCE", Loss, "sigmoid", multilabel=("sigmoid",), color="#D55E00",  # vermillion
    refuses={"softmax": "bce_manual is the hand-written sigmoid + BCE example; use head=sigmoid"}, bad_example=True))
register(LossSpec(
    "nll_manual", f"{_BASIC}:ManualNLL", ClassIndexLoss, "softmax", color="#000000",  # black
    refuses={"sigmoid": "log(softmax(z)) needs a softmax head"},
    not_multilabel={"softmax": NLL_ONE_INDEX}, check=_no_label_smoothing, bad_example=True))


# --- multi-label: the asymmetric loss ----------------------------------------------------------------------------
@dataclass
class AsymmetricLoss(Loss):
    """loss=asl (Ridnik et al. 2021)."""

    gamma_neg: float = MISSING
    gamma_pos: float = MISSING
    clip: float = MISSING
    eps: float = MISSING


register(LossSpec(
    "asl", f"{_ASL}:Asymmetric", AsymmetricLoss, "sigmoid", multilabel=("sigmoid",), color="#AA4499",  # purple
    refuses={"softmax": "the asymmetric loss is a per-output sigmoid loss (it focuses each label's sigmoid "
                        "probability); use head=sigmoid"},
    ranges={"gamma_neg": Range(0), "gamma_pos": Range(0), "clip": Range(0, 1, hi_open=True),
            "eps": Range(0, 1, lo_open=True, hi_open=True)}))


# --- knowledge distillation and its bad examples -----------------------------------------------------------------
@dataclass
class DistillationLoss(SoftmaxLoss):
    """loss=kd and its bad examples: the teacher run, temperature and soft-term weight."""

    teacher: str | None = MISSING
    T: float = MISSING
    alpha: float = MISSING


for _name, _cls, _color in (("kd", "Distillation", "#CC6677"),  # rose
                            ("kd_mean", "DistillationKLMean", "#DDCC77"),  # sand (bad examples of kd)
                            ("kd_prob", "DistillationProbInput", "#88CCEE"),  # cyan
                            ("kd_no_t2", "DistillationNoT2", "#555555")):  # dark grey
    register(LossSpec(
        _name, f"{_KD}:{_cls}", DistillationLoss, "softmax", color=_color,
        refuses={"sigmoid": "distillation matches the teacher's and the student's softmax distributions at "
                            "temperature T; use head=softmax"},
        not_multilabel={"softmax": "distillation here matches a teacher's softmax distribution over mutually "
                                   "exclusive classes; a multi-label teacher has per-label sigmoids"},
        ranges={"T": POSITIVE, "alpha": Range(0, 1)}, teacher=True, bad_example=_name != "kd"))


# --- losses for imbalanced data (focal, LDAM, logit adjustment, balanced softmax, poly-1) and bce_clipped -----------
# None of them skips unlabelled samples (they have no ignore_index).
@dataclass
class FocalLoss(SoftmaxHeadLoss):
    gamma: float = MISSING
    alpha: float | None = MISSING
    impl: str = MISSING


@dataclass
class LdamLoss(SoftmaxHeadLoss):
    max_m: float = MISSING
    s: float = MISSING
    cosine_head: bool = MISSING


@dataclass
class LogitAdjustedLoss(SoftmaxHeadLoss):
    tau: float = MISSING


@dataclass
class Poly1Loss(SoftmaxHeadLoss):
    epsilon: float = MISSING


@dataclass
class ClippedBceLoss(SoftmaxHeadLoss):
    eps: float = MISSING


def _check_focal(cfg: Any, head: str) -> None:
    lc = cfg.loss
    alpha = lc.alpha
    if alpha is not None and head == "softmax":
        raise ConfigError(
            f"loss.alpha={show(alpha)} weighs positive against negative terms of a sigmoid head; on head=softmax "
            "give per-class weights instead: loss.class_weight=effective|inverse|[w_0,...], and loss.alpha=null.")
    if alpha is not None and alpha != -1 and not 0 <= alpha <= 1:
        raise ConfigError(f"loss.alpha must be in [0, 1], or -1 (off) as in torchvision, or null, got {show(alpha)}.")
    if lc.pos_weight is not None:
        raise ConfigError("loss=focal weighs positives with loss.alpha (and classes with loss.class_weight); "
                          "pos_weight is BCEWithLogitsLoss's. Use loss.pos_weight=null.")
    if lc.label_smoothing > 0:
        raise ConfigError("loss=focal has no label_smoothing: its p_t is defined for 0/1 targets. Use "
                          "loss.label_smoothing=0, or loss=ce|poly1 with label smoothing.")


register(LossSpec(
    "focal", f"{_IMB}:Focal", FocalLoss, "sigmoid", color="#882255",  # wine (Tol muted)
    ranges={"gamma": Range(0), "alpha": Range(-1, 1)},  # alpha: [0, 1] or -1 = off, as torchvision (_check_focal)
    choices={"impl": FOCAL_IMPLS}, check=_check_focal, skips_unlabelled=False))
register(LossSpec(
    "ldam", f"{_IMB}:LDAM", LdamLoss, "softmax", color="#332288",  # indigo
    refuses={"sigmoid": "LDAM subtracts a margin from the true class's logit inside a softmax cross-entropy, so "
                        "the true class must beat the other classes' logits; a binary sigmoid head has one logit and "
                        "nothing to beat it with. Use head=softmax (2 logits for a binary task)"},
    ranges={"max_m": Range(0), "s": POSITIVE}, skips_unlabelled=False))
register(LossSpec(
    "logit_adjusted", f"{_IMB}:LogitAdjusted", LogitAdjustedLoss, "softmax", color="#117733",  # green
    refuses={"sigmoid": "the logit adjustment tau*log(pi) shifts softmax logits relative to each other; on a "
                        "sigmoid head the shift of each output is only a bias (for a prior-matched start use "
                        "model.head_bias=prior)"},
    ranges={"tau": Range(0)}, skips_unlabelled=False))
register(LossSpec(
    "balanced_softmax", f"{_IMB}:BalancedSoftmax", SoftmaxHeadLoss, "softmax", color="#44AA99",  # teal
    refuses={"sigmoid": "balanced softmax adds log n_c to softmax logits; it is defined for a softmax head only"},
    skips_unlabelled=False))
register(LossSpec(
    "poly1", f"{_IMB}:Poly1", Poly1Loss, "softmax", color="#999933",  # olive
    ranges={"epsilon": Range(-1)}, skips_unlabelled=False))  # the paper's range
register(LossSpec(
    "bce_clipped", f"{_IMB}:ClippedBCE", ClippedBceLoss, "sigmoid", color="#56B4E9",  # sky blue
    ranges={"eps": Range(0, 0.5, lo_open=True, hi_open=True)},  # p is clipped to [eps, 1 - eps]
    skips_unlabelled=False, bad_example=True))


# --- losses that optimise the AUC directly (LibAUC): binary tasks, one sigmoid score per sample -------------------
@dataclass
class AucMarginLoss(Loss):
    """loss=auc_margin (Yuan et al. 2021, LibAUC's AUCMLoss)."""

    margin: float = MISSING
    prior: str = MISSING


@dataclass
class AucPairwiseLoss(Loss):
    """loss=auc_pairwise (LibAUC's PairwiseAUCLoss)."""

    margin: float = MISSING
    surrogate: str = MISSING


def _check_auc(cfg: Any, head: str) -> None:
    lc = cfg.loss
    extra = [k for k, off in (("pos_weight", None), ("class_weight", None)) if lc.get(k) is not off]
    extra += ["label_smoothing"] if lc.label_smoothing else []
    extra += ["reduction"] if lc.reduction != "mean" else []
    if extra:
        raise ConfigError(f"loss={lc.name} has no {', '.join(f'loss.{k}' for k in extra)}: it is a mean over "
                          "(positive, negative) pairs or classes, not over weighted samples. Leave them at "
                          "null / 0 / mean; to change the share of positives per batch use trainer.pos_share.")


def _check_auc_margin(cfg: Any, head: str) -> None:
    _check_auc(cfg, head)
    if cfg.optim.name != "pesg":
        raise ConfigError(
            f"loss=auc_margin is a min-max objective: the model, a and b are minimised and alpha maximised, which "
            f"optim={cfg.optim.name} cannot do (it would descend on alpha too, driving the margin term's weight to "
            "-inf). Use optim=pesg (LibAUC's primal-dual optimiser).")


AUC_SOFTMAX = ("the AUC losses rank one score per sample, h = sigmoid(z) of a single logit (LibAUC's scores); a "
               "2-logit softmax head's score would be softmax(z)_1 = sigmoid(z_1 - z_0), the same model with a "
               "redundant logit. Use head=sigmoid")
register(LossSpec(
    "auc_margin", f"{_AUC}:AUCMargin", AucMarginLoss, "sigmoid", color="#EE6677",  # red (Tol bright)
    refuses={"softmax": AUC_SOFTMAX}, ranges={"margin": POSITIVE}, choices={"prior": AUC_PRIORS},
    check=_check_auc_margin, binary_only=True,
    skips_unlabelled=False))
register(LossSpec(
    "auc_pairwise", f"{_AUC}:AUCPairwise", AucPairwiseLoss, "sigmoid", color="#4477AA",  # blue (Tol bright)
    refuses={"softmax": AUC_SOFTMAX}, ranges={"margin": POSITIVE}, choices={"surrogate": SURROGATES},
    check=_check_auc, binary_only=True,
    skips_unlabelled=False))
