"""Real data (lossbench/data/real.py): a user's files through the CLI, every bad-file class refused in one line, the
bundled sets' shapes and class counts, OpenML from a cache built here, and real data in a stacked sweep."""

from __future__ import annotations

import csv
import json
import pickle
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from lossbench import data as data_mod
from lossbench import store
from lossbench.errors import DataError
from tests.conftest import make_cfg
from tests.inprocess import run_cli

FAST = ["trainer.max_steps=20", "trainer.eval_every=10", "trainer.log_every=10", "logger.enabled=false",
        "model.hidden=[8]", "trainer.threads=1"]


def blobs(n: int = 300, classes: int = 2, d: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n samples of d features, labels 0..classes-1 (every class present), learnable from feature 0."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    return rng.normal(size=(n, d)) + y[:, None], y


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def cli_ok(tmp_path: Path, *args: str) -> dict:
    run_dir = tmp_path / "run"
    r = run_cli(*FAST, *args, f"hydra.run.dir={run_dir}")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = store.read_json(run_dir / store.SUMMARY)
    assert summary["status"] == "completed"
    return summary


# --- a user's own files, end to end through the CLI -----------------------------------------------------------


def test_a_users_npz_trains_through_the_cli(tmp_path):
    x, y = blobs(300)
    path = tmp_path / "my.npz"
    np.savez(path, x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:])
    s = cli_ok(tmp_path, "data=arrays", f"data.path={path}", "loss=bce_logits", "loss.pos_weight=auto",
               "logger.enabled=true")
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))  # TensorBoard, with the file's keys as hparams
    d = s["data"]
    assert d["task_inferred"] == "binary" and d["splits_made"] == ["val"]  # the file's test split is kept
    assert (d["n_train"], d["n_val"], d["n_test"], d["n_samples"]) == (160, 40, 100, 300)
    assert d["class_counts"]["val"] == [20, 20]  # stratified
    assert s["final"]["val/auc"] > 0.7


def test_a_users_csv_trains_and_the_split_is_fixed_by_task_seed(tmp_path):
    x, y = blobs(400, classes=3)
    path = write_csv(tmp_path / "my.csv", ["f0", "f1", "f2", "f3", "target"], [[*r, c] for r, c in zip(x, y, strict=True)])
    s = cli_ok(tmp_path, "data=arrays", f"data.path={path}", "data.label=target", "loss=ce")
    assert s["data"]["task_inferred"] == "multiclass" and s["data"]["n_classes"] == 3
    cfg = make_cfg("data=arrays", f"data.path={path}", "data.label=target")
    a, b = data_mod.load(cfg.data), data_mod.load(make_cfg("data=arrays", f"data.path={path}", "data.label=target",
                                                           "seed=5").data)
    assert a.same_as(b)  # the seed does not move the splits: a stack holds them once
    other = data_mod.load(make_cfg("data=arrays", f"data.path={path}", "data.label=target", "data.task_seed=1").data)
    assert not torch.equal(a.y_val, other.y_val)
    assert a.x_train.mean(0).abs().max() < 1e-5 and (a.x_train.std(0, unbiased=False) - 1).abs().max() < 1e-4
    raw = data_mod.load(make_cfg("data=arrays", f"data.path={path}", "data.label=target", "data.standardize=false").data)
    assert raw.x_train.mean() > 0.5  # the labels' shift left in


def test_a_multilabel_csv_and_pt_file(tmp_path):
    x, _ = blobs(300, d=5)
    ys = (x[:, :3] > 0.5).astype(int)
    path = write_csv(tmp_path / "tags.csv", ["a", "b", "c", "d", "e", "t0", "t1", "t2"],
                     [[*r, *t] for r, t in zip(x, ys, strict=True)])
    s = cli_ok(tmp_path, "data=arrays", f"data.path={path}", "data.label=[t0,t1,t2]", "loss=asl")
    assert s["data"]["task"] == "multilabel" and s["data"]["n_classes"] == 3
    assert s["data"]["label_names"] == ["t0", "t1", "t2"]
    pt = tmp_path / "my.pt"
    torch.save({"x_train": torch.from_numpy(x).float(), "y_train": torch.from_numpy(ys)}, pt)
    ds = data_mod.load(make_cfg("data=arrays", f"data.path={pt}").data)
    assert ds.multilabel and ds.y_train.dtype == torch.float32 and ds.x_test is not None


