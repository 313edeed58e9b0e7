"""Datasets as tensors: loaded once, moved to the training device once, batched by index.

Labels (``y_*``): integer class indices (long, (N,)) for single-label tasks (binary and multiclass); a
multi-hot float matrix (N, C) for ``data.task=multilabel`` (1 = label present). Each loss turns them into
what it needs. A dataset may also carry the targets its loss trains on when they are not the labels
(``t_*``: soft labels, a teacher's logits); metrics always score against the labels.

Three splits: train (fitted), validation (``*_val``: every choice is made on it: the early point, the learning rate,
any tuned knob) and test (``*_test``: reported, never used to choose). Synthetic data draws the test split
after the validation split from the same generator (same size and class profile as validation), so train and
validation are unchanged by it; MNIST halves its 10,000 test images into validation and test, stratified by digit,
fixed (``TEST_SPLIT_SEED``, the same for every run seed); the real sets keep or cut their own (lossbench/data/real.py).

Training-label options (training split only; validation and test labels stay clean and complete):
- ``data.label_noise`` e: each training label is replaced, with probability e, by a uniformly drawn *other*
  class (symmetric noise), per seed.
- ``data.soft_labels``: probability targets for ``loss=ce`` in ``t_train`` (N, C): ``noise_aware`` =
  (1 - e) on the observed label and e / (C - 1) on each other class (the posterior of the clean label given
  the observed one under symmetric noise at rate e = data.label_noise and a uniform prior); ``bayes``
  (synthetic only) = the exact class posterior p(y | x) of the generating Gaussians, per sample.
- ``data.unlabeled_frac`` f: round(f N) training samples (multi-label: round(f N C) (sample, label)
  entries), drawn per seed, get the label IGNORE_INDEX (-100, PyTorch's default ignore_index). Class
  counts, ``pos_weight=auto``, class weights and the prior bias use the labelled ones only.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from lossbench.data.base import (
    IGNORE_INDEX,
    Dataset,
    default_data_root,
    imbalance_subset,
    long_tail_counts,
    profile_shares,
)
from lossbench.errors import ConfigError, DataError

# the package's API: the loader, and the record and helpers it shares with lossbench/data/real.py
__all__ = ["Dataset", "IGNORE_INDEX", "default_data_root", "imbalance_subset", "long_tail_counts", "profile_shares", "load"]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
TEST_SPLIT_SEED = 20231  # MNIST's validation/test halves: fixed, independent of every run's seed


def load(dc: DictConfig) -> Dataset:
    from lossbench.config import REAL_DATASETS
    from lossbench.data import real

    multilabel = dc.get("task") == "multilabel"
    if dc.name in ("synthetic", "imbalanced", "longtail"):
        ds = synthetic_multilabel(dc) if multilabel else synthetic(dc)
    elif dc.name in REAL_DATASETS:
        ds = real.load(dc)
    else:
        ds = mnist_multilabel(dc) if multilabel else mnist(dc)
    return training_labels(ds, dc)


def _split_counts(n: int, n_classes: int, ratio: float, split: str, profile: str = "exp") -> list[int]:
    shares = torch.tensor(profile_shares(n_classes, ratio, profile), dtype=torch.float64)
    counts = torch.floor(n * shares / shares.sum()).long()
    counts[0] += n - int(counts.sum())  # rounding remainder to the majority class
    if (counts == 0).any():
        c = int((counts == 0).nonzero()[0])
        raise ConfigError(
            f"data.imbalance_ratio={ratio} with data.n_{split}={n} leaves class {c} with no {split} "
            f"samples (counts {counts.tolist()}). Raise data.n_{split} or lower data.imbalance_ratio."
        )
    return counts.tolist()


def class_means(dc: DictConfig) -> torch.Tensor:
    """The synthetic task's class means (C, d), fixed by data.task_seed (before data.scale)."""
    directions = torch.randn(dc.n_classes, dc.n_features, generator=torch.Generator().manual_seed(int(dc.task_seed)))
    return directions / directions.norm(dim=1, keepdim=True) * (dc.separation / 2**0.5)


