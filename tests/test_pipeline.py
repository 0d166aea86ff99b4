"""End-to-end runs of the whole pipeline on the tiny config (`metasft run`): one smoke run, then
reruns of copies of it against the stage fingerprints (stale settings, --force, a killed run)."""
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import CONFIGS, REPO, RUN_OUTPUT, killed_after_training
from metasft.cli import main
from metasft.eval.results import ResultsStore
from metasft.stats.verdicts import read_verdicts, summary_lines
from metasft.rundir import (ADAPTER_DIR, BEST_ADAPTER_DIR, CHECKPOINTS_DIR, CONFIG_FILE, DATASET_DIR, EVAL_DIR,
                            FIGURES_DIR, FRESH_LORA_FILE, LOCK, MANIFEST, METRICS_FILE, REPORT_DIR, REPORT_HTML,
                            REPORT_MD, RESULTS_FILE, RUNS_DIR, VERDICTS_FILE)

TINY = str(CONFIGS / "tiny" / "experiment.yaml")
STAGES = ("data", "train/fomaml", "train/sft_mixed", "train/base", "eval", "similarity", "report")


def _strict(name):
    raise ValueError(f"manifest.json holds {name}: not strict JSON")


def manifest(out) -> dict:
    return json.loads((out / MANIFEST).read_text(), parse_constant=_strict)


def files(out) -> dict:
    """{relative path: (mtime_ns, bytes)} of every file under `out`: what a rerun rewrote."""
    return {str(p.relative_to(out)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.rglob("*"))
            if p.is_file()}


def rewritten(before: dict, after: dict) -> set[str]:
    """The top-level outputs (dataset, runs/<arm>, eval/<file>, report) with a new, changed or removed file."""
    def owner(rel):
        parts = rel.removesuffix("-wal").removesuffix("-shm").split("/")  # SQLite's journal files
        return "/".join(parts[:2]) if parts[0] in ("runs", "eval") else parts[0]
    return {owner(rel) for rel in set(before) | set(after) if before.get(rel) != after.get(rel)}


@pytest.fixture
def finished(tiny_experiment):
    return tiny_experiment


@pytest.fixture
def exp(finished, tmp_path):
    """A copy of the finished tiny experiment, for one test to rerun."""
    out = tmp_path / "exp"
    shutil.copytree(finished, out)
    return out


def test_tiny_experiment_runs_every_stage_and_reruns_nothing(finished, exp):
    out = finished
    report = out / REPORT_DIR / REPORT_MD
    text = report.read_text()
    assert (out / REPORT_DIR / REPORT_HTML).is_file()
    assert list((out / REPORT_DIR).rglob("curve_*.png"))
    assert "tiny" in text.lower() and "H1" in text and "C5" in text
    stages = manifest(out)["stages"]
    for stage in STAGES:
        assert stages[stage]["status"] == "finished", stage
        assert len(stages[stage]["fingerprint"]["sha256"]) == 64, stage
    assert stages["train/fomaml"]["fingerprint"]["keys"]["meta.inner_lr"] == 1e-3
    budgets = [json.loads((out / RUNS_DIR / arm / MANIFEST).read_text())["budget"]["examples"]
               for arm in ("fomaml", "sft_mixed")]
    assert budgets[0] == budgets[1]
    with sqlite3.connect(out / EVAL_DIR / RESULTS_FILE) as db:
        models = {m for (m,) in db.execute("select distinct model from cells")}
    assert models == {"base", "fomaml", "sft_mixed"}
    # a rerun finds every stage finished with the same settings and redoes none of them
    before = files(exp)
    assert main(["run", TINY, "--out", str(exp)]) == 0
    assert manifest(exp)["stages"] == stages
    after = files(exp)
    assert rewritten(before, after) <= {MANIFEST, CONFIG_FILE}  # provenance (command), the same config
    assert after[CONFIG_FILE][1] == before[CONFIG_FILE][1]


