"""What every dataset is made of: the `Dataset` record (splits on the device, targets beside labels), where
data lives (`default_data_root`), and the class-imbalance cut of a training split (`imbalance_subset`), shared
by the built-in sets (lossbench/data/__init__.py) and the real ones (lossbench/data/real.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch

from lossbench.errors import ConfigError

IGNORE_INDEX = -100  # what data.unlabeled_frac writes; PyTorch's default ignore_index


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    n_classes: int
    t_train: torch.Tensor | None = None  # what the loss sees, if not y_train (soft targets, teacher logits)
    t_val: torch.Tensor | None = None
    task: str = "multiclass"  # multiclass (binary included) | multilabel
    info: dict = field(default_factory=dict)  # label statistics for summary.json's "data" section
    # A held-out test split (the real-data sets, lossbench/data/real.py), loaded and checked but not evaluated yet:
    # validation is what training evaluates and selects on. Kept on the CPU until something reports it.
    # The held-out test split: evaluated at the same points as validation and reported, never chosen on. None
    # where a dataset has none (data=arrays with test_frac=0 and no test arrays).
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    t_test: torch.Tensor | None = None

    @property
    def train_targets(self) -> torch.Tensor:
        return self.y_train if self.t_train is None else self.t_train

    @property
    def val_targets(self) -> torch.Tensor:
        return self.y_val if self.t_val is None else self.t_val

    @property
    def test_targets(self) -> torch.Tensor | None:
        return self.y_test if self.t_test is None else self.t_test

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"

    def class_counts(self) -> torch.Tensor:
        """Training-split count per class (CPU, long), labelled samples only; multi-label: positives per label."""
        y = self.y_train.cpu()
        if self.multilabel:
            return (y == 1).sum(dim=0)
        return torch.bincount(y[y != IGNORE_INDEX], minlength=self.n_classes)

    def n_labelled(self) -> torch.Tensor:
        """Labelled training samples (0-d), or for multi-label the labelled entries per label ((C,)); with the
        class counts this gives each output's positives and negatives (pos_weight=auto, the prior bias)."""
        labelled = self.y_train.cpu() != IGNORE_INDEX
        return labelled.sum(dim=0) if self.multilabel else labelled.sum()

    def partial(self) -> bool:
        """Are some training labels IGNORE_INDEX (data.unlabeled_frac)?"""
        return bool((self.y_train == IGNORE_INDEX).any())

    def same_as(self, other: Dataset) -> bool:
        """Equal content (every tensor, label and statistic): two data configs that load the same data, e.g.
        the full MNIST under two seeds, so that a stack holds it once."""
        def alike(a: object, b: object) -> bool:  # cheap checks first: most candidates fail here
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
                return (a.shape, a.dtype, a.device) == (b.shape, b.dtype, b.device)
            return not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor) and a == b
        pairs = [(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)]
        return all(alike(a, b) for a, b in pairs) and all(
            torch.equal(a, b) for a, b in pairs if isinstance(a, torch.Tensor))

    def to(self, device: torch.device) -> Dataset:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, x_train=move(self.x_train), y_train=move(self.y_train), x_val=move(self.x_val),
                       y_val=move(self.y_val), t_train=move(self.t_train), t_val=move(self.t_val),
                       x_test=move(self.x_test), y_test=move(self.y_test), t_test=move(self.t_test))


def profile_shares(n_classes: int, ratio: float, profile: str = "exp") -> list[float]:
    """Each class's size relative to the largest (class 0), Cao et al. (2019)'s two long-tail profiles:
    exp: class c keeps ratio^(-c/(C-1)); step: the first C - C//2 classes keep 1, the last C//2 keep 1/ratio."""
    if profile == "step":
        return [1.0 if c < n_classes - n_classes // 2 else 1.0 / ratio for c in range(n_classes)]
    return [ratio ** (-c / (n_classes - 1)) for c in range(n_classes)]


def long_tail_counts(n_max: int, n_classes: int, ratio: float, profile: str = "exp") -> list[int]:
    """Samples kept per class when the largest keeps n_max (see profile_shares)."""
    return [int(round(n_max * share)) for share in profile_shares(n_classes, ratio, profile)]


def default_data_root() -> Path:
    env = os.environ.get("LOSSBENCH_DATA_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lossbench" / "data"


def imbalance_subset(y: torch.Tensor, n_classes: int, ratio: float, profile: str, gen: torch.Generator,
                     binary: bool, what: str) -> torch.Tensor:
    """The training indices data.imbalance_ratio keeps (sorted), for any class-index dataset.

    binary: negatives : positives = ratio, subsampling whichever side is in excess. Otherwise every class is first
    cut to the rarest class's count n_min, then class c keeps n_min * ratio^(-c/(C-1)) (profile exp) or the step
    profile's share (profile_shares): class 0 is the head, the last class the tail.
    """
    if binary:
        return _binary_ratio_subset(y, ratio, gen)
    counts = torch.bincount(y, minlength=n_classes)
    target = long_tail_counts(int(counts.min()), n_classes, ratio, profile)
    if min(target) == 0:
        raise ConfigError(
            f"data.imbalance_ratio={ratio:g} leaves the rarest {what} class with 0 training samples (kept {target}). "
            "Lower the ratio or raise data.n_train."
        )
    return torch.cat(
        [(y == c).nonzero().squeeze(1)[torch.randperm(int(counts[c]), generator=gen)[:k]] for c, k in enumerate(target)]
    ).sort().values


def _binary_ratio_subset(y: torch.Tensor, ratio: float, gen: torch.Generator) -> torch.Tensor:
    """Indices keeping negatives : positives = ratio (subsampling whichever side is in excess)."""
    pos, neg = (y == 1).nonzero().squeeze(1), (y == 0).nonzero().squeeze(1)
    n_pos = min(len(pos), int(round(len(neg) / ratio)))
    n_neg = min(len(neg), int(round(n_pos * ratio)))
    if n_pos == 0:
        raise ConfigError(
            f"data.imbalance_ratio={ratio} leaves no positive training samples ({len(neg)} negatives). "
            "Lower the ratio or raise data.n_train."
        )
    pos = pos[torch.randperm(len(pos), generator=gen)[:n_pos]]
    neg = neg[torch.randperm(len(neg), generator=gen)[:n_neg]]
    return torch.cat([pos, neg]).sort().values
