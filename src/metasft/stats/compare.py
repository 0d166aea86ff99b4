"""One model against another, per task and shots level, at the final adaptation step.

The primary test clusters by question (`metasft.stats.significance`); the design's t-test over seeds
is kept beside it as a secondary view. Shapes of `cells` and `predictions`: `metasft.stats.curves`
and `metasft.stats.questions`.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from metasft.stats.questions import ACCURACY, Outcome, QuestionScores, aligned
from metasft.stats import rules
from metasft.stats.significance import holm, paired_ttest, sign_flip_test, stars

COMPARISON_COLUMNS = [
    "task", "n_shots", "n_seeds", "n_questions", "mean_a", "std_a", "mean_b", "std_b", "diff", "ci_lo", "ci_hi",
    "p", "p_holm", "stars", "mde", "at_bound", "t", "p_t", "t_none",
]


def paired_row(scores: QuestionScores, model_a: str, model_b: str, task: str, n_shots: int,
               seed: int = 0) -> dict | None:
    """One comparison at one (task, n_shots) over the seeds both ran; None when they share none."""
    seeds = sorted(set(scores.seeds(model_a, task, n_shots)) & set(scores.seeds(model_b, task, n_shots)))
    if not seeds:
        return None
    a, b = aligned(scores.final(model_a, task, n_shots, seeds), scores.final(model_b, task, n_shots, seeds))
    if len(a) < 2:
        return None
    outcome = scores.outcome
    bounded = outcome.floor is not None and outcome.ceiling is not None
    d = a - b                                         # natural units: a's value minus b's
    interval = rules.difference([d], 0.0, bounded=bounded)  # the interval the verdicts' rule uses
    effect = rules.mde([d], 0.0, bounded=bounded, seeds=len(seeds), beats=True)
    per_seed_a = [scores.final(model_a, task, n_shots, [s]).mean() for s in seeds]
    per_seed_b = [scores.final(model_b, task, n_shots, [s]).mean() for s in seeds]
    t = paired_ttest(per_seed_a, per_seed_b, floor=outcome.floor)
    return dict(
        task=task, n_shots=n_shots, n_seeds=len(seeds), n_questions=len(d),
        mean_a=float(a.mean()), std_a=float(np.std(per_seed_a, ddof=1)) if len(seeds) > 1 else math.nan,
        mean_b=float(b.mean()), std_b=float(np.std(per_seed_b, ddof=1)) if len(seeds) > 1 else math.nan,
        diff=interval.estimate, ci_lo=interval.lo, ci_hi=interval.hi, p=sign_flip_test(d, seed=seed),
        mde=effect, at_bound=outcome.at_bound(a, b), t=t.t, p_t=t.p, t_none=t.why_none,
    )


def compare_models(
    cells: pd.DataFrame,
    predictions: pd.DataFrame | None,
    model_a: str = "fomaml",
    model_b: str = "sft_mixed",
    outcome: Outcome = ACCURACY,
    seed: int = 0,
) -> pd.DataFrame:
    """Model a vs model b, one row per (task, n_shots) both ran (COMPARISON_COLUMNS).

    diff = mean_a - mean_b over the questions and seeds both have (natural units: for the loss,
    negative means a is better); ci_lo, ci_hi: the verdicts' interval (`metasft.stats.rules`, t over
    questions with pseudo-counts for accuracy); p: sign-flip test over questions; p_holm, stars: Holm
    over every row of this table (one family); mde: the smallest true diff > 0 the sign-flip test and
    interval together find with 80% power (simulated at this row's disagreement rate); at_bound:
    "floor"/"ceiling" when both sit there; t, p_t: the design's paired t-test over seeds, NaN with
    the reason in t_none when there is no test. Empty without predictions.
    """
    scores = QuestionScores(cells, predictions, outcome)
    rows = []
    if scores.available:
        for task in scores.tasks(model_a):
            for n_shots in scores.shots(model_a, task):
                row = paired_row(scores, model_a, model_b, task, n_shots, seed)
                if row is not None:
                    rows.append(row)
    out = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    out["p_holm"] = holm(out["p"].to_numpy(dtype=float))
    out["stars"] = [stars(p) for p in out["p_holm"]]
    return out
