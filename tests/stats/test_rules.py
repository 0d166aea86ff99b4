"""The decision rules (metasft.stats.rules) against independent computations, the failure classes of
issue 19 built by hand, and a fast fixed-seed run of the calibration benchmark."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from metasft.stats import INCONCLUSIVE, LOSS, MET, NOT_MET, verdicts
from metasft.stats import calibration, rules
from metasft.stats.verdicts import speed_evidence, summary_lines


# ----------------------------------------------------------------------------------------- helpers
def study(answers: dict, loss: dict | None = None, steps_by_model: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells, predictions) from explicit answers: {(model, task, n_shots): array (seeds, questions)} of
    0/1, or (steps, seeds, questions) with `steps_by_model[model]` the recorded steps."""
    rows = []
    for (model, task, n_shots), values in answers.items():
        values = np.asarray(values, dtype=float)
        steps = (steps_by_model or {}).get(model, [100 if n_shots else 0])
        values = values.reshape(len(steps), -1, values.shape[-1]) if values.ndim == 3 else values[None]
        losses = None if loss is None else np.asarray(loss[(model, task, n_shots)], dtype=float).reshape(values.shape)
        for i, step in enumerate(steps):
            for seed in range(values.shape[1]):
                for q in range(values.shape[2]):
                    rows.append((model, task, n_shots, seed, step, f"q{q:03d}", bool(values[i, seed, q]),
                                 1.0 - values[i, seed, q] if losses is None else losses[i, seed, q]))
    preds = pd.DataFrame(rows, columns=["model", "task", "n_shots", "seed", "step", "question_id", "correct", "loss"])
    cells = preds.groupby(["model", "task", "n_shots", "seed", "step"]).agg(
        accuracy=("correct", "mean"), loss=("loss", "mean")).reset_index()
    return cells, preds


def judged(cells, preds, **kw):
    return {v.name: v for v in verdicts(cells, preds, n_boot=2000, **kw)}