def test_the_run_names_its_progress_and_ends_with_the_report_page_time_and_verdicts(finished):
    """What the tiny experiment's `metasft run` printed off a terminal (the session fixture's capture):
    bars named by stage and arm, a line before each long step, plain progress lines rather than a
    line per step, and an end that names report.html, the total time and the verdicts."""
    out = (finished.parent / RUN_OUTPUT).read_text().splitlines()
    bars = {}
    for line in out:
        if m := re.match(r"(train \w+|eval): (\d+)%", line):
            bars.setdefault(m[1], []).append(int(m[2]))
    assert set(bars) == {"train fomaml", "train sft_mixed", "eval"}  # the base arm trains nothing
    assert not [l for l in out if l.startswith("train:")]
    for name, percents in bars.items():
        assert percents == sorted(percents) and percents[-1] == 100, (name, percents)
        assert len(percents) <= 11, (name, percents)  # a line per tenth, not per step (sft_mixed: 18 steps)
    ends = [l for l in out if re.match(r"(train \w+|eval): 100%", l)]
    assert all(", done in " in l for l in ends) and len(ends) == 3
    assert re.search(r"train sft_mixed: 100% \(18/18 steps\)", "\n".join(ends))
    # before the bars move: the step-0 validation, FOMAML's adapted validation; the data build, similarity
    first_fomaml = next(i for i, l in enumerate(out) if l.startswith("train fomaml: "))
    before = "\n".join(out[:first_fomaml])
    assert "train fomaml: validating the untrained adapter (step 0)" in before
    assert "now adapting a copy to each of 4 task(s)" in before
    assert any("data build: reading 4 meta-training and 3 eval task(s)" in l for l in out)
    assert any("similarity: adapter gradients of 7 task(s)" in l for l in out)
    # evaluation by work done: each stack's adaptation steps and decoding batches move the bar (27
    # groups: a task's 3 zero-shot groups in a stack, its 6 few-shot groups in another), with the time left
    evals = [l for l in out if l.startswith("eval: ")]
    assert any(re.search(r"now \w+ 0-shot \(3 cells\): evaluating", l) for l in evals)
    assert any("now statistics (6 cells, 4-shot): " in l for l in evals)
    assert any(re.search(r"eval: \d+%, .* about \d+:\d+ left; 9/27 groups stored; now \w+ \(6 cells", l)
               for l in evals)
    assert evals[-1].endswith("27/27 groups stored")
    # the end: the page to open, the time, and the report's own verdict lines
    report = next(i for i, l in enumerate(out) if l.startswith("report: "))
    assert out[report].endswith(f"{REPORT_DIR}/{REPORT_HTML}")  # the build's directory (a copy's under xdist)
    assert re.fullmatch(r"total wall time: (\d+ min )?\d+ s", out[report + 1])
    lines = summary_lines(read_verdicts(finished / REPORT_DIR / VERDICTS_FILE))
    assert out[report + 3:report + 3 + len(lines)] == ["  " + l for l in lines] and lines


def test_finished_runs_keep_only_what_a_user_needs(finished):
    """Issue 22's lean run directory: a finished run keeps at most trainer.keep_checkpoints checkpoints
    (the newest), no adapter_best/ that copies adapter/, and the base arm no weights at all."""
    from metasft.config import load_config
    for run in sorted((finished / RUNS_DIR).iterdir()):
        keep = load_config(run / CONFIG_FILE).trainer.keep_checkpoints
        kept = sorted(p.name for p in (run / CHECKPOINTS_DIR).iterdir()) if (run / CHECKPOINTS_DIR).exists() else []
        assert len(kept) <= keep, (run.name, kept)
        last = json.loads((run / MANIFEST).read_text())["budget"]["optimizer_steps"]
        if keep and last:
            assert f"step_{last:06d}" in kept, kept  # the newest: the run can be extended from where it ended
        if (run / BEST_ADAPTER_DIR).is_dir():
            assert ((run / BEST_ADAPTER_DIR / "adapter_model.safetensors").read_bytes()
                    != (run / ADAPTER_DIR / "adapter_model.safetensors").read_bytes())
    base = finished / RUNS_DIR / "base"
    assert (base / FRESH_LORA_FILE).is_file() and not (base / ADAPTER_DIR).exists()
    assert not [p for p in base.rglob("*") if p.suffix in (".safetensors", ".pt", ".bin")]


def _table_row(text: str, heading: str, *cells: str) -> list[str]:
    """The cells of the first report.md table row after `heading` that starts with `cells`."""
    start = "| " + " | ".join(cells) + " |"
    line = next(l for l in text[text.index(heading):].splitlines() if l.startswith(start))
    return [c.strip() for c in line.strip("|").split("|")]


