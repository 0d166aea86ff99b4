"""write_report on synthetic experiment directories laid out like `metasft run` writes them."""
from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import sqlite3
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import matplotlib.colors
import PIL.Image
import pytest
from matplotlib.image import imread

from metasft.config import load_config, save_config
from metasft.manifests import (Best, Budget, DataFile, DataManifest, EvalTaskEntry, ExperimentManifest, Fingerprint,
                               MetaTaskEntry, Provenance, Relation, SplitCounts, StageRecord, TrainManifest,
                               read_manifest, write_manifest)
from metasft.rundir import (CONFIG_FILE, DATASET_DIR, EVAL_DIR, FIGURES_DIR, MANIFEST, METRICS_FILE, REPORT_DIR,
                            REPORT_HTML, REPORT_MD, RESULTS_FILE, RUNS_DIR, SIMILARITY_FILE, SUMMARY_CSV,
                            VERDICTS_FILE, RunWarning)
from metasft.report import bands, browser, plots, write_report
from metasft.report import tables as T
from metasft.report.doc import Code, Document, Para, Table, to_html, to_markdown
from metasft.report.summary import DEMO_MDE, demo_size_caveat
from metasft.stats import LOSS, cluster_bootstrap_ci, verdicts

META = ["algebra", "geometry"]
EVAL = {"prob_eval": {"unseen": False, "cross_domain": False},
        "theorem_eval": {"unseen": True, "cross_domain": False},
        "physics_eval": {"unseen": True, "cross_domain": True}}
SHOTS = (0, 5, 10, 25)
STEPS = (0, 5, 10)
N_Q = 40
CLAIMS = ["H1", "H2", "H3", "C1", "C2", "C3", "C4", "C5"]
# accuracy at n shots after `step` steps: start + gain * n / 25 * step / 10
LEVEL = {"fomaml": (0.45, 0.35), "sft_mixed": (0.35, 0.25), "base": (0.15, 0.10)}

CELL_SQL = """CREATE TABLE cells (model TEXT, task TEXT, n_shots INTEGER, seed INTEGER, step INTEGER,
    accuracy REAL, loss REAL, n INTEGER, n_correct INTEGER, n_timed_out INTEGER, reasoning_steps REAL,
    step_correctness REAL, accuracy_ll REAL, acc_at_k REAL, PRIMARY KEY (model, task, n_shots, seed, step))"""
PRED_SQL = """CREATE TABLE predictions (model TEXT, task TEXT, n_shots INTEGER, seed INTEGER, step INTEGER,
    question_id TEXT, prompt TEXT, output TEXT, extracted TEXT, gold TEXT, correct INTEGER, timed_out INTEGER,
    shot_ids TEXT, PRIMARY KEY (model, task, n_shots, seed, step, question_id))"""


