"""The imbalance losses (focal, LDAM, DRW, logit adjustment, balanced softmax, poly-1) and bce_clipped, each
checked against its reference (torchvision, the papers' formulas written out here in float64) and where its
naive form breaks: saturated logits and bfloat16 autocast on the CPU."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torchvision.ops import sigmoid_focal_loss

from lossbench import losses
from tests.conftest import make_cfg

COUNTS = torch.tensor([500, 120, 40, 9, 3])  # a long tail over C = 5 classes


def objective(loss: str, head: str | None = None, counts: torch.Tensor = COUNTS, *overrides: str):
    cfg = make_cfg(f"loss={loss}", *overrides)
    head = head or ("sigmoid" if loss in ("focal", "bce_clipped") else "softmax")
    return losses.build(cfg.loss, head, len(counts), counts)


def batch(n: int = 64, c: int = 5, scale: float = 3.0, dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).to(dtype)
    y = torch.randint(0, c, (n,), generator=g)
    return z, y


def effective(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """Cui et al. (2019): (1 - beta) / (1 - beta^n_c), normalised to sum to C."""
    w = [(1 - beta) / (1 - beta ** int(n)) for n in counts]
    return torch.tensor([len(w) * v / sum(w) for v in w], dtype=torch.float64)


# --- focal, sigmoid head ------------------------------------------------------------------------------------------
def focal_sigmoid_reference(z, t, alpha, gamma):
    """-alpha_t (1 - p_t)^gamma log p_t, written out in float64 from the paper (Lin et al. 2017, eq. 5)."""
    z, t = z.double(), t.double()
    p = 1 / (1 + torch.exp(-z))
    p_t = p * t + (1 - p) * (1 - t)
    log_pt = torch.where(t == 1, F.logsigmoid(z), F.logsigmoid(-z))  # log p_t, exact even where p_t rounds to 1
    a_t = 1.0 if alpha < 0 else alpha * t + (1 - alpha) * (1 - t)
    return -a_t * (1 - p_t) ** gamma * log_pt


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("alpha", [0.25, -1.0])
def test_sigmoid_focal_matches_the_formula_and_torchvision(gamma, alpha):
    z, y = batch(scale=4.0)
    obj = objective("focal", "sigmoid", COUNTS, f"loss.gamma={gamma}", f"loss.alpha={alpha}")
    t = F.one_hot(y, 5).double()
    want = focal_sigmoid_reference(z, t, alpha, gamma).mean()
    assert obj(z, y).item() == pytest.approx(want.item(), rel=1e-12)
    tv = sigmoid_focal_loss(z, t, alpha=alpha, gamma=gamma, reduction="mean")  # 'mean' over all N*K elements
    assert obj(z, y).item() == pytest.approx(tv.item(), rel=1e-12)
    assert objective("focal", "sigmoid", COUNTS, f"loss.gamma={gamma}", f"loss.alpha={alpha}",
                     "loss.impl=naive")(z, y).item() == pytest.approx(tv.item(), rel=1e-15)


def test_focal_with_gamma_0_and_alpha_off_is_bce_with_logits():
    z, y = batch(dtype=torch.float32)
    obj = objective("focal", "sigmoid", COUNTS, "loss.gamma=0", "loss.alpha=-1")
    want = torch.nn.BCEWithLogitsLoss()(z, F.one_hot(y, 5).float())
    torch.testing.assert_close(obj(z, y), want, rtol=1e-6, atol=0)
    zb, yb = batch(c=1, dtype=torch.float32)  # binary: one logit
    yb = (zb[:, 0] + torch.randn(64) > 0).long()
    obj = objective("focal", "sigmoid", torch.tensor([30, 34]), "loss.gamma=0", "loss.alpha=-1")
    torch.testing.assert_close(obj(zb, yb), F.binary_cross_entropy_with_logits(zb[:, 0], yb.float()), rtol=1e-6, atol=0)


def test_alpha_defaults_to_torchvision_unless_class_weights_replace_it():
    z, y = batch(scale=2.0)
    t = F.one_hot(y, 5).double()
    plain = objective("focal", "sigmoid")
    assert plain(z, y).item() == pytest.approx(focal_sigmoid_reference(z, t, 0.25, 2.0).mean().item(), rel=1e-12)
    cb = objective("focal", "sigmoid", COUNTS, "loss.class_weight=effective", "loss.beta=0.99")
    w = effective(COUNTS, 0.99)[y].unsqueeze(1)  # Cui et al.: the class-balanced weight takes alpha's place
    want = (w * focal_sigmoid_reference(z, t, -1, 2.0)).mean()
    assert cb(z, y).item() == pytest.approx(want.item(), rel=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
@pytest.mark.parametrize("impl", ["stable", "naive"])
def test_focal_num_pos_is_torchvision_sum_over_the_positives(gamma, impl):
    """reduction=num_pos: torchvision's sigmoid_focal_loss(reduction="sum") / max(1, positives), as detectron2's
    RetinaNet and Cui et al.'s code normalise it; on a one-vs-rest head every sample is one positive (K x 'mean')."""
    z, y = batch(scale=4.0)
    t = F.one_hot(y, 5).double()
    obj = objective("focal", "sigmoid", COUNTS, f"loss.gamma={gamma}", f"loss.impl={impl}", "loss.reduction=num_pos")
    want = sigmoid_focal_loss(z, t, alpha=0.25, gamma=gamma, reduction="sum") / t.sum()
    assert obj(z, y).item() == pytest.approx(want.item(), rel=1e-12)
    mean = objective("focal", "sigmoid", COUNTS, f"loss.gamma={gamma}", f"loss.impl={impl}")
    assert obj(z, y).item() == pytest.approx(5 * mean(z, y).item(), rel=1e-12)
    # binary head on imbalanced data: 3 positives in 64, the sum / 3 (about 21x 'mean')
    zb = torch.randn(64, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 3
    yb = torch.zeros(64, dtype=torch.long)
    yb[[5, 17, 40]] = 1
    two = torch.tensor([61, 3])
    obj = objective("focal", "sigmoid", two, f"loss.gamma={gamma}", f"loss.impl={impl}", "loss.reduction=num_pos")
    want = sigmoid_focal_loss(zb[:, 0], yb.double(), alpha=0.25, gamma=gamma, reduction="sum") / 3
    assert obj(zb, yb).item() == pytest.approx(want.item(), rel=1e-12)


def test_focal_num_pos_batch_without_positives_is_the_sum_and_gradients_stay_finite():
    """No positive in the batch: max(1, 0) = 1, the plain sum (detectron2's guard), not a division by zero."""
    z = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]], dtype=torch.float64, requires_grad=True)
    y = torch.zeros(4, dtype=torch.long)
    obj = objective("focal", "sigmoid", torch.tensor([40, 4]), "loss.reduction=num_pos")
    loss = obj(z, y)
    want = sigmoid_focal_loss(z[:, 0].detach(), torch.zeros(4, dtype=torch.float64), reduction="sum")
    assert loss.item() == pytest.approx(want.item(), rel=1e-12) and want.item() > 0
    loss.backward()
    assert torch.isfinite(z.grad).all() and (z.grad != 0).all()


