"""lossbench.watch in a plain PyTorch loop (not lossbench's): the loss it returns, the events it writes, what
each monitor counts, the diagnoses (once each, none on healthy loops) and what it refuses."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import lossbench
from lossbench import losses
from lossbench.tools.watcher import STALL_DEAD, STALL_LOSS_CHANGE, STALL_SATURATED, WatchWarning, diagnose


def read_events(log_dir) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(log_dir), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def loop(criterion, steps: int = 60, bias: float = 0.0, scale: float = 1.0, head=torch.sigmoid, lr: float = 0.05,
         n_out: int = 1, seed: int = 0) -> nn.Module:
    """A user's own loop: an MLP on a separable 2-class task, SGD, criterion(head(model(x)), y)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.randn(512, 10, generator=gen) * scale
    y = (x[:, 0] + x[:, 1] > 0).float().unsqueeze(1)
    if n_out > 1:
        y = y[:, 0].long()
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, n_out))
    with torch.no_grad():
        model[2].bias.fill_(bias)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        i = torch.randint(0, 512, (64,), generator=gen)
        loss = criterion(head(model(x[i])), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_a_stalled_bce_loop_writes_watch_events_and_is_flagged_once(tmp_path):
    criterion = lossbench.watch(nn.BCELoss(), log_dir=tmp_path, every=20, detail_every=5)
    with pytest.warns(WatchWarning) as caught:
        loop(criterion, steps=100, bias=-100.0)  # every p is exactly 0: the positives sit at the clamp, dead
        r = criterion.report()
    criterion.close()
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and set(r.flags) == {"clamped", "stalled"}  # once each, over 5 windows
    stalled = r.flags["stalled"]
    assert "BCELoss stalled" in stalled and "BCEWithLogitsLoss" in stalled and "100% of the probabilities" in stalled
    assert "-100" in r.flags["clamped"]
    assert r.calls == 100 and r.window["numerics/saturated_frac"] == 1.0
    assert 0.3 < r.window["numerics/dead_frac"] == r.window["numerics/clamped_frac"] < 0.7  # the positives
    assert r.loss == pytest.approx(100 * r.window["numerics/dead_frac"], rel=0.05)  # each reports 100
    assert r.max_abs_logit is None and "loss_gap" not in r.means  # not measurable from probabilities
    events = read_events(tmp_path)
    assert {"train/loss", "watch/saturated_frac", "watch/clamped_frac", "watch/dead_frac", "watch/nonfinite_loss",
            "watch/nonfinite_grad"} <= events.keys()
    assert not {"watch/loss_gap", "watch/max_abs_logit", "watch/grad_norm"} & events.keys()
    assert sorted(events["watch/dead_frac"]) == [20, 40, 60, 80, 100]


@pytest.mark.parametrize("criterion, head, n_out", [
    (nn.BCEWithLogitsLoss(), lambda z: z, 1),
    (nn.BCELoss(), torch.sigmoid, 1),
    (nn.CrossEntropyLoss(), lambda z: z, 2),
    (nn.NLLLoss(), lambda z: torch.log_softmax(z, dim=1), 2),
])
def test_healthy_loops_are_not_flagged(tmp_path, criterion, head, n_out):
    watched = lossbench.watch(criterion, log_dir=tmp_path, every=20, detail_every=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", WatchWarning)
        loop(watched, steps=60, head=head, n_out=n_out)
        r = watched.report()
    assert r.flags == {} and r.nonfinite_loss == 0 and r.first_nonfinite_call is None
    assert r.means["dead_frac"] == 0 and r.means["clamped_frac"] == 0 and r.means["saturated_frac"] < 0.01
    assert r.loss < 0.6


def test_the_loss_and_gradient_are_the_criterions_own_with_its_options(tmp_path):
    gen = torch.Generator().manual_seed(1)
    z3, y3 = torch.randn(8, 3, generator=gen), torch.tensor([0, 2, 1, -100, 2, 0, 1, 1])
    z1, t1 = torch.randn(8, 4, generator=gen), torch.rand(8, 4, generator=gen)
    cases = [
        (nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5]), label_smoothing=0.1, ignore_index=-100), z3, y3),
        (nn.CrossEntropyLoss(reduction="none"), z3, y3.clamp(min=0)),
        (nn.NLLLoss(reduction="sum", ignore_index=1), torch.log_softmax(z3, 1), y3.clamp(min=0)),
        (nn.BCEWithLogitsLoss(pos_weight=torch.tensor([1.0, 2.0, 3.0, 4.0]), weight=torch.rand(4, generator=gen)),
         z1, t1),
        (nn.BCELoss(reduction="sum"), torch.sigmoid(z1), t1),
        (nn.KLDivLoss(reduction="batchmean", log_target=True), torch.log_softmax(z1, 1), torch.log_softmax(t1, 1)),
    ]
    for criterion, z, t in cases:
        watched = lossbench.watch(criterion, tensorboard=False, every=2, detail_every=1)
        for _ in range(3):  # crosses a log point
            a, b = z.clone().requires_grad_(), z.clone().requires_grad_()
            la, lb = watched(a, t), criterion(b, t)
            la.sum().backward()
            lb.sum().backward()
            assert torch.equal(la, lb) and torch.equal(a.grad, b.grad)
        assert watched.reduction == criterion.reduction  # the criterion's attributes pass through
        r = watched.report()
        assert r.calls == 3 and r.nonfinite_loss == 0
        if "loss_gap" in r.means:
            assert abs(r.means["loss_gap"]) < 1e-5  # float32 already: the same value


