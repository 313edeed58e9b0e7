"""No host synchronisation inside a training step on CUDA: trainer.sync_debug=true runs each step (batch,
forward, backward, monitors, optimiser update) under torch.cuda.set_sync_debug_mode("error"); log, eval and
histogram points read from the device by design and are outside the check."""

from __future__ import annotations

import pytest
import torch

from lossbench.engine.numerics import Monitor
from lossbench.errors import ConfigError
from tests.conftest import run_cfg

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU: torch.cuda.set_sync_debug_mode only detects synchronisation with CUDA streams",
)

# 150 steps: the monitors' device buffer is reduced twice inside steps (every 64), detailed monitors run on
# every step, and log, eval and histogram points come between steps.
CHECKED = ["trainer.device=cuda", "trainer.sync_debug=true", "trainer.max_steps=150", "trainer.log_every=50",
           "trainer.eval_every=100", "numerics.every=1", "numerics.hist_every=50", "data.n_train=2000",
           "data.n_val=500"]


@pytest.mark.parametrize("overrides", [
    ["loss=bce_logits", "optim=adam"],
    ["loss=ce", "data.n_classes=10", "optim=adam"],
    ["loss=bce", "head=softmax", "data.n_classes=3", "optim=sgd"],
    ["loss=bce_logits", "trainer.precision=bf16", "optim=adamw"],
])
def test_training_steps_never_synchronise(tmp_path, overrides):
    s = run_cfg(tmp_path, *overrides, *CHECKED)
    assert s["status"] == "completed" and s["steps"] == 150
    assert s["numerics"]["steps"] == 150 and s["numerics"]["detail_steps"] == 150


def test_the_check_catches_a_sync_in_the_step(tmp_path, monkeypatch):
    observe = Monitor.observe

    def syncing(self, loss, z=None):
        loss.item()  # what a careless monitor would do
        return observe(self, loss, z)

    monkeypatch.setattr(Monitor, "observe", syncing)
    with pytest.raises(RuntimeError, match="synchroniz"):
        run_cfg(tmp_path, "loss=bce_logits", *CHECKED)
    assert torch.cuda.get_sync_debug_mode() == 0  # switched back off on the way out


def test_modes_that_sync_by_design_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="synchronise by design"):
        run_cfg(tmp_path, "trainer.on_nonfinite=skip", *CHECKED)
