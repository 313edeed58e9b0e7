r"""`python -m lossbench.check`: the identities between PyTorch's classification losses, verified numerically.

Each identity is evaluated in every requested dtype (float64, float32, bfloat16, float16 by default): both
sides are computed in that dtype from the same inputs and compared in float64. A row reports

- ``diff``: the largest difference, absolute for values up to 1 and relative above,
  ``max |a - b| / max(1, |b|)`` (so a loss of 30 in float16 is judged by its relative error);
- ``tol``: the tolerance, a small multiple of the dtype's machine epsilon (derived per row, see
  :data:`CHECKS`), or ``-`` for informative rows;
- ``verdict``: ``ok`` / ``FAIL`` for identities that must hold, ``differs`` / ``agrees`` for rows that are
  *expected* to differ (e.g. Sigmoid + BCELoss at large |x|, sklearn's clip vs BCELoss's clamp), and
  ``n/a`` where a claim could not be checked.

The command exits 1 if an identity that must hold fails, else 0.

    python -m lossbench.check
    python -m lossbench.check --dtypes float64,float32
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from dataclasses import dataclass

DTYPE_NAMES = ("float64", "float32", "bfloat16", "float16")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m lossbench.check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtypes", default=",".join(DTYPE_NAMES),
                    help=f"comma-separated subset of {', '.join(DTYPE_NAMES)} (default: all)")
    return ap


if __name__ == "__main__":
    parser().parse_args()  # --help answered before torch and scikit-learn are imported (seconds)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.metrics import log_loss  # noqa: E402

DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
GRID = (-30.0, 30.0, 6001)  # x grid for the elementwise binary identities (step 0.01)
PART = 0.01  # "parted": the two sides differ by more than 1% (relative above 1)


@dataclass
class Row:
    identity: str
    dtype: str
    diff: float
    tol: float | None  # None: informative row (expected to differ, or not checkable)
    detail: str = ""
    checked: bool = True  # False: the claim could not be checked (verdict n/a)
    part: float = PART  # informative rows: "differs" above this

    @property
    def must(self) -> bool:
        return self.tol is not None

    @property
    def verdict(self) -> str:
        if not self.checked:
            return "n/a"
        if self.must:
            return "ok" if self.diff <= self.tol else "FAIL"
        return "differs" if self.diff > self.part else "agrees"


def mixed(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max(1, |b|) in float64; NaN/inf anywhere counts as an infinite difference."""
    a, b = a.double(), b.double()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return math.inf
    return float(((a - b).abs() / b.abs().clamp(min=1)).max())


def eps(dt: torch.dtype) -> float:
    return torch.finfo(dt).eps


def grid(dt: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """x on [-30, 30] (each value twice) and labels y in {0, 1}, in dtype dt."""
    x = torch.linspace(*GRID, dtype=torch.float64)
    x = torch.cat([x, x]).to(dt)
    y = torch.cat([torch.zeros(GRID[2]), torch.ones(GRID[2])]).to(dt)
    return x, y


def batch(dt: torch.dtype, n: int = 256, c: int = 5):
    """Fixed logits (N, C) with spread ~3, labels with some ignore_index=-100, positive class weights."""
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(n, c, generator=g, dtype=torch.float64) * 3).to(dt)
    y = torch.randint(0, c, (n,), generator=g)
    y[::17] = -100
    w = (torch.rand(c, generator=g, dtype=torch.float64) * 2 + 0.25).to(dt)
    return z, y, w


# --- identities that must hold ------------------------------------------------------------------------------
def ce_is_logsoftmax_nll(dt: torch.dtype, name: str) -> list[Row]:
    z, y, w = batch(dt)
    rows = []
    for label, kw in (("", {}), (" weight", {"weight": w}), (" weight+ignore_index", {"weight": w, "ignore_index": -100})):
        yy = y if "ignore_index" in kw else y.clamp(min=0)
        for red in ("mean", "none"):
            a = F.cross_entropy(z, yy, reduction=red, **kw)
            b = F.nll_loss(F.log_softmax(z, dim=1), yy, reduction=red, **kw)
            rows.append(Row(f"CE = LogSoftmax+NLL{label} ({red})", name, mixed(a, b), 2 * eps(dt)))
    return rows


