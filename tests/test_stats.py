"""lossbench.analysis.stats: the percentile-bootstrap interval of a mean, checked against independent computations."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps

from lossbench.analysis import stats


def exact_percentile_interval(x: list[float]) -> tuple[float, float]:
    """The percentile interval of the exact bootstrap distribution: the means of all n^n equally likely
    resamples, enumerated (no random draws), and the 2.5% and 97.5% quantiles of that discrete distribution."""
    means = np.array([np.mean(r) for r in itertools.product(x, repeat=len(x))])
    low, high = np.quantile(means, [0.025, 0.975], method="inverted_cdf")
    return float(low), float(high)


def t_interval(x: list[float]) -> tuple[float, float]:
    n, m, s = len(x), float(np.mean(x)), float(np.std(x, ddof=1))
    h = sps.t.ppf(0.975, n - 1) * s / math.sqrt(n)
    return m - h, m + h


def test_three_seeds_give_the_range_of_the_three_values():
    # Each all-equal resample (x_i, x_i, x_i) has probability 1/27 > 2.5%: the exact percentile interval is
    # [min, max], and 9999 resamples find it.
    x = [0.812, 0.797, 0.845]
    assert exact_percentile_interval(x) == pytest.approx((min(x), max(x)))
    iv = stats.mean_ci(x)
    assert (iv.mean, iv.low, iv.high, iv.n) == pytest.approx((np.mean(x), min(x), max(x), 3))


def test_interval_matches_the_exact_bootstrap_distribution():
    x = [0.61, 0.64, 0.58, 0.70, 0.66, 0.62]  # 6^6 = 46656 resamples, enumerated
    low, high = exact_percentile_interval(x)
    iv = stats.mean_ci(x)
    # Monte Carlo error of a 2.5% quantile from 9999 draws is well under 5% of the data's spread here.
    spread = max(x) - min(x)
    assert iv.low == pytest.approx(low, abs=0.05 * spread)
    assert iv.high == pytest.approx(high, abs=0.05 * spread)
    assert iv.mean == pytest.approx(np.mean(x))


@pytest.mark.parametrize("n", [3, 5, 8])
def test_few_seeds_give_an_interval_inside_the_t_interval(n):
    # For small n the bootstrap ignores the extra uncertainty in the standard deviation that Student's t
    # accounts for: its interval lies inside the t-interval (the reason stats says "provisional").
    x = list(np.random.default_rng(n).normal(0.9, 0.01, n))
    iv, (tl, th) = stats.mean_ci(x), t_interval(x)
    assert tl < iv.low <= iv.mean <= iv.high < th


def test_many_seeds_agree_with_the_t_interval():
    x = list(np.random.default_rng(0).normal(0.9, 0.01, 200))
    iv, (tl, th) = stats.mean_ci(x), t_interval(x)
    assert iv.low == pytest.approx(tl, abs=0.1 * (th - tl)) and iv.high == pytest.approx(th, abs=0.1 * (th - tl))


def test_coverage_of_the_true_mean():
    # 300 samples of 10 seeds from a distribution with a known mean: a 95% percentile interval from 10 values
    # covers the true mean in roughly 90% of them (the bootstrap's known small-sample undercoverage).
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(300):
        iv = stats.mean_ci(list(rng.normal(0.5, 0.1, 10)))
        hits += iv.low <= 0.5 <= iv.high
    assert 0.84 <= hits / 300 <= 0.97


def test_equal_values_give_a_zero_width_interval_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # BCa would warn and return NaN here
        iv = stats.mean_ci([0.5, 0.5, 0.5, 0.5])
    assert (iv.mean, iv.low, iv.high, iv.half_width) == (0.5, 0.5, 0.5, 0.0)


def test_one_seed_is_not_enough_and_none_is_nothing():
    one = stats.mean_ci([0.9])
    assert one.n == 1 and one.mean == 0.9 and math.isnan(one.low) and math.isnan(one.high)
    assert stats.format_interval(one) == "0.9000 [not enough seeds]"
    assert stats.format_interval(stats.mean_ci([])) == "–"
    assert stats.mean_ci([float("nan"), 0.25, float("inf")]).n == 1  # non-finite values are not seeds' results
    assert stats.format_interval(stats.mean_ci([1.0, 2.0, 3.0]), ".2f") == "2.00 [1.00, 3.00]"


def test_curve_interval_is_the_interval_at_each_step():
    y = np.array([[0.5, 0.6, np.nan, 0.9],
                  [0.4, 0.7, 0.8, np.nan],
                  [0.45, 0.65, 0.7, np.nan],
                  [0.55, 0.61, 0.75, np.nan]])
    mean, low, high = stats.curve_ci(y)
    for j in range(3):  # steps with 4 and 3 runs: the same interval as for that column alone
        iv = stats.mean_ci(list(y[:, j]))
        assert (mean[j], low[j], high[j]) == pytest.approx((iv.mean, iv.low, iv.high))
    assert mean[3] == 0.9 and math.isnan(low[3]) and math.isnan(high[3])  # one run: a mean, no band


@pytest.mark.parametrize("low,high,higher_is_better,expected", [
    (0.01, 0.03, True, "bce better"), (0.01, 0.03, False, "bce worse"),
    (-0.03, -0.01, True, "bce worse"), (-0.03, -0.01, False, "bce better"),
    (-0.01, 0.02, True, stats.NO_DIFFERENCE), (0.0, 0.0, False, stats.NO_DIFFERENCE),
])
def test_verdict_respects_the_metric_direction(low, high, higher_is_better, expected):
    diff = stats.Interval((low + high) / 2, low, high, 5)
    assert stats.verdict(diff, higher_is_better, "bce") == expected
    assert stats.verdict(stats.Interval(0.02, math.nan, math.nan, 1), higher_is_better) == stats.NOT_ENOUGH


def test_a_bound_at_zero_up_to_float_noise_is_no_difference():
    """Differences that are 0 in most seeds: the bootstrap's lower bound can come out as 2e-17, not 0."""
    iv = stats.Interval(0.00014, 2.220446049250313e-17, 0.00028, 5)
    assert stats.verdict(iv, higher_is_better=True) == stats.NO_DIFFERENCE
    assert stats.verdict(stats.Interval(-0.00014, -0.00028, -1e-18, 5), True) == stats.NO_DIFFERENCE
    assert stats.verdict(stats.Interval(0.00014, 1e-9, 0.00028, 5), True) == "A better"
