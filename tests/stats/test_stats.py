"""Statistics against scipy, hand computations and synthetic data with a known answer."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from metasft.stats import (
    accuracy_at,
    adaptation_gap,
    adaptation_speed,
    compare_models,
    final_step,
    holm,
    paired_bootstrap_ci,
    paired_ttest,
    sample_efficiency,
    sample_efficiency_interpolated,
    stars,
    summarize,
)

DESIGN_CURVE = {0: 0.3, 5: 0.5, 10: 0.65, 25: 0.75, 50: 0.80}


# --- paired t-test -----------------------------------------------------------------------------

def test_paired_ttest_matches_scipy():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.random(5)
        b = a - 0.05 + 0.03 * rng.standard_normal(5)
        t, p = paired_ttest(a, b)
        ref = scipy_stats.ttest_rel(a, b)
        assert t == pytest.approx(ref.statistic, rel=1e-12) and p == pytest.approx(ref.pvalue, rel=1e-12)


def test_paired_ttest_degenerate_cases():
    assert paired_ttest([0.5, 0.6, 0.7], [0.5, 0.6, 0.7]) == (0.0, 1.0)  # scipy would give NaN
    assert paired_ttest([0.5, 0.6, 0.7], [0.4, 0.5, 0.6]) == (math.inf, 0.0)  # scipy's limit
    assert paired_ttest([0.3, 0.6, 0.9], [0.4, 0.7, 1.0]) == (-math.inf, 0.0)
    t, p = paired_ttest([0.5], [0.4])
    assert math.isnan(t) and math.isnan(p)
    with pytest.raises(ValueError):
        paired_ttest([1, 2], [1, 2, 3])


def test_stars():
    assert [stars(p) for p in (0.0005, 0.001, 0.005, 0.01, 0.03, 0.05, 0.2, math.nan)] == \
        ["***", "**", "**", "*", "*", "", "", ""]


# --- paired bootstrap --------------------------------------------------------------------------

def test_bootstrap_ci_covers_the_true_difference():
    """Synthetic questions: a right with probability .7, b with .6, correlated through a shared
    difficulty u, 10% of questions drawn independently; the true difference is .1."""
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(40):
        u = rng.random(800)
        a, b = u < 0.7, u < 0.6
        noise = rng.random(800) < 0.1
        a = np.where(noise, rng.random(800) < 0.7, a)
        b = np.where(noise, rng.random(800) < 0.6, b)
        diff, lo, hi, p = paired_bootstrap_ci(a, b, n_boot=2000, seed=trial)
        assert diff == pytest.approx(a.mean() - b.mean())
        assert lo <= diff <= hi
        covered += lo <= 0.1 <= hi
    assert covered >= 34  # nominal 95% of 40 = 38; allow sampling slack


def test_bootstrap_p_value_behaves():
    rng = np.random.default_rng(2)
    a = rng.random(500) < 0.8
    b = rng.random(500) < 0.5
    _, lo, _, p = paired_bootstrap_ci(a, b, n_boot=4000)
    assert p < 0.001 and lo > 0
    # Identical predictions: no difference at all.
    assert paired_bootstrap_ci(a, a) == (0.0, 0.0, 0.0, 1.0)
    # No true difference: p is roughly uniform, so rarely below .05.
    small = sum(paired_bootstrap_ci(rng.random(300) < 0.5, rng.random(300) < 0.5, n_boot=1000, seed=s)[3] < 0.05
                for s in range(40))
    assert small <= 6


def test_bootstrap_is_deterministic_and_accepts_shares():
    a, b = np.array([1.0, 0.6, 0.2, 1.0]), np.array([0.8, 0.6, 0.0, 0.4])
    assert paired_bootstrap_ci(a, b, seed=3) == paired_bootstrap_ci(a, b, seed=3)
    assert paired_bootstrap_ci(a, b)[0] == pytest.approx(0.25)


def test_bootstrap_matches_a_loop_implementation():
    """Same resampled indices for both models: check against a plain loop with the same draws."""
    rng = np.random.default_rng(4)
    a, b = rng.random(50) < 0.6, rng.random(50) < 0.5
    diff, lo, hi, _ = paired_bootstrap_ci(a, b, n_boot=500, seed=9)
    draws = np.random.default_rng(9).integers(0, 50, size=(500, 50))
    means = [a[idx].mean() - b[idx].mean() for idx in draws]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))


# --- Holm --------------------------------------------------------------------------------------

def test_holm_hand_computation():
    # sorted .005, .01, .03, .04 -> x4, x3, x2, x1 = .02, .03, .06, .04 -> running max .02 .03 .06 .06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([0.02]) == pytest.approx([0.02])
    adjusted = holm([0.01, math.nan, 0.02])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)


def test_holm_matches_statsmodels():
    from statsmodels.stats import multitest  # a test dependency (pyproject [test])
    rng = np.random.default_rng(5)
    for _ in range(200):
        p = rng.random(rng.integers(1, 10)) ** 3
        assert holm(p) == pytest.approx(multitest.multipletests(p, method="holm")[1])


# --- curves ------------------------------------------------------------------------------------

def test_sample_efficiency_design_example():
    assert sample_efficiency(DESIGN_CURVE, 0.7) == 25
    assert sample_efficiency(DESIGN_CURVE, 0.3) == 0
    assert sample_efficiency(DESIGN_CURVE, 0.9) == math.inf
    assert sample_efficiency_interpolated(DESIGN_CURVE, 0.7) == pytest.approx(17.5)
    assert sample_efficiency_interpolated(DESIGN_CURVE, 0.2) == 0
    assert sample_efficiency_interpolated(DESIGN_CURVE, 0.9) == math.inf


def test_accuracy_at_adaptation_speed_and_gap():
    assert accuracy_at(DESIGN_CURVE, 30) == pytest.approx(0.76)
    assert accuracy_at(DESIGN_CURVE, 25) == 0.75
    assert math.isnan(accuracy_at(DESIGN_CURVE, 100))
    assert adaptation_speed({0: 0.2, 20: 0.5, 50: 0.72, 100: 0.8}, 0.7) == 50
    assert adaptation_speed({0: 0.2, 100: 0.6}, 0.7) == math.inf
    assert adaptation_gap(1.2, 0.9) == pytest.approx(0.3)


def _cells(rows):
    return pd.DataFrame(rows, columns=["model", "task", "n_shots", "seed", "step", "accuracy", "loss"])


def test_summarize_uses_the_final_step_and_sample_std():
    cells = _cells([
        ("m", "t", 5, 0, 0, 0.1, 2.0), ("m", "t", 5, 0, 10, 0.5, 1.0),
        ("m", "t", 5, 1, 0, 0.1, 2.0), ("m", "t", 5, 1, 10, 0.7, 1.2),
        ("m", "t", 0, 0, 0, 0.2, 1.5),
    ])
    assert len(final_step(cells)) == 3
    out = summarize(cells).set_index("n_shots")
    assert out.loc[5, "mean"] == pytest.approx(0.6)
    assert out.loc[5, "std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert out.loc[5, "n_seeds"] == 2 and out.loc[5, "step"] == 10 and out.loc[5, "loss"] == pytest.approx(1.1)
    assert out.loc[5, "loss_std"] == pytest.approx(np.std([1.0, 1.2], ddof=1))
    assert math.isnan(out.loc[0, "std"]) and math.isnan(out.loc[0, "loss_std"])
    with pytest.raises(ValueError, match="repeated"):
        summarize(pd.concat([cells, cells.iloc[:1]]))
    with pytest.raises(ValueError, match="loss"):
        summarize(cells.drop(columns="loss"))


# --- compare_models ----------------------------------------------------------------------------

def test_compare_models_agrees_with_scipy_and_holm():
    rng = np.random.default_rng(6)
    cells, preds = [], []
    for task, gap in (("algebra", 0.15), ("physics", 0.0)):
        for seed in range(5):
            u = rng.random(200)
            for model, base in (("fomaml", 0.5 + gap), ("sft_mixed", 0.5)):
                right = u < base  # physics: both models answer alike
                cells += [(model, task, 10, seed, 0, 0.3, 2.0), (model, task, 10, seed, 50, right.mean(), 1.0)]
                preds += [(model, task, 10, seed, 50, q, bool(r)) for q, r in enumerate(right)]
                preds += [(model, task, 10, seed, 0, q, False) for q in range(200)]  # not the final step
    cells = _cells(cells)
    preds = pd.DataFrame(preds, columns=["model", "task", "n_shots", "seed", "step", "question_id", "correct"])
    out = compare_models(cells, preds).set_index("task")
    final = final_step(cells)
    for task in ("algebra", "physics"):
        a = final[(final.model == "fomaml") & (final.task == task)].sort_values("seed").accuracy
        b = final[(final.model == "sft_mixed") & (final.task == task)].sort_values("seed").accuracy
        ref = scipy_stats.ttest_rel(a, b) if task == "algebra" else (0.0, 1.0)  # scipy: NaN on all-zero
        assert out.loc[task, "t"] == pytest.approx(ref[0])
        assert out.loc[task, "p"] == pytest.approx(ref[1])
        assert out.loc[task, "diff"] == pytest.approx(a.mean() - b.mean())
        assert out.loc[task, "boot_diff"] == pytest.approx(a.mean() - b.mean())  # same questions every seed
        assert out.loc[task, "n_questions"] == 200 and out.loc[task, "n_seeds"] == 5
    assert out["p_holm"].to_numpy() == pytest.approx(holm(out["p"].to_numpy()))
    assert out.loc["algebra", "p"] < 0.05 and out.loc["algebra", "stars"] and out.loc["algebra", "ci_lo"] > 0
    assert out.loc["physics", "p_holm"] == 1.0 and out.loc["physics", "p_boot"] == 1.0


def test_compare_models_without_predictions():
    cells = _cells([("fomaml", "t", 0, 0, 0, 0.4, 1.0), ("sft_mixed", "t", 0, 0, 0, 0.3, 1.0)])
    out = compare_models(cells, None)
    assert len(out) == 1 and out["diff"].iloc[0] == pytest.approx(0.1)
    assert math.isnan(out["p"].iloc[0]) and math.isnan(out["p_boot"].iloc[0]) and out["stars"].iloc[0] == ""
