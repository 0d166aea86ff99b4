"""The report's figures (matplotlib, Agg). Each one names its task, axes, models and source file,
so it reads without the report around it."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

MODEL_LABELS = {"fomaml": "FOMAML-SFT", "sft_mixed": "SFT-Mixed", "base": "Base", "reptile": "Reptile-SFT",
                "sft_task": "SFT-Task"}
_COLORS = {"fomaml": "tab:red", "sft_mixed": "tab:blue", "base": "tab:gray", "reptile": "tab:orange",
           "sft_task": "tab:green"}
_ORDER = ["fomaml", "sft_mixed", "base", "reptile", "sft_task"]


def label(model: str) -> str:
    return MODEL_LABELS.get(model, model)


def model_order(models) -> list[str]:
    """The design's models first (FOMAML-SFT, SFT-Mixed, Base, ...), others after, alphabetically."""
    models = set(models)
    return [m for m in _ORDER if m in models] + sorted(models - set(_ORDER))


def _color(model: str, i: int) -> str:
    return _COLORS.get(model, f"C{(i + 5) % 10}")


def _finish(fig, path: Path, footer: str) -> None:
    fig.text(0.01, 0.005, footer, fontsize=7, color="0.4", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def learning_curve(summary: pd.DataFrame, task: str, path: Path, target_acc: float | None, footer: str) -> None:
    """Accuracy (left) and the reference solutions' loss (right) vs n_shots for one task: mean over
    seeds at the final adaptation step, ± 1 std band.

    summary: rows of `metasft.stats.summarize` for this task (model, n_shots, mean, std, loss,
    loss_std, n_seeds). The x axis places the shot counts evenly, as the design's expected-curve
    sketch does. The loss panel shows learning that accuracy on few questions may not resolve.
    """
    shots = sorted(summary["n_shots"].unique())
    pos = {n: i for i, n in enumerate(shots)}
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for i, model in enumerate(model_order(summary["model"].unique())):
        rows = summary[summary["model"] == model].sort_values("n_shots")
        x = [pos[n] for n in rows["n_shots"]]
        seeds = rows.loc[rows["n_shots"] > 0, "n_seeds"]
        name = f"{label(model)} ({seeds.max()} seeds)" if len(seeds) else label(model)
        for ax, mean_col, std_col in ((acc_ax, "mean", "std"), (loss_ax, "loss", "loss_std")):
            mean, std = rows[mean_col].to_numpy(dtype=float), rows[std_col].fillna(0).to_numpy(dtype=float)
            ax.plot(x, mean, "o-", color=_color(model, i), label=name)
            ax.fill_between(x, mean - std, mean + std, color=_color(model, i), alpha=0.15, linewidth=0)
    if target_acc is not None:
        acc_ax.axhline(target_acc, color="k", linestyle=":", linewidth=1, label=f"target accuracy {target_acc:g}")
    acc_ax.set_ylabel("accuracy (final adaptation step)")
    acc_ax.set_ylim(-0.02, 1.02)
    loss_ax.set_ylabel("loss of the reference solutions (token mean)")
    for ax in (acc_ax, loss_ax):
        ax.set_xticks(range(len(shots)), [str(n) for n in shots])
        ax.set_xlabel("N-shot (evenly spaced; 0-shot evaluated once)")
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{task}: few-shot learning curve (mean ± std over seeds)")
    _finish(fig, path, footer)


def adaptation_curve(cells: pd.DataFrame, task: str, n_shots: int, path: Path, target_acc: float | None,
                     footer: str) -> None:
    """Accuracy vs adaptation step at one shots level for one task: mean over seeds (± 1 std band)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, model in enumerate(model_order(cells["model"].unique())):
        by_step = cells[cells["model"] == model].groupby("step")["accuracy"]
        mean, std = by_step.mean(), by_step.std(ddof=1).fillna(0)
        seeds = cells.loc[cells["model"] == model, "seed"].nunique()
        ax.plot(mean.index, mean.to_numpy(), "o-", color=_color(model, i), label=f"{label(model)} ({seeds} seeds)")
        ax.fill_between(mean.index, (mean - std).to_numpy(), (mean + std).to_numpy(), color=_color(model, i),
                        alpha=0.15, linewidth=0)
    if target_acc is not None:
        ax.axhline(target_acc, color="k", linestyle=":", linewidth=1, label=f"target accuracy {target_acc:g}")
    ax.set_xlabel("adaptation steps on the shots")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{task}: adaptation speed at {n_shots} shots (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    _finish(fig, path, footer)


def transfer(points: pd.DataFrame, path: Path, footer: str) -> None:
    """Transfer (FOMAML-SFT − SFT-Mixed accuracy) vs task distance, one labelled point per eval task
    and shots level. points: task, distance, diff_0 (NaN if not run), diff_k, k."""
    fig, ax = plt.subplots(figsize=(7, 4.8))
    zero = points.dropna(subset=["diff_0"])
    few = points.dropna(subset=["diff_k"])
    ax.scatter(zero["distance"], zero["diff_0"], marker="o", s=50, color="tab:purple", label="0-shot")
    ax.scatter(few["distance"], few["diff_k"], marker="^", s=60, color="tab:green",
               label="largest N-shot (N in the label)")
    for r in zero.itertuples():
        ax.annotate(r.task, (r.distance, r.diff_0), textcoords="offset points", xytext=(5, 4), fontsize=8)
    for r in few.itertuples():
        ax.annotate(f"{r.task} ({int(r.k)})", (r.distance, r.diff_k), textcoords="offset points", xytext=(5, -10),
                    fontsize=8)
    ax.axhline(0, color="k", linewidth=0.8)
    ax.set_xlabel("task distance: 1 − cosine similarity to the nearest meta-training task")
    ax.set_ylabel("transfer: FOMAML-SFT − SFT-Mixed accuracy")
    ax.set_title("Transfer vs task distance (one point per eval task)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    _finish(fig, path, footer)


def similarity_heatmap(names: list[str], matrix: np.ndarray, meta_train: list[str], path: Path, footer: str,
                       adapter: str | None) -> None:
    """Cosine similarity of the tasks' mean adapter gradients; meta-training tasks first."""
    order = [n for n in names if n in meta_train] + [n for n in names if n not in meta_train]
    idx = [names.index(n) for n in order]
    m = matrix[np.ix_(idx, idx)]
    size = max(5.0, 0.55 * len(order) + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(m, cmap="coolwarm", vmin=-1, vmax=1)
    ticks = [f"{n} (meta)" if n in meta_train else f"{n} (eval)" for n in order]
    ax.set_xticks(range(len(order)), ticks, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(order)), ticks, fontsize=8)
    if len(order) <= 20:
        for i in range(len(order)):
            for j in range(len(order)):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(m[i, j]) > 0.6 else "black")
    n_meta = sum(n in meta_train for n in order)
    if 0 < n_meta < len(order):
        ax.axhline(n_meta - 0.5, color="k", linewidth=1.5)
        ax.axvline(n_meta - 0.5, color="k", linewidth=1.5)
    fig.colorbar(im, ax=ax, shrink=0.8, label="cosine similarity of mean adapter gradients")
    ax.set_title(f"Task similarity (gradients at: {adapter or 'adapter not recorded'})", fontsize=10)
    _finish(fig, path, footer)


