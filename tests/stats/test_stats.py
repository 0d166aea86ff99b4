"""Statistics against scipy, hand computations and synthetic data with a known answer."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from metasft.stats import (
    LOSS,
    accuracy_at,
    adaptation_gap,
    adaptation_speed,
    compare_models,
    final_step,
    cluster_bootstrap_ci,
    holm,
    paired_ttest,
    sample_efficiency,
    sample_efficiency_interpolated,
    sign_flip_test,
    stars,
    summarize,
)

DESIGN_CURVE = {0: 0.3, 5: 0.5, 10: 0.65, 25: 0.75, 50: 0.80}


# --- paired t-test over seeds (the design's secondary view) ------------------------------------

@pytest.mark.floors
def test_paired_ttest_matches_scipy():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.random(5)
        b = a - 0.05 + 0.03 * rng.standard_normal(5)
        t = paired_ttest(a, b)
        ref = scipy_stats.ttest_rel(a, b)
        assert t.t == pytest.approx(ref.statistic, rel=1e-12) and t.p == pytest.approx(ref.pvalue, rel=1e-12)
        assert t.why_none == ""


@pytest.mark.parametrize("a, b, why", [
    ([1 / 12, 1 / 12], [0.0, 0.0], "fewer than 3"),                 # the default demo's t = inf row
    ([0.5, 0.6, 0.7], [0.4, 0.5, 0.6], "zero variance"),             # scipy: t = inf, p = 0
    ([0.5, 0.6, 0.7], [0.5, 0.6, 0.7], "zero variance"),             # scipy: NaN
    ([0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], "floor"),
])
def test_paired_ttest_degenerate_rows_have_no_test(a, b, why):
    t = paired_ttest(a, b)
    assert math.isnan(t.t) and math.isnan(t.p) and why in t.why_none and stars(t.p) == ""


def test_stars():
    assert [stars(p) for p in (0.0005, 0.001, 0.005, 0.01, 0.03, 0.05, 0.2, math.nan)] == \
        ["***", "**", "**", "*", "*", "", "", ""]


# --- clustered tests: sign flip, bootstrap, MDE ---------------------------------------------------

def _enumerated_sign_flip(d):
    """Two-sided p of mean(d) over all 2^n sign patterns, written out here."""
    signs = np.array(list(itertools.product([-1, 1], repeat=len(d))))
    means = signs @ d / len(d)
    return np.mean(np.abs(means) >= abs(d.mean()) - 1e-12)


def test_sign_flip_is_exact_for_few_questions():
    rng = np.random.default_rng(1)
    for _ in range(5):
        d = rng.integers(-1, 2, size=10).astype(float) + 0.2 * rng.random(10)
        assert sign_flip_test(d) == pytest.approx(_enumerated_sign_flip(d), rel=1e-9)
    assert sign_flip_test(np.r_[1.0, np.zeros(11)]) == 1.0  # one question of 12 decides nothing
    assert sign_flip_test(np.zeros(8)) == 1.0


def test_sign_flip_monte_carlo_is_close_to_exact():
    d = np.random.default_rng(2).normal(0.3, 1.0, 16)
    assert sign_flip_test(d, n_resamples=20_000) == pytest.approx(_enumerated_sign_flip(d), abs=0.01)


def test_cluster_bootstrap_matches_a_loop_implementation():
    rng = np.random.default_rng(3)
    x, y = rng.random(60), rng.random(40) - 0.2
    est, lo, hi = cluster_bootstrap_ci([x], n_boot=4000, seed=0)
    draws = np.random.default_rng(7).integers(0, 60, size=(4000, 60))
    means = x[draws].mean(axis=1)
    assert est == pytest.approx(x.mean())
    assert (lo, hi) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])), abs=0.01)
    # stratified: each task resampled within itself, the macro mean of the two
    est, lo, hi = cluster_bootstrap_ci([x, y], n_boot=4000, seed=0)
    rx, ry = np.random.default_rng(8).integers(0, 60, (4000, 60)), np.random.default_rng(9).integers(0, 40, (4000, 40))
    macro = (x[rx].mean(axis=1) + y[ry].mean(axis=1)) / 2
    assert est == pytest.approx((x.mean() + y.mean()) / 2)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(macro, [0.025, 0.975])), abs=0.01)
    assert cluster_bootstrap_ci([np.ones(5)]) == (1.0, 1.0, 1.0)
    assert math.isnan(cluster_bootstrap_ci([np.ones(1)])[1])


def test_sign_flip_keeps_its_level_under_the_null():
    """No effect: 400 simulated runs (60 questions of varied difficulty x 3 seeds, both models
    answering independently at the same rate); the share called significant at 0.05 stays within
    the binomial 99.9% range of 5%."""
    rng = np.random.default_rng(5)
    hits = 0
    for run in range(400):
        rate = rng.uniform(0.1, 0.9, 60)[:, None]
        a = (rng.random((60, 3)) < rate).mean(axis=1)
        b = (rng.random((60, 3)) < rate).mean(axis=1)
        hits += sign_flip_test(a - b, n_resamples=999, seed=run) < 0.05
    lo, hi = scipy_stats.binom.ppf([0.0005, 0.9995], 400, 0.05)
    assert lo <= hits <= hi, hits


def test_sign_flip_detects_a_planted_effect():
    """A 10-point advantage over 200 questions x 5 seeds is found (power near 1 at this size)."""
    rng = np.random.default_rng(6)
    found = 0
    for run in range(20):
        rate = rng.uniform(0.2, 0.7, 200)[:, None]
        a = (rng.random((200, 5)) < rate + 0.1).mean(axis=1)
        b = (rng.random((200, 5)) < rate).mean(axis=1)
        found += sign_flip_test(a - b, n_resamples=999, seed=run) < 0.05
    assert found >= 18


# --- Holm --------------------------------------------------------------------------------------

def test_holm_hand_computation():
    # sorted .005, .01, .03, .04 -> x4, x3, x2, x1 = .02, .03, .06, .04 -> running max .02 .03 .06 .06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([0.02]) == pytest.approx([0.02])
    adjusted = holm([0.01, math.nan, 0.02])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)


def test_holm_matches_statsmodels(statsmodels_holm):
    rng = np.random.default_rng(5)
    for _ in range(200):
        p = rng.random(rng.integers(1, 10)) ** 3
        assert holm(p) == pytest.approx(statsmodels_holm(p))


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

def _preds(rows):
    return pd.DataFrame(rows, columns=["model", "task", "n_shots", "seed", "step", "question_id", "correct", "loss"])


def _cells_of(preds):
    """Cells as the store aggregates them: accuracy and mean loss of each cell's questions."""
    grouped = preds.groupby(["model", "task", "n_shots", "seed", "step"])
    return grouped.agg(accuracy=("correct", "mean"), loss=("loss", "mean")).reset_index()


