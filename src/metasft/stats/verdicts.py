"""The design's hypotheses (H1-H3) and success criteria (C1-C5), judged from a run's results.

Each claim gets a `Verdict`: "met", "not met", or "not measurable with this run" when the run did
not measure what the claim needs (shots levels not run, one seed, no model reaching the target).
A verdict is never stronger than the numbers: a bound that settles the claim is used (SFT-Mixed
not reaching FOMAML's accuracy even at the largest shots run is a ratio of at least that much),
anything else that is missing makes the claim unmeasurable.

Curves are macro-averaged: at each n_shots (or step), the mean over the tasks of the mean over
seeds, using only tasks that both models ran, so both curves average the same tasks. Per-task
numbers are in the evidence.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import pandas as pd

from metasft.stats.compare import compare_models
from metasft.stats.curves import (
    CELL_COLUMNS,
    accuracy_at,
    adaptation_speed,
    check_columns,
    sample_efficiency_interpolated,
    summarize,
)

MET = "met"
NOT_MET = "not met"
UNMEASURABLE = "not measurable with this run"

DESIGN_TARGET_ACC = 0.7  # the design's "70% target accuracy" (H3, C4)
ALPHA = 0.05

STATEMENTS = {
    "H1": "FOMAML-SFT at 5-10 shots matches SFT-Mixed at 50-100 shots (5-10x sample efficiency).",
    "H2": "On unseen tasks, zero-shot accuracy orders FOMAML-SFT > SFT-Mixed > Base.",
    "H3": "FOMAML-SFT reaches the target accuracy in ~20-50 adaptation steps vs ~100-200 for "
          "SFT-Mixed (at most half the steps).",
    "C1": "Sample efficiency > 3x: FOMAML-SFT at 10 shots >= SFT-Mixed at 30 shots.",
    "C2": "Zero-shot transfer: FOMAML-SFT beats SFT-Mixed by more than 5 accuracy points on unseen tasks.",
    "C3": "FOMAML-SFT's advantage is significant (p < 0.05) consistently across evaluation tasks.",
    "C4": "Adaptation speed > 2x: FOMAML-SFT needs at least 50% fewer steps to reach the target accuracy.",
    "C5": "Cross-domain: FOMAML-SFT beats SFT-Mixed on the science (MMLU-STEM-like) tasks.",
}


@dataclass(frozen=True)
class Verdict:
    """One claim judged: `evidence` holds the numbers behind `status`, `explanation` says it in a line."""

    name: str
    statement: str
    status: str
    evidence: dict = field(default_factory=dict)
    explanation: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _verdict(name: str, status: str, explanation: str, **evidence) -> Verdict:
    return Verdict(name, STATEMENTS[name], status, _plain(evidence), explanation)


def _plain(value):
    """numpy scalars and containers as plain Python, for JSON."""
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


# ----------------------------------------------------------------------------------------------
# Curves shared by the claims
# ----------------------------------------------------------------------------------------------


def _acc(summary: pd.DataFrame, model: str, task: str, n_shots: int) -> float:
    row = summary[(summary["model"] == model) & (summary["task"] == task) & (summary["n_shots"] == n_shots)]
    return float(row["mean"].iloc[0]) if len(row) else math.nan


def _task_curve(summary: pd.DataFrame, model: str, task: str) -> dict[int, float]:
    rows = summary[(summary["model"] == model) & (summary["task"] == task)]
    return {int(n): float(m) for n, m in zip(rows["n_shots"], rows["mean"])}


def _macro_curve(summary: pd.DataFrame, model: str, tasks: Sequence[str]) -> dict[int, float]:
    """{n_shots: mean over `tasks` of the mean over seeds}, at the n_shots every task has."""
    curves = [_task_curve(summary, model, t) for t in tasks]
    shared = set.intersection(*(set(c) for c in curves)) if curves else set()
    return {n: sum(c[n] for c in curves) / len(curves) for n in sorted(shared)}


def _few_shot_tasks(summary: pd.DataFrame, models: Sequence[str], tasks: Sequence[str] | None) -> list[str]:
    """Tasks with results at some n_shots > 0 for every model in `models` (restricted to `tasks`)."""
    shots = summary[summary["n_shots"] > 0]
    common = set.intersection(*(set(shots.loc[shots["model"] == m, "task"]) for m in models))
    return sorted(common if tasks is None else common & set(tasks))


def _zero_shot_tasks(summary: pd.DataFrame, models: Sequence[str], tasks: Sequence[str]) -> list[str]:
    zero = summary[summary["n_shots"] == 0]
    return [t for t in tasks if all(((zero["model"] == m) & (zero["task"] == t)).any() for m in models)]


# ----------------------------------------------------------------------------------------------
# The claims
# ----------------------------------------------------------------------------------------------


def _h1(summary, fomaml, sft, tasks) -> Verdict:
    if not tasks:
        return _verdict("H1", UNMEASURABLE, "No task has few-shot results for both models.")
    fom = _macro_curve(summary, fomaml, tasks)
    ref = 10 if 10 in fom else 5 if 5 in fom else None
    sft_curve = _macro_curve(summary, sft, tasks)
    if ref is None or not sft_curve:
        return _verdict("H1", UNMEASURABLE, "FOMAML-SFT was not run at 10 or 5 shots on every task.", tasks=tasks)
    needed = sample_efficiency_interpolated(sft_curve, fom[ref])
    per_task = {t: sample_efficiency_interpolated(_task_curve(summary, sft, t), _acc(summary, fomaml, t, ref))
                for t in tasks}
    evidence = dict(tasks=tasks, reference_shots=ref, fomaml_accuracy=fom[ref], sft_curve=sft_curve,
                    sft_shots_needed=needed, sft_shots_needed_per_task=per_task)
    largest = max(sft_curve)
    if math.isinf(needed):
        bound = largest / ref
        if bound >= 5:
            return _verdict("H1", MET, f"SFT-Mixed stays below FOMAML-SFT's {ref}-shot accuracy ({fom[ref]:.3f}) even at "
                                       f"{largest} shots: efficiency ratio > {bound:.1f}x.", ratio_lower_bound=bound, **evidence)
        return _verdict("H1", UNMEASURABLE, f"SFT-Mixed stays below FOMAML-SFT's {ref}-shot accuracy up to {largest} shots, "
                                            f"the most run; the shots needed for a 5x ratio ({5 * ref}) were not run.",
                        ratio_lower_bound=bound, **evidence)
    ratio = needed / ref
    status = MET if ratio >= 5 else NOT_MET
    return _verdict("H1", status, f"SFT-Mixed needs {needed:.1f} shots (interpolated) to match FOMAML-SFT's {ref}-shot "
                                  f"accuracy {fom[ref]:.3f}: ratio {ratio:.1f}x (claim: 5-10x).", ratio=ratio, **evidence)


def _h2(summary, fomaml, sft, base, unseen) -> Verdict:
    tasks = _zero_shot_tasks(summary, [fomaml, sft, base], unseen)
    if not tasks:
        return _verdict("H2", UNMEASURABLE, "No unseen task has zero-shot results for all of FOMAML-SFT, SFT-Mixed and Base.",
                        unseen_tasks=list(unseen))
    per_task = {t: {m: _acc(summary, m, t, 0) for m in (fomaml, sft, base)} for t in tasks}
    means = {m: sum(per_task[t][m] for t in tasks) / len(tasks) for m in (fomaml, sft, base)}
    status = MET if means[fomaml] > means[sft] > means[base] else NOT_MET
    return _verdict("H2", status, f"Mean zero-shot accuracy on {len(tasks)} unseen task(s): FOMAML-SFT {means[fomaml]:.3f}, "
                                  f"SFT-Mixed {means[sft]:.3f}, Base {means[base]:.3f}.",
                    tasks=tasks, missing=sorted(set(unseen) - set(tasks)), mean=means, per_task=per_task)


def _step_curves(cells: pd.DataFrame, model: str, tasks: Sequence[str], n_shots: int) -> dict[int, float]:
    """{step: macro mean accuracy} for one model at one shots level, at steps every task has."""
    rows = cells[(cells["model"] == model) & (cells["n_shots"] == n_shots) & cells["task"].isin(tasks)]
    by_task = rows.groupby(["task", "step"])["accuracy"].mean()
    if rows["task"].nunique() < len(tasks):
        return {}
    steps = set.intersection(*(set(by_task.loc[t].index) for t in tasks))
    return {int(s): sum(by_task.loc[(t, s)] for t in tasks) / len(tasks) for s in sorted(steps)}


def _speed(cells, fomaml, sft, tasks, target) -> tuple[str, str, dict]:
    """(status, explanation, evidence) for "FOMAML-SFT reaches `target` in at most half the steps",
    judged at each n_shots > 0; met when it holds at every shots level where it can be measured."""
    if not tasks:
        return UNMEASURABLE, "No task has few-shot results for both models.", dict(target_accuracy=target, per_shots={})
    levels, outcome = {}, {}
    shots = sorted(set(cells.loc[cells["n_shots"] > 0, "n_shots"]))
    for n in shots:
        fom, sf = _step_curves(cells, fomaml, tasks, n), _step_curves(cells, sft, tasks, n)
        if len(fom) < 2 or len(sf) < 2:
            continue
        f, s = adaptation_speed(fom, target), adaptation_speed(sf, target)
        level = dict(fomaml_steps=f, sft_steps=s, fomaml_curve=fom, sft_curve=sf)
        if math.isinf(f) and math.isinf(s):
            outcome[n] = "neither reaches the target"
        elif math.isinf(f):
            outcome[n] = NOT_MET  # SFT-Mixed reaches it, FOMAML-SFT does not: not faster
        elif f == 0 and s == 0:
            outcome[n] = "both at the target before adapting"
        elif math.isinf(s):
            bound = max(sf) / f if f else math.inf
            level["ratio_lower_bound"] = bound
            outcome[n] = MET if bound >= 2 else f"SFT-Mixed not at the target by step {max(sf)}, the last evaluated"
        else:
            level["ratio"] = s / f if f else math.inf
            outcome[n] = MET if level["ratio"] >= 2 else NOT_MET
        levels[n] = level
    evidence = dict(target_accuracy=target, tasks=list(tasks), per_shots=levels, outcome_per_shots=outcome)
    judged = {n: o for n, o in outcome.items() if o in (MET, NOT_MET)}
    if not judged:
        if not outcome:
            why = "no shots level has an adaptation curve (2+ evaluated steps) for both models"
        elif all(o == "neither reaches the target" for o in outcome.values()):
            why = "neither model reaches it at any shots level (a lower target_acc would measure speed)"
        else:
            why = f"no shots level settles the comparison: {outcome}"
        return UNMEASURABLE, f"Steps to reach accuracy {target:.2f}: {why}.", evidence
    status = NOT_MET if NOT_MET in judged.values() else MET
    summary = ", ".join(f"{n}-shot: FOMAML {levels[n]['fomaml_steps']:g} vs SFT {levels[n]['sft_steps']:g} steps"
                        for n in judged)
    return status, f"Steps to reach accuracy {target:.2f} ({summary}); claim: at most half.", evidence


def _c1(summary, fomaml, sft, tasks) -> Verdict:
    if not tasks:
        return _verdict("C1", UNMEASURABLE, "No task has few-shot results for both models.")
    fom, sft_curve = _macro_curve(summary, fomaml, tasks), _macro_curve(summary, sft, tasks)
    if 10 not in fom:
        return _verdict("C1", UNMEASURABLE, "FOMAML-SFT was not run at 10 shots on every task.", tasks=tasks)
    if not sft_curve or max(sft_curve) < 30:
        return _verdict("C1", UNMEASURABLE, "SFT-Mixed was not run at 30 or more shots on every task.", tasks=tasks,
                        sft_curve=sft_curve)
    interpolated = 30 not in sft_curve
    sft30 = accuracy_at(sft_curve, 30)
    per_task = {t: {"fomaml_10": _acc(summary, fomaml, t, 10), "sft_30": accuracy_at(_task_curve(summary, sft, t), 30)}
                for t in tasks}
    status = MET if fom[10] >= sft30 else NOT_MET
    how = " (interpolated linearly between the shots run)" if interpolated else ""
    return _verdict("C1", status, f"FOMAML-SFT 10-shot {fom[10]:.3f} vs SFT-Mixed 30-shot {sft30:.3f}{how}.",
                    tasks=tasks, fomaml_10=fom[10], sft_30=sft30, sft_30_interpolated=interpolated, per_task=per_task)


def _c2(summary, fomaml, sft, unseen) -> Verdict:
    tasks = _zero_shot_tasks(summary, [fomaml, sft], unseen)
    if not tasks:
        return _verdict("C2", UNMEASURABLE, "No unseen task has zero-shot results for both models.", unseen_tasks=list(unseen))
    per_task = {t: _acc(summary, fomaml, t, 0) - _acc(summary, sft, t, 0) for t in tasks}
    gain = sum(per_task.values()) / len(tasks)
    fom = sum(_acc(summary, fomaml, t, 0) for t in tasks) / len(tasks)
    sft_mean = sum(_acc(summary, sft, t, 0) for t in tasks) / len(tasks)
    status = MET if gain > 0.05 else NOT_MET
    # The design's "5%" is read as 5 accuracy points; the relative gain is reported beside it.
    return _verdict("C2", status, f"Mean zero-shot gain on {len(tasks)} unseen task(s): {100 * gain:+.1f} points "
                                  f"(FOMAML-SFT {fom:.3f} vs SFT-Mixed {sft_mean:.3f}); claim: > +5 points.",
                    tasks=tasks, gain_points=100 * gain, relative_gain=gain / sft_mean if sft_mean else math.inf,
                    gain_per_task=per_task)


def _c3(comparison: pd.DataFrame) -> Verdict:
    """"Consistently" = every evaluation task has at least one shots level >= 5 where FOMAML-SFT is
    better with Holm-adjusted p < 0.05 (paired t-test over seeds; Holm across tasks per level)."""
    rows = comparison[comparison["n_shots"] >= 5]
    if rows.empty:
        return _verdict("C3", UNMEASURABLE, "No task was run at 5 or more shots by both models.")
    per_task, unmeasurable, failed = {}, [], []
    for task, group in rows.groupby("task"):
        tested = group[group["n_seeds"] >= 2]
        significant = tested[(tested["diff"] > 0) & (tested["p_holm"] < ALPHA)]
        per_task[task] = {int(r.n_shots): dict(diff=r.diff, p=r.p, p_holm=r.p_holm, n_seeds=r.n_seeds,
                                               p_boot=r.p_boot, ci=[r.ci_lo, r.ci_hi]) for r in group.itertuples()}
        if tested.empty:
            unmeasurable.append(task)
        elif significant.empty:
            failed.append(task)
    evidence = dict(per_task=per_task, not_significant=failed, fewer_than_2_seeds=unmeasurable)
    if failed:
        return _verdict("C3", NOT_MET, f"No shots level >= 5 with FOMAML-SFT significantly better (Holm p < 0.05) on: "
                                       f"{', '.join(failed)}.", **evidence)
    if unmeasurable:
        return _verdict("C3", UNMEASURABLE, f"Fewer than 2 seeds, so no paired t-test, on: {', '.join(unmeasurable)}.",
                        **evidence)
    return _verdict("C3", MET, f"FOMAML-SFT significantly better (Holm p < 0.05) at some shots level >= 5 on all "
                               f"{len(per_task)} tasks.", **evidence)


def _c5(summary, comparison, fomaml, sft, cross_domain) -> Verdict:
    tasks = [t for t in cross_domain if ((summary["model"] == fomaml) & (summary["task"] == t)).any()
             and ((summary["model"] == sft) & (summary["task"] == t)).any()]
    if not tasks:
        return _verdict("C5", UNMEASURABLE, "No cross-domain task has results for both models.",
                        cross_domain_tasks=list(cross_domain))
    fom, sft_curve = _macro_curve(summary, fomaml, tasks), _macro_curve(summary, sft, tasks)
    diffs = {n: fom[n] - sft_curve[n] for n in fom if n in sft_curve}
    if not diffs:
        return _verdict("C5", UNMEASURABLE, "The models share no shots level on every cross-domain task.", tasks=tasks)
    rows = comparison[comparison["task"].isin(tasks)]
    tests = {f"{r.task}@{r.n_shots}": dict(diff=r.diff, p=r.p, p_boot=r.p_boot, ci=[r.ci_lo, r.ci_hi])
             for r in rows.itertuples()}
    status = MET if all(d > 0 for d in diffs.values()) else NOT_MET
    shown = ", ".join(f"{n}-shot {100 * d:+.1f}" for n, d in diffs.items())
    return _verdict("C5", status, f"FOMAML-SFT minus SFT-Mixed on {len(tasks)} cross-domain task(s), points: {shown} "
                                  f"(met when positive at every shots level).", tasks=tasks, diff_per_shots=diffs, tests=tests)


def verdicts(
    cells: pd.DataFrame,
    predictions: pd.DataFrame | None,
    *,
    fomaml: str = "fomaml",
    sft: str = "sft_mixed",
    base: str = "base",
    unseen_tasks: Sequence[str] = (),
    cross_domain_tasks: Sequence[str] = (),
    few_shot_tasks: Sequence[str] | None = None,
    target_acc: float | None = None,
    n_boot: int = 10_000,
) -> list[Verdict]:
    """H1, H2, H3, C1..C5 for one run (shapes of `cells`, `predictions`: `metasft.stats.compare`).

    few_shot_tasks: the tasks for the learning-curve claims (H1, H3, C1, C4); None = every task both
    FOMAML-SFT and SFT-Mixed ran with n_shots > 0; C3 tests the same tasks. target_acc: the
    accuracy H3 and C4 time; None = the design's 0.7, which small models may never reach (those
    claims are then unmeasurable, not unmet).
    """
    check_columns(cells, CELL_COLUMNS, "cells")
    summary = summarize(cells)
    comparison = compare_models(cells, predictions, fomaml, sft, n_boot=n_boot)
    tasks = _few_shot_tasks(summary, [fomaml, sft], few_shot_tasks)
    target = DESIGN_TARGET_ACC if target_acc is None else target_acc
    status, explanation, evidence = _speed(cells, fomaml, sft, tasks, target)
    h3_ranges = {n: dict(fomaml_in_20_50=20 <= lvl["fomaml_steps"] <= 50, sft_in_100_200=100 <= lvl["sft_steps"] <= 200)
                 for n, lvl in evidence["per_shots"].items()}
    return [
        _h1(summary, fomaml, sft, tasks),
        _h2(summary, fomaml, sft, base, unseen_tasks),
        _verdict("H3", status, explanation, design_ranges=h3_ranges, **evidence),
        _c1(summary, fomaml, sft, tasks),
        _c2(summary, fomaml, sft, unseen_tasks),
        _c3(comparison[comparison["task"].isin(tasks)]),
        _verdict("C4", status, explanation, **evidence),
        _c5(summary, comparison, fomaml, sft, cross_domain_tasks),
    ]
