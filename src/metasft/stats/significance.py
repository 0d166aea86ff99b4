"""Paired tests for two models evaluated on the same questions.

The primary test clusters by question, with seeds nested inside (Miller 2024, "Adding Error Bars to
Evals": the test questions, not the seeds, are the unit of independence). Each question contributes
one paired difference d_q = (mean over seeds of model a's score) - (the same for model b):
- the verdicts' interval and the MDE are `metasft.stats.rules`' (a t interval with pseudo-counts, an
  MDE simulated from the test actually used); `cluster_bootstrap_ci` (scipy.stats.bootstrap,
  stratified by task) draws the figures' bands;
- the p-value is a sign-flip permutation test of mean(d_q) = 0 (`sign_flip_test`,
  scipy.stats.permutation_test: under "no difference" a and b are exchangeable on every question);
The design's paired t-test over seeds (`paired_ttest`) stays as a secondary view; with few seeds it
has little power, and it has no test at all for degenerate rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05


def stars(p: float) -> str:
    """The design's marks: '***' p < 0.001, '**' p < 0.01, '*' p < 0.05, '' otherwise (and NaN)."""
    if not p == p:
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


@dataclass(frozen=True)
class TTest:
    """The design's paired t-test over seeds; `why_none` says why there is no test (t, p NaN)."""
    t: float
    p: float
    why_none: str = ""


def paired_ttest(a: Sequence[float], b: Sequence[float], floor: float | None = 0.0) -> TTest:
    """`scipy.stats.ttest_rel(a, b)`, a[i] and b[i] from the same seed, or no test with the reason:
    fewer than 3 seeds, every value at `floor` (accuracy 0: nothing to compare), or differences
    without variance (t would be 0/0 or +-inf; such a row is never significant)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_ttest needs two 1-d arrays of the same length, got {a.shape} and {b.shape}")
    if len(a) < 3:
        return TTest(math.nan, math.nan, f"{len(a)} seed(s), fewer than 3")
    if floor is not None and np.all(a == floor) and np.all(b == floor):
        return TTest(math.nan, math.nan, "both models at floor in every seed")
    d = a - b
    if np.ptp(d) <= 1e-12:
        return TTest(math.nan, math.nan, "the difference is the same in every seed (zero variance)")
    result = stats.ttest_rel(a, b)
    return TTest(float(result.statistic), float(result.pvalue))


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def sign_flip_test(d: Sequence[float], n_resamples: int = 9_999, seed: int = 0) -> float:
    """Two-sided p-value of mean(d) = 0 by flipping the sign of each question's difference.

    Exact (all 2^n sign patterns) when 2^n <= n_resamples, else Monte Carlo with scipy's
    (1 + extreme) / (1 + n_resamples) convention. p = 1 when every d is 0.
    """
    d = np.asarray(d, dtype=float)
    if d.ndim != 1 or len(d) == 0:
        raise ValueError(f"sign_flip_test needs a non-empty 1-d array, got shape {d.shape}")
    if not np.any(d):
        return 1.0
    result = stats.permutation_test((d,), _mean, permutation_type="samples", vectorized=True,
                                    n_resamples=n_resamples, alternative="two-sided",
                                    random_state=np.random.default_rng(seed))
    return float(min(1.0, result.pvalue))


def cluster_bootstrap_ci(samples: Sequence[Sequence[float]], n_boot: int = 10_000, alpha: float = ALPHA,
                         seed: int = 0) -> tuple[float, float, float]:
    """(estimate, lo, hi): the mean over `samples` of each sample's mean, and its percentile
    (1 - alpha) interval from resampling each sample's elements (questions) within itself.

    One sample is the plain bootstrap over questions; several (one per task) give the stratified
    bootstrap of the macro mean. A sample of one question cannot be resampled: (estimate, NaN, NaN).
    """
    arrays = [np.asarray(s, dtype=float) for s in samples]
    if not arrays or any(a.ndim != 1 or len(a) == 0 for a in arrays):
        raise ValueError("cluster_bootstrap_ci needs one or more non-empty 1-d samples")
    estimate = float(np.mean([a.mean() for a in arrays]))
    if any(len(a) < 2 for a in arrays):
        return estimate, math.nan, math.nan
    if all(np.ptp(a) == 0 for a in arrays):  # nothing varies: every replicate is the estimate
        return estimate, estimate, estimate

    def macro(*xs, axis=-1):
        return np.mean([np.mean(x, axis=axis) for x in xs], axis=0)

    result = stats.bootstrap(tuple(arrays), macro, n_resamples=n_boot, confidence_level=1 - alpha,
                             method="percentile", vectorized=True, paired=False,
                             random_state=np.random.default_rng(seed))
    ci = result.confidence_interval
    return estimate, float(ci.low), float(ci.high)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values, in the input order.

    Sorted ascending p_(1) <= ... <= p_(m): adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)).
    NaN entries stay NaN and do not count in m.
    """
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    if m == 0:
        return adjusted
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted
