"""Learning curves: final-step summaries over seeds, sample efficiency, adaptation speed.

Input shape (the results store writes it): `cells`, one row per (model, task, n_shots, seed, step)
with `accuracy` in [0, 1] and `loss`; `step` is the number of adaptation steps taken, so a group's
final result is its largest step (n_shots = 0 has step 0 only).
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd

from metasft.eval import results as schema

CELL_KEYS = list(schema.CELL_KEYS)
CELL_COLUMNS = CELL_KEYS + list(schema.SCORES)  # what the statistics need of a cell


def check_columns(frame: pd.DataFrame, columns: list[str], name: str) -> None:
    """Raise ValueError naming the missing columns of `frame`."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}; it has {list(frame.columns)}")


def final_step(cells: pd.DataFrame) -> pd.DataFrame:
    """The rows of `cells` at each (model, task, n_shots, seed)'s largest step."""
    check_columns(cells, CELL_COLUMNS, "cells")
    duplicated = cells.duplicated(CELL_KEYS)
    if duplicated.any():
        raise ValueError(f"cells has repeated {CELL_KEYS} rows, e.g. {cells[duplicated].iloc[0][CELL_KEYS].to_dict()}")
    last = cells.groupby(list(schema.GROUP_KEYS))["step"].transform("max")
    return cells[cells["step"] == last].reset_index(drop=True)


def summarize(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread over seeds of the final-step accuracy, per (model, task, n_shots).

    Columns: model, task, n_shots, step (the final step), n_seeds, mean, std, loss, loss_std. `std`
    and `loss_std` are sample standard deviations (ddof=1), NaN with a single seed. The design's printout uses np.std
    (ddof=0), which understates the spread of 5 seeds by about 11%.
    """
    final = final_step(cells)
    grouped = final.groupby(["model", "task", "n_shots"], sort=True)
    return grouped.agg(
        step=("step", "max"),
        n_seeds=("seed", "nunique"),
        mean=("accuracy", "mean"),
        std=("accuracy", lambda x: x.std(ddof=1) if len(x) > 1 else math.nan),
        loss=("loss", "mean"),
        loss_std=("loss", lambda x: x.std(ddof=1) if len(x) > 1 else math.nan),
    ).reset_index()


def sample_efficiency(curve: Mapping[int, float], target: float) -> float:
    """The design's compute_sample_efficiency: the smallest measured n_shots whose accuracy reaches
    `target`, inf if none does. {0: .3, 5: .5, 10: .65, 25: .75, 50: .8}, target .7 -> 25."""
    for n_shots, acc in sorted(curve.items()):
        if acc >= target:
            return float(n_shots)
    return math.inf


def sample_efficiency_interpolated(curve: Mapping[int, float], target: float) -> float:
    """Like `sample_efficiency`, but linear in n_shots between the last measured point below the
    target and the first that reaches it: the example above gives 10 + 15 * (.7 - .65) / (.75 - .65)
    = 17.5. The first point reaching it if that is the first point; inf if none does."""
    points = sorted(curve.items())
    for i, (n_shots, acc) in enumerate(points):
        if acc >= target:
            if i == 0:
                return float(n_shots)
            n0, a0 = points[i - 1]
            return n0 + (n_shots - n0) * (target - a0) / (acc - a0)
    return math.inf


def accuracy_at(curve: Mapping[int, float], n_shots: float) -> float:
    """Accuracy at `n_shots`: measured, or linear between the two nearest measured n_shots; NaN
    outside the measured range (no extrapolation)."""
    xs = np.array(sorted(curve), dtype=float)
    if len(xs) == 0 or n_shots < xs[0] or n_shots > xs[-1]:
        return math.nan
    return float(np.interp(n_shots, xs, [curve[x] for x in sorted(curve)]))


def adaptation_speed(acc_by_step: Mapping[int, float], target: float) -> float:
    """Adaptation steps needed to reach `target` accuracy: the smallest measured step with accuracy
    >= target, inf if never. Its resolution is the evaluation grid of steps."""
    return sample_efficiency(acc_by_step, target)


def adaptation_gap(support_loss: float, query_loss: float) -> float:
    """The design's adaptation gap: |query loss - support loss|."""
    return abs(query_loss - support_loss)
