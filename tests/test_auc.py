"""The AUC losses, PESG and the positive-share sampler: formulas against independent computations, one PESG step
by hand, the sampler's batches, refusals, monitors, stacks, and exact resume (CPU, tiny runs)."""

from __future__ import annotations

import math
import signal

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from lossbench import data, losses
from lossbench.config import validate
from lossbench.engine import train
from lossbench.engine.numerics import Monitor
from lossbench.engine.pesg import PESG
from lossbench.errors import ConfigError
from lossbench.runs.logger import read_scalars, tb_tag
from tests.conftest import make_cfg, run_cfg

TINY = ["trainer.threads=1", "model.hidden=[16]", "data=imbalanced", "data.imbalance_ratio=10", "data.n_train=600",
        "data.n_val=300", "trainer.log_every=10", "trainer.eval_every=30", "numerics.every=5", "logger.flush_secs=1"]
MARGIN = ["loss=auc_margin", "optim=pesg"]


def loss_cfg(name: str, **keys):
    return OmegaConf.merge(make_cfg(f"loss={name}").loss, keys)


def batch(n: int = 40, seed: int = 0, pos: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, generator=g, dtype=torch.float64) * 2
    y = (torch.rand(n, generator=g) < pos).long()
    y[0], y[1] = 1, 0  # both classes
    return z, y


# --- formulas ---------------------------------------------------------------------------------------------------


def aucm_numpy(z: np.ndarray, y: np.ndarray, a: float, b: float, alpha: float, p: float, m: float) -> float:
    """Yuan et al. (2021), eq. of F(w, a, b, alpha; z), averaged over the samples, written from the paper."""
    h = 1 / (1 + np.exp(-z))
    pos, neg = (y == 1), (y == 0)
    f = ((1 - p) * (h - a) ** 2 * pos + p * (h - b) ** 2 * neg
         + 2 * alpha * (p * (1 - p) * m + p * h * neg - (1 - p) * h * pos) - p * (1 - p) * alpha**2)
    return float(f.mean())


@pytest.mark.parametrize("prior", ["train", "batch"])
def test_auc_margin_is_the_papers_objective(prior):
    z, y = batch()
    counts = torch.tensor([90, 10])
    obj = losses.build(loss_cfg("auc_margin", margin=0.7, prior=prior), "sigmoid", 2, counts)
    with torch.no_grad():
        obj.a.fill_(0.8), obj.b.fill_(0.1), obj.alpha.fill_(0.35)
    p = 0.1 if prior == "train" else float(y.float().mean())
    want = aucm_numpy(z[:, 0].numpy(), y.numpy(), 0.8, 0.1, 0.35, p, 0.7)
    assert float(obj(z.float(), y)) == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_auc_margin_gradients_point_to_the_class_means_and_the_margin_gap():
    """dF/da = -2(1-p) E[(h-a) 1{y=1}] (zero at a = mean positive score); dF/dalpha = 2 p(1-p)(m - gap) - 2 p(1-p) alpha
    when a, b are the class means (gap = E[h|1] - E[h|0])."""
    z, y = batch(200, seed=1)
    p = float(y.float().mean())
    obj = losses.build(loss_cfg("auc_margin", prior="batch"), "sigmoid", 2, torch.tensor([50, 50]))
    h = torch.sigmoid(z.float()[:, 0])
    mp, mn = float(h[y == 1].mean()), float(h[y == 0].mean())
    with torch.no_grad():
        obj.a.fill_(mp), obj.b.fill_(mn), obj.alpha.fill_(0.2)
    obj(z.float(), y).backward()
    assert abs(float(obj.a.grad)) < 1e-6 and abs(float(obj.b.grad)) < 1e-6
    assert float(obj.alpha.grad) == pytest.approx(2 * p * (1 - p) * (1 - (mp - mn)) - 2 * p * (1 - p) * 0.2, rel=1e-5)


def pairwise_brute(z: torch.Tensor, y: torch.Tensor, surrogate: str, m: float) -> float:
    h = [1 / (1 + math.exp(-float(v))) for v in z[:, 0]]
    s = {"squared": lambda d: (m - d) ** 2, "squared_hinge": lambda d: max(m - d, 0.0) ** 2,
         "logistic": lambda d: math.log(1 + math.exp(-m * d))}[surrogate]
    terms = [s(h[i] - h[j]) for i in range(len(h)) for j in range(len(h)) if y[i] == 1 and y[j] == 0]
    return sum(terms) / len(terms) if terms else 0.0


