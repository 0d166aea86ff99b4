"""The design's measures beside accuracy and loss (issue 20): acc@k and step correctness per cell,
over test questions with 95% intervals as the figures' bands (`bands.final_bands`), and FOMAML's
adaptation gap |query loss - support loss| over its meta-training draws."""
from __future__ import annotations

import numpy as np
import pandas as pd

from metasft.report import bands, plots
from metasft.report import tables as T
from metasft.report.context import PREDICTIONS_SOURCE, Context, result_tasks
from metasft.report.doc import Document, Heading, Para, Table
from metasft.stats import ACC_AT_K, STEP_CORRECTNESS, cluster_bootstrap_ci


def _cell(band: pd.DataFrame | None, model: str, task: str, n_shots: int) -> str:
    """'mean [lo, hi]' of one (model, task, n_shots) band row, or a dash."""
    if band is None:
        return T.DASH
    row = band[(band["model"] == model) & (band["task"] == task) & (band["n_shots"] == n_shots)]
    if row.empty:
        return T.DASH
    r = row.iloc[0]
    ci = f" [{r['lo']:.3f}, {r['hi']:.3f}]" if T.isnum(r["lo"]) else ""
    return f"{r['mean']:.3f}{ci} (n = {int(r['n_questions'])})"


def measures_section(ctx: Context, doc: Document) -> None:
    """acc@k and step correctness of every cell at its final adaptation step (section 4)."""
    exp = ctx.exp
    doc.add(Heading(2, "acc@k and step correctness"))
    k = exp.results_meta.get("acc_k")
    at_k = bands.final_bands(exp.cells, exp.predictions, ACC_AT_K, ctx.n_boot) if k else None
    steps = bands.final_bands(exp.cells, exp.predictions, STEP_CORRECTNESS, ctx.n_boot)
    doc.add(Para(
        f"Source: {PREDICTIONS_SOURCE} (`correct_at_k`, `step_correctness`), at each cell's final adaptation step. "
        + (f"acc@{k}: a question counts when any of {k} answers sampled at temperature 1 is right (`eval.acc_k`={k}; "
           "the same random draws for every model and seed). " if k else
           "acc@k: not measured (`eval.acc_k` 0: no answers sampled). ")
        + "Step correctness: the share of a question's reference intermediate results (its record's `steps`: the "
          "embedded generator's, GSM8K's calculator annotations) that the greedy output states; questions without "
          "steps are left out. Each value is the mean over questions of the question's mean over seeds, with its 95% "
          "bootstrap interval over questions and n questions, as the learning curves' bands."))
    if at_k is None and steps is None:
        doc.add(Para("No question has sampled answers or reference steps: no table."))
        return
    rows = []
    for task in result_tasks(ctx):
        at_task = exp.cells[exp.cells["task"] == task]
        for model in plots.model_order(at_task["model"].unique()):
            for n_shots in sorted(int(n) for n in at_task.loc[at_task["model"] == model, "n_shots"].unique()):
                rows.append([task, plots.label(model), str(n_shots), _cell(at_k, model, task, n_shots),
                             _cell(steps, model, task, n_shots)])
    doc.add(Table(["task", "model", "N-shot", f"acc@{k or 'k'} [95% CI] (n)", "step correctness [95% CI] (n)"], rows,
                  "Final adaptation step; a dash where the cell has no sampled answers or no question with steps"))


def adaptation_gap_section(ctx: Context, doc: Document) -> None:
    """FOMAML's adaptation gap per meta-training task over the run's outer steps (section 1)."""
    doc.add(Heading(2, "Adaptation gap (FOMAML-SFT)"))
    draws = adaptation_gaps(ctx.exp.metrics)
    if draws.empty:
        doc.add(Para("No run logged an adaptation gap (runs/<run>/metrics.jsonl `tasks.<task>.adaptation_gap`, "
                     "written by FOMAML with a query batch): no table."))
        return
    doc.add(Para("Source: `runs/<run>/metrics.jsonl`, each outer step's `tasks.<task>.adaptation_gap` = |query loss − "
                 "support loss after the inner steps| (the design's `compute_adaptation_gap`). A draw is one task at "
                 "one outer step; the mean over draws with its 95% bootstrap interval over draws, and the mean over "
                 "the first and the last half of the run's steps (a gap that shrinks: the adapted model generalises "
                 "from support to query better)."))
    rows = []
    for (run, task), d in draws.groupby(["run", "task"], sort=True):
        est, lo, hi = cluster_bootstrap_ci([d["gap"].to_numpy(float)], n_boot=min(ctx.n_boot, bands.MAX_BOOT))
        middle = (d["step"].min() + d["step"].max()) / 2
        first, last = d.loc[d["step"] <= middle, "gap"].mean(), d.loc[d["step"] > middle, "gap"].mean()
        rows.append([run, task, str(len(d)), f"{est:.4f}", f"[{lo:.4f}, {hi:.4f}]" if T.isnum(lo) else T.DASH,
                     T.num(first), T.num(last)])
    doc.add(Table(["run", "meta-training task", "n draws", "mean gap", "95% CI", "first half", "last half"], rows,
                  "Adaptation gap per run and meta-training task, over its outer steps"))


def adaptation_gaps(metrics: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per (run, outer step, task) with a logged gap: columns run, step, task, gap."""
    rows = []
    for run, frame in sorted(metrics.items()):
        if "tasks" not in frame or "step" not in frame:
            continue
        for step, tasks in zip(frame["step"], frame["tasks"]):
            if not isinstance(tasks, dict):
                continue
            for task, values in sorted(tasks.items()):
                gap = values.get("adaptation_gap") if isinstance(values, dict) else None
                if gap is not None and np.isfinite(gap):
                    rows.append((run, int(step), task, float(gap)))
    return pd.DataFrame(rows, columns=["run", "step", "task", "gap"])
