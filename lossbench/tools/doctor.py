"""`python -m lossbench.doctor FILE.pt|FILE.npz --loss NAME`: check a loss set-up from saved outputs and targets.

    lossbench.check_setup(outputs, targets, nn.BCEWithLogitsLoss())   # -> list of Finding; prints them

names the classic mistakes that the values give away, each with the symptom a user sees and the fix, and
prints "looks right" when it finds none:

  double_sigmoid      BCEWithLogitsLoss given probabilities (>= MIN_VALUES outputs, all in [0, 1], not all equal)
  logits_to_bce       BCELoss given values outside [0, 1]
  clamped             BCELoss given probabilities exactly 0 or 1 on the wrong side of their target
  softmax_to_ce       CrossEntropyLoss given rows that are nonnegative and sum to 1
  probs_to_log_input  NLLLoss / KLDivLoss given probabilities instead of log-probabilities
  not_log_probs       NLLLoss / KLDivLoss given rows whose logsumexp is not 0 (logits)
  log_underflow       NLLLoss / KLDivLoss given -inf log-probabilities (log(softmax(z)) underflowed)
  kl_mean             KLDivLoss with reduction="mean"
  kl_target           KLDivLoss targets that are not distributions (or log-distributions with log_target)
  target_dtype        class indices of a dtype other than int64/uint8; float targets missing for BCE losses
  target_range        class indices outside 0..C-1 (ignore_index aside); BCE targets outside [0, 1]
  all_ignored         every target is ignore_index
  soft_targets        CrossEntropyLoss probability targets whose rows are not distributions (multi-hot)
  one_logit_ce        CrossEntropyLoss / NLLLoss over a single class
  target_shape        BCE targets of another shape than the outputs
  pos_weight_shape    BCEWithLogitsLoss pos_weight not of shape (1,) or (K,) for K outputs per sample
  weight_shape        CrossEntropyLoss / NLLLoss weight without one entry per class
  one_class           every (labelled) target is the same class
  nonfinite           NaN/Inf outputs or targets
  raises              the criterion raises on these values and no finding above explains why

Only what the values decide is said: which mistake produced a valid-looking set-up (targets flipped to
1 - y, a wrong but in-range label) cannot be told from the values, and nothing is said about it.

CLI: the file holds ``outputs`` and ``targets`` (and optionally ``pos_weight`` and ``weight``); .pt files are
read with ``torch.load(weights_only=True)``, .npz with ``numpy.load(allow_pickle=False)``. Exit status 0: looks
right; 1: findings; 2: the file or the options are unusable (one line).
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: `--help` answers without it
    import torch
    from torch import nn

MIN_VALUES = 32  # outputs all in [0, 1] say "probabilities, not logits" only from this many on
ROW_TOL = 1e-3  # |row sum - 1| of probabilities, |logsumexp| of log-probabilities (1e-2 in half precision)
LOSSES = {"bce": "BCELoss", "bce_logits": "BCEWithLogitsLoss", "ce": "CrossEntropyLoss", "nll": "NLLLoss",
          "kldiv": "KLDivLoss", "kd": "KLDivLoss"}
SUPPORTED = "nn.BCELoss, nn.BCEWithLogitsLoss, nn.CrossEntropyLoss, nn.NLLLoss, nn.KLDivLoss"


@dataclass(frozen=True)
class Finding:
    """One mistake: its name, what is wrong (with the numbers), what a user sees, and the fix."""

    code: str
    problem: str
    symptom: str
    fix: str

    def __str__(self) -> str:
        return f"[{self.code}] {self.problem}\n    symptom: {self.symptom}\n    fix: {self.fix}"


def check_setup(outputs: Any, targets: Any, criterion: nn.Module, verbose: bool = True) -> list[Finding]:
    """The mistakes that these outputs (the criterion's input) and targets reveal with this criterion; [] when
    none ("looks right"). Tensors or arrays. verbose: print the findings (or "looks right") and the loss."""
    import torch
    from torch import nn

    kinds = {nn.BCELoss: _bce, nn.BCEWithLogitsLoss: _bce_logits, nn.CrossEntropyLoss: _ce, nn.NLLLoss: _nll,
             nn.KLDivLoss: _kldiv}
    check = next((f for cls, f in kinds.items() if isinstance(criterion, cls)), None)
    if check is None:
        raise TypeError(f"lossbench.check_setup supports {SUPPORTED}, not {type(criterion).__name__}.")
    x, t = torch.as_tensor(outputs).detach(), torch.as_tensor(targets).detach()
    log_input = isinstance(criterion, (nn.NLLLoss, nn.KLDivLoss))  # -inf: log(0), its own finding
    findings = _nonfinite(x, t, log_input, getattr(criterion, "log_target", False)) + check(x, t, criterion)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # KLDivLoss's warning on reduction="mean": a finding says it
            loss, error = criterion(x, t), None
    except Exception as e:  # the set-up's own error: reported, never raised
        loss, error = None, f"{type(e).__name__}: {str(e).splitlines()[0]}"
    if error and not findings:
        findings.append(Finding("raises", f"{type(criterion).__name__} raises on these values: {error}",
                                "training stops at the first batch", "see the message; check shapes and dtypes"))
    if verbose:
        print(report(findings, criterion, x, t, loss, error))
    return findings


def report(findings: list[Finding], criterion: nn.Module, x: torch.Tensor, t: torch.Tensor, loss, error) -> str:
    """The printed answer: what was checked, the loss it gives, then "looks right" or each finding."""
    head = (f"{type(criterion).__name__}({_options(criterion)}) on outputs {tuple(x.shape)} {x.dtype}, "
            f"targets {tuple(t.shape)} {t.dtype}: ")
    if error:
        head += f"raises {error}"
    else:
        head += f"loss {loss.float().mean().item():.4g}" if loss.numel() else "loss (empty)"
    if not findings:
        return f"{head}\nlooks right"
    return "\n".join([head, f"{len(findings)} problem{'s' * (len(findings) > 1)}:", *map(str, findings)])


def _options(c: nn.Module) -> str:
    opts = [f"reduction={c.reduction!r}"]
    for name in ("ignore_index", "label_smoothing", "log_target"):
        if hasattr(c, name):
            opts.append(f"{name}={getattr(c, name)!r}")
    for name in ("weight", "pos_weight"):
        if getattr(c, name, None) is not None:
            opts.append(f"{name} of shape {tuple(getattr(c, name).shape)}")
    return ", ".join(opts)


# --- the checks ---------------------------------------------------------------------------------------------
def _nonfinite(x: torch.Tensor, t: torch.Tensor, log_input: bool, log_target: bool) -> list[Finding]:
    """NaN/Inf outputs or targets (-inf is a log-probability's 0 where the values are log-probabilities)."""
    import torch

    out = []
    for name, v, log in (("outputs", x, log_input), ("targets", t, log_target)):
        if v.is_floating_point():
            bad = int((~torch.isfinite(v) & ~((v == -math.inf) & log)).sum())
            if bad:
                out.append(Finding("nonfinite", f"{bad} of {v.numel()} {name} are NaN or +-Inf",
                                   "the loss is NaN/Inf, and after the next step every weight is NaN",
                                   "find where they come from: a diverged model (lower the learning rate; "
                                   "lossbench.watch names the first call), 0/0 or log(0) in the model, NaN inputs"))
    return out


def _tol(x: torch.Tensor) -> float:
    import torch

    return ROW_TOL * 10 if x.dtype in (torch.float16, torch.bfloat16) else ROW_TOL


def _classes(x: torch.Tensor) -> int:
    """The class dimension's size: dim 1 of (N, C, d...), dim 0 of an unbatched (C,)."""
    return x.shape[0] if x.dim() == 1 else x.shape[1] if x.dim() else 0


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, d...) as rows of C classes."""
    return x.reshape(1, -1) if x.dim() == 1 else x.movedim(1, -1).reshape(-1, x.shape[1])


def _checkable(x: torch.Tensor) -> bool:
    """Enough values to tell rows of a distribution from chance: 2 classes or more, 4 values or more."""
    return x.is_floating_point() and _classes(x) >= 2 and x.numel() >= 4


def _are_distributions(x: torch.Tensor) -> bool:
    """Every row nonnegative and summing to 1 (only said of _checkable values)."""
    if not _checkable(x):
        return False
    r = _rows(x).double()
    return bool((r >= 0).all() and ((r.sum(dim=1) - 1).abs() <= _tol(x)).all())


def _lse_range(x: torch.Tensor) -> tuple[float, float]:
    """Smallest and largest logsumexp of the rows (0 for log-probabilities)."""
    lse = _rows(x).double().logsumexp(dim=1)
    return float(lse.min()), float(lse.max())


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _target_values(t: torch.Tensor, limit: int = 6) -> str:
    values = t.unique()
    shown = ", ".join(_fmt(float(v)) for v in values[:limit])
    return "{" + shown + (", ..." if len(values) > limit else "") + "}"


def _one_class(labels: torch.Tensor, what: str) -> list[Finding]:
    if labels.numel() < 2 or len(labels.unique()) > 1:
        return []
    return [Finding("one_class", f"every {what} is {_fmt(float(labels.reshape(-1)[0]))} ({labels.numel()} values): "
                    "one class",
                    "the model learns to predict that class everywhere: the loss falls toward 0 and nothing about "
                    "the other class is learned; ROC AUC is undefined (scikit-learn returns NaN)",
                    "check the labels and the split (a filter or a sort that lost a class); if these are one "
                    "batch of an imbalanced set, check a larger sample before worrying")]


def _bce_targets(x: torch.Tensor, t: torch.Tensor, name: str) -> list[Finding]:
    out = []
    if t.shape != x.shape:
        out.append(Finding("target_shape", f"targets have shape {tuple(t.shape)}, outputs {tuple(x.shape)}",
                           f"{name} raises ValueError (\"Target size ... must be the same as input size\"); "
                           "broadcasting them by hand would pair every output with every target",
                           "the same shape: outputs.squeeze(1) for a (N, 1) output and (N,) targets, or "
                           "targets.unsqueeze(1)"))
    if not t.is_floating_point():
        out.append(Finding("target_dtype", f"targets are {t.dtype}; {name} takes float targets",
                           f"{name} raises RuntimeError (BCELoss: \"Found dtype Long but expected Float\"; "
                           "BCEWithLogitsLoss: \"result type Float can't be cast to the desired output type\")",
                           "targets.float()"))
    tf = t.double()
    if t.numel() and ((tf < 0).any() or (tf > 1).any()):
        out.append(Finding("target_range", f"targets take values {_target_values(t)}, outside [0, 1]",
                           "BCELoss raises \"all elements of target should be between 0 and 1\"; "
                           "BCEWithLogitsLoss accepts them silently, and its loss is then unbounded below: "
                           "it goes negative and drives the logits to +-infinity",
                           "targets in {0, 1} (or probabilities in [0, 1]): (y + 1) / 2 for {-1, 1} labels, "
                           "y / 255 for {0, 255} masks; class indices of more than two classes belong to "
                           "CrossEntropyLoss"))
    elif t.numel():
        out += _one_class(tf, "target")
    return out


def _bce(x: torch.Tensor, t: torch.Tensor, c: nn.Module) -> list[Finding]:
    out = _bce_targets(x, t, "BCELoss")
    finite = x[x.isfinite()].double()
    if finite.numel() and ((finite < 0).any() or (finite > 1).any()):
        out.append(Finding("logits_to_bce", f"outputs range from {_fmt(float(finite.min()))} to "
                           f"{_fmt(float(finite.max()))}: logits, not probabilities",
                           "BCELoss raises \"all elements of input should be between 0 and 1\" (on a GPU a "
                           "device-side assert that ends the process)",
                           "give the logits to nn.BCEWithLogitsLoss (no sigmoid in the model); apply "
                           "torch.sigmoid only to predict"))
    elif t.shape == x.shape and t.is_floating_point() and x.numel():
        wrong = ((x == 0) & (t > 0)) | ((x == 1) & (t < 1))
        if wrong.any():
            sat = int(((x == 0) | (x == 1)).sum())
            out.append(Finding("clamped", f"{int(wrong.sum())} of {x.numel()} probabilities are exactly 0 or 1 "
                               f"on the wrong side of their target ({sat} exactly 0 or 1 in all): a saturated "
                               f"sigmoid (in float32, sigmoid(z) is exactly 1 from z = 16.6 and 0 below -88.7)",
                               "BCELoss clamps their log at -100 and reports 100 for each whatever the true loss, "
                               "and the sigmoid passes them an exactly zero gradient: they are never corrected. "
                               "The loss stalls (at 50 when half the samples are like this) and ROC AUC tends "
                               "to 0.5",
                               "drop the sigmoid and give the logits to nn.BCEWithLogitsLoss: it computes log "
                               "sigmoid(z) from z, and its gradient sigmoid(z) - y never vanishes"))
    return out


def _bce_logits(x: torch.Tensor, t: torch.Tensor, c: nn.Module) -> list[Finding]:
    out = _bce_targets(x, t, "BCEWithLogitsLoss")
    xf = x.double()
    if x.numel() >= MIN_VALUES and bool(((xf >= 0) & (xf <= 1)).all()) and float(xf.max()) > float(xf.min()):
        out.append(Finding("double_sigmoid", f"all {x.numel()} outputs lie in [{_fmt(float(xf.min()))}, "
                           f"{_fmt(float(xf.max()))}]: probabilities (a sigmoid already applied), not logits",
                           "BCEWithLogitsLoss applies a second sigmoid: its probabilities stay in [0.5, 0.731], "
                           f"so the loss cannot fall below {math.log(1 + 1 / math.e):.3f} for a positive and "
                           f"{math.log(2):.3f} for a negative, every prediction at a 0.5 threshold is positive, "
                           "and gradients shrink by up to 4x: training crawls or stalls",
                           "remove the sigmoid from the model's output (BCEWithLogitsLoss applies it) and call "
                           "torch.sigmoid only to predict"))
    pw = c.pos_weight
    if pw is not None:
        k = x.shape[-1] if x.dim() >= 2 else 1
        ok = pw.numel() == 1 if x.dim() < 2 else tuple(pw.shape) in ((), (1,), (k,))
        if not ok:
            out.append(Finding("pos_weight_shape", f"pos_weight has shape {tuple(pw.shape)} but the outputs "
                               f"{tuple(x.shape)} have {k} per sample",
                               "where it broadcasts (a (N,) pos_weight on (N,) outputs) it silently weights samples "
                               "or the wrong axis instead of classes; elsewhere BCEWithLogitsLoss raises "
                               "\"The size of tensor a must match the size of tensor b\"",
                               f"one weight per output: shape (1,) for a binary output, ({k},) for {k} labels, "
                               "e.g. pos_weight = n_negative / n_positive per label"))
    return out


def _class_targets(x: torch.Tensor, t: torch.Tensor, c: nn.Module, name: str) -> list[Finding]:
    """Targets of CrossEntropyLoss/NLLLoss given as class indices, and the weight."""
    import torch

    out, n_classes = [], _classes(x)
    if c.weight is not None and c.weight.numel() != n_classes:
        out.append(Finding("weight_shape", f"weight has {c.weight.numel()} entries for {n_classes} classes",
                           f"{name} raises \"weight tensor should be defined either for all {n_classes} classes "
                           "or no classes\"", f"one weight per class: shape ({n_classes},)"))
    if n_classes == 1:
        out.append(Finding("one_logit_ce", f"the outputs {tuple(x.shape)} have a single class",
                           f"{name} over one class is log_softmax = 0: the loss is always 0 and nothing is learned",
                           "two outputs for a binary task, or one output with nn.BCEWithLogitsLoss and float "
                           "targets"))
    if t.is_floating_point() and t.shape == x.shape:
        return out  # probability targets: _soft_targets checks them (CrossEntropyLoss only)
    if t.is_floating_point() or t.dtype not in (torch.int64, torch.uint8):
        out.append(Finding("target_dtype", f"class-index targets are {t.dtype}",
                           f"{name} raises \"expected target dtype to be Long or Byte, but got ...\"",
                           "targets.long() (probability targets must have the outputs' shape)"))
        if t.is_floating_point() and not bool((t == t.round()).all()):
            return out
    labels = t.long()
    labelled = labels[labels != c.ignore_index]
    if labels.numel() and not labelled.numel() and c.reduction == "mean":
        out.append(Finding("all_ignored", f"every target is ignore_index ({c.ignore_index}), {labels.numel()} of them",
                           "with reduction='mean' the loss is NaN (0 / 0) and its gradient 0: a logged or "
                           "averaged loss turns NaN, and a NaN check stops the run",
                           "skip batches without a label (if (y != ignore_index).any()), or use reduction='sum' "
                           "and divide by the number of labelled targets"))
    if not labelled.numel() or n_classes == 1:  # a single class: one_logit_ce says it all
        return out
    if ((labelled < 0).any() or (labelled >= n_classes).any()):
        lo, hi = int(labelled.min()), int(labelled.max())
        one_based = " (1-based labels?)" if lo == 1 and hi == n_classes else ""
        out.append(Finding("target_range", f"class indices range over {lo}..{hi}, but the outputs have {n_classes} "
                           f"classes (0..{n_classes - 1}; ignore_index={c.ignore_index}){one_based}",
                           f"{name} raises IndexError \"Target {hi if hi >= n_classes else lo} is out of bounds\" "
                           "on the CPU; on a GPU a device-side assert ends the process",
                           "labels 0..C-1: subtract 1 from 1-based labels, or give the model as many outputs as "
                           "classes; mark unlabelled samples with ignore_index"))
    else:
        out += _one_class(labelled, "labelled target")
    return out


def _ce(x: torch.Tensor, t: torch.Tensor, c: nn.Module) -> list[Finding]:
    out = _class_targets(x, t, c, "CrossEntropyLoss")
    n_classes = _classes(x)
    if _are_distributions(x):
        out.append(Finding("softmax_to_ce", "every row of the outputs is nonnegative and sums to 1: softmax "
                           "probabilities, not logits",
                           "CrossEntropyLoss applies log_softmax again: even a one-hot row costs "
                           f"log(1 + (C - 1)/e) = {math.log(1 + (n_classes - 1) / math.e):.3f} for C = {n_classes}, "
                           "the gradients are damped and training crawls or stalls above that floor",
                           "remove the softmax: CrossEntropyLoss takes raw logits (apply softmax only to predict)"))
    if t.is_floating_point() and t.shape == x.shape and t.numel():
        r = _rows(t).double()
        if (r < 0).any() or ((r.sum(dim=1) - 1).abs() > _tol(t)).any():
            sums = r.sum(dim=1)
            out.append(Finding("soft_targets", f"probability targets whose rows are not distributions (row sums "
                               f"{_fmt(float(sums.min()))}..{_fmt(float(sums.max()))}, min value {_fmt(float(r.min()))})",
                               "CrossEntropyLoss accepts them silently: a multi-hot row counts each label in full "
                               "(the loss scales with the number of labels), a negative entry makes it unbounded below",
                               "class indices (long) for one label per sample; nn.BCEWithLogitsLoss for several "
                               "labels per sample; or normalise the rows"))
    return out


def _log_prob_input(x: torch.Tensor, name: str) -> list[Finding]:
    """NLLLoss/KLDivLoss inputs: rows of log-probabilities."""
    import torch

    if x.dim() == 0 or not x.is_floating_point() or not x.numel():
        return []
    if (x == -math.inf).any():
        return [Finding("log_underflow", f"{int((x == -math.inf).sum())} of {x.numel()} log-probabilities are "
                        "-inf: log(softmax(z)) underflowed (softmax rounds to 0 from about 104 below the row's "
                        "largest logit in float32)",
                        f"{name} is inf wherever a target lands on one, and the gradients NaN",
                        "torch.log_softmax(z, dim=1) (it never underflows to -inf), or nn.CrossEntropyLoss on z")]
    if _are_distributions(x):
        return [Finding("probs_to_log_input", f"every row of the input is nonnegative and sums to 1: probabilities, "
                        f"but {name} takes log-probabilities",
                        "NLLLoss returns -p_y, a loss in [-1, 0]; KLDivLoss returns sum q (log q - p), which is "
                        "not a divergence: not 0 when the two agree, and it can go negative",
                        "torch.log_softmax(z, dim=1) instead of softmax (or nn.CrossEntropyLoss on z)")]
    lo, hi = _lse_range(x)
    if torch.isfinite(x).all() and max(abs(lo), abs(hi)) > _tol(x):
        return [Finding("not_log_probs", f"the rows are not log-probabilities: their logsumexp ranges from "
                        f"{_fmt(lo)} to {_fmt(hi)} instead of 0 (raw logits?)",
                        f"{name} is then unbounded below: the loss goes negative and the inputs grow without "
                        "limit",
                        "torch.log_softmax(z, dim=1) first (or nn.CrossEntropyLoss on the logits)")]
    return []


def _nll(x: torch.Tensor, t: torch.Tensor, c: nn.Module) -> list[Finding]:
    return _class_targets(x, t, c, "NLLLoss") + _log_prob_input(x, "NLLLoss")


def _kldiv(x: torch.Tensor, t: torch.Tensor, c: nn.Module) -> list[Finding]:
    out = _log_prob_input(x, "KLDivLoss")
    if c.reduction == "mean":
        n_classes = x.shape[-1] if x.dim() else 1
        out.append(Finding("kl_mean", "reduction='mean' (KLDivLoss's default) divides the sum by every element "
                           "(N x C), not by the batch size",
                           f"the loss and its gradient are C = {n_classes} times smaller than the KL divergence: "
                           "in distillation the soft term is drowned by the hard one (PyTorch warns about it)",
                           "nn.KLDivLoss(reduction='batchmean')"))
    if t.shape != x.shape:
        out.append(Finding("target_shape", f"targets have shape {tuple(t.shape)}, the input {tuple(x.shape)}",
                           "KLDivLoss broadcasts them (with a warning): each input row is compared with the wrong "
                           "target rows", "targets of the input's shape: one distribution per input row"))
    elif _checkable(t):
        symptom = "the loss is not a divergence: not 0 at a perfect match, possibly negative"
        if c.log_target and _are_distributions(t):
            out.append(Finding("kl_target", "the targets are probabilities, but log_target=True says "
                               "log-probabilities", symptom, "nn.KLDivLoss(log_target=False, ...)"))
        elif not c.log_target and not _are_distributions(t) and _are_distributions(t.exp()):
            out.append(Finding("kl_target", "the targets are log-probabilities, but log_target=False says "
                               "probabilities", symptom, "nn.KLDivLoss(log_target=True, ...)"))
        elif not _are_distributions(t.exp() if c.log_target else t):
            out.append(Finding("kl_target", "the targets' rows are not " + ("log-" if c.log_target else "")
                               + "probability distributions", symptom,
                               "targets = softmax(teacher_logits / T, dim=1)"
                               + (" (log_softmax with log_target=True)" if c.log_target else "")))
    return out


# --- the command line -------------------------------------------------------------------------------------------
class BadInput(Exception):
    """A file or option that cannot be used: the message is the one line printed."""


def build_criterion(args: argparse.Namespace, extra: dict[str, Any]) -> nn.Module:
    import torch
    from torch import nn

    cls = getattr(nn, LOSSES[args.loss])
    kw: dict[str, Any] = {}
    if args.reduction:
        kw["reduction"] = args.reduction
    if cls in (nn.CrossEntropyLoss, nn.NLLLoss):
        kw["ignore_index"] = args.ignore_index
    if cls is nn.CrossEntropyLoss:
        kw["label_smoothing"] = args.label_smoothing
    if cls is nn.KLDivLoss:
        kw["log_target"] = args.log_target
    for key, allowed in (("pos_weight", (nn.BCEWithLogitsLoss,)),
                         ("weight", (nn.BCELoss, nn.BCEWithLogitsLoss, nn.CrossEntropyLoss, nn.NLLLoss))):
        if key in extra:
            if cls not in allowed:
                raise BadInput(f"{args.file}: holds {key!r}, which --loss {args.loss} does not take")
            kw[key] = torch.as_tensor(extra[key]).float()
    if args.reduction == "batchmean" and cls is not nn.KLDivLoss:
        raise BadInput(f"--reduction batchmean is KLDivLoss's only (--loss kldiv); {args.loss} takes mean, sum, none")
    return cls(**kw)


def load(path: Path) -> dict[str, Any]:
    """{'outputs', 'targets', optional 'pos_weight', 'weight'} from a .pt or .npz file; BadInput otherwise."""
    if path.suffix not in (".pt", ".npz"):
        raise BadInput(f"{path}: expected a .pt or .npz file")
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    try:
        if path.suffix == ".pt":
            import torch

            data = torch.load(path, weights_only=True, map_location="cpu")
        else:
            import numpy as np

            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
    except Exception as e:
        how = "torch.load(weights_only=True)" if path.suffix == ".pt" else "numpy.load(allow_pickle=False)"
        raise BadInput(f"{path}: cannot be read with {how}: {str(e).strip().splitlines()[0][:200]}") from None
    if not isinstance(data, dict) or not {"outputs", "targets"} <= set(data):
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise BadInput(f"{path}: needs 'outputs' and 'targets' (a dict of tensors or an .npz with those arrays); "
                       f"found {keys}")
    import numpy as np
    import torch

    for key, value in data.items():
        if key in ("outputs", "targets", "pos_weight", "weight") and not isinstance(value, (torch.Tensor, np.ndarray)):
            raise BadInput(f"{path}: {key!r} is a {type(value).__name__}, not a tensor or array")
        if isinstance(value, np.ndarray) and value.dtype.kind not in "biuf":
            raise BadInput(f"{path}: {key!r} has dtype {value.dtype}; numbers expected")
    return data


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lossbench.doctor", description=__doc__.split("\n\n")[0],
                                epilog="exit status: 0 looks right, 1 findings, 2 unusable file or options")
    p.add_argument("file", type=Path, help="a .pt (dict of tensors) or .npz with 'outputs' and 'targets' "
                   "(optionally 'pos_weight', 'weight')")
    p.add_argument("--loss", required=True, choices=list(LOSSES),
                   help="the criterion: " + ", ".join(f"{k} = nn.{v}" for k, v in LOSSES.items()))
    p.add_argument("--reduction", choices=["mean", "sum", "none", "batchmean"], default=None,
                   help="the criterion's reduction (default: its own, 'mean')")
    p.add_argument("--ignore-index", type=int, default=-100, help="ce, nll (default -100)")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="ce (default 0)")
    p.add_argument("--log-target", action="store_true", help="kldiv: the targets are log-probabilities")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        data = load(args.file)
        criterion = build_criterion(args, data)
    except BadInput as e:
        print(f"lossbench.doctor: error: {e}", file=sys.stderr)
        sys.exit(2)
    findings = check_setup(data["outputs"], data["targets"], criterion)
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    raise SystemExit(main())