@pytest.mark.parametrize("surrogate", ["squared", "squared_hinge", "logistic"])
def test_auc_pairwise_equals_a_double_loop_over_pairs(surrogate, monkeypatch):
    z, y = batch(30, seed=2)
    obj = losses.build(loss_cfg("auc_pairwise", surrogate=surrogate, margin=0.6), "sigmoid", 2, torch.tensor([20, 10]))
    want = pairwise_brute(z, y, surrogate, 0.6)
    assert float(obj(z.float(), y)) == pytest.approx(want, rel=1e-5)
    monkeypatch.setattr(losses.auc, "PAIR_CHUNK", 64)  # rows in chunks of 2, as for an evaluation set
    assert float(obj(z.float(), y)) == pytest.approx(want, rel=1e-5)


def test_a_batch_without_pairs_contributes_zero_with_a_zero_gradient():
    obj = losses.build(loss_cfg("auc_pairwise"), "sigmoid", 2, torch.tensor([20, 10]))
    for y in (torch.zeros(8, dtype=torch.long), torch.ones(8, dtype=torch.long)):
        z = torch.randn(8, 1, requires_grad=True)
        loss = obj(z, y)
        loss.backward()
        assert float(loss) == 0.0 and torch.equal(z.grad, torch.zeros_like(z))


# --- PESG ------------------------------------------------------------------------------------------------------


def test_one_and_two_pesg_steps_by_hand():
    w = torch.nn.Parameter(torch.tensor([0.5, -2.0]))
    a, b, alpha = (torch.nn.Parameter(torch.tensor([v])) for v in (0.3, 0.1, 0.05))
    opt = PESG([w], {"a": a, "b": b, "alpha": alpha}, margin=1.0, lr=0.1, momentum=0.9, weight_decay=0.01,
               epoch_decay=0.2, clip_value=1.0, decay_steps=(2,), decay_factor=10.0)
    w0, a0 = w.detach().clone(), a.detach().clone()
    w.grad, a.grad, b.grad, alpha.grad = torch.tensor([3.0, -0.5]), torch.tensor([0.4]), torch.tensor([-2.0]), torch.tensor([1.0])
    opt.step()
    # step 1: d = clip(g) + 0.2 (v - v_0) + 0.01 v, v_0 = v: d = clip(g) + 0.01 v; buf = d; v -= 0.1 d
    d_w = torch.tensor([1.0 + 0.005, -0.5 - 0.02])
    w1 = torch.tensor([0.5, -2.0]) - 0.1 * d_w
    a1, b1 = 0.3 - 0.1 * (0.4 + 0.003), 0.1 - 0.1 * (-1.0 + 0.001)
    assert torch.allclose(w.detach(), w1.float(), atol=1e-7)
    assert float(a) == pytest.approx(a1) and float(b) == pytest.approx(b1)
    alpha1 = 0.05 + 0.1 * (2 * (1.0 + b1 - a1) - 2 * 0.05)  # after a and b moved, as LibAUC
    assert float(alpha) == pytest.approx(alpha1, rel=1e-6)
    # step 2: buf = 0.1 buf + 0.9 d (LibAUC's momentum); then the decay: lr 0.01, v_ref = mean of the 2 iterates
    w.grad = torch.tensor([-4.0, 0.25])
    opt.step()
    d2 = torch.tensor([-1.0, 0.25]) + 0.2 * (w1 - w0) + 0.01 * w1
    w2 = w1 - 0.1 * (0.1 * d_w + 0.9 * d2)
    assert torch.allclose(w.detach(), w2.float(), atol=1e-6)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    assert torch.allclose(opt.state[w]["ref"], (w1 + w2).float() / 2, atol=1e-6)
    assert float(a) != float(a0)


def test_alpha_is_projected_to_be_non_negative():
    a, b, alpha = (torch.nn.Parameter(torch.tensor([v])) for v in (0.9, 0.0, 0.01))
    opt = PESG([], {"a": a, "b": b, "alpha": alpha}, margin=0.1, lr=1.0)
    alpha.grad = torch.zeros(1)
    opt.step()  # 0.01 + 2 (0.1 + 0 - 0.9) - 0.02 < 0
    assert float(alpha) == 0.0


