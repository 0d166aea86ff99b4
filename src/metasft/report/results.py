"""Report sections 2-6: learning curves, transfer and similarity, tables and statistics,
verdicts, error cases."""
from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd

from metasft.report import bands, plots
from metasft.report import tables as T
from metasft.report.context import (BASE, CELLS_SOURCE, DESIGN_MODELS, EXTRA_METRICS, FOMAML,
    PREDICTIONS_SOURCE, SFT, SIMILARITY_SOURCE, Context, grading_sentence, no_results, result_tasks)
from metasft.report.doc import Callout, Code, Document, Heading, Para, Table
from metasft.eval.results import CELL_KEYS, GRADING
from metasft.report.load import error_rows
from metasft.report.measures import measures_section
from metasft.report.summary import caveats, claim_needs, status_badge, verdict_number
from metasft.rundir import COMPARISON_CSV, SUMMARY_CSV, atomic_write_text
from metasft.stats import (ACCURACY, LOSS, UNMEASURABLE, adaptation_speed, compare_models, final_step,
    sample_efficiency, sample_efficiency_interpolated)


def curves_section(ctx: Context, doc: Document) -> None:
    doc.add(Heading(1, "2. Learning curves"))
    if no_results(doc, ctx):
        return
    cells, summary = ctx.exp.cells, ctx.summary
    acc_bands = bands.final_bands(cells, ctx.exp.predictions, ACCURACY, ctx.n_boot)
    loss_bands = bands.final_bands(cells, ctx.exp.predictions, LOSS, ctx.n_boot)
    doc.add(Para(f"Source: {CELLS_SOURCE} and {PREDICTIONS_SOURCE}. Each point is the mean accuracy (left) and the "
                 "token-mean loss of the test questions' reference solutions (right) at the final adaptation step of "
                 "each (model, task, N-shot). The band is a 95% bootstrap interval over test questions (each "
                 "question's score averaged over seeds; the questions, not the seeds, are the unit, as in the "
                 "verdicts); n in the legend is questions × seeds. 0-shot cells are evaluated once (seed 0). Arms "
                 "are drawn slightly apart so equal values stay visible. The dotted line is the target accuracy "
                 f"{ctx.target_acc:g} ({ctx.target_from})."))
    present = set(summary["model"])
    absent = [plots.label(m) for m in DESIGN_MODELS if m not in present]
    if absent:
        doc.add(Callout("note", f"No results for {', '.join(absent)}: curves and comparisons that need them are missing."))
    one_seed = summary[(summary["n_shots"] > 0) & (summary["n_seeds"] < 2)]
    if len(one_seed):
        doc.add(Callout("note", f"{len(one_seed)} few-shot cell(s) have a single seed: no paired t-test over seeds "
                                "there (e.g. " + ", ".join(f"{plots.label(r.model)}/{r.task}/{r.n_shots}-shot"
                                                           for r in one_seed.head(3).itertuples()) + ")."))
    for task in result_tasks(ctx):
        doc.add(Heading(2, task))
        at = summary[summary["task"] == task]
        acc = _points(acc_bands, at, task, "mean")
        loss = _points(loss_bands, at, task, "loss")
        path, rel = ctx.figure(f"curve_{task}")
        plots.learning_curve(acc, loss, task, path, ctx.target_acc, ctx.source(CELLS_SOURCE))
        doc.add(ctx.image(rel, f"{task}: accuracy and loss vs N-shot",
                          _band_caption({"accuracy panel": acc, "loss panel": loss})))
        few = cells[(cells["task"] == task) & (cells["n_shots"] > 0)]
        if few.empty:
            doc.add(Para("Only 0-shot results for this task: no adaptation-speed plot."))
            continue
        largest = int(few["n_shots"].max())
        at = few[few["n_shots"] == largest]
        if at["step"].nunique() < 2:
            doc.add(Para(f"Only one adaptation step was recorded at {largest} shots: no adaptation-speed plot "
                         "(set eval.record_steps)."))
            continue
        points = bands.step_bands(cells, ctx.exp.predictions, task, largest, ctx.n_boot)
        if points is None or points.empty:  # no per-question scores: the cell means, no band
            grouped = at.groupby(["model", "step"])
            points = grouped["accuracy"].mean().rename("mean").reset_index().assign(
                lo=math.nan, hi=math.nan, n_questions=math.nan,
                n_seeds=grouped["seed"].nunique().to_numpy())
        path, rel = ctx.figure(f"adaptation_{task}")
        plots.adaptation_curve(points, task, largest, path, ctx.target_acc, ctx.source(CELLS_SOURCE))
        doc.add(ctx.image(rel, f"{task}: accuracy vs adaptation step at {largest} shots", _band_caption({"": points})))


