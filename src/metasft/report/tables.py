"""Number formatting and the report's tables built from the statistics frames."""
from __future__ import annotations

import json
import math

import pandas as pd

from metasft.report.doc import Table
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


def rounded(value, digits: int = 4):
    """Floats rounded to `digits` significant digits (inf/nan as strings), for printing evidence."""
    if isinstance(value, dict):
        return {str(k): rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    if isinstance(value, float):
        return str(value) if not math.isfinite(value) else float(f"{value:.{digits}g}")
    return value


def evidence_text(evidence: dict) -> str:
    """One line per top-level key, its value as compact JSON (floats to 4 significant digits)."""
    return "\n".join(f"{k}: {json.dumps(rounded(v), ensure_ascii=False)}" for k, v in evidence.items()) or "(none)"


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


def interval(lo, hi) -> str:
    return f"[{lo:+.3f}, {hi:+.3f}]" if isnum(lo) and isnum(hi) else DASH


def comparison_table(comparison: pd.DataFrame, name_a: str, name_b: str, outcome: str) -> Table:
    """Rows of `metasft.stats.compare_models`: the clustered test first, the t-test over seeds after."""
    header = ["task", "N-shot", "questions × seeds", name_a, name_b, "diff [95% CI]", "p", "p (Holm)", "stars",
              "MDE (80%)", "t-test over seeds"]
    body = []
    for r in comparison.itertuples():
        mde_text = f"{r.mde:.3f}" + (" (assumed sd)" if r.mde_basis == "assumed" else "") if isnum(r.mde) else DASH
        t_text = f"t = {r.t:.2f}, p = {pval(r.p_t)}" if isnum(r.t) else f"— ({r.t_none})"
        bound = f" (both at {r.at_bound})" if r.at_bound else ""
        body.append([r.task, str(r.n_shots), f"{r.n_questions} × {r.n_seeds}", acc(r.mean_a), acc(r.mean_b),
                     f"{signed(r.diff)} {interval(r.ci_lo, r.ci_hi)}{bound}", pval(r.p), pval(r.p_holm),
                     r.stars or DASH, mde_text, t_text])
    return Table(header, body, f"{name_a} vs {name_b}, {outcome}: clustered by question (bootstrap interval, "
                               "sign-flip p, Holm over the table); the design's t-test over seeds beside it")
