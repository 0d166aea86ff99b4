"""The report's figures (matplotlib, Agg). Each one names its task, axes, models and source file,
so it reads without the report around it. Each is written as PNG (FIGURE_DPI) and SVG; each arm has
one style (`arm_style`: display name, colour, marker, line style) in every figure."""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator
import pandas as pd

from metasft import arms

FIGURE_DPI = 160           # PNG; every figure is also written as SVG beside it (vector, for print)
FIGURE_FORMATS = ("png", "svg")


@dataclass(frozen=True)
class ArmStyle:
    """How one arm is drawn in every figure: its display name, colour, marker and line style."""
    label: str
    color: str
    marker: str
    linestyle: str | tuple


_SPARE = ["#CC79A7", "#56B4E9", "#8C564B", "#000000", "#BCBD22"]
_SPARE_MARKERS = ["P", "X", "*", "h", "<"]


def arm_style(model: str) -> ArmStyle:
    """The fixed style of `model`: the design's arms from ARM_STYLES, any other from its name alone
    (a stable hash), so one arm looks the same in every figure whatever else is plotted."""
    if model in arms.ARMS:
        a = arms.ARMS[model]
        return ArmStyle(a.label, a.color, a.marker, a.linestyle)
    h = zlib.crc32(model.encode())
    return ArmStyle(model, _SPARE[h % len(_SPARE)], _SPARE_MARKERS[h % len(_SPARE_MARKERS)], "-")


def label(model: str) -> str:
    return arm_style(model).label


def model_order(models) -> list[str]:
    """The design's models first (FOMAML-SFT, SFT-Mixed, Base, ...), others after, alphabetically."""
    models = set(models)
    order = arms.names()
    return [m for m in order if m in models] + sorted(models - set(order))


def _offsets(models: list[str], width: float) -> dict[str, float]:
    """A small horizontal shift per arm, centred on 0, so coinciding points and bands stay visible."""
    k = len(models)
    return {m: (i - (k - 1) / 2) * width for i, m in enumerate(models)}


