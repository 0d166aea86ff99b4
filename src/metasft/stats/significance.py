"""Paired significance tests: the t-test over seeds, the bootstrap over questions, Holm's correction.

The design compares FOMAML-SFT with SFT-Mixed by a paired t-test over runs (seeds) and marks
p-values with stars. With few seeds that test has little power, so we add a paired bootstrap over
test questions, and Holm's step-down correction for testing several tasks at once.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats


def stars(p: float) -> str:
    """The design's marks: '***' p < 0.001, '**' p < 0.01, '*' p < 0.05, '' otherwise (and NaN)."""
    if not p == p:
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(t, two-sided p) of `scipy.stats.ttest_rel(a, b)`; a[i] and b[i] come from the same seed.

    When every difference is zero scipy returns NaN (0/0); we report t = 0.0, p = 1.0 instead: the
    data show no difference at all. Equal non-zero differences give scipy's limit t = +-inf, p = 0
    (without its precision warning); seeds that change nothing make that meaningless, so check
    `n_seeds` and the spread. With fewer than two pairs there is no test: (NaN, NaN).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_ttest needs two 1-d arrays of the same length, got {a.shape} and {b.shape}")
    if len(a) < 2:
        return math.nan, math.nan
    d = a - b
    if np.all(d == 0):
        return 0.0, 1.0
    if np.ptp(d) <= 1e-12:  # equal up to float rounding
        return math.copysign(math.inf, d[0]), 0.0
    result = stats.ttest_rel(a, b)
    return float(result.statistic), float(result.pvalue)


def paired_bootstrap_ci(
    correct_a: Sequence[float],
    correct_b: Sequence[float],
    n_boot: int = 10_000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float, float]:
    """Paired bootstrap over test questions of the accuracy difference a - b.

    `correct_a[i]`, `correct_b[i]`: question i's correctness under each model (bool, or a float in
    [0, 1] such as the share of seeds that got it right). Each replicate resamples question indices
    with replacement, the same indices for both models. Returns (diff, lo, hi, p): the observed
    difference, the percentile (1 - alpha) interval, and a two-sided p-value for "no difference"
    from the replicates shifted to mean zero: p = (1 + #{|d* - diff| >= |diff|}) / (n_boot + 1)
    (Efron & Tibshirani 1993, ch. 16). p = 1 when diff = 0.
    """
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired_bootstrap_ci needs two non-empty 1-d arrays of one length, got {a.shape} and {b.shape}")
    d = a - b
    diff = float(d.mean())
    rng = np.random.default_rng(seed)
    # Chunks keep the (replicates, questions) index array near 16 MB whatever the test set size.
    chunk = max(1, 2_000_000 // len(d))
    means = np.concatenate([
        d[rng.integers(0, len(d), size=(min(chunk, n_boot - start), len(d)))].mean(axis=1)
        for start in range(0, n_boot, chunk)
    ])
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    extreme = np.count_nonzero(np.abs(means - diff) >= abs(diff) - 1e-12)
    p = 1.0 if diff == 0 else (1 + extreme) / (n_boot + 1)
    return diff, float(lo), float(hi), float(p)


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
