"""`metasft report RUN_DIR`: one experiment directory -> report/report.md, report.html, figures.

Reads only files (never metasft.train): config.yaml, manifest.json, dataset/manifest.json,
runs/*/manifest.json and metrics.jsonl, eval/results.sqlite, eval/task_similarity.json. Every
number is computed by metasft.stats from the stored cells and predictions; the report presents,
it does not judge. A piece that is missing leaves its section saying so instead of failing.

Output (replaced as a whole, atomically):
    <exp>/report/report.md, report.html   the same blocks, rendered twice
    <exp>/report/figures/*.png            learning curves, adaptation speed, transfer, similarity
    <exp>/report/summary.csv              summarize(cells) plus the other metrics at the final step
    <exp>/report/comparison.csv           compare_models(fomaml, sft_mixed)
    <exp>/report/verdicts.json            the verdicts with their evidence
"""
from __future__ import annotations

import logging
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from metasft.report import plots
from metasft.report import tables as T
from metasft.report.doc import (
    Bullets,
    Callout,
    Code,
    Document,
    Heading,
    Image,
    Para,
    Table,
    to_html,
    to_markdown,
)
from metasft.report.load import Experiment, error_rows, load_experiment
from metasft.rundir import atomic_dir, atomic_write_text, write_json
from metasft.stats import (
    UNMEASURABLE,
    adaptation_speed,
    compare_models,
    final_step,
    sample_efficiency,
    sample_efficiency_interpolated,
    summarize,
    verdicts,
)
from metasft.stats.verdicts import DESIGN_TARGET_ACC

log = logging.getLogger(__name__)

FOMAML, SFT, BASE = "fomaml", "sft_mixed", "base"
DESIGN_MODELS = (FOMAML, SFT, BASE)
TINY_MODEL = "tiny-llama"
EXTRA_METRICS = ["reasoning_steps", "step_correctness", "accuracy_ll", "acc_at_k"]
CELLS_SOURCE = "eval/results.sqlite (table cells)"
PREDICTIONS_SOURCE = "eval/results.sqlite (table predictions)"
SIMILARITY_SOURCE = "eval/task_similarity.json"


@dataclass
class Context:
    """What the sections share: the experiment, derived task lists, and where files go."""
    exp: Experiment
    out: Path                     # the report directory being written (a temp dir until done)
    n_boot: int
    errors_per_cell: int
    summary: pd.DataFrame | None = None
    target_acc: float = DESIGN_TARGET_ACC
    target_from: str = ""
    eval_tasks: list[str] = field(default_factory=list)
    unseen: list[str] = field(default_factory=list)
    cross_domain: list[str] = field(default_factory=list)
    task_flags_from: str = ""
    budget_mismatch: str | None = None
    # filled in by the verdicts section, shown in the header
    verdict_line: Para = field(default_factory=lambda: Para("Verdicts: not computed (see section 5)."))

    @property
    def name(self) -> str:
        return self.exp.root.name

    def figure(self, stem: str) -> tuple[Path, str]:
        """(path to write, path relative to the report) of figures/<stem>.png, stem made filename-safe."""
        rel = f"figures/{re.sub(r'[^A-Za-z0-9_.-]+', '_', stem)}.png"
        return self.out / rel, rel

    def source(self, what: str) -> str:
        """The footer of a figure: its source file, and the tiny-model warning when it applies."""
        tiny = "TINY TEST MODEL: pipeline check, numbers meaningless · " if _tiny(self) else ""
        return f"{tiny}source: {self.name}/{what}"