def _finish(fig, path: Path, footer: str):
    """Write `path` (PNG) and the same figure in the other FIGURE_FORMATS beside it; return the figure
    (closed to pyplot, its artists still readable)."""
    fig.text(0.01, 0.005, footer, fontsize=7, color="0.4", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = Path(path)
    for fmt in FIGURE_FORMATS:
        fig.savefig(path.with_suffix(f".{fmt}"), dpi=FIGURE_DPI)
    plt.close(fig)
    return fig


def n_label(n_questions, n_seeds) -> str:
    """'40 q × 3 seeds' (or '3 seeds' when the question count is unknown)."""
    seeds = f"{int(n_seeds)} seed{'s' if int(n_seeds) != 1 else ''}"
    return f"{int(n_questions)} q × {seeds}" if n_questions == n_questions else seeds


def _arm_name(model: str, points: pd.DataFrame) -> str:
    """Legend entry: the arm's name and its n, e.g. 'FOMAML-SFT (n = 40 q × 3 seeds)'; n over the
    few-shot points (0-shot is evaluated once, said in the caption)."""
    few = points[points["n_shots"] > 0] if "n_shots" in points and (points["n_shots"] > 0).any() else points
    if few.empty:
        return label(model)
    sizes = sorted({n_label(q, s) for q, s in zip(few["n_questions"], few["n_seeds"])})
    return f"{label(model)} (n = {' or '.join(sizes)})"


# Upper ends of a zoomed accuracy axis: the smallest that holds the data with a little room.
_ZOOM_TOPS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


def accuracy_axis(ax, values, ylabel: str, target_acc: float | None = None) -> None:
    """The y axis of an accuracy panel: 0-1 when the data reach above half of it, else zoomed to
    0-top (the smallest of _ZOOM_TOPS above the data's largest value and band end), saying so in the
    label; on a fixed 0-1 axis, points at 0.02-0.08 were indistinguishable (issue 22). A target
    accuracy above a zoomed axis is drawn off it, and its legend entry says so."""
    values = np.asarray([v for v in np.asarray(values, dtype=float).ravel() if np.isfinite(v)])
    largest = float(values.max()) if values.size else 0.0
    top = next((t for t in _ZOOM_TOPS if largest * 1.1 <= t), None)
    if top is None:
        ax.set_ylim(-0.04, 1.04)
        ax.set_ylabel(ylabel)
    else:
        ax.set_ylim(-0.04 * top, 1.04 * top)
        ax.set_ylabel(f"{ylabel}\nzoomed to 0–{top:g} of the 0–1 scale")
    if target_acc is not None:
        off = top is not None and target_acc > top
        ax.axhline(target_acc, color="k", linestyle=":", linewidth=1,
                   label=f"target accuracy {target_acc:g}" + (" (above this zoomed axis)" if off else ""))


def _draw(ax, model: str, x: np.ndarray, points: pd.DataFrame, name: str | None) -> None:
    style = arm_style(model)
    mean, lo, hi = (points[c].to_numpy(dtype=float) for c in ("mean", "lo", "hi"))
    ax.plot(x, mean, color=style.color, marker=style.marker, linestyle=style.linestyle, markersize=6,
            markeredgecolor="white", markeredgewidth=0.8, linewidth=1.6, label=name)
    ok = ~(np.isnan(lo) | np.isnan(hi))
    if ok.any():
        ax.fill_between(x, np.where(ok, lo, mean), np.where(ok, hi, mean), color=style.color, alpha=0.15,
                        linewidth=0)


def learning_curve(acc: pd.DataFrame, loss: pd.DataFrame, task: str, path: Path, target_acc: float | None,
                   footer: str):
    """Accuracy (left) and the reference solutions' loss (right) vs n_shots for one task, at the
    final adaptation step.

    acc, loss: one row per (model, n_shots) with mean, lo, hi (the 95% interval over questions; NaN
    for no band), n_questions, n_seeds. The x axis places the shot counts evenly, as the design's
    expected-curve sketch does; arms are shifted a little apart so equal values stay visible. The
    loss panel shows learning that accuracy on few questions may not resolve.
    """
    shots = sorted(set(acc["n_shots"]) | set(loss["n_shots"]))
    pos = {n: i for i, n in enumerate(shots)}
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4.6))
    upper_reference(acc_ax, loss_ax, acc, loss)
    drawn = acc  # the upper reference included: the axis must show its line too
    acc, loss = acc[acc["model"] != UPPER_REFERENCE], loss[loss["model"] != UPPER_REFERENCE]
    models = model_order(set(acc["model"]) | set(loss["model"]))
    shift = _offsets(models, 0.07)
    for model in models:
        for ax, frame, legend in ((acc_ax, acc, True), (loss_ax, loss, False)):
            rows = frame[frame["model"] == model].sort_values("n_shots")
            if rows.empty:
                continue
            x = np.array([pos[n] for n in rows["n_shots"]], dtype=float) + shift[model]
            _draw(ax, model, x, rows, _arm_name(model, rows) if legend else None)
    accuracy_axis(acc_ax, drawn[["mean", "hi"]].to_numpy(), "accuracy (final adaptation step)",
                  target_acc)
    loss_ax.set_ylabel("loss of the reference solutions (token mean)")
    for ax in (acc_ax, loss_ax):
        ax.set_xticks(range(len(shots)), [str(int(n)) for n in shots])
        ax.set_xlabel("N-shot (evenly spaced; 0-shot evaluated once)")
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{task}: few-shot learning curve (mean; band: 95% CI over questions)")
    return _finish(fig, path, footer)


UPPER_REFERENCE = "sft_task"  # Baseline 2: the design's "性能上界参考", trained on the task's whole pool