def test_the_report_shows_acc_at_k_step_correctness_and_the_adaptation_gap(finished):
    """The design's other measures (issue 20) in the tiny experiment's report, each value recomputed here
    from the store and metrics.jsonl: acc@2 and step correctness per cell (mean over questions of the
    question's mean over seeds, n questions), FOMAML's adaptation gap per meta-training task."""
    import pandas as pd
    text = (finished / REPORT_DIR / REPORT_MD).read_text()
    assert "acc@2 [95% CI] (n)" in text and "Adaptation gap (FOMAML-SFT)" in text
    with sqlite3.connect(finished / EVAL_DIR / RESULTS_FILE) as db:
        preds = pd.read_sql_query("select * from predictions", db)
        last = pd.read_sql_query("select model, task, n_shots, seed, max(step) as step from cells "
                                 "group by model, task, n_shots, seed", db)
    final = preds.merge(last, on=["model", "task", "n_shots", "seed", "step"])
    checked = 0
    for (model, task, n_shots), cell in final.groupby(["model", "task", "n_shots"]):
        label = {"fomaml": "FOMAML-SFT", "sft_mixed": "SFT-Mixed", "base": "Base"}[model]
        row = _table_row(text, "### acc@k and step correctness", task, label, str(n_shots))
        at_k = cell.groupby("question_id")["correct_at_k"].mean()
        steps = cell.dropna(subset=["step_correctness"]).groupby("question_id")["step_correctness"].mean()
        assert row[3].startswith(f"{at_k.mean():.3f} [") and row[3].endswith(f"(n = {len(at_k)})"), row
        assert len(steps) and row[4].startswith(f"{steps.mean():.3f} [") and row[4].endswith(f"(n = {len(steps)})")
        checked += 1
    assert checked == 3 * 3 * 2  # models x eval tasks x shot levels
    gaps: dict[str, list[float]] = {}
    for line in (finished / RUNS_DIR / "fomaml" / METRICS_FILE).read_text().splitlines():
        for task, values in json.loads(line).get("tasks", {}).items():
            gaps.setdefault(task, []).append(abs(values["query_loss"] - values["support_loss_post"]))
    assert gaps
    for task, values in gaps.items():
        row = _table_row(text, "### Adaptation gap", "fomaml", task)
        assert row[2] == str(len(values)) and row[3] == f"{sum(values) / len(values):.4f}", row


def test_gsm8k_step_correctness_reaches_the_report(tmp_path, shared_data):
    """GSM8K's calculator annotations are reference steps: the tiny experiment with GSM8K (../shared/data) as
    its eval task, one arm, reports its step correctness per cell: mean, interval and n, the questions of
    the 4 evaluated whose solution has a calculator mark."""
    config = tmp_path / "gsm8k.yaml"
    config.write_text(f"include: {TINY}\narms: [base]\ndata:\n  roots: {{gsm8k: {shared_data}}}\n  eval_tasks:\n"
                      "    - {name: gsm8k, source: gsm8k, split: test, shots_split: train, size: 40, shots_max: 8,\n"
                      "       n_shots: [0, 4], test_size: 4, max_new_tokens: 16}\n")
    out = tmp_path / "exp"
    assert main(["run", str(config), "--out", str(out)]) == 0
    text = (out / REPORT_DIR / REPORT_MD).read_text()
    for n_shots in (0, 4):
        row = _table_row(text, "### acc@k and step correctness", "gsm8k", "Base", str(n_shots))
        assert re.fullmatch(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\] \(n = [1-4]\)", row[4]), row


def test_the_grid_engine_stores_what_one_group_at_a_time_stores(finished, tmp_path):
    """The tiny twin runs few-shot groups stacked (eval.cells_per_batch 6, as the default); an
    evaluation of the same runs one group at a time stores the same cells and predictions."""
    models = [f"{arm}={finished / RUNS_DIR / arm}" for arm in ("fomaml", "sft_mixed", "base")]
    assert main(["eval", TINY, "--out", str(tmp_path / "one"), "--data", str(finished / DATASET_DIR),
                 f"eval.models=[{','.join(models)}]", "eval.cells_per_batch=1"]) == 0
    stored = []
    for d in (finished / EVAL_DIR, tmp_path / "one"):
        with ResultsStore(d / RESULTS_FILE) as store:
            stored.append((store.cells(), store.predictions()))
    key = ["model", "task", "n_shots", "seed", "step"]
    for a, b in zip(*stored):
        a, b = (f.sort_values(key + (["question_id"] if "question_id" in f else [])).reset_index(drop=True)
                for f in (a, b))
        assert a.drop(columns="loss").equals(b.drop(columns="loss")) and len(a) > 0
        assert a["loss"].tolist() == pytest.approx(b["loss"].tolist(), rel=1e-5)