def make_experiment(root: Path, *, model: str = "smollm2-135m-instruct", examples=(960, 960),
                    seeds=(0, 1, 2), models=("fomaml", "sft_mixed", "base"), similarity: str | None = "written",
                    rng_seed: int = 0, n_questions: int = N_Q) -> dict:
    """Write a small experiment directory; return {(model, task, n_shots, seed, step): accuracy}."""
    rng = np.random.default_rng(rng_seed)
    root.mkdir(parents=True, exist_ok=True)
    save_config(load_config(None, [f"model.partial_pretrain={model}", "eval.target_acc=0.6",
                                   f"eval.seeds={list(seeds)}", "data.train_batch_size=32"]), root / CONFIG_FILE)
    code = Provenance("0123456789abcdef", {"python": "3.12", "torch": "2.13.0"})
    fp = Fingerprint("0" * 64, {})
    write_manifest(root, ExperimentManifest(code, stages={  # not in pipeline order; the report is writing itself
        "eval": StageRecord("finished", fp, 99.0), "report": StageRecord("running", fp),
        "similarity": StageRecord("finished", fp, 4.0), "data": StageRecord("finished", fp, 12.5),
        "train/fomaml": StageRecord("finished", fp, 3725.0), "train/base": StageRecord("finished", fp, 1.0)}))
    files = {f"data/meta_train/{t}_{s}.parquet": DataFile(f"{i:02d}" * 32, 10)
             for i, (t, s) in enumerate((t, s) for t in META for s in ("support", "query"))}
    relation = Relation("unseen_level", "unseen level")
    write_manifest(root / DATASET_DIR, DataManifest(
        seed=7, template="en", data_root=None,
        tasks={t: MetaTaskEntry("embedded", {"support": SplitCounts(10, {"1": 10}), "query": SplitCounts(10, {"2": 10})})
               for t in META},
        eval_tasks={t: EvalTaskEntry("embedded", list(SHOTS), flags["unseen"], relation, flags["cross_domain"], 64,
                                     {"test": SplitCounts(N_Q, {}), "shots": SplitCounts(30, {})})
                    for t, flags in EVAL.items()},
        dedup_removed={}, overlap_check="", code=Provenance("0123456789abcdef", {}), files=files))
    budgets = {"fomaml": examples[0], "sft_mixed": examples[1], "base": 0, "reptile": examples[0]}
    for arm in models:
        run = root / RUNS_DIR / arm
        run.mkdir(parents=True)
        write_manifest(run, TrainManifest(
            status="finished", arm=arm, name=arm, seed=0, data_dir="dataset", data_files=files, world_size=1,
            fsdp=False, code=Provenance("0123456789abcdef", {}), train_seconds=60.0,
            budget=Budget(budgets[arm], 40, 9000, 4000, 30, 450 if arm == "fomaml" else 0),
            best=Best("val_loss", 1.25, 20, 1.25)))
        lines = [{"step": s, "examples": 32 * s, "loss": 2.0 - 0.03 * s,
                  **({"val_loss": 2.1 - 0.03 * s} if s % 10 == 0 else {})} for s in range(1, 31)]
        lines = lines if arm != "base" else []
        (run / METRICS_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines))

    accuracy, cells, preds = {}, [], []
    for m in models:
        start, gain = LEVEL[m]
        for task in EVAL:
            for n in SHOTS:
                for seed in ((0,) if n == 0 else seeds):
                    for step in ((0,) if n == 0 else STEPS):
                        p = start + gain * min(n, 25) / 25 * step / STEPS[-1]
                        right = rng.random(n_questions) < p
                        acc = float(right.mean())
                        accuracy[(m, task, n, seed, step)] = acc
                        cells.append((m, task, n, seed, step, acc, 1.0 - acc, n_questions, int(right.sum()), 0, 3.0,
                                      None, None, None))
                        preds += [(m, task, n, seed, step, f"{task}-q{q}", "Q?",
                                   f"step one\nso the answer is {q + int(not r)}", str(q + int(not r)), str(q), int(r),
                                   0, "[]") for q, r in enumerate(right)]
    (root / EVAL_DIR).mkdir()
    with sqlite3.connect(root / EVAL_DIR / RESULTS_FILE) as con:
        con.execute(CELL_SQL)
        con.execute(PRED_SQL)
        con.executemany(f"INSERT INTO cells VALUES ({','.join('?' * 14)})", cells)
        con.executemany(f"INSERT INTO predictions VALUES ({','.join('?' * 13)})", preds)
    con.close()

    names = META + list(EVAL)
    sim = np.eye(len(names))
    sim[names.index("prob_eval"), 0] = sim[0, names.index("prob_eval")] = 0.8     # near algebra
    sim[names.index("physics_eval"), 1] = sim[1, names.index("physics_eval")] = 0.3  # far, nearest geometry
    if similarity == "written":  # the keys eval/similarity.py writes
        payload = {"tasks": names, "similarity": sim.tolist(), "distance": (1 - sim).tolist(),
                   "adapter": "fresh LoRA", "meta_train_tasks": META, "eval_tasks": list(EVAL)}
    elif similarity == "documented":  # the keys of the documented layout
        payload = {"names": names, "matrix": sim.tolist()}
    if similarity:
        (root / EVAL_DIR / SIMILARITY_FILE).write_text(json.dumps(payload))
    return accuracy


def table_rows(md: str, caption: str) -> tuple[list[str], dict[str, list[str]]]:
    """(header, {first cell: row}) of the Markdown table under the line `*caption*`."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"*{caption}"))
    block = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        block.append([c.strip() for c in line.strip("|").split(" | ")])
    header, rows = block[0], block[2:]
    return header, {r[0]: r for r in rows}


def verdict_rows(md: str, header: str = "| claim | statement | status") -> dict[str, list[str]]:
    """{claim: row} of the first table whose header line starts with `header` (section 5's by default)."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        rows[cells[0]] = cells
    return rows


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp") / "exp"
    accuracy = make_experiment(root)
    path = write_report(root, n_boot=200)
    return root, accuracy, path.read_text()


FIGURES = {"training_curves", "task_similarity", "transfer_vs_distance"} \
    | {f"curve_{t}" for t in EVAL} | {f"adaptation_{t}" for t in EVAL}


@pytest.mark.floors
def test_report_files_and_figures(full):
    root, _, md = full
    report = root / REPORT_DIR
    assert (report / REPORT_MD).is_file() and (report / REPORT_HTML).is_file()
    html = (report / REPORT_HTML).read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html
    assert {p.stem for p in (report / FIGURES_DIR).glob("*.png")} == FIGURES
    assert {p.stem for p in (report / FIGURES_DIR).glob("*.svg")} == FIGURES  # a vector copy of each
    for png in (report / FIGURES_DIR).glob("*.png"):
        image = imread(png)
        assert image.ndim == 3 and image.shape[0] > 600 and image.shape[1] > 900, (png, image.shape)
        with PIL.Image.open(png) as im:  # the resolution the PNG declares (pHYs)
            assert min(im.info["dpi"]) >= 150, (png, im.info["dpi"])
        assert f"](figures/{png.name})" in md and f"](figures/{png.stem}.svg)" in md  # Markdown links them
    for svg in (report / FIGURES_DIR).glob("*.svg"):
        assert svg.read_text().lstrip().startswith(("<?xml", "<svg")), svg
    assert "could not be built" not in md, md
    assert not list(root.glob(".report*")), "temp dirs left behind"


def test_html_is_self_contained(full):
    """Every figure is inside report.html (a copy mailed alone shows them); nothing points outside."""
    root, _, _ = full
    html = (root / REPORT_DIR / REPORT_HTML).read_text()
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)
    assert len(sources) == len(FIGURES)
    for src in sources:
        assert src.startswith("data:image/png;base64,"), src[:60]
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    outside = [u for u in re.findall(r'\s(?:src|href)="([^"]*)"', html) if not u.startswith(("data:", "#"))]
    assert outside == []
    assert 'src="figures/' not in html