def training_curves(metrics: dict[str, pd.DataFrame], path: Path, footer: str) -> bool:
    """Training loss (left) and validation loss (right) per trained run, against training examples
    processed when every run logs `examples` (one FOMAML step processes many more examples than one
    SFT step, so steps do not line up), else against optimizer step. Returns False (and writes
    nothing) when no run logged a loss."""
    runs = {name: df for name, df in metrics.items() if "step" in df and ("loss" in df or "val_loss" in df)}
    if not runs:
        return False
    by_examples = all("examples" in df and df["examples"].notna().any() for df in runs.values())
    xkey, xlabel = ("examples", "training examples processed") if by_examples else ("step", "optimizer step")
    if by_examples:  # validation rows may lack `examples`: carry the last logged count forward
        runs = {name: df.assign(examples=df["examples"].ffill()) for name, df in runs.items()}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (name, df) in enumerate(sorted(runs.items())):
        color = f"C{i % 10}"
        if "loss" in df:
            rows = df.dropna(subset=["loss"])
            window = max(1, len(rows) // 50)
            left.plot(rows[xkey], rows["loss"].rolling(window, min_periods=1).mean(), color=color, label=name)
        if "val_loss" in df:
            rows = df.dropna(subset=["val_loss"])
            right.plot(rows[xkey], rows["val_loss"], "o-", ms=3, color=color, label=f"{name}")
        if "val_loss_adapted" in df:
            rows = df.dropna(subset=["val_loss_adapted"])
            right.plot(rows[xkey], rows["val_loss_adapted"], "s--", ms=3, color=color, label=f"{name} (after inner steps)")
    left.set_title("training loss (SFT: batch loss; meta: query loss), smoothed")
    right.set_title("validation loss (mean over meta-training tasks)")
    for ax in (left, right):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss (token-mean cross-entropy)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    _finish(fig, path, footer)
    return True