def _points(band: pd.DataFrame | None, summary: pd.DataFrame, task: str, column: str) -> pd.DataFrame:
    """The plotted points of one task: the bands where there are per-question values, else the cell
    means of `summary` (column `mean` or `loss`) without a band."""
    if band is not None:
        rows = band[band["task"] == task]
        if not rows.empty:
            return rows
    return pd.DataFrame({"model": summary["model"], "n_shots": summary["n_shots"], "mean": summary[column],
                         "lo": math.nan, "hi": math.nan, "n_questions": math.nan, "n_seeds": summary["n_seeds"]})


def _band_caption(panels: dict[str, pd.DataFrame]) -> str:
    """Says what the band is and over what n (few-shot points), or, per panel, that there is none."""
    with_band = {name: f.dropna(subset=["lo", "hi"]) for name, f in panels.items()}
    drawn = pd.concat([f for f in with_band.values() if not f.empty] or [pd.DataFrame()])
    without = [name for name, f in with_band.items() if f.empty]
    if drawn.empty:
        return "No band: the stored predictions carry no per-question values (cell means over seeds shown)."
    few = drawn[drawn["n_shots"] > 0] if "n_shots" in drawn and (drawn["n_shots"] > 0).any() else drawn
    q = "/".join(str(n) for n in sorted({int(n) for n in few["n_questions"]}))
    s = "/".join(str(n) for n in sorted({int(n) for n in few["n_seeds"]}))
    zero = " (0-shot: one evaluation, seed 0)" if "n_shots" in drawn and (drawn["n_shots"] == 0).any() else ""
    return (f"Band: 95% bootstrap interval over test questions; n = {q} questions × {s} seed(s) per point{zero}."
            + (f" {', '.join(without).capitalize()}: no band, the stored predictions carry no per-question values "
               "(cell means over seeds shown)." if without else ""))


def transfer_section(ctx: Context, doc: Document) -> None:
    doc.add(Heading(1, "3. Transfer and task similarity"))
    sim = ctx.exp.similarity
    if sim is None:
        doc.add(Callout("note", f"No task similarity (`{SIMILARITY_SOURCE}` missing or unreadable): the transfer "
                                "plot and the similarity heatmap are not drawn."))
        return
    path, rel = ctx.figure("task_similarity")
    plots.similarity_heatmap(sim.names, sim.matrix, sim.meta_train, path, ctx.source(SIMILARITY_SOURCE), sim.adapter)
    doc.add(Para(f"Source: `{SIMILARITY_SOURCE}`: cosine similarity of each task's mean loss gradient with respect to "
                 f"the LoRA adapter, taken at: {sim.adapter or 'not recorded'}."),
            ctx.image(rel, "task similarity heatmap"))
    if not sim.meta_train:
        doc.add(Para("The similarity file does not say which tasks are meta-training tasks (and dataset/manifest.json "
                     "does not list them): task distance is undefined, no transfer plot."))
        return
    targets = [n for n in sim.names if n not in sim.meta_train]
    doc.add(Para("Task distance of an eval task = 1 − its largest cosine similarity to any meta-training task "
                 "(the nearest one, named below). Transfer = FOMAML-SFT − SFT-Mixed mean accuracy at the final "
                 f"step, from {CELLS_SOURCE}, at 0-shot and at the largest N-shot both models ran."))
    if no_results(doc, ctx):
        return
    summary = ctx.summary
    meta_idx = [sim.names.index(n) for n in sim.meta_train if n in sim.names]
    rows, points = [], []
    for task in targets:
        sims = sim.matrix[sim.names.index(task), meta_idx]
        nearest = sim.meta_train[int(np.argmax(sims))]
        distance = 1 - float(np.max(sims))
        rows_t = summary.loc[summary["task"] == task, ["model", "n_shots", "mean"]]
        mean = {(m, n): v for m, n, v in rows_t.itertuples(index=False)}
        both = sorted(n for (m, n) in mean if m == FOMAML and (SFT, n) in mean)
        d0 = mean[(FOMAML, 0)] - mean[(SFT, 0)] if 0 in both else math.nan
        k = max((n for n in both if n > 0), default=None)
        dk = mean[(FOMAML, k)] - mean[(SFT, k)] if k is not None else math.nan
        points.append({"task": task, "distance": distance, "diff_0": d0, "diff_k": dk,
                       "k": k if k is not None else math.nan})
        rows.append([task, nearest, f"{1 - distance:.3f}", f"{distance:.3f}", T.signed(d0),
                     str(k) if k is not None else T.DASH, T.signed(dk)])
    doc.add(Table(["eval task", "nearest meta-training task", "similarity", "distance", "transfer 0-shot",
                   "largest N-shot", "transfer at N"], rows))
    frame = pd.DataFrame(points)
    if frame.empty or frame[["diff_0", "diff_k"]].isna().all().all():
        doc.add(Para("No eval task in the similarity file has results for both FOMAML-SFT and SFT-Mixed: no transfer plot."))
        return
    path, rel = ctx.figure("transfer_vs_distance")
    plots.transfer(frame, path, ctx.source(f"{SIMILARITY_SOURCE} + {CELLS_SOURCE}"))
    doc.add(ctx.image(rel, "transfer vs task distance", "Differences of mean accuracy over questions and seeds; "
                                                         "the per-task intervals are in section 4."))