def test_focal_num_pos_with_class_weights_and_ignored_labels():
    """Cui et al.: the class-weighted sum over the positive labels; an ignored label (-100) counts neither in the
    sum nor among the positives."""
    z, y = batch(n=32, scale=2.0)
    y[[0, 3, 9]] = -100
    cfg = make_cfg("loss=focal", "loss.class_weight=effective", "loss.beta=0.99", "loss.reduction=num_pos")
    obj = losses.build(cfg.loss, "sigmoid", 5, COUNTS, partial=True)
    keep = y != -100
    t = F.one_hot(y[keep], 5).double()
    w = effective(COUNTS, 0.99)[y[keep]].unsqueeze(1)
    want = (w * focal_sigmoid_reference(z[keep], t, -1, 2.0)).sum() / keep.sum()
    assert obj(z, y).item() == pytest.approx(want.item(), rel=1e-6)


def saturated(dtype=torch.float32):
    """Right and wrong samples with logits far beyond sigmoid's saturation, and moderate ones."""
    z = torch.tensor([[40.0], [-40.0], [40.0], [-40.0], [2.0], [-1.0]], dtype=dtype, requires_grad=True)
    y = torch.tensor([1, 0, 0, 1, 1, 0])
    return z, y


def test_focal_gamma_below_1_nan_gradient_in_the_naive_form_finite_in_the_stable_one():
    two = torch.tensor([50, 50])
    for gamma in (0.25, 0.5):
        z, y = saturated()
        objective("focal", "sigmoid", two, f"loss.gamma={gamma}", "loss.impl=naive")(z, y).backward()
        assert torch.isnan(z.grad[:2]).all()  # the right, saturated samples: 0^(gamma-1) * 0
        z, y = saturated()
        loss = objective("focal", "sigmoid", two, f"loss.gamma={gamma}")(z, y)
        loss.backward()
        assert torch.isfinite(z.grad).all() and torch.isfinite(loss)
        # the wrong, saturated samples keep a full gradient of about alpha_t / N (not dead)
        assert z.grad[2, 0] == pytest.approx(0.75 / 6, rel=1e-6) and z.grad[3, 0] == pytest.approx(-0.25 / 6, rel=1e-6)
    for gamma in (0.0, 1.0, 2.0):  # outside 0 < gamma < 1 both forms are finite and agree
        grads = []
        for impl in ("naive", "stable"):
            z, y = saturated()
            objective("focal", "sigmoid", two, f"loss.gamma={gamma}", f"loss.impl={impl}")(z, y).backward()
            grads.append(z.grad)
        assert torch.isfinite(grads[0]).all()
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-12)