@pytest.mark.parametrize("overrides, message", [
    (["meta.inner_lr=1e-4"], "stage train/fomaml was run with meta.inner_lr=0.001, now 0.0001; "
                             "rerun with --force to redo it and what depends on it, or use a new --out"),
    (["eval.similarity_batches=2"], "stage similarity was run with eval.similarity_batches=4, now 2;"),
    (["arms=[base,fomaml]"], "stage train/sft_mixed is recorded here but is not part of this config; "
                             "rerun with --force to remove it"),
])
def test_a_changed_setting_stops_the_run_before_it_writes_anything(exp, capsys, overrides, message):
    before = files(exp)
    capsys.readouterr()
    assert main(["run", TINY, "--out", str(exp), *overrides]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"metasft: error: {exp}: ") and message in err
    assert files(exp) == before  # config.yaml and manifest.json included


@pytest.mark.parametrize("where", [MANIFEST, "runs/fomaml/manifest.json", "dataset/manifest.json"])
def test_a_manifest_from_an_older_layout_is_a_one_line_error(exp, capsys, where):
    """Manifests before typed ones had no `schema` (and no stage fingerprints): refused, nothing rewritten."""
    m = json.loads((exp / where).read_text())
    del m["schema"]
    (exp / where).write_text(json.dumps(m))
    before = files(exp)
    assert main(["run", TINY, "--out", str(exp)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{where}: written by an older metasft (no schema key)" in err
    assert files(exp) == before


def test_a_malformed_manifest_names_the_file_and_key(exp, capsys):
    m = manifest(exp)
    m["stages"]["eval"]["seconds"] = "fast"
    (exp / MANIFEST).write_text(json.dumps(m))
    assert main(["run", TINY, "--out", str(exp)]) == 2
    assert "manifest.json: stages.eval.seconds must be a finite number, got 'fast'" in capsys.readouterr().err


def test_a_logger_change_is_not_stale(exp):
    stages = manifest(exp)["stages"]
    before = files(exp)
    assert main(["run", TINY, "--out", str(exp), "trainer.loggers=[jsonl,tensorboard]", "trainer.save_freq=2"]) == 0
    assert manifest(exp)["stages"] == stages
    assert rewritten(before, files(exp)) == {MANIFEST, CONFIG_FILE}
    assert "tensorboard" in (exp / CONFIG_FILE).read_text()  # written once the check passed


def test_force_redoes_exactly_the_changed_stages_and_their_downstream(exp):
    stages = manifest(exp)["stages"]
    before = files(exp)
    assert main(["run", TINY, "--out", str(exp), "--force", "meta.inner_lr=1e-4"]) == 0
    now = manifest(exp)["stages"]
    redone = {s for s in STAGES if now[s] != stages[s]}
    assert redone == {"train/fomaml", "train/sft_mixed", "eval", "report"}
    assert all(now[s]["status"] == "finished" for s in STAGES)
    assert now["train/fomaml"]["fingerprint"]["keys"]["meta.inner_lr"] == 1e-4
    assert rewritten(before, files(exp)) == {MANIFEST, CONFIG_FILE, "runs/fomaml", "runs/sft_mixed",
                                             "eval/results.sqlite", "eval/eval_config.yaml", "eval/manifest.json", "eval/eval.log",
                                             "report"}
    run_cfg = (exp / RUNS_DIR / "fomaml" / CONFIG_FILE).read_text()
    assert "inner_lr: 0.0001" in run_cfg
    # and the directory is consistent again: an unchanged rerun redoes nothing
    assert main(["run", TINY, "--out", str(exp), "meta.inner_lr=1e-4"]) == 0
    assert manifest(exp)["stages"] == now


def test_a_killed_run_resumes_with_the_same_settings_only(exp, capsys):
    # killed during eval: eval recorded running, similarity and report not yet started
    m = manifest(exp)
    m["stages"]["eval"]["status"] = "running"
    del m["stages"]["eval"]["seconds"], m["stages"]["similarity"], m["stages"]["report"]
    (exp / MANIFEST).write_text(json.dumps(m))
    shutil.rmtree(exp / REPORT_DIR)
    assert main(["run", TINY, "--out", str(exp), "eval.adaptation_lr=2e-3"]) == 2
    assert "stage eval was run with eval.adaptation_lr=0.001, now 0.002" in capsys.readouterr().err
    before = files(exp)
    assert main(["run", TINY, "--out", str(exp)]) == 0
    now = manifest(exp)["stages"]
    assert all(now[s]["status"] == "finished" for s in STAGES)
    assert {s for s in STAGES if now[s] != m["stages"].get(s)} == {"eval", "similarity", "report"}
    # eval continued from its stored groups (none left), the trained arms were not touched
    assert not {r for r in rewritten(before, files(exp)) if r.startswith(("runs", "dataset"))}
    assert (exp / REPORT_DIR / REPORT_MD).is_file()


# ------------------------------------------------------------- the user's files are kept (issue 23)
def _user_files(exp) -> dict:
    """Files a user put into the experiment directory, written now; {path: bytes}."""
    placed = {exp / REPORT_DIR / "my_notes.md": b"# my notes\n", exp / REPORT_DIR / "drafts" / "v1.md": b"draft \xff\n",
              exp / RUNS_DIR / "fomaml" / "my_notes.txt": b"lr 1e-3 looked fine\n",
              exp / DATASET_DIR / "second_build" / "data" / "x.parquet": b"PAR1 not really\n"}
    for path, content in placed.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return placed


def test_report_rewrites_only_its_own_files_and_removes_its_stale_temps(exp):
    placed = _user_files(exp)
    (exp / ".report.abcd1234.tmp").mkdir()  # left by a report killed while it wrote
    (exp / REPORT_DIR / FIGURES_DIR / "old_plot.png").write_bytes(b"a figure of an earlier report")
    listed = set(json.loads((exp / REPORT_DIR / MANIFEST).read_text())["files"])
    (exp / REPORT_DIR / MANIFEST).write_text(json.dumps(
        {"kind": "report", "schema": 2, "files": sorted(listed | {"figures/old_plot.png"})}))
    assert main(["report", str(exp)]) == 0
    assert {p: p.read_bytes() for p in placed} == placed
    assert not (exp / REPORT_DIR / FIGURES_DIR / "old_plot.png").exists()  # the earlier report's, listed
    assert not (exp / ".report.abcd1234.tmp").exists()
    assert set(json.loads((exp / REPORT_DIR / MANIFEST).read_text())["files"]) == listed
    assert not [p for p in exp.parent.iterdir() if p.name != "exp"]  # nothing put aside


def test_force_removes_only_what_the_redone_stages_wrote(exp):
    placed = _user_files(exp)
    assert main(["run", TINY, "--out", str(exp), "--force", "seed=1"]) == 0  # every stage redone
    assert {p: p.read_bytes() for p in placed} == placed
    stages = manifest(exp)["stages"]
    assert all(stages[s]["status"] == "finished" for s in STAGES)
    assert json.loads((exp / DATASET_DIR / MANIFEST).read_text())["seed"] == 1
    assert json.loads((exp / RUNS_DIR / "fomaml" / MANIFEST).read_text())["seed"] == 1


def test_report_on_an_unfinished_evaluation_says_partial_k_of_n(exp, capsys):
    """Issue 23: a report while the evaluation runs (or after it was interrupted) gave full verdicts
    from some of the groups, exit 0. Refused now, or with --partial marked so in the summary."""
    m = manifest(exp)
    m["stages"]["eval"]["status"] = "running"
    (exp / MANIFEST).write_text(json.dumps(m))
    with sqlite3.connect(exp / EVAL_DIR / RESULTS_FILE) as db:
        total = db.execute("select count(*) from done").fetchone()[0]
        for table in ("done", "cells", "predictions"):
            db.execute(f"delete from {table} where model = 'sft_mixed'")
        stored = db.execute("select count(*) from done").fetchone()[0]
    db.close()
    assert 0 < stored < total
    report = (exp / REPORT_DIR / REPORT_MD).read_bytes()
    capsys.readouterr()
    assert main(["report", str(exp)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"partial: {stored} of {total} groups" in err and "--partial" in err
    assert (exp / REPORT_DIR / REPORT_MD).read_bytes() == report
    assert main(["report", str(exp), "--partial"]) == 0
    report = (exp / REPORT_DIR / REPORT_MD).read_text()
    assert f"Evaluation not finished — partial: {stored} of {total} groups stored" in report


# ------------------------------------------------------------------ processes (issue 23)
def _metasft(*args) -> list[str]:
    return [sys.executable, "-m", "metasft.cli", *map(str, args)]


ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def _wait_for(condition, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _holds_lock(out) -> bool:
    try:
        return bool((out / LOCK).read_text())
    except OSError:
        return False


def test_two_runs_on_one_out_one_proceeds_and_the_other_is_refused_naming_it(tmp_path, finished):
    """Both on a run killed after its first arms: the first trains an arm, evaluates and reports."""
    out = tmp_path / "exp"
    killed_after_training(finished, out)
    first = subprocess.Popen(_metasft("run", TINY, "--out", out), env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _holds_lock(out), "the first run to lock its directory")
        second = subprocess.run(_metasft("run", TINY, "--out", out), env=ENV, capture_output=True, text=True,
                                timeout=300)
        _, first_err = first.communicate(timeout=600)
    finally:
        first.kill()
    assert second.returncode == 2, second.stderr
    assert second.stderr.splitlines() == [
        f"metasft: error: {out} is being written by another metasft process, pid {first.pid} (metasft run {TINY} "
        f"--out {out}); wait for it to end or stop it (one writer per directory)"]
    assert first.returncode == 0, first_err[-3000:]
    # the finished run is the single run's: the same stages, one line per training step, the same results
    assert {s: r["fingerprint"] for s, r in manifest(out)["stages"].items()} == \
           {s: r["fingerprint"] for s, r in manifest(finished)["stages"].items()}
    steps = [json.loads(line)["step"] for line in (out / RUNS_DIR / "sft_mixed" / METRICS_FILE).read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps  # trained by one of them
    stored = []
    for d in (finished, out):
        with ResultsStore(d / EVAL_DIR / RESULTS_FILE) as store:
            stored.append(store.cells().sort_values(["model", "task", "n_shots", "seed", "step"]).reset_index(drop=True))
    assert stored[0].drop(columns="loss").equals(stored[1].drop(columns="loss"))
    assert stored[0]["loss"].tolist() == pytest.approx(stored[1]["loss"].tolist(), rel=1e-5)
    assert not (out / LOCK).exists()


# `metasft run` as a terminal runs it (SIGINT handled even when this test runs in a background shell,
# which starts its children with SIGINT ignored), optionally with the data build's file writes slowed
# down: the tiny build takes 0.2 s, too short to be interrupted reliably.
_RUN = """import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
if sys.argv[1] == "slow-build":
    import metasft.data.build as build
    write = build.write_examples
    build.write_examples = lambda *a, **k: (time.sleep(0.3), write(*a, **k))[1]
from metasft.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _stage_running(out, name: str) -> bool:
    try:
        return manifest(out)["stages"][name]["status"] == "running"
    except (OSError, ValueError, KeyError):
        return False


def _interrupt(out, slow: str, when, what: str) -> str:
    """Start `metasft run` on `out`, send it SIGINT once `when()` holds; return its stderr (exit 130)."""
    proc = subprocess.Popen([sys.executable, "-c", _RUN, slow, "run", TINY, "--out", str(out)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(when, what)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("metasft:")]
    assert lines == [err.rstrip().splitlines()[-1]] and lines[0].startswith("metasft: interrupted: "), err[-3000:]
    assert "rerun the same command" in lines[0]
    return lines[0]


def test_ctrl_c_in_the_data_build_training_and_evaluation_is_one_line_and_the_rerun_completes(tmp_path):
    out = tmp_path / "exp"
    _interrupt(out, "slow-build", lambda: _stage_running(out, "data"), "the data build")
    assert _stage_running(out, "data") and not (out / DATASET_DIR).exists()  # a build is written at once
    metrics = out / RUNS_DIR / "fomaml" / METRICS_FILE
    _interrupt(out, "-", lambda: _stage_running(out, "train/fomaml") and metrics.is_file() and
               len(metrics.read_text().splitlines()) >= 2, "two logged training steps")
    assert _stage_running(out, "train/fomaml") and manifest(out)["stages"]["data"]["status"] == "finished"

    def groups_stored() -> bool:
        try:
            with ResultsStore(out / EVAL_DIR / RESULTS_FILE) as store:
                return len(store.cells()) > 0
        except Exception:  # not created yet, or being written
            return False

    _interrupt(out, "-", lambda: _stage_running(out, "eval") and groups_stored(), "a stored evaluation group")
    assert _stage_running(out, "eval")
    assert main(["run", TINY, "--out", str(out)]) == 0
    assert all(r["status"] == "finished" for r in manifest(out)["stages"].values())
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == sorted(set(steps))  # the interrupted training resumed, no step twice
    assert (out / REPORT_DIR / REPORT_MD).is_file()


@pytest.mark.parametrize("lost, stage", [("eval/results.sqlite", "eval"), ("report/report.md", "report")])
def test_a_finished_stage_whose_output_was_deleted_is_not_skipped(exp, capsys, lost, stage):
    """Issue 23: with eval/results.sqlite deleted, `run` skipped every stage and printed the old verdicts."""
    for p in exp.glob(lost + "*"):
        p.unlink()
    capsys.readouterr()
    assert main(["run", TINY, "--out", str(exp)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"stage {stage} is recorded finished but {lost} is missing" in err, err
    assert main(["run", TINY, "--out", str(exp), "--force"]) == 0
    assert (exp / lost).is_file() and manifest(exp)["stages"][stage]["status"] == "finished"


def test_a_data_build_replaced_by_hand_is_not_resumed_on(exp, capsys):
    """Issue 23: dataset/ rebuilt with another seed under a finished run was used by the next run."""
    assert main(["data", "build", TINY, "--out", str(exp / DATASET_DIR), "seed=1"]) == 0
    capsys.readouterr()
    assert main(["run", TINY, "--out", str(exp)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stage data is recorded finished but the build it wrote" in err, err
    stages = manifest(exp)["stages"]
    assert main(["run", TINY, "--out", str(exp), "--force"]) == 0
    assert json.loads((exp / DATASET_DIR / MANIFEST).read_text())["seed"] == 0  # the run's own build again
    assert manifest(exp)["stages"]["data"]["wrote"] == stages["data"]["wrote"]  # the same build as before
    assert manifest(exp)["stages"]["train/fomaml"] == stages["train/fomaml"]  # trained on it: not redone


def test_training_seeds_add_runs_and_widen_the_intervals(exp):
    """The finished tiny experiment rerun with trainer.seeds [0, 1]: the first runs are kept (same
    fingerprint), one more per trained arm is trained, and the verdicts pair the two by seed and
    count them (issue 19: intervals that include the spread between training runs). Seeds [0, 1, 2]
    name and pair their runs alike (test_matrix.py, planned without training)."""
    stages = manifest(exp)["stages"]
    before = json.loads((exp / REPORT_DIR / VERDICTS_FILE).read_text())
    assert main(["run", TINY, "--out", str(exp), "--force", "trainer.seeds=[0, 1]"]) == 0
    now = manifest(exp)["stages"]
    assert now["train/fomaml"] == stages["train/fomaml"] and now["train/sft_mixed"] == stages["train/sft_mixed"]
    for run in ("fomaml_seed1", "sft_mixed_seed1"):
        assert now[f"train/{run}"]["status"] == "finished" and (exp / RUNS_DIR / run / ADAPTER_DIR).is_dir()
    after = json.loads((exp / REPORT_DIR / VERDICTS_FILE).read_text())
    c5 = next(v for v in after if v["label"] == "C5 (loss)")
    assert all(t["training_runs"] == 2 for t in c5["evidence"]["per_task"].values())
    one = next(v for v in before if v["label"] == "C5 (loss)")
    assert c5["ci_hi"] - c5["ci_lo"] != one["ci_hi"] - one["ci_lo"]
    assert "trained once" not in (exp / REPORT_DIR / REPORT_MD).read_text()
