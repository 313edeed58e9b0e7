"""A run that diverges is a result, for every loss and head: an exploding learning rate ends 'diverged' at the
log point after its first non-finite step, with its summary and events written, exit code 0, alone or in a
stack. New losses are covered by being registered (lossbench.losses.registry)."""

from __future__ import annotations

import pytest

from lossbench import store
from lossbench.engine import train
from lossbench.losses import registry
from tests.conftest import cli, loss_overrides, make_cfg, run_cfg

TINY = ["trainer.threads=1", "model.hidden=[16]", "data.n_train=300", "data.n_val=100", "trainer.max_steps=60",
        "trainer.log_every=10", "trainer.eval_every=30", "logger.flush_secs=1"]
# Overrides a loss needs to run at all (a task it is made for); losses not listed run on the default data.
NEEDS: dict[str, list[str]] = {
    # LDAM's default cosine output layer bounds the logits to [-1, 1]: with lr 1e30 the weights reach ~1e31, the
    # norm of the last hidden layer overflows, F.normalize returns 0 and the loss stays finite (the run ends at
    # chance, 'completed'; tests/test_long_tail.py). On a plain linear head it diverges like every other loss.
    "ldam": ["model.cosine_head=false"],
}
BINARY_ONLY = {s.name for s in registry.specs() if s.binary_only}  # the stack test's 3-class task is binary for these
PAIRS = sorted(registry.valid_pairs())


def overrides(head: str, loss: str, request: pytest.FixtureRequest, *data: str) -> list[str]:
    """The pair, what its loss needs (NEEDS; a teacher for the distillation losses) and the data overrides."""
    return [f"loss={loss}", f"head={head}", *NEEDS.get(loss, []), *loss_overrides(loss, request, *data), *data]


@pytest.mark.parametrize(("head", "loss"), PAIRS)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_an_exploding_learning_rate_ends_diverged(tmp_path, head, loss, precision, request):
    s = run_cfg(tmp_path, *TINY, *overrides(head, loss, request), "optim.lr=1e30", f"trainer.precision={precision}")
    first = s["numerics"]["first_nonfinite_step"]
    assert s["status"] == "diverged" and s["exit_code"] == 0
    assert first is not None and first < s["steps"] <= first + 10  # ended at the next log point
    assert store.read_json(tmp_path / store.SUMMARY)["status"] == "diverged"
    assert any(tmp_path.rglob("events.out.tfevents.*"))


def test_every_loss_diverges_as_a_result_in_one_stack(tmp_path, request):
    """The same, all pairs in one stack (those that share an output shape): each member ends diverged, and a
    benign member alongside them completes."""
    n = lambda lo: "data.n_classes=2" if lo in BINARY_ONLY else "data.n_classes=3"  # noqa: E731
    jobs = [(make_cfg(*TINY, *overrides(h, lo, request, n(lo)), "optim.lr=1e30"), tmp_path / f"{h}_{lo}")
            for h, lo in PAIRS]
    jobs.append((make_cfg(*TINY, "loss=ce", "data.n_classes=3"), tmp_path / "benign"))
    results = train.run_jobs(jobs)
    assert [r["status"] for r in results] == ["diverged"] * len(PAIRS) + ["completed"]
    assert max(r.get("stack", {}).get("size", 1) for r in results) > 1


def test_the_issue_example_exits_0_diverged(tmp_path):
    r = cli("loss=bce", "optim.lr=1e30", "trainer.max_steps=100", "trainer.precision=bf16", *TINY[1:4],
            f"hydra.run.dir={tmp_path}")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "lossbench: diverged" in r.stdout