def write_report(exp_dir: Path, *, n_boot: int = 10_000, errors_per_cell: int = 3) -> Path:
    """Write `<exp_dir>/report/` (see the module docstring) and return the path of report.md.

    n_boot: bootstrap replicates of the paired comparisons; errors_per_cell: wrong answers shown per
    (task, model), drawn with a fixed seed.
    """
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise FileNotFoundError(f"experiment directory {exp_dir} does not exist")
    exp = load_experiment(exp_dir)
    with atomic_dir(exp_dir / "report") as out:
        (out / "figures").mkdir()
        ctx = _context(exp, out, n_boot, errors_per_cell)
        doc = Document(f"metasft report: {ctx.name}")
        for section in (_header, _setup, _training, _learning_curves, _transfer, _tables, _verdicts, _errors):
            _run_section(section, ctx, doc)
        atomic_write_text(out / "report.md", to_markdown(doc))
        atomic_write_text(out / "report.html", to_html(doc))
    return exp_dir / "report" / "report.md"


def _run_section(section, ctx: Context, doc: Document) -> None:
    """A section that fails says so in the report (with the error) and the others still get written."""
    blocks = Document(doc.title)
    try:
        section(ctx, blocks)
    except Exception as e:
        log.exception("report section %s failed", section.__name__)
        blocks.add(Callout("warning", f"Section `{section.__name__.strip('_')}` could not be built: "
                                      f"{type(e).__name__}: {e}"))
    doc.add(*blocks.blocks)


def _context(exp: Experiment, out: Path, n_boot: int, errors_per_cell: int) -> Context:
    ctx = Context(exp, out, n_boot, errors_per_cell)
    if exp.cells is not None:
        try:
            ctx.summary = summarize(exp.cells)
        except ValueError as e:  # repeated or missing columns: say so, report the rest
            exp.missing.append(f"{exp.rel(exp.results_path)}: table cells unusable ({e})")
            exp.cells = exp.predictions = None
    if exp.config is not None:
        ctx.target_acc, ctx.target_from = exp.config.eval.target_acc, "config.yaml eval.target_acc"
    else:
        ctx.target_from = "the design's 0.7 (config.yaml missing)"
    if exp.data.get("eval_tasks"):
        flags = {name: (bool(t.get("unseen")), bool(t.get("cross_domain"))) for name, t in exp.data["eval_tasks"].items()}
        ctx.task_flags_from = "dataset/manifest.json eval_tasks"
    elif exp.config is not None and exp.config.data.eval_tasks:
        flags = {t.name: (t.unseen, t.cross_domain) for t in exp.config.data.eval_tasks}
        ctx.task_flags_from = "config.yaml data.eval_tasks (dataset/manifest.json has none)"
    else:
        flags = {}
        ctx.task_flags_from = "nowhere: neither dataset/manifest.json nor config.yaml lists eval tasks"
    ctx.eval_tasks = list(flags)
    ctx.unseen = [t for t, (u, _) in flags.items() if u]
    ctx.cross_domain = [t for t, (_, c) in flags.items() if c]
    return ctx


def _tiny(ctx: Context) -> bool:
    return ctx.exp.config is not None and ctx.exp.config.model.partial_pretrain == TINY_MODEL


def _result_tasks(ctx: Context) -> list[str]:
    """Tasks with results: the eval tasks' order first, then any others found in the cells."""
    found = set(ctx.summary["task"]) if ctx.summary is not None else set()
    return [t for t in ctx.eval_tasks if t in found] + sorted(found - set(ctx.eval_tasks))


def _no_results(doc: Document, ctx: Context) -> bool:
    if ctx.summary is None:
        doc.add(Callout("note", f"No evaluation results ({ctx.exp.rel(ctx.exp.results_path)} missing or empty): "
                                "nothing to show here."))
        return True
    return False


def _short(commit) -> str:
    if not commit:
        return T.DASH
    base, _, dirty = str(commit).partition("+")
    return base[:10] + (f"+{dirty}" if dirty else "")


