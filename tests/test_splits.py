"""Three splits for every dataset: train, validation (every choice) and test (reported at the validation-best
evaluation, never chosen on); runs from before the test split still report, validation only."""

from __future__ import annotations

import json

import torch
from conftest import make_cfg, needs_mnist, run_cfg

from lossbench import data, report, studies

TINY = ["trainer.max_steps=40", "trainer.eval_every=10", "trainer.log_every=10", "data.n_train=500", "data.n_val=400"]


def test_synthetic_test_split_is_a_separate_draw_that_leaves_train_and_val_as_they_were():
    ds = data.load(make_cfg("data=imbalanced", "data.n_train=2000", "data.n_val=3000").data)
    assert ds.x_test.shape == ds.x_val.shape and ds.y_test.shape == ds.y_val.shape
    assert not torch.equal(ds.x_test, ds.x_val)
    assert abs(float(ds.y_test.float().mean()) - float(ds.y_val.float().mean())) < 0.01  # the same 1:100 prior
    # train and validation are drawn first from the same generator, exactly as before the test split existed
    cfg = make_cfg("data=imbalanced", "data.n_train=2000", "data.n_val=3000").data
    gen = torch.Generator().manual_seed(int(cfg.seed))
    counts = data._split_counts(cfg.n_train, cfg.n_classes, cfg.imbalance_ratio, "train")
    y = torch.cat([torch.full((k,), c, dtype=torch.long) for c, k in enumerate(counts)])
    assert torch.equal(y[torch.randperm(cfg.n_train, generator=gen)], ds.y_train)


def test_multilabel_synthetic_has_a_test_split():
    ds = data.load(make_cfg("data.task=multilabel", "data.n_classes=5", "data.n_train=300", "data.n_val=200").data)
    assert ds.x_test.shape == ds.x_val.shape and ds.y_test.shape == (200, 5) and not torch.equal(ds.x_test, ds.x_val)


@needs_mnist
def test_mnist_halves_its_test_images_into_fixed_stratified_validation_and_test():
    y = data._read_mnist(data.default_data_root(), False, False)[1]
    val, test = data.mnist_val_test(y)
    assert len(val) == len(test) == 5000 and not set(val.tolist()) & set(test.tolist())
    assert (torch.bincount(y[val], minlength=10) - torch.bincount(y[test], minlength=10)).abs().max() <= 1
    a = data.load(make_cfg("data=mnist", "seed=0", "data.n_train=1000").data)
    b = data.load(make_cfg("data=mnist", "seed=7", "data.n_train=1000", "data.task=binary").data)
    assert len(a.y_val) == len(a.y_test) == 5000
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.x_test, b.x_test)  # fixed: not the run's seed
    assert torch.equal(b.y_test, (a.y_test == 0).long())  # binary: "is it a zero?" on the same images


def test_a_run_reports_test_at_the_val_best_evaluation(tmp_path):
    s = run_cfg(tmp_path, *TINY)
    assert s["data"]["n_test"] == 400
    for h in s["history"]:
        assert {"val/auc", "test/auc", "val/nll", "test/nll"} <= h.keys()
    for metric in ("auc", "nll", "accuracy"):
        lower = metric == "nll"
        vals = [h[f"val/{metric}"] for h in s["history"]]
        best = min(vals) if lower else max(vals)
        at = next(h for h in s["history"] if h[f"val/{metric}"] == best)  # the first evaluation that reached it
        assert s["best"][f"val/{metric}"] == best and s["best"][f"test/{metric}"] == at[f"test/{metric}"]
    assert len(s["test_per_class_recall"]) == 2


def test_old_runs_without_test_still_report_labelled_validation_only(tmp_path):
    for seed in (0, 1):
        run_cfg(tmp_path / "sweep" / str(seed), f"seed={seed}", *TINY)
    assert report.main([str(tmp_path / "sweep")]) == 0
    table = (tmp_path / "sweep" / "report" / "table.md").read_text()
    assert report.TEST_AT_BEST in table and report.NO_TEST not in table
    for seed in (0, 1):  # as lossbench wrote them before the test split existed
        path = tmp_path / "sweep" / str(seed) / "summary.json"
        s = json.loads(path.read_text())
        for part in ("final", "best"):
            s[part] = {k: v for k, v in s[part].items() if not k.startswith("test/")}
        s["history"] = [{k: v for k, v in h.items() if not k.startswith("test/")} for h in s["history"]]
        path.write_text(json.dumps(s))
    assert report.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "old")]) == 0
    table = (tmp_path / "old" / "table.md").read_text()
    assert report.TEST_AT_BEST not in table and report.NO_TEST in table
    assert studies.main(["pos_weight", str(tmp_path / "sweep"), "--out", str(tmp_path / "study")]) == 0
    assert report.NO_TEST in (tmp_path / "study" / "study.md").read_text()
