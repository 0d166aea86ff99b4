"""Per-question scores, the unit every clustered test resamples, for one outcome.

`predictions` has one row per question per cell: model, task, n_shots, seed, step, question_id and
the outcome's column (`correct` for accuracy, the primary outcome; `loss`, the token-mean loss of the
question's reference solution, the secondary one). A score of (model, task, n_shots) is the mean over
seeds of each question's value at the cell's final step (or at every recorded step, for speed).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from metasft.stats.curves import CELL_KEYS, check_columns, final_step


@dataclass(frozen=True)
class Outcome:
    """What is compared: a predictions column, which way is better, and its bounds (floor/ceiling)."""
    name: str
    column: str
    higher_is_better: bool
    floor: float | None = None
    ceiling: float | None = None

    def advantage(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Per-question advantage of a over b: a - b when higher is better, b - a otherwise."""
        return a - b if self.higher_is_better else b - a

    def at_bound(self, *arrays: np.ndarray) -> str:
        """'floor' / 'ceiling' when every value of every array sits there, else ''."""
        values = np.concatenate([np.asarray(a, dtype=float) for a in arrays])
        for bound, name in ((self.floor, "floor"), (self.ceiling, "ceiling")):
            if bound is not None and len(values) and np.all(values == bound):
                return name
        return ""


ACCURACY = Outcome("accuracy", "correct", higher_is_better=True, floor=0.0, ceiling=1.0)
LOSS = Outcome("loss", "loss", higher_is_better=False)
# The design's other per-question measures (described in the report, not tested between arms)
ACC_AT_K = Outcome("acc@k", "correct_at_k", higher_is_better=True, floor=0.0, ceiling=1.0)
STEP_CORRECTNESS = Outcome("step correctness", "step_correctness", higher_is_better=True, floor=0.0, ceiling=1.0)


class QuestionScores:
    """Index of one outcome's per-question values by (model, task, n_shots)."""

    def __init__(self, cells: pd.DataFrame, predictions: pd.DataFrame | None, outcome: Outcome):
        self.outcome = outcome
        self.why_unavailable = ""
        self._groups: dict[tuple, pd.DataFrame] = {}
        self._final: dict[tuple, int] = {}
        if predictions is None or predictions.empty:
            self.why_unavailable = "no per-question predictions are stored"
            return
        check_columns(predictions, CELL_KEYS + ["question_id", outcome.column], "predictions")
        values = predictions[outcome.column].astype(float)
        if values.isna().all():
            self.why_unavailable = (f"the predictions carry no per-question {outcome.column} (a results store "
                                    "written before it was recorded)")
            return
        for r in final_step(cells).itertuples():
            self._final[(r.model, r.task, int(r.n_shots), int(r.seed))] = int(r.step)
        frame = predictions[CELL_KEYS + ["question_id"]].assign(value=values)
        for key, group in frame.groupby(["model", "task", "n_shots"], sort=True):
            self._groups[(key[0], key[1], int(key[2]))] = group

    @property
    def available(self) -> bool:
        return not self.why_unavailable

    def tasks(self, model: str) -> list[str]:
        return sorted({t for (m, t, _) in self._groups if m == model})

    def shots(self, model: str, task: str) -> list[int]:
        return sorted(n for (m, t, n) in self._groups if m == model and t == task)

    def seeds(self, model: str, task: str, n_shots: int) -> list[int]:
        group = self._groups.get((model, task, n_shots))
        return [] if group is None else sorted(int(s) for s in group["seed"].unique())

    def by_step(self, model: str, task: str, n_shots: int, seeds=None) -> pd.DataFrame:
        """question_id x step: mean over `seeds` (all when None) of each question's value."""
        group = self._groups[(model, task, n_shots)]
        if seeds is not None:
            group = group[group["seed"].isin(list(seeds))]
        return group.pivot_table(index="question_id", columns="step", values="value", aggfunc="mean")

    def final(self, model: str, task: str, n_shots: int, seeds=None) -> pd.Series:
        """question_id -> mean over `seeds` (all when None) of the value at each seed's final step."""
        group = self._groups[(model, task, n_shots)]
        if seeds is not None:
            group = group[group["seed"].isin(list(seeds))]
        last = [self._final.get((model, task, n_shots, int(s)), -1) for s in group["seed"]]
        return group[group["step"].to_numpy() == np.asarray(last)].groupby("question_id")["value"].mean()


def aligned(*series: pd.Series) -> list[np.ndarray]:
    """The values of each series on the questions they all have, in one order."""
    common = series[0].index
    for s in series[1:]:
        common = common.intersection(s.index)
    common = common.sort_values()
    return [s.loc[common].to_numpy(dtype=float) for s in series]