def test_what_each_monitor_counts_on_one_sampled_call():
    """p = sigmoid(z) for z = -200 (target 1: wrong, clamped, dead), 200 (target 1: right, saturated), 0.5
    (target 0: wrong but alive), -3 (target 0: right)."""
    z = torch.tensor([[-200.0], [200.0], [0.5], [-3.0]], requires_grad=True)
    t = torch.tensor([[1.0], [1.0], [0.0], [0.0]])
    watched = lossbench.watch(nn.BCELoss(), tensorboard=False, detail_every=1)
    watched(torch.sigmoid(z), t).backward()
    assert z.grad[0, 0] == 0 and z.grad[2, 0] != 0  # what the monitor's dead count stands for
    with pytest.warns(WatchWarning, match="clamp hit"):
        w = watched.report().window
    assert w["numerics/saturated_frac"] == 0.5 and w["numerics/clamped_frac"] == 0.25
    assert w["numerics/dead_frac"] == 0.25  # sample 0 only: wrong and no gradient through the sigmoid

    logits = lossbench.watch(nn.BCEWithLogitsLoss(), tensorboard=False, detail_every=1)
    zl = z.detach().clone().requires_grad_()
    logits(zl, t).backward()
    w = logits.report()
    assert w.window["numerics/dead_frac"] == 0 and w.window["numerics/clamped_frac"] == 0  # never dead
    assert w.max_abs_logit == 200 and w.window["numerics/saturated_frac"] == 0.5


def test_divergence_is_flagged_once_with_the_first_call(tmp_path):
    watched = lossbench.watch(nn.CrossEntropyLoss(), log_dir=tmp_path, every=5, detail_every=1)
    z, y = torch.randn(16, 3), torch.randint(0, 3, (16,))
    with pytest.warns(WatchWarning, match="diverged") as caught:
        for i in range(12):
            zi = (z if i < 7 else z * math.inf).requires_grad_()
            watched(zi, y).backward()
        r = watched.report()
    assert len(caught) == 1 and set(r.flags) == {"diverged"}
    assert r.first_nonfinite_call == 7 and r.nonfinite_loss == 5
    assert "call index 7" in r.flags["diverged"]


def test_lossbench_losses_are_watched_with_their_own_monitors():
    lc = OmegaConf.create({"name": "bce", "label_smoothing": 0.0, "reduction": "mean", "pos_weight": None,
                           "class_weight": None})
    objective = losses.build(lc, "sigmoid", 2, torch.tensor([10, 10]))
    watched = lossbench.watch(objective, tensorboard=False, detail_every=1)
    z = torch.tensor([[-200.0], [3.0]], requires_grad=True)
    y = torch.tensor([1, 1])
    watched(z, y).backward()
    with pytest.warns(WatchWarning, match="lossbench's bce's clamp hit"):
        r = watched.report()
    assert r.window["numerics/clamped_frac"] == 0.5 and r.window["numerics/dead_frac"] == 0.5
    assert r.means["loss_gap"] == pytest.approx(-50.0, abs=0.1)  # reported 100 for the first, true 200


def test_unsupported_criteria_and_bad_options_are_refused_in_one_line(tmp_path):
    for bad in (nn.MSELoss(), nn.functional.cross_entropy, lossbench.watch(nn.BCELoss(), tensorboard=False)):
        with pytest.raises(TypeError) as e:
            lossbench.watch(bad)
        assert "\n" not in str(e.value) and "nn.BCEWithLogitsLoss" in str(e.value)
    with pytest.raises(ValueError, match="every must be an integer >= 1"):
        lossbench.watch(nn.BCELoss(), every=0)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    with pytest.raises(ValueError, match="not both"):
        lossbench.watch(nn.BCELoss(), log_dir=tmp_path, writer=writer)
    writer.close()


