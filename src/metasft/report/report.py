"""`metasft report RUN_DIR`: one experiment directory -> report/report.md, report.html, figures.

Reads only files (never metasft.train): config.yaml, manifest.json, dataset/manifest.json,
runs/*/manifest.json and metrics.jsonl, eval/results.sqlite (or its shards), eval/task_similarity.json. Every
number is computed by metasft.stats from the stored cells and predictions; the report presents,
it does not judge. A piece that is missing leaves its section saying so instead of failing; no
results at all (results.sqlite missing, empty or unreadable) is an error.

The report leads with the answer: a summary (the question, every claim's status and the number
behind it, what the run can and cannot say), a table of contents, sections 1-6, and the setup and
provenance in an appendix. The verdicts are judged once, before any section is written.

Output (written atomically; a rewrite removes the files the last report listed in report/manifest.json and keeps
any other file there, e.g. your notes):
    <exp>/report/report.md, report.html   the same blocks, rendered twice; the HTML embeds its
                                          figures (one file that can be mailed), the Markdown links them
    <exp>/report/figures/*.png, *.svg     learning curves, adaptation speed, transfer, similarity
    <exp>/report/summary.csv              summarize(cells) plus the other metrics at the final step
    <exp>/report/comparison.csv           compare_models(fomaml, sft_mixed) on accuracy (comparison_loss.csv: loss)
    <exp>/report/verdicts.json            the verdicts with their evidence
    <exp>/report/verdicts_matrix.json     with `variants`: the verdicts of every compared pair (section 7)
    <exp>/report/manifest.json            the files above that this report wrote (ReportManifest)
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from metasft.errors import MetasftError
from metasft.report.context import Context, build_context
from metasft.report import tables as T
from metasft.report.doc import Callout, Contents, Document, Heading, map_text, to_html, to_markdown
from metasft.report.load import evaluation_progress, load_experiment
from metasft.report.matrix import matrix_section
from metasft.report.results import (curves_section, errors_section, tables_section, transfer_section,
    verdicts_section)
from metasft.report.setup import check_budgets, setup_section, training_section
from metasft.report.summary import judge_claims, summary_section
from metasft.manifests import ReportManifest, read_manifest, write_manifest
from metasft.rundir import (FIGURES_DIR, MANIFEST, REPORT_DIR, REPORT_HTML, REPORT_MD, atomic_dir, atomic_write_text,
                            remove_stale_temps)


log = logging.getLogger(__name__)


class ReportError(MetasftError):
    """The directory holds no experiment whose results can be reported."""


def write_report(exp_dir: Path, *, n_boot: int = 10_000, errors_per_cell: int = 3, partial: bool = False) -> Path:
    """Write `<exp_dir>/report/` (see the module docstring) and return the path of report.md.

    n_boot: bootstrap replicates of the paired comparisons; errors_per_cell: wrong answers shown per
    (task, model), drawn with a fixed seed. An evaluation still running or interrupted is a ReportError
    (verdicts from some of the groups would read as the experiment's), unless `partial`: then the
    summary opens with "partial: k of n groups".
    """
    started = time.perf_counter()
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise ReportError(f"{exp_dir}: no such directory; expected an experiment directory (`metasft run --out`)")
    exp = load_experiment(exp_dir)
    if exp.cells is None:  # a report of nothing but "not measurable" verdicts would read as a finding
        why = next((m for m in exp.missing if m.startswith(exp.results_name)), f"{exp.results_name}: unusable")
        raise ReportError(f"{exp_dir}: no results to report ({why}); run `metasft run` or `metasft eval` first")

    stored, total, complete = evaluation_progress(exp)
    progress = None if complete else f"partial: {stored} of {total if total is not None else '?'} groups"
    if progress and not partial:
        raise ReportError(f"{exp_dir}: the evaluation is still running or was interrupted ({progress} stored); "
                          f"finish it (rerun the command that ran it) or pass --partial to report what is stored")
    remove_stale_temps(exp_dir, "report")  # a report killed while it wrote
    with atomic_dir(exp_dir / REPORT_DIR, owned=written_before(exp_dir / REPORT_DIR)) as out:
        (out / FIGURES_DIR).mkdir()
        ctx = build_context(exp, out, n_boot, errors_per_cell)
        ctx.started = started
        ctx.partial = progress
        check_budgets(ctx)
        try:
            judge_claims(ctx)
        except Exception as e:  # the summary and section 5 say so; the rest of the report still stands
            log.exception("verdicts failed")
            ctx.verdicts_error = f"{type(e).__name__}: {e}"
        doc = Document(f"metasft report: {ctx.name}")
        _run_section(summary_section, ctx, doc)
        doc.add(Heading(1, "Contents"), Contents(depth=2))
        for section in (training_section, curves_section, transfer_section, tables_section, verdicts_section,
                        errors_section, matrix_section, setup_section):
            _run_section(section, ctx, doc)
        map_text(doc, T.spell_non_finite)  # no raw nan / inf from any number formatted on the way
        atomic_write_text(out / REPORT_MD, to_markdown(doc))
        atomic_write_text(out / REPORT_HTML, to_html(doc, base=out))
        write_manifest(out, ReportManifest(sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())))
    return exp_dir / REPORT_DIR / REPORT_MD


# what a report wrote before it listed its files in report/manifest.json
_OLDER_REPORT = re.compile(r"report\.(md|html)|(summary|comparison(_loss)?)\.csv|verdicts(_matrix)?\.json|figures/[^/]+\.(png|svg)")


def written_before(report_dir: Path) -> set[str]:
    """The files of `report_dir` that an earlier report wrote, relative to it: all a rewrite may remove."""
    report_dir = Path(report_dir)
    if not report_dir.is_dir():
        return set()
    if (report_dir / MANIFEST).exists():  # a damaged one is a ManifestError: its list is not guessed
        return {MANIFEST, *read_manifest(report_dir, ReportManifest).files}
    if not (report_dir / REPORT_MD).is_file():
        # no report here (a --force redo removed the last one's files): what is left is the user's,
        # figures/*.png included (issue 23's corpus: the older layout's pattern took them)
        return set()
    files = (p.relative_to(report_dir).as_posix() for p in report_dir.rglob("*") if p.is_file())
    return {f for f in files if _OLDER_REPORT.fullmatch(f)}


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
