"""`metasft compare EXP_DIR...`: experiment directories side by side (the Exp 1-5 sweep).

For each directory: its resolved config (`config.yaml` of `metasft run`, or `eval_config.yaml` of
`metasft eval`) and its results (`results.sqlite`, or the union of its shards). The comparison names
the config keys whose values differ between the directories, and gives per (task, n_shots) the
final-step accuracy of every model, the mean over seeds (the last recorded adaptation step of each group; 0-shot cells have only step 0).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from metasft.config import fields_used_by, load_yaml
from metasft.data.records import DataError
from metasft.eval.results import ResultsUnion, find_results
from metasft.fingerprint import flatten
from metasft.report.bands import final_bands
from metasft.report.plots import accuracy_axis, arm_style, label, model_order, n_label
from metasft.stats import summarize
from metasft.rundir import CONFIG_FILE, EVAL_CONFIG

CONFIG_FILES = (CONFIG_FILE, EVAL_CONFIG, "eval/eval_config.yaml")
# paths that differ between any two directories without changing what was run
_PATHS = fields_used_by("where")


@dataclass
class Experiment:
    label: str
    path: Path
    config: dict      # flattened: {dotted key: value}
    final: pd.DataFrame  # FINAL_COLUMNS: one row per (model, task, n_shots)


# accuracy: mean over seeds of the final step; lo, hi: 95% interval over questions (NaN without
# per-question predictions); n_questions (NaN when unknown), seeds
FINAL_COLUMNS = ["model", "task", "n_shots", "accuracy", "lo", "hi", "n_questions", "seeds"]


def load_experiments(paths: list[Path]) -> list[Experiment]:
    """Every directory of `metasft compare`, labelled by its shortest distinct path tail. The same
    directory twice is refused: its columns would be identical and one label would have to be a
    full path."""
    seen = {}
    for p in paths:
        real = Path(p).resolve()
        if real in seen:
            raise DataError(f"compare: {p} is the same directory as {seen[real]}; give each directory once")
        seen[real] = p
    return [load_experiment(p, name) for p, name in zip(paths, labels(paths))]


def load_experiment(path: Path, label: str) -> Experiment:
    path = Path(path)
    config_file = next((path / name for name in CONFIG_FILES if (path / name).is_file()), None)
    if config_file is None:
        raise DataError(f"{path}: no {' or '.join(CONFIG_FILES)}; expected an experiment directory "
                        f"(`metasft run --out`) or an evaluation directory (`metasft eval --out`)")
    try:
        config = load_yaml(config_file.read_text(encoding="utf-8"), str(config_file)) or {}
    except UnicodeDecodeError as e:
        raise DataError(f"{config_file}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    if not isinstance(config, dict):
        raise DataError(f"{config_file}: expected a mapping of config keys, got {type(config).__name__}")
    config = flatten(config)
    with ResultsUnion(find_results(path)) as stored:
        cells = stored.cells()
        predictions = stored.predictions() if not cells.empty else None
    return Experiment(label, path, config, final_accuracy(cells, predictions))


def final_accuracy(cells: pd.DataFrame, predictions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (model, task, n_shots): FINAL_COLUMNS. The mean is the report's (summarize: the mean over
    seeds of each group's last-step accuracy); the interval is the report's band (a question's score
    is its mean over seeds; percentile bootstrap over questions)."""
    if cells.empty:
        return pd.DataFrame(columns=FINAL_COLUMNS)
    summary = summarize(cells)[["model", "task", "n_shots", "mean", "n_seeds"]]
    summary = summary.rename(columns={"mean": "accuracy", "n_seeds": "seeds"})
    band = final_bands(cells, predictions) if predictions is not None else None
    if band is None or band.empty:
        return summary.assign(lo=float("nan"), hi=float("nan"), n_questions=float("nan"))[FINAL_COLUMNS]
    band = band[["model", "task", "n_shots", "lo", "hi", "n_questions"]]
    return summary.merge(band, on=["model", "task", "n_shots"], how="left")[FINAL_COLUMNS]


