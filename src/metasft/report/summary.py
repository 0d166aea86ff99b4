"""The report's lead: the verdicts, judged once per report, and the summary that opens it.

`judge_claims` runs `metasft.stats.verdicts` on both outcomes and stores them in the context (and in
verdicts.json); the summary at the top and section 5 both render that one result. `caveats` is the
one place that decides how carefully the verdicts must be read (tiny model, unequal budgets, no
results, a demo-size run); both places show it.
"""
from __future__ import annotations

import math

import pandas as pd

from metasft.report import tables as T
from metasft.report.context import PREDICTIONS_SOURCE, Context, is_tiny
from metasft.eval.results import CELL_COLUMNS
from metasft.report.doc import Badge, Bullets, Callout, Document, Heading, Para, Table
from metasft.rundir import BEST_AT_STEP_0, NO_ADAPTATION, POOL_SHORT, VERDICTS_FILE, write_json
from metasft.stats import ACCURACY, INCONCLUSIVE, LOSS, MET, NOT_MET, UNMEASURABLE, Verdict, verdicts

DEMO_MDE = 0.10  # above 10 accuracy points a run cannot see the effects the design predicts (5-point C2)
QUESTION = ("Does first-order MAML on top of SFT (**FOMAML-SFT**) give {model} better few-shot adaptation on math "
            "and science reasoning than plain SFT on the same data (**SFT-Mixed**)?")


def judge_claims(ctx: Context) -> None:
    """Judge H1-H3, C1-C5 on accuracy and on the reference-solution loss, once; write verdicts.json."""
    exp = ctx.exp
    cells = exp.cells if exp.cells is not None else pd.DataFrame(columns=list(CELL_COLUMNS))
    margins = {ACCURACY.name: ctx.stats.margin_accuracy, LOSS.name: ctx.stats.margin_loss}
    ctx.verdicts = {outcome.name: verdicts(cells, exp.predictions, unseen_tasks=ctx.unseen,
                                           cross_domain_tasks=ctx.cross_domain, target_acc=ctx.target_acc,
                                           n_boot=ctx.n_boot, outcome=outcome, margins=margins,
                                           primary=ctx.stats.primary, replicates=ctx.replicates)
                    for outcome in (ACCURACY, LOSS)}
    write_json(ctx.out / VERDICTS_FILE, [v.to_dict() for result in ctx.verdicts.values() for v in result])


FLOOR_ACC, CEILING_ACC = 0.10, 0.90  # every arm's accuracy below / above: the outcome cannot move


def demo_size_caveat(primary: list[Verdict], accuracies: pd.Series | None = None) -> str | None:
    """The warning for a run too small to see the design's effects: every accuracy cell at the
    floor (< FLOOR_ACC) or ceiling, or no claim able to detect an effect of DEMO_MDE with 80% power
    (its MDE, measured from the claim's own threshold). None otherwise."""
    parts = []
    if accuracies is not None and len(accuracies):
        if (accuracies < FLOOR_ACC).all():
            parts.append(f"every cell's accuracy is below {FLOOR_ACC:g} (at most {accuracies.max():.3f}): at the "
                         "floor, differences between arms cannot show")
        elif (accuracies > CEILING_ACC).all():
            parts.append(f"every cell's accuracy is above {CEILING_ACC:g}: at the ceiling, differences cannot show")
    # how far above its own threshold each claim's quantity must truly be to be met 80% of the time
    needed = [abs(v.mde - v.threshold) for v in primary
              if T.isnum(v.mde) and T.isnum(v.threshold) and v.name not in ("C3", "H3", "C4")]
    if needed and min(needed) > DEMO_MDE:
        parts.append(f"no claim detects a true effect smaller than {min(needed):.2f} ({100 * min(needed):.0f} "
                     "points beyond its threshold) with 80% power, so effects of the size the design expects would "
                     "mostly read as inconclusive; more test questions per task shrink that (as 1/√n), more seeds "
                     "help less")
    return "; ".join(parts) or None


def caveats(ctx: Context) -> list[str]:
    """What the reader must know before trusting any verdict, most serious first."""
    out = []
    if is_tiny(ctx):
        out.append("the model is the tiny test model: these verdicts are a pipeline check")
    if ctx.budget_mismatch:
        out.append("FOMAML-SFT and SFT-Mixed had unequal example budgets (see section 1)")
    if ctx.exp.cells is None:
        out.append("there are no results: every claim is unmeasurable")
    if not ctx.replicates:
        out.append("each arm was trained once (trainer.seeds lists fewer than 2 seeds): every interval covers the "
                    "test questions and evaluation seeds but not a second training run, so the verdicts are about "
                    "these checkpoints, not the methods; a claim about the methods needs trainer.seeds with 3 or "
                    "more seeds")
    if ctx.verdicts:
        demo = demo_size_caveat(ctx.verdicts[ACCURACY.name], _accuracies(ctx))
        if demo:
            out.append(f"this is a demo-size run: {demo}")
    return out


