"""Number formatting and the report's tables built from the statistics frames."""
from __future__ import annotations

import math
import re

import pandas as pd

from metasft.manifests import TrainManifest
from metasft.report.doc import Para, Table
from metasft.report.plots import label, model_order

DASH = "—"


def isnum(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not (isinstance(x, float) and math.isnan(x))


def acc(x) -> str:
    """An accuracy (or accuracy difference) in [0, 1] with 3 decimals; — for missing."""
    return f"{x:.3f}" if isnum(x) else DASH


def signed(x) -> str:
    return f"{x:+.3f}" if isnum(x) else DASH


def mean_std(mean, std, n) -> str:
    """'0.625 ± 0.050 (n=5)'; without ± when there is one seed (std undefined)."""
    if not isnum(mean):
        return DASH
    spread = f" ± {std:.3f}" if isnum(std) else ""
    return f"{mean:.3f}{spread} (n={int(n)})"


def pval(p) -> str:
    if not isnum(p):
        return DASH
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def num(x, digits: int = 4) -> str:
    if isinstance(x, bool) or x is None:
        return DASH if x is None else str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return DASH if math.isnan(x) else f"{x:.{digits}g}"
    return str(x)


def beyond(x, largest) -> str:
    """Shots or steps needed: the number, or '> largest measured' when never reached (inf)."""
    if not isnum(x):
        return DASH
    if math.isinf(x):
        return f"not reached (> {num(largest)})"
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def seconds(s) -> str:
    if not isnum(s):
        return DASH
    s = float(s)
    h, rest = divmod(round(s), 3600)
    m, sec = divmod(rest, 60)
    return f"{s:,.1f} s ({h}:{m:02d}:{sec:02d})"


_NO_INTERVAL = re.compile(r"\[(\d+(?:\.\d+)?% CI) [-+]?(?:nan|NaN|inf), [-+]?(?:nan|NaN|inf)\]")
_NAN = re.compile(r"(?<![\w.\\])[-+]?(?:nan|NaN)(?!\w)")
_INF = re.compile(r"(?<![\w.\\])[-+]?inf(?!\w)")


def spell_non_finite(text: str) -> str:
    """Python's raw 'nan' / 'inf' in prose, as words: an interval with no finite end is '(no
    interval)', NaN 'undefined', an infinite end 'unbounded' (issue 22: 'ratio nan [95% CI -inf, inf]'
    read as a bug). Text in `backticks` (answers, ids) is quoted and left alone."""
    parts = re.split(r"(`[^`]+`)", text)
    for i, part in enumerate(parts):
        if not part.startswith("`"):
            part = _NO_INTERVAL.sub("(no interval)", part)
            parts[i] = _INF.sub("unbounded", _NAN.sub("undefined", part))
    return "".join(parts)


# Column names for the keys of `Verdict.evidence` (metasft.stats.verdicts); others are shown as they are.
EVIDENCE_NAMES = {
    "estimate": "advantage", "advantage": "advantage", "ci": "95% CI", "n_questions": "questions",
    "n_seeds": "seeds", "at_bound": "both at floor/ceiling", "status": "status", "n_shots": "N-shot",
    "fomaml_shots": "FOMAML-SFT shots", "sft_shots": "SFT-Mixed shots", "sft_shots_to_match": "SFT-Mixed shots to match",
    "ratio": "ratio", "fomaml_steps": "FOMAML-SFT steps", "sft_steps": "SFT-Mixed steps",
    "fomaml_curve": "FOMAML-SFT accuracy by step", "sft_curve": "SFT-Mixed accuracy by step", "p": "p",
    "p_holm": "p (Holm)", "mde": "MDE", "not_judged": "not judged because", "shot_levels": "N-shot levels",
    "fomaml_in_20_50": "FOMAML-SFT in 20-50 steps", "sft_in_100_200": "SFT-Mixed in 100-200 steps",
    "fomaml_over_sft": "FOMAML-SFT over SFT-Mixed [95% CI]", "sft_over_base": "SFT-Mixed over Base [95% CI]",
    "target_accuracy": "target accuracy", "task": "task", "tasks": "tasks", "significant": "significantly better",
    "worse": "worse at every level", "undecided": "undecided", "unseen_tasks": "unseen tasks",
    "cross_domain_tasks": "cross-domain tasks",
    "family": "The family of comparisons (sign-flip p over questions, Holm-corrected over these rows)",
}
_SIGNED = {"estimate", "advantage"}


def _evidence_value(key: str, value) -> str:
    """One evidence value (plain JSON, as `Verdict.to_dict` gives it) as table text: intervals in
    brackets, p-values as p, curves as 'step: value'."""
    if value is None or (isinstance(value, (str, list, tuple, dict)) and not value):
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return {"inf": "∞", "-inf": "−∞"}.get(value, value)
    if isinstance(value, dict):
        return ", ".join(f"{_step(k)}: {_evidence_value('', v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        if key == "ci" and len(value) == 2:
            lo, hi = (float(x) if x in ("inf", "-inf") else x for x in value)  # JSON spells infinity "inf"
            if any(isnum(x) and math.isinf(x) for x in (lo, hi)):
                return f"[{_evidence_value('', lo)}, {_evidence_value('', hi)}]"
            return interval(lo, hi)
        if len(value) == 3 and all(isnum(x) for x in value):  # (estimate, lo, hi)
            return f"{signed(value[0])} {interval(value[1], value[2])}"
        return ", ".join(_evidence_value("", v) for v in value)
    if key in ("p", "p_holm"):
        return pval(value)
    if key in _SIGNED and isnum(value):
        return signed(value)
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return num(value, 3) if isinstance(value, float) else num(value)


def _step(key) -> str:
    """A curve's key (a step, stored as '10.0' in JSON) as '10'."""
    try:
        return f"{float(key):g}"
    except (TypeError, ValueError):
        return str(key)


def evidence_blocks(evidence: dict) -> list:
    """A verdict's evidence (`Verdict.to_dict()["evidence"]`) as small tables, not JSON.

    Every top-level entry keyed by task (`per_task`, `shots`, `not_judged`, `design_ranges`, ...)
    becomes columns of one table with a row per task; a list of records (C3's `family`) a table of
    its own; the remaining scalars and lists a two-column table.
    """
    by_task: dict[str, dict[str, object]] = {}
    records, facts = [], []
    for key, value in evidence.items():
        if isinstance(value, dict) and value:
            for task, inner in value.items():
                row = by_task.setdefault(str(task), {})
                if isinstance(inner, dict):
                    for k, v in inner.items():
                        row[k if k not in row else f"{key}.{k}"] = v
                else:
                    row[key] = inner
        elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            records.append((key, value))
        elif not (isinstance(value, dict) and not value):
            facts.append((key, value))
    blocks: list = []
    if by_task:
        columns = list(dict.fromkeys(k for row in by_task.values() for k in row))
        blocks.append(Table(["task"] + [EVIDENCE_NAMES.get(c, c) for c in columns],
                            [[task] + [_evidence_value(c, row.get(c)) for c in columns] for task, row in by_task.items()]))
    for key, rows in records:
        columns = list(dict.fromkeys(k for row in rows for k in row))
        blocks.append(Table([EVIDENCE_NAMES.get(c, c) for c in columns],
                            [[_evidence_value(c, row.get(c)) for c in columns] for row in rows],
                            EVIDENCE_NAMES.get(key, key)))
    if facts:
        blocks.append(Table(["what", "value"], [[EVIDENCE_NAMES.get(k, k), _evidence_value(k, v)] for k, v in facts]))
    return blocks or [Para("No evidence recorded.")]


# ------------------------------------------------------------------------------------------ tables
def cells_table(summary: pd.DataFrame, task: str) -> Table:
    """One task: a row per model, a column per n_shots, 'mean ± std (n=seeds)' at the final step."""
    rows = summary[summary["task"] == task]
    shots = sorted(rows["n_shots"].unique())
    body = []
    for model in model_order(rows["model"].unique()):
        r = rows[rows["model"] == model].set_index("n_shots")
        body.append([label(model)] + [mean_std(r.at[n, "mean"], r.at[n, "std"], r.at[n, "n_seeds"])
                                      if n in r.index else DASH for n in shots])
    steps = sorted(rows.loc[rows["n_shots"] > 0, "step"].unique())
    caption = f"{task}: accuracy at the final adaptation step"
    if steps:
        caption += f" ({', '.join(str(s) for s in steps)} steps)"
    return Table(["model"] + [f"{n}-shot" for n in shots], body, caption)


def upper_reference_table(summary: pd.DataFrame, runs: dict[str, TrainManifest], tasks: list[str]) -> Table | None:
    """Baseline 2 (sft_task, the design's upper reference) per task beside the few-shot models' best.

    runs: run dir name -> runs/<name>/manifest.json; the task's run is runs/sft_task_<task>. None when
    no task has sft_task results."""
    ref = summary[(summary["model"] == "sft_task") & (summary["n_shots"] == 0)].set_index("task")
    body = []
    for task in tasks:
        if task not in ref.index:
            continue
        manifest = runs.get(f"sft_task_{task}")
        pool, budget = (manifest.pool, manifest.budget) if manifest else (None, None)
        others = summary[(summary["task"] == task) & (summary["model"].isin(["fomaml", "sft_mixed"]))]
        largest = int(others["n_shots"].max()) if len(others) else None
        best = {m: others.loc[(others["model"] == m) & (others["n_shots"] == largest), "mean"]
                for m in ("fomaml", "sft_mixed")}
        best = {m: float(v.iloc[0]) if len(v) else float("nan") for m, v in best.items()}
        upper = float(ref.at[task, "mean"])
        body.append([task, f"{num(pool.distinct if pool else None)} ({pool.split if pool and pool.split else DASH})",
                     f"{num(pool.epochs if pool else None)} epochs, {num(budget.examples if budget else None)} examples",
                     acc(upper), str(int(largest)) if isnum(largest) else DASH, acc(best["fomaml"]),
                     acc(best["sft_mixed"]), signed(best["fomaml"] - upper)])
    if not body:
        return None
    return Table(["task", "training pool (split)", "trained", "SFT-Task, 0-shot", "N-shot (largest)",
                  "FOMAML-SFT at N", "SFT-Mixed at N", "FOMAML-SFT − upper"], body,
                 "Baseline 2, task-specific SFT: the upper reference (runs/sft_task_<task>/manifest.json pool and "
                 "budget; accuracy at the final step, mean over seeds)")


def interval(lo, hi) -> str:
    return f"[{lo:+.3f}, {hi:+.3f}]" if isnum(lo) and isnum(hi) else DASH


def comparison_table(comparison: pd.DataFrame, name_a: str, name_b: str, outcome: str) -> Table:
    """Rows of `metasft.stats.compare_models`: the clustered test first, the t-test over seeds after."""
    header = ["task", "N-shot", "questions × seeds", name_a, name_b, "diff [95% CI]", "p", "p (Holm)", "stars",
              "MDE (80%)", "t-test over seeds"]
    body = []
    for r in comparison.itertuples():
        mde_text = f"{r.mde:.3f}" if isnum(r.mde) else DASH
        t_text = f"t = {r.t:.2f}, p = {pval(r.p_t)}" if isnum(r.t) else f"— ({r.t_none})"
        bound = f" (both at {r.at_bound})" if r.at_bound else ""
        body.append([r.task, str(r.n_shots), f"{r.n_questions} × {r.n_seeds}", acc(r.mean_a), acc(r.mean_b),
                     f"{signed(r.diff)} {interval(r.ci_lo, r.ci_hi)}{bound}", pval(r.p), pval(r.p_holm),
                     r.stars or DASH, mde_text, t_text])
    return Table(header, body, f"{name_a} vs {name_b}, {outcome}: clustered by question (t interval with "
                               "pseudo-counts, sign-flip p, Holm over the table); the design's t-test over seeds beside it")
