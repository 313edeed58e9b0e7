"""Real data: a user's own arrays, OpenML, and the real benchmark sets that install with a package.

- ``data=arrays data.path=FILE``: ``.npz`` (``x_train``, ``y_train``, optional ``x_val``/``y_val``,
  ``x_test``/``y_test``), ``.pt`` (a dict of tensors with those keys, read with ``torch.load(weights_only=True)``),
  ``.csv`` or ``.parquet`` (one row per sample, numeric columns; ``data.label`` names the label column, or a list
  of columns for a multi-label task).
- ``data=openml data.dataset=NAME`` (or ``data.id=N``): scikit-learn's ``fetch_openml``, cached under the data
  root (``data.root`` or ``$LOSSBENCH_DATA_DIR``), so a machine without network uses what one with network fetched.
- ``data=breast_cancer|digits`` (scikit-learn's bundled files), ``data=yeast|shuttle`` (river's bundled files).

Every source gives raw arrays (`Raw`); `prepare` checks them, infers the task, makes the missing splits from the
training split, applies data.n_train / data.imbalance_ratio (training split, per seed) and standardises every split
with the training split's statistics. A file that cannot be used is one DataError line naming it and the problem.
Files are never unpickled: ``np.load(allow_pickle=False)``, ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig

from lossbench.data.base import Dataset, default_data_root, imbalance_subset
from lossbench.errors import DataError

SPLITS = ("train", "val", "test")
FORMATS = (".npz", ".csv", ".csv.gz", ".parquet", ".pt")
ARRAY_KEYS = "x_train and y_train, and optionally x_val, y_val, x_test, y_test"


@dataclass
class Raw:
    """A source's arrays before any processing: split -> features (N, ...) and labels ((N,) class indices or
    (N, C) 0/1 multi-hot), with what error messages and summary.json call it."""

    where: str  # the file or dataset, as messages name it
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    source: dict = field(default_factory=dict)  # provenance: source, reference, licence, ...
    label_names: list[str] | None = None


def load(dc: DictConfig) -> Dataset:
    """The data config's dataset, checked and prepared (see the module's docstring)."""
    return prepare(READERS[dc.name](dc), dc)


# --- the user's own files ------------------------------------------------------------------------------------


def _fail(where: str, problem: str) -> DataError:
    return DataError(f"{where}: {problem}")


def read_file(path: Path, label: object = "label") -> Raw:
    """A user's file by its suffix (.npz, .pt, .csv, .csv.gz, .parquet)."""
    where = str(path)
    if not path.is_file():
        raise _fail(where, "no such file" if not path.exists() else "not a file")
    name = path.name.lower()
    if name.endswith(".npz"):
        return _read_npz(path)
    if name.endswith(".pt") or name.endswith(".pth"):
        return _read_pt(path)
    if name.endswith((".csv", ".csv.gz")):
        return _read_csv(path, _label_columns(label, where))
    if name.endswith(".parquet"):
        return _read_parquet(path, _label_columns(label, where))
    raise _fail(where, f"unknown file type. Valid: {', '.join(FORMATS)}")


def _label_columns(label: object, where: str) -> list[str]:
    if isinstance(label, str):
        return [label]
    if isinstance(label, (list, tuple, ListConfig)) and label and all(isinstance(c, str) for c in label):
        return [str(c) for c in label]
    raise _fail(where, "a table needs data.label: the label column's name, or a list of them for a multi-label "
                       "task, e.g. data.label=target or data.label=[a,b,c]")