def test_summary_leads_and_toc_links(full):
    root, _, md = full
    html = (root / REPORT_DIR / REPORT_HTML).read_text()
    # the summary comes first: right after the title, before the contents and every section
    assert md.index("## Summary") < md.index("## Contents") < md.index("## 1. Training")
    assert md.index("## Summary") < min(md.index(h) for h in ("## 2.", "## 5. Verdicts", "## Appendix A"))
    assert md.index("**Question.**") < md.index("## Contents")
    summary = verdict_rows(md, "| claim | role | what the design claims | status (accuracy)")
    assert list(summary) == CLAIMS
    section5 = verdict_rows(md)
    assert {c: r[3] for c, r in summary.items()} == {c: r[2] for c, r in section5.items()}
    assert {c: r[4] for c, r in summary.items()} == {c: r[4] for c, r in section5.items()}  # the same number
    assert {c: r[1] for c, r in summary.items()} == {c: r[3] for c, r in section5.items()}  # the same role
    assert [c for c, r in summary.items() if r[1] == "primary"] == ["H1", "H2", "H3"]
    assert "**What this run can say:**" in md[:md.index("## Contents")]
    # setup and hashes in the appendix, after everything else
    assert md.index("## Appendix A. Setup and provenance") > md.index("## 6. Error cases")
    assert md.index("| data/meta_train/algebra_support.parquet") > md.index("## Appendix A")
    # status colours in HTML: one badge per claim, the class named after the status
    table = html[html.index('<table class="summary">'):]
    table = table[:table.index("</table>")]
    for row, claim in zip(table.split("<tr>")[2:], CLAIMS):
        status = summary[claim][3].strip("*")
        assert f'<span class="badge {status.replace(" ", "-")}">{status}</span>' in row
    for status, colour in (("met", "#1a7f37"), ("not-met", "#c62828"), ("inconclusive", "#e0a800"),
                           ("not-measurable", "#8a8a8a")):
        assert re.search(rf"\.badge\.{status} {{[^}}]*{colour}", html), status
    # the contents link to anchors that exist, in both renderings
    links = re.findall(r'<nav class="toc">(.*?)</nav>', html, re.S)[0]
    targets = re.findall(r'href="#([^"]+)"', links)
    assert "5-verdicts" in targets and "appendix-a-setup-and-provenance" in targets
    assert all(f'id="{t}"' in html for t in targets)
    assert "- [5. Verdicts](#5-verdicts)" in md


def test_cells_table_holds_the_mean_over_seeds(full):
    _, accuracy, md = full
    for task, n in [("prob_eval", 10), ("physics_eval", 25)]:
        accs = [accuracy[("fomaml", task, n, s, STEPS[-1])] for s in (0, 1, 2)]
        expected = f"{statistics.mean(accs):.3f} ± {statistics.stdev(accs):.3f} (n=3)"
        header, rows = table_rows(md, f"{task}: accuracy at the final adaptation step")
        assert rows["FOMAML-SFT"][header.index(f"{n}-shot")] == expected
    header, rows = table_rows(md, "prob_eval: accuracy at the final adaptation step")
    assert rows["Base"][header.index("0-shot")] == f"{accuracy[('base', 'prob_eval', 0, 0, 0)]:.3f} (n=1)"
    summary = pd.read_csv(full[0] / REPORT_DIR / SUMMARY_CSV)
    row = summary[(summary.model == "sft_mixed") & (summary.task == "theorem_eval") & (summary.n_shots == 5)]
    assert row["mean"].item() == pytest.approx(statistics.mean(
        accuracy[("sft_mixed", "theorem_eval", 5, s, STEPS[-1])] for s in (0, 1, 2)))