def sigmoid_is_softmax(dt: torch.dtype, name: str) -> list[Row]:
    x, _ = grid(dt)
    a = torch.sigmoid(x)
    b = torch.softmax(torch.stack([torch.zeros_like(x), x], dim=1), dim=1)[:, 1]
    return [Row("sigmoid(x) = softmax([0,x])[1], x in [-30,30]", name, mixed(a, b), 2 * eps(dt))]


def bce_logits_is_ce(dt: torch.dtype, name: str) -> list[Row]:
    x, y = grid(dt)
    a = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    b = F.cross_entropy(torch.stack([torch.zeros_like(x), x], dim=1), y.long(), reduction="none")
    # each side is a log-sum-exp of two terms with a few roundings in dt: a few ulps each
    return [Row("BCEWithLogits(x,y) = CE([0,x],y), x in [-30,30]", name, mixed(a, b), 16 * eps(dt))]


def bce_logits_is_exact(dt: torch.dtype, name: str) -> list[Row]:
    x, y = grid(dt)
    a = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    xd, yd = x.double(), y.double()
    exact = xd.clamp(min=0) - xd * yd + torch.log1p(torch.exp(-xd.abs()))
    return [Row("BCEWithLogits = exact fp64 loss, x in [-30,30]", name, mixed(a, exact), 16 * eps(dt))]


def bce_sigmoid_benign(dt: torch.dtype, name: str) -> list[Row]:
    r = 2.0
    x, y = grid(dt)
    keep = x.double().abs() <= r
    x, y = x[keep], y[keep]
    a = F.binary_cross_entropy(torch.sigmoid(x), y, reduction="none")
    b = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    # log(1 - p) turns p's rounding error (~eps) into eps / (1 - p) <= eps * (1 + e^r)
    return [Row(f"BCE(sigmoid(x)) = BCEWithLogits, |x| <= {r:g}", name, mixed(a, b), 4 * eps(dt) * (1 + math.exp(r)))]


def label_smoothing(dt: torch.dtype, name: str) -> list[Row]:
    z, y, w = batch(dt)
    y = y.clamp(min=0)
    a_s, c = 0.1, z.shape[1]
    rows = []
    for label, wt in (("", None), (" + weight", w)):
        got = F.cross_entropy(z, y, weight=wt, label_smoothing=a_s)
        lp = F.log_softmax(z.double(), dim=1)
        wd = torch.ones(c, dtype=torch.float64) if wt is None else wt.double()
        # PyTorch's rule: both terms divided by the sum of the target classes' weights
        smooth = -(lp * wd).sum(dim=1).sum() / wd[y].sum()
        want = (1 - a_s) * F.nll_loss(lp, y, weight=None if wt is None else wd) + a_s / c * smooth
        rows.append(Row(f"CE(label_smoothing=0.1){label} = (1-a)NLL + a/C sum(-log p)", name, mixed(got, want),
                        8 * eps(dt)))
    t = (1 - a_s) * F.one_hot(y, c).double() + a_s / c
    soft = F.cross_entropy(z, t.to(dt))
    rows.append(Row("CE(label_smoothing=0.1) = CE(soft target (1-a)onehot + a/C)", name,
                    mixed(F.cross_entropy(z, y, label_smoothing=a_s), soft), 8 * eps(dt)))
    return rows


def weighted_means(dt: torch.dtype, name: str) -> list[Row]:
    z, y, w = batch(dt)
    y = y.clamp(min=0)
    per = F.cross_entropy(z, y, weight=w, reduction="none").double()
    got = F.cross_entropy(z, y, weight=w)
    by_weights = per.sum() / w.double()[y].sum()
    by_n = per.sum() / len(y)
    rows = [
        Row("CE(weight) mean = sum w_y l / sum w_y", name, mixed(got, by_weights), 8 * eps(dt)),
        Row("CE(weight) mean vs sum w_y l / N (not the rule)", name, mixed(by_n, by_weights), None,
            f"/N would give {float(by_n):.4f}, PyTorch gives {float(got):.4f}"),
    ]
    x, t = z[:, 0], (y == 1).to(dt)
    pw = torch.tensor([4.0], dtype=dt)
    per = F.binary_cross_entropy_with_logits(x, t, pos_weight=pw, reduction="none").double()
    got = F.binary_cross_entropy_with_logits(x, t, pos_weight=pw)
    by_n = per.sum() / len(x)
    by_weights = per.sum() / (1 + (float(pw) - 1) * t.double()).sum()
    rows += [
        Row("BCEWithLogits(pos_weight=4) mean = sum l / N", name, mixed(got, by_n), 8 * eps(dt)),
        Row("BCEWithLogits(pos_weight) mean vs sum l / sum weights (CE's rule)", name, mixed(by_weights, by_n), None,
            f"CE's rule would give {float(by_weights):.4f}, PyTorch gives {float(got):.4f}"),
    ]
    return rows


