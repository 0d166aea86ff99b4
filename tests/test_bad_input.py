"""Bad input, as a new user would give it, to every command: one line on stderr, exit code 2, and the
directories involved exactly as they were (nothing lost, nothing half-written). Issue 13."""
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys

import pytest

from conftest import CONFIGS, REPO
from metasft.cli import main
from metasft.config import load_config
from metasft.data.build import build_data
from metasft.train.run import train
from metasft.rundir import ADAPTER_DIR, CHECKPOINTS_DIR, CONFIG_FILE, EVAL_CONFIG, EVAL_DIR, MANIFEST, RESULTS_FILE

DATA_CFG = CONFIGS / "tiny" / "data" / "embedded.yaml"
FOMAML = CONFIGS / "tiny" / "fomaml_sft.yaml"
SFT = CONFIGS / "tiny" / "baseline_sft.yaml"
EXP = CONFIGS / "tiny" / "experiment.yaml"


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A built data directory and a finished tiny FOMAML run on it (3 steps), shared by every case."""
    root = tmp_path_factory.mktemp("shared")
    build_data(load_config(FOMAML), root / "data")
    train(load_config(FOMAML, [f"data.dir={root / 'data'}", "trainer.total_steps=3"]), root / "run")
    return root


def snapshot(*roots) -> dict:
    """Every file under `roots` (hidden ones included) with its content hash; directories as such.
    SQLite's -wal / -shm side files are left out: a read-only reader of a WAL store may create them."""
    out = {}
    for root in roots:
        if not root.exists():
            continue
        for p in sorted(root.rglob("*")):
            if p.name.endswith(("-wal", "-shm")):
                continue
            rel = str(p)
            out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _math_root(ws, line: bytes) -> str:
    (ws / "root" / "math").mkdir(parents=True)
    (ws / "root" / "math" / "train.jsonl").write_bytes(line)
    return str(ws / "root")


MATH_TASK = ["data.tasks=[{name: alg, source: math, subject: algebra}]", "data.eval_tasks=[]"]


def _file(ws, name="f", content=b"user's file\n"):
    (ws / name).write_bytes(content)
    return str(ws / name)


def _older_layout(ws, data):
    """A copy of the built data directory whose manifest lacks `schema`, as before typed manifests."""
    shutil.copytree(data, ws / "old")
    manifest = json.loads((ws / "old" / MANIFEST).read_text())
    del manifest["schema"]
    (ws / "old" / MANIFEST).write_text(json.dumps(manifest))
    return str(ws / "old")


def _foreign(ws, name="d"):
    (ws / name).mkdir()
    (ws / name / "notes.txt").write_text("mine")
    return str(ws / name)


def _cut_manifest(ws):
    """A run directory whose manifest.json was cut short (a full disk, a bad copy)."""
    (ws / "exp").mkdir()
    (ws / "exp" / MANIFEST).write_bytes(b'{"kind": "ru')
    return str(ws / "exp")


def _readonly_parent(ws):
    (ws / "ro").mkdir()
    os.chmod(ws / "ro", 0o555)
    return str(ws / "ro" / "out")


def _garbage_results(ws, content: bytes):
    (ws / "exp" / EVAL_DIR).mkdir(parents=True)
    (ws / "exp" / EVAL_DIR / RESULTS_FILE).write_bytes(content)
    return str(ws / "exp")


def _empty_results(ws):
    from metasft.eval.results import ResultsStore
    ResultsStore(ws / "exp" / EVAL_DIR / RESULTS_FILE).close()
    return str(ws / "exp")


def _truncated_results(ws):
    path = ws / "exp" / EVAL_DIR / RESULTS_FILE
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.execute("create table cells (x)")
        db.executemany("insert into cells values (?)", [("y" * 500,)] * 50)
    db.close()
    path.write_bytes(path.read_bytes()[:3000])
    return str(ws / "exp")


def _corrupt_checkpoints(ws, run):
    copy = ws / "run"
    shutil.copytree(run, copy)
    for ckpt in (copy / CHECKPOINTS_DIR).iterdir():
        (ckpt / "adapter.safetensors").write_bytes(b"garbage")
    return str(copy)


def _without_config(ws, run):
    shutil.copytree(run, ws / "run")
    (ws / "run" / CONFIG_FILE).unlink()
    return str(ws / "run")