def _split_arrays(where: str, arrays: dict, to_numpy) -> Raw:
    """{x_train, y_train, x_val, ...} -> Raw; a split needs both its x and its y."""
    if "x_train" not in arrays or "y_train" not in arrays:
        missing = [k for k in ("x_train", "y_train") if k not in arrays]
        raise _fail(where, f"has no {' or '.join(missing)} (it has: {', '.join(sorted(arrays)) or 'nothing'}). "
                           f"It needs {ARRAY_KEYS}")
    x, y = {}, {}
    for split in SPLITS:
        kx, ky = f"x_{split}", f"y_{split}"
        if (kx in arrays) != (ky in arrays):
            raise _fail(where, f"has {kx if kx in arrays else ky} but not {ky if kx in arrays else kx}: a split "
                               "needs both its features and its labels")
        if kx in arrays:
            x[split], y[split] = to_numpy(kx, arrays[kx]), to_numpy(ky, arrays[ky])
    return Raw(where, x, y, {"source": f"the user's file {where}"})


def _read_npz(path: Path) -> Raw:
    where = str(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except ValueError as e:  # numpy's words for a pickle: "Cannot load file containing pickled data ..."
        if "pickle" in str(e):
            raise _fail(where, "is a pickle, which lossbench never unpickles (np.load(allow_pickle=False)). Save "
                               "numeric arrays with np.savez") from None
        raise _fail(where, f"unreadable as .npz ({_reason(e)})") from None
    except Exception as e:  # truncated zip, not a numpy file, permissions
        raise _fail(where, f"unreadable as .npz ({_reason(e)})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise _fail(where, f"is a single .npy array, not an .npz archive of named arrays ({ARRAY_KEYS})")

    def to_numpy(key: str, _: object) -> np.ndarray:
        try:
            return npz[key]
        except ValueError as e:
            if "pickle" in str(e) or "Object arrays" in str(e):
                raise _fail(where, f"array {key} holds Python objects (a pickle), which lossbench never unpickles "
                                   "(np.load(allow_pickle=False)). Save numeric arrays") from None
            raise _fail(where, f"array {key} is unreadable ({_reason(e)})") from None
        except Exception as e:
            raise _fail(where, f"array {key} is unreadable ({_reason(e)})") from None

    with npz:
        return _split_arrays(where, dict.fromkeys(npz.files), to_numpy)


def _read_pt(path: Path) -> Raw:
    where = str(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if "weights_only" in str(e) or "Unpickl" in type(e).__name__:
            raise _fail(where, "holds objects other than tensors, which lossbench never unpickles (torch.load("
                               "weights_only=True) refused them). Save a dict of tensors: torch.save({'x_train': x, "
                               "'y_train': y}, FILE)") from None
        raise _fail(where, f"unreadable as a torch file ({_reason(e)})") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise _fail(where, f"holds a {type(obj).__name__}, not a dict of tensors ({ARRAY_KEYS})")

    def to_numpy(key: str, value: object) -> np.ndarray:
        if not isinstance(value, torch.Tensor):
            raise _fail(where, f"{key} is a {type(value).__name__}, not a tensor")
        return value.detach().cpu().numpy()

    return _split_arrays(where, obj, to_numpy)


def _table(where: str, names: list[str], columns: list[np.ndarray], label: list[str]) -> Raw:
    """Columns of a table (strings from a CSV, typed from parquet) -> features and labels, all numeric."""
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise _fail(where, f"has two columns named {dup!r}")
    missing = [c for c in label if c not in names]
    if missing:
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        raise _fail(where, f"has no column {missing[0]!r} (data.label). Its columns: {shown}")
    if len(label) == len(names):
        raise _fail(where, "has no feature columns: every column is a label (data.label)")
    numeric = {}
    for name, col in zip(names, columns, strict=True):
        try:
            numeric[name] = np.asarray(col, dtype=np.float64)
        except (ValueError, TypeError):
            row = next(i for i, v in enumerate(col) if not _is_float(v))
            what = "label" if name in label else "feature"
            raise _fail(where, f"{what} column {name!r} is not numeric (row {row + 1}: {str(col[row])[:40]!r}). "
                               + ("Labels must be class indices 0..C-1" if name in label else
                                  "Features must be numbers: encode categories as numbers first")) from None
    features = [n for n in names if n not in label]
    x = np.stack([numeric[n] for n in features], axis=1)
    y = numeric[label[0]] if len(label) == 1 else np.stack([numeric[c] for c in label], axis=1)
    return Raw(where, {"train": x}, {"train": y}, {"source": f"the user's file {where}"},
               label_names=list(label) if len(label) > 1 else None)


def _is_float(v: object) -> bool:
    try:
        float(v)  # type: ignore[arg-type]
        return True
    except (ValueError, TypeError):
        return False


def _read_csv(path: Path, label: list[str]) -> Raw:
    """A CSV with a header row (the standard library's reader; gzip-compressed if it ends in .gz)."""
    where = str(path)
    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rt", newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise _fail(where, f"unreadable as CSV ({_reason(e)})") from None
    rows = [r for r in rows if r]  # blank lines
    if len(rows) < 2:
        raise _fail(where, "has no data rows (a CSV needs a header row, then one row per sample)")
    header = [h.strip() for h in rows[0]]
    bad = next((i for i, r in enumerate(rows[1:], start=2) if len(r) != len(header)), None)
    if bad is not None:
        raise _fail(where, f"row {bad - 1} has {len(rows[bad - 1])} fields but the header has {len(header)}")
    columns = [np.array(c, dtype=object) for c in zip(*rows[1:], strict=True)]
    return _table(where, header, columns, label)


def _read_parquet(path: Path, label: list[str]) -> Raw:
    """A parquet table through pyarrow (the optional extra lossbench[parquet])."""
    where = str(path)
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise _fail(where, "reading .parquet needs pyarrow, which is not installed: pip install 'lossbench[parquet]' "
                           "(or save the table as .csv)") from None
    try:
        table = pq.read_table(path)
    except Exception as e:
        raise _fail(where, f"unreadable as parquet ({_reason(e)})") from None
    columns = [np.asarray(table.column(n).to_numpy(zero_copy_only=False), dtype=object) for n in table.column_names]
    return _table(where, list(table.column_names), columns, label)


def _reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:160]}".rstrip(": ")


# --- OpenML and the bundled sets -----------------------------------------------------------------------------


OPENML_HOW = ("Run the same command once on a machine with network access, with LOSSBENCH_DATA_DIR=DIR (or "
              "data.root=DIR), then copy DIR/openml to this machine's data root")


def openml_dir(dc: DictConfig) -> Path:
    """Where fetch_openml caches: <data root>/openml (the data root as for MNIST; fetch_openml adds 'openml' to
    its data_home)."""
    return (Path(dc.root) if dc.root else default_data_root()) / "openml"


def _read_openml(dc: DictConfig) -> Raw:
    from sklearn.datasets import fetch_openml

    what = f"OpenML dataset {dc.dataset!r}" if dc.dataset else f"OpenML dataset id {dc.id}"
    home = openml_dir(dc)
    target = "default-target" if dc.label is None else (
        str(dc.label) if isinstance(dc.label, str) else [str(c) for c in dc.label])
    try:
        with warnings.catch_warnings(record=True) as caught:  # kept in summary.json, not printed (one-line errors)
            warnings.simplefilter("always")
            bunch = fetch_openml(name=dc.dataset, data_id=dc.id, version="active" if dc.version is None else dc.version,
                                 data_home=str(home.parent), target_column=target, as_frame=False, parser="liac-arff",
                                 n_retries=1, delay=0.1)
    except OSError as e:  # urllib's URLError (no network) and other I/O errors
        raise DataError(f"{what} is not in the cache {home}, and downloading it failed ({_reason(e)}). "
                        f"{OPENML_HOW}.") from None
    except Exception as e:  # unknown name, a target column that does not exist, a sparse or string-valued set
        raise DataError(f"{what}: fetch_openml failed ({_reason(e)}).") from None
    where = f"{what} (cache {home})"
    x = np.asarray(bunch.data.toarray() if hasattr(bunch.data, "toarray") else bunch.data)
    if x.dtype == object:
        raise _fail(where, "has non-numeric features; lossbench needs numeric ones")
    y = np.asarray(bunch.target)
    if y.ndim == 2:  # several target columns: a multi-label task, each column with two values
        y = np.stack([_encode(where, y[:, j], two=True)[0] for j in range(y.shape[1])], axis=1)
        names = list(bunch.target_names)
    else:
        y, names = _encode(where, y)
    details = bunch.details
    source = {"source": f"OpenML dataset {details.get('name')} (id {details.get('id')}, version "
                        f"{details.get('version')}) via sklearn.datasets.fetch_openml",
              "url": bunch.get("url"), "licence": details.get("licence")}
    if caught:
        source["openml_warnings"] = [" ".join(str(w.message).split())[:300] for w in caught]
    return Raw(where, {"train": x}, {"train": y}, source, label_names=names)


def _encode(where: str, y: np.ndarray, two: bool = False) -> tuple[np.ndarray, list[str]]:
    """OpenML target values (class names or numbers) -> class indices 0..C-1 in sorted order, with the names."""
    if y.dtype.kind == "f" and (~np.isfinite(y) | (y != np.round(y))).any():
        raise _fail(where, "has a continuous target (a regression set?); lossbench needs class labels")
    names, codes = np.unique(y.astype(str) if y.dtype == object else y, return_inverse=True)
    if two and len(names) != 2:
        raise _fail(where, f"a target column has {len(names)} values; a multi-label column needs two")
    return codes, [str(n) for n in names]


def _read_breast_cancer(dc: DictConfig) -> Raw:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    return Raw("data=breast_cancer", {"train": x}, {"train": 1 - y}, {  # 1 = malignant, the rarer class
        "source": "scikit-learn load_breast_cancer (UCI Breast Cancer Wisconsin (Diagnostic), Street et al. 1993), "
                  "bundled with scikit-learn", "classes": "1 = malignant (212), 0 = benign (357); scikit-learn's "
                  "target is flipped so that the positive class is the rare one"})


def _read_digits(dc: DictConfig) -> Raw:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return Raw("data=digits", {"train": x}, {"train": y}, {
        "source": "scikit-learn load_digits (UCI Optical Recognition of Handwritten Digits, test part: 8x8 images, "
                  "pixel values 0..16), bundled with scikit-learn"})


def river_file(name: str) -> Path:
    """A data file that river's wheel ships (river/datasets/<name>), found without importing river."""
    spec = importlib.util.find_spec("river")
    if spec is None or spec.origin is None:
        raise DataError(f"data={name.split('.')[0]} reads river's bundled file {name}, and river is not installed: "
                        "pip install river")
    path = Path(spec.origin).parent / "datasets" / name
    if not path.is_file():
        raise DataError(f"river's bundled file {path} is missing: reinstall river (pip install --force-reinstall river)")
    return path


YEAST_LABELS = [f"Class{i}" for i in range(1, 15)]


def _read_yeast(dc: DictConfig) -> Raw:
    raw = _read_csv(river_file("yeast.csv.gz"), YEAST_LABELS)
    raw.where = "data=yeast"
    raw.source = {"source": "river.datasets.Yeast's bundled yeast.csv.gz (MULAN yeast; Elisseeff & Weston 2002; "
                            "= OpenML 40597): gene expression and phylogenetic profiles, 14 functional categories"}
    return raw


def _read_shuttle(dc: DictConfig) -> Raw:
    raw = _read_csv(river_file("shuttle.csv.gz"), ["anomaly"])
    raw.where = "data=shuttle"
    raw.source = {"source": "river.datasets.Shuttle's bundled shuttle.csv.gz (UCI Statlog Shuttle in the ODDS "
                            "anomaly form: class 1 'Rad Flow' = 0, the rare classes = 1, the second-largest class "
                            "dropped)"}
    return raw


def _read_arrays(dc: DictConfig) -> Raw:
    return read_file(Path(dc.path).expanduser(), dc.label)


READERS = {"arrays": _read_arrays, "openml": _read_openml, "breast_cancer": _read_breast_cancer,
           "digits": _read_digits, "yeast": _read_yeast, "shuttle": _read_shuttle}


# --- checks, splits, standardisation -----------------------------------------------------------------------------


def check(raw: Raw) -> tuple[str, int]:
    """Raise a DataError naming the file and the problem; else (task, n_classes): task binary | multiclass |
    multilabel, n_classes the classes (or labels) of the task."""
    where = raw.where
    for s in raw.x:
        x, y = raw.x[s], raw.y[s]
        if y.dtype.kind == "b":
            raw.y[s] = y = y.astype(np.uint8)
        if x.dtype.kind not in "biuf":
            raise _fail(where, f"x_{s} is not numeric (dtype {x.dtype}); features must be numbers")
        if y.dtype.kind not in "biuf":
            raise _fail(where, f"y_{s} is not numeric (dtype {y.dtype}); labels must be class indices 0..C-1 "
                               "(or a 0/1 matrix for multi-label)")
        if x.ndim < 2 or len(x) == 0:
            raise _fail(where, f"x_{s} has shape {x.shape}; features need shape (samples, features), samples >= 1")
        if y.ndim == 2 and y.shape[1] == 1:
            raw.y[s] = y = y[:, 0]
        if y.ndim not in (1, 2) or len(y) != len(x):
            raise _fail(where, f"x_{s} has {len(x)} samples but y_{s} has shape {y.shape}; the labels need shape "
                               f"({len(x)},) (class indices) or ({len(x)}, labels) (multi-label)")
        if s != "train" and x.shape[1:] != raw.x["train"].shape[1:]:
            raise _fail(where, f"x_{s} has samples of shape {x.shape[1:]} but x_train {raw.x['train'].shape[1:]}")
        if s != "train" and y.shape[1:] != raw.y["train"].shape[1:]:
            raise _fail(where, f"y_{s} has shape {y.shape} but y_train {raw.y['train'].shape}: the splits disagree "
                               "on single- or multi-label and on the number of labels")
        for name, a in ((f"x_{s}", x), (f"y_{s}", y)):
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                bad = ~np.isfinite(a)
                first = tuple(int(i) for i in np.argwhere(bad)[0])
                raise _fail(where, f"{name} has {int(bad.sum())} NaN or infinite values (first at index "
                                   f"{first[0] if len(first) == 1 else first}); remove or impute them first")
        if (y != np.round(y)).any():
            i = int(np.argwhere(y != np.round(y))[0][0])
            raise _fail(where, f"y_{s} is not integer: sample {i} has label {y.reshape(len(y), -1)[i].tolist()}; labels "
                               "must be class indices 0..C-1 (or 0/1 for multi-label)")
    if raw.y["train"].ndim == 2:
        return "multilabel", _check_multilabel(raw)
    return _check_classes(raw)


def _check_classes(raw: Raw) -> tuple[str, int]:
    where, ys = raw.where, {s: raw.y[s].astype(np.int64) for s in raw.y}
    low = min(int(y.min()) for y in ys.values())
    if low < 0:
        s = next(s for s in ys if ys[s].min() == low)
        raise _fail(where, f"y_{s} has label {low}, out of range: labels must be class indices 0..C-1")
    c = max(int(y.max()) for y in ys.values()) + 1
    if c > len(ys["train"]):  # before counting classes: a label of 1e9 would allocate a billion counts
        s = next(s for s in ys if ys[s].max() == c - 1)
        raise _fail(where, f"y_{s} has label {c - 1}, out of range: labels must be class indices 0..C-1, and "
                           f"{len(ys['train'])} training samples cannot hold {c} classes")
    if c < 2:
        raise _fail(where, "has one class only (every label is 0); a classifier needs at least 2")
    counts = {s: np.bincount(y, minlength=c) for s, y in ys.items()}
    for s, n in counts.items():
        if s != "train" and (lonely := np.flatnonzero((n > 0) & (counts["train"] == 0))).size:
            raise _fail(where, f"class {int(lonely[0])} is in y_{s} but not in y_train: a class present in one split "
                               "only cannot be learned")
    if (absent := np.flatnonzero(counts["train"] == 0)).size:
        raise _fail(where, f"class {int(absent[0])} has no sample in y_train: labels must be class indices 0..C-1 "
                           f"with every class present (the largest label, {c - 1}, implies {c} classes)")
    if "val" in counts and (absent := np.flatnonzero(counts["val"] == 0)).size:
        raise _fail(where, f"class {int(absent[0])} is in y_train but not in y_val: a class present in one split only "
                           "has no validation recall or AUC")
    return ("binary" if c == 2 else "multiclass"), c


def _check_multilabel(raw: Raw) -> int:
    where = raw.where
    for s, y in raw.y.items():
        if not np.isin(y, (0, 1)).all():
            v = y[~np.isin(y, (0, 1))][0]
            raise _fail(where, f"y_{s} is a label matrix with value {v:g}, out of range: multi-label targets must "
                               "be 0 or 1")
    pos = raw.y["train"].sum(axis=0)
    if (none := np.flatnonzero(pos == 0)).size:
        raise _fail(where, f"label {_label(raw, int(none[0]))} has no positive sample in the training split: it "
                           "cannot be learned; drop the column")
    if (every := np.flatnonzero(pos == len(raw.y["train"]))).size:
        raise _fail(where, f"label {_label(raw, int(every[0]))} is positive for every training sample (one class "
                           "only): drop the column")
    return raw.y["train"].shape[1]


def _label(raw: Raw, j: int) -> str:
    return repr(raw.label_names[j]) if raw.label_names else str(j)


def _make_splits(raw: Raw, dc: DictConfig, task: str) -> list[str]:
    """Cut the missing test and validation splits from the training split: stratified by class (random for
    multi-label), fixed by data.task_seed, test_frac and val_frac of the training split as given. The splits made."""
    from sklearn.model_selection import train_test_split

    made = []
    n = len(raw.y["train"])
    for split, frac in (("test", float(dc.test_frac)), ("val", float(dc.val_frac))):
        if split in raw.x or frac == 0:
            continue
        x, y = raw.x["train"], raw.y["train"]
        k = max(1, round(frac * n))
        if task != "multilabel" and (few := np.flatnonzero(np.bincount(y.astype(np.int64)) < 2)).size:
            raise _fail(raw.where, f"class {int(few[0])} has 1 training sample: too few to cut a stratified {split} "
                                   f"split (2 needed). Give x_{split}/y_{split}, or drop the class")
        try:
            keep, cut = train_test_split(np.arange(len(y)), test_size=k, random_state=int(dc.task_seed),
                                         stratify=None if task == "multilabel" else y)
        except ValueError as e:  # a class with a single sample; a split too small to hold every class
            raise _fail(raw.where, f"cannot cut a stratified {split} split of {k} samples from the {len(y)} training "
                                   f"samples ({_reason(e)}). Give x_{split}/y_{split}, or change data.{split}_frac") from None
        raw.x[split], raw.y[split] = x[cut], y[cut]
        raw.x["train"], raw.y["train"] = x[keep], y[keep]
        made.append(split)
    return made


def prepare(raw: Raw, dc: DictConfig) -> Dataset:
    """Check, split, subsample and standardise a source's arrays into a Dataset (see the module's docstring)."""
    task, c = check(raw)
    asked = dc.get("task")
    if asked is not None and asked != task and not (asked == "multiclass" and task == "binary"):
        found = {"multilabel": f"a 0/1 matrix of {c} labels", "binary": "2 classes",
                 "multiclass": f"{c} classes (0..{c - 1})"}[task]
        raise _fail(raw.where, f"data.task={asked}, but its labels are {found} (a {task} task). Set data.task={task} "
                               "or null (inferred)")
    made = _make_splits(raw, dc, task)
    if made:
        task, c = check(raw)  # every class in every split, after the cut
    n_given = len(raw.y["train"])
    x_train, y_train = _training_subset(raw, dc, task, c)
    x_val, y_val = _validation_subset(raw, dc, task, c)

    x_train = x_train.astype(np.float64)
    mean, std = (x_train.mean(axis=0), x_train.std(axis=0)) if dc.standardize else (0.0, 1.0)
    if dc.standardize:
        std[std == 0] = 1.0  # a constant feature stays 0

    def features(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((x.astype(np.float64) - mean) / std * float(dc.scale)).astype(np.float32))

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y.astype(np.float32 if task == "multilabel" else np.int64))

    x_test, y_test = (features(raw.x["test"]), labels(raw.y["test"])) if "test" in raw.x else (None, None)
    info = {**raw.source, "task_inferred": task, "n_samples": sum(len(y) for y in raw.y.values()),
            "n_features": int(math.prod(x_train.shape[1:])), "splits_made": made,
            "n_train_before_subsampling": n_given, "n_test": 0 if y_test is None else len(y_test),
            "standardized": bool(dc.standardize)}
    # per split, before data.n_train / imbalance_ratio (summary.json's train_class_counts is after them)
    if task == "multilabel":
        info["label_positives"] = {s: raw.y[s].sum(axis=0).astype(int).tolist() for s in raw.y}
    else:
        info["class_counts"] = {s: np.bincount(raw.y[s].astype(np.int64), minlength=c).tolist() for s in raw.y}
    if raw.label_names:
        info["label_names"] = raw.label_names
    return Dataset(dc.name, features(x_train), labels(y_train), features(x_val), labels(y_val), c,
                   task="multilabel" if task == "multilabel" else "multiclass", info=info, x_test=x_test, y_test=y_test)


