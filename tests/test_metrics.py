"""Validation metrics: the device-side ROC-AUC and AP give scikit-learn's numbers, ties and edge cases included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score

from lossbench import metrics


@pytest.mark.parametrize("ties", [False, True])
def test_ranking_equals_scikit_learn_per_column(ties):
    g = torch.Generator().manual_seed(1 + ties)
    checked = 0
    for _ in range(150):
        n = int(torch.randint(2, 300, (1,), generator=g))
        k = int(torch.randint(1, 5, (1,), generator=g))
        if ties:  # a few distinct score levels: long runs of equal scores mixing both classes
            levels = int(torch.randint(1, 12, (1,), generator=g))
            s = torch.randint(0, levels, (n, k), generator=g).double() / levels
        else:
            s = torch.rand(n, k, generator=g, dtype=torch.float64)
        pos = torch.rand(n, k, generator=g) < torch.rand(1, generator=g)
        auc, ap = metrics.ranking(s, pos)
        for j in range(k):
            y, sj = pos[:, j].numpy(), s[:, j].numpy()
            if y.all() or not y.any():
                assert math.isnan(auc[j]) and math.isnan(ap[j])
                continue
            assert float(auc[j]) == pytest.approx(roc_auc_score(y, sj), abs=1e-12)
            assert float(ap[j]) == pytest.approx(average_precision_score(y, sj), abs=1e-12)
            checked += 1
    assert checked > 200


def test_ranking_known_values():
    # AUC: of the 2x2 positive/negative pairs, 3 are ordered right and one is a tie (counts one half)
    auc, ap = metrics.ranking(torch.tensor([[0.9], [0.5], [0.5], [0.1]]), torch.tensor([[1], [1], [0], [0]]))
    assert float(auc[0]) == pytest.approx(3.5 / 4)
    # AP: recall 1/2 at precision 1 (threshold 0.9), recall 1 at precision 2/3 (threshold 0.5)
    assert float(ap[0]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_ranking_is_nan_for_non_finite_scores():
    s = torch.tensor([[0.2, 0.1], [float("nan"), 0.9], [0.7, 0.3]])
    auc, ap = metrics.ranking(s, torch.tensor([[0, 0], [1, 1], [1, 0]]))
    assert math.isnan(auc[0]) and math.isnan(ap[0])
    assert float(auc[1]) == 1.0 and float(ap[1]) == 1.0


@pytest.mark.parametrize(("head", "n_classes"), [("softmax", 2), ("sigmoid", 2), ("softmax", 5), ("sigmoid", 5)])
def test_evaluate_matches_scikit_learn(head, n_classes):
    g = torch.Generator().manual_seed(n_classes)
    y = torch.randint(0, n_classes, (2000,), generator=g)
    k = 1 if head == "sigmoid" and n_classes == 2 else n_classes
    z = torch.randn(2000, k, generator=g) + (F.one_hot(y, n_classes)[:, -k:] if k > 1 else y[:, None]) * 1.5
    z = (z * 4).round() / 4  # coarse logits: tied scores
    m = metrics.evaluate(z, y, head, n_classes)
    s = metrics.scores(z, head).double().numpy()
    if n_classes == 2:
        want_auc, want_ap = roc_auc_score(y.numpy(), s), average_precision_score(y.numpy(), s)
    else:
        onehot = np.eye(n_classes)[y.numpy()]
        want_auc = roc_auc_score(onehot, s, average="macro")
        want_ap = average_precision_score(onehot, s, average="macro")
    assert m["auc"] == pytest.approx(want_auc, abs=1e-12)
    assert m["ap"] == pytest.approx(want_ap, abs=1e-12)


def test_macro_average_skips_classes_absent_from_the_split():
    y = torch.tensor([0, 1, 0, 1, 0, 1])  # class 2 never appears: its one-vs-rest AUC is undefined
    z = torch.tensor([[2.0, 0, 0], [0, 2, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 2]])
    m = metrics.evaluate(z, y, "softmax", 3)
    s = metrics.scores(z, "softmax").double().numpy()
    onehot = np.eye(3)[y.numpy()][:, :2]
    assert m["auc"] == pytest.approx(roc_auc_score(onehot, s[:, :2], average="macro"))
    assert m["ap"] == pytest.approx(average_precision_score(onehot, s[:, :2], average="macro"))


def test_diverged_logits_give_nan_metrics_not_a_crash():
    z = torch.full((10, 3), float("nan"))
    m = metrics.evaluate(z, torch.arange(10) % 3, "softmax", 3)
    assert math.isnan(m["auc"]) and math.isnan(m["ap"]) and math.isnan(m["nll"])


def reference_metrics(z: torch.Tensor, y: torch.Tensor, head: str, n_classes: int) -> dict[str, float]:
    """The same metrics, one run at a time, from scikit-learn and numpy (ECE: Guo et al.'s 15 bins)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score

    p = metrics.probabilities(z, head).double().numpy()
    yy, pred, conf = y.numpy(), p.argmax(axis=1), p.max(axis=1)
    bins = np.minimum((conf * 15).astype(int), 14)
    ece = sum((bins == b).mean() * abs((pred == yy)[bins == b].mean() - conf[bins == b].mean()) for b in np.unique(bins))
    out = {"accuracy": accuracy_score(yy, pred), "balanced_accuracy": balanced_accuracy_score(yy, pred),
           "ece": ece, "mean_confidence": conf.mean()}
    if n_classes == 2:
        out["recall"] = recall_score(yy, pred, zero_division=0)
        out["mean_prob"] = p[:, 1].mean()
    return out


@pytest.mark.parametrize(("head", "n_classes"), [("sigmoid", 2), ("softmax", 2), ("softmax", 5), ("sigmoid", 4)])
def test_evaluate_many_equals_scikit_learn_run_by_run(head, n_classes):
    """A stack's metrics, one batched computation, each run's against scikit-learn: including a run whose
    labels lack a class, a run that predicts one class only, and a binary run without positives. (Within 1e-6:
    float32 sigmoid/softmax over a stack's batch and over one run's can differ in the last bit.)"""
    g = torch.Generator().manual_seed(n_classes)
    m, n = 6, 200
    k = 1 if head == "sigmoid" and n_classes == 2 else n_classes
    z = torch.randn(m, n, k, generator=g) * torch.rand(m, 1, 1, generator=g) * 4
    y = torch.randint(0, n_classes, (m, n), generator=g)
    y[1] = y[1].clamp(max=n_classes - 2)  # a class absent from run 1's labels
    z[2] = z[2].abs() * (1 if k == 1 else torch.nn.functional.one_hot(torch.tensor(0), k))  # one class predicted
    y[3] = 0  # run 3: no positive (binary) / one class only
    many = metrics.evaluate_many(z, y, head, n_classes)
    for i in range(m):
        ref = reference_metrics(z[i], y[i], head, n_classes)
        for key, value in ref.items():
            assert many[i][key] == pytest.approx(value, abs=1e-6), (i, key)
        alone = metrics.evaluate(z[i], y[i], head, n_classes)
        assert alone == pytest.approx(many[i], nan_ok=True)


def test_evaluate_many_with_non_finite_logits():
    z = torch.randn(2, 50, 1)
    z[1, 3] = math.nan
    y = torch.randint(0, 2, (2, 50))
    out = metrics.evaluate_many(z, y, "sigmoid", 2)
    assert math.isfinite(out[0]["ece"]) and math.isnan(out[1]["ece"]) and math.isnan(out[1]["auc"])