def _accuracies(ctx: Context) -> pd.Series | None:
    return None if ctx.summary is None else ctx.summary["mean"]


# what each RunWarning (runs/<run>/manifest.json "warnings") means for the reader of the comparison
RUN_WARNING_MEANING = {
    NO_ADAPTATION: ("FOMAML did not adapt",
                    "The meta-gradient was taken at θ′ ≈ θ, so this arm was trained as SFT on its query batches "
                    "alone, not meta-learned: a difference from SFT-Mixed below is no evidence for or against "
                    "meta-learning."),
    POOL_SHORT: ("Fewer new examples than data.budget_scale asks",
                 "The data held fewer unused examples than this SFT run's scaled pool needs, so its 'more data' "
                 "is less than its budget_scale: the pool's real multiple is in the message."),
    BEST_AT_STEP_0: ("The evaluated checkpoint is the untrained step 0",
                     "Validation never improved on the untrained adapter, so `adapter_best` is the base model: "
                     "this arm's results are the base model's under the arm's name."),
}


def run_warning_banners(ctx: Context) -> list[Callout]:
    """A banner for each warning a training run recorded about itself; the summary shows them
    before the verdicts they undermine."""
    out = []
    for run, manifest in ctx.exp.runs.items():
        for w in manifest.warnings:
            title, meaning = RUN_WARNING_MEANING.get(w.kind, (w.kind, ""))
            out.append(Callout("warning", f"**{title}** (run `{run}`, runs/{run}/manifest.json): {w.message}. {meaning}"))
    return out


def status_badge(status: str) -> Badge:
    return Badge(status, status)


def verdict_number(v: Verdict) -> str:
    """The one number a verdict is read from: 'estimate [95% CI]', or the count for C3."""
    if not T.isnum(v.estimate):
        return T.DASH
    if v.name == "C3":
        return f"{v.estimate:g} of {v.threshold:g} tasks" if T.isnum(v.threshold) else f"{v.estimate:g} tasks"
    fmt = _ratio if v.name == "C4" else _steps if v.name == "H3" else T.signed
    finite = lambda x: T.isnum(x) and math.isfinite(x)
    if not finite(v.estimate):  # a censored quantity: its bound is in the explanation
        return "unbounded"
    if finite(v.ci_lo) and finite(v.ci_hi):
        return f"{fmt(v.estimate)} [{fmt(v.ci_lo)}, {fmt(v.ci_hi)}]"
    if finite(v.ci_lo):  # an interval open above: a censored curve
        return f"{fmt(v.estimate)} [{fmt(v.ci_lo)}, unbounded]"
    return fmt(v.estimate)


def _ratio(x: float) -> str:
    """A steps ratio: '2.00×'."""
    return f"{x:.2f}×"


def _steps(x: float) -> str:
    return f"{x:.3g} steps"


def claim_needs(v: Verdict) -> str:
    """What the number must clear for 'met'."""
    if v.status == UNMEASURABLE or not T.isnum(v.threshold):
        return T.DASH
    return v.rule or T.DASH