def test_a_parquet_table(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow (the lossbench[parquet] extra) is not installed")
    import pyarrow.parquet as pq

    x, y = blobs(200)
    path = tmp_path / "my.parquet"
    pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1].astype(np.float32), "c": (x[:, 2] > 0), "y": y}), path)
    ds = data_mod.load(make_cfg("data=arrays", f"data.path={path}", "data.label=y").data)
    assert ds.input_shape == (3,) and ds.n_classes == 2 and ds.info["n_samples"] == 200
    pq.write_table(pa.table({"a": ["u", "v"] * 100, "y": y}), path)
    with pytest.raises(DataError, match=r"my.parquet: feature column 'a' is not numeric \(row 1: 'u'\)"):
        data_mod.load(make_cfg("data=arrays", f"data.path={path}", "data.label=y").data)


def test_a_task_inferred_from_the_file_refuses_the_losses_that_do_not_fit_it(tmp_path):
    x, _ = blobs(200)
    path = write_csv(tmp_path / "tags.csv", ["a", "b", "c", "d", "t0", "t1"],
                     [[*r, int(r[0] > 0), int(r[1] > 0)] for r in x])
    msg = refused(tmp_path, "data=arrays", f"data.path={path}", "data.label=[t0,t1]", "loss=nll")
    assert "data.task=multilabel with head=softmax loss=nll" in msg and "Valid on multi-label tasks" in msg


# --- bad files: one line each, exit 2, no traceback, nothing left behind ---------------------------------------


def refused(tmp_path: Path, *args: str, run_dir: Path | None = None) -> str:
    run_dir = run_dir or tmp_path / "refused"
    r = run_cli(*FAST, *args, f"hydra.run.dir={run_dir}")
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("lossbench: error: "), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    return r.stderr


class Custom:  # a pickled class: what weights_only=True refuses
    pass


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def bad_file(tmp_path: Path, kind: str) -> tuple[Path, list[str]]:
    """A file of each bad class, and the extra overrides it needs."""
    x, y = blobs(60)
    p = tmp_path / f"{kind}.npz"
    if kind == "missing_key":
        return _npz(p, x_train=x), []
    if kind == "nan":
        x[7, 2] = np.nan
        return _npz(p, x_train=x, y_train=y), []
    if kind == "inf":
        x[3, 0] = np.inf
        return _npz(p, x_train=x, y_train=y), []
    if kind == "not_integer":
        return _npz(p, x_train=x, y_train=y + 0.5), []
    if kind == "out_of_range":
        return _npz(p, x_train=x, y_train=np.where(y == 1, -1, 0)), []
    if kind == "multilabel_out_of_range":
        return _npz(p, x_train=x, y_train=np.stack([y, 2 * y], axis=1)), []
    if kind == "one_split_only":
        return _npz(p, x_train=x, y_train=y, x_val=x[:10], y_val=np.r_[y[:9], 2]), []
    if kind == "huge_label":
        return _npz(p, x_train=x, y_train=np.where(y == 1, 10**9, 0)), []
    if kind == "one_class":
        return _npz(p, x_train=x, y_train=np.zeros_like(y)), []
    if kind == "shapes":
        return _npz(p, x_train=x, y_train=y[:-1]), []
    if kind == "features_disagree":
        return _npz(p, x_train=x, y_train=y, x_val=x[:10, :3], y_val=y[:10]), []
    if kind == "unreadable":
        p.write_bytes(b"PK\x03\x04 this is not a zip archive")
        return p, []
    if kind == "pickle":
        p.write_bytes(pickle.dumps({"x_train": x, "y_train": y}))
        return p, []
    if kind == "object_array":
        return _npz(p, x_train=np.array([[1, "a"]] * 60, dtype=object), y_train=y), []
    if kind == "pt_pickle":
        p = tmp_path / "bad.pt"
        torch.save({"x_train": torch.zeros(60, 2), "y_train": torch.zeros(60), "extra": Custom()}, p)
        return p, []
    if kind == "no_file":
        return tmp_path / "absent.npz", []
    if kind == "unknown_type":
        p = tmp_path / "data.xlsx"
        p.write_bytes(b"x")
        return p, []
    if kind == "missing_column":
        return write_csv(tmp_path / "t.csv", ["a", "b", "y"], [[1, 2, 0], [2, 3, 1]]), ["data.label=target"]
    if kind == "non_numeric":
        rows = [[*r, c] for r, c in zip(x.tolist(), y, strict=True)]
        rows[4][1] = "abc"
        return write_csv(tmp_path / "t.csv", ["a", "b", "c", "d", "label"], rows), []
    if kind == "parquet_without_pyarrow":
        p = tmp_path / "t.parquet"
        p.write_bytes(b"PAR1")
        return p, []
    if kind == "too_small_to_split":
        return _npz(p, x_train=x, y_train=np.r_[y[:-1], 2]), []
    if kind == "task_mismatch":
        return _npz(p, x_train=x, y_train=y), ["data.task=multilabel"]
    raise AssertionError(kind)