def test_strict_and_flexible_grading_per_cell(tmp_path, full):
    """Section 4 shows each cell's strict and flexible accuracy and its cut-off and repeating outputs,
    and says which grading is primary; results written before the gradings say that instead."""
    root = tmp_path / "exp"
    accuracy = make_experiment(root, models=("fomaml", "sft_mixed"), seeds=(0, 1))
    with sqlite3.connect(root / EVAL_DIR / RESULTS_FILE) as con:
        for column in ("accuracy_strict REAL", "accuracy_flexible REAL", "n_truncated INTEGER", "n_repeating INTEGER"):
            con.execute(f"ALTER TABLE cells ADD COLUMN {column}")
        con.execute("UPDATE cells SET accuracy_strict = accuracy, accuracy_flexible = MIN(1.0, accuracy + 0.1), "
                    "n_truncated = 2, n_repeating = 1")
        con.execute("ALTER TABLE predictions ADD COLUMN truncated INTEGER")  # (repeating: from before it)
        con.execute("UPDATE predictions SET truncated = 1 - correct")
        con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        con.execute("INSERT INTO meta VALUES ('grading', '\"flexible\"')")
    con.close()
    md = write_report(root, n_boot=50).read_text()
    section = md[md.index("## Strict and flexible grading"):]
    assert "Accuracy in this report (tables, curves, comparisons, verdicts) is graded **flexible**" in section
    assert "accuracy graded flexible (`eval.grading`" in md[:md.index("## Contents")]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| task | model | N-shot | strict accuracy"))
    table = itertools.takewhile(lambda line: line.startswith("|"), lines[start + 2:])
    rows = {tuple(cells[:3]): cells for cells in ([c.strip() for c in line.strip("|").split(" | ")] for line in table)}
    accs = [accuracy[("fomaml", "prob_eval", 10, s, STEPS[-1])] for s in (0, 1)]
    row = rows[("prob_eval", "FOMAML-SFT", "10")]
    assert row[3:] == [f"{statistics.mean(accs):.3f}", f"{statistics.mean(min(1.0, a + 0.1) for a in accs):.3f}",
                       f"4 of {2 * N_Q}", f"2 of {2 * N_Q}"]
    assert rows[("theorem_eval", "SFT-Mixed", "0")][5:] == [f"2 of {N_Q}", f"1 of {N_Q}"]
    assert len(rows) == len(EVAL) * 2 * len(SHOTS)
    errors = md[md.index("## 6. Error cases"):]
    assert "(cut off at max_new_tokens)" in errors and "(repeating)" not in errors
    assert "could not be built" not in md
    old = full[2][full[2].index("## Strict and flexible grading"):]
    assert "The results record no grading" in old and "holds no strict / flexible accuracy" in old


def test_verdicts_are_the_stats_verdicts(full):
    root, _, md = full
    rows = verdict_rows(md)
    assert list(rows) == CLAIMS
    with sqlite3.connect(root / EVAL_DIR / RESULTS_FILE) as con:
        cells = pd.read_sql_query("SELECT * FROM cells", con)
        preds = pd.read_sql_query("SELECT model, task, n_shots, seed, step, question_id, correct FROM predictions", con)
    con.close()
    unseen = [t for t, f in EVAL.items() if f["unseen"]]
    cross = [t for t, f in EVAL.items() if f["cross_domain"]]
    truth = {v.name: v.status for v in verdicts(cells, preds, unseen_tasks=unseen, cross_domain_tasks=cross,
                                                target_acc=0.6, n_boot=200)}
    assert {n: r[2].strip("*") for n, r in rows.items()} == truth
    stored = json.loads((root / REPORT_DIR / VERDICTS_FILE).read_text())
    assert [v["label"] for v in stored] == CLAIMS + [f"{n} (loss)" for n in CLAIMS]
    # this store has the older layout (no per-question loss): the secondary outcome says so, once per claim
    assert all(v["status"] == "not measurable" and "no per-question loss" in v["explanation"] for v in stored[8:])
    # H1 judged at 10 shots against SFT-Mixed interpolated at 50? This grid stops at 25: 5 vs 25. The
    # evidence is a table with a row per task, not JSON
    evidence = md[md.index("#### H1: evidence"):]
    header, rows = table_rows("*x*\n\n" + evidence[evidence.index("| task |"):], "x")
    assert set(rows) == set(EVAL)
    for task in EVAL:
        assert rows[task][header.index("FOMAML-SFT shots")] == "5"
        assert rows[task][header.index("SFT-Mixed shots")] == "25"
    assert "{" not in evidence[:evidence.index("#### H2")]


def test_setup_sections(full):
    _, _, md = full
    assert "Budget mismatch" not in md and "Example budgets match: FOMAML-SFT 960, SFT-Mixed 960" in md
    assert "Pipeline check only" not in md
    assert "| data/meta_train/algebra_support.parquet | 10 | 000000000000 |" in md  # short hash
    assert "| train/fomaml | 3,725.0 s (1:02:05) |" in md
    # the wall-time table in the order metasft run runs the stages, the report with its own time
    _, stages = table_rows(md, "Source: manifest.json stages")
    assert list(stages) == ["data", "train/fomaml", "train/base", "eval", "similarity", "report"]
    assert "running" not in " ".join(stages["report"]) and re.match(r"\d+\.\d s \(0:00:\d\d\)", stages["report"][1])
    assert "0123456789abcdef" in md
    # transfer: physics_eval is nearest to geometry at similarity 0.3
    assert "| physics_eval | geometry | 0.300 | 0.700 |" in md
    # error cases: the wrong-answer count at the largest shot count (25) and final step, over 3 seeds
    wrong = sum(round((1 - full[1][("base", "prob_eval", 25, s, STEPS[-1])]) * N_Q) for s in (0, 1, 2))
    assert f"**Base**, 25-shot: {wrong} of {3 * N_Q} answers wrong; 3 shown." in md


