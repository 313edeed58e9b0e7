"""Multi-label tasks: the data (synthetic as scikit-learn's generator, MNIST digit grids), the metrics against
scikit-learn, the losses against formulas written here, runs end to end, and the pairs that are refused."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import make_multilabel_classification
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    hamming_loss,
    label_ranking_average_precision_score,
    log_loss,
    recall_score,
    roc_auc_score,
)

from lossbench import data, losses, metrics
from lossbench.config import validate
from lossbench.errors import ConfigError
from lossbench.losses import registry
from tests.conftest import cli, make_cfg, needs_mnist, run_cfg

MULTILABEL_PAIRS = registry.multilabel_pairs()

ML = ["data.task=multilabel", "data.n_classes=6", "data.n_train=1500", "data.n_val=800"]
QUIET = ["logger.enabled=false", "trainer.max_steps=60", "trainer.eval_every=30"]


# --- data -------------------------------------------------------------------------------------------------------
def test_synthetic_sampler_matches_scikit_learn_in_distribution():
    c, d, lam, length, n = 6, 12, 2, 30, 20000
    x_ref, y_ref, p_c, p_w_c = make_multilabel_classification(
        n_samples=n, n_features=d, n_classes=c, n_labels=lam, length=length, return_distributions=True,
        random_state=3)
    x, y = data._documents(np.random.default_rng(0), n, p_c, p_w_c, lam, length, True)
    assert x.shape == (n, d) and y.shape == (n, c) and set(np.unique(y)) <= {0.0, 1.0}
    se = np.sqrt(0.25 / n)  # binomial standard error bound
    assert np.abs(y.mean(0) - y_ref.mean(0)).max() < 5 * se * np.sqrt(2)  # each label's frequency
    assert abs(y.sum(1).mean() - y_ref.sum(1).mean()) < 0.03  # labels per sample
    assert abs((y.sum(1) == 0).mean() - (y_ref.sum(1) == 0).mean()) < 5 * se * np.sqrt(2)  # unlabelled share
    assert np.abs(x.mean(0) - x_ref.mean(0)).max() < 0.1  # mean word counts (about 1-5 each)
    assert abs(x.sum(1).mean() - length) < 0.3  # document length ~ Poisson(length)


def test_synthetic_multilabel_seeds_vary_samples_not_the_task():
    a, b, a2 = (data.load(make_cfg(*ML, f"seed={s}").data) for s in (0, 1, 0))
    assert a.multilabel and a.y_train.shape == (1500, 6) and a.y_train.dtype == torch.float32
    assert a.x_train.shape == (1500, 20) and a.n_classes == 6
    assert torch.equal(a.x_train, a2.x_train) and torch.equal(a.y_train, a2.y_train)  # deterministic per seed
    assert not torch.equal(a.y_train, b.y_train)
    # same P(c) (task_seed): label frequencies agree within sampling error
    assert (a.y_train.mean(0) - b.y_train.mean(0)).abs().max() < 0.06
    assert a.x_train.mean(0).abs().max() < 1e-5 and (a.x_train.std(0) - 1).abs().max() < 1e-3  # standardised
    assert a.info["val_labels_without_positives"] == 0
    assert a.info["train_label_frequency"] == pytest.approx(a.y_train.mean(0).tolist(), abs=1e-4)
    assert a.class_counts().tolist() == a.y_train.sum(0).long().tolist()


def test_compose_puts_each_digit_in_its_own_cell_and_labels_the_set():
    # fake "MNIST": digit k's image is the constant k + 1, so every cell says which digit it holds
    y = torch.arange(10).repeat(3)
    x = (y + 1).to(torch.uint8)[:, None, None].expand(30, 28, 28).contiguous()
    imgs, labels = data._compose(x, y, 400, 2, 3, 2, np.random.default_rng(0))
    assert imgs.shape == (400, 56, 56) and labels.shape == (400, 10)
    cells = imgs.reshape(400, 2, 28, 2, 28).permute(0, 1, 3, 2, 4).reshape(400, 4, 28 * 28)
    assert (cells == cells[:, :, :1]).all()  # every cell is one whole digit or blank
    shown = cells[:, :, 0].long()  # 0 blank, k + 1 digit k
    n_shown = (shown > 0).sum(1)
    assert set(n_shown.tolist()) == {2, 3}
    for i in range(400):
        assert labels[i].nonzero().squeeze(1).tolist() == sorted({v - 1 for v in shown[i].tolist() if v})


@needs_mnist
def test_mnist_multilabel_is_deterministic_per_seed_and_reports_label_frequencies(tmp_path):
    over = ["data=mnist", "data.task=multilabel", "data.n_train=300", "data.n_val=200"]
    a, b, a2 = (data.load(make_cfg(*over, f"seed={s}").data) for s in (0, 1, 0))
    assert a.x_train.shape == (300, 1, 56, 56) and a.y_train.shape == (300, 10)
    assert torch.equal(a.x_train, a2.x_train) and not torch.equal(a.x_train, b.x_train)
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.y_val, b.y_val)  # validation: the same for every seed
    counts = a.y_train.sum(1)
    assert counts.min() >= 1 and counts.max() <= 3
    s = run_cfg(tmp_path, *over, "loss=bce_logits", "model=cnn", "model.channels=[4,8]", "model.hidden=16", *QUIET)
    assert s["status"] == "completed" and s["data"]["task"] == "multilabel"
    assert len(s["data"]["train_label_frequency"]) == 10 and 0.15 < s["data"]["train_label_frequency"][0] < 0.35
    assert "val/f1_macro" in s["final"]


# --- metrics ----------------------------------------------------------------------------------------------------
def coarse_multilabel(n: int = 1500, c: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, c, generator=g) < torch.linspace(0.1, 0.6, c)).float()
    y[:, -1] = 0  # a label with no positive: skipped in the macro averages
    z = ((torch.randn(n, c, generator=g) + 1.5 * y - 0.5) * 2).round() / 2  # coarse: tied scores
    return z, y


@pytest.mark.parametrize("head", ["sigmoid", "softmax"])
def test_multilabel_metrics_equal_scikit_learn(head):
    z, y = coarse_multilabel()
    m = metrics.evaluate(z, y, head, 6)
    p = (torch.sigmoid(z) if head == "sigmoid" else torch.softmax(z, dim=1)).double().numpy()
    yy = y.numpy().astype(int)
    pred = (p > 0.5).astype(int)
    present = [0, 1, 2, 3, 4]
    assert m["auc"] == pytest.approx(roc_auc_score(yy[:, present], p[:, present], average="macro"), abs=1e-12)
    assert m["ap"] == pytest.approx(average_precision_score(yy[:, present], p[:, present], average="macro"), abs=1e-12)
    assert m["auc_micro"] == pytest.approx(roc_auc_score(yy, p, average="micro"), abs=1e-12)
    assert m["lrap"] == pytest.approx(label_ranking_average_precision_score(yy, p), abs=1e-12)
    assert m["accuracy"] == accuracy_score(yy, pred)  # subset accuracy
    assert m["hamming_loss"] == hamming_loss(yy, pred)
    assert m["f1_micro"] == pytest.approx(f1_score(yy, pred, average="micro", zero_division=0))
    assert m["f1_macro"] == pytest.approx(f1_score(yy, pred, average="macro", labels=present, zero_division=0))
    assert m["balanced_accuracy"] == pytest.approx(np.mean([balanced_accuracy_score(yy[:, j], pred[:, j]) for j in present]))
    assert m["nll"] == pytest.approx(log_loss(yy.ravel(), p.ravel(), labels=[0, 1]), rel=1e-5)
    assert m["labels_per_sample"] == pytest.approx(pred.sum(1).mean())
    # pooled binary ECE, written out here: 15 bins of max(p, 1-p)
    conf, correct = np.maximum(p, 1 - p).ravel(), (pred == yy).ravel()
    bins = np.minimum((conf * 15).astype(int), 14)
    want = sum((bins == b).mean() * abs(correct[bins == b].mean() - conf[bins == b].mean()) for b in np.unique(bins))
    assert m["ece"] == pytest.approx(want, abs=1e-9)
    recall = metrics.per_class_recall(z, y, head, 6)
    assert recall[:5] == pytest.approx([recall_score(yy[:, j], pred[:, j]) for j in present]) and math.isnan(recall[5])


def test_lrap_edge_cases_and_chunks_equal_scikit_learn():
    g = torch.Generator().manual_seed(4)
    s = (torch.rand(300, 5, generator=g) * 4).round()  # many ties
    pos = torch.rand(300, 5, generator=g) < 0.4
    pos[:20] = False  # samples without relevant labels: 1, as scikit-learn
    pos[20:40] = True  # all labels relevant: 1
    want = label_ranking_average_precision_score(pos.numpy().astype(int), s.numpy())
    assert float(metrics.lrap(s, pos)) == pytest.approx(want, abs=1e-12)
    assert float(metrics.lrap(s, pos, chunk=60)) == pytest.approx(want, abs=1e-12)  # 2 samples per chunk


def test_multilabel_metrics_of_a_diverged_model_are_nan_not_a_crash():
    y = coarse_multilabel(50)[1]
    m = metrics.evaluate(torch.full((50, 6), math.nan), y, "sigmoid", 6)
    assert all(math.isnan(m[k]) for k in ("auc", "ap", "auc_micro", "lrap", "nll", "ece"))


# --- losses -----------------------------------------------------------------------------------------------------
def objective(loss: str, *over: str, n_classes: int = 6, counts=None, n_labelled=None, partial=False):
    cfg = make_cfg(f"loss={loss}", *over)
    head = cfg.head or ("softmax" if loss == "ce" else "sigmoid")
    counts = torch.full((n_classes,), 10) if counts is None else counts
    return losses.build(cfg.loss, head, n_classes, counts, n_labelled, multilabel=True, partial=partial)


def test_pos_weight_auto_is_n_neg_over_n_pos_per_label():
    ds = data.load(make_cfg(*ML).data)
    obj = objective("bce_logits", "loss.pos_weight=auto", counts=ds.class_counts(), n_labelled=ds.n_labelled())
    pos = ds.y_train.sum(0)
    assert obj.pos_weight.shape == (6,)
    assert obj.pos_weight.tolist() == pytest.approx(((1500 - pos) / pos).tolist(), rel=1e-6)
    z, y = coarse_multilabel(64)
    want = F.binary_cross_entropy_with_logits(z, y, pos_weight=obj.pos_weight)
    assert float(obj(z, y)) == pytest.approx(float(want), rel=1e-6)


def test_ce_on_a_multilabel_task_is_softmax_ce_against_the_normalised_multi_hot_target():
    z, y = coarse_multilabel(64)
    y[0] = 0  # a sample without labels contributes 0
    obj = objective("ce")
    log_p = torch.log_softmax(z.double(), dim=1)
    want = sum(-(log_p[i] * y[i]).sum() / y[i].sum() for i in range(64) if y[i].sum() > 0) / 64
    assert float(obj(z, y)) == pytest.approx(float(want), rel=1e-6)
    assert float(obj.exact(z, y)) == pytest.approx(float(want), rel=1e-6)


def asl_reference(x: torch.Tensor, y: torch.Tensor, gamma_neg: float, gamma_pos: float, clip: float, eps=1e-8):
    """Alibaba-MIIL/ASL's AsymmetricLoss.forward, written out again (it returns the sum)."""
    p = torch.sigmoid(x)
    xs_neg = 1 - p
    if clip > 0:
        xs_neg = (xs_neg + clip).clamp(max=1)
    loss = y * torch.log(p.clamp(min=eps)) + (1 - y) * torch.log(xs_neg.clamp(min=eps))
    pt = p * y + xs_neg * (1 - y)
    loss = loss * torch.pow(1 - pt, gamma_pos * y + gamma_neg * (1 - y))
    return -loss.sum()


