"""`python -m lossbench.check`: the identities hold in the fast dtypes, and a failing identity fails the run."""

from __future__ import annotations

import pytest

from lossbench.tools import check


@pytest.fixture(scope="module")
def rows() -> dict[tuple[str, str], check.Row]:
    return {(r.identity, r.dtype): r for r in check.run_checks(["float64", "float32"])}


def test_main_exits_zero_and_prints_table(capsys):
    assert check.main(["--dtypes", "float64,float32"]) == 0
    out = capsys.readouterr().out
    assert "CE = LogSoftmax+NLL weight+ignore_index (mean)" in out
    assert "FAIL" not in out


def test_worked_numbers(rows):
    for dtype in ("float64", "float32"):
        r = rows[("CE([[1,2,3]], 2) = 0.4076", dtype)]
        assert r.verdict == "ok" and r.detail == "got 0.4076"
        assert rows[("NLL(log_softmax([1,2,3]), 0) = 2.4076", dtype)].detail == "got 2.4076"
        assert rows[("NLL(log_softmax([1,2,3]), 1) = 1.4076", dtype)].detail == "got 1.4076"


def test_exact_identities(rows):
    # CrossEntropyLoss is literally nll_loss(log_softmax): bit-identical, weights and ignore_index included
    assert rows[("CE = LogSoftmax+NLL weight+ignore_index (mean)", "float32")].diff == 0
    assert rows[("sigmoid(x) = softmax([0,x])[1], x in [-30,30]", "float32")].diff < 1e-6
    assert rows[("F.binary_cross_entropy = sklearn log_loss, p in (0,1)", "float64")].diff < 1e-14


def test_bce_sigmoid_parts_from_bce_logits_at_saturation(rows):
    r = rows[("BCE(sigmoid(x)) vs BCEWithLogits, x in [-30,30]", "float32")]
    assert r.verdict == "differs" and not r.must
    # sigmoid(x) is exactly 1.0 in float32 from x ~ 16.6: BCELoss reports its clamp, 100, instead of x
    assert "x=16.64 y=0 (BCE 100, exact 16.64)" in r.detail
    assert rows[("BCE(sigmoid(x)) vs BCEWithLogits, x in [-30,30]", "float64")].verdict == "agrees"


def test_weighted_mean_rules(rows):
    ce_n = rows[("CE(weight) mean vs sum w_y l / N (not the rule)", "float64")]
    assert ce_n.verdict == "differs"
    assert rows[("BCEWithLogits(pos_weight=4) mean = sum l / N", "float64")].verdict == "ok"


def test_failing_identity_exits_nonzero(monkeypatch, capsys):
    bad = lambda dt, name: [check.Row("1 = 2", name, 1.0, 1e-9)]  # noqa: E731
    monkeypatch.setattr(check, "CHECKS", (bad,))
    assert check.main(["--dtypes", "float32"]) == 1
    assert "FAILED: 1 = 2 [float32]" in capsys.readouterr().err


def test_unknown_dtype_is_a_clear_error(capsys):
    assert check.main(["--dtypes", "float8"]) == 2
    assert "Valid choices" in capsys.readouterr().err


def test_tutorial_clipped_bce_numbers(rows):
    """Issue 18: the tutorial's four printed numbers, by its function and by nn.BCELoss(sum) on clipped p."""
    quoted = [q for _, q in check.TUTORIAL_CLIPPED]
    assert quoted == [3.0000150000863473e-05, 0.43386458262986227, 0.9571127263944101, 1.62964061975162]
    got = [r for (_, dt), r in rows.items() if r.identity.startswith("tutorial's function") and dt == "float64"]
    bce = [r for (_, dt), r in rows.items() if r.identity.startswith("nn.BCELoss(sum)") and dt == "float64"]
    assert len(got) == len(bce) == 4 and all(r.verdict == "ok" for r in got + bce)
    assert [float(r.detail.removeprefix("got ")) for r in got] == quoted  # to the last digit
    assert not any(r.identity.startswith("tutorial") for (_, dt), r in rows.items() if dt == "float32")
    p = check.torch.tensor([0.0, 1.0, 0.5], dtype=check.torch.float64)
    assert check.tutorial_clip(p).tolist() == [0.00001, 0.99999, 0.5] and p.tolist() == [0.0, 1.0, 0.5]


def test_ce_over_extra_dimensions(rows):
    for shape in ("(32, 10, 5)/(32, 5)", "(2, 3, 3, 3)/(2, 3, 3)"):
        for dt in ("float64", "float32"):
            mine = [r for (ident, d), r in rows.items() if ident.startswith(f"CE {shape}") and d == dt]
            assert len(mine) == 3 and all(r.verdict == "ok" for r in mine), (shape, dt)
    assert rows[("CE (32, 10, 5)/(32, 5) = NLL(log_softmax(dim=1), sum) / (N*d1*...)", "float32")].diff == 0