@pytest.mark.parametrize("examples, warned", [((960, 1200), True), ((960, 990), False), ((960, 960), False)])
def test_budget_mismatch_warning(tmp_path, examples, warned):
    make_experiment(tmp_path / "exp", examples=examples, seeds=(0, 1))
    md = write_report(tmp_path / "exp", n_boot=50).read_text()
    assert ("Budget mismatch" in md) == warned
    assert ("Unequal budgets" in md) == warned  # repeated beside the comparisons
    assert "could not be built" not in md


def test_tiny_and_demo_size_banners(tmp_path, monkeypatch):
    """A tiny model on 12 questions and a run that did not adapt: the warnings in the summary,
    before any number; the demo-size
    caveat of section 5 is the summary's sentence (one function makes both); the verdicts both
    render are judged once (one call per outcome)."""
    import metasft.report.summary as summary
    calls, real = [], summary.verdicts
    monkeypatch.setattr(summary, "verdicts", lambda *a, **k: calls.append(k["outcome"].name) or real(*a, **k))
    make_experiment(tmp_path / "exp", model="tiny-llama", seeds=(0, 1), n_questions=12)
    run = tmp_path / "exp" / RUNS_DIR / "fomaml"  # a run that recorded a warning
    manifest = read_manifest(run, TrainManifest)
    manifest.warnings = [RunWarning("inner_loop_did_not_adapt", "support loss fell 0.00% over 4 inner steps")]
    write_manifest(run, manifest)
    md = write_report(tmp_path / "exp", n_boot=50).read_text()
    assert sorted(calls) == ["accuracy", "loss"]
    assert md.index("**FOMAML did not adapt** (run `fomaml`") < md.index("| claim |") < md.index("Experiment directory")
    lead = md[:md.index("## Contents")]
    assert lead.index("Pipeline check only") < lead.index("| claim |")
    assert "Pipeline check only" in (tmp_path / "exp" / REPORT_DIR / REPORT_HTML).read_text()
    assert "the model is the tiny test model" in md
    assert "With the tiny test model none of this is evidence" in lead
    demo = re.search(r"\*\*Demo-size run:\*\* (.*?no claim detects a true effect smaller than ([0-9.]+) .*?)\.\n",
                     lead)
    assert demo and float(demo.group(2)) > DEMO_MDE
    assert f"this is a demo-size run: {demo.group(1)}" in md[md.index("## 5. Verdicts"):]


def test_demo_size_caveat():
    """The warning keys off each claim's MDE beyond its own threshold (C2's +0.05, H1's -margin) and
    off accuracies all at the floor."""
    import pandas as pd
    from metasft.stats import Verdict
    def v(name, mde, threshold=0.0):
        return Verdict(name, "accuracy", "s", "inconclusive", mde=mde, threshold=threshold)
    assert demo_size_caveat([v("C5", 0.25), v("C2", 0.36, 0.05), v("H2", float("nan"))]).startswith(
        "no claim detects a true effect smaller than 0.25 (25 points beyond its threshold)")
    assert demo_size_caveat([v("C5", 0.25), v("C2", 0.12, 0.05)]) is None  # C2: 7 points beyond +0.05
    assert demo_size_caveat([v("H1", 0.02, -0.05)]) is None
    assert demo_size_caveat([v("C5", float("nan"))]) is None
    floor = demo_size_caveat([v("C5", 0.05)], pd.Series([0.0, 0.04, 0.08]))
    assert floor.startswith("every cell's accuracy is below 0.1 (at most 0.080)")


def test_missing_similarity_is_reported(tmp_path):
    make_experiment(tmp_path / "exp", similarity=None, seeds=(0, 1))
    md = write_report(tmp_path / "exp", n_boot=50).read_text()
    assert "No task similarity (`eval/task_similarity.json` missing or unreadable)" in md
    assert "`eval/task_similarity.json`: not found" in md
    assert not (tmp_path / "exp" / REPORT_DIR / FIGURES_DIR / "transfer_vs_distance.png").exists()
    assert "could not be built" not in md


def test_documented_similarity_keys(tmp_path):
    make_experiment(tmp_path / "exp", similarity="documented", seeds=(0, 1))
    md = write_report(tmp_path / "exp", n_boot=50).read_text()
    assert "| prob_eval | algebra | 0.800 | 0.200 |" in md
    assert (tmp_path / "exp" / REPORT_DIR / FIGURES_DIR / "transfer_vs_distance.png").is_file()


def test_missing_pieces_do_not_crash(tmp_path):
    root = tmp_path / "exp"
    make_experiment(root, seeds=(0,), models=("fomaml", "sft_mixed"))
    (root / MANIFEST).unlink()
    shutil.rmtree(root / RUNS_DIR)
    md = write_report(root, n_boot=50).read_text()
    assert "could not be built" not in md, md
    assert "No results for Base" in md
    assert "few-shot cell(s) have a single seed" in md
    assert "manifest.json records no `stages`" in md
    assert "No run directories under `runs/`" in md
    rows = verdict_rows(md)
    assert list(rows) == CLAIMS
    assert rows["H2"][2] == "**not measurable**"  # no Base model
    assert rows["C3"][2] != "**not measurable**"  # one seed: no t-test, but the test over questions stands