def worked_numbers(dt: torch.dtype, name: str) -> list[Row]:
    """The tutorials' numbers, given to 4 decimals: |value - quoted| <= 5e-5 plus the dtype's rounding."""
    z = torch.tensor([[1.0, 2.0, 3.0]], dtype=dt)
    tol = 5e-5 + 4 * eps(dt) * 2.5
    got = F.cross_entropy(z, torch.tensor([2]))
    rows = [Row("CE([[1,2,3]], 2) = 0.4076", name, abs(float(got) - 0.4076), tol, f"got {float(got):.4f}")]
    lp = F.log_softmax(z, dim=1)
    for c, quoted in enumerate((2.4076, 1.4076, 0.4076)):
        got = F.nll_loss(lp, torch.tensor([c]))
        rows.append(Row(f"NLL(log_softmax([1,2,3]), {c}) = {quoted}", name, abs(float(got) - quoted), tol,
                        f"got {float(got):.4f}"))
    return rows


# --- the tutorials' clipped hand-written BCE, and CE over extra dimensions ------------------------------------
TUTORIAL_TRUE = (0.0, 1.0, 0.0)
# (probabilities, the tutorial's printed result) for y_true = TUTORIAL_TRUE
TUTORIAL_CLIPPED = (((0.0, 1.0, 0.0), 3.0000150000863473e-05), ((0.1, 0.8, 0.1), 0.43386458262986227),
                    ((0.2, 0.6, 0.2), 0.9571127263944101), ((0.3, 0.4, 0.3), 1.62964061975162))


def tutorial_clip(p: torch.Tensor) -> torch.Tensor:
    """The tutorial's clip: each probability >= 1 becomes 0.99999, each <= 0 becomes 0.00001. (Its function does
    this in place and so also changes the caller's array; this one works on a copy.)"""
    p = p.clone()
    p[p >= 1] = 0.99999
    p[p <= 0] = 0.00001
    return p