def _not_utf8(ws):
    (ws / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    return str(ws / "latin1.yaml")


# (id, argv(ws, shared) -> list[str], expected text in the error)
D, R = "data", "run"
CASES = [
    # ---- data build
    ("build-out-is-a-file", lambda ws, s: ["data", "build", str(DATA_CFG), "--out", _file(ws)], "is a file"),
    ("build-out-foreign-dir", lambda ws, s: ["data", "build", str(DATA_CFG), "--out", _foreign(ws)], "did not write"),
    ("build-out-is-a-train-run", lambda ws, s: ["data", "build", str(DATA_CFG), "--out", str(s / R)], "train directory"),
    ("build-config-missing", lambda ws, s: ["data", "build", str(ws / "nope.yaml"), "--out", str(ws / "o")], "does not exist"),
    ("build-config-not-utf8", lambda ws, s: ["data", "build", _not_utf8(ws), "--out", str(ws / "o")], "not UTF-8"),
    ("build-config-bad-yaml", lambda ws, s: ["data", "build", _file(ws, "b.yaml", b"a: [1\n"), "--out", str(ws / "o")], "not valid YAML"),
    ("build-config-duplicate-key", lambda ws, s: ["data", "build", _file(ws, "b.yaml", b"seed: 1\nseed: 2\n"), "--out", str(ws / "o")],
     "key 'seed' is given twice"),
    ("build-config-nested-duplicate-key", lambda ws, s: ["data", "build", _file(ws, "b.yaml", b"data:\n  val_ratio: 0.1\n  val_ratio: 0.2\n"),
                                                         "--out", str(ws / "o")], "key 'val_ratio' is given twice"),
    ("build-config-int-key", lambda ws, s: ["data", "build", _file(ws, "b.yaml", b"seed: 1\n1: x\n"), "--out", str(ws / "o")],
     "a key must be a string, got int 1"),
    ("build-config-recursive-alias", lambda ws, s: ["data", "build", _file(ws, "b.yaml", b"arms: &a [base, *a]\n"), "--out", str(ws / "o")],
     "recursive"),
    ("build-config-include-not-a-name", lambda ws, s: ["data", "build", _file(ws, "b.yaml", b"include: {a: 1}\n"), "--out", str(ws / "o")],
     "include must be a file name or a list of them"),
    ("build-config-include-list-of-ints", lambda ws, s: ["data", "build", _file(ws, "b.yaml", b"include: [1, 2]\n"), "--out", str(ws / "o")],
     "include must be a file name or a list of them"),
    ("build-override-not-yaml", lambda ws, s: ["data", "build", str(DATA_CFG), "--out", str(ws / "o"), "eval.seeds=[0"], "not valid YAML"),
    ("build-unknown-key", lambda ws, s: ["data", "build", str(DATA_CFG), "--out", str(ws / "o"), "data.nope=1"], "data.nope"),
    ("build-no-tasks", lambda ws, s: ["data", "build", str(DATA_CFG), "--out", str(ws / "o"), "data.tasks=[]"], "data.tasks is empty"),
    ("build-test-size-0", lambda ws, s: ["data", "build", str(DATA_CFG), "--out", str(ws / "o"), "data.eval_tasks.0.test_size=0"], "test_size"),
    ("build-n-shots-repeat", lambda ws, s: ["data", "build", str(DATA_CFG), "--out", str(ws / "o"), "data.eval_tasks.0.n_shots=[0,4,4]"], "n_shots"),
    ("build-val-ratio", lambda ws, s: ["data", "build", str(DATA_CFG), "--out", str(ws / "o"), "data.val_ratio=2"], "data.val_ratio"),
    ("build-seed-beyond-numpy", lambda ws, s: ["data", "build", str(DATA_CFG), "--out", str(ws / "o"), "seed=99999999999999999999"],
     "seed must be in [0, 4294967295]"),
    ("build-eval-seed-negative", lambda ws, s: ["data", "build", str(DATA_CFG), "--out", str(ws / "o"), "eval.seeds=[0, -1]"],
     "eval.seeds.1 must be in [0, 4294967295]"),
    ("run-total-steps-beyond-int", lambda ws, s: ["run", str(EXP), "--out", str(ws / "o"), "trainer.total_steps=10000000000000000000000"],
     "trainer.total_steps=10000000000000000000000 is too large"),
    ("build-task-name-is-a-path", lambda ws, s: ["data", "build", str(DATA_CFG), "--out", str(ws / "o"),
                                                 "data.tasks.0.name=../../../../escaped"], "a name becomes a file name"),
    ("build-overwrite-reads-from-out", lambda ws, s: ["data", "build", str(DATA_CFG), "--out", _foreign(ws), "--overwrite",
                                                      f"data.sources=[{{name: mine, path: {ws / 'd' / 'notes.txt'}}}]",
                                                      "data.tasks=[{name: t, source: mine}]", "data.eval_tasks=[]"],
     "notes.txt"),
    ("build-seed-not-int", lambda ws, s: ["data", "build", str(DATA_CFG), "--out", str(ws / "o"), "seed=abc"], "seed"),
    ("build-null-solution", lambda ws, s: ["data", "build", str(DATA_CFG), "--out", str(ws / "o"), *MATH_TASK,
     "data_root=" + _math_root(ws, b'{"problem": "1+1", "solution": null, "level": "Level 1", "type": "Algebra", "unique_id": "a"}\n')],
     "'solution' must be a string"),
    ("build-jsonl-not-utf8", lambda ws, s: ["data", "build", str(DATA_CFG), "--out", str(ws / "o"), *MATH_TASK,
     "data_root=" + _math_root(ws, b'{"problem": "caf\xe9"}\n')], "train.jsonl:1: not UTF-8"),
    ("build-jsonl-empty", lambda ws, s: ["data", "build", str(DATA_CFG), "--out", str(ws / "o"), *MATH_TASK,
     "data_root=" + _math_root(ws, b"")], "no records at all"),
    ("build-out-new-under-missing-parents", lambda ws, s: ["data", "build", str(DATA_CFG), "--out", str(ws / "a" / "b" / "o"),
     "data.eval_tasks.0.n_shots=[0,100000]"], "n_shots 100000"),
    pytest.param("build-readonly-parent", lambda ws, s: ["data", "build", str(DATA_CFG), "--out", _readonly_parent(ws)], "ermission",
                 marks=pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")),
    # ---- data stats
    ("stats-missing-dir", lambda ws, s: ["data", "stats", str(ws / "nope")], "not found"),
    ("stats-on-a-run-dir", lambda ws, s: ["data", "stats", str(s / R)], "expected 'data'"),
    ("stats-garbage-manifest", lambda ws, s: ["data", "stats", str(ws)] if _file(ws, MANIFEST, b"{garbage") else [],
     "not valid JSON"),
    # ---- train
    *[(f"train-{key}={value}", lambda ws, s, kv=f"{key}={value}": ["train", str(FOMAML), "--out", str(ws / "o"), f"data.dir={s / D}", kv],
       key.split(".")[-1])
      for key, value in [("trainer.total_steps", 0), ("trainer.total_steps", -1), ("trainer.save_freq", -1),
                         ("trainer.micro_batch_size", 0), ("model.lora_rank", 0), ("meta.num_inner_steps", 0),
                         ("meta.outer_lr", "nan"), ("trainer.lr", "inf"), ("optim.betas", "[0.9,1.5]"),
                         ("trainer.keep_checkpoints", -1)]],
    ("train-model-path-missing", lambda ws, s: ["train", str(FOMAML), "--out", str(ws / "o"), f"data.dir={s / D}",
     f"model.partial_pretrain={ws / 'no_model'}"], "model.partial_pretrain"),
    ("train-out-is-a-file", lambda ws, s: ["train", str(FOMAML), "--out", _file(ws), f"data.dir={s / D}"], "is a file"),
    ("train-out-foreign-dir", lambda ws, s: ["train", str(FOMAML), "--out", _foreign(ws), f"data.dir={s / D}"], "did not write"),
    ("train-out-is-a-data-dir", lambda ws, s: ["train", str(FOMAML), "--out", str(s / D), f"data.dir={s / D}"], "data directory"),
    ("train-data-dir-not-built", lambda ws, s: ["train", str(FOMAML), "--out", str(ws / "o"), f"data.dir={ws}"], "no manifest.json"),
    ("train-data-dir-older-layout", lambda ws, s: ["train", str(FOMAML), "--out", str(ws / "o"),
     f"data.dir={_older_layout(ws, s / D)}"], "written by an older metasft"),
    ("train-unknown-task", lambda ws, s: ["train", str(SFT), "--out", str(ws / "o"), f"data.dir={s / D}", "arm=sft_task",
     "data.sft_task=nosuchtask"], "data.sft_task='nosuchtask' is not an eval task"),
    ("train-existing-run-without-resume", lambda ws, s: ["train", str(FOMAML), "--out", str(s / R), f"data.dir={s / D}",
     "trainer.total_steps=3"], "--resume"),
    ("train-resume-changed-seed", lambda ws, s: ["train", str(FOMAML), "--out", str(s / R), "--resume", f"data.dir={s / D}",
     "trainer.total_steps=3", "seed=7"], "seed: 0 -> 7"),
    ("train-resume-changed-lr", lambda ws, s: ["train", str(FOMAML), "--out", str(s / R), "--resume", f"data.dir={s / D}",
     "trainer.total_steps=3", "meta.outer_lr=0.05"], "meta.outer_lr"),
    ("train-resume-other-arm", lambda ws, s: ["train", str(SFT), "--out", str(s / R), "--resume", f"data.dir={s / D}",
     "trainer.total_steps=3"], "arm: 'fomaml' -> 'sft_mixed'"),
    ("train-resume-other-rank", lambda ws, s: ["train", str(FOMAML), "--out", str(s / R), "--resume", f"data.dir={s / D}",
     "trainer.total_steps=3", "model.lora_rank=8"], "model.lora_rank"),
    ("train-resume-config-yaml-deleted", lambda ws, s: ["train", str(FOMAML), "--out", _without_config(ws, s / R), "--resume",
                                                         f"data.dir={s / D}", "trainer.total_steps=3", "trainer.lr=0.5"],
     "config.yaml is missing"),
    ("train-resume-shorter", lambda ws, s: ["train", str(FOMAML), "--out", str(s / R), "--resume", f"data.dir={s / D}",
     "trainer.total_steps=2"], "can only grow"),
    ("train-resume-all-checkpoints-corrupt", lambda ws, s: ["train", str(FOMAML), "--out", _corrupt_checkpoints(ws, s / R),
     "--resume", f"data.dir={s / D}", "trainer.total_steps=4"], "no usable checkpoint"),
    ("train-sft-pool-too-small", lambda ws, s: ["train", str(SFT), "--out", str(ws / "o"), f"data.dir={s / D}",
     "data.total_samples=100000"], "100000 distinct examples"),
    # ---- eval
    ("eval-no-models", lambda ws, s: ["eval", str(EXP), "--out", str(ws / "o"), "--data", str(s / D)], "eval.models is empty"),
    ("eval-seeds-empty", lambda ws, s: ["eval", str(EXP), "--out", str(ws / "o"), "--data", str(s / D), f"eval.models=[{s / R}]",
     "eval.seeds=[]"], "eval.seeds"),
    ("eval-seeds-repeat", lambda ws, s: ["eval", str(EXP), "--out", str(ws / "o"), "--data", str(s / D), f"eval.models=[{s / R}]",
     "eval.seeds=[0,0]"], "eval.seeds"),
    ("eval-other-lora-rank", lambda ws, s: ["eval", str(EXP), "--out", str(ws / "o"), "--data", str(s / D), f"eval.models=[{s / R}]",
     "model.lora_rank=8"], "model.lora_rank=8 but the adapter has 4"),
    ("eval-model-missing", lambda ws, s: ["eval", str(EXP), "--out", str(ws / "o"), "--data", str(s / D),
     f"eval.models=[{ws / 'nope'}]"], "neither 'base'"),
    ("eval-record-steps-beyond", lambda ws, s: ["eval", str(EXP), "--out", str(ws / "o"), "--data", str(s / D), "eval.models=[base]",
     "eval.record_steps=[5]"], "eval.record_steps"),
    ("eval-adaptation-lr-0", lambda ws, s: ["eval", str(EXP), "--out", str(ws / "o"), "--data", str(s / D), "eval.models=[base]",
     "eval.adaptation_lr=0"], "eval.adaptation_lr"),
    ("eval-data-not-built", lambda ws, s: ["eval", str(EXP), "--out", str(ws / "o"), "--data", str(ws), "eval.models=[base]"],
     "not a built data directory"),
    ("eval-data-older-layout", lambda ws, s: ["eval", str(EXP), "--out", str(ws / "o"), "--data", _older_layout(ws, s / D),
     "eval.models=[base]"], "written by an older metasft"),
    ("eval-out-foreign-dir", lambda ws, s: ["eval", str(EXP), "--out", _foreign(ws), "--data", str(s / D), "eval.models=[base]"],
     "did not write"),
    ("eval-out-is-a-train-run", lambda ws, s: ["eval", str(EXP), "--out", str(s / R), "--data", str(s / D), "eval.models=[base]"],
     "train directory"),
    # ---- report
    ("report-missing-dir", lambda ws, s: ["report", str(ws / "nope")], "no such directory"),
    ("report-empty-dir", lambda ws, s: ["report", str(ws)], "no results to report"),
    ("report-garbage-results", lambda ws, s: ["report", _garbage_results(ws, b"not a database" * 100)], "not readable"),
    ("report-zero-byte-results", lambda ws, s: ["report", _garbage_results(ws, b"")], "not readable"),
    ("report-empty-results", lambda ws, s: ["report", _empty_results(ws)], "table cells is empty"),
    ("report-truncated-results", lambda ws, s: ["report", _truncated_results(ws)], RESULTS_FILE),
    # ---- run: every stage's settings are checked before the first stage starts
    ("plan-no-tasks", lambda ws, s: ["plan", str(EXP), "data.tasks=[]"], "data.tasks is empty"),
    ("plan-no-eval-tasks", lambda ws, s: ["plan", str(EXP), "data.eval_tasks=[]"], "data.eval_tasks is empty"),
    ("plan-zero-throughput", lambda ws, s: ["plan", str(EXP), "--throughput", _file(ws, "t.yaml", b"flops: 0\n")],
     "flops must be > 0, got 0"),
    ("plan-negative-overhead", lambda ws, s: ["plan", str(EXP), "--throughput", _file(ws, "t.yaml", b"stage_s: {eval: -1}\n")],
     "stage_s.eval must be >= 0, got -1"),
    ("export-over-a-users-file", lambda ws, s: ["export", str(s / R), "--predictions", _file(ws, "p.jsonl")],
     "exists; pass --overwrite"),
    ("compare-plot-over-a-users-file", lambda ws, s: ["compare", str(s / R), "--plot", _file(ws, "c.png")],
     "exists; pass --overwrite"),
    ("run-eval-seeds-empty", lambda ws, s: ["run", str(EXP), "--out", str(ws / "o"), "eval.seeds=[]"], "eval.seeds"),
    ("run-total-steps-0", lambda ws, s: ["run", str(EXP), "--out", str(ws / "o"), "trainer.total_steps=0"], "total_steps"),
    ("run-model-path-missing", lambda ws, s: ["run", str(EXP), "--out", str(ws / "o"), f"model.partial_pretrain={ws / 'm'}"],
     "model.partial_pretrain"),
    ("run-data-dir-not-built", lambda ws, s: ["run", str(EXP), "--out", str(ws / "o"), f"data.dir={ws}"], "no manifest.json"),
    ("run-data-dir-older-layout", lambda ws, s: ["run", str(EXP), "--out", str(ws / "o"),
     f"data.dir={_older_layout(ws, s / D)}"], "written by an older metasft"),
    ("run-out-is-a-train-run", lambda ws, s: ["run", str(EXP), "--out", str(s / R)], "train directory"),
    ("run-out-foreign-dir", lambda ws, s: ["run", str(EXP), "--out", _foreign(ws)], "did not write"),
    ("run-config-not-utf8", lambda ws, s: ["run", _not_utf8(ws), "--out", str(ws / "o")], "not UTF-8"),
    ("run-out-manifest-cut-short", lambda ws, s: ["run", str(EXP), "--out", _cut_manifest(ws)],
     "manifest.json is not a metasft record"),
    # found before any stage runs (issue 23: a traceback at the train stage, after the data build)
    ("run-target-modules-unknown", lambda ws, s: ["run", str(EXP), "--out", str(ws / "o"), "model.target_modules=[nosuch_proj]"],
     "model.target_modules: ['nosuch_proj'] are not linear layers"),
    ("train-target-modules-unknown", lambda ws, s: ["train", str(FOMAML), "--out", str(ws / "o"), f"data.dir={s / D}",
                                                    "model.target_modules=[q_proj,nosuch_proj]"], "['nosuch_proj']"),
]


def _param(case):
    if hasattr(case, "values"):
        return pytest.param(*case.values[1:], id=case.values[0], marks=case.marks)
    return pytest.param(*case[1:], id=case[0])


@pytest.mark.parametrize("argv,expected", [_param(c) for c in CASES])
def test_bad_input_is_one_line_exit_2_and_loses_nothing(argv, expected, tmp_path, shared, capsys):
    ws = tmp_path / "ws"
    ws.mkdir()
    args = argv(ws, shared)
    before = snapshot(ws, shared)
    rc = main(args)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("metasft: error:")]
    assert rc == 2, err
    assert "Traceback" not in err and len(errors) == 1, err
    assert err.rstrip().splitlines()[-1] == errors[0]
    assert expected in errors[0], errors[0]
    assert snapshot(ws, shared) == before


def test_error_is_exactly_one_line_and_debug_shows_the_traceback(tmp_path):
    argv = [sys.executable, "-m", "metasft.cli", "data", "build", str(FOMAML), "--out", str(tmp_path / "o"),
            "trainer.total_steps=0"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    plain = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert plain.returncode == 2
    assert plain.stderr.splitlines() == [plain.stderr.strip()] and "trainer.total_steps must be > 0" in plain.stderr
    debug = subprocess.run(argv + ["--debug"], capture_output=True, text=True, env=env)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr
    assert not (tmp_path / "o").exists()


def test_overwrite_moves_the_old_content_aside_and_says_where(tmp_path, capsys):
    out = tmp_path / "d"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["data", "build", str(DATA_CFG), "--out", str(out), "--overwrite"]) == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("d.old-")]
    assert len(aside) == 1 and (aside[0] / "notes.txt").read_text() == "mine"
    assert (out / MANIFEST).is_file() and not (out / "notes.txt").exists()
    # a rebuild into its own directory is allowed, and keeps a file the user put there
    (out / "notes.txt").write_text("again")
    assert main(["data", "build", str(DATA_CFG), "--out", str(out)]) == 0
    assert (out / "notes.txt").read_text() == "again"
    assert json.loads((out / MANIFEST).read_text())["kind"] == "data"


