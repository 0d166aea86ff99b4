"""Report section 1 (training: the curves and whether the arms' budgets match) and Appendix A
(setup: model, data, budgets, seeds, provenance, stage times), which closes the report so the
verdicts come first."""
from __future__ import annotations

import time

from metasft.config import eval_dtype
from metasft.data.cot import WORKED_SHARE
from metasft.manifests import EvalTaskEntry, SplitCounts, stage_rank
from metasft.report import plots
from metasft.report import tables as T
from metasft.report.context import CELLS_SOURCE, FOMAML, SFT, Context, short_commit
from metasft.report.doc import Bullets, Callout, Document, Heading, Para, Table
from metasft.report.measures import adaptation_gap_section
from metasft.rundir import CONFIG_FILE, MANIFEST


def setup_section(ctx: Context, doc: Document) -> None:
    exp = ctx.exp
    doc.add(Heading(1, "Appendix A. Setup and provenance"))
    cfg = exp.config
    doc.add(Heading(2, "Model"))
    if cfg is None:
        doc.add(Para("config.yaml missing: model settings unknown."))
    else:
        m = cfg.model
        doc.add(Para(f"Base model `{m.partial_pretrain}`, LoRA rank {m.lora_rank}, alpha {m.lora_alpha}, dropout "
                     f"{m.lora_dropout}, target modules {', '.join(m.target_modules)}; {_weights(cfg)}. "
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


def _splits(splits: dict[str, SplitCounts]) -> str:
    return ", ".join(f"{s} {v.n}" for s, v in splits.items()) or T.DASH


def _data_tables(ctx: Context, doc: Document) -> None:
    data = ctx.exp.data
    doc.add(Heading(2, "Data"))


    if data is None:
        doc.add(Para("dataset/manifest.json missing: tasks, counts and file hashes unknown."))
        return
    doc.add(Para(f"Source: `dataset/manifest.json` (data seed {data.seed}, template "
                 f"{data.template}, data code {short_commit(data.code.git_commit)})."))
    tasks = data.tasks
    if tasks:
        doc.add(Table(["meta-training task", "source", "examples per split", "levels (all splits)"],
                      [[name, t.source, _splits(t.splits), _levels(t.splits)]
                       for name, t in tasks.items()], "Meta-training tasks"))
    else:
        doc.add(Para("No meta-training tasks listed."))
    evals = data.eval_tasks
    if evals:
        doc.add(Table(["eval task", "source", "N-shot levels", "unseen (protocol B)", "cross-domain (C5)",
                       "relation to meta-training", "examples per split", "shots show working"],
                      [[name, t.source, ", ".join(str(n) for n in t.n_shots),
                        "yes" if t.unseen else "no", "yes" if t.cross_domain else "no",
                        t.relation.detail, _splits(t.splits), _working(t)] for name, t in evals.items()],
                      "Evaluation tasks (`test`: scored questions; `shots`: the pool the shots are drawn from, which "
                      "Baseline 2 also trains on; shots show working: the share of their solutions that are worked, "
                      "not a one-line answer)"))
        answer_only = [name for name, t in evals.items() if t.shots_reason is False]
        if answer_only:
            doc.add(Callout("warning", f"The shots of {', '.join(answer_only)} are answer-only (under "
                                       f"{WORKED_SHARE:.0%} show working): few-shot adaptation and Baseline 2 on these tasks train on final "
                                       "answers without reasoning. A CoT endpoint (`data.cot`) writes worked solutions."))
    else:
        doc.add(Para("No evaluation tasks listed."))
    files = data.files
    if files:
        doc.add(Table(["file", "records", "sha256 (first 12)"],
                      [[rel, T.num(f.n), f.sha256[:12]] for rel, f in sorted(files.items())],
                      "Data files (dataset/manifest.json files)"))
        for run, manifest in ctx.exp.runs.items():
            used = manifest.data_files
            differ = sorted(rel for rel in set(used) & set(files) if used[rel].sha256 != files[rel].sha256)
            if differ:
                doc.add(Callout("warning", f"Run `{run}` trained on data files whose hashes differ from "
                                           f"dataset/manifest.json: {', '.join(differ)}."))


def _working(task: EvalTaskEntry) -> str:
    if task.shots_worked is None:
        return "not recorded"
    return f"{'yes' if task.shots_reason else 'no'} ({task.shots_worked:.0%})"


def _levels(splits: dict[str, SplitCounts]) -> str:
    total: dict[str, int] = {}
    for v in splits.values():
        for lvl, n in v.levels.items():
            total[str(lvl)] = total.get(str(lvl), 0) + int(n)
    return ", ".join(f"L{k}: {v}" for k, v in sorted(total.items())) or T.DASH


def _run_named(ctx: Context, arm: str) -> str | None:
    """The run directory of `arm`: runs/<arm>, else the first whose manifest says arm == `arm`."""
    if arm in ctx.exp.runs:
        return arm
    return next((name for name, m in ctx.exp.runs.items() if m.arm == arm), None)


def _budgets(ctx: Context, doc: Document) -> None:
    exp = ctx.exp
    doc.add(Heading(2, "Training budgets"))
    if not exp.runs:
        doc.add(Para("No run directories under `runs/`: budgets unknown."))
        return
    keys = ["examples", "distinct_examples", "tokens", "response_tokens", "optimizer_steps", "inner_steps"]
    rows = []
    for name, m in exp.runs.items():
        budget, best = m.budget, m.best
        rows.append([name, m.arm, m.status, T.num(m.seed)]
                    + [T.num(getattr(budget, k) if budget else None) for k in keys]
                    + [T.num(best.step if best else None),
                       f"{T.num(best.value if best else None)} ({best.metric if best else T.DASH})",
                       T.seconds(m.train_seconds), short_commit(m.code.git_commit)])
    doc.add(Table(["run", "arm", "status", "seed", "examples", "distinct", "tokens", "response tokens",
                   "optimizer steps", "inner steps", "best step", "best value (metric)", "train time", "git commit"],
                  rows, "Source: runs/<run>/manifest.json (budget, best, train_seconds)"))
    no_budget = [n for n, m in exp.runs.items() if m.budget is None]
    if no_budget:
        doc.add(Para(f"No budget recorded for: {', '.join(no_budget)}."))


def check_budgets(ctx: Context) -> None:
    """Compare FOMAML-SFT's and SFT-Mixed's example budgets (runs/*/manifest.json) before any section
    is written: the summary, section 1 and the comparisons all need the answer. Sets
    ctx.budget_note and, when they differ by more than one SFT batch, ctx.budget_mismatch."""
    exp = ctx.exp
    if not exp.runs:
        ctx.budget_note = ("note", "Budget match not checked: no run directories under `runs/`.")
        return
    fom, sft = _run_named(ctx, FOMAML), _run_named(ctx, SFT)
    if fom is None or sft is None:
        ctx.budget_note = ("note", f"Budget match not checked: no {'FOMAML' if fom is None else 'SFT-Mixed'} run "
                                   "under runs/.")
        return
    if exp.runs[fom].budget is None or exp.runs[sft].budget is None:
        ctx.budget_note = ("note", "Budget match not checked: runs/fomaml or runs/sft_mixed has no budget.examples.")
        return
    a, b = exp.runs[fom].budget.examples, exp.runs[sft].budget.examples
    cfg = exp.run_configs.get(sft) or exp.config
    batch = cfg.data.train_batch_size if cfg is not None else None
    batch_from = f"runs/{sft}/config.yaml" if sft in exp.run_configs else CONFIG_FILE
    mode = f" (data.budget = {cfg.data.budget})" if cfg is not None else ""
    if batch is None:
        ctx.budget_note = ("note", f"Budget match not checked: the SFT batch size is unknown (no config). Examples: "
                                   f"FOMAML-SFT {a:,}, SFT-Mixed {b:,}.")
    elif abs(a - b) > batch:
        ctx.budget_mismatch = (f"FOMAML-SFT processed {a:,} training examples and SFT-Mixed {b:,}: they differ by "
                               f"{abs(a - b):,}, more than one SFT batch ({batch}, {batch_from} data.train_batch_size)"
                               f"{mode}. Their comparison is not at an equal example budget.")
        ctx.budget_note = ("warning", f"**Budget mismatch.** {ctx.budget_mismatch}")
    else:
        ctx.budget_note = ("note", f"Example budgets match: FOMAML-SFT {a:,}, SFT-Mixed {b:,} (difference "
                                   f"{abs(a - b):,} ≤ one SFT batch of {batch}){mode}.")


def _seeds(ctx: Context, doc: Document) -> None:
    exp, cfg = ctx.exp, ctx.exp.config
    doc.add(Heading(2, "Seeds"))
    items = []
    if cfg is not None:
        items.append(f"Experiment seed {cfg.seed}; evaluation seeds {cfg.eval.seeds} (config.yaml).")
    if exp.data is not None:
        items.append(f"Data split seed {exp.data.seed} (dataset/manifest.json).")
    if exp.runs:
        items.append("Training seed per run: " + ", ".join(f"{n} {T.num(m.seed)}" for n, m in exp.runs.items())
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
    commits = {"experiment (manifest.json)": exp.manifest.code.git_commit if exp.manifest else None,
               "data build (dataset/manifest.json)": exp.data.code.git_commit if exp.data else None}
    commits |= {f"run {n} (runs/{n}/manifest.json)": m.code.git_commit for n, m in exp.runs.items()}
    doc.add(Table(["what", "git commit"], [[k, str(v) if v else "not recorded"] for k, v in commits.items()]))
    distinct = {str(v).split("+")[0] for v in commits.values() if v}
    if len(distinct) > 1:
        doc.add(Callout("warning", f"The stages ran from {len(distinct)} different commits."))
    if any(v and str(v).endswith("+dirty") for v in commits.values()):
        doc.add(Callout("note", "Some stages ran with uncommitted changes (`+dirty`)."))
    versions = (exp.manifest.code.versions if exp.manifest else {}) or (exp.data.code.versions if exp.data else {})
    where = MANIFEST if exp.manifest and exp.manifest.code.versions else "dataset/manifest.json code.versions"
    if versions:
        doc.add(Table(["package", "version"], [[k, str(v) if v else "not installed"] for k, v in versions.items()],
                      f"Source: {where}"))
    else:
        doc.add(Para("No package versions recorded (manifest.json has no `versions`)."))


def _stages(ctx: Context, doc: Document) -> None:
    doc.add(Heading(2, "Wall time per stage"))
    stages = ctx.exp.manifest.stages if ctx.exp.manifest else {}
    if not stages:
        doc.add(Para("manifest.json records no `stages`: wall times unknown."))
        return
    arms = {f"train/{n}": m.arm for n, m in ctx.exp.runs.items()}
    order = plots.model_order(set(arms.values()))
    rows, no_time = [], []
    # training runs in the report's arm order (FOMAML-SFT, SFT-Mixed, Base, ...), then by name
    key = lambda kv: (stage_rank(kv[0]), order.index(arms[kv[0]]) if kv[0] in arms else len(order), kv[0])
    for name, s in sorted(stages.items(), key=key):
        seconds, other = s.seconds, f"status={s.status}"
        if name == "report" and s.status != "finished" and ctx.started is not None:
            # this report is the stage still running: its time so far (all but writing the files)
            seconds, other = time.perf_counter() - ctx.started, "this report, up to writing this table"
        elif seconds is None:
            no_time.append(name)
        rows.append([name, T.seconds(seconds), other])
    doc.add(Table(["stage", "wall time", "other"], rows, "Source: manifest.json stages, in the order `metasft run` "
                                                          "runs them"))
    if no_time:
        doc.add(Para(f"No `seconds` recorded for: {', '.join(no_time)}."))


def training_section(ctx: Context, doc: Document) -> None:
    exp = ctx.exp
    doc.add(Heading(1, "1. Training"))
    kind, text = ctx.budget_note
    doc.add(Callout("warning", text) if kind == "warning" else Para(text))
    not_finished = [n for n, m in exp.runs.items() if m.status != "finished"]
    if not_finished:
        doc.add(Callout("warning", f"Run(s) not finished: {', '.join(not_finished)}."))
    path, rel = ctx.figure("training_curves")
    arms = {name: m.arm for name, m in exp.runs.items()}
    if plots.training_curves(exp.metrics, arms, path, ctx.source("runs/*/metrics.jsonl")) is not None:
        doc.add(ctx.image(rel, "training and validation loss per run",
                          "Source: `runs/<run>/metrics.jsonl` (`loss`, `val_loss`, `val_loss_adapted`); one run per "
                          "arm and seed, so no band. Budgets and the rest of the setup: Appendix A."))
    else:
        doc.add(Para("No run logged a loss in runs/<run>/metrics.jsonl."))
    adaptation_gap_section(ctx, doc)


def _weights(cfg) -> str:
    """The base weights' dtype, per stage where evaluation differs from training (eval.dtype)."""
    evaluating = eval_dtype(cfg)
    if evaluating == cfg.model.dtype:
        return f"base weights {evaluating}"
    return f"base weights {cfg.model.dtype} in training, {evaluating} in evaluation (eval.dtype; adapters float32)"