def test_focal_under_bf16_autocast_on_the_cpu():
    # sigmoid saturates in bfloat16 from |x| ~ 6.25: the naive form's gradient is NaN at gamma = 0.5 there
    two = torch.tensor([50, 50])
    z, y = saturated()
    lin = torch.nn.Linear(1, 1)
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.zero_()
    for impl, finite in (("naive", False), ("stable", True)):
        lin.zero_grad()
        obj = objective("focal", "sigmoid", two, "loss.gamma=0.5", f"loss.impl={impl}")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            zz = lin(z.detach() / 4)  # logits of +-10: saturated in bfloat16 only
            loss = obj(zz, y)
        loss.backward()
        assert bool(torch.isfinite(lin.weight.grad).all()) is finite, impl


# --- focal, softmax head ------------------------------------------------------------------------------------------
def focal_softmax_reference(z, y, gamma, w=None):
    """sum_i w_{y_i} (1 - p_{y_i})^gamma (-log p_{y_i}) / sum_i w_{y_i}, float64, p_y from the UNWEIGHTED softmax."""
    log_p = F.log_softmax(z.double(), dim=1).gather(1, y[:, None]).squeeze(1)
    wy = torch.ones_like(log_p) if w is None else w.double()[y]
    return (wy * (1 - log_p.exp()) ** gamma * -log_p).sum() / wy.sum()


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
def test_softmax_focal_matches_the_formula(gamma):
    z, y = batch()
    got = objective("focal", "softmax", COUNTS, f"loss.gamma={gamma}")(z, y)
    assert got.item() == pytest.approx(focal_softmax_reference(z, y, gamma).item(), rel=1e-12)
    cb = objective("focal", "softmax", COUNTS, f"loss.gamma={gamma}", "loss.class_weight=effective", "loss.beta=0.999")
    want = focal_softmax_reference(z, y, gamma, effective(COUNTS, 0.999))
    assert cb(z.float(), y).item() == pytest.approx(want.item(), rel=1e-5)


