"""One model against another, per task and shots level: means, paired tests, corrected p-values.

`predictions` has one row per question per cell: model, task, n_shots, seed, step, question_id,
correct (bool); `cells` is described in `metasft.stats.curves`.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from metasft.stats.curves import CELL_KEYS, check_columns, final_step
from metasft.stats.significance import holm, paired_bootstrap_ci, paired_ttest, stars

PREDICTION_COLUMNS = CELL_KEYS + ["question_id", "correct"]


def _per_question(predictions: pd.DataFrame, final: pd.DataFrame, model: str, task: str, n_shots: int, seeds) -> pd.Series:
    """Share of `seeds` getting each question right at the final step, indexed by question_id."""
    keys = final[(final["model"] == model) & (final["task"] == task) & (final["n_shots"] == n_shots)
                 & final["seed"].isin(seeds)][CELL_KEYS]
    rows = predictions.merge(keys, on=CELL_KEYS)
    return rows.groupby("question_id")["correct"].mean()


def compare_models(
    cells: pd.DataFrame,
    predictions: pd.DataFrame | None,
    model_a: str = "fomaml",
    model_b: str = "sft_mixed",
    n_boot: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Model a vs model b at the final adaptation step, one row per (task, n_shots) both ran.

    Columns: task, n_shots, n_seeds (seeds both ran; the pairs of the t-test), mean_a, std_a,
    mean_b, std_b (over those seeds, std with ddof=1), diff = mean_a - mean_b, t, p, stars (paired
    t-test over seeds, `paired_ttest`), p_holm, stars_holm (Holm across the tasks of one n_shots
    level: each shots level is one family), n_questions, boot_diff, ci_lo, ci_hi, p_boot,
    p_boot_holm (paired bootstrap over the questions both answered, each question scored by the
    share of those seeds that got it right; NaN without predictions).
    """
    final = final_step(cells)
    if predictions is not None:
        check_columns(predictions, PREDICTION_COLUMNS, "predictions")
        predictions = predictions.assign(correct=predictions["correct"].astype(float))
    rows = []
    groups = final[final["model"].isin([model_a, model_b])].groupby(["task", "n_shots"], sort=True)
    for (task, n_shots), group in groups:
        a = group[group["model"] == model_a].set_index("seed")["accuracy"]
        b = group[group["model"] == model_b].set_index("seed")["accuracy"]
        seeds = sorted(set(a.index) & set(b.index))
        if not seeds:
            continue
        a, b = a.loc[seeds], b.loc[seeds]
        t, p = paired_ttest(a.to_numpy(), b.to_numpy())
        row = dict(
            task=task, n_shots=n_shots, n_seeds=len(seeds),
            mean_a=a.mean(), std_a=a.std(ddof=1) if len(seeds) > 1 else math.nan,
            mean_b=b.mean(), std_b=b.std(ddof=1) if len(seeds) > 1 else math.nan,
            diff=a.mean() - b.mean(), t=t, p=p, stars=stars(p),
            n_questions=0, boot_diff=math.nan, ci_lo=math.nan, ci_hi=math.nan, p_boot=math.nan,
        )
        if predictions is not None:
            qa = _per_question(predictions, final, model_a, task, n_shots, seeds)
            qb = _per_question(predictions, final, model_b, task, n_shots, seeds)
            both = pd.concat([qa.rename("a"), qb.rename("b")], axis=1, join="inner")
            if len(both):
                diff, lo, hi, p_boot = paired_bootstrap_ci(both["a"], both["b"], n_boot=n_boot, seed=seed)
                row.update(n_questions=len(both), boot_diff=diff, ci_lo=lo, ci_hi=hi, p_boot=p_boot)
        rows.append(row)
    columns = ["task", "n_shots", "n_seeds", "mean_a", "std_a", "mean_b", "std_b", "diff", "t", "p", "stars",
               "p_holm", "stars_holm", "n_questions", "boot_diff", "ci_lo", "ci_hi", "p_boot", "p_boot_holm"]
    if not rows:
        return pd.DataFrame(columns=columns)
    out = pd.DataFrame(rows)
    out["p_holm"] = np.nan
    out["p_boot_holm"] = np.nan
    for _, index in out.groupby("n_shots").groups.items():
        out.loc[index, "p_holm"] = holm(out.loc[index, "p"].to_numpy())
        out.loc[index, "p_boot_holm"] = holm(out.loc[index, "p_boot"].to_numpy())
    out["stars_holm"] = [stars(p) for p in out["p_holm"]]
    return out[columns]