BAD = {
    "missing_key": r"missing_key.npz: has no y_train \(it has: x_train\). It needs x_train and y_train",
    "nan": r"nan.npz: x_train has 1 NaN or infinite values \(first at index \(7, 2\)\)",
    "inf": r"inf.npz: x_train has 1 NaN or infinite values",
    "not_integer": r"not_integer.npz: y_train is not integer: sample 0 has label \[0.5\]",
    "out_of_range": r"out_of_range.npz: y_train has label -1, out of range: labels must be class indices 0..C-1",
    "multilabel_out_of_range": r"y_train is a label matrix with value 2, out of range: multi-label targets must be 0 or 1",
    "one_split_only": r"one_split_only.npz: class 2 is in y_val but not in y_train: a class present in one split only",
    "huge_label": r"huge_label.npz: y_train has label 1000000000, out of range: labels must be class indices 0..C-1, "
                  r"and 60 training samples cannot hold 1000000001 classes",
    "one_class": r"one_class.npz: has one class only",
    "shapes": r"shapes.npz: x_train has 60 samples but y_train has shape \(59,\)",
    "features_disagree": r"x_val has samples of shape \(3,\) but x_train \(4,\)",
    "unreadable": r"unreadable.npz: unreadable as .npz \(BadZipFile",
    "pickle": r"pickle.npz: is a pickle, which lossbench never unpickles \(np.load\(allow_pickle=False\)\)",
    "object_array": r"object_array.npz: array x_train holds Python objects \(a pickle\), which lossbench never unpickles",
    "pt_pickle": r"bad.pt: holds objects other than tensors, which lossbench never unpickles \(torch.load\(weights_only",
    "no_file": r"absent.npz: no such file",
    "unknown_type": r"data.xlsx: unknown file type. Valid: .npz, .csv, .csv.gz, .parquet, .pt",
    "missing_column": r"t.csv: has no column 'target' \(data.label\). Its columns: a, b, y",
    "non_numeric": r"t.csv: feature column 'b' is not numeric \(row 5: 'abc'\)",
    "parquet_without_pyarrow": r"t.parquet: reading .parquet needs pyarrow, which is not installed: pip install "
                               r"'lossbench\[parquet\]'",
    "too_small_to_split": r"too_small_to_split.npz: class 2 has 1 training sample: too few to cut a stratified test "
                          r"split \(2 needed\). Give x_test/y_test",
    "task_mismatch": r"data.task=multilabel, but its labels are 2 classes \(a binary task\)",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_bad_file_is_one_line_exit_2(tmp_path, monkeypatch, kind):
    import re

    if kind == "parquet_without_pyarrow":  # as on an install without the extra, whether or not pyarrow is here
        monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)
    path, extra = bad_file(tmp_path, kind)
    msg = refused(tmp_path, "data=arrays", f"data.path={path}", *extra)
    assert re.search(BAD[kind], msg), msg
    assert not (tmp_path / "refused").exists()