@pytest.mark.parametrize(("gamma_pos", "clip"), [(0.0, 0.05), (1.0, 0.05), (1.0, 0.0)])
def test_asl_equals_the_reference_and_its_gradient(gamma_pos, clip):
    z, y = coarse_multilabel(64)
    z = (z * 3).requires_grad_(True)  # float32, as the loss computes
    over = [f"loss.gamma_pos={gamma_pos}", f"loss.clip={clip}"]
    mean, total = objective("asl", *over), objective("asl", *over, "loss.reduction=sum")
    want = float(asl_reference(z, y, 4.0, gamma_pos, clip))
    assert float(total(z, y)) == pytest.approx(want, rel=1e-6)  # 'sum' is the reference's
    assert float(mean(z, y)) == pytest.approx(want / y.numel(), rel=1e-6)  # 'mean' divides by N*C
    (g_ours,) = torch.autograd.grad(total(z, y), z)
    (g_ref,) = torch.autograd.grad(asl_reference(z, y, 4.0, gamma_pos, clip), z)
    assert torch.allclose(g_ours, g_ref, rtol=1e-6, atol=1e-9)
    with torch.no_grad():
        assert float(mean.exact(z, y)) == pytest.approx(float(mean(z, y)), rel=1e-5)  # no clamp reached here


