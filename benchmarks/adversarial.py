"""The second adversarial corpus of issue 23, kept outside the test suite: a new user's hostile and
careless inputs to the real command line (`python -m metasft ...`, one subprocess per step, each case
in its own temp directory), checked for what must always hold:

  - the exit code is one the case allows (0 done, 2 refused, 130 interrupted; a kill's own signal);
  - no "Traceback" on stderr; a refusal is exactly one line, `metasft: error: ...`, the last one, and
    names what the case names (a file, a key, a row); an interruption ends in `metasft: interrupted:`;
  - every file the user placed is byte-identical afterwards (sha256 before and after);
  - a finished run's results (cells and predictions of results.sqlite, the adapters, verdicts.json)
    are unchanged unless the case asks for a change;
  - a command that only refused leaves its directory exactly as it was; nothing is written outside
    the case's directory, nor in the repository; no temp file (`.*.tmp`, `*.old-*`) is left behind.

    python benchmarks/adversarial.py                        # every case (40-60 min on the shared 2 cores)
    python benchmarks/adversarial.py -k lock -k report      # the cases whose name holds a word
    python benchmarks/adversarial.py --fixtures /tmp/adv    # keep (and reuse) the finished tiny run

The finished tiny experiment (configs/tiny/experiment.yaml) is built once and copied into each case
that needs one. Most of the time is the `run` cases' import of torch (10-50 s each under load). Prints a row per case (case, expected, observed, PASS/FAIL) and the count; exits 1 on
any FAIL. Set PYTHONPATH to the checkout's src/ (or install it) and OMP_NUM_THREADS=1.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny"
EXP_CFG = TINY / "experiment.yaml"
FOMAML_CFG = TINY / "fomaml_sft.yaml"
DATA_CFG = TINY / "data" / "embedded.yaml"
PY = sys.executable
STEP_TIMEOUT = 240


# ------------------------------------------------------------------------------------ the cases
@dataclass
class Step:
    """One command: its arguments after `python -m metasft`, the exit codes allowed, the text its
    error line must hold (rc 2), and a signal to send (`kill`: (signal, stderr text to wait for or
    None, seconds after it))."""
    argv: list[str]
    rc: tuple[int, ...] = (2,)
    says: str | None = None
    kill: tuple[int, str | None, float] | None = None
    usage: bool = False       # an argparse usage error: the usage line, then the error line
    stdout: str | None = None  # text the output must hold (rc 0)


@dataclass
class Case:
    name: str
    build: Callable[["Workspace"], list[Step]]
    changes: bool = False     # the case asks a finished run's results to change
    verdicts_may_change: bool = False
    check: Callable[["Workspace"], str | None] | None = None  # extra: a failure's description or None


@dataclass
class Workspace:
    """A case's directory (`root`, the working directory of its commands), the files the user placed
    in it, and the finished experiment copied into it (`exp()`)."""
    root: Path
    fixtures: Path
    user_files: dict[Path, str] = field(default_factory=dict)
    exp_dir: Path | None = None
    background: list[subprocess.Popen] = field(default_factory=list)

    def user(self, rel: str | Path, content: bytes | str = b"the user's own file\n") -> Path:
        """A file the user placed at `rel` (relative to the case directory, or absolute)."""
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
        self.user_files[p] = sha(p)
        return p

    def file(self, rel: str, content: bytes | str) -> Path:
        """An input file (a config, data): it too must not change."""
        return self.user(rel, content)

    def exp(self) -> Path:
        """A copy of the finished tiny experiment at ./exp."""
        if self.exp_dir is None:
            self.exp_dir = self.root / "exp"
            shutil.copytree(self.fixtures / "exp", self.exp_dir, symlinks=True)
        return self.exp_dir

    def hold_lock(self, directory: Path) -> int:
        """Another process holding `directory`'s writer lock (metasft.rundir.lock_dir); its pid."""
        code = ("import sys, time; from metasft.rundir import lock_dir; lock_dir(sys.argv[1]); "
                "print('held', flush=True); time.sleep(600)")
        p = subprocess.Popen([PY, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True, env=ENV)
        assert p.stdout.readline().strip() == "held"
        self.background.append(p)
        return p.pid


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def cfg_including(ws: Workspace, body: str, base: Path = EXP_CFG, name: str = "c.yaml") -> str:
    return str(ws.file(name, f"include: {base}\n{body}"))


def show(cfg: str, *overrides: str, rc=(2,), says=None, stdout=None) -> Step:
    return Step(["config", "show", cfg, *overrides], rc, says, stdout=stdout)


def yaml_case(name: str, text: bytes | str, rc=(2,), says=None, include=True, stdout=None) -> Case:
    """`config show` on a config file with `text` (after an include of the tiny experiment)."""
    def build(ws):
        body = text if isinstance(text, bytes) else text.encode()
        path = ws.file("c.yaml", (f"include: {EXP_CFG}\n".encode() if include else b"") + body)
        return [show(str(path), rc=rc, says=says, stdout=stdout)]
    return Case(name, build)


def override_case(name: str, *overrides: str, rc=(2,), says=None, stdout=None, usage=False) -> Case:
    def build(ws):
        step = show(str(EXP_CFG), *overrides, rc=rc, says=says, stdout=stdout)
        step.usage = usage
        return [step]
    return Case(name, build)


def argv_case(name: str, argv: Callable[[Workspace], list[str]], rc=(2,), says=None, usage=False,
              stdout=None, changes=False, check=None) -> Case:
    return Case(name, lambda ws: [Step(argv(ws), rc, says, usage=usage, stdout=stdout)], changes=changes, check=check)


# A user source for the data cases: 40 well-formed rows, and ways to spoil them.
def _row(i: int, **extra) -> dict:
    return {"problem": f"What is {i} + {i}?", "solution": f"Add them: \\boxed{{{2 * i}}}", "answer": str(2 * i),
            "subject": "arith", **extra}


GOOD_ROWS = [_row(i) for i in range(40)]


def source_build(ws: Workspace, filename: str, content: bytes, extra: str = "", rc=(2,), says=None) -> Step:
    path = ws.file(filename, content)
    return Step(["data", "build", str(DATA_CFG), "--out", "built",
                 f"data.sources=[{{name: mine, path: {path}{extra}}}]",
                 "data.tasks=[{name: mine_task, source: mine}]", "data.eval_tasks=[]"], rc, says)


def jsonl(rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def data_case(name: str, filename: str, content: Callable[[], bytes] | bytes, extra="", rc=(2,), says=None) -> Case:
    return Case(name, lambda ws: [source_build(ws, filename, content() if callable(content) else content,
                                               extra, rc, says)])


def choice_rows(n_options: int) -> bytes:
    rows = [{"problem": f"Pick {i}", "solution": "It is A.", "answer": "A",
             "choices": [f"option {k}" for k in range(n_options)]} for i in range(40)]
    return jsonl(rows)


def csv_rows(bom: bool) -> bytes:
    text = "problem,solution,answer\n" + "".join(f"What is {i}+{i}?,\\boxed{{{2 * i}}},{2 * i}\n" for i in range(40))
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode()


def exp_run(ws, *extra, rc=(2,), says=None) -> Step:
    return Step(["run", str(EXP_CFG), "--out", str(ws.exp()), *extra], rc, says)


def spoil(rel: str, how: Callable[[Path], None], then: Callable[[Workspace], list[Step]], **kw) -> Case:
    """Damage `rel` in a copy of the finished experiment, then run `then`'s steps."""
    def build(ws):
        how(ws.exp() / rel)
        return then(ws)
    return Case(kw.pop("name"), build, **kw)


def truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 2)])


