"""The command line: config show, ls, export, compare, run's verdict summary, --version, --help.

Experiment directories are synthetic (a resolved config.yaml and a results.sqlite written through
ResultsStore), so these tests run in seconds; test_pipeline.py runs the real tiny experiment.
"""
import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import CONFIGS, REPO
from metasft import __version__
from metasft.cli import _parser, main
from metasft.config import load_config, save_config
from metasft.eval.results import PREDICTION_COLUMNS, ResultsStore, store_file
from metasft.stats.verdicts import Verdict, read_verdicts, summary_lines
from metasft.rundir import (CONFIG_FILE, DATASET_DIR, EVAL_DIR, MANIFEST, REPORT_DIR, REPORT_HTML, REPORT_MD,
                            RESULTS_FILE, RUNS_DIR, VERDICTS_FILE)

TINY = CONFIGS / "tiny" / "experiment.yaml"
COMMANDS = [["data", "build"], ["data", "stats"], ["train"], ["eval"], ["report"], ["run"], ["launch"],
            ["config", "show"], ["ls"], ["export"], ["compare"], ["plan"]]


def make_experiment(path, overrides=(), accuracy=lambda model, n_shots, seed, step: 0.5):
    """An experiment directory: config.yaml and eval/results.sqlite with models base and fomaml,
    task `algebra` at 0 and 4 shots, seeds 0 and 1, adaptation steps 0 and 2, 4 questions per cell."""
    save_config(load_config(TINY, list(overrides)), path / CONFIG_FILE)
    with ResultsStore(path / EVAL_DIR / RESULTS_FILE) as store:
        for model in ("base", "fomaml"):
            for n_shots, seeds, steps in ((0, [0], [0]), (4, [0, 1], [0, 2])):
                for seed in seeds:
                    cells, preds = [], []
                    for step in steps:
                        acc = accuracy(model, n_shots, seed, step)
                        key = {"model": model, "task": "algebra", "n_shots": n_shots, "seed": seed, "step": step}
                        correct = [q < round(acc * 4) for q in range(4)]
                        cells.append({**key, "accuracy": sum(correct) / 4, "loss": 1.0, "n": 4,
                                      "n_correct": sum(correct), "n_timed_out": 0})
                        preds += [{**key, "question_id": f"q{q}", "prompt": f"Problem {q}?\nAnswer:", "output": f"x = {q}",
                                   "extracted": str(q) if q else None, "gold": "1", "correct": c, "timed_out": False,
                                   "shot_ids": [f"s{i}" for i in range(n_shots)], "loss": 0.5 + q, "loss_tokens": 3}
                                  for q, c in enumerate(correct)]
                    store.write_group(model, "algebra", n_shots, seed, cells, preds)
    return path


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return make_experiment(tmp_path_factory.mktemp("exp") / "exp1")


def test_python_dash_m_metasft_is_the_command():
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-m", "metasft", "--version"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.startswith("metasft "), done.stderr