def test_a_damaged_config_is_an_error_not_the_defaults(tmp_path):
    """Issue 23's corpus: config.yaml cut or overwritten made the report use the design's margins and
    target instead, and change its verdicts with exit 0."""
    from metasft.config import ConfigError
    root = tmp_path / "exp"
    make_experiment(root, seeds=(0, 1))
    (root / CONFIG_FILE).write_text("stats: {h1_margin: 0.05\n")
    with pytest.raises(ConfigError, match=r"config\.yaml is not readable as a metasft config .*restore it"):
        write_report(root, n_boot=50)
    assert not (root / REPORT_DIR).exists()


def test_no_results_at_all_is_an_error_not_a_report_of_nothing(tmp_path):
    from metasft.report.report import ReportError
    root = tmp_path / "exp"
    make_experiment(root, seeds=(0, 1))
    (root / EVAL_DIR / RESULTS_FILE).unlink()
    with pytest.raises(ReportError, match="no results to report.*results.sqlite: not found"):
        write_report(root, n_boot=50)
    assert not (root / REPORT_DIR).exists()


def test_a_redo_after_force_keeps_a_users_figure(tmp_path):
    """Issue 23's corpus: `metasft run --force` removes the last report's files (its manifest too),
    then the report stage took a user's report/figures/mine.png for an older report's figure."""
    from metasft.report.report import written_before
    from metasft.rundir import remove_owned
    root = tmp_path / "exp"
    make_experiment(root, seeds=(0, 1))
    write_report(root, n_boot=50)
    (root / REPORT_DIR / FIGURES_DIR / "mine.png").write_bytes(b"the user's figure")
    assert remove_owned(root / REPORT_DIR, written_before(root / REPORT_DIR)) == ["figures"]
    write_report(root, n_boot=50)
    assert (root / REPORT_DIR / FIGURES_DIR / "mine.png").read_bytes() == b"the user's figure"
    assert (root / REPORT_DIR / REPORT_MD).is_file()


def test_rerun_replaces_the_reports_own_files_and_keeps_the_users(tmp_path):
    """Issue 23: a rewrite removes what the last report listed in report/manifest.json, nothing else."""
    root = tmp_path / "exp"
    make_experiment(root, seeds=(0, 1))
    write_report(root, n_boot=50)
    (root / REPORT_DIR / FIGURES_DIR / "stale.png").write_text("an earlier report's figure")
    manifest = json.loads((root / REPORT_DIR / MANIFEST).read_text())
    manifest["files"].append("figures/stale.png")
    (root / REPORT_DIR / MANIFEST).write_text(json.dumps(manifest))
    (root / REPORT_DIR / "my_notes.md").write_text("mine")
    write_report(root, n_boot=50)
    assert not (root / REPORT_DIR / FIGURES_DIR / "stale.png").exists() and (root / REPORT_DIR / REPORT_MD).is_file()
    assert (root / REPORT_DIR / "my_notes.md").read_text() == "mine"


def test_rendering_escapes():
    doc = Document("t", [Table(["a|b", "c"], [["x|y", "<z>"]]), Para("`a<b>` and **bold** <i>")])
    md, html = to_markdown(doc), to_html(doc)
    assert "| a\\|b | c |" in md and "| x\\|y | <z> |" in md
    assert "<td>&lt;z&gt;</td>" in html and "<code>a&lt;b&gt;</code>" in html
    assert "<strong>bold</strong> &lt;i&gt;" in html


def test_unusable_cells_are_reported(tmp_path):
    root = tmp_path / "exp"
    make_experiment(root, seeds=(0, 1))
    with sqlite3.connect(root / EVAL_DIR / RESULTS_FILE) as con:
        con.execute("ALTER TABLE cells DROP COLUMN loss")
    con.close()
    md = write_report(root, n_boot=50).read_text()
    assert "table cells unusable (cells lacks column(s) ['loss']" in md
    assert "could not be built" not in md
    assert list(verdict_rows(md)) == CLAIMS


# ------------------------------------------------------------------------------------------ figures
def _curve_points(models, value=0.0, steps=None):
    """Points of the plotted frames: every arm at `value` (the all-at-floor case)."""
    key = ("step", steps) if steps is not None else ("n_shots", [0, 5, 10])
    return pd.DataFrame([{"model": m, key[0]: x, "mean": value, "lo": value, "hi": value, "n_questions": 40,
                          "n_seeds": 1 if x == 0 and key[0] == "n_shots" else 3} for m in models for x in key[1]])


def _lines_by_label(fig) -> dict[str, object]:
    return {line.get_label(): line for ax in fig.axes for line in ax.get_lines()
            if not line.get_label().startswith("_") and "target" not in line.get_label()}


