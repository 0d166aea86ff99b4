"""What the report's sections share: the `Context` (experiment, task lists, output paths) and
small helpers over it."""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from metasft.config import StatsArgs
from metasft.matrix import replicates
from metasft.report import plots
from metasft.report import tables as T
from metasft.report.doc import Callout, Document, Image
from metasft.eval.results import GRADING_KEY, QUALITY
from metasft.report.load import Experiment
from metasft.stats import Verdict, summarize
from metasft.stats.verdicts import DESIGN_TARGET_ACC


FOMAML, SFT, BASE = "fomaml", "sft_mixed", "base"
DESIGN_MODELS = (FOMAML, SFT, BASE)
TINY_MODEL = "tiny-llama"
EXTRA_METRICS = list(QUALITY)
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
    stats: StatsArgs = field(default_factory=StatsArgs)  # margins and the primary family (config.yaml stats)
    # each arm's training runs, one per trainer.seeds entry (metasft.matrix.replicates); {}: one run each
    replicates: dict[str, list[str]] = field(default_factory=dict)
    eval_tasks: list[str] = field(default_factory=list)
    unseen: list[str] = field(default_factory=list)
    cross_domain: list[str] = field(default_factory=list)
    task_flags_from: str = ""
    budget_mismatch: str | None = None
    # (kind, text): how FOMAML-SFT's and SFT-Mixed's example budgets compare (setup.check_budgets)
    budget_note: tuple[str, str] = ("note", "Budget match not checked.")
    # outcome name -> the verdicts, judged once (summary.judge_claims) for the summary and section 5
    verdicts: dict[str, list[Verdict]] | None = None
    verdicts_error: str = ""
    grading: str | None = None    # eval.grading as recorded with the results; None: written before it
    started: float | None = None  # time.perf_counter() when write_report began: the report's own wall time
    partial: str | None = None    # "partial: k of n groups" while the evaluation is not finished

    @property
    def name(self) -> str:
        return self.exp.root.name

    def figure(self, stem: str) -> tuple[Path, str]:
        """(path to write, path relative to the report) of figures/<stem>.png, stem made filename-safe.
        The plots write the vector copy (figures/<stem>.svg) beside it."""
        rel = f"figures/{re.sub(r'[^A-Za-z0-9_.-]+', '_', stem)}.png"
        return self.out / rel, rel

    def image(self, rel: str, alt: str, caption: str = "") -> Image:
        """The block of a figure written by `figure`, linked to its vector copy, shown in HTML at
        100 CSS px per figure inch (the PNG's IHDR width over its dpi), so text is one size in all."""
        with open(self.out / rel, "rb") as f:
            width_px = struct.unpack(">I", f.read(24)[16:20])[0]
        return Image(rel, alt, caption, vector=f"{rel.removesuffix('.png')}.{plots.FIGURE_FORMATS[-1]}",
                     width=round(width_px * 100 / plots.FIGURE_DPI))

    def source(self, what: str) -> str:
        """The footer of a figure: its source file, and the tiny-model warning when it applies."""
        tiny = "TINY TEST MODEL: pipeline check, numbers meaningless · " if is_tiny(self) else ""
        return f"{tiny}source: {self.name}/{what}"


def build_context(exp: Experiment, out: Path, n_boot: int, errors_per_cell: int) -> Context:
    ctx = Context(exp, out, n_boot, errors_per_cell)
    if exp.cells is not None:
        try:
            ctx.summary = summarize(exp.cells)
        except ValueError as e:  # repeated or missing columns: say so, report the rest
            exp.missing.append(f"{exp.results_name}: table cells unusable ({e})")
            exp.cells = exp.predictions = None
    ctx.grading = exp.results_meta.get(GRADING_KEY)
    if exp.config is not None:
        ctx.target_acc, ctx.target_from = exp.config.eval.target_acc, "config.yaml eval.target_acc"
        ctx.stats = exp.config.stats
        ctx.replicates = replicates(exp.config)
    else:
        ctx.target_from = "the design's 0.7 (config.yaml missing)"
    if exp.data is not None and exp.data.eval_tasks:
        flags = {name: (t.unseen, t.cross_domain) for name, t in exp.data.eval_tasks.items()}
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


GRADING_RULES = {
    "strict": "an answer counts only where the output states it (`\\boxed{}`, \"The answer is ...\", "
              "\"#### ...\", a stated option letter)",
    "flexible": "the answer the output states, else its last number, option letter, list or yes / no",
}


def grading_sentence(ctx: Context) -> str:
    """Which grading the accuracy of this report is (the primary one, eval.grading), and what it credits:
    the opening of section 4's grading table."""
    if ctx.grading is None:
        return ("The results record no grading: they were written before strict and flexible grading (issue 19), "
                "and their accuracy credits the last number of any output, cut off or looping ones included; "
                "rerun the evaluation (`metasft run --force`) to grade both ways.")
    other = next(g for g in GRADING_RULES if g != ctx.grading)
    return (f"Accuracy in this report (tables, curves, comparisons, verdicts) is graded **{ctx.grading}** "
            f"(`eval.grading`, recorded with the results): {GRADING_RULES[ctx.grading]}. {other.capitalize()} "
            f"grading ({GRADING_RULES[other]}) is shown beside it in the table below. Neither credits an output "
            "cut off at max_new_tokens (no stop token) or caught repeating (the same span over and over).")


def is_tiny(ctx: Context) -> bool:
    return ctx.exp.config is not None and ctx.exp.config.model.partial_pretrain == TINY_MODEL


def result_tasks(ctx: Context) -> list[str]:
    """Tasks with results: the eval tasks' order first, then any others found in the cells."""
    found = set(ctx.summary["task"]) if ctx.summary is not None else set()
    return [t for t in ctx.eval_tasks if t in found] + sorted(found - set(ctx.eval_tasks))


def no_results(doc: Document, ctx: Context) -> bool:
    if ctx.summary is None:
        doc.add(Callout("note", f"No evaluation results ({ctx.exp.results_name} missing or empty): "
                                "nothing to show here."))
        return True
    return False


def short_commit(commit) -> str:
    if not commit:
        return T.DASH
    base, _, dirty = str(commit).partition("+")
    return base[:10] + (f"+{dirty}" if dirty else "")
