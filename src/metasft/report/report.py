"""`metasft report RUN_DIR`: one experiment directory -> report/report.md, report.html, figures.

Reads only files (never metasft.train): config.yaml, manifest.json, dataset/manifest.json,
runs/*/manifest.json and metrics.jsonl, eval/results.sqlite, eval/task_similarity.json. Every
number is computed by metasft.stats from the stored cells and predictions; the report presents,
it does not judge. A piece that is missing leaves its section saying so instead of failing.

Output (replaced as a whole, atomically):
    <exp>/report/report.md, report.html   the same blocks, rendered twice
    <exp>/report/figures/*.png            learning curves, adaptation speed, transfer, similarity
    <exp>/report/summary.csv              summarize(cells) plus the other metrics at the final step
    <exp>/report/comparison.csv           compare_models(fomaml, sft_mixed) on accuracy (comparison_loss.csv: loss)
    <exp>/report/verdicts.json            the verdicts with their evidence
"""
from __future__ import annotations

import logging
from pathlib import Path

from metasft.report.context import Context, build_context, is_tiny
from metasft.report.doc import Bullets, Callout, Document, Para, to_html, to_markdown
from metasft.report.load import load_experiment
from metasft.report.results import (curves_section, errors_section, tables_section, transfer_section,
    verdicts_section)
from metasft.report.setup import setup_section, training_section
from metasft.rundir import BEST_AT_STEP_0, NO_ADAPTATION, atomic_dir, atomic_write_text, run_warnings


log = logging.getLogger(__name__)


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
        ctx = build_context(exp, out, n_boot, errors_per_cell)
        doc = Document(f"metasft report: {ctx.name}")
        sections = (run_warnings_section, header_section, setup_section, training_section, curves_section, transfer_section,
                    tables_section, verdicts_section, errors_section)
        for section in sections:
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
        blocks.add(Callout("warning", f"Section `{section.__name__.removesuffix('_section')}` could not be built: "
                                      f"{type(e).__name__}: {e}"))
    doc.add(*blocks.blocks)


# what each RunWarning means for the reader of the comparison
RUN_WARNING_MEANING = {
    NO_ADAPTATION: ("FOMAML did not adapt",
                    "The meta-gradient was taken at θ′ ≈ θ, so this arm was trained as SFT on its query batches "
                    "alone, not meta-learned: a difference from SFT-Mixed below is no evidence for or against "
                    "meta-learning."),
    BEST_AT_STEP_0: ("The evaluated checkpoint is the untrained step 0",
                     "Validation never improved on the untrained adapter, so `adapter_best` is the base model: "
                     "this arm's results are the base model's under the arm's name."),
}


def run_warnings_section(ctx: Context, doc: Document) -> None:
    """Banners, first thing in the report, for what a training run recorded about itself."""
    for run, manifest in ctx.exp.runs.items():
        for w in run_warnings(manifest):
            title, meaning = RUN_WARNING_MEANING.get(w.kind, (w.kind, ""))
            doc.add(Callout("warning", f"**{title}** (run `{run}`, runs/{run}/manifest.json): {w.message}. {meaning}"))


def header_section(ctx: Context, doc: Document) -> None:
    exp = ctx.exp
    model = exp.config.model.partial_pretrain if exp.config else None
    if is_tiny(ctx):
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