# ------------------------------------------------------------------------------------------ header
def _header(ctx: Context, doc: Document) -> None:
    exp = ctx.exp
    model = exp.config.model.partial_pretrain if exp.config else None
    if _tiny(ctx):
        doc.add(Callout("warning", "**Pipeline check only — these numbers mean nothing.** The model is the tiny "
                                   "random test model (`model.partial_pretrain = tiny-llama`): a 2-layer network "
                                   "that cannot reason; every accuracy, difference and verdict below only shows "
                                   "that the pipeline runs end to end."))
    doc.add(Para(f"Experiment directory: `{exp.root}`. Model: `{model or 'unknown (config.yaml missing)'}`. "
                 "Every number below names the file it was read from, relative to this directory."))
    doc.add(ctx.verdict_line)
    if exp.missing:
        doc.add(Callout("note", "Missing or unreadable inputs (the sections that need them say what they cannot show):"),
                Bullets([f"`{m.split(':', 1)[0]}`:{m.split(':', 1)[1]}" if ":" in m else m for m in exp.missing]))


# ------------------------------------------------------------------------------------------ setup
def _setup(ctx: Context, doc: Document) -> None:
    exp = ctx.exp
    doc.add(Heading(1, "1. Setup"))
    cfg = exp.config
    doc.add(Heading(2, "Model"))
    if cfg is None:
        doc.add(Para("config.yaml missing: model settings unknown."))
    else:
        m = cfg.model
        doc.add(Para(f"Base model `{m.partial_pretrain}`, LoRA rank {m.lora_rank}, alpha {m.lora_alpha}, dropout "
                     f"{m.lora_dropout}, target modules {', '.join(m.target_modules)}; base weights {m.dtype}. "
                     f"Arms: {', '.join(cfg.arms)}. Meta-learning: {cfg.meta.algorithm}, K = {cfg.meta.num_inner_steps} "
                     f"inner steps (inner lr {cfg.meta.inner_lr:g}, {cfg.meta.inner_optimizer}), outer lr "
                     f"{cfg.meta.outer_lr:g}, meta-batch {cfg.meta.meta_batch_size} tasks. Evaluation: "
                     f"{cfg.eval.adaptation_steps} adaptation steps (lr {cfg.eval.adaptation_lr:g}, batch "
                     f"{cfg.eval.adaptation_batch_size}), target accuracy {cfg.eval.target_acc:g}. Source: `config.yaml`."))
    _data_tables(ctx, doc)
    _budgets(ctx, doc)
    _seeds(ctx, doc)
    _provenance(ctx, doc)
    _stages(ctx, doc)


def _splits(splits: dict) -> str:
    return ", ".join(f"{s} {v.get('n', '?')}" for s, v in splits.items()) or T.DASH


def _data_tables(ctx: Context, doc: Document) -> None:
    data = ctx.exp.data
    doc.add(Heading(2, "Data"))
    if not data:
        doc.add(Para("dataset/manifest.json missing: tasks, counts and file hashes unknown."))
        return
    doc.add(Para(f"Source: `dataset/manifest.json` (data seed {data.get('seed', T.DASH)}, template "
                 f"{data.get('template', T.DASH)}, data code {_short((data.get('code') or {}).get('git_commit'))})."))
    tasks = data.get("tasks", {})
    if tasks:
        doc.add(Table(["meta-training task", "source", "examples per split", "levels (all splits)"],
                      [[name, t.get("source", T.DASH), _splits(t.get("splits", {})), _levels(t.get("splits", {}))]
                       for name, t in tasks.items()], "Meta-training tasks"))
    else:
        doc.add(Para("No meta-training tasks listed."))
    evals = data.get("eval_tasks", {})
    if evals:
        doc.add(Table(["eval task", "source", "N-shot levels", "unseen (protocol B)", "cross-domain (C5)",
                       "examples per split"],
                      [[name, t.get("source", T.DASH), ", ".join(str(n) for n in t.get("n_shots", [])),
                        "yes" if t.get("unseen") else "no", "yes" if t.get("cross_domain") else "no",
                        _splits(t.get("splits", {}))] for name, t in evals.items()],
                      "Evaluation tasks (`test`: scored questions; `shots`: the pool the shots are drawn from)"))
    else:
        doc.add(Para("No evaluation tasks listed."))
    files = data.get("files", {})
    if files:
        doc.add(Table(["file", "records", "sha256 (first 12)"],
                      [[rel, T.num(f.get("n")), str(f.get("sha256", ""))[:12] or T.DASH]
                       for rel, f in sorted(files.items())],
                      "Data files (dataset/manifest.json files)"))
        for run, manifest in ctx.exp.runs.items():
            used = manifest.get("data_files") or {}
            differ = sorted(rel for rel in set(used) & set(files) if used[rel].get("sha256") != files[rel].get("sha256"))
            if differ:
                doc.add(Callout("warning", f"Run `{run}` trained on data files whose hashes differ from "
                                           f"dataset/manifest.json: {', '.join(differ)}."))