def test_softmax_focal_focusing_term_uses_the_unweighted_probability():
    z, y = batch(dtype=torch.float32)
    w = effective(COUNTS, 0.999)
    ours = objective("focal", "softmax", COUNTS, "loss.class_weight=effective")(z, y)
    assert ours.item() == pytest.approx(focal_softmax_reference(z, y, 2.0, w).item(), rel=1e-5)
    # the LDAM-DRW code's FocalLoss takes p = exp(-weighted CE): the weight leaks into the focusing term
    ce_w = F.cross_entropy(z.double(), y, weight=w, reduction="none")
    mixed = ((1 - torch.exp(-ce_w)) ** 2 * ce_w).sum() / w[y].sum()  # same divisor as ours
    assert abs(ours.item() / mixed.item() - 1) > 0.01
    # with gamma = 0 there is no focusing term: both are weighted CE, CE's 'mean' rule
    zero = objective("focal", "softmax", COUNTS, "loss.class_weight=effective", "loss.gamma=0")
    assert zero(z, y).item() == pytest.approx(F.cross_entropy(z.double(), y, weight=w).item(), rel=1e-5)


def test_softmax_focal_gradient_at_saturation():
    z = torch.tensor([[60.0, -60.0, 0.0], [60.0, -60.0, 0.0]], requires_grad=True)  # p = 1 / 0 in float32
    y = torch.tensor([0, 1])  # one right, one wrong
    c = torch.tensor([10, 10, 10])
    objective("focal", "softmax", c, "loss.gamma=0.5", "loss.impl=naive")(z, y).backward()
    assert torch.isnan(z.grad[0]).all()
    z.grad = None
    loss = objective("focal", "softmax", c, "loss.gamma=0.5")(z, y)
    loss.backward()
    assert torch.isfinite(z.grad).all() and loss.item() == pytest.approx(120 / 2, rel=1e-6)
    assert z.grad[1].abs().max() > 0.4  # the wrong sample is not dead


# --- LDAM ------------------------------------------------------------------------------------------------------
def ldam_reference(z, y, counts, max_m, s, w=None):
    """kaidic/LDAM-DRW losses.LDAMLoss, rewritten in float64: m = 1/sqrt(sqrt(n)), scaled to max_m."""
    m = 1.0 / torch.sqrt(torch.sqrt(counts.double()))
    m = m * (max_m / m.max())
    z_m = torch.where(F.one_hot(y, len(counts)).bool(), z.double() - m[y][:, None], z.double())
    return F.cross_entropy(s * z_m, y, weight=w)


def test_ldam_matches_the_reference_and_reduces_to_ce():
    z, y = batch(scale=0.5)
    obj = objective("ldam")
    assert obj.margins.tolist() == pytest.approx([0.5 * (3 / n) ** 0.25 for n in COUNTS.tolist()], rel=1e-6)
    assert obj(z, y).item() == pytest.approx(ldam_reference(z, y, COUNTS, 0.5, 30.0).item(), rel=1e-6)
    zero = objective("ldam", None, COUNTS, "loss.max_m=0", "loss.s=7")
    assert zero(z, y).item() == pytest.approx(F.cross_entropy(7 * z, y).item(), rel=1e-12)
    w = objective("ldam", None, COUNTS, "loss.class_weight=effective")  # float32 weights, as in training
    want = ldam_reference(z, y, COUNTS, 0.5, 30.0, effective(COUNTS, 0.9999))
    assert w(z.float(), y).item() == pytest.approx(want.item(), rel=1e-5)
    assert torch.equal(obj.predict(z), z.argmax(1))  # no margin at test time
    torch.testing.assert_close(obj.eval_logits(z), 30 * z)  # the metrics' logits: probabilities softmax(s z)
    torch.testing.assert_close(obj.probs(z), torch.softmax(30 * z, dim=1))


