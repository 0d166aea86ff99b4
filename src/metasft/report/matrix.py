"""Report section 7: the experiment matrix (the design's Exp 1-5, `variants`, metasft.matrix): its
runs and their budgets, the variant x task x N-shot table, the K / inner_lr sweep, and the verdicts
of each compared pair (the primary pair's are section 5's)."""
from __future__ import annotations

import math

import pandas as pd

from metasft import arms
from metasft.matrix import describe, pairs
from metasft.report import plots
from metasft.report import tables as T
from metasft.report.context import CELLS_SOURCE, PREDICTIONS_SOURCE, Context, no_results, result_tasks
from metasft.report.doc import Document, Heading, Image, Para, Table
from metasft.rundir import write_json
from metasft.stats import ACCURACY, verdicts


def matrix_section(ctx: Context, doc: Document) -> None:
    cfg = ctx.exp.config
    if cfg is None or not cfg.variants:
        return  # one pair only: sections 1-5 are the whole comparison
    doc.add(Heading(1, "7. Experiment matrix"))
    compared = pairs(cfg)
    doc.add(Para("Source: `config.yaml` variants (metasft.matrix), runs/<run>/manifest.json, " + CELLS_SOURCE + ". "
                 "Each FOMAML variant is compared with an SFT-Mixed run matched to its own example budget; an SFT "
                 "variant with the meta run it is paired to, at the budget it was meant to have (Exp 5: 2x)."))
    doc.add(_runs_table(ctx, compared))
    if no_results(doc, ctx):
        return
    doc.add(matrix_table(ctx.summary, _order(cfg, compared), result_tasks(ctx)))
    points = sweep_points(ctx, compared)
    if points.empty:
        doc.add(Para("No meta run and matched partner share a few-shot level: no K / inner_lr sweep plot."))
    else:
        path, rel = ctx.figure("matrix_sweep")
        plots.matrix_sweep(points, path, ctx.source(CELLS_SOURCE))
        doc.add(Image(rel, "K / inner_lr sweep: accuracy per FOMAML variant and its matched SFT-Mixed"))
    _pair_verdicts(ctx, doc, compared)


def _order(cfg, compared) -> list[str]:
    """The matrix's runs: each pair's meta run then its SFT run, in pair order, then base and sft_task."""
    names = list(dict.fromkeys(name for p in compared for name in (p.meta, p.sft)))
    return names + [m for m in ("base", "sft_task") if m in cfg.arms]


def _runs_table(ctx: Context, compared) -> Table:
    cfg, runs = ctx.exp.config, ctx.exp.runs
    variants = {v.name: v for v in cfg.variants}
    rows = []
    for p in compared:
        ea, eb = (runs[n].budget.examples if n in runs and runs[n].budget else None for n in (p.meta, p.sft))
        batch = (ctx.exp.run_configs.get(p.sft) or cfg).data.train_batch_size
        if T.isnum(ea) and T.isnum(eb):
            off = abs(round(ea * p.scale) - eb)
            match = f"{'yes' if off <= batch else '**no**'} (off by {off:,}; one batch {batch})"
        else:
            match = "not checked: a budget is missing"
        setting = "; ".join(f"{n}: {describe(variants[n])}" for n in (p.meta, p.sft) if n in variants) or "the config's"
        rows.append([p.label, p.meta, p.sft, setting, T.num(ea), T.num(eb), f"{p.scale:g}x", match])
    return Table(["pair", "meta run", "SFT-Mixed run", "overrides", "meta examples", "SFT examples",
                  "SFT budget meant", "within one batch"], rows,
                 "Compared pairs and their example budgets (runs/<run>/manifest.json budget.examples)")


def matrix_table(summary: pd.DataFrame, runs: list[str], tasks: list[str]) -> Table:
    """Run x task x N-shot: 'mean (n=seeds)' of the final-step accuracy."""
    shots = sorted(int(n) for n in summary["n_shots"].unique())
    body = []
    for task in tasks:
        at = summary[summary["task"] == task].set_index(["model", "n_shots"])
        for run in runs:
            cells = [f"{at.at[(run, n), 'mean']:.3f} (n={int(at.at[(run, n), 'n_seeds'])})"
                     if (run, n) in at.index else T.DASH for n in shots]
            if any(c != T.DASH for c in cells):
                body.append([task, plots.label(run)] + cells)
    return Table(["task", "run"] + [f"{n}-shot" for n in shots], body,
                 f"Experiment matrix: accuracy at the final adaptation step, mean over seeds (n = seeds), {CELLS_SOURCE}")


def sweep_points(ctx: Context, compared) -> pd.DataFrame:
    """One row per (meta run, task): its K and inner_lr, its accuracy and its partner's at the largest
    N-shot both ran."""
    summary = ctx.summary
    rows = []
    for p in compared:
        run_cfg = ctx.exp.run_configs.get(p.meta)
        if run_cfg is None or arms.ARMS[run_cfg.arm].kind != "meta" or p.scale != 1:
            continue
        for task in result_tasks(ctx):
            at = summary[summary["task"] == task]
            a, b = (at[at["model"] == m].set_index("n_shots") for m in (p.meta, p.sft))
            both = sorted(set(a.index) & set(b.index))
            if not both:
                continue
            n = both[-1]
            rows.append({"task": task, "run": p.meta, "partner": p.sft, "k": run_cfg.meta.num_inner_steps,
                         "inner_lr": run_cfg.meta.inner_lr, "acc": float(a.at[n, "mean"]),
                         "partner_acc": float(b.at[n, "mean"]), "n_shots": n, "n_seeds": int(a.at[n, "n_seeds"])})
    return pd.DataFrame(rows)


def _pair_verdicts(ctx: Context, doc: Document, compared) -> None:
    exp = ctx.exp
    doc.add(Heading(2, "Verdicts per pair"))
    doc.add(Para(f"`metasft.stats.verdicts` on accuracy for each compared pair, the pair's meta run in FOMAML-SFT's "
                 f"place and its SFT run in SFT-Mixed's, from {PREDICTIONS_SOURCE}. The experiment's verdicts are the "
                 "primary pair's (section 5); these say whether a variant changes the picture. Evidence in "
                 "`report/verdicts_matrix.json`."))
    present = set(exp.cells["model"])
    judged, rows = {}, []
    for p in compared:
        if not {p.meta, p.sft} <= present:
            rows.append([p.label, f"{p.meta} vs {p.sft}", "not evaluated"])
            continue
        result = verdicts(exp.cells, exp.predictions, fomaml=p.meta, sft=p.sft, unseen_tasks=ctx.unseen,
                          cross_domain_tasks=ctx.cross_domain, target_acc=ctx.target_acc, n_boot=ctx.n_boot,
                          outcome=ACCURACY, margins={ACCURACY.name: ctx.stats.margin_accuracy},
                          primary=ctx.stats.primary, replicates=ctx.replicates)
        judged[f"{p.meta} vs {p.sft}"] = [v.to_dict() for v in result]
        rows.append([p.label, f"{p.meta} vs {p.sft}", "; ".join(f"{v.name} **{v.status}**" for v in result)])
    write_json(ctx.out / "verdicts_matrix.json", judged)
    doc.add(Table(["pair", "runs", "verdicts (accuracy)"], rows))
    if any(math.isfinite(p.scale) and p.scale != 1 for p in compared):
        doc.add(Para("A pair whose SFT budget is meant to differ (data.budget_scale, Exp 5) is not at an equal budget: "
                     "its verdicts ask whether FOMAML-SFT still leads SFT-Mixed given more data, not the design's "
                     "matched question."))