def tutorial_bce(t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The tutorial's hand-written cross-entropy of one sample: -sum_c [t_c log p_c + (1 - t_c) log(1 - p_c)]."""
    p = tutorial_clip(p)
    return -(t * torch.log(p) + (1 - t) * torch.log(1 - p)).sum()


def tutorial_clipped_bce(dt: torch.dtype, name: str) -> list[Row]:
    """The four printed numbers (float64 only: they are float64 reprs), by the tutorial's function and by
    nn.BCELoss(reduction="sum") on the clipped probabilities."""
    if dt != torch.float64:
        return []
    t = torch.tensor(TUTORIAL_TRUE, dtype=dt)
    rows = []
    for probs, quoted in TUTORIAL_CLIPPED:
        p = torch.tensor(probs, dtype=dt)
        ours = tutorial_bce(t, p)
        bce = torch.nn.BCELoss(reduction="sum")(tutorial_clip(p), t)
        want = torch.tensor(quoted, dtype=dt)
        label = f"clipped BCE, y=[0,1,0], p={list(probs)} = {quoted!r}"
        rows += [Row(f"tutorial's function: {label}", name, mixed(ours, want), 4 * eps(dt), f"got {float(ours)!r}"),
                 Row(f"nn.BCELoss(sum) on clipped p: {label}", name, mixed(bce, want), 16 * eps(dt),
                     f"got {float(bce)!r}")]
    return rows


EXTRA_DIMS = (((32, 10, 5), (32, 5)), ((2, 3, 3, 3), (2, 3, 3)))


def ce_extra_dims(dt: torch.dtype, name: str) -> list[Row]:
    """CrossEntropyLoss on (N, C, d1, ...) with targets (N, d1, ...): the mean of NLL(log_softmax(dim=1)) over all
    N*d1*... positions; with class weights, sum of w_y l / sum of w_y; ignore_index drops positions from both."""
    g = torch.Generator().manual_seed(2)
    rows = []
    for z_shape, y_shape in EXTRA_DIMS:
        c = z_shape[1]
        z = (torch.randn(z_shape, generator=g, dtype=torch.float64) * 3).to(dt)
        y = torch.randint(0, c, y_shape, generator=g)
        w = (torch.rand(c, generator=g, dtype=torch.float64) * 2 + 0.25).to(dt)
        log_p = F.log_softmax(z, dim=1)
        shape = f"{tuple(z_shape)}/{tuple(y_shape)}"
        got = F.cross_entropy(z, y)
        want = F.nll_loss(log_p, y, reduction="sum") / y.numel()
        rows.append(Row(f"CE {shape} = NLL(log_softmax(dim=1), sum) / (N*d1*...)", name, mixed(got, want), 8 * eps(dt)))
        got = F.cross_entropy(z, y, weight=w)
        want = F.nll_loss(log_p, y, weight=w, reduction="sum") / w[y].sum()
        rows.append(Row(f"CE {shape} weight = sum w_y l / sum w_y", name, mixed(got, want), 8 * eps(dt)))
        y_ign = y.clone()
        y_ign.view(-1)[::7] = -100
        kept = y_ign != -100
        got = F.cross_entropy(z, y_ign, weight=w, ignore_index=-100)
        terms = -log_p.gather(1, y_ign.clamp(min=0).unsqueeze(1)).squeeze(1) * w[y_ign.clamp(min=0)]
        want = terms[kept].sum() / w[y_ign[kept]].sum()
        rows.append(Row(f"CE {shape} weight+ignore_index = sum over kept w_y l / sum over kept w_y", name,
                        mixed(got, want), 8 * eps(dt), f"{int((~kept).sum())} of {y.numel()} positions ignored"))
    return rows


# --- rows that are expected to differ ----------------------------------------------------------------------
def bce_sigmoid_parting(dt: torch.dtype, name: str) -> list[Row]:
    """Where Sigmoid + BCELoss stops agreeing with BCEWithLogitsLoss on the grid, and by how much."""
    x, y = grid(dt)
    a = F.binary_cross_entropy(torch.sigmoid(x), y, reduction="none").double()
    b = F.binary_cross_entropy_with_logits(x, y, reduction="none").double()
    d = (a - b).abs() / b.abs().clamp(min=1)
    xd = x.double()
    # parted: beyond 1% and beyond BCEWithLogits' own rounding in dt (16 eps, see bce_logits_is_exact)
    part = max(PART, 16 * eps(dt))
    parted = d > part
    hi = float(xd[parted & (xd > 0)].min()) if (parted & (xd > 0)).any() else math.inf
    lo = float(xd[parted & (xd < 0)].max()) if (parted & (xd < 0)).any() else -math.inf
    i = int((a - b).abs().argmax())
    detail = (f"agree within {part:.3g} for x in ({lo:g}, {hi:g}); max |diff| {float((a - b).abs()[i]):.4g} at x={float(xd[i]):.2f} "
              f"y={int(y[i])} (BCE {float(a[i]):.4g}, exact {float(b[i]):.4g})")
    return [Row("BCE(sigmoid(x)) vs BCEWithLogits, x in [-30,30]", name, float(d.max()), None, detail, part=part)]


def sklearn_log_loss(dt: torch.dtype, name: str) -> list[Row]:
    """F.binary_cross_entropy = sklearn log_loss (fp64 only: sklearn computes in float64)."""
    if dt != torch.float64:
        return []
    g = torch.Generator().manual_seed(1)
    p = torch.rand(1000, generator=g, dtype=torch.float64) * 0.998 + 0.001
    y = (torch.rand(1000, generator=g, dtype=torch.float64) < p).double()
    got = F.binary_cross_entropy(p, y)
    want = log_loss(y.numpy(), p.numpy(), labels=[0, 1])
    rows = [Row("F.binary_cross_entropy = sklearn log_loss, p in (0,1)", name, mixed(got, torch.tensor(want, dtype=torch.float64)),
                16 * eps(dt))]
    edge_p, edge_y = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])
    t = F.binary_cross_entropy(edge_p.double(), edge_y.double(), reduction="none")
    s = [log_loss([int(v)], np.array([float(q)]), labels=[0, 1]) for q, v in zip(edge_p, edge_y, strict=True)]
    rows.append(Row("F.binary_cross_entropy vs log_loss at p in {0,1}, wrong label", name,
                    mixed(t, torch.tensor(s, dtype=torch.float64)), None,
                    f"torch clamps log at -100 -> {float(t[0]):g}; sklearn clips p to float64 eps -> {s[0]:.4f}"))
    return rows


