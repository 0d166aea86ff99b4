"""`metasft compare EXP_DIR...`: experiment directories side by side (the Exp 1-5 sweep).

For each directory: its resolved config (`config.yaml` of `metasft run`, or `eval_config.yaml` of
`metasft eval`) and its results (`results.sqlite`, or the union of its shards). The comparison names
the config keys whose values differ between the directories, and gives per (task, n_shots) the
final-step accuracy of every model, the mean over seeds (the last recorded adaptation step of each group; 0-shot cells have only step 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from metasft.config import load_yaml
from metasft.data.records import DataError
from metasft.eval.results import ResultsUnion, find_results
from metasft.fingerprint import flatten
from metasft.stats import summarize

CONFIG_FILES = ("config.yaml", "eval_config.yaml", "eval/eval_config.yaml")
# paths that differ between any two directories without changing what was run
_PATHS = ("data.dir", "trainer.paired_run", "eval.models", "model.cache_dir")


@dataclass
class Experiment:
    label: str
    path: Path
    config: dict      # flattened: {dotted key: value}
    final: pd.DataFrame  # model, task, n_shots, accuracy (mean over seeds), seeds


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
    return Experiment(label, path, config, final_accuracy(cells))


def final_accuracy(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (model, task, n_shots): the mean over seeds of each group's last-step accuracy."""
    if cells.empty:
        return pd.DataFrame(columns=["model", "task", "n_shots", "accuracy", "seeds"])
    summary = summarize(cells)  # the report's own final-step mean over seeds
    return summary[["model", "task", "n_shots", "mean", "n_seeds"]].rename(columns={"mean": "accuracy",
                                                                                  "n_seeds": "seeds"})


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


def accuracy_table(experiments: list[Experiment]) -> pd.DataFrame:
    """Rows (task, n_shots); columns `<experiment> <model>`; final-step mean accuracy."""
    parts = [e.final.assign(column=e.final["model"].map(lambda m, e=e: f"{e.label} {m}")) for e in experiments]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if frame.empty:
        return pd.DataFrame()
    order = list(dict.fromkeys(frame["column"]))
    table = frame.pivot_table(index=["task", "n_shots"], columns="column", values="accuracy", aggfunc="first")
    return table[order]


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
    lines = ["experiments:"] + [f"  {e.label}: {e.path}" for e in experiments] + [""]
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
        lines.append("final-step accuracy, mean over seeds (columns: experiment model):")
        lines.append(_text_table(table, ["task", "n_shots"], lambda v: f"{v:.3f}"))
    return "\n".join(lines)


def plot(experiments: list[Experiment], path: Path) -> Path:
    """One panel per task: final-step accuracy against n_shots, one line per (experiment, model)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({t for e in experiments for t in e.final["task"]})
    if not tasks:
        raise DataError("compare: no evaluated cells to plot in " + ", ".join(str(e.path) for e in experiments))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False, sharey=True)
    styles = ["-", "--", ":", "-."]
    models = sorted({m for e in experiments for m in e.final["model"]})
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}
    for ax, task in zip(axes[0], tasks):
        for j, e in enumerate(experiments):
            for model, part in e.final[e.final["task"] == task].groupby("model"):
                part = part.sort_values("n_shots")
                ax.plot(part["n_shots"], part["accuracy"], styles[j % len(styles)], marker="o",
                        color=colours[model], label=f"{e.label} {model}")
        ax.set_title(task)
        ax.set_xlabel("shots")
        ax.set_xticks(sorted({int(n) for e in experiments for n in e.final.loc[e.final["task"] == task, "n_shots"]}))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("final-step accuracy (mean over seeds)")
    seen = {}  # one legend entry per (experiment, model) over all panels
    for ax in axes[0]:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(name, handle)
    fig.legend(list(seen.values()), list(seen.keys()), loc="lower center", ncol=min(4, len(seen)),
               bbox_to_anchor=(0.5, -0.02), fontsize="small")
    fig.tight_layout(rect=(0, 0.08 + 0.04 * (len(seen) // 4), 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path