def _levels(splits: dict) -> str:
    total: dict[str, int] = {}
    for v in splits.values():
        for lvl, n in (v.get("levels") or {}).items():
            total[str(lvl)] = total.get(str(lvl), 0) + int(n)
    return ", ".join(f"L{k}: {v}" for k, v in sorted(total.items())) or T.DASH


def _run_named(ctx: Context, arm: str) -> str | None:
    """The run directory of `arm`: runs/<arm>, else the first whose manifest says arm == `arm`."""
    if arm in ctx.exp.runs:
        return arm
    return next((name for name, m in ctx.exp.runs.items() if m.get("arm") == arm), None)


def _budgets(ctx: Context, doc: Document) -> None:
    exp = ctx.exp
    doc.add(Heading(2, "Training budgets"))
    if not exp.runs:
        doc.add(Para("No run directories under `runs/`: budgets unknown."))
        return
    keys = ["examples", "distinct_examples", "tokens", "response_tokens", "optimizer_steps", "inner_steps"]
    rows = []
    for name, m in exp.runs.items():
        budget, best = m.get("budget") or {}, m.get("best") or {}
        rows.append([name, m.get("arm", T.DASH), m.get("status", T.DASH), T.num(m.get("seed"))]
                    + [T.num(budget.get(k)) for k in keys]
                    + [T.num(best.get("step")), T.num(best.get("val_loss")), T.seconds(m.get("train_seconds")),
                       _short(m.get("git_commit"))])
    doc.add(Table(["run", "arm", "status", "seed", "examples", "distinct", "tokens", "response tokens",
                   "optimizer steps", "inner steps", "best step", "best val loss", "train time", "git commit"],
                  rows, "Source: runs/<run>/manifest.json (budget, best, train_seconds)"))
    not_finished = [n for n, m in exp.runs.items() if m.get("status") != "finished"]
    if not_finished:
        doc.add(Callout("warning", f"Run(s) not finished: {', '.join(not_finished)}."))
    no_budget = [n for n, m in exp.runs.items() if not m.get("budget")]
    if no_budget:
        doc.add(Para(f"No budget recorded for: {', '.join(no_budget)}."))

    fom, sft = _run_named(ctx, FOMAML), _run_named(ctx, SFT)
    if fom is None or sft is None:
        doc.add(Para(f"Budget match not checked: no {'FOMAML' if fom is None else 'SFT-Mixed'} run under runs/."))
        return
    a = (exp.runs[fom].get("budget") or {}).get("examples")
    b = (exp.runs[sft].get("budget") or {}).get("examples")
    if not (T.isnum(a) and T.isnum(b)):
        doc.add(Para("Budget match not checked: runs/fomaml or runs/sft_mixed has no budget.examples."))
        return
    cfg = exp.run_configs.get(sft) or exp.config
    batch = cfg.data.train_batch_size if cfg is not None else None
    batch_from = f"runs/{sft}/config.yaml" if sft in exp.run_configs else "config.yaml"
    mode = f" (data.budget = {cfg.data.budget})" if cfg is not None else ""
    if batch is None:
        doc.add(Para(f"Budget match not checked: the SFT batch size is unknown (no config). Examples: FOMAML-SFT "
                     f"{a:,}, SFT-Mixed {b:,}."))
    elif abs(a - b) > batch:
        ctx.budget_mismatch = (f"FOMAML-SFT processed {a:,} training examples and SFT-Mixed {b:,}: they differ by "
                               f"{abs(a - b):,}, more than one SFT batch ({batch}, {batch_from} data.train_batch_size)"
                               f"{mode}. Their comparison is not at an equal example budget.")
        doc.add(Callout("warning", f"**Budget mismatch.** {ctx.budget_mismatch}"))
    else:
        doc.add(Para(f"Example budgets match: FOMAML-SFT {a:,}, SFT-Mixed {b:,} (difference {abs(a - b):,} ≤ one SFT "
                     f"batch of {batch}){mode}."))


