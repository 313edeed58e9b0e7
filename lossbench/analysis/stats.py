"""Uncertainty over seeds: the 95% confidence interval of a mean, and paired differences with a verdict.

Every interval is a percentile bootstrap from ``scipy.stats.bootstrap`` (9999 resamples, a fixed seed so a
report is reproducible). Why percentile rather than BCa:
  - BCa's acceleration is a jackknife estimate from the n values themselves; with the 3-5 seeds a study has,
    it is noise, and BCa fails outright (NaN and a warning) when every value is equal, which is common here:
    an AUC of exactly 0.5 for every dead run, or a paired difference of exactly 0 between two losses that
    compute the same thing (CrossEntropyLoss and LogSoftmax + NLLLoss).
  - the percentile interval always lies within the range of the data, is invariant under monotone
    transforms, and is what rliable (Agarwal et al. 2021) uses for few-run comparisons.
Read intervals from few seeds with care: every bootstrap interval of a mean is too narrow for small n (it
uses the spread of the sample as if it were the population's). With 3 seeds the 95% percentile interval is
exactly [min, max] of the 3 values (each all-equal resample has probability 1/27 > 2.5%), which covers the
true median only about 75% of the time. Use 5 or more seeds for a verdict you rely on.

Below MIN_SEEDS = 3 values no interval and no verdict is given: with 2 seeds the percentile interval is just
the two values themselves, which brackets the true median only half of the time, and a "95% CI" that is a
coin flip misleads (a stuck and a healthy seed would read as [0.50, 0.90]). The report shows each seed
instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 9999
SEED = 0
METHOD = "percentile"
DESCRIPTION = f"{CONFIDENCE:.0%} CI: percentile bootstrap over seeds, {N_RESAMPLES} resamples"
DESCRIPTION_CURVES = f"{CONFIDENCE:.0%} CI of that mean (percentile bootstrap, {N_RESAMPLES} resamples)"
MIN_SEEDS = 3
NOT_ENOUGH = "not enough seeds"
NO_DIFFERENCE = "no difference detected at this sample size"


@dataclass(frozen=True)
class Interval:
    """The mean of n values and its confidence interval (low = high = NaN when n < MIN_SEEDS)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def _bootstrap(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap CI of the mean along axis 0 (one interval per column of a 2-D array)."""
    from scipy.stats import bootstrap

    res = bootstrap((data,), np.mean, axis=0, confidence_level=CONFIDENCE, n_resamples=N_RESAMPLES,
                    method=METHOD, vectorized=True, rng=np.random.default_rng(SEED))
    return np.asarray(res.confidence_interval.low), np.asarray(res.confidence_interval.high)


def mean_ci(values: Sequence[float]) -> Interval:
    """Mean and 95% CI of finite values (one per seed). With fewer than MIN_SEEDS values the interval is NaN."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    if len(x) < MIN_SEEDS:
        return Interval(float(x.mean()), math.nan, math.nan, len(x))
    low, high = _bootstrap(x)
    return Interval(float(x.mean()), float(low), float(high), len(x))


def curve_ci(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% CI at each step of curves y (runs, steps), NaN where a run has no value.

    A step's interval uses the runs that have a value there; with fewer than MIN_SEEDS it is NaN (no band).
    """
    mean = np.full(y.shape[1], np.nan)
    low, high = mean.copy(), mean.copy()
    ok = np.isfinite(y)
    for runs in np.unique(ok.T, axis=0):  # the steps that have values from the same runs go in one call
        cols = (ok.T == runs).all(axis=1)
        sub = y[runs][:, cols]
        if runs.sum() >= 1:
            mean[cols] = sub.mean(axis=0)
        if runs.sum() >= MIN_SEEDS:
            low[cols], high[cols] = _bootstrap(sub)
    return mean, low, high


def verdict(diff: Interval, higher_is_better: bool, a: str = "A") -> str:
    """Plain reading of a paired difference a - b: 'a better', 'a worse', or no difference detected."""
    if diff.n < MIN_SEEDS:
        return NOT_ENOUGH
    # a bound that is 0 up to float64 noise (an average of differences such as 0.8253 - 0.8253 can come out
    # as 2e-17) does not exclude 0
    eps = 1e-12 * max(1.0, abs(diff.low), abs(diff.high))
    if diff.low > eps or diff.high < -eps:
        return f"{a} better" if (diff.low > eps) == higher_is_better else f"{a} worse"
    return NO_DIFFERENCE


def format_interval(iv: Interval, fmt: str = ".4f") -> str:
    """'mean [low, high]'; 'mean [not enough seeds]' below MIN_SEEDS values; '–' for none."""
    if iv.n == 0:
        return "–"
    if iv.n < MIN_SEEDS:
        return f"{iv.mean:{fmt}} [{NOT_ENOUGH}]"
    return f"{iv.mean:{fmt}} [{iv.low:{fmt}}, {iv.high:{fmt}}]"