# --- the sampler --------------------------------------------------------------------------------------------


def test_pos_share_batches_hold_the_share_and_follow_the_seed():
    y = torch.zeros(1000, dtype=torch.long)
    y[::100] = 1
    pos, neg = (y == 1).nonzero().squeeze(1), (y == 0).nonzero().squeeze(1)
    order = data.share_order(pos, neg, 16, 7, 32, torch.Generator().manual_seed(0))
    batches = order.view(7, 32)
    assert (y[batches].sum(dim=1) == 16).all()
    assert len(set(batches[:, 16:].flatten().tolist())) == 7 * 16  # negatives without replacement
    again = data.share_order(pos, neg, 16, 7, 32, torch.Generator().manual_seed(0))
    other = data.share_order(pos, neg, 16, 7, 32, torch.Generator().manual_seed(1))
    assert torch.equal(order, again) and not torch.equal(order, other)


def test_pairless_batches_are_counted_and_the_sampler_removes_them(tmp_path):
    plain = run_cfg(tmp_path / "plain", *TINY, "loss=auc_pairwise", "data.imbalance_ratio=100",
                    "trainer.batch_size=32", "trainer.max_steps=40")
    shared = run_cfg(tmp_path / "shared", *TINY, "loss=auc_pairwise", "data.imbalance_ratio=100",
                     "trainer.batch_size=32", "trainer.max_steps=40", "trainer.pos_share=0.25")
    assert plain["numerics"]["pairless_frac_mean"] > 0.3  # ~(100/101)^32 = 0.73 of the batches
    assert shared["numerics"]["pairless_frac_mean"] == 0.0
    assert "numerics/pairless_frac" in read_scalars(tmp_path / "plain", ["numerics/pairless_frac"])