def tables_section(ctx: Context, doc: Document) -> None:
    doc.add(Heading(1, "4. Tables"))
    if no_results(doc, ctx):
        return
    exp, summary = ctx.exp, ctx.summary
    final = final_step(exp.cells)
    extras = [c for c in EXTRA_METRICS if c in final and final[c].notna().any()]
    full = summary.merge(final.groupby(["model", "task", "n_shots"])[extras].mean().reset_index(),
                         on=["model", "task", "n_shots"]) if extras else summary
    atomic_write_text(ctx.out / SUMMARY_CSV, full.to_csv(index=False))

    doc.add(Heading(2, "Every cell"))
    doc.add(Para(f"Source: {CELLS_SOURCE}; mean ± sample std over seeds of the final-step accuracy, n = seeds. "
                 "Also in `report/summary.csv` with the loss and the other stored metrics."))
    for task in result_tasks(ctx):
        doc.add(T.cells_table(summary, task))
    upper = T.upper_reference_table(summary, exp.runs, result_tasks(ctx))
    if upper is not None:
        doc.add(Heading(2, "Upper reference: task-specific SFT (Baseline 2)"),
                Para("SFT-Task is trained `trainer.total_epochs` over the task's whole training pool "
                     "(dataset/data/eval/<task>_shots.parquet, the pool the shots are drawn from) and scored 0-shot only: "
                     "what a model reaches with enough data of the task, the line the few-shot curves aim at "
                     "(dashed in the learning-curve plots)."),
                upper)
    _grading_table(ctx, doc, final)
    if extras:
        _quality_table(ctx, doc, final, extras)
    measures_section(ctx, doc)

    doc.add(Heading(2, "FOMAML-SFT vs SFT-Mixed (paired)"))
    _comparisons(ctx, doc)
    doc.add(Heading(2, f"Sample efficiency and adaptation speed (target accuracy {ctx.target_acc:g})"))
    _efficiency(ctx, doc)
    doc.add(Heading(2, "Zero-shot transfer on unseen tasks (protocol B)"))
    _zero_shot(ctx, doc)


def _grading_table(ctx: Context, doc: Document, final: pd.DataFrame) -> None:
    """Strict and flexible accuracy and the cut-off / looping outputs of every cell (issue 19)."""
    doc.add(Heading(2, "Strict and flexible grading"))
    doc.add(Para(grading_sentence(ctx)))
    if ctx.grading is None or not all(c in final and final[c].notna().any() for c in GRADING):
        doc.add(Para(f"{CELLS_SOURCE} holds no strict / flexible accuracy: no table."))
        return
    rows = []
    for task in result_tasks(ctx):
        at_task = final[final["task"] == task]
        for model in plots.model_order(at_task["model"].unique()):
            for n_shots, cell in at_task[at_task["model"] == model].groupby("n_shots"):
                n = int(cell["n"].sum())
                rows.append([task, plots.label(model), str(n_shots), T.acc(cell["accuracy_strict"].mean()),
                             T.acc(cell["accuracy_flexible"].mean()), f"{int(cell['n_truncated'].sum())} of {n}",
                             f"{int(cell['n_repeating'].sum())} of {n}"])
    doc.add(Table(["task", "model", "N-shot", "strict accuracy", "flexible accuracy", "cut off", "repeating"], rows,
                  f"Every cell at its final adaptation step ({CELLS_SOURCE}): accuracy the mean over seeds, outputs "
                  "cut off at max_new_tokens and caught repeating counted over all seeds' answers"))


