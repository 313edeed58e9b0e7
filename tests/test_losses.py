"""The losses layer as a library: each loss is built from plain arguments (no OmegaConf) and matches an independent
formula; a loss defined here, registered in one call (plus its YAML), goes through the CLI's validation, a sweep,
a stack and the report like a built-in one (lossbench/losses/registry.py)."""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import MISSING

from lossbench import losses
from lossbench.analysis import plots, report
from lossbench.losses import registry
from lossbench.losses.base import Objective
from lossbench.values import Range
from tests.inprocess import run_cli

TINY = ["trainer.max_steps=20", "trainer.eval_every=10", "trainer.log_every=10", "data.n_train=600",
        "data.n_val=300", "logger.enabled=false"]


def batch(n: int = 16, c: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * 3, torch.randint(0, c, (n,), generator=g)


# --- every loss from plain arguments ---------------------------------------------------------------------------


def test_the_package_imports_without_torch_and_lists_every_loss():
    import subprocess

    code = ("import sys; from lossbench import losses, config; "
            "assert 'torch' not in sys.modules; print(len(losses.registry.names()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "19", r.stderr


def test_every_registered_loss_builds_from_plain_arguments_and_its_defaults():
    """No config: the class with its head, class count and (for the prior users) the class counts."""
    counts = torch.tensor([30, 20, 10])
    for spec in registry.specs():
        for head in spec.heads:
            c = 2 if spec.binary_only else 3
            obj = spec.load()(head=head, n_classes=c, counts=counts[:c])
            z, y = batch(8, 1 if head == "sigmoid" and c == 2 else c)
            y = y.clamp(max=c - 1)
            if spec.teacher:
                y = losses.pack_teacher(y, torch.randn(8, c))
            loss = obj(z, y)
            assert loss.dim() == 0 and torch.isfinite(loss), (spec.name, head)


def test_the_seeds_match_their_formulas():
    z, y = batch()
    t = F.one_hot(y, 3).float()
    p = torch.sigmoid(z)
    bce = -(t * p.log() + (1 - t) * (1 - p).log()).mean()
    for cls in (losses.BCE, losses.BCEWithLogits, losses.ManualBCE):
        assert float(cls(head="sigmoid", n_classes=3)(z, y)) == pytest.approx(float(bce), rel=1e-5)
    ce = -(torch.log_softmax(z, 1).gather(1, y[:, None])).mean()
    for cls in (losses.CrossEntropy, losses.NLL, losses.ManualNLL):
        assert float(cls(head="softmax", n_classes=3)(z, y)) == pytest.approx(float(ce), rel=1e-5)
    w = torch.tensor([1.0, 2.0, 0.5])
    weighted = (w[y] * -(torch.log_softmax(z, 1).gather(1, y[:, None]).squeeze(1))).sum() / w[y].sum()
    got = losses.CrossEntropy(head="softmax", n_classes=3, class_weight=w)(z, y)
    assert float(got) == pytest.approx(float(weighted), rel=1e-5)
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.NLL(head="softmax", n_classes=3, label_smoothing=0.1)


def test_imbalance_losses_match_their_formulas():
    z, y = batch()
    counts = torch.tensor([50, 30, 20])
    log_pi = torch.log(counts / counts.sum()).float()
    la = losses.LogitAdjusted(0.5, head="softmax", n_classes=3, counts=counts)
    assert float(la(z, y)) == pytest.approx(float(F.cross_entropy(z + 0.5 * log_pi, y)), rel=1e-5)
    bs = losses.BalancedSoftmax(head="softmax", n_classes=3, counts=counts)
    assert float(bs(z, y)) == pytest.approx(float(F.cross_entropy(z + counts.float().log(), y)), rel=1e-5)
    m = counts.float() ** -0.25
    m = m * 0.5 / m.max()
    ldam = losses.LDAM(0.5, 30.0, head="softmax", n_classes=3, counts=counts)
    assert float(ldam(z, y)) == pytest.approx(float(F.cross_entropy(30 * (z - F.one_hot(y, 3) * m[y, None]), y)),
                                              rel=1e-5)
    p_y = torch.softmax(z, 1).gather(1, y[:, None]).squeeze(1)
    poly = losses.Poly1(2.0, head="softmax", n_classes=3)
    assert float(poly(z, y)) == pytest.approx(float((-p_y.log() + 2.0 * (1 - p_y)).mean()), rel=1e-5)
    focal = losses.Focal(2.0, head="softmax", n_classes=3)
    assert float(focal(z, y)) == pytest.approx(float(((1 - p_y) ** 2 * -p_y.log()).mean()), rel=1e-4)
    zb, yb = z[:, :1], (y > 0).long()
    t, p = yb[:, None].float(), torch.sigmoid(zb)
    p_t = p * t + (1 - p) * (1 - t)
    want = ((0.25 * t + 0.75 * (1 - t)) * (1 - p_t) ** 2 * F.binary_cross_entropy_with_logits(zb, t, reduction="none"))
    assert float(losses.Focal(head="sigmoid", n_classes=2)(zb, yb)) == pytest.approx(float(want.mean()), rel=1e-5)
    pc = p.clamp(1e-3, 1 - 1e-3)
    clipped = losses.ClippedBCE(1e-3, head="sigmoid", n_classes=2)(zb, yb)
    assert float(clipped) == pytest.approx(float(-(t * pc.log() + (1 - t) * (1 - pc).log()).mean()), rel=1e-5)
    with pytest.raises(ValueError, match="gamma"):
        losses.Focal(-1.0)


def test_distillation_and_auc_losses_from_plain_arguments():
    z, y = batch()
    v = torch.randn(16, 3, generator=torch.Generator().manual_seed(1))
    kd = losses.Distillation(2.0, 1.0, head="softmax", n_classes=3)
    q, log_p = torch.softmax(v / 2, 1), torch.log_softmax(z / 2, 1)
    want = 4.0 * (q * (q.log() - log_p)).sum(1).mean()
    assert float(kd(z, losses.pack_teacher(y, v))) == pytest.approx(float(want), rel=1e-5)
    assert float(losses.DistillationNoT2(2.0, 1.0, head="softmax", n_classes=3)(z, losses.pack_teacher(y, v))) == \
        pytest.approx(float(want) / 4, rel=1e-5)
    zb, yb = z[:, :1], (y > 0).long()
    h = torch.sigmoid(zb[:, 0])
    pairs = [(h[i] - h[j]) for i in range(16) for j in range(16) if yb[i] == 1 and yb[j] == 0]
    want = sum(float(torch.clamp(1 - d, min=0) ** 2) for d in pairs) / len(pairs)
    assert float(losses.AUCPairwise(head="sigmoid", n_classes=2)(zb, yb)) == pytest.approx(want, rel=1e-5)
    aucm = losses.AUCMargin(head="sigmoid", n_classes=2, counts=torch.tensor([10, 6]))
    assert aucm.p == pytest.approx(6 / 16) and set(aucm.duals()) == {"a", "b", "alpha"}


def test_drw_switches_between_its_two_losses_and_is_the_loss_in_force():
    z, y = batch()
    w = torch.tensor([1.0, 4.0, 2.0])
    drw = losses.DRW(losses.CrossEntropy(head="softmax", n_classes=3),
                     losses.CrossEntropy(head="softmax", n_classes=3, class_weight=w), step=5)
    drw.begin_step(4)
    assert float(drw(z, y)) == pytest.approx(float(F.cross_entropy(z, y)))
    assert drw.k == 3 and drw.head == "softmax" and not drw.has_clamp  # the loss in force's attributes
    drw.begin_step(5)
    assert float(drw(z, y)) == pytest.approx(float(F.cross_entropy(z, y, weight=w)))
    assert float(drw.exact(z, y)) == pytest.approx(float(F.cross_entropy(z, y, weight=w)))


def test_a_checkpoint_written_before_the_package_loads():
    """The losses held nn.CrossEntropyLoss/NLLLoss/BCEWithLogitsLoss submodules, whose weight buffers a checkpoint
    of then carries: they load (and are dropped)."""
    w = torch.tensor([1.0, 2.0, 3.0])
    obj = losses.CrossEntropy(head="softmax", n_classes=3, class_weight=w.clone())
    old = {"class_weight": w * 2, "ce.weight": w * 2, "nll.weight": w * 2}
    obj.load_state_dict(old)
    assert torch.equal(obj.class_weight, w * 2)


# --- a new loss: one class, one registration, one YAML ---------------------------------------------------------


@dataclass
class PowerLossSchema(registry.Loss):
    power: float = MISSING


class PowerLoss(Objective):
    r"""|p - t|^power on sigmoid probabilities p = sigmoid(z) (power = 2: the Brier score per output), reduced as the
    BCE losses. Shape: z (N, K), y (N,) long; output scalar."""

    def __init__(self, power: float = 2.0, **common):
        super().__init__(**common)
        self.power = float(power)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = self.targets(y, z.dtype)
        return self._reduce((torch.sigmoid(z) - t).abs() ** self.power, y)


NEW = registry.LossSpec("power_test", PowerLoss, PowerLossSchema, "sigmoid", color="#123456",
                        refuses={"softmax": "the power loss compares each output's own sigmoid with its target"},
                        ranges={"power": Range(1)})
YAML = """# |p - t|^power on sigmoid outputs (tests/test_losses.py)
defaults:
  - /schema/loss/power_test@_here_
  - _self_
name: power_test
power: 2.0
pos_weight: null
class_weight: null
beta: 0.999
label_smoothing: 0.0
reduction: mean
"""


@pytest.fixture
def new_loss(tmp_path):
    """The new loss registered (one call) and its YAML in a config directory of its own; unregistered after."""
    (tmp_path / "configs" / "loss").mkdir(parents=True)
    (tmp_path / "configs" / "loss" / "power_test.yaml").write_text(YAML)
    registry.register(NEW)
    yield f"hydra.searchpath=[file://{tmp_path / 'configs'}]"
    registry.unregister(NEW.name)


def summaries(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("summary.json"))]


def test_a_new_loss_registered_in_one_call_runs_through_validation_sweeps_stacks_and_reports(new_loss, tmp_path):
    # validation: the refused head and the range come from the registration
    r = run_cli(new_loss, "loss=power_test", "head=softmax", *TINY, f"hydra.run.dir={tmp_path / 'bad'}")
    assert r.returncode == 2 and "Invalid head/loss pair head=softmax loss=power_test: the power loss compares" \
        in r.stderr and "head=sigmoid loss=power_test" in r.stderr, r.stderr
    r = run_cli(new_loss, "loss=power_test", "loss.power=0.5", *TINY, f"hydra.run.dir={tmp_path / 'bad2'}")
    assert r.returncode == 2 and "loss.power must be >= 1, got 0.5" in r.stderr, r.stderr
    r = run_cli(new_loss, "loss=nosuch", *TINY, f"hydra.run.dir={tmp_path / 'bad3'}")
    assert r.returncode == 2 and "power_test" in r.stderr, r.stderr  # among the loss choices named
    # a sweep (basic launcher) and the same sweep stacked
    for name, launcher in (("basic", []), ("stacked", ["hydra/launcher=stacked"])):
        r = run_cli("-m", new_loss, "loss=power_test", "loss.power=2,3", "seed=0,1", *launcher, *TINY,
                    f"hydra.sweep.dir={tmp_path / name}")
        assert r.returncode == 0, r.stderr[-2000:]
        done = summaries(tmp_path / name)
        assert len(done) == 4 and {s["status"] for s in done} == {"completed"}
        assert sorted(s["config"]["loss"]["power"] for s in done) == [2, 2, 3, 3]
    basic, stacked = summaries(tmp_path / "basic"), summaries(tmp_path / "stacked")
    assert any(s.get("stack", {}).get("size", 1) > 1 for s in stacked)
    for a, b in zip(basic, stacked, strict=True):  # a stack trains each member as the run alone does
        assert a["final"]["val/loss"] == pytest.approx(b["final"]["val/loss"], rel=1e-4)
    # the report: its rows, and the loss's own colour
    _, written = report.report([tmp_path / "basic"], out=tmp_path / "report")
    with open(tmp_path / "report" / "summary.csv") as f:
        rows = [row for row in csv.DictReader(f) if row["row"] == "run"]
    assert len(rows) == 4 and {row["status"] for row in rows} == {"completed"}
    assert sorted({row["group"] for row in rows}) == ["loss.power=2", "loss.power=3"], rows
    assert plots.loss_color("power_test") == "#123456"
    # plain arguments: the class alone
    z, y = batch(8, 1)
    y = y.clamp(max=1)
    want = ((torch.sigmoid(z) - y[:, None].float()).abs() ** 3).mean()
    assert float(PowerLoss(3.0, head="sigmoid", n_classes=2)(z, y)) == pytest.approx(float(want))
    assert not math.isnan(float(want))
