"""Datasets as tensors: loaded once, moved to the training device once, batched by index.

Labels (``y_*``) are integer class indices (long) for every task; each loss turns them into what it needs.
A dataset may also carry the targets its loss trains on when they are not the labels (``t_*``: soft labels,
a teacher's logits); metrics always score against the labels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from lossbench import ConfigError, DataError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


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

    @property
    def train_targets(self) -> torch.Tensor:
        return self.y_train if self.t_train is None else self.t_train

    @property
    def val_targets(self) -> torch.Tensor:
        return self.y_val if self.t_val is None else self.t_val

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def class_counts(self) -> torch.Tensor:
        """Training-split count per class (CPU, long)."""
        return torch.bincount(self.y_train.cpu(), minlength=self.n_classes)

    def to(self, device: torch.device) -> Dataset:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Dataset(self.name, move(self.x_train), move(self.y_train), move(self.x_val), move(self.y_val),
                       self.n_classes, move(self.t_train), move(self.t_val))


def load(dc: DictConfig) -> Dataset:
    if dc.name in ("synthetic", "imbalanced"):
        return synthetic(dc)
    return mnist(dc)


def long_tail_counts(n_max: int, n_classes: int, ratio: float) -> list[int]:
    """Cao et al. (2019) profile: class c keeps n_max * ratio^(-c/(C-1)) samples."""
    return [int(round(n_max * ratio ** (-c / (n_classes - 1)))) for c in range(n_classes)]


def _split_counts(n: int, n_classes: int, ratio: float, split: str) -> list[int]:
    shares = torch.tensor([ratio ** (-c / (n_classes - 1)) for c in range(n_classes)], dtype=torch.float64)
    counts = torch.floor(n * shares / shares.sum()).long()
    counts[0] += n - int(counts.sum())  # rounding remainder to the majority class
    if (counts == 0).any():
        c = int((counts == 0).nonzero()[0])
        raise ConfigError(
            f"data.imbalance_ratio={ratio} with data.n_{split}={n} leaves class {c} with no {split} "
            f"samples (counts {counts.tolist()}). Raise data.n_{split} or lower data.imbalance_ratio."
        )
    return counts.tolist()


def synthetic(dc: DictConfig) -> Dataset:
    """Gaussian class clusters: x = (mu_y + noise) * scale, noise ~ N(0, I), |mu_a - mu_b| ≈ separation.

    The imbalance applies to both splits: it is the task's class prior (class 0 is the majority; for a
    binary task the positive class 1 is the rare one).
    """
    c, d = dc.n_classes, dc.n_features
    ratio = dc.imbalance_ratio or 1.0
    task_gen = torch.Generator().manual_seed(int(dc.task_seed))
    directions = torch.randn(c, d, generator=task_gen)
    means = directions / directions.norm(dim=1, keepdim=True) * (dc.separation / 2**0.5)
    gen = torch.Generator().manual_seed(int(dc.seed))

    def draw(n: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        counts = _split_counts(n, c, ratio, split)
        y = torch.cat([torch.full((k,), cls, dtype=torch.long) for cls, k in enumerate(counts)])
        y = y[torch.randperm(n, generator=gen)]
        x = (means[y] + torch.randn(n, d, generator=gen)) * dc.scale
        return x.float(), y

    x_train, y_train = draw(dc.n_train, "train")
    x_val, y_val = draw(dc.n_val, "val")
    return Dataset(dc.name, x_train, y_train, x_val, y_val, c)


def default_data_root() -> Path:
    env = os.environ.get("LOSSBENCH_DATA_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lossbench" / "data"


MNIST_FILES = {  # torchvision's layout under <root>/MNIST/raw: (images, labels, samples) per split
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}
MNIST_HOW = (
    "Provide the data with data.root=DIR or LOSSBENCH_DATA_DIR=DIR, where DIR/MNIST/raw holds "
    "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte "
    "(torchvision's layout), or run once with network access and data.download=true."
)


def _mnist_raw(root: Path, download: bool) -> Path:
    """<root>/MNIST/raw with all four files, downloading them (torchvision) if allowed; else a DataError
    that names the missing files."""
    from torchvision.datasets import MNIST

    raw = root / "MNIST" / "raw"
    names = [name for images, labels, _ in MNIST_FILES.values() for name in (images, labels)]
    missing = [name for name in names if not (raw / name).is_file()]
    if not missing:
        return raw
    if len(missing) < len(names):  # torchvision checks all four and would call the rest corrupt
        where = f"MNIST is incomplete: {raw} lacks {', '.join(missing)} (it has the other files)"
    else:
        where = f"MNIST not found: looked in {raw} for {', '.join(missing)}"
    if not download:
        raise DataError(f"{where} (data.download=false). {MNIST_HOW}")
    try:
        MNIST(str(root), train=True, download=True)
    except Exception as e:
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        raise DataError(f"{where}, and downloading it failed ({reason}). {MNIST_HOW}") from None
    return raw


def _read_idx(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """One MNIST IDX file through torchvision's reader, checked: its shape, and labels in 0..9."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    labels = len(shape) == 1
    fix = "Delete it and download it again (data.download=true), or replace it with the original file."
    try:
        x = read_label_file(str(path)) if labels else read_image_file(str(path))
    except Exception as e:  # torchvision's IDX reader raises on truncated or foreign files
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise DataError(f"{path} is corrupt or not an MNIST {'label' if labels else 'image'} file "
                        f"({type(e).__name__}: {reason}). {fix}") from None
    if tuple(x.shape) != shape:
        raise DataError(f"{path} has shape {tuple(x.shape)}, expected {shape}: truncated, or not MNIST's file. {fix}")
    if labels and (bad := x > 9).any():
        i = int(bad.nonzero()[0])
        raise DataError(f"{path} is corrupt: label {int(x[i])} at index {i} is not a digit 0..9 "
                        f"({int(bad.sum())} such labels). {fix}")
    return x