def test_a_users_writer_stays_open_and_eval_calls_and_a_short_batch_are_handled(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    with lossbench.watch(nn.CrossEntropyLoss(), writer=writer, every=4, detail_every=2) as watched:
        for n in (8, 8, 8, 5, 8):  # a short batch among them
            z = torch.randn(n, 3, requires_grad=True)
            watched(z, torch.randint(0, 3, (n,))).backward()
            with torch.no_grad():  # validation: passed through, not recorded
                watched(torch.randn(4, 3), torch.randint(0, 3, (4,)))
    assert watched.report().calls == 5
    writer.add_scalar("mine", 1.0, 0)  # still open
    writer.close()
    assert sorted(read_events(tmp_path)["train/loss"]) == [4, 5]


def test_diagnose_thresholds():
    base = {"train/loss": 50.0, "numerics/saturated_frac": STALL_SATURATED, "numerics/dead_frac": STALL_DEAD,
            "numerics/clamped_frac": 0.0, "numerics/nonfinite_loss": 0.0, "numerics/nonfinite_grad": 0.0}
    assert diagnose(base, 50.0 * (1 + STALL_LOSS_CHANGE)) == ["stalled"]
    assert diagnose(base, None) == []  # the first window: no loss to compare with
    assert diagnose(base, 50.0 * (1 + 2 * STALL_LOSS_CHANGE)) == []  # still moving
    assert diagnose({**base, "numerics/dead_frac": STALL_DEAD / 2}, 50.0) == []
    assert diagnose({**base, "numerics/saturated_frac": 0.4}, 50.0) == []
    assert diagnose({**base, "numerics/clamped_frac": 0.01, "numerics/nonfinite_grad": 1.0}, None) == [
        "diverged", "clamped"]
    assert diagnose({"train/loss": 1.0, "numerics/nonfinite_loss": 0.0, "numerics/nonfinite_grad": 0.0}, 1.0) == []


def test_importing_lossbench_imports_neither_torch_nor_tensorboard():
    code = ("import sys, lossbench; assert 'torch' not in sys.modules and 'tensorboard' not in sys.modules; "
            "lossbench.watch; lossbench.check_setup; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "ok", r.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: sync debug mode watches CUDA streams")
def test_calls_between_log_points_never_synchronise_on_cuda():
    dev = torch.device("cuda")
    model = nn.Linear(10, 3).to(dev)
    for criterion, head in ((nn.BCELoss(), torch.sigmoid), (nn.CrossEntropyLoss(), lambda z: z)):
        watched = lossbench.watch(criterion, tensorboard=False, every=100, detail_every=2)
        x = torch.randn(64, 10, device=dev)
        y = torch.randint(0, 3, (64,), device=dev)
        t = y if isinstance(criterion, nn.CrossEntropyLoss) else nn.functional.one_hot(y, 3).float()
        watched(head(model(x)), t).backward()  # the first call builds the monitor
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(99):  # 64-step buffer reductions and 16-batch detail reductions included
                watched(head(model(x)), t).backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        r = watched.report()
        assert r.calls == 100 and r.nonfinite_loss == 0


def test_calls_between_log_points_read_nothing_on_the_host(monkeypatch):
    """A CPU stand-in for the CUDA check below: between log points no tensor is read into Python."""
    model = nn.Linear(10, 3)
    x, y = torch.randn(64, 10), torch.randint(0, 3, (64,))
    for criterion, head, t in ((nn.BCELoss(), torch.sigmoid, nn.functional.one_hot(y, 3).float()),
                               (nn.CrossEntropyLoss(), lambda z: z, y)):
        watched = lossbench.watch(criterion, tensorboard=False, every=100, detail_every=2)
        watched(head(model(x)), t).backward()  # the first call builds the monitor
        with monkeypatch.context() as m:
            for name in ("item", "tolist", "__bool__", "__float__", "__int__", "numpy"):
                m.setattr(torch.Tensor, name, lambda *a, _n=name, **k: pytest.fail(f"host read: Tensor.{_n}"))
            for _ in range(99):  # 64-call buffer reductions and 16-batch detail reductions included
                watched(head(model(x)), t).backward()
        assert watched.report().calls == 100


def test_a_reused_input_tensor_keeps_at_most_one_hook():
    z, y = torch.randn(8, 3, requires_grad=True), torch.randint(0, 3, (8,))
    watched = lossbench.watch(nn.CrossEntropyLoss(), tensorboard=False, every=5, detail_every=1)
    for _ in range(20):
        watched(z, y).backward()
    assert len(z._backward_hooks) == 1  # the last sampled call's, removed when read at the next call
    watched.report()
    assert len(z._backward_hooks) == 0