def empty(p: Path) -> None:
    p.write_bytes(b"")


def remove(p: Path) -> None:
    shutil.rmtree(p) if p.is_dir() else p.unlink()


def sql(statement: str) -> Callable[[Path], None]:
    def run(p: Path) -> None:
        with sqlite3.connect(p) as db:
            db.execute(statement)
        db.close()
    return run


def edit_json(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def run(p: Path) -> None:
        data = json.loads(p.read_text())
        data = change(data) or data
        p.write_text(json.dumps(data))
    return run


def _stage_status(m: dict) -> None:
    m["stages"]["eval"]["status"] = "weird"


def _hostile_report_manifest(ws: Workspace) -> list[Step]:
    """A report manifest listing files outside report/ as its own: a report rewrite must not delete them."""
    exp = ws.exp()
    ws.user("mine.txt")
    ws.user_files[exp / "config.yaml"] = sha(exp / "config.yaml")
    edit_json(lambda m: m["files"].extend(["../config.yaml", "../../mine.txt", "/etc/hostname"]))(
        exp / "report" / "manifest.json")
    return [Step(["report", str(exp)], (0, 2))]


def _hostile_data_manifest(ws: Workspace) -> list[Step]:
    """A data manifest whose file list points outside dataset/: --force must not delete there."""
    exp = ws.exp()
    ws.user("mine.txt")
    manifest = exp / "dataset" / "manifest.json"
    text = manifest.read_text()
    data = json.loads(text)
    key = next((k for k in ("files", "sha256") if k in data), None)
    if key is None:
        return [exp_run(ws, "seed=5", "--force", rc=(0, 2))]
    if isinstance(data[key], dict):
        data[key]["../../mine.txt"] = "0" * 64
    else:
        data[key].append("../../mine.txt")
    manifest.write_text(json.dumps(data))
    return [exp_run(ws, "--force", "seed=5", rc=(0, 2))]


def _symlinked_figure(ws: Workspace) -> list[Step]:
    exp = ws.exp()
    mine = ws.user("my_plot.png", b"\x89PNG my own figure")
    fig = exp / "report" / "figures" / "training_curves.png"
    fig.unlink()
    fig.symlink_to(mine)
    return [Step(["report", str(exp)], (0, 2))]


def _user_files_everywhere(ws: Workspace) -> list[Step]:
    exp = ws.exp()
    for rel in ("report/my_notes.md", "report/drafts/v1.md", "report/figures/mine.png", "eval/my_eval_notes.txt",
                "runs/fomaml/my_notes.txt", "dataset/my_second_build/x.jsonl", "my_top_notes.md"):
        ws.user(exp / rel)
    return [Step(["run", str(EXP_CFG), "--out", str(exp), "--force", "eval.target_acc=0.2"], (0,))]


def _data_rebuilt_under_run(ws: Workspace) -> list[Step]:
    exp = ws.exp()
    return [Step(["data", "build", str(EXP_CFG), "--out", str(exp / "dataset"), "seed=7"], (0, 2)),
            exp_run(ws, rc=(2,), says="dataset")]


def _stale_report_temp(ws: Workspace) -> list[Step]:
    exp = ws.exp()
    (exp / ".report.abcd1234.tmp").mkdir()
    (exp / ".report.abcd1234.tmp" / "report.md").write_text("half")
    return [Step(["report", str(exp)], (0,))]


def _no_stale_report_temp(ws: Workspace) -> str | None:
    left = list(ws.exp().glob(".report.*.tmp"))
    return f"left {left[0].name}" if left else None


def _locked(command: Callable[[Workspace, Path], list[str]], rc=(2,), says="pid") -> Callable[[Workspace], list[Step]]:
    def build(ws):
        exp = ws.exp()
        pid = ws.hold_lock(exp)
        return [Step(command(ws, exp), rc, says if says != "pid" else f"pid {pid}")]
    return build


def _symlink_out(ws: Workspace) -> list[Step]:
    mine = ws.root / "mine"
    ws.user("mine/notes.txt")
    (ws.root / "link").symlink_to(mine)
    return [Step(["run", str(EXP_CFG), "--out", "link"], (2,), "link")]


def _readonly_out(ws: Workspace) -> list[Step]:
    (ws.root / "ro").mkdir()
    os.chmod(ws.root / "ro", 0o555)
    return [Step(["data", "build", str(DATA_CFG), "--out", "ro/out"], (2,), "ro/out")]


def _export_twice(ws: Workspace) -> list[Step]:
    exp = ws.exp()
    return [Step(["export", str(exp), "--predictions", "p.jsonl"], (0,)),
            Step(["export", str(exp), "--predictions", "p.jsonl"], (2,), "p.jsonl")]


def _include_cycle(ws: Workspace) -> list[Step]:
    ws.file("a.yaml", "include: b.yaml\nseed: 1\n")
    ws.file("b.yaml", "include: a.yaml\nseed: 2\n")
    return [show(str(ws.root / "a.yaml"), says="include")]


def _deep_list(depth: int) -> bytes:
    return b"arms: " + b"[" * depth + b"]" * depth + b"\n"


def _yaml_bomb() -> bytes:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    lines.append("arms: *a8")
    return ("\n".join(lines) + "\n").encode()


# --- interruptions
def _train_argv(ws: Workspace, out="run") -> list[str]:
    return ["train", str(FOMAML_CFG), "--out", out, f"data.dir={ws.fixtures / 'exp' / 'dataset'}",
            "trainer.total_steps=6"]


def _report_interrupted(sig: int) -> Callable[[Workspace], list[Step]]:
    def build(ws):
        exp = ws.exp()
        ws.user(exp / "report" / "my_notes.md")
        rc = (130, 0) if sig == signal.SIGINT else (-sig, 0)
        return [Step(["report", str(exp)], rc, kill=(sig, None, 6.0)),
                Step(["report", str(exp)], (0,))]
    return build


def _run_interrupted_in_eval(ws: Workspace) -> list[Step]:
    exp = ws.exp()
    argv = ["run", str(EXP_CFG), "--out", str(exp), "--force", "eval.seeds=[0]"]
    return [Step(argv, (130,), kill=(signal.SIGINT, "stage eval", 6.0)), Step(argv, (0,))]


def _no_temps_in(rel: str) -> Callable[[Workspace], str | None]:
    def check(ws):
        left = [p for p in (ws.root / rel).rglob("*") if p.name.endswith(".tmp") or ".old-" in p.name]
        return f"left {left[0]}" if left else None
    return check


def _finished(rel: str) -> Callable[[Workspace], str | None]:
    def check(ws):
        m = ws.root / rel / "manifest.json"
        status = json.loads(m.read_text()).get("status") if m.is_file() else None
        return None if status == "finished" else f"{rel}: status {status!r} after the rerun"
    return check


CASES: list[Case] = [
    # ------------------------------------------------------------- config files, found at load
    yaml_case("cfg-empty-file", b"", rc=(0,), include=False),
    yaml_case("cfg-only-a-comment", b"# nothing here\n", rc=(0,), include=False),
    yaml_case("cfg-utf8-bom", b"\xef\xbb\xbfname: bom_ok\n", rc=(0,), include=False, stdout="name: bom_ok"),
    yaml_case("cfg-utf16", "name: x\n".encode("utf-16"), include=False, says="c.yaml"),
    yaml_case("cfg-top-level-list", b"- a\n- b\n", include=False, says="c.yaml"),
    yaml_case("cfg-top-level-scalar", b"42\n", include=False, says="c.yaml"),
    yaml_case("cfg-tab-indent", b"data:\n\tval_ratio: 0.1\n", says="c.yaml"),
    yaml_case("cfg-list-nested-2000-deep", _deep_list(2000), says="c.yaml"),
    yaml_case("cfg-yaml-bomb", _yaml_bomb(), says="aliases"),
    yaml_case("cfg-python-tag", b'name: !!python/object/apply:os.system ["echo pwned > pwned"]\n', says="c.yaml"),
    yaml_case("cfg-unknown-top-key", b"nope: 1\n", says="nope"),
    yaml_case("cfg-unknown-nested-key", b"model: {nope: 1}\n", says="model.nope"),
    yaml_case("cfg-bool-for-int", b"trainer: {total_steps: true}\n", says="trainer.total_steps"),
    yaml_case("cfg-string-for-float", b"trainer: {lr: fast}\n", says="trainer.lr"),
    yaml_case("cfg-list-for-section", b"model: [1, 2]\n", says="model"),
    yaml_case("cfg-null-section", b"data: null\n", says="data"),
    yaml_case("cfg-nan-lr", b"meta: {inner_lr: .nan}\n", says="meta.inner_lr"),
    yaml_case("cfg-lr-1e400", b"trainer: {lr: 1e400}\n", says="trainer.lr"),
    yaml_case("cfg-lr-underflows-to-0", b"trainer: {lr: 1e-400}\n", says="trainer.lr"),
    yaml_case("cfg-arms-empty", b"arms: []\n", says="arms"),
    yaml_case("cfg-arms-repeat", b"arms: [base, base]\n", says="arms"),
    yaml_case("cfg-arms-unknown", b"arms: [base, nosuch]\n", says="nosuch"),
    yaml_case("cfg-arms-a-string", b"arms: base\n", says="arms"),
    Case("cfg-include-missing", lambda ws: [show(str(ws.file("c.yaml", "include: nope.yaml\n")), says="nope.yaml")]),
    Case("cfg-include-a-directory", lambda ws: [show(str(ws.file("c.yaml", f"include: {TINY}\n")), says="tiny")]),
    Case("cfg-include-itself", lambda ws: [show(str(ws.file("c.yaml", "include: c.yaml\n")), says="c.yaml")]),
    Case("cfg-include-cycle", _include_cycle),
    Case("cfg-is-a-directory", lambda ws: [show(str(TINY), says="tiny")]),
    Case("cfg-missing", lambda ws: [show("nope.yaml", says="nope.yaml")]),
    yaml_case("cfg-unicode-name", "name: 数学实验\n", rc=(0,), stdout="数学实验"),
    yaml_case("cfg-name-with-slash", b"name: a/b\n", says="name"),
    yaml_case("cfg-name-dotdot", b"name: ../../escaped\n", says="name"),
    yaml_case("cfg-name-nul", b'name: "a\\0b"\n', says="name"),
    yaml_case("cfg-name-empty", b'name: ""\n', says="name"),
    yaml_case("cfg-task-name-dotdot", b"data:\n  tasks:\n    - {name: '..', source: embedded, subject: algebra}\n",
              says="data.tasks"),
    yaml_case("cfg-eval-task-name-slash",
              b"data:\n  eval_tasks:\n    - {name: a/b, source: embedded, subject: algebra, split: test, "
              b"shots_split: train, n_shots: [0, 4], test_size: 6}\n", says="a/b"),
    yaml_case("cfg-source-name-slash", b"data:\n  sources:\n    - {name: x/y, path: f.jsonl}\n", says="x/y"),
    yaml_case("cfg-variant-name-dotdot", b"variants:\n  - {name: ../v, arm: fomaml, overrides: {meta.inner_lr: 2e-3}}\n",
              says="../v"),
    yaml_case("cfg-variant-override-unknown-key",
              b"variants:\n  - {name: v, arm: fomaml, overrides: {meta.nope: 1}}\n", says="meta.nope"),
    yaml_case("cfg-target-modules-unknown", b"model: {target_modules: [nosuch_proj]}\n", rc=(0, 2)),  # run/train/plan: below
    yaml_case("cfg-target-modules-empty", b"model: {target_modules: []}\n", says="target_modules"),
    yaml_case("cfg-support-max-negative", b"data: {support_max_samples: -3}\n", says="support_max_samples"),
    yaml_case("cfg-query-max-zero", b"data: {query_max_samples: 0}\n", says="query_max_samples"),
    yaml_case("cfg-lora-rank-huge", b"model: {lora_rank: 1000000000000}\n", says="lora_rank"),
    yaml_case("cfg-seed-negative", b"seed: -1\n", says="seed"),
    yaml_case("cfg-seed-float", b"seed: 1.5\n", says="seed"),
    yaml_case("cfg-seeds-beyond-sqlite", b"eval: {seeds: [0, 100000000000000000000]}\n", says="eval.seeds"),
    yaml_case("cfg-total-steps-float", b"trainer: {total_steps: 6.5}\n", says="total_steps"),
    yaml_case("cfg-duplicate-key-in-include", b"seed: 1\nseed: 1\n", says="seed"),
    yaml_case("cfg-dotted-key", b'"trainer.lr": 1\n', says="trainer.lr"),
    yaml_case("cfg-n-shots-negative", b"data:\n  eval_tasks:\n    - {name: t, source: embedded, subject: algebra, "
              b"split: test, shots_split: train, n_shots: [-1], test_size: 6}\n", says="n_shots"),
    yaml_case("cfg-record-steps-unsorted", b"eval: {record_steps: [2, 0]}\n", rc=(0, 2)),
    yaml_case("cfg-max-new-tokens-0", b"data:\n  eval_tasks:\n    - {name: t, source: embedded, subject: algebra, "
              b"split: test, shots_split: train, n_shots: [0], test_size: 6, max_new_tokens: 0}\n", says="max_new_tokens"),

    # ------------------------------------------------------------------------- overrides
    override_case("ovr-empty-key", "=1", says="=1"),
    override_case("ovr-no-equals", "seed", usage=True),
    override_case("ovr-double-dot", "a..b=1", says="unknown key"),
    override_case("ovr-index-beyond", "data.tasks.99.name=x", says="data.tasks.99"),
    override_case("ovr-index-negative", "data.tasks.-1.name=x", says="data.tasks.-1"),
    override_case("ovr-index-not-a-number", "data.tasks.x.name=x", says="data.tasks.x"),
    override_case("ovr-empty-value", "seed=", says="seed"),
    override_case("ovr-python-tag", "seed=!!python/name:os.system", says="seed"),
    override_case("ovr-hash-kept-in-name", "name=a#b", rc=(0, 2), stdout="a#b"),
    override_case("ovr-hash-kept-in-path", "data_root=/data/run #2/math", rc=(0,), stdout="#2"),
    override_case("ovr-section-to-scalar", "trainer=5", says="trainer"),
    override_case("ovr-two-equals", "model.lora_rank=4=5", says="lora_rank"),
    override_case("ovr-seed-list-float", "eval.seeds=[0,1.5]", says="eval.seeds"),
    override_case("ovr-unicode-key", "数据.x=1", says="数据"),
    override_case("ovr-100k-name", "name=" + "x" * 100_000, says="name"),
    override_case("ovr-same-key-twice", "seed=1", "seed=2", rc=(0, 2)),
    override_case("ovr-include-key", "include=other.yaml", says="include"),
    override_case("ovr-out-as-key", "out=somewhere", says="out"),
    override_case("ovr-dash-key", "-x=1", usage=True),
    override_case("ovr-null-section", "data=null", says="data"),
    override_case("ovr-flow-map-unclosed", "data.tasks=[{name: a", says="data.tasks"),
    override_case("ovr-newline-in-value", "name=a\nb", rc=(0, 2)),  # YAML folds it: "a b"

    # --------------------------------------------------------------------------- data files
    data_case("data-good-source", "mine.jsonl", jsonl(GOOD_ROWS), rc=(0,)),
    data_case("data-row-not-json", "mine.jsonl", lambda: jsonl(GOOD_ROWS[:3]) + b"{oops\n" + jsonl(GOOD_ROWS[3:]),
              says="mine.jsonl:4"),
    data_case("data-row-a-list", "mine.jsonl", lambda: jsonl(GOOD_ROWS[:5]) + b"[1, 2]\n", says="mine.jsonl:6"),
    data_case("data-row-missing-problem", "mine.jsonl", lambda: jsonl(GOOD_ROWS[:5] + [{"solution": "x"}]),
              says="problem"),
    data_case("data-bom", "mine.jsonl", lambda: b"\xef\xbb\xbf" + jsonl(GOOD_ROWS), rc=(0,)),
    data_case("data-utf16", "mine.jsonl", lambda: jsonl(GOOD_ROWS).decode().encode("utf-16"), says="mine.jsonl"),
    data_case("data-latin1-row", "mine.jsonl", lambda: jsonl(GOOD_ROWS) + b'{"problem": "caf\xe9"}\n', says="mine.jsonl:41"),
    data_case("data-crlf", "mine.jsonl", lambda: jsonl(GOOD_ROWS).replace(b"\n", b"\r\n"), rc=(0,)),
    data_case("data-blank-lines", "mine.jsonl", lambda: jsonl(GOOD_ROWS).replace(b"\n", b"\n\n"), rc=(0, 2)),
    data_case("data-empty-file", "mine.jsonl", b"", says="mine"),
    data_case("data-nan-in-problem", "mine.jsonl", lambda: jsonl(GOOD_ROWS) + b'{"problem": NaN, "solution": "x"}\n',
              says="mine.jsonl:41"),
    data_case("data-duplicate-ids", "mine.jsonl", lambda: jsonl([dict(r, qid="same") for r in GOOD_ROWS]),
              extra=", columns: {id: qid}", says="repeats"),
    data_case("data-csv-bom", "mine.csv", lambda: csv_rows(True), rc=(0,)),
    data_case("data-csv-ragged-row", "mine.csv", lambda: csv_rows(False) + b"a,b,c,d,e\n", says="mine.csv"),
    data_case("data-choices-11-options", "mine.jsonl", lambda: choice_rows(11), extra=", columns: {choices: choices}",
              says="choices"),
    data_case("data-choices-not-a-list", "mine.jsonl",
              lambda: jsonl([{"problem": "p", "solution": "A", "answer": "A", "choices": "abc"}] * 40),
              extra=", columns: {choices: choices}", says="choices"),
    data_case("data-answer-not-an-option", "mine.jsonl",
              lambda: jsonl([{"problem": f"p{i}", "solution": "Z", "answer": "Z", "choices": ["a", "b"]} for i in range(40)]),
              extra=", columns: {choices: choices}", says="answer"),
    data_case("data-level-99", "mine.jsonl", lambda: jsonl([dict(r, lvl="Level 99") for r in GOOD_ROWS]),
              extra=", columns: {level: lvl}", says="level"),
    data_case("data-json-top-level-dict", "mine.json", b'{"problem": "p"}', says="mine.json"),
    data_case("data-parquet-garbage", "mine.parquet", b"not parquet at all", says="mine.parquet"),
    Case("data-path-a-directory", lambda ws: [Step(["data", "build", str(DATA_CFG), "--out", "built",
                                                    f"data.sources=[{{name: mine, path: {ws.root}}}]",
                                                    "data.tasks=[{name: t, source: mine}]", "data.eval_tasks=[]"],
                                                   (2,), str(ws.root))]),
    Case("data-path-missing", lambda ws: [Step(["data", "build", str(DATA_CFG), "--out", "built",
                                                "data.sources=[{name: mine, path: nope.jsonl}]",
                                                "data.tasks=[{name: t, source: mine}]", "data.eval_tasks=[]"],
                                               (2,), "nope.jsonl")]),
    Case("data-root-is-a-file", lambda ws: [Step(["data", "build", str(DATA_CFG), "--out", "built",
                                                  f"data_root={ws.file('root', b'x')}",
                                                  "data.tasks=[{name: alg, source: math, subject: algebra}]",
                                                  "data.eval_tasks=[]"], (2,), "root")]),
    Case("data-split-file-missing", lambda ws: [Step(["data", "build", str(DATA_CFG), "--out", "built",
                                                      f"data.sources=[{{name: mine, path: {ws.root}/{{split}}.jsonl}}]",
                                                      "data.tasks=[{name: t, source: mine}]", "data.eval_tasks=[]"],
                                                     (2,), ".jsonl")]
         if ws.file("train.jsonl", jsonl(GOOD_ROWS)) else []),

    # ------------------------------------------------------------------- corrupted run directories
    Case("exp-rerun-finished", lambda ws: [exp_run(ws, rc=(0,))]),
    Case("exp-force-with-nothing-changed", lambda ws: [exp_run(ws, "--force", rc=(0,))]),
    spoil("manifest.json", truncate, lambda ws: [exp_run(ws, says="manifest.json")], name="exp-manifest-truncated"),
    spoil("manifest.json", empty, lambda ws: [exp_run(ws, says="manifest.json")], name="exp-manifest-empty"),
    spoil("manifest.json", lambda p: p.write_text("[]"), lambda ws: [exp_run(ws, says="manifest.json")],
          name="exp-manifest-a-list"),
    spoil("manifest.json", edit_json(_stage_status), lambda ws: [exp_run(ws, says="status")],
          name="exp-manifest-bogus-status"),
    spoil("manifest.json", edit_json(lambda m: m["stages"].pop("data")), lambda ws: [exp_run(ws, rc=(0, 2))],
          name="exp-manifest-stage-forgotten"),
    spoil("runs/fomaml/manifest.json", truncate, lambda ws: [exp_run(ws, says="manifest.json")],
          name="exp-train-manifest-truncated"),
    spoil("runs/fomaml/metrics.jsonl", truncate, lambda ws: [Step(["report", str(ws.exp())], (0, 2), "metrics.jsonl")],
          name="exp-metrics-truncated-then-report"),
    spoil("runs/fomaml/adapter/adapter_model.safetensors", truncate, lambda ws: [exp_run(ws, rc=(0, 2))],
          name="exp-adapter-truncated-then-run"),
    spoil("runs/fomaml/adapter_best/adapter_model.safetensors", truncate,
          lambda ws: [Step(["eval", str(EXP_CFG), "--out", "ev", "--data", str(ws.exp() / "dataset"),
                            f"eval.models=[fomaml={ws.exp() / 'runs' / 'fomaml'}]"], (2,), "adapter")],
          name="exp-adapter-truncated-then-eval"),
    spoil("eval/results.sqlite", truncate, lambda ws: [exp_run(ws, says="results.sqlite")],
          name="exp-results-truncated-then-run", changes=True),
    spoil("eval/results.sqlite", truncate, lambda ws: [Step(["report", str(ws.exp())], (2,), "results.sqlite")],
          name="exp-results-truncated-then-report", changes=True),
    spoil("eval/results.sqlite", remove, lambda ws: [exp_run(ws, says="--force")],
          name="exp-results-deleted-then-run", changes=True),
    spoil("eval/results.sqlite", remove, lambda ws: [Step(["report", str(ws.exp())], (2,), "results")],
          name="exp-results-deleted-then-report", changes=True),
    spoil("eval/results.sqlite", sql("delete from predictions where model = 'fomaml'"),
          lambda ws: [Step(["report", str(ws.exp())], (2,), "predictions")],
          name="exp-predictions-of-a-model-deleted-then-report", changes=True),
    spoil("eval/results.sqlite", sql("delete from cells where rowid = (select min(rowid) from cells)"),
          lambda ws: [Step(["report", str(ws.exp())], (2,), "has no cell")],
          name="exp-a-cell-deleted-then-report", changes=True),
    spoil("report/report.md", remove, lambda ws: [exp_run(ws, rc=(0, 2))], name="exp-report-md-deleted-then-run"),
    spoil("dataset/manifest.json", truncate, lambda ws: [exp_run(ws, says="manifest.json")],
          name="exp-data-manifest-truncated"),
    spoil("dataset/data/meta_train/algebra_support.parquet", remove, lambda ws: [exp_run(ws, rc=(0, 2))],
          name="exp-data-file-deleted-then-run"),
    spoil(".metasft.lock", lambda p: p.write_text("garbage, no pid"), lambda ws: [exp_run(ws, rc=(0,))],
          name="exp-stale-lock-file"),
    spoil("eval/claims/fomaml.lock", lambda p: p.write_text("12345"), lambda ws: [exp_run(ws, rc=(0,))],
          name="exp-stale-claim-file"),
    spoil("config.yaml", remove, lambda ws: [exp_run(ws, rc=(0,))], name="exp-config-deleted-then-run"),
    spoil("config.yaml", lambda p: p.write_text("{{{ not yaml"),
          lambda ws: [Step(["compare", str(ws.exp()), "--plot", "c.png"], (2,), "config.yaml")],
          name="exp-config-garbage-then-compare"),
    spoil("config.yaml", lambda p: p.write_text("{{{ not yaml"),
          lambda ws: [Step(["report", str(ws.exp())], (2,), "config.yaml")], name="exp-config-garbage-then-report"),
    spoil("eval/eval_config.yaml", remove, lambda ws: [Step(["report", str(ws.exp())], (0, 2))],
          name="exp-eval-config-deleted-then-report"),
    spoil("runs/fomaml", lambda p: (shutil.rmtree(p), p.write_text("a file now")), lambda ws: [exp_run(ws, says="fomaml")],
          name="exp-run-dir-replaced-by-a-file"),
    spoil("runs", shutil.rmtree, lambda ws: [exp_run(ws, says="runs")], name="exp-runs-deleted"),
    Case("exp-report-manifest-lists-files-outside", _hostile_report_manifest),
    Case("exp-data-manifest-lists-files-outside", _hostile_data_manifest, changes=True),
    Case("exp-figure-is-a-symlink-to-a-user-file", _symlinked_figure),
    Case("exp-user-files-everywhere-then-force", _user_files_everywhere, verdicts_may_change=True),
    Case("exp-data-rebuilt-under-run-with-other-seed", _data_rebuilt_under_run),
    Case("exp-stale-report-temp", _stale_report_temp, check=_no_stale_report_temp),
    Case("exp-train-resume-into-stage-dir-other-lr",
         lambda ws: [Step(["train", str(FOMAML_CFG), "--out", str(ws.exp() / "runs" / "fomaml"), "--resume",
                           f"data.dir={ws.exp() / 'dataset'}", "trainer.lr=0.5"], (2,), "differs from the run's config")]),
    Case("exp-eval-into-eval-dir-other-seeds",
         lambda ws: [Step(["eval", str(EXP_CFG), "--out", str(ws.exp() / "eval"), "--data", str(ws.exp() / "dataset"),
                           "eval.models=[base]", "eval.seeds=[5]"], (2,), "seed")]),
    Case("exp-run-overwrite-bad-override",
         lambda ws: [Step(["run", str(EXP_CFG), "--out", str(ws.exp()), "--overwrite", "trainer.lr=-1"], (2,), "trainer.lr")]),
    Case("exp-train-out-is-the-experiment",
         lambda ws: [Step(["train", str(FOMAML_CFG), "--out", str(ws.exp()), f"data.dir={ws.exp() / 'dataset'}"], (2,),
                          "run directory")]),

    # ------------------------------------------------------------------------------ locks
    Case("lock-held-then-run", _locked(lambda ws, exp: ["run", str(EXP_CFG), "--out", str(exp)])),
    Case("lock-held-then-report", _locked(lambda ws, exp: ["report", str(exp)])),
    Case("lock-held-then-force", _locked(lambda ws, exp: ["run", str(EXP_CFG), "--out", str(exp), "--force", "seed=3"])),
    Case("lock-held-then-overwrite", _locked(lambda ws, exp: ["run", str(EXP_CFG), "--out", str(exp), "--overwrite"])),
    Case("lock-held-then-launch", _locked(lambda ws, exp: ["launch", str(EXP_CFG), "--out", str(exp), "--backend", "local"])),
    Case("lock-held-then-export-reads", _locked(lambda ws, exp: ["export", str(exp), "--predictions", "p.jsonl"],
                                                rc=(0,), says=None)),
    Case("lock-held-on-eval-dir-then-eval",
         lambda ws: [Step(["eval", str(EXP_CFG), "--out", str(ws.exp() / "eval"), "--data", str(ws.exp() / "dataset"),
                           "eval.models=[base]"], (2,), f"pid {ws.hold_lock(ws.exp() / 'eval')}")]),

    # ------------------------------------------------------------------------ --out and outputs
    Case("out-is-the-report-dir", lambda ws: [Step(["run", str(EXP_CFG), "--out", str(ws.exp() / "report")], (2,), "report")]),
    argv_case("out-is-dev-null", lambda ws: ["run", str(EXP_CFG), "--out", "/dev/null"], says="/dev/null"),
    argv_case("out-is-empty-string", lambda ws: ["data", "build", str(DATA_CFG), "--out", ""] if ws.user("x.txt") else [],
              says="--out"),
    argv_case("out-is-the-configs-dir", lambda ws: ["data", "build", str(DATA_CFG), "--out", str(TINY)], says="tiny"),
    Case("out-is-a-symlink-to-a-user-dir", _symlink_out),
    Case("out-under-a-read-only-dir", _readonly_out) if os.geteuid() != 0 else None,
    argv_case("out-under-a-file", lambda ws: ["data", "build", str(DATA_CFG), "--out", str(ws.user("f.txt") / "sub")],
              says="f.txt"),
    argv_case("export-to-dev-full", lambda ws: ["export", str(ws.exp()), "--predictions", "/dev/full", "--overwrite"],
              says="/dev/full"),
    argv_case("export-txt-suffix", lambda ws: ["export", str(ws.exp()), "--predictions", "p.txt"], says="p.txt"),
    argv_case("export-to-a-directory", lambda ws: ["export", str(ws.exp()), "--predictions", str(ws.root)], says="directory"),
    argv_case("export-overwrite-asked", lambda ws: ["export", str(ws.exp()), "--predictions", "p.jsonl", "--overwrite"]
              if (ws.root / "p.jsonl").write_text("old") else [], rc=(0,)),
    argv_case("export-missing-dir", lambda ws: ["export", "nope", "--predictions", "p.jsonl"], says="nope"),
    argv_case("export-not-sqlite", lambda ws: ["export", str(ws.user("x.sqlite", b"garbage" * 100)), "--predictions", "p.jsonl"],
              says="x.sqlite"),
    Case("export-twice-same-file", _export_twice),
    argv_case("compare-same-dir-twice", lambda ws: ["compare", str(ws.exp()), str(ws.exp())], says="exp"),
    argv_case("compare-plot-in-missing-dir", lambda ws: ["compare", str(ws.exp()), "--plot", "nodir/c.png"], rc=(0, 2)),
    argv_case("compare-plot-txt-suffix", lambda ws: ["compare", str(ws.exp()), "--plot", "c.txt"], rc=(0, 2)),
    argv_case("compare-with-a-train-run", lambda ws: ["compare", str(ws.exp()), str(ws.exp() / "runs" / "fomaml")],
              says="fomaml"),
    argv_case("compare-missing", lambda ws: ["compare", "nope1", "nope2"], says="nope1"),
    argv_case("ls-finished-exp", lambda ws: ["ls", str(ws.exp())], rc=(0,), stdout="H1"),
    argv_case("ls-dir-with-garbage-manifest", lambda ws: ["ls", str(ws.root)] if ws.user("d/manifest.json", b"{garbage")
              else [], rc=(0, 2)),
    argv_case("ls-a-text-file", lambda ws: ["ls", str(ws.user("notes.txt"))], says="notes.txt"),
    argv_case("ls-missing", lambda ws: ["ls", "nope_dir"], says="nope_dir"),
    argv_case("data-stats-of-exp", lambda ws: ["data", "stats", str(ws.exp())], rc=(0,)),
    argv_case("data-stats-of-runs-dir", lambda ws: ["data", "stats", str(ws.exp() / "runs")], says="runs"),
    argv_case("report-of-eval-dir", lambda ws: ["report", str(ws.exp() / "eval")], rc=(0, 2)),
    argv_case("report-of-report-dir", lambda ws: ["report", str(ws.exp() / "report")], says="report"),
    argv_case("report-of-a-file", lambda ws: ["report", str(ws.user("f.txt"))], says="f.txt"),

    # ---------------------------------------------------------------------- launch, plan, help
    *[argv_case(f"launch-{flag.strip('-')}-{value}", lambda ws, f=flag, v=value: [
        "launch", str(EXP_CFG), "--out", "o", "--backend", "local", f, v], says=flag)
      for flag, value in [("--workers", "0"), ("--workers", "-1"), ("--mem-gb", "-5"), ("--mem-gb", "nan"),
                          ("--mem-gb", "inf"), ("--time", "0"), ("--gpus-per-worker", "-1"), ("--cpus-per-worker", "0")]],
    argv_case("launch-workers-100-on-finished", lambda ws: ["launch", str(EXP_CFG), "--out", str(ws.exp()), "--backend",
                                                           "local", "--workers", "100"], rc=(0, 2)),
    argv_case("launch-slurm-without-sbatch", lambda ws: ["launch", str(EXP_CFG), "--out", "o", "--backend", "slurm"],
              says="slurm") if not shutil.which("sbatch") else None,
    argv_case("launch-help", lambda ws: ["launch", "--help"], rc=(0,), stdout="--workers"),
    argv_case("launch-no-args", lambda ws: ["launch"], usage=True),
    argv_case("launch-bad-backend", lambda ws: ["launch", str(EXP_CFG), "--out", "o", "--backend", "k8s"], usage=True),
    argv_case("plan-workers-0", lambda ws: ["plan", str(EXP_CFG), "--workers", "0"], says="workers"),
    argv_case("plan-threads-0", lambda ws: ["plan", str(EXP_CFG), "--threads", "0"], says="threads"),
    argv_case("plan-gpu-unknown", lambda ws: ["plan", str(EXP_CFG), "--gpu", "tpu"], says="tpu"),
    argv_case("plan-throughput-missing", lambda ws: ["plan", str(EXP_CFG), "--throughput", "nope.yaml"], says="nope.yaml"),
    argv_case("plan-throughput-garbage", lambda ws: ["plan", str(EXP_CFG), "--throughput", str(ws.user("t.yaml", b"[1,"))],
              says="t.yaml"),
    argv_case("plan-throughput-unknown-key", lambda ws: ["plan", str(EXP_CFG), "--throughput",
                                                        str(ws.user("t.yaml", b"nope: 1\n"))], says="nope"),
    argv_case("plan-throughput-nan", lambda ws: ["plan", str(EXP_CFG), "--throughput",
                                                str(ws.user("t.yaml", b"flops: .nan\n"))], says="flops"),
    argv_case("plan-target-modules-unknown", lambda ws: ["plan", str(EXP_CFG), "model.target_modules=[nosuch]"],
              says="nosuch"),
    argv_case("version", lambda ws: ["--version"], rc=(0,), stdout="metasft"),
    argv_case("no-command", lambda ws: [], usage=True),
    argv_case("unknown-command", lambda ws: ["frobnicate"], usage=True),
    argv_case("report-two-dirs", lambda ws: ["report", "a", "b"], usage=True),
    argv_case("run-help", lambda ws: ["run", "--help"], rc=(0,), stdout="--force"),
    argv_case("compare-help", lambda ws: ["compare", "--help"], rc=(0,), stdout="--plot"),
    argv_case("run-rehearse-name-dotdot", lambda ws: ["run", str(EXP_CFG), "--rehearse", "name=../../../escaped"],
              says="name"),
    argv_case("run-target-modules-unknown-writes-nothing", lambda ws: ["run", str(EXP_CFG), "--out", "o",
                                                                       "model.target_modules=[nosuch]"], says="nosuch"),
    argv_case("run-options-beyond-alphabet-found-before-training", lambda ws: [
        "run", str(EXP_CFG), "--out", "o",
        f"data.sources=[{{name: mine, path: {ws.file('mine.jsonl', choice_rows(11))}, columns: {{choices: choices}}}}]",
        "data.eval_tasks=[{name: t, source: mine, n_shots: [0], test_size: 4}]"], says="choices"),
    argv_case("train-steps-beyond-int64", lambda ws: _train_argv(ws) + ["trainer.total_steps=99999999999999999999"],
              says="total_steps"),

    # --------------------------------------------------------------------------- interruptions
    Case("int-sigint-data-build", lambda ws: [
        Step(["data", "build", str(DATA_CFG), "--out", "built"], (130, 0), kill=(signal.SIGINT, None, 1.0)),
        Step(["data", "build", str(DATA_CFG), "--out", "built"], (0,))], check=_no_temps_in(".")),
    Case("int-sigkill-data-build", lambda ws: [
        Step(["data", "build", str(DATA_CFG), "--out", "built"], (-9, 0), kill=(signal.SIGKILL, None, 1.5)),
        Step(["data", "build", str(DATA_CFG), "--out", "built"], (0,))], check=_no_temps_in(".")),
    Case("int-sigint-at-startup", lambda ws: [
        Step(["config", "show", str(EXP_CFG)], (130, 0), kill=(signal.SIGINT, None, 0.15))]),
    Case("int-sigint-train-then-resume", lambda ws: [
        Step(_train_argv(ws), (130,), kill=(signal.SIGINT, "train:", 3.0)),
        Step(_train_argv(ws) + ["--resume"], (0,))], check=_finished("run")),
    Case("int-sigterm-train-then-resume", lambda ws: [
        Step(_train_argv(ws), (-15, 143), kill=(signal.SIGTERM, "train:", 3.0)),
        Step(_train_argv(ws) + ["--resume"], (0,))], check=_finished("run")),
    Case("int-sigint-report", _report_interrupted(signal.SIGINT), check=_no_temps_in("exp")),
    Case("int-sigkill-report", _report_interrupted(signal.SIGKILL), check=_no_temps_in("exp")),
    Case("int-sigint-run-in-eval-then-rerun", _run_interrupted_in_eval, changes=True, verdicts_may_change=True,
         check=_no_temps_in("exp")),
    Case("int-sigint-export", lambda ws: [
        Step(["export", str(ws.exp()), "--predictions", "p.jsonl"], (130, 0), kill=(signal.SIGINT, None, 1.0))],
         check=lambda ws: None if not (ws.root / "p.jsonl").exists() or
         (ws.root / "p.jsonl").read_bytes().endswith(b"\n") else "a half-written p.jsonl"),
]
CASES = [c for c in CASES if c is not None]


# --------------------------------------------------------------------------------- the checks
ENV = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
SIDE_FILES = ("-wal", "-shm", ".metasft.lock")


def tree(root: Path) -> dict[str, str]:
    """Every path under `root` (hidden ones included) with its sha256, 'dir' or the link's target;
    SQLite's side files and writer locks left out."""
    out = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if name.endswith(SIDE_FILES):
                continue
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                try:
                    out[rel] = sha(p)
                except OSError:
                    out[rel] = "unreadable"
    return out


def results(exp: Path) -> dict[str, str]:
    """A finished experiment's results: cells and predictions (every column), adapters, verdicts."""
    out = {}
    store = exp / "eval" / "results.sqlite"
    if store.is_file():
        try:
            db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
            for table in ("cells", "predictions"):
                rows = sorted(db.execute(f"select * from {table}").fetchall(), key=repr)
                out[table] = hashlib.sha256(repr(rows).encode()).hexdigest()
            db.close()
        except sqlite3.Error as e:
            out["store"] = f"unreadable: {e}"
    for p in sorted([*(exp / "runs").glob("*/adapter*/*.safetensors"), *(exp / "runs").glob("*/fresh_lora.json")]):
        out[str(p.relative_to(exp))] = sha(p)
    verdicts = exp / "report" / "verdicts.json"
    out["verdicts"] = sha(verdicts) if verdicts.is_file() else "missing"
    return out


@dataclass
class Outcome:
    expected: list[str]
    observed: list[str]
    failures: list[str]


def run_step(step: Step, cwd: Path) -> tuple[int, str, str]:
    argv = [PY, "-m", "metasft", *step.argv]
    if step.kill is None:
        p = subprocess.run(argv, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=STEP_TIMEOUT)
        return p.returncode, p.stdout, p.stderr
    sig, marker, delay = step.kill
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        # a shell's background job inherits SIGINT ignored, and Python then never raises KeyboardInterrupt
        p = subprocess.Popen(argv, cwd=cwd, env=ENV, stdout=out, stderr=err, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        t0 = time.time()
        if marker is not None:
            while p.poll() is None and time.time() - t0 < STEP_TIMEOUT:
                err.seek(0)
                if marker in err.read():
                    break
                time.sleep(0.05)
        time.sleep(delay)
        if p.poll() is None:
            p.send_signal(sig)
        try:
            p.wait(STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        out.seek(0)
        err.seek(0)
        return p.returncode, out.read(), err.read()


def check_step(step: Step, rc: int, stdout: str, stderr: str) -> list[str]:
    bad = []
    if rc not in step.rc:
        bad.append(f"exit {rc} not in {step.rc}: {stderr.strip().splitlines()[-1:]}")
    if "Traceback" in stderr:
        last = [line for line in stderr.splitlines() if line.strip()][-1:]
        bad.append(f"traceback: {last}")
    lines = [line for line in stderr.splitlines() if line.strip()]
    if rc == 2 and not step.usage:
        errors = [line for line in lines if line.startswith("metasft: error:")]
        if len(errors) != 1 or lines[-1] != errors[0]:
            bad.append(f"not one error line at the end: {lines[-3:]}")
        elif step.says and step.says.lower() not in errors[0].lower():
            bad.append(f"error does not name {step.says!r}: {errors[0][:200]}")
    if rc == 2 and step.usage and not (lines and "error:" in lines[-1]):
        bad.append(f"usage error without an error line: {lines[-2:]}")
    if rc == 130 and not (lines and lines[-1].startswith("metasft: interrupted:")):
        bad.append(f"interrupted without its line: {lines[-2:]}")
    if rc == 0 and step.stdout and step.stdout not in stdout:
        bad.append(f"output lacks {step.stdout!r}")
    return bad


def run_case(case: Case, fixtures: Path, scratch: Path) -> Outcome:
    box = Path(tempfile.mkdtemp(prefix=f"{case.name[:40]}.", dir=scratch))
    ws = Workspace(box / "ws", fixtures)
    ws.root.mkdir()
    failures, observed, steps = [], [], []
    try:
        steps = case.build(ws)
        before_tree = tree(ws.root)
        before_results = results(ws.exp_dir) if ws.exp_dir else None
        for step in steps:
            rc, stdout, stderr = run_step(step, ws.root)
            observed.append(str(rc))
            failures += check_step(step, rc, stdout, stderr)
        for p, digest in ws.user_files.items():
            if not p.is_file() or p.is_symlink() and not p.exists():
                failures.append(f"user file {p.relative_to(box)} is gone")
            elif sha(p) != digest:
                failures.append(f"user file {p.relative_to(box)} changed")
        if steps and all(s.rc == (2,) or (s.usage and s.rc == (2,)) for s in steps):
            after = tree(ws.root)
            if after != before_tree:
                diff = sorted(set(after.items()) ^ set(before_tree.items()))
                failures.append(f"a refused command changed {diff[0][0]}" + (f" (+{len(diff) - 1})" if len(diff) > 1 else ""))
        if before_results is not None and not case.changes:
            after = results(ws.exp_dir)
            if case.verdicts_may_change:
                after.pop("verdicts", None)
                before_results.pop("verdicts", None)
            changed = [k for k in before_results if after.get(k) != before_results[k]]
            if changed:
                failures.append(f"finished results changed: {changed[:3]}")
        outside = sorted(set(os.listdir(box)) - {"ws"})
        if outside:
            failures.append(f"wrote outside the case directory: {outside}")
        temps = [k for k in tree(ws.root) if k not in before_tree and
                 (re.search(r"(^|/)\.[^/]*\.tmp$", k) or re.search(r"\.old-[^/]*$", k))]
        if temps:
            failures.append(f"left a temp: {temps[0]}")
        if case.check is not None:
            extra = case.check(ws)
            if extra:
                failures.append(extra)
    except Exception as e:  # the harness itself: reported as the case's failure, never hidden
        failures.append(f"harness: {type(e).__name__}: {e}")
    finally:
        for p in ws.background:
            p.kill()
            p.wait()
        for dirpath, dirnames, _ in os.walk(box):
            for d in dirnames:
                with_mode = Path(dirpath) / d
                if not with_mode.is_symlink():
                    os.chmod(with_mode, 0o755)
        shutil.rmtree(box, ignore_errors=True)
    return Outcome([",".join(map(str, s.rc)) for s in steps], observed, failures)


def build_fixtures(where: Path) -> Path:
    """The finished tiny experiment every run-directory case copies (built once; reused when present)."""
    if (where / "done").is_file():
        return where
    where.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(where / "exp", ignore_errors=True)
    print(f"building the finished tiny experiment in {where / 'exp'} (about 2 minutes) ...", flush=True)
    p = subprocess.run([PY, "-m", "metasft", "run", str(EXP_CFG), "--out", str(where / "exp")], env=ENV,
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"the fixture run failed:\n{p.stderr[-3000:]}")
    (where / "done").write_text("ok\n")
    return where


def repo_state() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True,
                          text=True).stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", action="append", default=[], help="run only the cases whose name holds this text (repeatable)")
    ap.add_argument("--fixtures", type=Path, help="where the finished tiny experiment is kept and reused "
                                                  "(default: a temp directory removed at the end)")
    ap.add_argument("--list", action="store_true", help="print the case names and exit")
    args = ap.parse_args()
    cases = [c for c in CASES if not args.k or any(k in c.name for k in args.k)]
    if len({c.name for c in CASES}) != len(CASES):
        sys.exit("two cases share a name")
    if args.list:
        print("\n".join(c.name for c in cases))
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="metasft_adversarial."))
    fixtures = build_fixtures(args.fixtures or scratch / "fixtures")
    repo_before = repo_state()
    t0, rows = time.time(), []
    print(f"{'case':<56} {'expected':<14} {'observed':<10} result")
    for case in cases:
        t = time.time()
        outcome = run_case(case, fixtures, scratch)
        expected = ";".join(outcome.expected)
        verdict = "PASS" if not outcome.failures else "FAIL"
        rows.append((case.name, verdict, outcome.failures))
        print(f"{case.name:<56} {expected:<14} {';'.join(outcome.observed):<10} {verdict} ({time.time() - t:.0f} s)",
              flush=True)
        for f in outcome.failures:
            print(f"    - {f}", flush=True)
    if repo_state() != repo_before:
        rows.append(("repository untouched", "FAIL", ["the corpus changed files in the checkout"]))
        print("repository untouched: FAIL (git status changed)")
    failed = [r for r in rows if r[1] == "FAIL"]
    print(f"\n{len(rows)} cases, {len(rows) - len(failed)} pass, {len(failed)} fail ({time.time() - t0:.0f} s)")
    if not args.fixtures:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