def labels(paths: list[Path]) -> list[str]:
    """Directory names, or longer path tails where two names clash."""
    paths = [Path(p).resolve() for p in paths]
    depth = 1
    while depth < 8:
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names):
            return names
        depth += 1
    return [str(p) for p in paths]


def differing_keys(experiments: list[Experiment]) -> pd.DataFrame:
    """Rows: the config keys whose value is not the same in every experiment; columns: experiments."""
    keys = sorted({k for e in experiments for k in e.config})
    rows = {}
    for key in keys:
        if any(key == p or key.startswith(p + ".") for p in _PATHS):
            continue
        values = [e.config.get(key, "(unset)") for e in experiments]
        if any(v != values[0] for v in values[1:]):
            rows[key] = [_show(v) for v in values]
    return pd.DataFrame.from_dict(rows, orient="index", columns=[e.label for e in experiments])


def column(e: Experiment, model: str) -> str:
    """`<experiment> <display name>`, e.g. 'exp1 FOMAML-SFT'."""
    return f"{e.label} {label(model)}"


def accuracy_table(experiments: list[Experiment]) -> pd.DataFrame:
    """Rows (task, n_shots); columns `<experiment> <display name>` in the report's model order;
    cells 'mean [lo, hi]' (final-step accuracy, 95% interval over questions) or the mean alone."""
    parts = []
    for e in experiments:
        order = {m: i for i, m in enumerate(model_order(e.final["model"]))}
        final = e.final.assign(rank=e.final["model"].map(order)).sort_values("rank", kind="stable")
        parts.append(final.assign(column=final["model"].map(lambda m, e=e: column(e, m)),
                                  cell=[_cell(r) for r in final.itertuples()]))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if frame.empty:
        return pd.DataFrame()
    order = list(dict.fromkeys(frame["column"]))
    table = frame.pivot_table(index=["task", "n_shots"], columns="column", values="cell", aggfunc="first")
    return table[order]


def _cell(r) -> str:
    if pd.isna(r.lo) or pd.isna(r.hi):
        return f"{r.accuracy:.3f}"
    return f"{r.accuracy:.3f} [{r.lo:.3f}, {r.hi:.3f}]"


def sizes(e: Experiment, model: str) -> str:
    """n of a model's cells: '4 q × 2 seeds' at the few-shot levels (0-shot is evaluated once), or
    each distinct size joined by 'or'."""
    rows = e.final[e.final["model"] == model]
    few = rows[rows["n_shots"] > 0] if (rows["n_shots"] > 0).any() else rows
    return " or ".join(sorted({n_label(q, s) for q, s in zip(few["n_questions"], few["seeds"])}))


def shown_path(path: Path) -> str:
    """A path as the reader knows it: relative to the working directory when it lies below it."""
    path = Path(path)
    try:
        rel = os.path.relpath(path.resolve(), Path.cwd())
    except ValueError:  # another drive
        return str(path)
    return rel if not rel.startswith("..") else str(path)


def _show(value) -> str:
    return value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _text_table(frame: pd.DataFrame, index_names: list[str], fmt=str) -> str:
    header = index_names + [str(c) for c in frame.columns]
    body = []
    for idx, row in frame.iterrows():
        idx = idx if isinstance(idx, tuple) else (idx,)
        body.append([str(i) for i in idx] + ["-" if pd.isna(v) else fmt(v) for v in row])
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in body])


def render(experiments: list[Experiment]) -> str:
    """The comparison as plain text: the experiments, the keys that differ, the accuracy table."""
    lines = ["experiments:"] + [f"  {e.label}: {shown_path(e.path)}" for e in experiments] + [""]
    diff = differing_keys(experiments)
    if diff.empty:
        lines.append("config: no key differs between these experiments")
    else:
        lines.append(f"config keys that differ ({len(diff)}; all other keys are equal):")
        lines.append(_text_table(diff, ["key"]))
    lines.append("")
    table = accuracy_table(experiments)
    if table.empty:
        lines.append("accuracy: no evaluated cells in these experiments")
    else:
        lines.append("final-step accuracy, mean over seeds [95% interval over questions] (columns: experiment "
                     "model):")
        lines.append(_text_table(table, ["task", "n_shots"]))
        lines.append("n (questions × seeds per cell; 0-shot is evaluated once):")
        lines += [f"  {column(e, m)}: {sizes(e, m)}" for e in experiments for m in model_order(e.final["model"])]
    return "\n".join(lines)