def upper_reference(acc_ax, loss_ax, acc: pd.DataFrame, loss: pd.DataFrame) -> None:
    """Baseline 2 as a horizontal line, not a curve: task-specific SFT trained total_epochs on the task's
    whole training pool, scored 0-shot (its accuracy and loss without further adaptation)."""
    style = arm_style(UPPER_REFERENCE)
    for ax, frame in ((acc_ax, acc), (loss_ax, loss)):
        rows = frame[(frame["model"] == UPPER_REFERENCE) & (frame["n_shots"] == 0)]
        value = float(rows["mean"].iloc[0]) if len(rows) else float("nan")
        if np.isfinite(value):
            ax.axhline(value, color=style.color, linestyle="--", linewidth=1.5,
                       label=f"{style.label} upper reference (whole pool, 0-shot): {value:.3g}")


def adaptation_curve(points: pd.DataFrame, task: str, n_shots: int, path: Path, target_acc: float | None,
                     footer: str):
    """Accuracy vs adaptation step at one shots level for one task.

    points: one row per (model, step) with mean, lo, hi (95% interval over questions, NaN for no
    band), n_questions, n_seeds. Steps are whole numbers: the ticks are the recorded steps.
    """
    steps = sorted(int(s) for s in points["step"].unique())
    span = (steps[-1] - steps[0]) or 1
    models = model_order(points["model"].unique())
    shift = _offsets(models, 0.012 * span)
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for model in models:
        rows = points[points["model"] == model].sort_values("step")
        _draw(ax, model, rows["step"].to_numpy(dtype=float) + shift[model], rows, _arm_name(model, rows))
    accuracy_axis(ax, points[["mean", "hi"]].to_numpy(), "accuracy", target_acc)
    if len(steps) <= 12:
        ax.set_xticks(steps, [str(s) for s in steps])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("adaptation steps on the shots")
    ax.set_title(f"{task}: adaptation speed at {n_shots} shots (mean; band: 95% CI over questions)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _finish(fig, path, footer)


def transfer(points: pd.DataFrame, path: Path, footer: str):
    """Transfer (FOMAML-SFT − SFT-Mixed accuracy) vs task distance, one labelled point per eval task
    and shots level. points: task, distance, diff_0 (NaN if not run), diff_k, k."""
    fig, ax = plt.subplots(figsize=(7, 4.8))
    zero = points.dropna(subset=["diff_0"])
    few = points.dropna(subset=["diff_k"])
    ax.scatter(zero["distance"], zero["diff_0"], marker="o", s=50, color="#444444", label="0-shot")
    ax.scatter(few["distance"], few["diff_k"], marker="^", s=60, color="#7B3294",
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
    return _finish(fig, path, footer)


def similarity_heatmap(names: list[str], matrix: np.ndarray, meta_train: list[str], path: Path, footer: str,
                       adapter: str | None):
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
    return _finish(fig, path, footer)


def training_curves(metrics: dict[str, pd.DataFrame], arms: dict[str, str], path: Path, footer: str):
    """Training loss (left) and validation loss (right) per trained run, against training examples
    processed when every run logs `examples` (one FOMAML step processes many more examples than one
    SFT step, so steps do not line up), else against optimizer step. Each run is drawn in its arm's
    style (`arms`: run name -> arm; a run without one is styled by its name). Returns the figure, or
    None (and writes nothing) when no run logged a loss."""
    runs = {name: df for name, df in metrics.items() if "step" in df and ("loss" in df or "val_loss" in df)}
    if not runs:
        return None
    by_examples = all("examples" in df and df["examples"].notna().any() for df in runs.values())
    xkey, xlabel = ("examples", "training examples processed") if by_examples else ("step", "optimizer step")
    if by_examples:  # validation rows may lack `examples`: carry the last logged count forward; the
        # validation before any step (step 0, logged before the first count) has processed none
        runs = {name: df.assign(examples=df["examples"].ffill().where(df["step"] != 0, df["examples"].fillna(0)))
                for name, df in runs.items()}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    order = model_order({arms.get(n, n) for n in runs})
    for i, (name, df) in enumerate(sorted(runs.items(), key=lambda kv: (order.index(arms.get(kv[0], kv[0])), kv[0]))):
        arm = arms.get(name, name)
        style = arm_style(arm)
        size = max(3.0, 7.0 - 1.5 * i)  # later runs' markers smaller: coinciding points stay visible
        shown = style.label if name == arm else f"{style.label} (run {name})"
        line = dict(color=style.color, linestyle=style.linestyle, linewidth=1.5)
        if "loss" in df:
            rows = df.dropna(subset=["loss"])
            window = max(1, len(rows) // 50)
            left.plot(rows[xkey], rows["loss"].rolling(window, min_periods=1).mean(), label=shown, **line)
        if "val_loss" in df:
            rows = df.dropna(subset=["val_loss"])
            right.plot(rows[xkey], rows["val_loss"], marker=style.marker, ms=size, label=shown, **line)
        if "val_loss_adapted" in df:
            rows = df.dropna(subset=["val_loss_adapted"])
            right.plot(rows[xkey], rows["val_loss_adapted"], marker=style.marker, ms=size, markerfacecolor="white",
                       color=style.color, linestyle=":", linewidth=1.2, label=f"{shown}, after inner steps")
    left.set_title("training loss (SFT: batch loss; meta: query loss), smoothed", fontsize=10)
    right.set_title("validation loss (mean over meta-training tasks)", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss (token-mean cross-entropy)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _finish(fig, path, footer)


def matrix_sweep(points: pd.DataFrame, path: Path, footer: str) -> plt.Figure:
    """The K / inner_lr sweep of the experiment matrix: one panel per eval task, x = K (inner steps),
    one series per inner_lr; filled markers the meta runs, hollow ones their matched SFT-Mixed runs at
    the same x, joined by a thin line (the gap is the matched comparison).

    points: task, run, partner, k, inner_lr, acc, partner_acc, n_shots (the largest both ran), n_seeds.
    """
    tasks = list(dict.fromkeys(points["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks) + 0.6, 4.4), squeeze=False)
    lrs = sorted(points["inner_lr"].unique())
    for ax, task in zip(axes[0], tasks):
        at = points[points["task"] == task]
        for j, lr in enumerate(lrs):
            rows = at[at["inner_lr"] == lr].sort_values("k")
            color = f"C{j % 10}"
            ax.plot(rows["k"], rows["acc"], "o-", color=color, ms=7, label=f"FOMAML, inner_lr {lr:g}")
            ax.plot(rows["k"], rows["partner_acc"], "o", mfc="none", color=color, ms=9,
                    label=f"matched SFT-Mixed (inner_lr {lr:g} run's budget)")
            for r in rows.itertuples():
                ax.plot([r.k, r.k], [r.acc, r.partner_acc], color=color, linewidth=0.8, alpha=0.6)
                ax.annotate(r.run, (r.k, r.acc), textcoords="offset points", xytext=(5, 4), fontsize=7)
        shots = ", ".join(str(int(n)) for n in sorted(at["n_shots"].unique()))
        ax.set_title(f"{task} ({shots}-shot, final step)", fontsize=10)
        ax.set_xlabel("K: inner-loop steps (meta.num_inner_steps)")
        ax.set_xticks(sorted(at["k"].unique()))
        ax.grid(alpha=0.3)
    for ax in axes[0]:  # one scale for every panel, so the tasks compare by eye
        accuracy_axis(ax, points[["acc", "partner_acc"]].to_numpy(), "accuracy, mean over seeds")
        ax.set_ylabel(ax.get_ylabel() if ax is axes[0][0] else "")
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle("Experiment matrix: K / inner_lr sweep, each FOMAML run beside its budget-matched SFT-Mixed")
    return _finish(fig, path, footer)