def _quality_table(ctx: Context, doc: Document, final: pd.DataFrame, extras: list[str]) -> None:
    rows = []
    for task in result_tasks(ctx):
        at_task = final[final["task"] == task]
        for model in plots.model_order(at_task["model"].unique()):
            cell = at_task[at_task["model"] == model]
            n = int(cell["n_shots"].max())
            cell = cell[cell["n_shots"] == n]
            answered = cell["n"].sum()
            timed = cell["n_timed_out"].sum() / answered if answered else math.nan
            rows.append([task, plots.label(model), str(n), T.acc(cell["accuracy"].mean())]
                        + [T.num(cell[c].mean(), 3) for c in extras] + [T.acc(timed)])
    doc.add(Table(["task", "model", "N-shot (largest)", "accuracy"] + extras + ["timed-out share"], rows,
                  f"Reasoning quality at each model's largest N-shot, mean over seeds ({CELLS_SOURCE})"))


def _comparisons(ctx: Context, doc: Document) -> None:
    exp = ctx.exp
    doc.add(Para(f"Source: {PREDICTIONS_SOURCE}, via `metasft.stats.compare_models` at the final adaptation step. "
                 "The unit of independence is the test question, seeds nested inside it (Miller 2024): each question's "
                 "score is the mean over the seeds both models ran; the interval is a bootstrap over questions "
                 f"({ctx.n_boot:,} replicates), p a sign-flip permutation test over questions, Holm-corrected over "
                 "every row of the table. Stars (`*` p < 0.05, `**` < 0.01, `***` < 0.001) are given for the Holm p only. "
                 "MDE: the smallest true difference this test finds with 80% power at α = 0.05 (normal approximation "
                 "from the observed per-question variance; 'assumed sd' where the answers do not vary, e.g. both at "
                 "floor). The design's paired t-test over seeds is shown last; it has no test (—) with fewer than "
                 "3 seeds, without variance, or at floor. Accuracy is the design's outcome; the loss of the reference "
                 "solutions (lower is better) is a secondary one."))
    if ctx.budget_mismatch:
        doc.add(Callout("warning", f"Unequal budgets: {ctx.budget_mismatch}"))
    if exp.predictions is None:
        doc.add(Para("No predictions stored: no per-question comparison."))
        return
    pairs = [(FOMAML, SFT), (FOMAML, BASE), ("reptile", SFT)]
    present = set(exp.cells["model"])
    for outcome in (ACCURACY, LOSS):
        for a, b in pairs:
            if a not in present or b not in present:
                if (a, b) == (FOMAML, SFT) and outcome is ACCURACY:
                    doc.add(Para(f"No comparison: {' and '.join(plots.label(m) for m in (a, b) if m not in present)} "
                                 "not in the results."))
                continue
            comparison = compare_models(exp.cells, exp.predictions, a, b, outcome=outcome)
            if (a, b) == (FOMAML, SFT):
                name = COMPARISON_CSV if outcome is ACCURACY else f"comparison_{outcome.name}.csv"
                atomic_write_text(ctx.out / name, comparison.to_csv(index=False))
            if comparison.empty:
                doc.add(Para(f"{plots.label(a)} and {plots.label(b)} share no (task, N-shot, seed) with per-question "
                             f"{outcome.name}."))
            else:
                doc.add(T.comparison_table(comparison, plots.label(a), plots.label(b), outcome.name))


