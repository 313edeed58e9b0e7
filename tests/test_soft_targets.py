"""Probability targets (data.soft_labels, data.label_noise), partially labelled data (data.unlabeled_frac) and
the identities `python -m lossbench.check` adds for them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from scipy.special import softmax as sp_softmax
from scipy.stats import multivariate_normal

from lossbench import data, losses, models
from lossbench.config import validate
from lossbench.errors import ConfigError
from lossbench.losses import registry
from lossbench.tools import check
from tests.conftest import make_cfg, run_cfg

C3 = ["data.n_classes=3", "data.n_train=1200", "data.n_val=600"]
QUIET = ["logger.enabled=false", "trainer.max_steps=60", "trainer.eval_every=30"]


# --- soft labels and label noise --------------------------------------------------------------------------------
def test_bayes_soft_labels_are_the_generating_posterior():
    dc = make_cfg(*C3, "data.soft_labels=bayes", "data.scale=2", "data.imbalance_ratio=4").data
    ds = data.load(dc)
    means = data.class_means(dc).double().numpy()
    x = ds.x_train.double().numpy() / 2
    prior = [data._split_counts(1200, 3, 4.0, "train")[c] / 1200 for c in range(3)]
    logp = [multivariate_normal(means[c], 1.0).logpdf(x) + math.log(prior[c]) for c in range(3)]
    want = sp_softmax(torch.tensor(logp).T.numpy(), axis=1)
    assert ds.t_train.shape == (1200, 3) and ds.t_val is None  # validation scores the hard labels
    assert torch.allclose(ds.t_train.double(), torch.from_numpy(want), atol=1e-5)


def test_label_noise_flips_to_another_class_and_noise_aware_targets_smooth_by_its_rate():
    clean = data.load(make_cfg(*C3).data)
    noisy = data.load(make_cfg(*C3, "data.label_noise=0.3", "data.soft_labels=noise_aware").data)
    flipped = noisy.y_train != clean.y_train
    assert torch.equal(noisy.x_train, clean.x_train) and torch.equal(noisy.y_val, clean.y_val)
    assert int(flipped.sum()) == noisy.info["train_labels_flipped"]
    assert abs(flipped.float().mean() - 0.3) < 4 * math.sqrt(0.21 / 1200)
    onehot = F.one_hot(noisy.y_train, 3).float()
    assert torch.allclose(noisy.t_train, 0.7 * onehot + 0.15 * (1 - onehot))
    assert torch.allclose(noisy.t_train.sum(1), torch.ones(1200))


def test_ce_with_probability_targets_is_the_soft_cross_entropy():
    obj = losses.build(make_cfg("loss=ce").loss, "softmax", 3, torch.tensor([5, 5, 5]))
    g = torch.Generator().manual_seed(0)
    z, t = torch.randn(32, 3, generator=g), torch.softmax(torch.randn(32, 3, generator=g), dim=1)
    want = -(t * torch.log_softmax(z, dim=1)).sum(1).mean()
    assert float(obj(z, t)) == pytest.approx(float(want), rel=1e-6)
    assert float(obj.exact(z, t)) == pytest.approx(float(want), rel=1e-6)
    assert obj.wrong(z, t).tolist() == (z.argmax(1) != t.argmax(1)).tolist()


@pytest.mark.parametrize("soft", ["bayes", "noise_aware"])
def test_soft_label_runs_train_and_score_hard_labels(tmp_path, soft):
    noise = ["data.label_noise=0.2"] if soft == "noise_aware" else []
    s = run_cfg(tmp_path, *C3, "loss=ce", f"data.soft_labels={soft}", *noise, *QUIET)
    assert s["status"] == "completed" and s["final"]["val/accuracy"] > 0.5
    assert s["final"]["val/loss"] == pytest.approx(s["final"]["val/nll"], rel=1e-5)  # CE on the hard val labels


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["loss=nll", "data.soft_labels=bayes"], r"which loss=ce takes \(CrossEntropyLoss accepts class probabilities\); loss=nll does not"),
        (["loss=ce", "data=mnist", "data.soft_labels=bayes"], r"only the synthetic data has"),
        (["loss=ce", "data.soft_labels=noise_aware"], r"data.label_noise, which is 0"),
        (["loss=ce", "data.soft_labels=mixup"], r"Unknown data.soft_labels='mixup'. Valid choices: null, bayes, noise_aware"),
        (["loss=ce", "data.soft_labels=bayes", "data.unlabeled_frac=0.1"], r"no ignore_index for probability targets"),
        (["data.label_noise=1"], r"data.label_noise must be in \[0, 1\), got 1"),
        (["data.unlabeled_frac=1.0"], r"data.unlabeled_frac must be in \[0, 1\)"),
        (["loss=ce", "data.unlabeled_frac=0.96"], r"a batch has no labelled sample with probability"),
        (["loss=ce", "loss.ignore_index=-1", "data.unlabeled_frac=0.1"], r"Leave loss.ignore_index at -100"),
    ],
)
def test_bad_soft_and_partial_label_settings_are_refused(overrides, match):
    with pytest.raises(ConfigError, match=match):
        validate(make_cfg(*overrides))


# --- partially labelled data -------------------------------------------------------------------------------------
def test_unlabeled_frac_hides_that_share_per_seed_and_counts_only_labelled_samples():
    a = data.load(make_cfg(*C3, "data.unlabeled_frac=0.25").data)
    a2 = data.load(make_cfg(*C3, "data.unlabeled_frac=0.25").data)
    b = data.load(make_cfg(*C3, "data.unlabeled_frac=0.25", "seed=1").data)
    full = data.load(make_cfg(*C3).data)
    hidden = a.y_train == data.IGNORE_INDEX
    assert int(hidden.sum()) == 300 == a.info["train_unlabeled"]
    assert torch.equal(a.y_train, a2.y_train) and not torch.equal(hidden, b.y_train == data.IGNORE_INDEX)
    assert torch.equal(a.y_train[~hidden], full.y_train[~hidden]) and torch.equal(a.y_val, full.y_val)
    counts = torch.bincount(full.y_train[~hidden], minlength=3)
    assert torch.equal(a.class_counts(), counts) and int(a.n_labelled()) == 900 and a.partial()
    # class weights and the prior bias from the labelled samples only
    obj = losses.build(make_cfg("loss=ce", "loss.class_weight=inverse").loss, "softmax", 3, a.class_counts(),
                       a.n_labelled(), partial=True)
    assert obj.class_weight.tolist() == pytest.approx((900 / (3 * counts.double())).tolist())
    model = models.build(make_cfg("model=linear").model, (20,), 3)
    models.init_head_bias(model, "prior", "softmax", a.class_counts(), a.n_labelled())
    assert models.output_layer(model).bias.tolist() == pytest.approx((counts / 900).log().tolist(), rel=1e-5)


def test_multilabel_unlabeled_frac_hides_entries_and_pos_weight_uses_the_labelled_ones():
    ds = data.load(make_cfg("data.task=multilabel", "data.n_classes=4", "data.n_train=1000",
                            "data.unlabeled_frac=0.3").data)
    hidden = ds.y_train == data.IGNORE_INDEX
    assert int(hidden.sum()) == 1200 and ds.n_labelled().tolist() == (1000 - hidden.sum(0)).tolist()
    pos = (ds.y_train == 1).sum(0)
    obj = losses.build(make_cfg("loss=bce_logits", "loss.pos_weight=auto").loss, "sigmoid", 4, ds.class_counts(),
                       ds.n_labelled(), multilabel=True, partial=True)
    assert obj.pos_weight.tolist() == pytest.approx(((ds.n_labelled() - pos) / pos).tolist(), rel=1e-6)


SINGLE = [("ce", "softmax"), ("nll", "softmax"), ("bce", "softmax"), ("bce_logits", "sigmoid"), ("bce", "sigmoid"),
          ("bce_manual", "sigmoid"), ("asl", "sigmoid")]


@pytest.mark.parametrize(("loss", "head"), SINGLE)
@pytest.mark.parametrize("n_classes", [2, 4])
def test_ignored_samples_get_zero_gradient_and_mean_divides_by_the_labelled(loss, head, n_classes):
    cfg = make_cfg(f"loss={loss}", f"head={head}", "loss.pos_weight=2" if head == "sigmoid" else "loss.pos_weight=null",
                   "loss.class_weight=[1,2]" if n_classes == 2 else "loss.class_weight=[1,2,3,4]")
    obj = losses.build(cfg.loss, head, n_classes, torch.full((n_classes,), 5), partial=True)
    g = torch.Generator().manual_seed(n_classes)
    k = registry.n_outputs(head, n_classes)
    z = torch.randn(40, k, generator=g).requires_grad_(True)
    y = torch.randint(0, n_classes, (40,), generator=g)
    y[::3] = data.IGNORE_INDEX
    keep = y != data.IGNORE_INDEX
    loss_value = obj(z, y)
    loss_value.backward()
    assert (z.grad[~keep] == 0).all() and (z.grad[keep] != 0).any()
    # 'mean' = the same loss on the labelled samples alone: PyTorch's rule for ignore_index (an independent
    # objective without partial labels computes it)
    plain = losses.build(cfg.loss, head, n_classes, torch.full((n_classes,), 5))
    assert float(loss_value) == pytest.approx(float(plain(z[keep], y[keep])), rel=1e-6)
    with torch.no_grad():
        assert float(obj.exact(z, y)) == pytest.approx(float(plain.exact(z[keep], y[keep])), rel=1e-5)
    assert not obj.wrong(z, y)[~keep].any()


def test_sigmoid_mean_over_labelled_terms_written_out():
    # bce_logits on a multi-label target with ignored entries: sum of the labelled terms / their number
    obj = losses.build(make_cfg("loss=bce_logits").loss, "sigmoid", 3, torch.tensor([5, 5, 5]),
                       torch.tensor([9, 9, 9]), multilabel=True, partial=True)
    z = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]], requires_grad=True)
    y = torch.tensor([[1.0, -100.0, 0.0], [-100.0, 1.0, 1.0]])
    keep = y != -100
    terms = F.binary_cross_entropy_with_logits(z.detach(), y.clamp(min=0), reduction="none")
    obj(z, y).backward()
    assert float(obj(z, y)) == pytest.approx(float(terms[keep].sum() / 4))
    assert z.grad[~keep].tolist() == [0.0, 0.0]


def test_pytorch_ce_all_ignored_batch_is_nan_and_so_is_ours():
    obj = losses.build(make_cfg("loss=bce_logits").loss, "sigmoid", 2, torch.tensor([5, 5]), partial=True)
    y = torch.full((4,), data.IGNORE_INDEX)
    assert math.isnan(float(F.cross_entropy(torch.zeros(4, 2), y))) and math.isnan(float(obj(torch.zeros(4, 1), y)))


@pytest.mark.parametrize("loss", ["ce", "bce_logits", "bce"])
def test_partially_labelled_runs_train(tmp_path, loss):
    s = run_cfg(tmp_path, "data.n_train=1500", "data.unlabeled_frac=0.6", f"loss={loss}", *QUIET)
    assert s["status"] == "completed" and s["final"]["val/auc"] > 0.8
    assert s["data"]["train_unlabeled"] == 900 and sum(s["data"]["train_class_counts"]) == 600


# --- python -m lossbench.check: the rows for soft targets and KL ----------------------------------------------
@pytest.fixture(scope="module")
def rows() -> dict[tuple[str, str], check.Row]:
    return {(r.identity, r.dtype): r for r in check.run_checks(["float64", "float32", "bfloat16"])}


def test_check_soft_target_identities(rows):
    for dt in ("float64", "float32", "bfloat16"):
        for red in ("mean", "sum", "none"):
            assert rows[(f"CE(one-hot probabilities) = CE(class indices) ({red})", dt)].verdict == "ok"
        assert rows[("KLDivLoss(batchmean)(log_softmax(s), p) = CE(s, p) - H(p)", dt)].verdict == "ok"
        assert rows[("KLDivLoss(mean) = KLDivLoss(batchmean) / C", dt)].verdict == "ok"
        # with class weights, probability targets divide by N and class indices by sum w_y
        assert rows[("CE(one-hot probabilities, weight) vs CE(class indices, weight) (mean)", dt)].verdict == "differs"
    assert rows[("CE(log p, soft target t) = sklearn log_loss(p; each class weighted by t_c)", "float64")].diff < 1e-14
    assert rows[("KLDivLoss(mean) vs the KL (batchmean): kd_mean", "float64")].verdict == "differs"
    assert "not 0" in rows[("KLDivLoss(probabilities as input) vs the KL: kd_prob", "float64")].detail
    hinton = rows[("T^2 * grad KL(T) -> (z_s - v)/C as T grows (Hinton eq. 3), T = 100", "float64")]
    assert hinton.verdict == "agrees" and "T=1: 0.6" in hinton.detail