def test_a_bad_file_writes_nothing_into_a_finished_run(tmp_path):
    """Pointed at a finished run's directory, a refused run leaves its summary and Hydra record as they were."""
    x, y = blobs(100)
    good = _npz(tmp_path / "good.npz", x_train=x, y_train=y)
    cli_ok(tmp_path, "data=arrays", f"data.path={good}")
    run_dir = tmp_path / "run"
    before = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    bad, _ = bad_file(tmp_path, "nan")
    refused(tmp_path, "data=arrays", f"data.path={bad}", run_dir=run_dir)
    after = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.parametrize(("args", "match"), [
    (["data=arrays"], r"data=arrays needs data.path=FILE"),
    (["data=arrays", "data.path=x.csv", "data.label=[]"], r"data.label=\[\] must be a column name or a non-empty list"),
    (["data=arrays", "data.path=x.npz", "data.val_frac=0.6", "data.test_frac=0.4"], r"must be below 1"),
    (["data=openml"], r"data=openml needs one of data.dataset=NAME or data.id=N"),
    (["data=yeast", "loss=nll"], r"data.task=multilabel with head=softmax loss=nll"),
    (["data=shuttle", "data.task=multilabel"], r"data.task=multilabel is not available for data=shuttle"),
    (["data=yeast", "data.imbalance_ratio=10"], r"data.imbalance_ratio=10 applies to single-label tasks"),
])
def test_bad_real_data_configs_are_refused_before_loading(tmp_path, args, match):
    import re

    assert re.search(match, refused(tmp_path, *args))


# --- the bundled sets --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "n", "d", "counts"), [
    ("breast_cancer", 569, 30, [357, 212]),  # 1 = malignant
    ("digits", 1797, 64, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]),
    ("yeast", 2417, 103, [762, 1038, 983, 862, 722, 597, 428, 480, 178, 253, 289, 1816, 1799, 34]),  # positives
    ("shuttle", 49097, 9, [45586, 3511]),
])
def test_the_bundled_sets_load_with_their_shapes_and_counts(name, n, d, counts):
    ds = data_mod.load(make_cfg(f"data={name}").data)
    info = ds.info
    assert info["n_samples"] == n and info["n_features"] == d and ds.input_shape == (d,)
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == n
    assert info["splits_made"] == ["test", "val"] and "source" in info
    per_split = info["label_positives" if ds.multilabel else "class_counts"]
    assert np.sum([per_split[s] for s in ("train", "val", "test")], axis=0).tolist() == counts
    assert ds.task == ("multilabel" if name == "yeast" else "multiclass")


def test_imbalance_and_training_label_options_apply_to_real_class_index_sets():
    ds = data_mod.load(make_cfg("data=digits", "data.imbalance_ratio=10").data)
    counts = ds.class_counts().tolist()
    assert counts[0] == min(ds.info["class_counts"]["train"]) and counts[-1] == round(counts[0] / 10)
    assert counts == sorted(counts, reverse=True)
    step = data_mod.load(make_cfg("data=digits", "data.imbalance_ratio=10", "data.imbalance_profile=step").data)
    assert len(set(step.class_counts().tolist())) == 2
    bc = data_mod.load(make_cfg("data=breast_cancer", "data.imbalance_ratio=20").data)
    neg, pos = bc.class_counts().tolist()
    assert neg == bc.info["class_counts"]["train"][0] and pos == round(neg / 20)  # positives subsampled
    noisy = data_mod.load(make_cfg("data=digits", "loss=ce", "data.label_noise=0.2", "data.soft_labels=noise_aware",
                                   "data.unlabeled_frac=0").data)
    assert noisy.t_train.shape == (len(noisy.y_train), 10) and noisy.info["train_labels_flipped"] > 0
    partial = data_mod.load(make_cfg("data=yeast", "data.unlabeled_frac=0.1").data)
    assert partial.partial()


# --- OpenML, from a cache built here (no network) -------------------------------------------------------------


def openml_cache(root: Path) -> Path:
    """iris (OpenML id 61) laid out as fetch_openml caches it, from the responses scikit-learn's own tests ship."""
    import sklearn.datasets

    src = Path(sklearn.datasets.__file__).parent / "tests" / "data" / "openml" / "id_61"
    if not src.is_dir():
        pytest.skip(f"scikit-learn's OpenML test responses are not installed ({src})")
    base = root / "openml" / "openml.org"
    for name, path in {"api-v1-jd-61.json.gz": "api/v1/json/data/61.gz",
                       "api-v1-jdf-61.json.gz": "api/v1/json/data/features/61.gz",
                       "api-v1-jdq-61.json.gz": "api/v1/json/data/qualities/61.gz",
                       "api-v1-jdl-dn-iris-l-2-s-act-.json.gz": "api/v1/json/data/list/data_name/iris/limit/2/status/active/.gz",
                       "data-v1-dl-61.arff.gz": "data/v1/download/61/iris.arff.gz"}.items():
        (base / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / name, base / path)
    return root