def test_failed_eval_then_corrected_rerun_succeeds(tmp_path, shared):
    """The settings and adapter fingerprints are recorded with the first group, not before the models
    load: a failed evaluation leaves nothing that a corrected rerun would trip over."""
    run = tmp_path / "run"
    shutil.copytree(shared / R, run)
    for name in ("adapter_best", "adapter"):
        shutil.rmtree(run / name, ignore_errors=True)
    shutil.copytree(shared / R / ADAPTER_DIR, run / ADAPTER_DIR)
    good = (run / ADAPTER_DIR / "adapter_model.safetensors").read_bytes()
    (run / ADAPTER_DIR / "adapter_model.safetensors").write_bytes(b"garbage")
    out = tmp_path / EVAL_DIR
    argv = ["eval", str(EXP), "--out", str(out), "--data", str(shared / D), "eval.seeds=[0]",
            "eval.adaptation_steps=1", "eval.record_steps=[0,1]", "eval.max_new_tokens=8"]
    assert main(argv + ["eval.models=[base]"]) == 0  # an evaluation directory with results already
    before = snapshot(out)
    assert main(argv + [f"eval.models=[base,{run}]"]) == 2
    assert snapshot(out) == before  # the broken adapter's fingerprint is not recorded
    (run / ADAPTER_DIR / "adapter_model.safetensors").write_bytes(good)
    assert main(argv + [f"eval.models=[base,{run}]"]) == 0
    with sqlite3.connect(out / RESULTS_FILE) as db:
        meta = dict(db.execute("select key, value from meta"))
        assert db.execute("select count(*) from done").fetchone()[0] == 12
    db.close()
    assert set(meta) == {"settings", "acc_k", "grading", "adapter:base", "adapter:fomaml"}
    assert json.loads((out / MANIFEST).read_text())["kind"] == "eval" and (out / EVAL_CONFIG).is_file()