def test_ldam_uses_the_cosine_head_by_default():
    from lossbench import models

    cfg = make_cfg("loss=ldam")
    assert cfg.model.cosine_head is True
    model = models.build(cfg.model, (20,), 5)
    head = models.output_layer(model)
    assert isinstance(head, models.CosineLinear) and head.bias is None
    z = model(torch.randn(32, 20) * 100)
    assert z.abs().max() <= 1 + 1e-6
    h = model[:-1](torch.ones(1, 20))
    want = F.cosine_similarity(h, head.weight, dim=1)
    torch.testing.assert_close(model(torch.ones(1, 20))[0], want, rtol=1e-5, atol=1e-6)
    assert make_cfg("loss=ldam", "model.cosine_head=false").model.cosine_head is False
    assert make_cfg("loss=ce").model.cosine_head is False


# --- logit adjustment, balanced softmax, post-hoc ---------------------------------------------------------------
def test_logit_adjusted_formula_and_tau_0_is_ce():
    z, y = batch()
    pi = COUNTS.double() / COUNTS.sum()
    obj = objective("logit_adjusted", None, COUNTS, "loss.tau=1.5")
    want = F.cross_entropy(z + 1.5 * pi.log(), y)
    assert obj(z, y).item() == pytest.approx(want.item(), rel=1e-6)
    assert objective("logit_adjusted", None, COUNTS, "loss.tau=0")(z, y).item() == pytest.approx(
        F.cross_entropy(z, y).item(), rel=1e-12)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-6), (torch.float32, 1e-5)])
def test_balanced_softmax_is_logit_adjusted_at_tau_1(dtype, tol):
    z, y = batch(dtype=dtype, scale=5.0)
    bs = objective("balanced_softmax")
    la = objective("logit_adjusted", None, COUNTS, "loss.tau=1")
    # Ren et al.'s own form: CE(z + log n_c)
    assert bs(z, y).item() == pytest.approx(F.cross_entropy(z.double() + COUNTS.double().log(), y).item(), rel=tol)
    # the same loss: a constant shift log N is all that separates them (float32: the buffers are float32)
    assert bs(z, y).item() == pytest.approx(la(z, y).item(), rel=tol)
    zz = z.detach().clone().requires_grad_(True)
    bs(zz, y).backward()
    g_bs = zz.grad.clone()
    zz.grad = None
    la(zz, y).backward()
    torch.testing.assert_close(g_bs, zz.grad, rtol=tol, atol=tol)


def test_posthoc_logits_subtract_tau_log_prior():
    z, _ = batch(dtype=torch.float32)
    assert objective("ce").posthoc_logits(z) is None
    obj = objective("ce", None, COUNTS, "loss.posthoc_tau=0.5")
    pi = COUNTS.double() / COUNTS.sum()
    torch.testing.assert_close(obj.posthoc_logits(z), z - 0.5 * pi.log().float())


# --- poly-1 -------------------------------------------------------------------------------------------------------
def test_poly1_formula_and_epsilon_0_is_ce():
    z, y = batch()
    p_y = torch.softmax(z, 1).gather(1, y[:, None]).squeeze(1)
    want = (F.cross_entropy(z, y, reduction="none") + 2.0 * (1 - p_y)).mean()
    assert objective("poly1", None, COUNTS, "loss.epsilon=2")(z, y).item() == pytest.approx(want.item(), rel=1e-12)
    z = z.float()  # class weights are float32, as in training
    for extra in ([], ["loss.class_weight=inverse"], ["loss.label_smoothing=0.1"],
                  ["loss.class_weight=effective", "loss.label_smoothing=0.2"]):
        obj = objective("poly1", None, COUNTS, "loss.epsilon=0", *extra)
        ce = objective("ce", None, COUNTS, *extra)
        assert obj(z, y).item() == pytest.approx(ce(z, y).item(), rel=1e-6), extra