def figure(experiments: list[Experiment]):
    """One panel per task: final-step accuracy against n_shots (evenly spaced, as in the report), one
    line per (experiment, model) with its 95% interval over questions as error bars.

    A model keeps its report style (colour, marker); experiments differ by line style and marker fill
    (filled, hollow, ...). Each series is shifted a little along x, so equal curves stay visible.
    Returns the matplotlib Figure (closed to pyplot, its artists still readable)."""
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = sorted({t for e in experiments for t in e.final["task"]})
    if not tasks:
        raise DataError("compare: no evaluated cells to plot in " + ", ".join(shown_path(e.path) for e in experiments))
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(6.5, 4.2 * len(tasks)), 3.8), squeeze=False, sharey=True)
    dashes = ["-", "--", ":", "-."]
    series = [(j, e, m) for j, e in enumerate(experiments) for m in model_order(e.final["model"])]
    shift = {(j, m): (i - (len(series) - 1) / 2) * min(0.06, 0.4 / len(series)) for i, (j, _, m) in enumerate(series)}
    for ax, task in zip(axes[0], tasks):
        shots = sorted({int(n) for e in experiments for n in e.final.loc[e.final["task"] == task, "n_shots"]})
        pos = {n: i for i, n in enumerate(shots)}
        for j, e, model in series:
            part = e.final[(e.final["task"] == task) & (e.final["model"] == model)].sort_values("n_shots")
            if part.empty:
                continue
            style = arm_style(model)
            x = np.array([pos[int(n)] for n in part["n_shots"]], dtype=float) + shift[(j, model)]
            y = part["accuracy"].to_numpy(float)
            line = dashes[j % len(dashes)] if len(experiments) > 1 else style.linestyle
            ax.plot(x, y, color=style.color, marker=style.marker, linestyle=line, markersize=6, linewidth=1.5,
                    markerfacecolor=style.color if j % 2 == 0 else "white", markeredgecolor=style.color,
                    label=f"{column(e, model)} (n = {sizes(e, model)})")
            lo, hi = part["lo"].to_numpy(float), part["hi"].to_numpy(float)
            ok = ~(np.isnan(lo) | np.isnan(hi))
            if ok.any():
                ax.errorbar(x[ok], y[ok], yerr=[y[ok] - lo[ok], hi[ok] - y[ok]], fmt="none", ecolor=style.color,
                            elinewidth=1, capsize=2.5, alpha=0.7)
        ax.set_title(task)
        ax.set_xlabel("N-shot (evenly spaced)")
        ax.set_xticks(range(len(shots)), [str(n) for n in shots])
        ax.grid(alpha=0.3)
    finals = pd.concat([e.final for e in experiments])
    accuracy_axis(axes[0][0], finals[["accuracy", "hi"]].to_numpy(float), "final-step accuracy (mean over seeds)")
    seen = {}  # one legend entry per (experiment, model) over all panels
    for ax in axes[0]:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(name, handle)
    ncol = min(3, len(seen))
    fig.legend(list(seen.values()), list(seen.keys()), loc="lower center", ncol=ncol,
               bbox_to_anchor=(0.5, -0.02), fontsize="small")
    fig.suptitle("final-step accuracy per task; error bars: 95% interval over questions", fontsize=10)
    fig.tight_layout(rect=(0, 0.06 + 0.05 * -(-len(seen) // ncol), 1, 1))
    plt.close(fig)
    return fig


def plot(experiments: list[Experiment], path: Path) -> Path:
    """Write `figure(experiments)` to `path` (PNG); return the path."""
    fig = figure(experiments)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path