def test_asl_without_focusing_and_margin_is_bce_and_its_monitors_count_the_clip():
    z, y = coarse_multilabel(64)
    plain = objective("asl", "loss.gamma_neg=0", "loss.gamma_pos=0", "loss.clip=0")
    assert float(plain(z, y)) == pytest.approx(float(F.binary_cross_entropy_with_logits(z, y)), rel=1e-6)
    asl = objective("asl")
    z = torch.tensor([[-30.0, -30.0, 30.0, -1.0, 1.0, 0.0]])
    y = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0, 1.0]])
    p = asl.probs(z)
    # positive at p < eps (log floored), negative at p <= clip (margin); the rest not
    assert asl.clamped(p, y).tolist() == [[True, True, False, False, False, False]]
    assert float(asl(z, y) - asl.exact(z, y)) < -0.1  # the eps floor hides part of the -30 positive's loss
    zz = z.clone().requires_grad_(True)
    asl(zz, y).backward()
    assert torch.isfinite(zz.grad).all() and zz.grad[0, 1] == 0  # inside the margin: no gradient


def test_sigmoid_loss_wrong_counts_any_wrong_label():
    obj = objective("bce_logits")
    z = torch.tensor([[2.0, -2.0, -2.0, -2, -2, -2], [2.0, 2.0, -2.0, -2, -2, -2]])
    y = torch.tensor([[1.0, 0, 0, 0, 0, 0], [1.0, 0, 0, 0, 0, 0]])
    assert obj.wrong(z, y).tolist() == [False, True]


