"""The figures' bands: a 95% interval per plotted point, over test questions.

The same unit and method as the verdicts (`metasft.stats.verdicts`): a question's score is the mean
over seeds of its value (correct 0/1, or its reference-solution loss), and the interval is
`cluster_bootstrap_ci` over questions. A band over 2 seeds' standard deviation, as the figures drew
before (issue 12), says nothing about the questions a run could have drawn.
"""
from __future__ import annotations

import pandas as pd

from metasft.stats import ACCURACY, QuestionScores, cluster_bootstrap_ci
from metasft.stats.questions import Outcome

# Bands are drawn, not tested: a percentile interval from 2,000 replicates is steady to the eye and
# keeps a design-size report (hundreds of points) in seconds.
MAX_BOOT = 2_000
BAND_COLUMNS = ["model", "task", "n_shots", "step", "mean", "lo", "hi", "n_questions", "n_seeds"]


def final_bands(cells: pd.DataFrame, predictions: pd.DataFrame | None, outcome: Outcome = ACCURACY,
                n_boot: int = MAX_BOOT) -> pd.DataFrame | None:
    """One row per (model, task, n_shots) at the final adaptation step: BAND_COLUMNS (step = -1).

    None when the predictions carry no per-question values of `outcome` (the figure then draws the
    cell means without a band and says so).
    """
    scores = QuestionScores(cells, predictions, outcome)
    if not scores.available:
        return None
    rows = []
    for model, task, n in sorted({(m, t, int(n)) for m, t, n in cells[["model", "task", "n_shots"]].itertuples(index=False)}):
        if n not in scores.shots(model, task):
            continue
        per_question = scores.final(model, task, n).dropna().to_numpy(float)
        if len(per_question):
            rows.append(_row(model, task, n, -1, per_question, len(scores.seeds(model, task, n)), n_boot))
    return pd.DataFrame(rows, columns=BAND_COLUMNS)


def step_bands(cells: pd.DataFrame, predictions: pd.DataFrame | None, task: str, n_shots: int,
               n_boot: int = MAX_BOOT) -> pd.DataFrame | None:
    """Accuracy by adaptation step at one (task, n_shots): one row per (model, step), BAND_COLUMNS."""
    scores = QuestionScores(cells, predictions, ACCURACY)
    if not scores.available:
        return None
    rows = []
    for model in sorted(cells.loc[(cells["task"] == task) & (cells["n_shots"] == n_shots), "model"].unique()):
        if n_shots not in scores.shots(model, task):
            continue
        table = scores.by_step(model, task, n_shots)  # question x step
        seeds = len(scores.seeds(model, task, n_shots))
        for step in table.columns:
            per_question = table[step].dropna().to_numpy(float)
            if len(per_question):
                rows.append(_row(model, task, n_shots, int(step), per_question, seeds, n_boot))
    return pd.DataFrame(rows, columns=BAND_COLUMNS)


def _row(model, task, n_shots, step, per_question, n_seeds, n_boot) -> list:
    est, lo, hi = cluster_bootstrap_ci([per_question], n_boot=min(n_boot, MAX_BOOT))
    return [model, task, n_shots, step, est, lo, hi, len(per_question), n_seeds]