def test_failed_eval_into_a_new_directory_keeps_the_groups_it_stored(tmp_path, shared, capsys, monkeypatch):
    """Issue 23: three groups are stored, then the disk is full; the new evaluation directory stays with
    them (it was removed as a whole before), and the rerun evaluates only what is left."""
    from metasft.eval.results import ResultsStore
    real_write, calls = ResultsStore.write_group, []

    def full_disk(self, *args, **kwargs):
        calls.append(args[:4])
        if len(calls) > 3:
            raise OSError(28, "No space left on device")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(ResultsStore, "write_group", full_disk)
    out = tmp_path / "new" / EVAL_DIR
    argv = ["eval", str(EXP), "--out", str(out), "--data", str(shared / D), "eval.seeds=[0]", "eval.cells_per_batch=1",
            "eval.adaptation_steps=1", "eval.record_steps=[0,1]", "eval.max_new_tokens=8",
            f"eval.models=[base,{shared / R}]"]
    assert main(argv) == 2
    assert "No space left on device" in capsys.readouterr().err
    with sqlite3.connect(out / RESULTS_FILE) as db:
        stored = set(db.execute("select model, task, n_shots, seed from done"))
    db.close()
    assert stored == set(calls[:3]) and len(stored) == 3
    monkeypatch.setattr(ResultsStore, "write_group", real_write)
    assert main(argv) == 0
    assert "0/9 " in capsys.readouterr().err  # the progress bar: 9 groups left to do
    with sqlite3.connect(out / RESULTS_FILE) as db:
        assert db.execute("select count(*) from done").fetchone()[0] == 12
    db.close()