def unverified_example(dt: torch.dtype, name: str) -> list[Row]:
    if dt != torch.float64:
        return []
    return [Row("the tutorials' (3, 4) CE example, mean 1.4238", "-", math.nan, None,
                "not checked: the example's logits and targets could not be identified, and lossbench "
                "does not invent inputs to match a quoted number", checked=False)]


# --- soft targets and distillation ---------------------------------------------------------------------------
def soft_batch(dt: torch.dtype, n: int = 256, c: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student logits s (N, C), teacher logits v (N, C) and the teacher's probabilities softmax(v), in dt."""
    g = torch.Generator().manual_seed(2)
    s = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    v = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    return s.to(dt), v.to(dt), torch.softmax(v, dim=1).to(dt)


def soft_targets(dt: torch.dtype, name: str) -> list[Row]:
    """CrossEntropyLoss with class-probability targets: one-hot probabilities give the class-index loss, except
    under class weights with 'mean' (probability targets divide by N, class indices by the weights' sum)."""
    z, y, w = batch(dt)
    y = y.clamp(min=0)
    onehot = F.one_hot(y, z.shape[1]).to(dt)
    rows = []
    for red in ("mean", "sum", "none"):  # the two paths sum in different orders: a few roundings in dt
        rows.append(Row(f"CE(one-hot probabilities) = CE(class indices) ({red})", name,
                        mixed(F.cross_entropy(z, onehot, reduction=red), F.cross_entropy(z, y, reduction=red)),
                        4 * eps(dt)))
    rows.append(Row("CE(one-hot probabilities, label_smoothing=0.1) = CE(class indices, label_smoothing=0.1)", name,
                    mixed(F.cross_entropy(z, onehot, label_smoothing=0.1), F.cross_entropy(z, y, label_smoothing=0.1)),
                    8 * eps(dt)))
    soft_w = F.cross_entropy(z, onehot, weight=w)
    hard_w = F.cross_entropy(z, y, weight=w)
    per = F.cross_entropy(z, y, weight=w, reduction="none").double()
    rows += [
        Row("CE(one-hot probabilities, weight) mean = sum w_y l / N", name, mixed(soft_w, per.sum() / len(y)),
            8 * eps(dt)),
        Row("CE(one-hot probabilities, weight) vs CE(class indices, weight) (mean)", name, mixed(soft_w, hard_w), None,
            f"probabilities divide by N: {float(soft_w):.4f}; indices by sum w_y: {float(hard_w):.4f}"),
    ]
    return rows


def soft_ce_log_loss(dt: torch.dtype, name: str) -> list[Row]:
    """Soft-target CE = scikit-learn's log_loss on the same probabilities (float64; sklearn's y_true takes hard
    labels only, so each sample enters once per class c with sample_weight t_c: sum_c t_c (-log p_c))."""
    if dt != torch.float64:
        return []
    _, v, t = soft_batch(dt)
    g = torch.Generator().manual_seed(3)
    p = torch.softmax(torch.randn(v.shape, generator=g, dtype=torch.float64) * 2, dim=1)
    n, c = p.shape
    got = F.cross_entropy(p.log(), t)  # logits log p: log_softmax(log p) = log p
    want = log_loss(np.repeat(np.arange(c)[None], n, axis=0).ravel(), np.repeat(p.numpy(), c, axis=0),
                    sample_weight=t.numpy().ravel(), labels=list(range(c)))
    return [Row("CE(log p, soft target t) = sklearn log_loss(p; each class weighted by t_c)", name,
                mixed(got, torch.tensor(want, dtype=torch.float64)), 16 * eps(dt))]


def kl_divergence(dt: torch.dtype, name: str) -> list[Row]:
    """KLDivLoss as distillation uses it, and the pitfalls of the tutorials (lossbench's kd_mean, kd_prob)."""
    s, v, t = soft_batch(dt)
    n, c = s.shape
    log_q = F.log_softmax(s, dim=1)
    kl = F.kl_div(log_q, t, reduction="batchmean")
    ce_minus_h = F.cross_entropy(s, t).double() - (-torch.xlogy(t, t).sum(dim=1).mean()).double()
    with warnings.catch_warnings():  # PyTorch warns that 'mean' is not the KL: that is the point of these rows
        warnings.simplefilter("ignore", UserWarning)
        mean = F.kl_div(log_q, t, reduction="mean")
    rows = [
        # CE and H: C terms each, summed in dt; the KL is their difference
        Row("KLDivLoss(batchmean)(log_softmax(s), p) = CE(s, p) - H(p)", name, mixed(kl, ce_minus_h), 8 * eps(dt)),
        Row("KLDivLoss(log_target=True) = KLDivLoss(probability target)", name,
            mixed(F.kl_div(log_q, F.log_softmax(v, dim=1), log_target=True, reduction="batchmean"), kl), 8 * eps(dt)),
        Row("KLDivLoss(mean) = KLDivLoss(batchmean) / C", name, mixed(mean, kl.double() / c), 8 * eps(dt)),
    ]
    if dt != torch.float64:
        return rows
    probs = F.kl_div(torch.softmax(s, dim=1), t, reduction="batchmean")
    rows += [
        Row("KLDivLoss(mean) vs the KL (batchmean): kd_mean", name, mixed(mean, kl), None,
            f"'mean' divides by N*C: {float(mean):.4f} for a KL of {float(kl):.4f} (C = {c})"),
        Row("KLDivLoss(probabilities as input) vs the KL: kd_prob", name, mixed(probs, kl), None,
            f"{float(probs):.4f} for a KL of {float(kl):.4f}; at student = teacher it gives "
            f"{float(F.kl_div(t, t, reduction='batchmean')):.4f}, not 0"),
    ]
    # Hinton et al. (2015), eq. 3: with zero-mean logits, T^2 * dKL/dz_s -> (z_s - v) / C as T grows
    sc, vc = s - s.mean(dim=1, keepdim=True), v - v.mean(dim=1, keepdim=True)
    want = (sc - vc) / c / n  # per batchmean loss
    devs = {}
    for temp in (1.0, 4.0, 20.0, 100.0):
        x = sc.clone().requires_grad_(True)
        loss = temp**2 * F.kl_div(F.log_softmax(x / temp, dim=1), torch.softmax(vc / temp, dim=1), reduction="batchmean")
        (grad,) = torch.autograd.grad(loss, x)
        devs[temp] = float((grad - want).norm() / want.norm())
    rows.append(Row("T^2 * grad KL(T) -> (z_s - v)/C as T grows (Hinton eq. 3), T = 100", name, devs[100.0], None,
                    "relative deviation " + ", ".join(f"T={t:g}: {d:.3g}" for t, d in devs.items())
                    + "; without T^2 the gradient is T^2 times smaller", part=0.05))
    return rows


CHECKS = (
    ce_is_logsoftmax_nll, sigmoid_is_softmax, bce_logits_is_ce, bce_logits_is_exact, bce_sigmoid_benign,
    bce_sigmoid_parting, sklearn_log_loss, label_smoothing, weighted_means, worked_numbers, tutorial_clipped_bce,
    ce_extra_dims, unverified_example, soft_targets, soft_ce_log_loss, kl_divergence,
)


def run_checks(dtypes: list[str]) -> list[Row]:
    rows = []
    for check in CHECKS:
        for name in dtypes:
            rows += check(DTYPES[name], name)
    return rows


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if math.isnan(v):
        return "-"
    return f"{v:.3g}"


def table(rows: list[Row]) -> str:
    head = ("identity", "dtype", "max diff", "tol", "verdict", "detail")
    body = [(r.identity, r.dtype, fmt(r.diff), fmt(r.tol), r.verdict, r.detail) for r in rows]
    widths = [max(len(str(line[i])) for line in (head, *body)) for i in range(5)]
    lines = []
    for line in (head, *body):
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(line[:5], widths, strict=True)) + "  " + line[5])
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(line.rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    names = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in names if d not in DTYPES]
    if bad or not names:
        print(f"lossbench.tools.check: error: unknown dtype(s) {', '.join(bad) or '(none given)'}. "
              f"Valid choices: --dtypes with any of {', '.join(DTYPES)}, comma-separated.", file=sys.stderr)
        return 2
    rows = run_checks(names)
    print(table(rows))
    failed = [r for r in rows if r.verdict == "FAIL"]
    must = sum(r.must for r in rows)
    print(f"\n{must - len(failed)}/{must} identities hold; "
          f"{sum(not r.must and r.checked for r in rows)} informative rows; "
          f"{sum(not r.checked for r in rows)} not checkable.")
    if failed:
        print("FAILED: " + "; ".join(f"{r.identity} [{r.dtype}]" for r in failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