def summary_section(ctx: Context, doc: Document) -> None:
    exp = ctx.exp
    model = exp.config.model.partial_pretrain if exp.config else None
    doc.add(Heading(1, "Summary"))
    doc.add(Para("**Question.** " + QUESTION.format(model=f"`{model}`" if model else "the model")))
    if is_tiny(ctx):
        doc.add(Callout("warning", "**Pipeline check only — these numbers mean nothing.** The model is the tiny "
                                   "random test model (`tiny-llama`, 2 layers, cannot reason): this report only "
                                   "shows that the pipeline runs end to end."))
    if ctx.partial:
        doc.add(Callout("warning", f"**Evaluation not finished — {ctx.partial} stored.** It is still running or "
                                   "was interrupted: every number and verdict below is from these groups only."))
    doc.add(*run_warning_banners(ctx))
    if ctx.verdicts is None:
        doc.add(Callout("warning", f"The verdicts could not be computed: {ctx.verdicts_error}"))
    else:
        primary, secondary = ctx.verdicts[ACCURACY.name], ctx.verdicts[LOSS.name]
        demo = demo_size_caveat(primary, _accuracies(ctx))
        if demo:
            doc.add(Callout("warning", f"**Demo-size run:** {demo}."))
        if ctx.budget_mismatch:
            doc.add(Callout("warning", f"**Unequal budgets.** {ctx.budget_mismatch}"))
        loss = {v.name: v for v in secondary}
        rows = [[v.name, v.role, v.statement, status_badge(v.status), verdict_number(v), claim_needs(v),
                 T.num(v.mde, 2), status_badge(loss[v.name].status) if v.name in loss else T.DASH] for v in primary]
        doc.add(Table(["claim", "role", "what the design claims", "status (accuracy)",
                       "FOMAML-SFT minus baseline [CI]", "met if", "MDE (80%)", "on loss (secondary)"], rows,
                      "Every claim of the design, judged on test accuracy, FOMAML-SFT minus the baseline (positive: "
                      f"FOMAML-SFT better). Primary claims ({', '.join(ctx.stats.primary) or 'none'}) form one family "
                      f"at a family-wise 5% (each interval at 1 - 0.05/{max(len(ctx.stats.primary), 1)}); the rest "
                      f"are exploratory at 95%. H1 and C1 are non-inferiority claims with margin "
                      f"{ctx.stats.margin_accuracy:g}, fixed in config.yaml stats before the run (section 5 has "
                      "the evidence)", css="summary"))
        doc.add(Para(scope_line(primary, secondary, tiny=is_tiny(ctx))))
    graded = (f", accuracy graded {ctx.grading} (`eval.grading`; both gradings in section 4)" if ctx.grading
              else ", accuracy graded before strict / flexible grading existed (section 4)")
    doc.add(Para(f"Experiment directory `{exp.root}`; model `{model or 'unknown (config.yaml missing)'}`; results from "
                 f"{PREDICTIONS_SOURCE}{graded}. Every number below names the file it was read from, relative to "
                 "this directory; setup, hashes and provenance are in Appendix A."))
    if exp.missing:
        doc.add(Callout("note", "Missing or unreadable inputs (the sections that need them say what they cannot show):"),
                Bullets([f"`{m.split(':', 1)[0]}`:{m.split(':', 1)[1]}" if ":" in m else m for m in exp.missing]))


def scope_line(primary: list[Verdict], secondary: list[Verdict], tiny: bool = False) -> str:
    """One paragraph: which claims this run decides, which it cannot decide or measure, and the
    smallest accuracy effect it could see."""
    by = {s: [v.name for v in primary if v.status == s] for s in (MET, NOT_MET, INCONCLUSIVE, UNMEASURABLE)}
    decided = [f"{v.name} {v.status}" for v in primary if v.status in (MET, NOT_MET)]
    parts = [("**What this run can say:** " + "; ".join(decided) + ".") if decided
             else "**What this run can say:** it decides none of the claims on accuracy."]
    cannot = []
    if by[INCONCLUSIVE]:
        cannot.append(f"{', '.join(by[INCONCLUSIVE])} {'are' if len(by[INCONCLUSIVE]) > 1 else 'is'} undecided (the interval holds both the claim and its "
                      "negation, or both arms sit at floor)")
    if by[UNMEASURABLE]:
        cannot.append(f"{', '.join(by[UNMEASURABLE])} cannot be measured (the run lacks the cells "
                      f"{'they need' if len(by[UNMEASURABLE]) > 1 else 'it needs'}; section 5 names them)")
    if cannot:
        parts.append("**What it cannot say:** " + "; ".join(cannot) + ".")
    effects = [(v.mde, v.name) for v in primary
               if T.isnum(v.mde) and v.name in ("H2", "C2", "C5")]  # "beats" claims: MDE above the null
    if effects:
        smallest, name = min(effects)
        parts.append(f"A true accuracy advantage smaller than {smallest:.2f} ({name}'s MDE, the smallest of the "
                     "'beats' claims) would most likely read as inconclusive here.")
    parts.append("Claims are marked primary (one family, family-wise 5%) or exploratory; only the primary ones "
                 "are the run's confirmatory answer.")
    loss_decided = [f"{v.name} {v.status}" for v in secondary if v.status in (MET, NOT_MET)]
    if loss_decided:
        parts.append("On the secondary outcome (the reference solutions' loss): " + "; ".join(loss_decided)
                     + " — a direction, not a verdict on accuracy.")
    if tiny:
        parts.append("With the tiny test model none of this is evidence about FOMAML.")
    return " ".join(parts)