def test_compare_models_clusters_by_question():
    rng = np.random.default_rng(6)
    rows = []
    for task, gap in (("algebra", 0.15), ("physics", 0.0)):
        rate = rng.uniform(0.2, 0.6, 200)
        for seed in range(5):
            for model, extra in (("fomaml", gap), ("sft_mixed", 0.0)):
                right = rng.random(200) < rate + extra
                rows += [(model, task, 10, seed, 50, q, bool(r), 1.0 - r) for q, r in enumerate(right)]
                rows += [(model, task, 10, seed, 0, q, False, 2.0) for q in range(200)]  # not the final step
    preds = _preds(rows)
    out = compare_models(_cells_of(preds), preds).set_index("task")
    final = preds[preds.step == 50]
    for task in ("algebra", "physics"):
        by_q = final[final.task == task].groupby(["question_id", "model"])["correct"].mean().unstack()
        d = (by_q["fomaml"] - by_q["sft_mixed"]).to_numpy()
        assert out.loc[task, "diff"] == pytest.approx(d.mean())
        assert out.loc[task, "n_questions"] == 200 and out.loc[task, "n_seeds"] == 5
        se = d.std(ddof=1) / math.sqrt(200)
        # the simulated MDE of 200 questions x 5 seeds is near the normal-theory one at this row's spread
        normal = (scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)) * se
        assert out.loc[task, "mde"] == pytest.approx(normal, abs=0.03)
        # the interval is close to the normal one for 200 questions
        assert out.loc[task, "ci_lo"] == pytest.approx(d.mean() - 1.96 * se, abs=0.01)
        seeds = final[final.task == task].groupby(["model", "seed"])["correct"].mean().unstack(0)
        ref = scipy_stats.ttest_rel(seeds["fomaml"], seeds["sft_mixed"])
        assert out.loc[task, "t"] == pytest.approx(ref.statistic) and out.loc[task, "p_t"] == pytest.approx(ref.pvalue)
    assert out["p_holm"].to_numpy() == pytest.approx(holm(out["p"].to_numpy()))
    assert out.loc["algebra", "p_holm"] < 0.001 and out.loc["algebra", "stars"] == "***"
    assert out.loc["physics", "stars"] == ""
    loss = compare_models(_cells_of(preds), preds, outcome=LOSS).set_index("task")
    assert loss.loc["algebra", "diff"] == pytest.approx(-out.loc["algebra", "diff"])  # loss = 1 - correct here


def test_compare_models_never_stars_a_degenerate_row():
    """The default demo's row: 12 questions, 2 seeds, FOMAML-SFT got the same one question right in
    both seeds, SFT-Mixed none. The t-test over seeds was t = inf, p = 0, '***'."""
    rows = [(m, "competition", 8, s, 4, q, m == "fomaml" and q == 3, 1.0) for m in ("fomaml", "sft_mixed")
            for s in (0, 1) for q in range(12)]
    preds = _preds(rows)
    row = compare_models(_cells_of(preds), preds).iloc[0]
    assert math.isnan(row["t"]) and "fewer than 3" in row["t_none"]
    assert row["p"] == 1.0 and row["stars"] == ""
    assert row["mde"] > 0.25  # 12 questions: a sign-flip test needs most of them to disagree one way
    floor = _preds([(m, "competition", 8, s, 4, q, False, 1.0) for m in ("fomaml", "sft_mixed")
                    for s in (0, 1, 2) for q in range(12)])
    row = compare_models(_cells_of(floor), floor).iloc[0]
    assert row["at_bound"] == "floor" and row["p"] == 1.0 and row["stars"] == "" and "floor" in row["t_none"]
    assert row["mde"] > 0.25 and math.isfinite(row["ci_lo"]) and row["ci_lo"] < 0 < row["ci_hi"]


def test_compare_models_without_predictions_is_empty():
    preds = _preds([("fomaml", "t", 0, 0, 0, 0, True, 1.0), ("sft_mixed", "t", 0, 0, 0, 0, False, 1.0)])
    assert compare_models(_cells_of(preds), None).empty