def _tree(root) -> dict:
    return {str(p): p.read_bytes() if p.is_file() else "dir" for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("argv, key", [
    (["data", "build", str(DATA_CFG), "data.tasks.0.name=../../../../escaped"], "data.tasks.0.name='../../../../escaped'"),
    (["data", "build", str(DATA_CFG), "data.eval_tasks.1.name=../up"], "data.eval_tasks.1.name='../up'"),
    (["data", "build", str(DATA_CFG), "data.tasks.0.name=/abs"], "data.tasks.0.name='/abs'"),
    (["data", "build", str(DATA_CFG), "data.tasks.0.name=.hidden"], "data.tasks.0.name='.hidden'"),
    (["data", "build", str(DATA_CFG), "data.sources=[{name: a/b, path: x.jsonl}]"], "data.sources.0.name='a/b'"),
    (["run", str(EXP), "variants=[{name: ../../v, arm: fomaml}]"], "variants.0.name='../../v'"),
])
def test_a_name_is_never_a_path(argv, key, tmp_path, capsys):
    """Issue 23: names from a config are refused at load when they are not plain file names, and
    nothing is written anywhere (the whole tree around --out is walked)."""
    out = tmp_path / "a" / "b" / "c" / "out"
    out.parent.mkdir(parents=True)
    before = _tree(tmp_path)
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{key}: a name becomes a file name" in err, err
    assert _tree(tmp_path) == before


def test_an_evaluation_does_not_add_groups_of_other_seeds_to_a_store(tmp_path, shared, capsys):
    """Issue 23: eval rerun into the same --out with other eval.seeds mixed the stores while
    eval_config.yaml claimed the new seeds. Adding seeds is fine; leaving stored ones out is refused."""
    out = tmp_path / EVAL_DIR
    argv = ["eval", str(EXP), "--out", str(out), "--data", str(shared / D), "eval.cells_per_batch=1",
            "eval.adaptation_steps=1", "eval.record_steps=[0,1]", "eval.models=[base]"]
    assert main(argv + ["eval.seeds=[0]"]) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert main(argv + ["eval.seeds=[1]"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "few-shot groups of seeds [0], which eval.seeds [1] leaves out" in err, err
    assert snapshot(out) == before
    assert main(argv + ["eval.seeds=[0, 1]"]) == 0
    assert load_config(out / EVAL_CONFIG).eval.seeds == [0, 1]
