"""The decision rules behind every verdict, each written as a test (issue 19).

**Differences** ("FOMAML-SFT beats SFT-Mixed by more than δ", "FOMAML-SFT at 10 shots is no worse than
SFT-Mixed at 30 shots by more than the margin m"). The quantity is the mean over tasks of each task's
mean per-question advantage (a question's score is the mean over seeds); the claim is "quantity > c"
(c = δ, or -m for a non-inferiority claim). `difference` gives its (1 - alpha) interval and

    met           lo > c     the one-sided test of "quantity <= c" rejects at alpha/2
    not met       hi < c     the one-sided test of "quantity >= c" rejects at alpha/2
    inconclusive  otherwise, and always when the interval is degenerate

so the interval and the test agree by construction, and touching c is not clearing it. The interval is
a t interval over questions centred on the observed mean (Welch's degrees of freedom over tasks;
with several training runs, their spread added). For a bounded outcome (accuracy)
each task's variance is taken from its questions plus Agresti & Min's (2005) pseudo-counts: half a
question won by each side and one tied, so that no disagreement among 24 questions leaves a
5-point difference possible (the percentile bootstrap gave [0, 0]) and few disagreements do not
shrink the interval below what the data can carry. A "beats" claim (c >= 0) also needs the sign-flip
test of no difference to reject (`sign_flip_pvalues`); its error rates are measured by
`metasft.stats.calibration`.

**Speeds** (steps to a target accuracy). `crossings` interpolates where a curve first reaches the
target between recorded steps; a curve that never reaches it is right-censored at its last recorded
step: it says "more than L steps", never infinity. `ratio_bounds` turns bootstrap replicates of two
crossings into an interval of their ratio whose censored ends are bounds, not numbers.

**Power** (`power_difference`, `mde_difference`): the probability that `difference` says met at a
planted advantage, by simulating the test actually used (sign flip included) on answers drawn at the
run's own disagreement rate, questions and seeds; the MDE is the smallest planted advantage
met with 80% probability, never below one question's worth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

MET, NOT_MET, INCONCLUSIVE = "met", "not met", "inconclusive"
ALPHA = 0.05
POWER = 0.80
# Agresti & Min (2005): half a question won by each model and one tied, added to each task
PSEUDO_VALUES = np.array([1.0, -1.0, 0.0])
PSEUDO_WEIGHTS = np.array([0.5, 0.5, 1.0])


@dataclass(frozen=True)
class Difference:
    """A difference claim judged: `estimate` [`lo`, `hi`] at 1 - alpha, its standard error and
    degrees of freedom, `p` the one-sided p-value of "quantity <= threshold" (small: met), `status`."""
    estimate: float
    lo: float
    hi: float
    se: float
    df: float
    p: float
    threshold: float
    status: str


def _task_moments(x: np.ndarray, bounded: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """(R, n) advantages -> per row: mean, variance of the mean, effective n."""
    n = x.shape[-1]
    mean = x.mean(axis=-1)
    if bounded:
        w_sum = n + PSEUDO_WEIGHTS.sum()
        aug_mean = (x.sum(axis=-1) + PSEUDO_WEIGHTS @ PSEUDO_VALUES) / w_sum
        ss = ((x - aug_mean[..., None]) ** 2).sum(axis=-1) + (
            PSEUDO_WEIGHTS * (PSEUDO_VALUES - aug_mean[..., None]) ** 2).sum(axis=-1)
        return mean, ss / (w_sum - 1) / w_sum, w_sum
    if n < 2:
        return mean, np.full(mean.shape, np.nan), n
    return mean, x.var(axis=-1, ddof=1) / n, n


def difference_batch(samples: Sequence[np.ndarray], threshold: float, *, bounded: bool, alpha: float = ALPHA,
                     run_means: Sequence[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """`difference` for R simulated studies at once: each sample (task) is an (R, n_t) array of
    per-question advantages (each the mean over the training runs, when there are several).

    `run_means`: per task an (R, J) array of each of J matched training runs' mean advantage. With
    J >= 2 the spread between training runs is added once, from each run's mean over tasks (a
    checkpoint better on one task is usually better on all): var / J with (J - 1) / 2 degrees of
    freedom in Welch-Satterthwaite. The halved degrees of freedom are calibrated: at J - 1 the
    interval erred 0.037 for a nominal 0.025 when runs differed; capping the whole interval at J - 1
    left almost no power. This two-stage variance counts the run x question noise twice (wide).
    Returns arrays of length R: estimate, lo, hi, se, df, p, met, not_met."""
    arrays = [np.atleast_2d(np.asarray(s, dtype=float)) for s in samples]
    if not arrays or any(a.shape[-1] == 0 for a in arrays):
        raise ValueError("difference needs one or more non-empty samples of per-question advantages")
    k = len(arrays)
    terms = []  # (variance of the macro mean, its degrees of freedom)
    estimate = 0.0
    for a in arrays:
        mean, var, n = _task_moments(a, bounded)
        estimate = estimate + mean / k
        terms.append((var / k ** 2, max(n - 1, 1)))
    if run_means is not None:
        runs = [np.atleast_2d(np.asarray(r, dtype=float)) for r in run_means]
        if len({r.shape[-1] for r in runs}) != 1:
            raise ValueError(f"every task needs the same training runs, got {[r.shape[-1] for r in runs]}")
        macro = sum(runs) / k  # (R, J): each training run's mean over tasks
        if macro.shape[-1] >= 2:
            terms.append((macro.var(axis=-1, ddof=1) / macro.shape[-1], (macro.shape[-1] - 1) / 2))
    var = sum(v for v, _ in terms)
    # a bounded outcome moves in steps of one question: half a step of continuity correction
    cc = sum(0.5 / a.shape[-1] for a in arrays) / k if bounded else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        df = var ** 2 / sum(v ** 2 / d for v, d in terms)  # Welch-Satterthwaite
        se = np.sqrt(var)
        usable = np.isfinite(se) & (se > 0)
        df1 = np.where(usable, df, 1.0)
        q = stats.t.ppf(1 - alpha / 2, df1)
        lo = np.where(usable, estimate - q * se - cc, np.nan)
        hi = np.where(usable, estimate + q * se + cc, np.nan)
        # the one-sided p of "quantity <= threshold", continuity-corrected like the interval
        p = np.where(usable, stats.t.sf((estimate - cc - threshold) / np.where(usable, se, 1.0), df1), np.nan)
    return dict(estimate=estimate, lo=lo, hi=hi, se=se, df=df, p=p,
                met=usable & (lo > threshold), not_met=usable & (hi < threshold))


def difference(samples: Sequence[Sequence[float]], threshold: float, *, bounded: bool, alpha: float = ALPHA,
               run_means: Sequence[Sequence[float]] | None = None) -> Difference:
    """The claim "mean over tasks of the mean per-question advantage > `threshold`" (module doc);
    `run_means`: per task, each training run's mean advantage (several training seeds)."""
    runs = None if run_means is None else [np.asarray(r, dtype=float)[None, :] for r in run_means]
    r = {k: float(np.asarray(v).ravel()[0]) for k, v in
         difference_batch([np.asarray(s, dtype=float)[None, :] for s in samples], threshold, bounded=bounded,
                          alpha=alpha, run_means=runs).items()}
    status = MET if r["met"] else NOT_MET if r["not_met"] else INCONCLUSIVE
    return Difference(r["estimate"], r["lo"], r["hi"], r["se"], r["df"], r["p"], threshold, status)


