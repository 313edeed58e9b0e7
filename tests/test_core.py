"""The core suite: every valid loss/head pair trains, invalid ones are refused, weights and summaries are right."""

from __future__ import annotations

import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from lossbench import losses, metrics
from lossbench.config import validate
from lossbench.data import load
from lossbench.errors import ConfigError
from lossbench.losses import registry
from tests.conftest import cli, loss_overrides, make_cfg, needs_mnist, run_cfg

SMALL = ["data.n_train=2000", "data.n_val=1000", "logger.enabled=false"]


@pytest.mark.parametrize(("head", "loss"), sorted(registry.valid_pairs()))
def test_every_valid_pair_learns(tmp_path, head, loss, request):
    s = run_cfg(tmp_path, f"loss={loss}", f"head={head}", *SMALL, *loss_overrides(loss, request))
    assert s["status"] == "completed"
    assert s["head"] == head
    assert s["final"]["val/auc"] > 0.85  # chance is 0.5; the Bayes AUC of this task is about 0.92
    assert s["final"]["val/accuracy"] > 0.75


@pytest.mark.parametrize("loss", ["bce", "bce_logits", "ce", "nll", "bce_manual", "nll_manual"])
@pytest.mark.parametrize("head", ["sigmoid", "softmax"])
def test_invalid_pairs_are_refused_before_training(head, loss):
    cfg = make_cfg(f"loss={loss}", f"head={head}")
    if (head, loss) in registry.valid_pairs():
        validate(cfg)
        return
    with pytest.raises(ConfigError, match=r"Invalid head/loss pair.*Valid pairs: .*head=softmax loss=ce"):
        validate(cfg)


def test_ce_on_single_logit_message_says_why():
    with pytest.raises(ConfigError, match="always 0"):
        validate(make_cfg("loss=ce", "head=sigmoid"))


def test_natural_head_is_used_when_head_is_unset(request):
    for loss, head in ((s.name, s.natural_head) for s in registry.specs()):
        cfg = make_cfg(f"loss={loss}", *loss_overrides(loss, request))
        assert cfg.head is None
        validate(cfg)
        assert losses.build(cfg.loss, head, 2, torch.tensor([5, 5])).k == (1 if head == "sigmoid" else 2)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=0", "optim.lr must be > 0"),
        ("optim.lr=-1", "optim.lr must be > 0"),
        ("trainer.batch_size=0", "trainer.batch_size must be an integer >= 1"),
        ("trainer.max_steps=0", "trainer.max_steps must be an integer >= 1"),
        ("trainer.precision=fp8", "Valid choices: trainer.precision=bf16, fp16, fp32"),
        ("head=tanh", "Valid choices: head=sigmoid, softmax"),
        ("loss.reduction=none", "Valid choices: mean, num_pos, sum"),
        ("loss.class_weight=balanced", "Valid choices: null, inverse, effective"),
        ("loss.label_smoothing=1.5", "label_smoothing must be in"),
        ("data.imbalance_ratio=0.5", "must be >= 1"),
        ("trainer.target_metric=val/f1", "Valid choices: val/loss"),
        ("model=cnn", "model=cnn needs image data"),
    ],
)
def test_bad_values_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        validate(make_cfg(override))


def test_pos_weight_on_softmax_loss_is_refused():
    with pytest.raises(ConfigError, match="pos_weight is for sigmoid"):
        validate(make_cfg("loss=ce", "loss.pos_weight=auto"))


def test_label_smoothing_on_nll_is_refused():
    with pytest.raises(ConfigError, match="Use loss=ce"):
        validate(make_cfg("loss=nll", "loss.label_smoothing=0.1"))