def test_poly1_sigmoid_head():
    z, y = batch(c=1, scale=3.0)
    y = (torch.rand(64, generator=torch.Generator().manual_seed(3)) < 0.3).long()
    two = torch.tensor([40, 24])
    t = y.double()[:, None]
    p = torch.sigmoid(z)
    want = (F.binary_cross_entropy_with_logits(z, t, reduction="none") + 1.0 * (1 - (p * t + (1 - p) * (1 - t)))).mean()
    assert objective("poly1", "sigmoid", two)(z, y).item() == pytest.approx(want.item(), rel=1e-12)
    assert objective("poly1", "sigmoid", two, "loss.epsilon=0")(z, y).item() == pytest.approx(
        F.binary_cross_entropy_with_logits(z, t).item(), rel=1e-12)


# --- class-balanced weights and DRW ------------------------------------------------------------------------------
def test_effective_weights_follow_cui_et_al():
    _, cw = losses.weights(make_cfg("loss=ce", "loss.class_weight=effective", "loss.beta=0.9999").loss, "softmax",
                           COUNTS)
    torch.testing.assert_close(cw.double(), effective(COUNTS, 0.9999), rtol=1e-6, atol=0)


def test_drw_switches_weights_at_its_step_without_touching_tensors():
    z, y = batch(dtype=torch.float32)
    drw = objective("ce", None, COUNTS, "loss.drw_step=100", "loss.beta=0.9999")
    plain = F.cross_entropy(z.double(), y)
    weighted = F.cross_entropy(z.double(), y, weight=effective(COUNTS, 0.9999))
    for step, want in ((0, plain), (99, plain), (100, weighted), (5000, weighted)):
        drw.begin_step(step)
        assert drw(z, y).item() == pytest.approx(want.item(), rel=1e-5), step
        assert drw.exact(z, y).item() == pytest.approx(want.item(), rel=1e-5)
    ldam = objective("ldam", None, COUNTS, "loss.drw_step=10", "loss.class_weight=inverse")
    ldam.begin_step(10)
    inv = COUNTS.sum() / (5 * COUNTS.double())
    assert ldam(z, y).item() == pytest.approx(ldam_reference(z, y, COUNTS, 0.5, 30.0, inv).item(), rel=1e-5)
    ldam.begin_step(3)
    assert ldam(z, y).item() == pytest.approx(ldam_reference(z, y, COUNTS, 0.5, 30.0).item(), rel=1e-5)
    focal = objective("focal", "softmax", COUNTS, "loss.drw_step=1")
    focal.begin_step(1)
    assert focal(z, y).item() == pytest.approx(focal_softmax_reference(z, y, 2.0, effective(COUNTS, 0.999)).item(),
                                               rel=1e-5)


# --- bce_clipped ------------------------------------------------------------------------------------------------
def test_bce_clipped_value_gradient_and_monitors():
    z = torch.tensor([[30.0], [-30.0], [-3.0], [1.0]], requires_grad=True)
    y = torch.tensor([0, 1, 0, 1])  # two wrong and saturated, two moderate
    obj = objective("bce_clipped", "sigmoid", torch.tensor([2, 2]))
    loss = obj(z, y)
    hi = float(torch.tensor(1 - 1e-7, dtype=torch.float32))  # 1 - 1e-7 rounded to float32: 1 - 2^-23
    p = torch.sigmoid(z.detach().double()).clamp(1e-7, hi)
    t = y.double()[:, None]
    want = -(t * p.log() + (1 - t) * (1 - p).log()).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    loss.backward()
    assert z.grad[0, 0] == 0 and z.grad[1, 0] == 0  # dead: the clip has no gradient
    assert z.grad[2, 0] != 0 and z.grad[3, 0] != 0
    assert obj.has_clamp and obj.clamped(obj.probs(z.detach()), y).flatten().tolist() == [True, True, False, False]
    exact = F.binary_cross_entropy_with_logits(z.detach(), t.float())
    assert obj.exact(z.detach(), y).item() == pytest.approx(exact.item(), rel=1e-6)
    # what the clip hides: -log(eps) reported for a loss of |z| = 30
    one = objective("bce_clipped", "sigmoid", torch.tensor([2, 2]))(torch.tensor([[-30.0]]), torch.tensor([1]))
    assert one.item() == pytest.approx(-math.log(1e-7), rel=1e-5)
    upper = objective("bce_clipped", "sigmoid", torch.tensor([2, 2]))(torch.tensor([[30.0]]), torch.tensor([0]))
    assert upper.item() == pytest.approx(-math.log(2**-23), rel=1e-5)  # float32: 1 - 1e-7 rounds to 1 - 2^-23
    tutorial = objective("bce_clipped", "sigmoid", torch.tensor([2, 2]), "loss.eps=1e-5")
    assert tutorial(torch.tensor([[-30.0]]), torch.tensor([1])).item() == pytest.approx(-math.log(1e-5), rel=1e-5)