def test_arm_styles_are_the_same_in_every_figure(tmp_path):
    """Each arm: one display name and colour in the learning curve, the adaptation curve and the
    training curves (which once drew FOMAML blue and every other figure red)."""
    models = ["fomaml", "sft_mixed", "base", "reptile", "my_arm"]
    curve = plots.learning_curve(_curve_points(models), _curve_points(models), "t", tmp_path / "c.png", 0.6, "f")
    adapt = plots.adaptation_curve(_curve_points(models, steps=[0, 5, 10]), "t", 10, tmp_path / "a.png", 0.6, "f")
    metrics = {m: pd.DataFrame({"step": [1, 2, 3], "loss": [1.0, 0.9, 0.8], "val_loss": [1.1, 1.0, 0.9]})
               for m in models if m != "base"}
    train = plots.training_curves(metrics, {m: m for m in metrics}, tmp_path / "t.png", "f")
    for fig in (curve, adapt, train):
        lines = _lines_by_label(fig)
        for model in metrics if fig is train else models:
            style = plots.arm_style(model)
            drawn = [line for name, line in lines.items() if name.startswith(style.label)]
            assert drawn, (model, list(lines))
            assert {matplotlib.colors.to_hex(line.get_color()) for line in drawn} == {style.color.lower()}
            assert {line.get_marker() for line in drawn if line.get_marker() not in ("None", None)} <= {style.marker}
    assert len({plots.arm_style(m).color for m in models}) == len(models)
    assert plots.arm_style("my_arm") == plots.arm_style("my_arm")  # by name, not by position
    assert [plots.label(m) for m in models[:4]] == ["FOMAML-SFT", "SFT-Mixed", "Base", "Reptile-SFT"]
    for stem in ("c", "a", "t"):
        assert (tmp_path / f"{stem}.png").is_file() and (tmp_path / f"{stem}.svg").is_file()


def test_coinciding_arms_stay_visible_and_steps_are_whole(tmp_path):
    """All arms at 0: each line is drawn apart (its own x offset, marker and line style); the step
    axis ticks are whole steps; the legend gives n = questions x seeds."""
    models = ["fomaml", "sft_mixed", "base"]
    fig = plots.adaptation_curve(_curve_points(models, steps=[0, 5, 10]), "t", 10, tmp_path / "a.png", None, "f")
    lines = list(_lines_by_label(fig).values())
    assert len(lines) == 3
    xs = [tuple(line.get_xdata()) for line in lines]
    assert len(set(xs)) == 3
    assert len({line.get_marker() for line in lines}) == 3 and len({str(line.get_linestyle()) for line in lines}) == 3
    ticks = fig.axes[0].get_xticks()
    assert list(ticks) == [0, 5, 10]
    assert all("(n = 40 q × 3 seeds)" in line.get_label() for line in lines)
    curve = plots.learning_curve(_curve_points(models), _curve_points(models), "t", tmp_path / "c.png", None, "f")
    first = [tuple(line.get_xdata()) for line in curve.axes[0].get_lines() if not line.get_label().startswith("_")]
    assert len(set(first)) == 3


def test_bands_are_intervals_over_questions(full):
    """A band point is cluster_bootstrap_ci over the per-question scores (mean over seeds)."""
    root, _, _ = full
    with sqlite3.connect(root / EVAL_DIR / RESULTS_FILE) as con:
        cells = pd.read_sql_query("SELECT * FROM cells", con)
        preds = pd.read_sql_query("SELECT model, task, n_shots, seed, step, question_id, correct FROM predictions", con)
    con.close()
    band = bands.final_bands(cells, preds.assign(loss=np.nan), n_boot=300)
    row = band[(band.model == "fomaml") & (band.task == "prob_eval") & (band.n_shots == 10)].iloc[0]
    final = preds[(preds.model == "fomaml") & (preds.task == "prob_eval") & (preds.n_shots == 10)
                  & (preds.step == STEPS[-1])]
    per_question = final.groupby("question_id")["correct"].mean().to_numpy(float)
    assert (row.n_questions, row.n_seeds) == (N_Q, 3)
    assert (row["mean"], row.lo, row.hi) == pytest.approx(cluster_bootstrap_ci([per_question], n_boot=300))
    assert row.lo < row["mean"] < row.hi
    assert bands.final_bands(cells, preds.assign(loss=np.nan), LOSS) is None  # no per-question loss: no band


def test_report_html_in_a_headless_browser(full, tmp_path):
    """A copy of report.html alone, opened in headless Chromium: every figure decodes, nothing is
    fetched from outside, and the summary table is on the first screen (1280 x 800)."""
    if browser.find_chromium() is None:
        pytest.skip("no headless Chromium (apt-get install chromium, or set METASFT_CHROMIUM)")
    root, _, _ = full
    check = browser.check_html(root / REPORT_DIR / REPORT_HTML, screenshot=tmp_path / "first_screen.png")
    assert check.ok, check.problems
    assert len(check.images) == len(FIGURES) and all(i["ok"] and i["width"] > 900 for i in check.images)
    assert check.summary_bottom <= check.viewport_height
    assert imread(check.screenshot).shape[:2] == (browser.VIEWPORT[1], browser.VIEWPORT[0])