def _read_mnist(root: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    raw = _mnist_raw(root, download)
    images, labels, n = MNIST_FILES["train" if train else "t10k"]
    return _read_idx(raw / images, (n, 28, 28)), _read_idx(raw / labels, (n,)).long()


def mnist(dc: DictConfig) -> Dataset:
    root = Path(dc.root) if dc.root else default_data_root()
    x_train, y_train = _read_mnist(root, True, dc.download)
    x_val, y_val = _read_mnist(root, False, dc.download)
    gen = torch.Generator().manual_seed(int(dc.seed))

    if dc.n_train is not None and dc.n_train < len(y_train):
        keep = torch.randperm(len(y_train), generator=gen)[: dc.n_train]
        x_train, y_train = x_train[keep], y_train[keep]
    if dc.n_val is not None and dc.n_val < len(y_val):
        keep = torch.randperm(len(y_val), generator=torch.Generator().manual_seed(0))[: dc.n_val]
        x_val, y_val = x_val[keep], y_val[keep]

    n_classes = 10
    if dc.task == "binary":
        pos = [int(p) for p in dc.positive_classes]  # distinct labels in 0..9, not all ten (config.validate)
        y_train = torch.isin(y_train, torch.tensor(pos)).long()
        y_val = torch.isin(y_val, torch.tensor(pos)).long()
        n_classes = 2
        if dc.imbalance_ratio is not None:
            keep = _binary_ratio_subset(y_train, float(dc.imbalance_ratio), gen)
            x_train, y_train = x_train[keep], y_train[keep]
    elif dc.imbalance_ratio is not None:
        counts = torch.bincount(y_train, minlength=10)
        target = long_tail_counts(int(counts.min()), 10, float(dc.imbalance_ratio))
        if min(target) == 0:
            raise ConfigError(
                f"data.imbalance_ratio={dc.imbalance_ratio} leaves the rarest MNIST class with 0 training "
                f"samples (kept {target}). Lower the ratio or raise data.n_train."
            )
        keep = torch.cat(
            [(y_train == c).nonzero().squeeze(1)[torch.randperm(int(counts[c]), generator=gen)[:k]]
             for c, k in enumerate(target)]
        ).sort().values
        x_train, y_train = x_train[keep], y_train[keep]

    def prep(x: torch.Tensor) -> torch.Tensor:
        return ((x.float() / 255.0 - MNIST_MEAN) / MNIST_STD * dc.scale).unsqueeze(1)

    return Dataset("mnist", prep(x_train), y_train, prep(x_val), y_val, n_classes)


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