def test_bce_clipped_upper_clip_vanishes_in_bf16():
    obj = objective("bce_clipped", "sigmoid", torch.tensor([2, 2]))
    z = torch.tensor([[30.0]], dtype=torch.bfloat16)
    assert obj(z, torch.tensor([0])).item() == math.inf  # 1 - 1e-7 is 1.0 in bfloat16: log(1 - 1) = -inf
    assert obj(z.float(), torch.tensor([0])).item() == pytest.approx(15.94, abs=0.01)


def test_bce_clipped_on_softmax_is_the_tutorials_one_hot_example():
    from lossbench.tools.check import TUTORIAL_CLIPPED

    obj = objective("bce_clipped", "softmax", torch.tensor([1, 1, 1]), "loss.eps=1e-5", "loss.reduction=sum")
    for probs, quoted in TUTORIAL_CLIPPED[1:]:  # softmax cannot give exact 0s and 1s
        z = torch.tensor([probs], dtype=torch.float64).log()  # softmax(log p) = p
        assert obj(z, torch.tensor([1])).item() == pytest.approx(quoted, rel=1e-12)


# --- every new loss: monitors' hooks behave -----------------------------------------------------------------------
@pytest.mark.parametrize(("loss", "head"), [("focal", "sigmoid"), ("focal", "softmax"), ("ldam", "softmax"),
                                            ("logit_adjusted", "softmax"), ("balanced_softmax", "softmax"),
                                            ("poly1", "softmax"), ("poly1", "sigmoid"), ("bce_clipped", "sigmoid"),
                                            ("bce_clipped", "softmax")])
def test_exact_equals_the_loss_in_float32_and_hooks_have_the_right_shapes(loss, head):
    z, y = batch(dtype=torch.float32, scale=2.0)
    obj = objective(loss, head)
    assert obj(z, y).item() == pytest.approx(obj.exact(z, y).item(), rel=1e-5)
    assert obj.wrong(z, y).shape == (64,) and obj.probs(z).shape == z.shape
    if obj.has_clamp:
        assert obj.clamped(obj.probs(z), y).shape == z.shape
    assert OmegaConf.select(make_cfg(f"loss={loss}"), "loss.name") == loss


def test_exact_bce_on_softmax_is_finite_where_a_probability_rounds_to_1():
    z = torch.tensor([[40.0, 0.0, 0.0], [0.0, 40.0, 0.0]])  # log_softmax = 0 exactly for the large logit
    y = torch.tensor([0, 2])
    for loss in ("bce", "bce_clipped"):
        obj = objective(loss, "softmax", torch.tensor([5, 5, 5]))
        exact = obj.exact(z, y)
        # sample 2: -log p_2 = 40 and -log(1 - p_1) = -log(2 e^-40 / (1 + 2 e^-40)) = 40 - log 2; the rest ~ 0
        assert torch.isfinite(exact) and exact.item() == pytest.approx((40 + 40 - math.log(2)) / 6, rel=1e-5)