def sign_flip_pvalues(samples: Sequence[np.ndarray], n_resamples: int = 4_000, seed: int = 0) -> np.ndarray:
    """Two-sided sign-flip p-values of "the macro mean of advantages is 0" for R runs at once: each
    sample an (R, n_t) array. Each question's sign is flipped at random (Monte Carlo, the same flips
    for every run); p = (1 + #|flipped| >= |observed|) / (1 + n_resamples); 1 where every advantage is 0.
    `metasft.stats.significance.sign_flip_test` is the exact single-run version."""
    arrays = [np.atleast_2d(np.asarray(s, dtype=float)) for s in samples]
    rng = np.random.default_rng(seed)
    k = len(arrays)
    observed = sum(a.mean(axis=-1) for a in arrays) / k
    flipped = 0.0
    for a in arrays:
        signs = rng.choice([-1.0, 1.0], size=(n_resamples, a.shape[-1]))
        flipped = flipped + a @ signs.T / a.shape[-1]  # (R, n_resamples)
    flipped = flipped / k
    extreme = (np.abs(flipped) >= np.abs(observed)[:, None] - 1e-12).sum(axis=-1)
    p = (1 + extreme) / (1 + n_resamples)
    all_zero = np.all([~a.any(axis=-1) for a in arrays], axis=0)
    return np.where(all_zero, 1.0, p)


# ----------------------------------------------------------------------------------------- power
def paired_answers(rng: np.random.Generator, runs: int, n: int, seeds: int, discordance: float,
                   advantage) -> np.ndarray:
    """(runs, n) per-question advantages (the mean over `seeds` of a's answer minus b's) of two
    models answering n questions, each seed independently: P(a right, b wrong) = (r + Δ) / 2,
    P(a wrong, b right) = (r - Δ) / 2, r = `discordance` raised to |Δ| where needed; the rest are
    ties (both right or both wrong), which add nothing to the advantage. `advantage`: a number, or
    (runs,) one per simulated study (a training run's own effect)."""
    adv = np.clip(np.broadcast_to(np.asarray(advantage, dtype=float), (runs,)), -1, 1)[:, None, None]
    r = np.minimum(1.0, np.maximum(discordance, np.abs(adv)))
    win, lose = (r + adv) / 2, (r - adv) / 2
    u = rng.random((runs, n, seeds))
    return np.where(u < win, 1.0, np.where(u < win + lose, -1.0, 0.0)).mean(axis=-1)