def _efficiency(ctx: Context, doc: Document) -> None:
    cells, summary, target = ctx.exp.cells, ctx.summary, ctx.target_acc
    shots_levels = sorted(int(n) for n in cells.loc[cells["n_shots"] > 0, "n_shots"].unique())
    doc.add(Para(f"Source: {CELLS_SOURCE}. Shots needed: the smallest N-shot whose mean accuracy over seeds reaches "
                 f"{target:g} (`sample_efficiency`), and linearly interpolated between the N-shot levels run "
                 "(`sample_efficiency_interpolated`). Steps needed: the smallest recorded adaptation step whose mean "
                 f"accuracy over seeds reaches {target:g} (`adaptation_speed`), per N-shot level. Target from "
                 f"{ctx.target_from}."))
    rows = []
    for task in result_tasks(ctx):
        at_task = summary[summary["task"] == task]
        for model in plots.model_order(at_task["model"].unique()):
            rows_m = at_task[at_task["model"] == model]
            curve = {int(n): float(m) for n, m in zip(rows_m["n_shots"], rows_m["mean"])}
            largest = max(curve)
            speeds = []
            for n in shots_levels:
                by_step = cells[(cells["task"] == task) & (cells["model"] == model) & (cells["n_shots"] == n)]
                if by_step.empty:
                    speeds.append(T.DASH)
                    continue
                acc_by_step = by_step.groupby("step")["accuracy"].mean()
                steps = {int(s): float(a) for s, a in acc_by_step.items()}
                speeds.append(T.beyond(adaptation_speed(steps, target), max(steps)))
            rows.append([task, plots.label(model), T.beyond(sample_efficiency(curve, target), largest),
                         T.beyond(sample_efficiency_interpolated(curve, target), largest)] + speeds)
    doc.add(Table(["task", "model", "shots needed", "shots needed (interpolated)"]
                  + [f"steps needed at {n}-shot" for n in shots_levels], rows))


def _zero_shot(ctx: Context, doc: Document) -> None:
    summary = ctx.summary
    doc.add(Para(f"Source: {CELLS_SOURCE}, 0-shot cells (one evaluation, seed 0). Unseen tasks from "
                 f"{ctx.task_flags_from}."))
    if not ctx.unseen:
        doc.add(Para("No eval task is marked unseen: protocol B was not run."))
        return
    zero = summary[summary["n_shots"] == 0]
    rows = []
    for task in ctx.unseen:
        acc = {m: zero.loc[(zero["model"] == m) & (zero["task"] == task), "mean"] for m in DESIGN_MODELS}
        acc = {m: float(v.iloc[0]) if len(v) else math.nan for m, v in acc.items()}
        order = T.DASH
        if all(T.isnum(v) for v in acc.values()):
            order = "yes" if acc[FOMAML] > acc[SFT] > acc[BASE] else "no"
        rows.append([task] + [T.acc(acc[m]) for m in DESIGN_MODELS]
                    + [T.signed(acc[FOMAML] - acc[SFT]), order])
    doc.add(Table(["unseen task", "FOMAML-SFT", "SFT-Mixed", "Base", "FOMAML − SFT-Mixed", "FOMAML > SFT > Base"], rows))


def verdicts_section(ctx: Context, doc: Document) -> None:
    doc.add(Heading(1, "5. Verdicts"))
    if ctx.verdicts is None:
        doc.add(Callout("warning", f"The verdicts could not be computed: {ctx.verdicts_error}"))
        return
    doc.add(Para(f"Judged by `metasft.stats.verdicts` from {PREDICTIONS_SOURCE}: unseen tasks {ctx.unseen or 'none'}, "
                 f"cross-domain tasks {ctx.cross_domain or 'none'} (from {ctx.task_flags_from}); target accuracy "
                 f"{ctx.target_acc:g} ({ctx.target_from}). Each claim is judged per task on that task's own N-shot "
                 "levels, then on the mean over the tasks where it could be judged (those where it could not are "
                 "named). Every number is FOMAML-SFT minus the baseline (for the loss, lower is better, so "
                 "FOMAML-SFT's advantage is negative). Each claim is a test written down before the run (its "
                 "'met if' column; README, 'How each claim is decided'): **met** / **not met** only when the "
                 "claim's interval lies entirely on one side of the claimed value (and, for a 'beats' claim, the "
                 "sign-flip test rejects); **inconclusive** when it holds both, or when both models sit at floor; "
                 "**not measurable** when the run lacks the cells the claim needs. Intervals are t intervals over "
                 "test questions with pseudo-counts (accuracy); speeds are interpolated crossings, censored when "
                 "a curve never reaches the target. Primary claims "
                 f"({', '.join(ctx.stats.primary) or 'none'}) share a family-wise 5% (Bonferroni); the rest are "
                 "exploratory. MDE: the smallest true value of the quantity this run finds met with 80% "
                 "probability, simulated with the test actually used. The numbers behind each verdict are below "
                 "the tables and in `report/verdicts.json`."))
    warnings = caveats(ctx)
    if warnings:
        doc.add(Callout("warning", "Read with care: " + "; ".join(warnings) + "."))
    primary, secondary = ctx.verdicts[ACCURACY.name], ctx.verdicts[LOSS.name]
    doc.add(_verdict_table(primary, "Accuracy, the design's outcome"))
    doc.add(Para("Secondary outcome: the token-mean loss of the test questions' reference solutions (lower is "
                 "better). It moves where accuracy sits at floor, so it can show a direction a small run cannot show "
                 "in accuracy; it is not the design's criterion, and a verdict here is not a verdict on accuracy."))
    doc.add(_verdict_table(secondary, "Reference-solution loss, secondary outcome"))
    doc.add(Heading(2, "Evidence"))
    doc.add(Para("The per-task numbers each verdict was read from (`report/verdicts.json` holds them in full)."))
    for v in primary + secondary:
        doc.add(Heading(3, f"{v.label}: evidence ({v.status})"))
        doc.add(*T.evidence_blocks(v.to_dict()["evidence"]))  # the verdicts.json values
    if all(v.status == UNMEASURABLE for v in primary) and ctx.exp.cells is not None:
        doc.add(Para("No claim could be judged: see each explanation for what the run lacks."))