def _training_subset(raw: Raw, dc: DictConfig, task: str, c: int) -> tuple[np.ndarray, np.ndarray]:
    """data.n_train (a random subset per seed), then data.imbalance_ratio, of the training split."""
    gen = torch.Generator().manual_seed(int(dc.seed))
    x, y = raw.x["train"], raw.y["train"]
    if dc.n_train is not None and dc.n_train < len(y):
        keep = torch.randperm(len(y), generator=gen)[: dc.n_train].sort().values.numpy()
        x, y = x[keep], y[keep]
    if dc.imbalance_ratio is not None:  # single-label only (config.validate)
        keep = imbalance_subset(torch.from_numpy(y.astype(np.int64)), c, float(dc.imbalance_ratio),
                                dc.get("imbalance_profile", "exp"), gen, binary=task == "binary", what=raw.where)
        x, y = x[keep.numpy()], y[keep.numpy()]
    _still_has_every_class(raw, y, task, c, "n_train", dc.n_train, "training")
    return x, y


def _validation_subset(raw: Raw, dc: DictConfig, task: str, c: int) -> tuple[np.ndarray, np.ndarray]:
    """data.n_val: a random subset of the validation split, the same for every seed (as data=mnist's)."""
    x, y = raw.x["val"], raw.y["val"]
    if dc.n_val is not None and dc.n_val < len(y):
        keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[: dc.n_val].sort().values.numpy()
        x, y = x[keep], y[keep]
        if task != "multilabel":  # multi-label validation labels may lack positives (skipped in macro averages)
            _still_has_every_class(raw, y, task, c, "n_val", dc.n_val, "validation")
    return x, y


def _still_has_every_class(raw: Raw, y: np.ndarray, task: str, c: int, key: str, value: object, split: str) -> None:
    if task == "multilabel":
        if (none := np.flatnonzero(y.sum(axis=0) == 0)).size:
            raise DataError(f"data.{key}={value} leaves label {_label(raw, int(none[0]))} of {raw.where} without a positive "
                            f"{split} sample. Raise data.{key}")
    elif (absent := np.flatnonzero(np.bincount(y.astype(np.int64), minlength=c) == 0)).size:
        raise DataError(f"data.{key}={value} leaves class {int(absent[0])} of {raw.where} without a {split} sample. "
                        f"Raise data.{key}")