# --- runs -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["bce_logits", "asl", "ce"])
def test_multilabel_runs_log_their_metrics(tmp_path, loss):
    s = run_cfg(tmp_path, *ML, f"loss={loss}", "trainer.max_steps=100", "trainer.eval_every=50", "optim=adam")
    assert s["status"] == "completed"
    assert s["head"] == ("softmax" if loss == "ce" else "sigmoid")
    for k in ("val/auc", "val/ap", "val/f1_micro", "val/f1_macro", "val/hamming_loss", "val/lrap", "val/auc_micro"):
        assert math.isfinite(s["final"][k])
    assert s["final"]["val/auc"] > 0.6
    assert len(s["per_class_recall"]) == 6
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.util import tensor_util

    acc = ea.EventAccumulator(str(tmp_path), size_guidance={ea.TENSORS: 0})
    acc.Reload()
    assert {"val/f1_macro", "val/lrap", "val/hamming_loss"} <= set(acc.Tags()["scalars"])
    proto = tensor_util.make_ndarray(acc.Tensors("custom_scalars__config__")[0].tensor_proto).item()
    layout = layout_pb2.Layout.FromString(proto)
    val = next(c for c in layout.category if c.title == "val")
    assert {"val/f1_macro", "val/lrap", "val/hamming_loss", "val/auc_micro"} <= {ch.title for ch in val.chart}