def _seeds(ctx: Context, doc: Document) -> None:
    exp, cfg = ctx.exp, ctx.exp.config
    doc.add(Heading(2, "Seeds"))
    items = []
    if cfg is not None:
        items.append(f"Experiment seed {cfg.seed}; evaluation seeds {cfg.eval.seeds} (config.yaml).")
    if "seed" in exp.data:
        items.append(f"Data split seed {exp.data['seed']} (dataset/manifest.json).")
    if exp.runs:
        items.append("Training seed per run: " + ", ".join(f"{n} {T.num(m.get('seed'))}" for n, m in exp.runs.items())
                     + " (runs/<run>/manifest.json).")
    if exp.cells is not None:
        few = exp.cells[exp.cells["n_shots"] > 0]
        per_model = few.groupby("model")["seed"].unique()
        items.append("Few-shot seeds found in the results: " + "; ".join(
            f"{plots.label(m)} {sorted(int(s) for s in per_model[m])}" for m in plots.model_order(per_model.index))
            + f" ({CELLS_SOURCE}). 0-shot cells are evaluated once, with seed 0.")
    doc.add(Bullets(items) if items else Para("No seeds recorded (config, manifests and results all missing)."))


def _provenance(ctx: Context, doc: Document) -> None:
    exp = ctx.exp
    doc.add(Heading(2, "Code and versions"))
    commits = {"experiment (manifest.json)": exp.manifest.get("git_commit"),
               "data build (dataset/manifest.json)": (exp.data.get("code") or {}).get("git_commit")}
    commits |= {f"run {n} (runs/{n}/manifest.json)": m.get("git_commit") for n, m in exp.runs.items()}
    doc.add(Table(["what", "git commit"], [[k, str(v) if v else "not recorded"] for k, v in commits.items()]))
    distinct = {str(v).split("+")[0] for v in commits.values() if v}
    if len(distinct) > 1:
        doc.add(Callout("warning", f"The stages ran from {len(distinct)} different commits."))
    if any(v and str(v).endswith("+dirty") for v in commits.values()):
        doc.add(Callout("note", "Some stages ran with uncommitted changes (`+dirty`)."))
    versions = exp.manifest.get("versions") or (exp.data.get("code") or {}).get("versions") or {}
    where = "manifest.json" if exp.manifest.get("versions") else "dataset/manifest.json code.versions"
    if versions:
        doc.add(Table(["package", "version"], [[k, str(v) if v else "not installed"] for k, v in versions.items()],
                      f"Source: {where}"))
    else:
        doc.add(Para("No package versions recorded (manifest.json has no `versions`)."))


def _stages(ctx: Context, doc: Document) -> None:
    doc.add(Heading(2, "Wall time per stage"))
    stages = ctx.exp.manifest.get("stages")
    if not stages:
        doc.add(Para("manifest.json records no `stages`: wall times unknown."))
        return
    rows = []
    for name, s in stages.items():
        s = s if isinstance(s, dict) else {"seconds": s}
        rest = ", ".join(f"{k}={v}" for k, v in s.items() if k != "seconds" and not isinstance(v, (dict, list)))
        rows.append([name, T.seconds(s.get("seconds")), rest or T.DASH])
    doc.add(Table(["stage", "wall time", "other"], rows, "Source: manifest.json stages"))
    no_time = [n for n, s in stages.items() if not (isinstance(s, dict) and T.isnum(s.get("seconds")))]
    if no_time:
        doc.add(Para(f"No `seconds` recorded for: {', '.join(no_time)}."))