def power_difference(threshold: float, advantage: float, shape: Sequence[int], seeds: int,
                     discordance: float, *, alpha: float = ALPHA, beats: bool, training_runs: int = 1,
                     run_sd: float = 0.0, runs: int = 400, seed: int = 0) -> float:
    """P(met) of `difference` (and, for a "beats" claim, the sign-flip test) at a planted advantage,
    on tasks of `shape` questions each, by simulation (`paired_answers`); with several training runs,
    each run's advantage drawn around it with sd `run_sd` (shared by the tasks)."""
    rng = np.random.default_rng(seed)
    effects = rng.normal(0, run_sd, (training_runs, runs)) if training_runs > 1 else np.zeros((1, runs))
    per_task = [np.stack([paired_answers(rng, runs, n, seeds, discordance, advantage + e) for e in effects], axis=1)
                for n in shape]  # (runs, training runs, n)
    samples = [x.mean(axis=1) for x in per_task]
    run_means = [x.mean(axis=2) for x in per_task] if training_runs > 1 else None
    met = difference_batch(samples, threshold, bounded=True, alpha=alpha, run_means=run_means)["met"]
    if beats:
        met = met & (sign_flip_pvalues(samples, n_resamples=1_000, seed=seed + 1) < alpha)
    return float(met.mean())


def mde_difference(threshold: float, shape: Sequence[int], seeds: int, discordance: float, *,
                   alpha: float = ALPHA, beats: bool, training_runs: int = 1, run_sd: float = 0.0,
                   power: float = POWER, runs: int = 400) -> float:
    """The smallest planted advantage (on a grid of one question's worth of the smallest task) that
    `difference` finds met with probability >= `power`; NaN if even an advantage of 1 does not."""
    step = 1.0 / min(shape)
    grid = np.arange(max(threshold, -1.0) + step, 1.0 + 1e-9, step)

    def enough(i: int) -> bool:
        return power_difference(threshold, grid[i], shape, seeds, discordance, alpha=alpha, beats=beats,
                                training_runs=training_runs, run_sd=run_sd, runs=runs) >= power

    lo, hi = 0, len(grid) - 1
    if not enough(hi):
        return math.nan
    while lo < hi:  # power rises with the planted advantage: bisect the grid
        mid = (lo + hi) // 2
        if enough(mid):
            hi = mid
        else:
            lo = mid + 1
    return float(grid[lo])