def agresti_min_interval(d: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Written out here: mean of d, Agresti-Min variance (0.5 question won by each side, 1 tied),
    t quantile with n + 2 - 1 degrees of freedom, half a question of continuity correction."""
    n = len(d)
    x = np.concatenate([d, [1.0, -1.0, 0.0]])
    w = np.concatenate([np.ones(n), [0.5, 0.5, 1.0]])
    m = (w * x).sum() / w.sum()
    var = (w * (x - m) ** 2).sum() / (w.sum() - 1) / w.sum()
    q = stats.t.ppf(1 - alpha / 2, w.sum() - 1)
    return d.mean() - q * math.sqrt(var) - 0.5 / n, d.mean() + q * math.sqrt(var) + 0.5 / n


# ----------------------------------------------------------------------------------------- intervals
def test_difference_is_the_t_test_for_an_unbounded_outcome():
    rng = np.random.default_rng(0)
    for c in (0.0, 0.1, -0.05):
        d = rng.normal(0.08, 0.3, 40)
        r = rules.difference([d], c, bounded=False)
        ref = stats.ttest_1samp(d, c, alternative="greater")
        ci = stats.ttest_1samp(d, c).confidence_interval(0.95)
        assert (r.lo, r.hi) == pytest.approx((ci.low, ci.high))
        assert r.p == pytest.approx(ref.pvalue)
        # the interval and the test agree: met exactly where the one-sided test rejects at 0.025
        assert (r.status == MET) == (ref.pvalue < 0.025)
    assert rules.difference([np.zeros(10)], 0.0, bounded=False).status == INCONCLUSIVE  # degenerate: no verdict


def test_difference_for_accuracy_is_agresti_min_with_continuity_correction():
    rng = np.random.default_rng(1)
    for n in (16, 24, 200):
        d = rng.integers(-1, 2, n).astype(float)
        r = rules.difference([d], 0.05, bounded=True)
        assert (r.lo, r.hi) == pytest.approx(agresti_min_interval(d))
    # no disagreement among 24 questions: a 5-point advantage stays possible (the bootstrap said [0, 0])
    r = rules.difference([np.zeros(24)], 0.05, bounded=True)
    assert r.lo < -0.05 and r.hi > 0.05 and r.status == INCONCLUSIVE


def test_macro_interval_over_tasks_uses_each_tasks_variance():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.1, 0.2, 50), rng.normal(-0.05, 0.4, 30)
    r = rules.difference([a, b], 0.0, bounded=False)
    va, vb = a.var(ddof=1) / 50, b.var(ddof=1) / 30
    se = math.sqrt(va + vb) / 2
    df = (va + vb) ** 2 / (va ** 2 / 49 + vb ** 2 / 29)
    assert r.estimate == pytest.approx((a.mean() + b.mean()) / 2)
    assert r.se == pytest.approx(se) and r.df == pytest.approx(df)
    assert r.lo == pytest.approx(r.estimate - stats.t.ppf(0.975, df) * se)


def test_sign_flip_pvalues_match_the_exact_binomial_for_discordant_questions():
    """Advantages in {-1, 0, 1}: the sign-flip test is the exact two-sided binomial test on the
    discordant questions (McNemar's exact test)."""
    d = np.r_[np.ones(4), np.zeros(20)]
    assert rules.sign_flip_pvalues([d[None]], 20_000)[0] == pytest.approx(stats.binomtest(4, 4).pvalue, abs=0.01)
    d = np.r_[np.ones(9), -np.ones(2), np.zeros(13)]
    assert rules.sign_flip_pvalues([d[None]], 20_000)[0] == pytest.approx(stats.binomtest(9, 11).pvalue, abs=0.01)


# ----------------------------------------------------------------------------------------- MDE
def exact_power(n: int, discordance: float, advantage: float, threshold: float, alpha: float = 0.05) -> float:
    """P(met) of a "beats" claim with one answer per model per question, enumerated over the
    trinomial (wins, losses, ties): interval (written out above) above the threshold and the exact
    binomial test of the discordant questions below alpha."""
    r = max(discordance, abs(advantage))
    p_win, p_lose = (r + advantage) / 2, (r - advantage) / 2
    power = 0.0
    for wins in range(n + 1):
        for losses in range(n + 1 - wins):
            prob = stats.multinomial.pmf([wins, losses, n - wins - losses], n, [p_win, p_lose, 1 - r])
            if prob < 1e-12:
                continue
            d = np.r_[np.ones(wins), -np.ones(losses), np.zeros(n - wins - losses)]
            lo, _ = agresti_min_interval(d, alpha)
            p = stats.binomtest(wins, wins + losses).pvalue if wins + losses else 1.0
            power += prob * (lo > threshold and p < alpha)
    return power


@pytest.mark.parametrize("n, discordance, threshold", [(24, 0.3, 0.0), (24, 0.1, 0.05), (40, 0.5, 0.0)])
def test_mde_is_the_exact_80_percent_power_effect(n, discordance, threshold):
    """The MDE the report prints is within a few points of the smallest effect (on a grid of one
    question) the rule detects with 80% power, enumerated exactly."""
    grid = np.arange(threshold + 1 / n, 1.0, 1 / n)
    exact = next(a for a in grid if exact_power(n, discordance, a, threshold) >= 0.8)
    simulated = rules.mde_difference(threshold, [n], 1, discordance, beats=True)
    assert simulated == pytest.approx(exact, abs=0.05)
    # and never below what the exact sign-flip test allows with 24 questions and one answer each (~0.3)
    if n == 24:
        assert simulated > 0.25


def test_mde_is_measured_from_the_claims_own_threshold():
    d = np.r_[np.ones(6), -np.ones(2), np.zeros(16)]
    at0 = rules.mde([d], 0.0, bounded=True, seeds=1, beats=True)
    at5 = rules.mde([d], 0.05, bounded=True, seeds=1, beats=True)
    assert at5 > at0 and at0 >= 1 / 24


# ----------------------------------------------------------------------------------------- the failure classes
def test_a_target_never_reached_is_censored_not_infinite():
    """SFT-Mixed never reaches 0.7 within 100 steps; FOMAML-SFT does at ~10: the ratio is a bound
    (more than 100 / 10), never infinity, and the verdict says 'at least'."""
    rng = np.random.default_rng(3)
    steps = [0, 10, 25, 50, 100]
    fast = np.stack([(rng.random((3, 60)) < p) for p in (0.5, 0.75, 0.8, 0.85, 0.9)])
    slow = np.stack([(rng.random((3, 60)) < p) for p in (0.3, 0.35, 0.4, 0.45, 0.5)])
    cells, preds = study({("fomaml", "algebra", 10): fast, ("sft_mixed", "algebra", 10): slow},
                         steps_by_model={"fomaml": steps, "sft_mixed": steps})
    v = judged(cells, preds, few_shot_tasks=["algebra"])
    c4 = v["C4"]
    assert math.isfinite(c4.estimate) and c4.estimate > 2 and "at least" in c4.explanation
    task = c4.evidence["per_task"]["algebra"]
    assert task["sft_censored"] and task["sft_steps"] == 100 and math.isinf(task["ratio_ci"][1])
    assert c4.status == MET  # more than 100 / 10 steps is more than 2x, with its interval
    assert "inf" not in "\n".join(summary_lines([c4])).replace("unbounded", "")
    # neither reaches it: no ratio at all, inconclusive (not "met" with [inf, inf])
    cells, preds = study({("fomaml", "algebra", 10): slow, ("sft_mixed", "algebra", 10): slow},
                         steps_by_model={"fomaml": steps, "sft_mixed": steps})
    v = judged(cells, preds, few_shot_tasks=["algebra"])
    assert v["C4"].status == INCONCLUSIVE and "Neither model reaches" in v["C4"].explanation


def test_crossings_are_interpolated_and_touching_is_not_meeting():
    """Curves whose crossings interpolate to 22 and 33.3 steps (ratio 1.5) read as 25 vs 50 (2x,
    'met') on recorded steps; here they are a ratio of ~1.5, and a ratio of exactly 2 is not 'met'."""
    steps = np.array([0, 25, 50], float)
    crossing, censored = rules.crossings(np.array([[0.48, 0.73, 0.8], [0.4, 0.6, 0.9]]), steps, 0.7)
    assert crossing == pytest.approx([22.0, 25 + 25 / 3]) and not censored.any()
    same = np.ones((40, 3))  # every question identical: no noise at all
    f = same * np.array([0.5, 0.9, 0.9])  # crosses at 12.5
    s = same * np.array([0.5, 0.6, 0.8])  # crosses at 25 + 25 * 0.1 / 0.2 = 37.5: ratio 3
    idx = np.random.default_rng(0).integers(0, 40, (200, 40))
    e = speed_evidence(f, s, steps, steps, 0.7, idx, 0.05)
    assert e["ratio"] == pytest.approx(3.0)
    s2 = same * np.array([0.5, 0.7, 0.8])  # crosses at exactly 25: ratio exactly 2
    e2 = speed_evidence(f, s2, steps, steps, 0.7, idx, 0.05)
    assert e2["ratio"] == pytest.approx(2.0) and e2["c4_status"] == INCONCLUSIVE


def test_matches_is_non_inferiority_with_a_margin():
    """FOMAML-SFT at 10 shots equal to SFT-Mixed at 50 on every question of 5 tasks x 200 questions
    was 'inconclusive' (CI [0, 0]); a 2-point deficit was 'not met'. Both are within the 5-point
    margin: met. A 12-point deficit is not."""
    rng = np.random.default_rng(4)
    tasks = [f"t{i}" for i in range(5)]

    def run(deficit):
        answers = {}
        for t in tasks:
            sft50 = (rng.random((2, 200)) < 0.5).astype(float)
            fom10 = sft50.copy()
            flip = rng.choice(200, int(round(deficit * 200)), replace=False)
            fom10[:, flip] = 0
            sft50[:, flip] = 1
            answers |= {("fomaml", t, 10): fom10, ("sft_mixed", t, 50): sft50, ("sft_mixed", t, 25): sft50}
        return judged(*study(answers), few_shot_tasks=tasks)["H1"]

    equal = run(0.0)
    assert equal.status == MET and equal.ci_lo > -0.05 and equal.threshold == -0.05 and equal.estimate == 0
    assert run(0.02).status == MET
    worse = run(0.12)
    assert worse.status == NOT_MET and worse.ci_hi < -0.05


def test_beats_needs_the_sign_flip_test_and_few_disagreements_decide_nothing():
    """24 questions: 4 discordant all for FOMAML-SFT (sign-flip p = 0.125) was 'met' on the bootstrap;
    none discordant read C2 'not met' ([0, 0]); one against FOMAML-SFT likewise. All inconclusive."""
    def zero_shot(wins, losses):
        f = np.r_[np.ones(wins), np.zeros(losses), np.ones(3), np.zeros(24 - wins - losses - 3)]
        s = np.r_[np.zeros(wins), np.ones(losses), np.ones(3), np.zeros(24 - wins - losses - 3)]
        answers = {(m, "science", 0): x[None] for m, x in (("fomaml", f), ("sft_mixed", s), ("base", s))}
        return judged(*study(answers), unseen_tasks=["science"], cross_domain_tasks=["science"])

    v = zero_shot(4, 0)
    assert v["C5"].status == INCONCLUSIVE and v["C5"].evidence["per_task"]["science"]["p_sign_flip"] > 0.1
    assert v["H2"].status == INCONCLUSIVE
    for wins, losses in ((0, 0), (0, 1)):
        v = zero_shot(wins, losses)
        assert v["C2"].status == INCONCLUSIVE and v["C2"].ci_hi > 0.05, (wins, losses, v["C2"].explanation)
    v = zero_shot(14, 0)  # 14 of 24 for FOMAML-SFT, none against: decided
    assert v["C5"].status == MET and v["C2"].status == MET


def test_family_and_signs():
    """H1-H3 are primary at alpha / 3, the rest exploratory at alpha; on the loss every number is
    FOMAML-SFT minus SFT-Mixed (negative: FOMAML-SFT better), in the verdict, its evidence and the CLI."""
    rng = np.random.default_rng(5)
    answers, loss = {}, {}
    for m, shift in (("fomaml", -0.3), ("sft_mixed", 0.0), ("base", 0.2)):
        for n in (0, 5, 10, 25, 50):
            answers[(m, "t", n)] = (rng.random((2, 50)) < 0.4).astype(float)
            loss[(m, "t", n)] = 1.0 + shift + rng.normal(0, 0.2, (2, 50))
    cells, preds = study(answers, loss)
    acc = judged(cells, preds, unseen_tasks=["t"], cross_domain_tasks=["t"])
    assert {n: (v.role, round(v.alpha, 4)) for n, v in acc.items()} == {
        **{n: ("primary", round(0.05 / 3, 4)) for n in ("H1", "H2", "H3")},
        **{n: ("exploratory", 0.05) for n in ("C1", "C2", "C3", "C4", "C5")}}
    custom = judged(cells, preds, unseen_tasks=["t"], primary=["C2"])
    assert custom["C2"].role == "primary" and custom["C2"].alpha == 0.05 and custom["H1"].role == "exploratory"
    lv = judged(cells, preds, unseen_tasks=["t"], cross_domain_tasks=["t"], outcome=LOSS)
    assert all(v.role == "exploratory" for v in lv.values())
    h2 = lv["H2"]
    assert h2.status == MET and h2.estimate == pytest.approx(-0.3, abs=0.08) and h2.ci_hi < 0
    assert h2.evidence["fomaml_minus_sft"][0] == h2.estimate and h2.evidence["sft_minus_base"][0] < 0
    line = next(x for x in summary_lines(list(lv.values())) if x.startswith("H2 (loss)"))
    assert f"{h2.estimate:+.3f}" in line and line.split()[4].startswith("-")


# ----------------------------------------------------------------------------------------- calibration
def test_calibration_keeps_every_error_rate_at_its_boundary():
    """The calibration benchmark at 200 runs on six regimes (one with three training runs per arm that
    differ, one with SFT-Mixed interpolated between shot levels as H1 / C1 read it, one with C3 over 2 tasks x 3
    shot levels) and two speed regimes (one with three training runs that differ; fixed seed): every claim's P(met | false) and P(not met | true)
    within its nominal one-sided error (0.025, primary claims 0.0083) + binomial noise."""
    regimes = (calibration.REGIMES[0], calibration.REGIMES[1], calibration.REGIMES[5], calibration.REGIMES[7],
               calibration.REGIMES[9], calibration.REGIMES[10])
    assert regimes[3].training_runs == 3 and regimes[3].train_effect > 0 and regimes[4].claims == ("H1", "C1")
    assert regimes[5].levels == 3 and regimes[5].claims == ("C3",)
    speed = (calibration.SPEED_REGIMES[0], calibration.SPEED_REGIMES[2])
    assert speed[1].training_runs == 3 and speed[1].run_sd > 0
    rows = calibration.calibrate(200, regimes=regimes, speed_regimes=speed, n_boot=300)
    assert len(rows) == 4 * 2 * 6 + 2 * 2 + 2 * 2 + 2
    for r in rows:  # each held to its own nominal error: 0.025, the primary claims' 0.0083
        bound = calibration.limit(200, r["level"])
        assert r["met_if_false"] <= bound and r["not_met_if_true"] <= bound, r
    # and the rules can say "met": power at 0.10 beyond the boundary with 200 questions x 5 seeds
    assert all(r["power"] > 0.9 for r in rows if r["regime"] == regimes[2].name)


def test_run_weights_draw_the_mean_of_training_runs_with_t_tails():
    """Projected on one step, the spread `run_weights` draws from J runs' deviations d is the mean's
    scale sd(d) / sqrt(J) times a t with J - 1 degrees of freedom (scipy's t, Kolmogorov-Smirnov); one
    run has no spread."""
    rng = np.random.default_rng(3)
    for runs in (3, 5):
        values = rng.normal(0, 1, runs)
        deviations = (values - values.mean())[:, None]
        draws = (rules.run_weights(rng, 20_000, runs) @ deviations)[:, 0]
        scale = values.std(ddof=1) / math.sqrt(runs)
        assert stats.kstest(draws / scale, stats.t(runs - 1).cdf).pvalue > 0.01
    assert not rules.run_weights(rng, 10, 1).any()


def test_expanded_percentile_level_matches_a_t_interval():
    """Hesterberg's expanded level: the normal quantile at alpha' / 2 equals sqrt(n / (n - 1)) times the
    t quantile at alpha / 2 with n - 1 df; it tends to alpha as n grows."""
    for n in (16, 24, 200):
        a = rules.expanded_alpha(0.05, n)
        assert stats.norm.isf(a / 2) == pytest.approx(math.sqrt(n / (n - 1)) * stats.t.isf(0.025, n - 1))
    assert rules.expanded_alpha(0.05, 16) < rules.expanded_alpha(0.05, 200) < 0.05


def test_the_calibration_judges_as_the_verdicts_do():
    """The calibration runs the rules on arrays; the verdicts run them from stored predictions. On 30
    simulated studies the two give the same C5 and C1 statuses."""
    rng = np.random.default_rng(6)
    for i in range(30):
        adv = rng.choice([0.0, 0.15, 0.3])
        p = np.clip(0.5 + rng.uniform(-0.3, 0.3, 24), max(0, -adv), 1 - adv)
        f = (rng.random((2, 24)) < p + adv).astype(float)
        s = (rng.random((2, 24)) < p).astype(float)
        answers = {("fomaml", "x", 10): f, ("sft_mixed", "x", 10): s, ("sft_mixed", "x", 25): s,
                   ("sft_mixed", "x", 50): s}
        v = judged(*study(answers), cross_domain_tasks=["x"], few_shot_tasks=["x"])
        d = (f - s).mean(axis=0)[None]
        c5 = calibration._difference([d], 0.0, bounded=True, alpha=0.05, beats=True, seed=0, n_resamples=9_999)
        c1 = calibration._difference([d], -0.05, bounded=True, alpha=0.05, beats=False, seed=0)
        assert v["C5"].status == (MET if c5["met"][0] else NOT_MET if c5["not_met"][0] else INCONCLUSIVE), i
        assert v["C1"].status == (MET if c1["met"][0] else NOT_MET if c1["not_met"][0] else INCONCLUSIVE), i


def test_training_seeds_put_the_spread_between_runs_in_the_interval():
    """Three training runs per arm whose checkpoints differ (FOMAML-SFT's runs +0.15, 0, -0.15 around
    SFT-Mixed's): with the replicates the interval adds the runs' spread (var of the run means / 3,
    at (3 - 1) / 2 degrees of freedom in Welch's), written out here; without them it is the questions' alone, and
    far narrower."""
    rng = np.random.default_rng(8)
    p = rng.uniform(0.3, 0.6, 80)
    answers = {}
    for j, shift in enumerate((0.15, 0.0, -0.15)):
        suffix = "" if j == 0 else f"_seed{j}"
        answers[(f"fomaml{suffix}", "x", 5)] = (rng.random((2, 80)) < p + shift).astype(float)
        answers[(f"sft_mixed{suffix}", "x", 5)] = (rng.random((2, 80)) < p).astype(float)
    cells, preds = study(answers)
    reps = {"fomaml": ["fomaml", "fomaml_seed1", "fomaml_seed2"],
            "sft_mixed": ["sft_mixed", "sft_mixed_seed1", "sft_mixed_seed2"]}
    with_runs = judged(cells, preds, cross_domain_tasks=["x"], replicates=reps)["C5"]
    one_run = judged(cells, preds, cross_domain_tasks=["x"])["C5"]
    adv = np.stack([(answers[(f, "x", 5)] - answers[(s, "x", 5)]).mean(axis=0)
                    for f, s in zip(reps["fomaml"], reps["sft_mixed"])])
    d, run_means = adv.mean(axis=0), adv.mean(axis=1)
    lo_q, _ = agresti_min_interval(d)
    var_q = ((d.mean() - 0.5 / 80 - lo_q) / stats.t.ppf(0.975, 81)) ** 2
    var_r = run_means.var(ddof=1) / 3
    df = (var_q + var_r) ** 2 / (var_q ** 2 / 81 + var_r ** 2 / 1)  # the runs' term at (J - 1) / 2
    half = stats.t.ppf(0.975, df) * math.sqrt(var_q + var_r) + 0.5 / 80
    assert with_runs.estimate == pytest.approx(d.mean())
    assert (with_runs.ci_lo, with_runs.ci_hi) == pytest.approx((d.mean() - half, d.mean() + half))
    assert with_runs.ci_hi - with_runs.ci_lo > 2 * (one_run.ci_hi - one_run.ci_lo)
    assert with_runs.evidence["per_task"]["x"]["training_runs"] == 3


def test_curves_at_the_target_before_adaptation():
    """Both at the target at step 0: no ratio (inconclusive, not 'not met' from [1, 1]); FOMAML-SFT
    alone at step 0: an unbounded ratio, said in words, not 'nan'."""
    steps = np.array([0, 10, 25], float)
    idx = np.random.default_rng(0).integers(0, 30, (200, 30))
    high = np.ones((30, 3)) * np.array([0.8, 0.85, 0.9])
    e = speed_evidence(high, high, steps, steps, 0.7, idx, 0.05)
    assert e["c4_status"] == INCONCLUSIVE and math.isnan(e["ratio"])
    slow = np.ones((30, 3)) * np.array([0.5, 0.6, 0.9])
    e = speed_evidence(high, slow, steps, steps, 0.7, idx, 0.05)
    assert e["c4_status"] == MET and math.isinf(e["ratio"])
    from metasft.stats.verdicts import _ratio_text
    assert _ratio_text(e).startswith("unbounded")


def test_a_training_run_without_results_drops_its_pair_not_the_matching():
    """fomaml_seed1 has no results: fomaml_seed2 must still be compared with sft_mixed_seed2."""
    rng = np.random.default_rng(9)
    answers = {}
    for j, shift in enumerate((0.0, None, 0.3)):
        suffix = "" if j == 0 else f"_seed{j}"
        if shift is not None:
            answers[(f"fomaml{suffix}", "x", 5)] = (rng.random((1, 60)) < 0.3 + shift).astype(float)
        answers[(f"sft_mixed{suffix}", "x", 5)] = (rng.random((1, 60)) < (0.3 if j != 1 else 0.9)).astype(float)
    reps = {"fomaml": ["fomaml", "fomaml_seed1", "fomaml_seed2"],
            "sft_mixed": ["sft_mixed", "sft_mixed_seed1", "sft_mixed_seed2"]}
    v = judged(*study(answers), cross_domain_tasks=["x"], replicates=reps)["C5"]
    expected = np.mean([(answers[(f, "x", 5)] - answers[(s, "x", 5)]).mean()
                        for f, s in (("fomaml", "sft_mixed"), ("fomaml_seed2", "sft_mixed_seed2"))])
    assert v.estimate == pytest.approx(expected) and v.evidence["per_task"]["x"]["training_runs"] == 2


def test_calibrations_vectorised_holm_matches_statsmodels(statsmodels_holm):
    """The calibration judges C3 on thousands of simulated families at once: its Holm over each column
    equals statsmodels' on 300 random families of 6."""
    p = np.random.default_rng(0).random((6, 300)) ** 3
    reference = np.stack([statsmodels_holm(col) for col in p.T], axis=1)
    assert calibration._holm(p) == pytest.approx(reference)


def test_speed_claims_carry_the_spread_between_training_runs():
    """Three training runs of FOMAML-SFT crossing the target at 8, 20 and 60 steps (SFT-Mixed never
    reaching it), each run's curve the same on 200 questions: the mean curve crosses near 20, but
    another three runs could cross anywhere from a few steps to past 50, so H3 and C4 are inconclusive;
    runs crossing at 18, 20 and 22 meet both."""
    steps = np.array([0, 10, 25, 50, 100], float)

    def runs(crossings):  # (runs, questions, steps): linear curves from 0.45 crossing 0.7 at each step count
        return np.stack([np.repeat(np.clip(0.45 + 0.25 / c * steps, 0, 0.9)[None], 200, axis=0) for c in crossings])

    never = np.full((3, 200, len(steps)), 0.5)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 200, (2000, 200))
    spread = speed_evidence(runs([8, 20, 60]), never, steps, steps, 0.7, idx, 0.05 / 3, rules.run_weights(rng, 2000, 3))
    assert spread["h3_status"] == INCONCLUSIVE and spread["c4_status"] == INCONCLUSIVE
    assert spread["fomaml_ci"][0] < 10 and spread["fomaml_ci"][1] > 50
    close = speed_evidence(runs([18, 20, 22]), never, steps, steps, 0.7, idx, 0.05 / 3, rules.run_weights(rng, 2000, 3))
    assert close["h3_status"] == MET and close["c4_status"] == MET