# --- refusals ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "match"), [
    (["loss=auc_margin", "optim=pesg", "head=softmax"], "head=softmax loss=auc_margin: the AUC losses rank one score"),
    (["loss=auc_pairwise", "head=softmax"], "Use head=sigmoid"),
    (["loss=auc_margin"], "optim=sgd cannot do.*Use optim=pesg"),
    (["loss=auc_pairwise", "data.n_classes=3"], "this task is not binary"),
    (["loss=auc_pairwise", "loss.pos_weight=2"], "has no loss.pos_weight"),
    (["trainer.pos_share=0.5", "data.n_classes=3"], "trainer.pos_share=0.5 sets the share"),
    (["trainer.pos_share=0.001"], "gives 0 positives a batch"),
    (["trainer.pos_share=1.5"], r"trainer.pos_share must be in \(0, 1\)"),
    (["loss=auc_pairwise", "loss.surrogate=hinge"], "Unknown loss.surrogate='hinge'"),
    (["optim=pesg", "optim.decay_steps=[50,10]"], "increasing order"),
])
def test_bad_settings_are_refused_with_the_reason(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        run_cfg(tmp_path, "trainer.max_steps=5", *overrides)


def test_init_from_loads_a_runs_weights_and_refuses_another_shape(tmp_path):
    run_cfg(tmp_path / "bce", *TINY, "trainer.max_steps=20")
    ft = run_cfg(tmp_path / "ft", *TINY, *MARGIN, "trainer.max_steps=1", "trainer.eval_every=1",
                 f"model.init_from={tmp_path / 'bce'}", "optim.lr=1e-12")
    bce = torch.load(tmp_path / "bce" / "checkpoint.pt", weights_only=True)["model"]
    after = torch.load(tmp_path / "ft" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.allclose(bce[k], after[k], atol=1e-9) for k in bce) and ft["status"] == "completed"
    with pytest.raises(ConfigError, match="model.init_from=.*does not fit this one"):
        run_cfg(tmp_path / "bad", *TINY, "model.hidden=[8]", f"model.init_from={tmp_path / 'bce'}")
    with pytest.raises(ConfigError, match="no checkpoint.pt there"):
        run_cfg(tmp_path / "none", *TINY, f"model.init_from={tmp_path / 'missing'}")


# --- runs: logging, stacks, resume -------------------------------------------------------------------------------


def test_pesg_runs_train_alone_and_the_rest_of_the_sweep_stacks(tmp_path):
    grid = [[*MARGIN, "seed=0"], [*MARGIN, "seed=1"], ["loss=auc_pairwise", "seed=0"],
            ["loss=auc_pairwise", "seed=1", "trainer.pos_share=0.5"], ["loss=bce_logits", "seed=0"]]
    jobs = [(make_cfg(*TINY, *ov, "trainer.max_steps=30"), tmp_path / f"j{i}") for i, ov in enumerate(grid)]
    stacked = train.run_jobs(jobs)
    alone = train.run_jobs([(c, tmp_path / f"alone{i}") for i, (c, _) in enumerate(jobs)], stacked=False)
    assert [s.get("stack", {}).get("size", 1) for s in stacked] == [1, 1, 3, 3, 3]
    assert all(s["status"] == "completed" for s in stacked)
    for a, b in zip(alone, stacked, strict=True):
        for ha, hb in zip(a["history"], b["history"], strict=True):
            assert ha == pytest.approx(hb, abs=1e-4)
    assert set(stacked[0]["dual"]) == {"a", "b", "alpha"} and stacked[0]["dual"]["alpha"] >= 0
    tags = read_scalars(tmp_path / "j0", ["variables/a", "variables/b", "variables/alpha"])
    assert set(tags) == {"variables/a", "variables/b", "variables/alpha"} and len(tags["variables/alpha"]) == 3
    assert tb_tag("variables/a") == "variables/a" > "val"  # a group of its own, after val: TensorBoard opens train, val


@pytest.mark.parametrize("overrides", [[*MARGIN, "trainer.pos_share=0.5", "optim.decay_steps=[40]"],
                                       ["loss=auc_pairwise", "trainer.pos_share=0.3"]])
def test_an_interrupted_auc_run_resumes_bitwise(tmp_path, monkeypatch, overrides):
    ov = [*TINY, *overrides, "trainer.max_steps=70", "trainer.ckpt_every=20"]
    ref = run_cfg(tmp_path / "ref", *ov)
    observe = Monitor.observe

    def hooked(self, loss, z=None):  # SIGINT right after step 33 (mid-epoch: the sampler's order is in the checkpoint)
        out = observe(self, loss, z)
        if self.step_t == 33:
            signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(Monitor, "observe", hooked)
    first = run_cfg(tmp_path / "run", *ov)
    monkeypatch.undo()
    assert (first["status"], first["steps"]) == ("interrupted", 33)
    resumed = run_cfg(tmp_path / "run", *ov, "trainer.resume=true")
    for key in ("status", "steps", "final", "best", "history", "numerics", "per_class_recall"):
        assert resumed[key] == ref[key], key
    assert resumed.get("dual") == ref.get("dual")


# --- the study preset --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("study", ["auc", "auc_mnist"])
def test_every_method_of_the_study_composes_and_validates(study):
    from tests.test_studies import compose_cfg, sweep_params

    params = sweep_params(study)
    assert len(params["seed"]) == 5 and len(params["+auc_method"]) == 8
    for method in params["+auc_method"]:
        cfg = compose_cfg(f"experiment={study}", f"+auc_method={method}", "seed=3")
        validate(cfg)
        assert cfg.study.method == method
    ft = compose_cfg(f"experiment={study}", "+auc_method=auc_margin_ft", "seed=3")
    assert ft.model.init_from == f"outputs/studies/{study}/init/seed3"


def test_a_tiny_study_runs_and_is_reported(tmp_path):
    from lossbench.analysis import studies

    init = tmp_path / "init" / "seed0"
    run_cfg(init, "experiment=auc", "+auc_method=bce_logits", "trainer.max_steps=6", "trainer.eval_every=3",
            "data.n_train=512", "data.n_val=512", "model.hidden=[8]")
    results = []
    for method in ("bce_logits", "auc_margin_ft", "auc_pairwise"):
        for seed in (0,):
            results.append(run_cfg(tmp_path / "sweep" / f"{method}_{seed}", "experiment=auc", f"+auc_method={method}",
                                   f"seed={seed}", "trainer.max_steps=6", "trainer.eval_every=3", "data.n_train=512",
                                   "data.n_val=512", "model.hidden=[8]", f"study.init_dir={tmp_path / 'init'}"))
    assert [r["status"] for r in results] == ["completed"] * 3
    md = studies.write("auc", tmp_path / "sweep", tmp_path / "out")
    assert "auc_margin_ft" in md and "batches without a pair" in md