@pytest.mark.parametrize("loss", ["bce", "bce_logits", "bce_manual", "asl", "ce"])
def test_multilabel_losses_diverge_cleanly_under_an_exploding_learning_rate(tmp_path, loss):
    s = run_cfg(tmp_path, *ML, f"loss={loss}", "optim.lr=1e30", *QUIET)
    assert s["status"] == "diverged"
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["loss=nll"], r"task=multilabel with head=softmax loss=nll: NLLLoss takes one class index per sample"),
        (["loss=nll_manual"], r"NLLLoss takes one class index"),
        (["loss=bce", "head=softmax"], r"softmax probabilities sum to 1.*use head=sigmoid"),
        (["loss=kd", "loss.teacher=/nowhere"], r"with head=softmax loss=kd: distillation"),
        (["loss=bce_logits", "loss.class_weight=inverse"], r"use loss.pos_weight"),
        (["data.imbalance_ratio=10"], r"imbalance_ratio=10 applies to single-label tasks"),
        (["data.label_noise=0.1"], r"apply to single-label tasks"),
        (["data.n_labels=0"], r"data.n_labels must be an integer >= 1"),
        (["data.task=multitask"], r"Unknown data.task='multitask'"),
        (["loss=ce", "data.unlabeled_frac=0.2"], r"loss=ce on a multi-label task normalises"),
    ],
)
def test_multilabel_bad_input_is_refused(overrides, match):
    with pytest.raises(ConfigError, match=match):
        validate(make_cfg(*ML, *overrides))


def test_multilabel_metric_on_a_single_label_task_is_refused():
    with pytest.raises(ConfigError, match="multi-label metric"):
        validate(make_cfg("trainer.target_metric=val/f1_macro"))
    validate(make_cfg(*ML, "trainer.target_metric=val/f1_macro", "objective_metric=val/hamming_loss"))


@needs_mnist
def test_mnist_grid_settings_are_checked():
    with pytest.raises(ConfigError, match=r"digits_per_image=\[2, 5\] must be \[lo, hi\] with 1 <= lo <= hi <= "):
        validate(make_cfg("data=mnist", "data.task=multilabel", "data.digits_per_image=[2,5]"))


def test_every_multilabel_pair_is_a_valid_head_loss_pair():

    assert MULTILABEL_PAIRS <= registry.valid_pairs()


def test_cli_refuses_a_softmax_only_loss_on_a_multilabel_task(tmp_path):
    r = cli(*ML, "loss=nll", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("lossbench: error: data.task=multilabel with head=softmax loss=nll")
    assert "Traceback" not in r.stderr


# --- CUDA: no host sync in a step ----------------------------------------------------------------------------
SYNC_CHECKED = ["trainer.device=cuda", "trainer.sync_debug=true", "trainer.max_steps=150", "trainer.log_every=50",
                "trainer.eval_every=100", "numerics.every=1", "numerics.hist_every=50"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.set_sync_debug_mode)")
@pytest.mark.parametrize("overrides", [
    [*ML, "loss=asl", "optim=adam"],
    [*ML, "loss=asl", "trainer.precision=bf16"],
    [*ML, "loss=ce"],
    [*ML, "loss=bce_logits", "loss.pos_weight=auto", "data.unlabeled_frac=0.3"],
    ["loss=bce", "data.unlabeled_frac=0.3", "data.n_classes=3", "loss.class_weight=inverse"],
    ["loss=ce", "data.n_classes=3", "data.soft_labels=bayes"],
])
def test_new_losses_never_synchronise_in_a_step(tmp_path, overrides):
    s = run_cfg(tmp_path, *overrides, *SYNC_CHECKED)
    assert s["status"] == "completed" and s["numerics"]["detail_steps"] == 150