# ------------------------------------------------------------------------------------------ training
def _training(ctx: Context, doc: Document) -> None:
    doc.add(Heading(2, "Training curves"))
    path, rel = ctx.figure("training_curves")
    if plots.training_curves(ctx.exp.metrics, path, ctx.source("runs/*/metrics.jsonl")):
        doc.add(Image(rel, "training and validation loss per run"),
                Para("Source: `runs/<run>/metrics.jsonl` (`loss`, `val_loss`, `val_loss_adapted`)."))
    else:
        doc.add(Para("No run logged a loss in runs/<run>/metrics.jsonl."))


# ------------------------------------------------------------------------------------------ curves
def _learning_curves(ctx: Context, doc: Document) -> None:
    doc.add(Heading(1, "2. Learning curves"))
    if _no_results(doc, ctx):
        return
    cells, summary = ctx.exp.cells, ctx.summary
    doc.add(Para(f"Source: {CELLS_SOURCE}. Each point is the mean over seeds of the accuracy (left) and of the "
                 "token-mean loss of the test questions' reference solutions (right) at the final adaptation step "
                 "of each (model, task, N-shot, seed); the band is ± 1 sample std (ddof = 1). "
                 "0-shot cells are evaluated once (seed 0), so they have no band. The dotted line is the target "
                 f"accuracy {ctx.target_acc:g} ({ctx.target_from})."))
    present = set(summary["model"])
    absent = [plots.label(m) for m in DESIGN_MODELS if m not in present]
    if absent:
        doc.add(Callout("note", f"No results for {', '.join(absent)}: curves and comparisons that need them are missing."))
    one_seed = summary[(summary["n_shots"] > 0) & (summary["n_seeds"] < 2)]
    if len(one_seed):
        doc.add(Callout("note", f"{len(one_seed)} few-shot cell(s) have a single seed: no spread and no paired "
                                "t-test there (e.g. " + ", ".join(f"{plots.label(r.model)}/{r.task}/{r.n_shots}-shot"
                                                                  for r in one_seed.head(3).itertuples()) + ")."))
    for task in _result_tasks(ctx):
        doc.add(Heading(2, task))
        path, rel = ctx.figure(f"curve_{task}")
        plots.learning_curve(summary[summary["task"] == task], task, path, ctx.target_acc, ctx.source(CELLS_SOURCE))
        doc.add(Image(rel, f"{task}: accuracy and loss vs N-shot"))
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
        path, rel = ctx.figure(f"adaptation_{task}")
        plots.adaptation_curve(at, task, largest, path, ctx.target_acc, ctx.source(CELLS_SOURCE))
        doc.add(Image(rel, f"{task}: accuracy vs adaptation step at {largest} shots"))


# ------------------------------------------------------------------------------------------ transfer
def _transfer(ctx: Context, doc: Document) -> None:
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
            Image(rel, "task similarity heatmap"))
    if not sim.meta_train:
        doc.add(Para("The similarity file does not say which tasks are meta-training tasks (and dataset/manifest.json "
                     "does not list them): task distance is undefined, no transfer plot."))
        return
    targets = [n for n in sim.names if n not in sim.meta_train]
    doc.add(Para("Task distance of an eval task = 1 − its largest cosine similarity to any meta-training task "
                 "(the nearest one, named below). Transfer = FOMAML-SFT − SFT-Mixed mean accuracy at the final "
                 f"step, from {CELLS_SOURCE}, at 0-shot and at the largest N-shot both models ran."))
    if _no_results(doc, ctx):
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
    doc.add(Image(rel, "transfer vs task distance"))


