"""TensorBoard logging: scalars, histograms, hparams in the run's own event file, a custom-scalars layout."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from lossbench.config import flatten

LAYOUT = {
    "train": {
        "loss": ["Multiline", ["train/loss", "val/loss"]],
        "nll": ["Multiline", ["val/nll"]],
        "throughput": ["Multiline", ["perf/samples_per_sec"]],
    },
    "val": {
        "ranking": ["Multiline", ["val/auc", "val/ap"]],
        "accuracy": ["Multiline", ["val/accuracy", "val/balanced_accuracy"]],
        "calibration": ["Multiline", ["val/ece", "val/mean_confidence"]],
    },
    "numerics": {
        "saturation": ["Multiline", ["numerics/saturated_frac", "numerics/clamped_frac", "numerics/dead_frac"]],
        "logits": ["Multiline", ["numerics/max_abs_logit"]],
        "gradients": ["Multiline", ["numerics/grad_norm", "numerics/max_grad_norm"]],
        "non-finite": ["Multiline", ["numerics/nonfinite_loss", "numerics/nonfinite_grad"]],
        "loss gap (reported - exact)": ["Multiline", ["numerics/loss_gap"]],
        "fp16 scaler": ["Multiline", ["amp/scale", "amp/skipped_steps"]],
    },
}

# Added to LAYOUT for data.task=multilabel runs (val/ap is the mAP there, val/accuracy the subset accuracy).
MULTILABEL_LAYOUT = {
    "multi-label": {
        "F1 at p > 0.5": ["Multiline", ["val/f1_micro", "val/f1_macro"]],
        "label ranking": ["Multiline", ["val/ap", "val/lrap", "val/auc", "val/auc_micro"]],
        "decisions at p > 0.5": ["Multiline", ["val/accuracy", "val/hamming_loss", "val/labels_per_sample"]],
    },
}


def hparam_values(params: dict) -> dict[str, int | float | str | bool]:
    """Dotted keys with TensorBoard-legal values (lists and None become strings)."""
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flatten(params).items()}


def _wait_to_sort_after(logdir: Path) -> None:
    """TensorBoard reads a run's event files in name order; a name starts with its creation second, then host,
    pid and an unpadded counter (...1795802457.vm.1788.10 sorts before ...1795802457.vm.1788.9). A writer
    opened in the same second as an earlier attempt's file waits for the next second (at most one), so that
    its events, purge included, are read after that attempt's."""
    seconds = [int(f.name.split(".")[3]) for f in logdir.glob("events.out.tfevents.*")
               if f.name.split(".")[3].isdigit()]
    while seconds and int(time.time()) <= max(seconds):
        time.sleep(0.05)


class Logger:
    """A SummaryWriter that may be disabled (logger.enabled=false), with the helpers a run needs."""

    def __init__(self, logdir: Path, enabled: bool = True, flush_secs: int = 30, purge_step: int | None = None):
        # purge_step (resume): TensorBoard hides events at steps >= purge_step that an earlier attempt wrote
        # after its last checkpoint, so a resumed run's curves continue without duplicates.
        if enabled and purge_step is not None:
            _wait_to_sort_after(Path(logdir))
        self.writer = SummaryWriter(str(logdir), flush_secs=flush_secs, purge_step=purge_step) if enabled else None
        self.step, self.tags = 0, set()  # last step and tags written by scalars(): hparams() goes after them

    def layout(self, multilabel: bool = False) -> None:
        if self.writer:
            self.writer.add_custom_scalars({**LAYOUT, **MULTILABEL_LAYOUT} if multilabel else LAYOUT)

    def scalars(self, values: dict[str, float], step: int) -> None:
        """All values as one event (one Summary with a value per tag, as TensorFlow's writers do): a dozen
        add_scalar calls cost a dozen events through the writer's queue, about 10x the time."""
        if self.writer:
            summary = Summary(value=[Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()])
            self.writer.file_writer.add_summary(summary, step)
            self.step, self.tags = max(self.step, step), self.tags | values.keys()

    def histograms(self, step: int, z: torch.Tensor, p: torch.Tensor) -> None:
        if self.writer:
            from lossbench.numerics import log_histograms

            log_histograms(self.writer, step, z, p)

    def pr_curve(self, labels: torch.Tensor, probs: torch.Tensor, step: int) -> None:
        if self.writer and bool(torch.isfinite(probs).all()):
            self.writer.add_pr_curve("val/pr_curve", labels.int(), probs.float().clamp(0, 1), step)

    def hparams(self, params: dict, metrics: dict[str, float]) -> None:
        """Hyperparameters + final metrics into this run's own event file (add_hparams would make a sub-run)."""
        if not self.writer:
            return
        metrics = {k: (v if math.isfinite(v) else float("nan")) for k, v in metrics.items()}
        exp, ssi, sei = hparams_summary(hparam_values(params), metrics)
        fw = self.writer.file_writer
        for s in (exp, ssi, sei):
            fw.add_summary(s)
        # The HPARAMS tab reads each metric's last value from the run's scalars: val/* curves already end at the
        # final evaluation; only the others (hparam/*) are added, at the last step (step 0 would draw every
        # curve back to the origin).
        for k, v in metrics.items():
            if k not in self.tags:
                self.writer.add_scalar(k, v, self.step)

    def flush(self) -> None:
        if self.writer:
            self.writer.flush()

    def close(self) -> None:
        if self.writer:
            self.writer.close()