def test_evidence_is_tables_not_json():
    """Task-keyed entries merge into one table with a row per task; records get their own table;
    infinities (JSON "inf") and intervals are spelled for reading."""
    blocks = T.evidence_blocks({
        "per_task": {"a": {"ratio": "inf", "ci": [2.0, "inf"], "status": "met"},
                     "b": {"ratio": 2.0, "ci": [-0.1, 0.2], "status": "inconclusive"}},
        "not_judged": {"c": "no shot level run by both models"},
        "family": [{"task": "a", "n_shots": 5, "p": 0.0123, "p_holm": 0.04}],
        "target_accuracy": 0.6, "worse": []})
    by_task, family, facts = blocks
    assert by_task.header == ["task", "ratio", "95% CI", "status", "not judged because"]
    assert by_task.rows == [["a", "∞", "[2, ∞]", "met", "—"], ["b", "2", "[-0.100, +0.200]", "inconclusive", "—"],
                            ["c", "—", "—", "—", "no shot level run by both models"]]
    assert family.rows == [["a", "5", "0.012", "0.04"]] and family.header == ["task", "N-shot", "p", "p (Holm)"]
    assert facts.rows == [["target accuracy", "0.6"], ["worse at every level", "—"]]


def test_accuracy_axes_zoom_to_small_values_and_say_so(tmp_path):
    """Every value at or below 0.08: the axis is 0-0.1, its label states the 0-1 scale, and a target
    above it is named as off the axis. Values reaching 0.7 keep the full 0-1 axis."""
    models = ["fomaml", "sft_mixed", "base"]
    low = _curve_points(models, value=0.05).assign(hi=0.08, lo=0.02)
    curve = plots.learning_curve(low, low, "t", tmp_path / "c.png", 0.6, "f")
    adapt = plots.adaptation_curve(_curve_points(models, value=0.05, steps=[0, 5]), "t", 5, tmp_path / "a.png", 0.6, "f")
    for ax in (curve.axes[0], adapt.axes[0]):
        lo, hi = ax.get_ylim()
        assert 0.08 < hi <= 0.11 and lo < 0, (lo, hi)
        assert "zoomed to 0–0.1 of the 0–1 scale" in ax.get_ylabel()
        assert any(line.get_label() == "target accuracy 0.6 (above this zoomed axis)" for line in ax.get_lines())
    high = _curve_points(models, value=0.7)
    ax = plots.learning_curve(high, high, "t", tmp_path / "c.png", 0.6, "f").axes[0]
    assert ax.get_ylim() == pytest.approx((-0.04, 1.04)) and "zoomed" not in ax.get_ylabel()


def test_validation_panel_starts_at_step_0(tmp_path):
    """metrics.jsonl's step-0 validation (logged before any `examples` count) is drawn at 0 examples."""
    metrics = {"fomaml": pd.DataFrame([{"step": 0, "val_loss": 1.558},
                                       *({"step": s, "examples": 32 * s, "loss": 1.5 - 0.1 * s} for s in (1, 2, 3)),
                                       {"step": 3, "examples": 96, "val_loss": 1.2}])}
    fig = plots.training_curves(metrics, {"fomaml": "fomaml"}, tmp_path / "t.png", "f")
    val = [line for line in fig.axes[1].get_lines() if line.get_label() == "FOMAML-SFT"][0]
    assert list(val.get_xdata()) == [0, 96] and list(val.get_ydata()) == [1.558, 1.2]


def test_no_raw_nan_or_inf_in_prose():
    """Python's nan / inf are spelled as words everywhere but quoted text (code spans, model outputs)."""
    assert T.spell_non_finite("ratio nan [95% CI -inf, inf]") == "ratio undefined (no interval)"
    assert T.spell_non_finite("2.0 [95% CI 1.5, inf]; estimate -inf; p nan.") == \
        "2.0 [95% CI 1.5, unbounded]; estimate unbounded; p undefined."
    assert T.spell_non_finite("gold `inf`, extracted `nan`; infinity, \\infty, nan_task") == \
        "gold `inf`, extracted `nan`; infinity, \\infty, nan_task"
    doc = Document("t")
    doc.add(Para("ratio nan [95% CI -inf, inf]"), Table(["a"], [["+inf"]], "nan"), Code("nan inf"))
    from metasft.report.doc import map_text
    map_text(doc, T.spell_non_finite)
    md = to_markdown(doc)
    assert "ratio undefined (no interval)" in md and "| unbounded |" in md and "nan inf" in md
    assert not re.search(r"(?<![\w`])[-+]?(nan|inf)(?![\w`])", md.replace("nan inf", ""))


def test_a_report_at_the_floor_has_no_raw_nan_or_inf(tmp_path, monkeypatch):
    """Every arm near 0: the speed claims' curves never reach the target (censored, infinite steps),
    the number a reader sees is a bound in words, and no Python nan / inf is left in the prose."""
    for arm in ("fomaml", "sft_mixed", "base"):
        monkeypatch.setitem(LEVEL, arm, (0.02, 0.0))
    make_experiment(tmp_path / "exp", seeds=(0, 1))
    md = write_report(tmp_path / "exp", n_boot=50).read_text()
    prose = re.sub(r"```.*?```|`[^`]*`", "", md, flags=re.S)
    assert not re.findall(r"(?<![\w.\\])[-+]?(?:nan|NaN|inf)(?!\w)", prose)
    assert verdict_rows(md)["H3"][4] == "10 steps [10 steps, unbounded]"  # was "[10 steps, inf steps]"