def _verdict_table(result: list, caption: str) -> Table:
    rows = [[v.label, v.statement, status_badge(v.status), v.role, verdict_number(v), claim_needs(v), T.num(v.mde, 3),
             v.explanation] for v in result]
    return Table(["claim", "statement", "status", "role", "FOMAML-SFT minus baseline [CI]", "met if", "MDE (80%)",
                  "numbers and explanation"], rows, caption)


def errors_section(ctx: Context, doc: Document) -> None:
    exp = ctx.exp
    doc.add(Heading(1, "6. Error cases"))
    if no_results(doc, ctx):
        return
    if exp.predictions is None:
        doc.add(Para(f"No predictions stored ({PREDICTIONS_SOURCE} empty): no error cases."))
        return
    k = ctx.errors_per_cell
    doc.add(Para(f"Source: {PREDICTIONS_SOURCE}. Up to {k} wrong answers per task and model, drawn with a fixed seed "
                 "from the final adaptation step at the model's largest N-shot (all seeds pooled); the last 400 "
                 "characters of each output."))
    final = final_step(exp.cells)[list(CELL_KEYS)]
    preds = exp.predictions.merge(final, on=list(CELL_KEYS))
    for task in result_tasks(ctx):
        doc.add(Heading(2, task))
        at_task = preds[preds["task"] == task]
        if at_task.empty:
            doc.add(Para("No predictions stored for this task."))
            continue
        for model in plots.model_order(at_task["model"].unique()):
            rows = at_task[at_task["model"] == model]
            n = int(rows["n_shots"].max())
            rows = rows[rows["n_shots"] == n]
            wrong = rows[~rows["correct"]].sort_values(["seed", "step", "question_id"])
            keys = [(int(r.seed), int(r.step), str(r.question_id)) for r in wrong.itertuples()]
            chosen = sorted(random.Random(f"errors/{task}/{model}").sample(keys, min(k, len(keys))))
            doc.add(Para(f"**{plots.label(model)}**, {n}-shot: {len(wrong)} of {len(rows)} answers wrong"
                         + (f"; {len(chosen)} shown." if chosen else ".")))
            for r in error_rows(exp.results_paths, model, task, n, chosen).itertuples():
                timed = "".join(f" ({why})" for flag, why in ((r.timed_out, "grading timed out"),
                                                                (r.truncated, "cut off at max_new_tokens"),
                                                                (r.repeating, "repeating")) if flag == 1)
                doc.add(Para(f"`{_plain(r.question_id)}` (seed {r.seed}, step {r.step}): gold `{_plain(r.gold)}`, "
                             f"extracted `{_plain(r.extracted)}`{timed}"),
                        Code(_tail(r.output)))


def _tail(output: str, chars: int = 400) -> str:
    if not output.strip():
        return f"(the output is empty or whitespace only: {len(output)} characters)"
    return ("…" if len(output) > chars else "") + output[-chars:]


def _plain(text) -> str:
    """Text for an inline code span: no backticks, one line, at most 80 characters."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return "(none)"
    text = str(text).replace("`", "'").replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "..."