def test_pos_weight_and_class_weights_are_computed_as_specified():
    counts = torch.tensor([900, 100])
    pw, cw = losses.weights(OmegaConf.create({"pos_weight": "auto", "class_weight": "inverse", "beta": 0.9}),
                            "sigmoid", counts)
    assert pw.tolist() == pytest.approx([9.0])  # n_neg / n_pos
    assert cw.tolist() == pytest.approx([1000 / (2 * 900), 1000 / (2 * 100)])  # N / (C n_c)

    counts3 = torch.tensor([500, 100, 10])
    pw, cw = losses.weights(OmegaConf.create({"pos_weight": "auto", "class_weight": "effective", "beta": 0.99}),
                            "sigmoid", counts3)
    assert pw.tolist() == pytest.approx([110 / 500, 510 / 100, 600 / 10])  # per one-vs-rest output
    raw = [(1 - 0.99) / (1 - 0.99**n) for n in (500, 100, 10)]
    assert cw.tolist() == pytest.approx([3 * r / sum(raw) for r in raw])  # Cui et al., normalised to sum C
    assert sum(cw.tolist()) == pytest.approx(3.0)

    pw, cw = losses.weights(OmegaConf.create({"pos_weight": 5, "class_weight": [1, 2], "beta": 0.9}),
                            "sigmoid", counts)
    assert pw.tolist() == [5.0] and cw.tolist() == [1.0, 2.0]


def test_class_weight_list_of_wrong_length_is_refused():
    with pytest.raises(ConfigError, match="has 3 entries but the data has 2 classes"):
        losses.weights(OmegaConf.create({"pos_weight": None, "class_weight": [1, 2, 3], "beta": 0.9}),
                       "softmax", torch.tensor([5, 5]))


def test_weighted_losses_match_pytorch_definitions():
    torch.manual_seed(0)
    z, y = torch.randn(64, 3), torch.randint(0, 3, (64,))
    counts = torch.bincount(y, minlength=3)
    lc = OmegaConf.create({"name": "ce", "pos_weight": None, "class_weight": "inverse", "beta": 0.9,
                           "label_smoothing": 0.0, "reduction": "mean", "ignore_index": -100})
    obj = losses.build(lc, "softmax", 3, counts)
    w = len(y) / (3 * counts.float())
    assert obj(z, y).item() == pytest.approx(torch.nn.functional.cross_entropy(z, y, weight=w).item(), rel=1e-6)

    lc = OmegaConf.create({"name": "bce_logits", "pos_weight": 4.0, "class_weight": None, "beta": 0.9,
                           "label_smoothing": 0.0, "reduction": "mean"})
    yb = torch.randint(0, 2, (64,))
    zb = torch.randn(64, 1)
    obj = losses.build(lc, "sigmoid", 2, torch.tensor([32, 32]))
    ref = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([4.0]))(zb, yb[:, None].float())
    assert obj(zb, yb).item() == pytest.approx(ref.item(), rel=1e-6)
    bce = losses.build(OmegaConf.merge(lc, {"name": "bce"}), "sigmoid", 2, torch.tensor([32, 32]))
    assert bce(zb, yb).item() == pytest.approx(ref.item(), rel=1e-5)  # same objective, unsaturated inputs


def test_ce_and_logsoftmax_nll_give_the_same_trajectory(tmp_path):
    a = run_cfg(tmp_path / "ce", "loss=ce", *SMALL)
    b = run_cfg(tmp_path / "nll", "loss=nll", *SMALL)
    assert [h["val/loss"] for h in a["history"]] == [h["val/loss"] for h in b["history"]]
    assert a["final"] == b["final"]


def test_imbalanced_data_has_the_configured_ratio():
    ds = load(make_cfg("data=imbalanced").data)
    n0, n1 = ds.class_counts().tolist()
    assert n0 / n1 == pytest.approx(100, rel=0.02)
    val = torch.bincount(ds.y_val).tolist()
    assert val[0] / val[1] == pytest.approx(100, rel=0.02)


def test_synthetic_multiclass_long_tail_profile():
    ds = load(make_cfg("data.n_classes=4", "data.imbalance_ratio=8", "data.n_train=3000").data)
    c = ds.class_counts().tolist()
    assert c[0] / c[3] == pytest.approx(8, rel=0.05) and c[0] > c[1] > c[2] > c[3]


def test_metrics_with_one_class_present_are_nan_not_a_crash():
    z = torch.randn(50, 1)
    m = metrics.evaluate(z, torch.zeros(50, dtype=torch.long), "sigmoid", 2)
    assert math.isnan(m["auc"])  # ROC-AUC is undefined with one class
    assert 0 <= m["accuracy"] <= 1


def test_sigmoid_one_vs_rest_nll_normalises_scores():
    z = torch.randn(20, 4)
    y = torch.randint(0, 4, (20,))
    s = torch.sigmoid(z)
    expected = -(s / s.sum(1, keepdim=True)).gather(1, y[:, None]).log().mean()
    assert metrics.nll(z, y, "sigmoid").item() == pytest.approx(expected.item(), rel=1e-5)