def synthetic(dc: DictConfig) -> Dataset:
    """Gaussian class clusters: x = (mu_y + noise) * scale, noise ~ N(0, I), |mu_a - mu_b| ≈ separation.

    The imbalance (``imbalance_ratio``, ``imbalance_profile``) applies to every split: it is the task's class
    prior (class 0 is the majority; for a binary task the positive class 1 is the rare one). With
    ``balanced_val=true`` the validation and test splits keep every class equally instead, as long-tail
    benchmarks evaluate (the ``longtail`` preset). The test split (data.n_val samples, like validation) is drawn
    after the other two from the same generator: train and validation are what they were without it.
    """
    c, d = dc.n_classes, dc.n_features
    ratio = dc.imbalance_ratio or 1.0
    profile = dc.get("imbalance_profile", "exp")
    means = class_means(dc)
    gen = torch.Generator().manual_seed(int(dc.seed))

    def draw(n: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        balanced = split in ("val", "test") and dc.get("balanced_val", False)
        counts = _split_counts(n, c, 1.0 if balanced else ratio, split, profile)
        y = torch.cat([torch.full((k,), cls, dtype=torch.long) for cls, k in enumerate(counts)])
        y = y[torch.randperm(n, generator=gen)]
        x = (means[y] + torch.randn(n, d, generator=gen)) * dc.scale
        return x.float(), y

    x_train, y_train = draw(dc.n_train, "train")
    x_val, y_val = draw(dc.n_val, "val")
    x_test, y_test = draw(dc.n_val, "test")
    t_train = None
    if dc.get("soft_labels") == "bayes":  # the generating model's posterior p(y | x), per training sample
        prior = torch.tensor(_split_counts(dc.n_train, c, ratio, "train", profile), dtype=torch.float64).log()
        dist2 = torch.cdist(x_train.double() / dc.scale, means.double()).square()
        t_train = torch.softmax(prior - dist2 / 2, dim=1).float()
    return Dataset(dc.name, x_train, y_train, x_val, y_val, c, t_train=t_train, x_test=x_test, y_test=y_test)


MNIST_FILES = {  # torchvision's layout under <root>/MNIST/raw: (images, labels, samples) per split
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}
MNIST_HOW = (
    "Provide the data with data.root=DIR or LOSSBENCH_DATA_DIR=DIR, where DIR/MNIST/raw holds "
    "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte "
    "(torchvision's layout), or run once where the network reaches torchvision's mirrors (data.download=true, "
    "the default, fetches the files into the data root)."
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
        raise DataError(f"{where} (data.download=false: nothing was fetched). {MNIST_HOW}")
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


def mnist_val_test(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's 10,000 test images as two halves, (validation indices, test indices): stratified by digit and
    fixed by TEST_SPLIT_SEED, so every run, seed and task (multiclass, binary, multi-label) shares them."""
    from sklearn.model_selection import train_test_split

    val, test = train_test_split(np.arange(len(y)), test_size=0.5, random_state=TEST_SPLIT_SEED, stratify=y.numpy())
    return torch.from_numpy(np.sort(val)), torch.from_numpy(np.sort(test))


def mnist_pixels(x: torch.Tensor, scale: float) -> torch.Tensor:
    """uint8 images (N, 28, 28) -> normalised float32 (N, 1, 28, 28), times data.scale (in place: one copy)."""
    return x.float().div_(255.0).sub_(MNIST_MEAN).div_(MNIST_STD).mul_(scale).unsqueeze(1)


def _subset(n: int | None, size: int) -> torch.Tensor:
    """data.n_val of a held-out half: a random subset, the same for every seed (all of it for null)."""
    if n is None or n >= size:
        return torch.arange(size)
    return torch.randperm(size, generator=torch.Generator().manual_seed(0))[:n]


def mnist(dc: DictConfig) -> Dataset:
    """MNIST: training images from its training files (data.n_train, data.imbalance_ratio cut them per seed);
    validation and test = the two fixed halves of its test files (mnist_val_test), each cut to data.n_val."""
    root = Path(dc.root) if dc.root else default_data_root()
    x_train, y_train = _read_mnist(root, True, dc.download)
    x_held, y_held = _read_mnist(root, False, dc.download)
    val, test = mnist_val_test(y_held)
    val, test = val[_subset(dc.n_val, len(val))], test[_subset(dc.n_val, len(test))]
    x_val, y_val, x_test, y_test = x_held[val], y_held[val], x_held[test], y_held[test]
    gen = torch.Generator().manual_seed(int(dc.seed))

    if dc.n_train is not None and dc.n_train < len(y_train):
        keep = torch.randperm(len(y_train), generator=gen)[: dc.n_train]
        x_train, y_train = x_train[keep], y_train[keep]

    n_classes = 10
    if dc.task == "binary":
        pos = torch.tensor([int(p) for p in dc.positive_classes])  # distinct labels in 0..9, not all ten (config.validate)
        y_train, y_val, y_test = (torch.isin(y, pos).long() for y in (y_train, y_val, y_test))
        n_classes = 2
    if dc.imbalance_ratio is not None:
        keep = imbalance_subset(y_train, n_classes, float(dc.imbalance_ratio), dc.get("imbalance_profile", "exp"),
                                gen, binary=dc.task == "binary", what="MNIST")
        x_train, y_train = x_train[keep], y_train[keep]

    return Dataset("mnist", mnist_pixels(x_train, dc.scale), y_train, mnist_pixels(x_val, dc.scale), y_val, n_classes,
                   x_test=mnist_pixels(x_test, dc.scale), y_test=y_test)


# --- training-label options: noise, soft labels, unlabelled samples -----------------------------------------


def _rng(seed: int, purpose: str) -> np.random.Generator:
    """A generator of its own for each purpose, so that adding an option never changes the samples drawn."""
    return np.random.default_rng([int(seed) % 2**64, *purpose.encode()])


def training_labels(ds: Dataset, dc: DictConfig) -> Dataset:
    """Apply data.label_noise, data.soft_labels=noise_aware and data.unlabeled_frac to the training split."""
    seed = int(dc.seed)
    y, t, info = ds.y_train.clone(), ds.t_train, dict(ds.info)
    noise = float(dc.get("label_noise") or 0.0)
    if noise > 0:
        rng = _rng(seed, "label_noise")
        flip = torch.from_numpy(rng.random(len(y)) < noise)
        shift = torch.from_numpy(rng.integers(1, ds.n_classes, len(y)))  # to a uniformly drawn other class
        y = torch.where(flip, (y + shift) % ds.n_classes, y)
        info["train_labels_flipped"] = int(flip.sum())
    if dc.get("soft_labels") == "noise_aware":
        onehot = torch.nn.functional.one_hot(y, ds.n_classes).float()
        t = onehot * (1 - noise) + (1 - onehot) * noise / (ds.n_classes - 1)
    frac = float(dc.get("unlabeled_frac") or 0.0)
    if frac > 0:
        flat = y.view(-1)  # a sample (single-label) or a (sample, label) entry (multi-label)
        k = int(round(frac * flat.numel()))
        hide = torch.from_numpy(_rng(seed, "unlabeled").permutation(flat.numel())[:k])
        flat[hide] = IGNORE_INDEX
        info["train_unlabeled"] = k
    if ds.multilabel:
        info.update(label_statistics(y, ds.y_val))
    return replace(ds, y_train=y, t_train=t, info=info)


def label_statistics(y_train: torch.Tensor, y_val: torch.Tensor) -> dict:
    """Multi-label: each label's frequency per split, the mean number of labels per sample, and the validation
    labels with no positive sample (undefined AUC/AP, skipped in macro averages) or no negative one."""
    labelled = (y_train != IGNORE_INDEX).sum(dim=0).clamp(min=1)
    freq_train = (y_train == 1).sum(dim=0) / labelled  # among the labelled entries (data.unlabeled_frac)
    pos_val = (y_val == 1).sum(dim=0)
    freq_val = pos_val / len(y_val)
    return {
        "train_label_frequency": [round(v, 5) for v in freq_train.tolist()],
        "val_label_frequency": [round(v, 5) for v in freq_val.tolist()],
        "train_labels_per_sample": round(float(freq_train.sum()), 5),
        "val_labels_per_sample": round(float(freq_val.sum()), 5),
        "val_labels_without_positives": int((pos_val == 0).sum()),
        "val_labels_without_negatives": int((pos_val == len(y_val)).sum()),
    }


# --- multi-label tasks -------------------------------------------------------------------------------------


def synthetic_multilabel(dc: DictConfig) -> Dataset:
    """scikit-learn's ``make_multilabel_classification`` process: a sample draws Poisson(n_labels) labels
    (rejected above C; and 0 if not allow_unlabeled) with probabilities P(c), then Poisson(length) words
    (rejected at 0) from the equal mixture of its labels' word distributions P(w | c) (a sample without
    labels: uniform noise words); its features are the word counts, standardised with the training split's
    mean and standard deviation, times data.scale.

    P(c) and P(w | c) are scikit-learn's, from ``random_state=data.task_seed``; the samples are drawn here,
    by the same procedure, from the run's seed. Why not scikit-learn's samples: it draws the task and the
    samples from one random stream, so each seed would be a different task; lossbench's synthetic tasks stay
    fixed (task_seed) while seeds vary the samples. tests/test_multilabel.py checks the two agree in
    distribution.
    """
    from sklearn.datasets import make_multilabel_classification

    c, d = int(dc.n_classes), int(dc.n_features)
    n_labels, length, allow_unlabeled = int(dc.n_labels), int(dc.length), bool(dc.allow_unlabeled)
    _, _, p_c, p_w_c = make_multilabel_classification(
        n_samples=1, n_features=d, n_classes=c, n_labels=n_labels, length=length,
        allow_unlabeled=allow_unlabeled, return_distributions=True, random_state=int(dc.task_seed))
    rng = _rng(int(dc.seed), "synthetic_multilabel")
    x_train, y_train = _documents(rng, int(dc.n_train), p_c, p_w_c, n_labels, length, allow_unlabeled)
    x_val, y_val = _documents(rng, int(dc.n_val), p_c, p_w_c, n_labels, length, allow_unlabeled)
    x_test, y_test = _documents(rng, int(dc.n_val), p_c, p_w_c, n_labels, length, allow_unlabeled)  # after val: unchanged
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[std == 0] = 1.0
    prep = lambda x: torch.from_numpy((x - mean) / std * float(dc.scale)).float()  # noqa: E731
    return Dataset(dc.name, prep(x_train), torch.from_numpy(y_train), prep(x_val), torch.from_numpy(y_val), c,
                   task="multilabel", x_test=prep(x_test), y_test=torch.from_numpy(y_test))


MAX_ROUNDS = 10_000  # rounds of rejection sampling for all of a split's samples together


def _documents(rng: np.random.Generator, n: int, p_c: np.ndarray, p_w_c: np.ndarray, n_labels: int,
               length: int, allow_unlabeled: bool) -> tuple[np.ndarray, np.ndarray]:
    """n samples of make_multilabel_classification's process (vectorised): word counts (n, d), multi-hot (n, C)."""
    d, c = p_w_c.shape
    size = np.full(n, c + 1)
    # Rejection sampling, as scikit-learn's; config.validate keeps each round's acceptance probability high
    # (n_labels <= n_classes), and the rounds are bounded all the same: nothing loops without end.
    rounds = iter(range(MAX_ROUNDS))
    while (bad := (size > c) | ((size == 0) & (not allow_unlabeled))).any() and next(rounds, None) is not None:
        size[bad] = rng.poisson(n_labels, int(bad.sum()))
    y = np.zeros((n, c), dtype=np.float32)
    cum = np.cumsum(p_c)
    while (missing := size - y.sum(axis=1).astype(int)).any() and next(rounds, None) is not None:
        rows = np.repeat(np.arange(n), missing)  # as scikit-learn: draw the missing labels i.i.d. from P(c),
        y[rows, np.minimum(np.searchsorted(cum, rng.random(len(rows))), c - 1)] = 1  # keep the new ones, repeat
    n_words = np.zeros(n, dtype=int)
    while (empty := n_words == 0).any() and next(rounds, None) is not None:
        n_words[empty] = rng.poisson(length, int(empty.sum()))
    if bad.any() or missing.any() or empty.any():
        raise DataError(f"data.n_labels={n_labels} with data.n_classes={c} and data.length={length}: the samples' "
                        f"label sets could not be drawn in {MAX_ROUNDS} rounds of rejection sampling. Lower "
                        "data.n_labels or raise data.n_classes.")
    mix = y @ p_w_c.T  # (n, d): the sum of the labels' word distributions, normalised below
    mix[size == 0] = 1.0  # no label: uniform noise words
    mix /= mix.sum(axis=1, keepdims=True)
    return rng.multinomial(n_words, mix).astype(np.float64), y


def mnist_multilabel(dc: DictConfig) -> Dataset:
    """Multi-label MNIST: each image is a grid of data.grid x data.grid cells of 28x28 pixels holding
    data.digits_per_image = [lo, hi] real MNIST digits (a uniform number of them, in distinct random cells,
    each drawn uniformly from the split, the rest blank); its labels are the set of digits present (10
    labels; a digit shown twice is one label). Training images come from MNIST's training files and are drawn
    from the run's seed; validation images from the validation half of its test files and test images from
    the test half (mnist_val_test), the same for every seed. data.n_train / n_val: how many images (null =
    60000 / 10000; n_val for validation and for test)."""
    root = Path(dc.root) if dc.root else default_data_root()
    x_train, y_train = _read_mnist(root, True, dc.download)
    x_held, y_held = _read_mnist(root, False, dc.download)
    val, test = mnist_val_test(y_held)
    lo, hi = (int(v) for v in dc.digits_per_image)
    grid = int(dc.grid)

    xt, yt = _compose(x_train, y_train, dc.n_train or 60000, lo, hi, grid, _rng(int(dc.seed), "mnist_multilabel"))
    xv, yv = _compose(x_held[val], y_held[val], dc.n_val or 10000, lo, hi, grid, _rng(0, "mnist_multilabel_val"))
    xs, ys = _compose(x_held[test], y_held[test], dc.n_val or 10000, lo, hi, grid, _rng(0, "mnist_multilabel_test"))
    pix = lambda x: mnist_pixels(x, dc.scale)  # noqa: E731
    return Dataset("mnist", pix(xt), yt, pix(xv), yv, 10, task="multilabel", x_test=pix(xs), y_test=ys)


def _compose(x: torch.Tensor, y: torch.Tensor, n: int, lo: int, hi: int, grid: int,
             rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n grid images (uint8, (n, 28 grid, 28 grid)) and their multi-hot digit labels (n, 10)."""
    k = torch.from_numpy(rng.integers(lo, hi + 1, n))
    cells = torch.from_numpy(np.argsort(rng.random((n, grid * grid)), axis=1)[:, :hi])  # distinct cells
    digits = torch.from_numpy(rng.integers(0, len(y), (n, hi)))
    canvas = torch.zeros(n, grid, grid, 28, 28, dtype=torch.uint8)
    labels = torch.zeros(n, 10)
    rows = torch.arange(n)
    for j in range(hi):
        shown = k > j
        r, cell, idx = rows[shown], cells[shown, j], digits[shown, j]
        canvas[r, cell // grid, cell % grid] = x[idx]
        labels[r, y[idx]] = 1.0
    return canvas.permute(0, 1, 3, 2, 4).reshape(n, 28 * grid, 28 * grid), labels


# --- trainer.pos_share: a set share of positives in every batch (LibAUC's DualSampler) ----------------------------


def _cycled(idx: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """n indices drawn from idx without replacement, shuffled; idx is reshuffled and drawn again when n > len(idx)."""
    reps = -(-n // len(idx))  # ceil, on the host: the sizes are known
    return torch.cat([idx[torch.randperm(len(idx), device=idx.device, generator=gen)] for _ in range(reps)])[:n]


def share_order(pos: torch.Tensor, neg: torch.Tensor, n_pos: int, steps: int, bs: int,
                gen: torch.Generator) -> torch.Tensor:
    """One epoch's order of training indices, (steps * bs,), for ``trainer.pos_share``: batch i (positions
    [i bs, (i + 1) bs)) holds n_pos positives, then bs - n_pos negatives, each class drawn without replacement
    and cycled when it runs out (the minority class is oversampled, as LibAUC's DualSampler does). An epoch keeps
    its usual length (n_train // bs steps). On the device of pos/neg, from the run's generator: no host sync,
    reproducible under the seed, resumed from the checkpoint's generator state and order."""
    p = _cycled(pos, steps * n_pos, gen).view(steps, n_pos)
    n = _cycled(neg, steps * (bs - n_pos), gen).view(steps, bs - n_pos)
    return torch.cat([p, n], dim=1).flatten()


def shift_images(x: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """data.jitter: each image of x (B, C, H, W) shifted by its own (dy, dx), each drawn uniformly from
    -n..n pixels, the edge pixels repeated into the gap (MNIST's background: any normalisation keeps it).
    On x's device from gen, by index arithmetic on the padded batch: no host sync, one draw of 2B integers."""
    b, _, h, w = x.shape
    d = torch.randint(0, 2 * n + 1, (2, b, 1), device=x.device, generator=gen)  # offsets into the padded image
    padded = torch.nn.functional.pad(x, (n, n, n, n), mode="replicate")
    rows = d[0] + torch.arange(h, device=x.device)  # (B, H): output row i reads padded row i + dy + n
    cols = d[1] + torch.arange(w, device=x.device)  # (B, W)
    picked = padded[torch.arange(b, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return picked.permute(0, 3, 1, 2)  # the advanced indices' (B, H, W) come first, then C