def mde_unbounded(se: float, df: float, threshold: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The planted advantage a t interval of standard error `se` finds above `threshold` with
    probability `power` (normal approximation to its noncentral t); NaN without an se."""
    if not (math.isfinite(se) and se > 0):
        return math.nan
    return float(threshold + (stats.t.ppf(1 - alpha / 2, df) + stats.norm.ppf(power)) * se)


# ----------------------------------------------------------------------------------------- speed
def crossings(curves: np.ndarray, steps: np.ndarray, target: float) -> tuple[np.ndarray, np.ndarray]:
    """(R, S) accuracy curves at recorded `steps` -> (R,) the step where each first reaches `target`,
    linear between the last recorded step below it and the first at or above it (0 when it starts
    there), and (R,) whether it never does: then the crossing is censored at the last recorded step
    (the curve needs more than that many steps)."""
    curves = np.atleast_2d(np.asarray(curves, dtype=float))
    steps = np.asarray(steps, dtype=float)
    reached = curves >= target
    censored = ~reached.any(axis=1)
    first = np.argmax(reached, axis=1)
    prev = np.maximum(first - 1, 0)
    rows = np.arange(len(curves))
    y0, y1 = curves[rows, prev], curves[rows, first]
    x0, x1 = steps[prev], steps[first]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(y1 > y0, (target - y0) / (y1 - y0), 1.0)
    at = np.where(first == 0, steps[0], x0 + np.clip(frac, 0, 1) * (x1 - x0))
    return np.where(censored, steps[-1], at), censored


def run_weights(rng: np.random.Generator, replicates: int, runs: int) -> np.ndarray:
    """(replicates, runs) weights w: for J >= 2 training runs whose mean curves deviate from their
    grand mean by d_r (sum 0), w @ d is a draw from a multivariate t with the runs' sample covariance
    / J as its scale and J - 1 degrees of freedom: the spread of the mean over J training runs, with
    the heavy tails its estimate from J runs calls for. (Resampling 3 runs with replacement gives 10
    distinct means and no such tails: H3 / C4 then erred 0.05-0.10 for a nominal 0.025; at (J - 1) / 2
    degrees of freedom, as `difference_batch` uses, they kept no power: metasft.stats.calibration.)
    Zero weights for one run."""
    if runs < 2:
        return np.zeros((replicates, max(runs, 1)))
    normal = rng.standard_normal((replicates, runs)) / math.sqrt(runs * (runs - 1))
    return normal * np.sqrt((runs - 1) / rng.chisquare(runs - 1, (replicates, 1)))


# how a censored value says "more than": a relative step well above the float tolerance with which a
# threshold counts as touched (metasft.stats.verdicts), so "more than 100 steps" clears "above 100"
MORE_THAN = 1e-6


def beyond(values: np.ndarray, censored: np.ndarray) -> np.ndarray:
    """Lower bounds of crossings: a censored one needs *more* than its last step."""
    return np.where(censored, values * (1 + MORE_THAN), values)


def ratio_bounds(num: np.ndarray, num_censored: np.ndarray, den: np.ndarray,
                 den_censored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replicates of num / den where either side may be right-censored (the true steps exceed the
    value given): (the ratio's lower bound, its upper bound) per replicate. A censored numerator
    makes the ratio more than num / den (upper unknown: inf); a censored denominator, at most num / den
    (lower: 0); both censored, anything. A denominator of 0 (FOMAML-SFT at the target before any
    step) with a numerator above 0 is an unbounded ratio (inf, inf); 0 / 0 (both at the target before
    any step) is no ratio at all (0, inf)."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.inf)
    lower = np.where(den_censored, 0.0, np.where(num_censored, ratio * (1 + MORE_THAN), ratio))
    upper = np.where(num_censored, np.inf, ratio)
    both_at_start = (num == 0) & (den == 0)  # no steps for either: no ratio at all
    return np.where(both_at_start, 0.0, lower), np.where(both_at_start, np.inf, upper)


def expanded_alpha(alpha: float, n: int) -> float:
    """The level at which a percentile bootstrap over `n` questions keeps a t interval's coverage:
    Hesterberg's expanded percentile interval, z_{alpha'/2} = sqrt(n / (n - 1)) t_{alpha/2, n-1} (the
    plain percentile interval under-covers at 16-24 questions)."""
    if n < 2:
        return alpha
    return float(2 * stats.norm.sf(math.sqrt(n / (n - 1)) * stats.t.isf(alpha / 2, n - 1)))


def bound_quantiles(lower: np.ndarray, upper: np.ndarray, alpha: float = ALPHA) -> tuple[float, float]:
    """The percentile interval of replicates known only as [lower, upper]: the alpha/2 quantile of
    the lower bounds and the 1 - alpha/2 quantile of the upper bounds (inf when too many are open)."""
    return (float(np.quantile(lower, alpha / 2, method="inverted_cdf")),
            float(np.quantile(upper, 1 - alpha / 2, method="inverted_cdf")))


def mde(samples: Sequence[Sequence[float]], threshold: float, *, bounded: bool, seeds: int, beats: bool,
        alpha: float = ALPHA, run_means: Sequence[Sequence[float]] | None = None) -> float:
    """The MDE of `difference` on these tasks' question counts: for a bounded outcome by simulation
    (`paired_answers`) at the disagreement rate that reproduces the observed variance of the
    per-question advantages over `seeds` seeds (var = (r - mean^2) / seeds), at least one question's
    worth, and with several training runs (`run_means`, per task) at their observed spread; for an
    unbounded one from the observed standard error (and its degrees of freedom)."""
    arrays = [np.asarray(s, dtype=float) for s in samples]
    if not arrays or any(len(a) < 2 for a in arrays):
        return math.nan
    if bounded:
        shape = [len(a) for a in arrays]
        k = max(seeds, 1)
        rate = float(np.mean([k * a.var(ddof=1) + a.mean() ** 2 for a in arrays]))
        disagree = min(1.0, max(rate, 1.0 / min(shape)))
        macro = None if run_means is None else np.mean([np.asarray(r, dtype=float) for r in run_means], axis=0)
        training_runs = 1 if macro is None else len(macro)
        run_sd = float(np.std(macro, ddof=1)) if training_runs > 1 else 0.0
        return mde_difference(threshold, shape, k, disagree, alpha=alpha, beats=beats, training_runs=training_runs,
                              run_sd=run_sd)
    d = difference(arrays, threshold, bounded=False, alpha=alpha, run_means=run_means)
    return mde_unbounded(d.se, d.df, threshold, alpha)