# ------------------------------------------------------------------------------------------ tables
def _tables(ctx: Context, doc: Document) -> None:
    doc.add(Heading(1, "4. Tables"))
    if _no_results(doc, ctx):
        return
    exp, summary = ctx.exp, ctx.summary
    final = final_step(exp.cells)
    extras = [c for c in EXTRA_METRICS if c in final and final[c].notna().any()]
    full = summary.merge(final.groupby(["model", "task", "n_shots"])[extras].mean().reset_index(),
                         on=["model", "task", "n_shots"]) if extras else summary
    atomic_write_text(ctx.out / "summary.csv", full.to_csv(index=False))

    doc.add(Heading(2, "Every cell"))
    doc.add(Para(f"Source: {CELLS_SOURCE}; mean ± sample std over seeds of the final-step accuracy, n = seeds. "
                 "Also in `report/summary.csv` with the loss and the other stored metrics."))
    for task in _result_tasks(ctx):
        doc.add(T.cells_table(summary, task))
    if extras:
        _quality_table(ctx, doc, final, extras)

    doc.add(Heading(2, "FOMAML-SFT vs SFT-Mixed (paired)"))
    _comparisons(ctx, doc)
    doc.add(Heading(2, f"Sample efficiency and adaptation speed (target accuracy {ctx.target_acc:g})"))
    _efficiency(ctx, doc)
    doc.add(Heading(2, "Zero-shot transfer on unseen tasks (protocol B)"))
    _zero_shot(ctx, doc)


def _quality_table(ctx: Context, doc: Document, final: pd.DataFrame, extras: list[str]) -> None:
    rows = []
    for task in _result_tasks(ctx):
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
    doc.add(Para(f"Source: {CELLS_SOURCE} and {PREDICTIONS_SOURCE}, via `metasft.stats.compare_models` at the final "
                 "step: t-test paired over the seeds both models ran; Holm's correction across the tasks of each "
                 "N-shot level; paired bootstrap ({:,} replicates) over the questions both answered, each question "
                 "scored by the share of seeds that got it right. Stars: * p < 0.05, ** < 0.01, *** < 0.001. "
                 "0-shot rows have one seed, so no t-test.".format(ctx.n_boot)))
    if ctx.budget_mismatch:
        doc.add(Callout("warning", f"Unequal budgets: {ctx.budget_mismatch}"))
    if exp.predictions is None:
        doc.add(Para("No predictions stored: bootstrap columns are empty."))
    pairs = [(FOMAML, SFT), (FOMAML, BASE), ("reptile", SFT)]
    present = set(exp.cells["model"])
    for a, b in pairs:
        if a not in present or b not in present:
            if (a, b) == (FOMAML, SFT):
                doc.add(Para(f"No comparison: {' and '.join(plots.label(m) for m in (a, b) if m not in present)} "
                             "not in the results."))
            continue
        comparison = compare_models(exp.cells, exp.predictions, a, b, n_boot=ctx.n_boot)
        if (a, b) == (FOMAML, SFT):
            atomic_write_text(ctx.out / "comparison.csv", comparison.to_csv(index=False))
        if comparison.empty:
            doc.add(Para(f"{plots.label(a)} and {plots.label(b)} share no (task, N-shot, seed)."))
        else:
            doc.add(T.comparison_table(comparison, plots.label(a), plots.label(b)))


def _efficiency(ctx: Context, doc: Document) -> None:
    cells, summary, target = ctx.exp.cells, ctx.summary, ctx.target_acc
    shots_levels = sorted(int(n) for n in cells.loc[cells["n_shots"] > 0, "n_shots"].unique())
    doc.add(Para(f"Source: {CELLS_SOURCE}. Shots needed: the smallest N-shot whose mean accuracy over seeds reaches "
                 f"{target:g} (`sample_efficiency`), and linearly interpolated between the N-shot levels run "
                 "(`sample_efficiency_interpolated`). Steps needed: the smallest recorded adaptation step whose mean "
                 f"accuracy over seeds reaches {target:g} (`adaptation_speed`), per N-shot level. Target from "
                 f"{ctx.target_from}."))
    rows = []
    for task in _result_tasks(ctx):
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