def test_torchs_exit_statistics_do_not_follow_the_last_line(capsys):
    """torch logs fake-tensor cache statistics at INFO on exit; after an error or Ctrl-C they came after
    the one line saying what happened (issue 23's corpus)."""
    import logging
    assert main(["config", "show", str(TINY)]) == 0
    assert not logging.getLogger("torch").isEnabledFor(logging.INFO)


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith(f"metasft {__version__}")


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_a_description_and_an_example(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([*command, "--help"])
    text = capsys.readouterr().out
    assert e.value.code == 0
    description = text.split("\n\n")[1]
    assert len(description.split()) >= 8, description
    examples = text.split("examples:\n", 1)[1]
    assert f"metasft {' '.join(command)}" in examples


def test_every_argument_has_help():
    parser = _parser()
    stack = [parser]
    while stack:
        p = stack.pop()
        for action in p._actions:
            if action.choices and isinstance(action.choices, dict):
                stack += action.choices.values()
            elif action.dest not in ("help", "command", "data_command", "config_command"):
                assert action.help, f"{p.prog}: {action.dest}"


def test_config_show_prints_the_resolved_validated_config(capsys):
    assert main(["config", "show", str(TINY), "meta.inner_lr=1e-4", "arms=[base,fomaml]"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# resolved from {TINY}")
    shown = yaml.safe_load(out)
    assert shown["meta"]["inner_lr"] == 1e-4 and shown["arms"] == ["base", "fomaml"]
    assert shown["model"]["partial_pretrain"] == "tiny-llama"  # from the include
    assert shown["eval"]["seeds"] == [0, 1] and "log_freq" in shown["trainer"]  # defaults filled in


def test_config_show_errors_are_one_line(capsys):
    assert main(["config", "show", str(TINY), "meta.inner_lrr=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "meta.inner_lrr" in err


def test_ls_lists_configs_sources_and_tasks(capsys):
    assert main(["ls", "--configs"]) == 0
    out = capsys.readouterr().out
    assert "configs/tiny/experiment.yaml" in out and "metasft run configs/tiny/experiment.yaml" in out
    assert "math " in out and "MATH (Hendrycks" in out and "embedded" in out
    # descriptions whole, wrapped: the opening comment's paragraph and the source's first paragraph
    flat = " ".join(out.split())
    assert ("(statistics and chemistry held out as unseen tasks), CHAMP as the competition task, offline. Sized to "
            "finish within 20 minutes") in flat and "a 135M model is not expected to solve competition problems anyway." in flat
    assert "with typed answers (integer, float, bool, list, option)." in flat and "…" not in out
    assert max(len(line) for line in out.splitlines() if not line.lstrip().startswith("metasft ")) <= 100
    # a config: its tasks, not the catalogue
    assert main(["ls", str(CONFIGS / "tiny" / "data" / "embedded.yaml")]) == 0
    out = capsys.readouterr().out
    assert "configs (" not in out and "sources (" not in out and out.startswith("tasks of ")
    rows = [line.split() for line in out.split("tasks of ", 1)[1].splitlines()[3:]]
    assert [r[:3] for r in rows] == [["meta", "algebra", "embedded"], ["meta", "geometry", "embedded"],
                                     ["meta", "number_theory", "embedded"], ["meta", "physics", "embedded"],
                                     ["eval", "hard_algebra", "embedded"], ["eval", "statistics", "embedded"],
                                     ["eval", "chemistry", "embedded"]]
    assert rows[-1][-1] == "unseen,cross_domain"


def test_ls_lists_the_experiment_directories_under_a_path(tmp_path, capsys, monkeypatch):
    """`ls DIR`: every directory a command wrote at or below DIR (not the parts inside one) with its
    config's name, the stages done and the primary verdicts; `ls EXP_DIR` adds its stages and verdicts;
    `ls` alone looks in runs/."""
    from metasft.manifests import (ExperimentManifest, Fingerprint, Provenance, StageRecord, TrainManifest,
                                   write_manifest)
    fp, code = Fingerprint("0" * 64, {}), Provenance("0123456789abcdef", {})
    done = make_experiment(tmp_path / RUNS_DIR / "exp1", ["name=sweep_k3"])
    write_manifest(done, ExperimentManifest(code, stages={
        "report": StageRecord("finished", fp, 3.0), "eval": StageRecord("finished", fp, 9.0),
        "train/fomaml": StageRecord("finished", fp, 60.0), "data": StageRecord("finished", fp, 1.0)}))
    write_manifest(done / RUNS_DIR / "fomaml", TrainManifest(status="finished", arm="fomaml", name="fomaml", seed=0,
                                                           data_dir="dataset", data_files={}, world_size=1,
                                                           fsdp=False, code=code))
    verdicts = [Verdict("H1", "accuracy", "...", "inconclusive", role="primary", estimate=0.01, ci_lo=-0.05, ci_hi=0.07),
                Verdict("H2", "accuracy", "...", "not met", role="primary"),
                Verdict("C2", "accuracy", "...", "met"), Verdict("C5", "accuracy", "...", "inconclusive"),
                Verdict("H1", "loss", "...", "met", role="primary")]
    (done / REPORT_DIR).mkdir()
    (done / REPORT_DIR / VERDICTS_FILE).write_text(json.dumps([v.to_dict() for v in verdicts]))
    half = make_experiment(tmp_path / RUNS_DIR / "sweep" / "exp2")
    write_manifest(half, ExperimentManifest(code, stages={"data": StageRecord("finished", fp, 1.0),
                                                          "train/fomaml": StageRecord("running", fp)}))
    (tmp_path / RUNS_DIR / "notes").mkdir()  # not an output directory
    assert main(["ls", str(tmp_path / RUNS_DIR)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["directory", "kind", "config", "done", "verdicts", "(accuracy)"]
    rows = {line.split()[0]: line for line in out[2:]}
    assert list(rows) == ["exp1", "sweep/exp2"]  # not exp1/runs/fomaml: a part of exp1
    assert rows["exp1"].split()[1:3] == ["experiment", "sweep_k3"]
    assert "4 of 4 stages finished" in rows["exp1"]
    assert "H1 inconclusive, H2 not met; exploratory: 1 of 2 met" in rows["exp1"]
    assert "1 of 2 stages finished (train/fomaml running)" in rows["sweep/exp2"] and "no report yet" in rows["sweep/exp2"]
    # one experiment directory: its row, its stages in pipeline order, every verdict
    assert main(["ls", str(done)]) == 0
    out = capsys.readouterr().out
    stages = out.split("stages:\n", 1)[1].split("verdicts")[0].split()
    assert [w for w in stages if "/" in w or w in ("data", "eval", "report")] == ["data", "train/fomaml", "eval", "report"]
    assert "H1 (loss)" in out and "[95% CI -0.050, +0.070]" in out
    # a training run directory on its own
    assert main(["ls", str(done / RUNS_DIR / "fomaml")]) == 0
    assert "training run  -       arm fomaml, finished" in capsys.readouterr().out
    # no argument: runs/ of the working directory
    monkeypatch.chdir(tmp_path)
    assert main(["ls"]) == 0
    assert "sweep/exp2" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path / RUNS_DIR / "notes")
    assert main(["ls"]) == 0
    assert "no experiment directories" in capsys.readouterr().out


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_export_writes_every_stored_prediction(experiment, tmp_path, suffix, capsys):
    out = tmp_path / f"preds{suffix}"
    assert main(["export", str(experiment), "--predictions", str(out)]) == 0
    with ResultsStore(experiment / EVAL_DIR / RESULTS_FILE) as store:
        stored = store.predictions()
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        with open(out, newline="") as f:
            rows = list(csv.DictReader(f))
    assert len(rows) == len(stored) == 2 * (4 + 2 * 2 * 4) and f"wrote {len(rows)} predictions" in capsys.readouterr().out
    assert list(rows[0]) == list(PREDICTION_COLUMNS)
    keys = {(r["model"], int(r["n_shots"]), int(r["seed"]), int(r["step"]), r["question_id"]) for r in rows}
    assert len(keys) == len(rows)
    row = next(r for r in rows if r["model"] == "fomaml" and int(r["n_shots"]) == 4 and r["question_id"] == "q1"
               and int(r["step"]) == 2 and int(r["seed"]) == 1)
    assert row["prompt"] == "Problem 1?\nAnswer:" and row["output"] == "x = 1" and row["extracted"] == "1"
    assert row["gold"] == "1" and float(row["loss"]) == 1.5
    shots = row["shot_ids"] if suffix == ".jsonl" else json.loads(row["shot_ids"])
    assert shots == ["s0", "s1", "s2", "s3"]
    if suffix == ".jsonl":
        assert row["correct"] is True and rows[0]["extracted"] is None  # q0: nothing extracted


def test_export_errors_are_one_line(experiment, tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--predictions", str(tmp_path / "p.jsonl")]) == 2
    assert main(["export", str(experiment), "--predictions", str(tmp_path / "p.txt")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and "no results.sqlite" in errors[0] and "unknown format '.txt'" in errors[1]


def shard(experiment, dest, workers=2):
    """A copy of `experiment` whose results are one store per worker (results.shard-<k>.sqlite), as
    `metasft launch` or torchrun ranks write them."""
    shutil.copytree(experiment, dest)
    with ResultsStore(dest / EVAL_DIR / RESULTS_FILE) as whole:
        done, cells, preds = whole.done(), whole.cells(), whole.predictions()
    (dest / EVAL_DIR / RESULTS_FILE).unlink()
    for i, key in enumerate(done[["model", "task", "n_shots", "seed"]].itertuples(index=False)):
        mine = lambda f: f[(f["model"] == key.model) & (f["n_shots"] == key.n_shots) & (f["seed"] == key.seed)]
        with ResultsStore(dest / EVAL_DIR / store_file(i % workers, workers)) as store:
            store.write_group(*key, mine(cells).to_dict("records"), mine(preds).to_dict("records"))
    return dest


def test_export_compare_and_report_read_the_shards_as_one(tmp_path, capsys):
    from metasft.compare import load_experiment
    whole = make_experiment(tmp_path / "whole", accuracy=lambda m, n, seed, step: 0.25 * (1 + step // 2 + seed))
    sharded = shard(whole, tmp_path / "sharded")
    assert sorted(p.name for p in (sharded / EVAL_DIR).glob("*.sqlite")) == ["results.shard-0.sqlite",
                                                                          "results.shard-1.sqlite"]
    for source in (whole, sharded):
        assert main(["export", str(source), "--predictions", str(tmp_path / f"{source.name}.jsonl")]) == 0
    assert f"from 2 stores in {sharded / EVAL_DIR}" in capsys.readouterr().out
    assert (tmp_path / "sharded.jsonl").read_text() == (tmp_path / "whole.jsonl").read_text()
    final = load_experiment(sharded, "s").final
    pd.testing.assert_frame_equal(final, load_experiment(whole, "w").final)
    assert sorted(final["accuracy"]) == [0.25, 0.25, 0.625, 0.625]
    assert main(["compare", str(whole), str(sharded), "--plot", str(tmp_path / "both.png")]) == 0
    # a group in two stores (a shard copied in from another evaluation) is refused, naming both files
    shutil.copy(sharded / EVAL_DIR / "results.shard-0.sqlite", sharded / EVAL_DIR / "results.shard-2.sqlite")
    for argv in (["export", str(sharded), "--predictions", str(tmp_path / "dup.jsonl")],
                 ["compare", str(sharded), "--plot", str(tmp_path / "dup.png")], ["report", str(sharded)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is stored twice, in " in err and "results.shard-2.sqlite" in err, err
    assert not (tmp_path / "dup.jsonl").exists() and not (sharded / REPORT_DIR).exists()


def test_compare_names_differing_keys_and_tabulates_final_accuracy(tmp_path, capsys):
    a = make_experiment(tmp_path / "sweep" / "exp1", ["meta.inner_lr=1e-4"])
    # exp3: another inner lr and K; fomaml's accuracy grows with the step and differs by seed
    b = make_experiment(tmp_path / "sweep" / "exp3", ["meta.inner_lr=1e-3", "meta.num_inner_steps=10"],
                        accuracy=lambda m, n, seed, step: 0.25 + 0.25 * (step == 2) + 0.25 * (seed == 1 and m == "fomaml"))
    plot = tmp_path / "cmp.png"
    assert main(["compare", str(a), str(b), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    diff = out.split("config keys that differ (2; all other keys are equal):\n", 1)[1].split("\n\n")[0].splitlines()
    assert diff[0].split() == ["key", "exp1", "exp3"]
    assert [line.split() for line in diff[2:]] == [["meta.inner_lr", "0.0001", "0.001"], ["meta.num_inner_steps", "2", "10"]]
    table = out.split("columns: experiment model):\n", 1)[1].splitlines()
    # the report's display names, in its model order (FOMAML-SFT first)
    assert [c.strip() for c in table[0].split("  ") if c.strip()] == [
        "task", "n_shots", "exp1 FOMAML-SFT", "exp1 Base", "exp3 FOMAML-SFT", "exp3 Base"]
    cells = {tuple(line.split()[:2]): line.split("  ")[2:] for line in table[2:4]}
    means = {k: [c.split()[0] for c in v if c.strip()] for k, v in cells.items()}
    assert means[("algebra", "0")] == ["0.500", "0.500", "0.250", "0.250"]
    # 4 shots, final step 2: base 0.5 on both seeds; fomaml 0.5 (seed 0) and 0.75 (seed 1) -> 0.625
    assert means[("algebra", "4")] == ["0.500", "0.500", "0.625", "0.500"]
    # each mean with its 95% interval over questions, which holds it
    for row in cells.values():
        for c in (c.strip() for c in row if c.strip()):
            mean, lo, hi = (float(x) for x in c.replace("[", "").replace("]", "").replace(",", "").split())
            assert lo <= mean <= hi and lo < hi, c
    assert "  exp3 FOMAML-SFT: 4 q × 2 seeds" in out.splitlines()
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plot: {plot}" in out


def test_compare_figure_draws_each_arm_in_its_report_style(tmp_path):
    """compare's figure: every model in its report colour and marker, named by its display name with n;
    two experiments with equal curves stay apart (x offsets, line style, marker fill); error bars are
    the intervals over questions."""
    import matplotlib.colors
    from metasft.compare import figure, load_experiments
    from metasft.report.plots import arm_style
    a = make_experiment(tmp_path / "a" / "exp1")
    b = make_experiment(tmp_path / "b" / "exp1")  # the same results: the curves coincide
    fig = figure(load_experiments([a, b]))
    lines = {line.get_label(): line for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")}
    assert sorted(lines) == sorted(f"{e}/exp1 {name} (n = 4 q × 2 seeds)" for e in ("a", "b")
                                   for name in ("FOMAML-SFT", "Base"))
    for name, line in lines.items():
        style = arm_style("fomaml" if "FOMAML" in name else "base")
        assert matplotlib.colors.to_hex(line.get_color()) == style.color.lower()
        assert line.get_marker() == style.marker
    xs = [tuple(line.get_xdata()) for line in lines.values()]
    assert len(set(xs)) == 4  # equal values, four distinct positions
    # experiments: a line style and a marker fill each
    assert {(str(line.get_linestyle()), str(line.get_markerfacecolor())) for name, line in lines.items()
            if "FOMAML" in name} == {("-", "#D55E00"), ("--", "white")}
    assert [c for c in fig.axes[0].containers]  # error bars drawn
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", "4"]


def test_compare_refuses_a_directory_given_twice(experiment, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(experiment.parent)
    assert main(["compare", str(experiment), experiment.name, "--plot", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is the same directory as" in err and "give each directory once" in err
    assert not (tmp_path / "x.png").exists()
    # a directory below the working directory is shown by its relative path
    assert main(["compare", experiment.name, "--plot", str(tmp_path / "x.png")]) == 0
    out = capsys.readouterr().out
    assert f"  exp1: exp1\n" in out and str(experiment.parent) not in out.split("plot:")[0]


def test_compare_plot_of_a_format_matplotlib_cannot_write_is_one_line(experiment, tmp_path, capsys):
    """Issue 23's corpus: --plot c.txt was a ValueError traceback from matplotlib, after the table."""
    assert main(["compare", str(experiment), "--plot", str(tmp_path / "c.txt")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"metasft: error: --plot {tmp_path / 'c.txt'}: give a file ending in .png, .svg, .pdf"
    assert list(tmp_path.iterdir()) == []


def test_compare_of_a_directory_without_results_is_one_line(experiment, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(experiment), str(tmp_path / "empty"), "--plot", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "empty: no config.yaml" in err


def test_run_ends_with_the_verdict_summary(tmp_path, monkeypatch, capsys):
    verdicts = [Verdict("H1", "accuracy", "...", "inconclusive", quantity="accuracy difference",
                        estimate=0.0125, ci_lo=-0.05, ci_hi=0.071, role="primary", alpha=0.05 / 3),
                Verdict("C5", "accuracy", "...", "not measurable"),
                Verdict("C2", "loss", "...", "met", quantity="loss advantage", estimate=0.2, ci_lo=0.1, ci_hi=math.inf)]

    def fake_run(cfg, out, force=False, overwrite=False):
        (out / REPORT_DIR).mkdir(parents=True)
        (out / REPORT_DIR / VERDICTS_FILE).write_text(json.dumps([v.to_dict() for v in verdicts]))
        return out

    monkeypatch.setattr("metasft.pipeline.run_experiment", fake_run)
    assert main(["run", str(TINY), "--out", str(tmp_path / "exp")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"report: {tmp_path / 'exp' / REPORT_DIR / REPORT_HTML}"  # the page to open, not report.md
    assert re.fullmatch(r"total wall time: \d+ s", lines[1])  # the fake run takes seconds
    lines = lines[1:]
    assert lines[1].startswith("verdicts")
    assert lines[2].split()[:4] == ["H1", "primary", "inconclusive", "+0.013"]
    assert "[98.33% CI -0.050, +0.071]" in lines[2]  # a primary claim's Bonferroni level
    assert lines[3].split()[:5] == ["C5", "exploratory", "not", "measurable", "-"]
    assert lines[4].startswith("  C2 (loss)") and " met " in lines[4]
    assert read_verdicts(tmp_path / "exp" / REPORT_DIR / VERDICTS_FILE)[2].ci_hi == math.inf
    assert summary_lines([]) == []


def test_data_stats_reads_an_experiment_directory_and_rejects_other_manifests(tmp_path, capsys):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / MANIFEST).write_text(json.dumps({"stages": {}}))
    assert main(["data", "stats", str(tmp_path / "exp")]) == 2
    assert "expected 'data'" in capsys.readouterr().err
    assert main(["data", "build", str(CONFIGS / "tiny" / "data" / "embedded.yaml"), "--out",
                 str(tmp_path / "exp" / DATASET_DIR)]) == 0
    built = capsys.readouterr().out
    assert main(["data", "stats", str(tmp_path / "exp")]) == 0
    assert capsys.readouterr().out == built