def test_summary_and_tensorboard_contents(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    s = run_cfg(tmp_path, "loss=bce_logits", "data.n_train=1000", "data.n_val=500", "trainer.max_steps=100",
                "trainer.eval_every=50", "trainer.log_every=25")
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for key in ("status", "config", "steps", "wall_time_s", "samples_per_sec", "final", "best", "convergence",
                "device", "precision", "numerics"):
        assert key in on_disk, key
    assert on_disk["status"] == "completed" and on_disk["steps"] == 100 and on_disk["device"] == "cpu"
    assert on_disk["config"]["loss"]["name"] == "bce_logits"
    assert on_disk["final"]["val/auc"] == pytest.approx(s["final"]["val/auc"])
    assert set(on_disk["convergence"]) == {"target_metric", "target_value", "steps_to_target"}

    ea = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0}).Reload()  # events in the run dir
    tags = ea.Tags()["scalars"]
    for tag in ("train/loss", "val/auc", "val/nll", "val/ece", "watch/saturated_frac", "watch/samples_per_sec"):
        assert tag in tags, tag
    assert [e.step for e in ea.Scalars("val/auc")][:2] == [50, 100]
    assert ea.Scalars("val/auc")[-1].value == pytest.approx(on_disk["final"]["val/auc"], rel=1e-5)
    assert [e.step for e in ea.Scalars("train/loss")] == [25, 50, 75, 100]


def test_cli_runs_the_default_job(tmp_path):
    r = cli("trainer.max_steps=40", "trainer.eval_every=20", "data.n_train=500", "data.n_val=200",
            f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    assert "lossbench: completed 40 steps" in r.stdout
    assert json.loads((tmp_path / "summary.json").read_text())["config"]["loss"]["name"] == "bce_logits"


def test_cli_bad_pair_exits_2_with_a_clear_message(tmp_path):
    r = cli("loss=ce", "head=sigmoid", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 2
    assert "Invalid head/loss pair" in r.stderr and "Traceback" not in r.stderr


@needs_mnist
def test_mnist_multiclass_and_binary(tmp_path):
    s = run_cfg(tmp_path / "mc", "data=mnist", "loss=ce", "optim=adam", "data.n_train=6000", "data.n_val=2000",
                "trainer.max_steps=300", "logger.enabled=false")
    assert s["data"]["n_classes"] == 10 and s["data"]["n_train"] == 6000
    assert s["final"]["val/accuracy"] > 0.9
    b = run_cfg(tmp_path / "bin", "data=mnist", "data.task=binary", "loss=bce_logits", "optim=adam",
                "data.n_train=6000", "data.n_val=2000", "trainer.max_steps=300", "logger.enabled=false")
    assert b["head"] == "sigmoid" and b["data"]["n_classes"] == 2
    assert b["final"]["val/auc"] > 0.98


@needs_mnist
def test_mnist_imbalance_profiles():
    ds = load(make_cfg("data=mnist", "data.imbalance_ratio=100").data)
    c = ds.class_counts().tolist()
    assert c[0] / c[9] == pytest.approx(100, rel=0.05) and len(ds.y_val) == len(ds.y_test) == 5000  # validation and test untouched
    ds = load(make_cfg("data=mnist", "data.task=binary", "data.positive_classes=[0]", "data.imbalance_ratio=50").data)
    n0, n1 = ds.class_counts().tolist()
    assert n0 / n1 == pytest.approx(50, rel=0.02)


def test_every_summary_says_which_code_produced_it(tmp_path):
    """lossbench's version, the checkout's commit and whether its tracked files were changed, torch's version and
    the device's name."""
    import subprocess

    import torch

    import lossbench
    from lossbench.runs import provenance
    from tests.conftest import ROOT, run_cfg

    s = run_cfg(tmp_path, "trainer.max_steps=5", "data.n_train=200", "data.n_val=100", "trainer.eval_every=5")
    code = s["code"]
    assert code["lossbench"] == lossbench.__version__ and code["torch"] == torch.__version__
    assert code["device_name"] == provenance.device_name(torch.device("cpu")) and code["device_name"]
    if (ROOT / ".git").exists():  # a checkout: its own commit
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        assert code["git_commit"] == head.strip() and isinstance(code["git_dirty"], bool)