@pytest.fixture
def offline(monkeypatch):
    """No network: every OpenML request that the cache does not answer fails as an offline machine's would."""
    import sklearn.datasets._openml as openml

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(openml, "urlopen", refuse)


@pytest.mark.parametrize("which", ["data.dataset=iris", "data.id=61"])
def test_openml_from_the_cache_offline(tmp_path, offline, which):
    root = openml_cache(tmp_path / "data")
    s = cli_ok(tmp_path, "data=openml", which, f"data.root={root}", "loss=ce")
    d = s["data"]
    assert d["n_samples"] == 150 and d["n_features"] == 4 and d["n_classes"] == 3
    assert d["label_names"] == ["Iris-setosa", "Iris-versicolor", "Iris-virginica"]
    assert "OpenML dataset iris (id 61, version 1)" in d["source"]


def test_openml_offline_without_the_cache_says_what_to_do(tmp_path, offline):
    msg = refused(tmp_path, "data=openml", "data.dataset=credit-g", f"data.root={tmp_path / 'empty'}")
    assert "OpenML dataset 'credit-g' is not in the cache" in msg and "downloading it failed (URLError" in msg
    assert "Run the same command once on a machine with network access" in msg


# --- real data in a stacked sweep --------------------------------------------------------------------------------


def test_a_real_set_in_a_stacked_sweep_holds_its_data_once(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli("-m", "hydra/launcher=stacked", "data=breast_cancer", "loss=bce_logits,focal", "seed=0,1", *FAST,
                f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr[-3000:]
    status = json.loads((sweep / "sweep_status.json").read_text())
    assert [j["status"] for j in status["jobs"]] == ["completed"] * 4
    summaries = [store.read_json(p) for p in sorted(sweep.glob("*/summary.json"))]
    assert {s["stack"]["size"] for s in summaries} == {4}
    assert {s["data"]["n_test"] for s in summaries} == {114}
    from lossbench.analysis import report

    assert report.main([str(sweep), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "table.md").read_text().startswith("# lossbench report: 4 runs in 2 groups")
    from lossbench.engine import member, plan, train

    datasets: dict = {}
    cfgs = [make_cfg("data=breast_cancer", f"seed={k}", "trainer.max_steps=2") for k in (0, 1)]
    ms = [member.build(c, plan.plan(c, tmp_path / str(i)), train.torch.device("cpu"), datasets, "fp32")
          for i, c in enumerate(cfgs)]
    assert ms[0].ds is ms[1].ds  # equal data under two seeds: one copy



@pytest.mark.parametrize("study", ["real_binary", "real_multilabel"])
def test_the_real_data_studies_compose_validate_and_run_tiny(tmp_path, study):
    from lossbench.config import validate
    from tests.conftest import run_cfg
    from tests.test_studies import compose_cfg, sweep_params

    params = sweep_params(study)
    assert len(params["seed"]) == 5
    (axis, values), = ((k, v) for k, v in params.items() if k != "seed")
    for v in values:
        validate(compose_cfg(f"experiment={study}", f"{axis}={v}"))
    s = run_cfg(tmp_path, f"experiment={study}", f"{axis}={values[-1]}", "trainer.max_steps=6", "trainer.eval_every=3",
                "data.n_val=300", "logger.enabled=false")
    assert s["status"] == "completed" and s["config"]["study"]["name"] == study


def test_distillation_on_a_real_set_needs_a_teacher_of_the_same_set(tmp_path):
    cli_ok(tmp_path, "data=digits", "loss=ce")
    teacher = tmp_path / "run"
    s = cli_ok(tmp_path / "student", "data=digits", "loss=kd", f"loss.teacher={teacher}")
    assert s["data"]["n_classes"] == 10
    msg = refused(tmp_path, "data=breast_cancer", "loss=kd", f"loss.teacher={teacher}")
    assert "the teacher was trained on data=digits, this run uses data=breast_cancer" in msg