# ------------------------------------------------------------------------------------------ verdicts
def _verdicts(ctx: Context, doc: Document) -> None:
    exp = ctx.exp
    doc.add(Heading(1, "5. Verdicts"))
    cells = exp.cells if exp.cells is not None else pd.DataFrame(
        columns=["model", "task", "n_shots", "seed", "step", "accuracy", "loss"])
    result = verdicts(cells, exp.predictions, unseen_tasks=ctx.unseen, cross_domain_tasks=ctx.cross_domain,
                      target_acc=ctx.target_acc, n_boot=ctx.n_boot)
    write_json(ctx.out / "verdicts.json", [v.to_dict() for v in result])
    doc.add(Para(f"Judged by `metasft.stats.verdicts` from {CELLS_SOURCE} and {PREDICTIONS_SOURCE}: unseen tasks "
                 f"{ctx.unseen or 'none'}, cross-domain tasks {ctx.cross_domain or 'none'} (from {ctx.task_flags_from}); "
                 f"target accuracy {ctx.target_acc:g} ({ctx.target_from}); learning-curve claims over every task both "
                 "FOMAML-SFT and SFT-Mixed ran with shots. Status is one of met / not met / not measurable with this "
                 "run; the numbers behind each are below the table and in `report/verdicts.json`."))
    caveats = []
    if _tiny(ctx):
        caveats.append("the model is the tiny test model: these verdicts are a pipeline check")
    if ctx.budget_mismatch:
        caveats.append("FOMAML-SFT and SFT-Mixed had unequal example budgets (see Setup)")
    if exp.cells is None:
        caveats.append("there are no results: every claim is unmeasurable")
    if caveats:
        doc.add(Callout("warning", "Read with care: " + "; ".join(caveats) + "."))
    doc.add(Table(["claim", "statement", "status", "numbers and explanation"],
                  [[v.name, v.statement, f"**{v.status}**", v.explanation] for v in result]))
    ctx.verdict_line.text = ("Verdicts (section 5): " + "; ".join(f"{v.name} **{v.status}**" for v in result)
                             + (" — a pipeline check only (tiny model)." if _tiny(ctx) else "."))
    for v in result:
        doc.add(Heading(3, f"{v.name}: evidence ({v.status})"), Code(T.evidence_text(v.evidence)))
    if all(v.status == UNMEASURABLE for v in result) and exp.cells is not None:
        doc.add(Para("No claim could be judged: see each explanation for what the run lacks."))


# ------------------------------------------------------------------------------------------ errors
def _errors(ctx: Context, doc: Document) -> None:
    exp = ctx.exp
    doc.add(Heading(1, "6. Error cases"))
    if _no_results(doc, ctx):
        return
    if exp.predictions is None:
        doc.add(Para(f"No predictions stored ({PREDICTIONS_SOURCE} empty): no error cases."))
        return
    k = ctx.errors_per_cell
    doc.add(Para(f"Source: {PREDICTIONS_SOURCE}. Up to {k} wrong answers per task and model, drawn with a fixed seed "
                 "from the final adaptation step at the model's largest N-shot (all seeds pooled); the last 400 "
                 "characters of each output."))
    final = final_step(exp.cells)[["model", "task", "n_shots", "seed", "step"]]
    preds = exp.predictions.merge(final, on=["model", "task", "n_shots", "seed", "step"])
    for task in _result_tasks(ctx):
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
            for r in error_rows(exp.results_path, model, task, n, chosen).itertuples():
                timed = " (grading timed out)" if r.timed_out else ""
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
