"""Run directories: atomic writes, content hashes, and the manifest that makes a result traceable."""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Iterator

from metasft.errors import MetasftError

log = logging.getLogger(__name__)

PACKAGES = ("metasft", "torch", "transformers", "peft", "datasets", "math-verify", "numpy", "scipy")


KINDS = ("data", "train", "eval", "run")  # what wrote an output directory (its manifest's `kind`)
MANIFEST = "manifest.json"
JOBS_DIR = "jobs"  # in an experiment directory: `metasft launch`'s job scripts, pickles and logs (submitit's)
LOCK = ".metasft.lock"  # in a run / experiment directory while a command writes it (see `hold`)


class OutputError(MetasftError):
    """`--out` is not this command's to write: a file, or a directory something else wrote."""


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _default_mode(path: Path, is_dir: bool) -> None:
    """mkstemp / mkdtemp create 0600 / 0700: give the temp the mode a plain open / mkdir would."""
    os.chmod(path, (0o777 if is_dir else 0o666) & ~_umask())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        _default_mode(Path(tmp), is_dir=False)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


# ----------------------------------------------------------------------------------------- layout
# A built data directory (metasft data build): every file path inside it comes from here.
EVAL_DATA_PREFIX = "data/eval/"


def meta_train_file(task: str, split: str) -> str:
    """A meta-training task's split (support, query, val, test), relative to the data directory."""
    return f"data/meta_train/{task}_{split}.parquet"


def pooled_file(task: str) -> str:
    """A meta-training task's support + query pooled (the SFT-Mixed arm's data, the design's
    data/processed/<task>_all.parquet), relative to the data directory."""
    return f"data/processed/{task}_all.parquet"


# The run directories' layout: every file and folder name that more than one module writes or reads
# (tests/test_contracts.py fails on one written out again elsewhere, in src/ or tests/).
# any output directory (besides MANIFEST, LOCK and JOBS_DIR above)
CONFIG_FILE = "config.yaml"            # the resolved config of a run or an experiment
DATASET_DIR = "dataset"                # a data build of its own (metasft run; metasft train without data.dir)
# an experiment directory (metasft run): DATASET_DIR, then
RUNS_DIR = "runs"                      # runs/<name>: one training run each
EVAL_DIR = "eval"                      # the evaluation
REPORT_DIR = "report"                  # the report
# a training run's directory (metasft train)
METRICS_FILE = "metrics.jsonl"         # one line per log step
TRAIN_LOG = "train.log"
CHECKPOINTS_DIR = "checkpoints"        # checkpoints/step_000500/
ADAPTER_DIR = "adapter"                # the final adapter (PEFT's layout)
BEST_ADAPTER_DIR = "adapter_best"      # the best validation step's adapter, the one evaluated (absent: adapter/ is it)
FRESH_LORA_FILE = "fresh_lora.json"    # the base arm's adapter: the seed and LoRA settings it is built from on load
LOGGER_DIRS = ("tensorboard", "wandb")  # trainer.loggers' own
# what a training run writes at its top level, all a redo may remove
TRAIN_OUTPUTS = (CONFIG_FILE, MANIFEST, METRICS_FILE, TRAIN_LOG, CHECKPOINTS_DIR, ADAPTER_DIR, BEST_ADAPTER_DIR,
                 FRESH_LORA_FILE, *LOGGER_DIRS, DATASET_DIR)
# an evaluation directory (metasft eval; an experiment's eval/)
RESULTS_FILE = "results.sqlite"        # every cell and prediction (metasft.eval.results)
EVAL_CONFIG = "eval_config.yaml"       # the evaluation's resolved config
EVAL_LOG = "eval.log"
SIMILARITY_FILE = "task_similarity.json"  # task similarity at the base model (metasft.eval.similarity)
# a report directory (metasft report; an experiment's report/)
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
VERDICTS_FILE = "verdicts.json"
SUMMARY_CSV = "summary.csv"
COMPARISON_CSV = "comparison.csv"
FIGURES_DIR = "figures"
LAYOUT_NAMES = (MANIFEST, JOBS_DIR, LOCK, CONFIG_FILE, DATASET_DIR, RUNS_DIR, EVAL_DIR, REPORT_DIR, METRICS_FILE,
                TRAIN_LOG, CHECKPOINTS_DIR, ADAPTER_DIR, BEST_ADAPTER_DIR, FRESH_LORA_FILE, RESULTS_FILE, EVAL_CONFIG,
                EVAL_LOG, SIMILARITY_FILE, REPORT_MD, REPORT_HTML, VERDICTS_FILE, SUMMARY_CSV, COMPARISON_CSV, FIGURES_DIR)


def eval_task_file(task: str, split: str) -> str:
    """An eval task's test items (split "test") or pool of shots ("shots"), relative to the data directory."""
    return f"{EVAL_DATA_PREFIX}{task}_{split}.parquet"


def strict_json(obj):
    """`obj` with every non-finite float made JSON-safe: NaN -> None, +-inf -> "inf" / "-inf" (JSON
    has no NaN or Infinity: a browser or jq rejects them); numpy scalars as plain numbers."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def write_json(path: Path, obj) -> None:
    """Strict JSON (see `strict_json`), atomically."""
    text = json.dumps(strict_json(obj), indent=2, sort_keys=True, ensure_ascii=False, default=str, allow_nan=False)
    atomic_write_text(path, text + "\n")


@contextlib.contextmanager
def atomic_dir(path: Path, owned: set[str] | None = None) -> Iterator[Path]:
    """Yield a temp directory beside `path`; on success it replaces `path`, on error it is removed.

    No half-written output directory is ever left at `path`. `owned`: the relative paths of the old
    `path` that metasft wrote; only those are deleted, anything else is moved into the new directory
    (or, where the new one has that name, kept beside it). None: the old directory is all metasft's.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        _default_mode(tmp, is_dir=True)
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        if (path / LOCK).is_file():  # the same inode, so the holder's lock stays on `path` throughout
            os.link(path / LOCK, tmp / LOCK)
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        if owned is not None:
            _keep_foreign(old, path, owned)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def _keep_foreign(old: Path, new: Path, owned: set[str]) -> None:
    """Move the files of `old` that are not `owned` to the same place in `new`; the rest to a
    visible `<new>.old-<time>` (whatever name the new directory already uses)."""
    clash = []
    for f in sorted(p for p in old.rglob("*") if p.is_file() or p.is_symlink()):
        rel = f.relative_to(old).as_posix()
        if rel in owned or rel == LOCK:
            continue
        if (new / rel).exists():
            clash.append(rel)
        else:
            os.renames(f, new / rel)
    if clash:
        aside = _aside_name(new)
        for rel in clash:
            os.renames(old / rel, aside / rel)
        log.warning("%s: kept %d file(s) metasft did not write in %s (their names are taken now)",
                    new, len(clash), aside)


def _aside_name(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = path.with_name(f"{path.name}.old-{stamp}"), 1
    while aside.exists() or aside.is_symlink():
        n += 1
        aside = path.with_name(f"{path.name}.old-{stamp}-{n}")
    return aside


def inside(path: Path, directory: Path) -> bool:
    """`path` lies strictly inside `directory`, symbolic links and `..` resolved (but not the last
    name's link: a link inside is inside, whatever it points to)."""
    path, directory = Path(path), Path(directory).resolve()
    parent = path.parent.resolve()
    return (parent == directory or directory in parent.parents) and path.name not in ("", ".", "..")


def remove_owned(directory: Path, owned) -> list[str]:
    """Remove the files and directories of `directory` named in `owned` (paths relative to it) and the
    directories that leaves empty; keep everything else. Returns the names left in `directory` (the
    directory itself is removed when none are)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    for rel in sorted(owned):
        p = directory / rel
        if not inside(p, directory):  # a manifest edited or damaged: its list names no file outside
            log.warning("not removing %s: a record of %s lists it, but it is not inside it", rel, directory)
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        parent = p.parent
        while parent != directory and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    left = sorted(os.listdir(directory))
    if not left:
        directory.rmdir()
    return left


def remove_stale_temps(directory: Path, name_pattern: str) -> list[Path]:
    """Remove the temp files / directories that an atomic write of a name matching `name_pattern`
    left in `directory` when it was killed (`.NAME.xxxxxxxx.tmp`, `.NAME.old`); return them."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = re.compile(rf"^\.(?:{name_pattern})\.(?:[a-z0-9_]{{8}}\.tmp|old)$")
    removed = []
    for p in directory.iterdir():
        if stale.match(p.name):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    if removed:
        log.info("removed %d temp file(s) left by an interrupted write in %s", len(removed), directory)
    return removed


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit() -> str | None:
    """The commit of the metasft checkout, with '+dirty' when it has uncommitted changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def versions() -> dict:
    """Versions of Python, the platform and the packages a result depends on."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance() -> dict:
    """What every manifest records about the code that produced it."""
    return {"git_commit": git_commit(), "versions": versions(), "command": sys.argv}


class JsonlWriter:
    """Append-only JSON-lines log, flushed per line so a killed run keeps what it logged."""

    def __init__(self, path: Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._f.write(json.dumps(strict_json(row), ensure_ascii=False, default=float, allow_nan=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


# ------------------------------------------------------------------ a training run's warnings
# runs/<run>/manifest.json "warnings": what a run found about itself that makes its result mean less
# than its name says. Written by metasft.train.run, read by the report (which opens with a banner).
NO_ADAPTATION = "inner_loop_did_not_adapt"
BEST_AT_STEP_0 = "best_checkpoint_at_step_0"
POOL_SHORT = "pool_short_of_budget_scale"  # an SFT run got fewer new distinct examples than budget_scale asks


@dataclass(frozen=True)
class RunWarning:
    kind: str       # NO_ADAPTATION | BEST_AT_STEP_0 | POOL_SHORT
    message: str    # one line, with the measured numbers

    def to_dict(self) -> dict:
        return asdict(self)


# Per-step lines (training steps, evaluation cells) go to the stage's log file only: the console
# has the progress bar, and a line per step would bury it.
STEP_LOG = "metasft.steps"
logging.getLogger(STEP_LOG).propagate = False


class _LogFile(logging.Handler):
    """A log file that, when `deferred`, holds its records until `open()`: a command that fails
    before its record is written leaves the file as it was."""

    def __init__(self, path: Path, deferred: bool):
        super().__init__()
        self.path, self._buffer, self._file = Path(path), [], None
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        if not deferred:
            self.open()

    def open(self) -> None:
        if self._file is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = logging.FileHandler(self.path, encoding="utf-8")
        self._file.setFormatter(self.formatter)
        for record in self._buffer:
            self._file.emit(record)
        self._buffer = []

    def emit(self, record: logging.LogRecord) -> None:
        if self._file is not None:
            self._file.emit(record)
        else:
            self._buffer.append(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


@contextlib.contextmanager
def stage_log(path: Path, enabled: bool = True, deferred: bool = False) -> Iterator[_LogFile | None]:
    """While the block runs, append every log record (INFO and up for metasft's loggers) and the
    per-step lines of STEP_LOG to `path`, e.g. `<run>/train.log`. `enabled=False` (ranks > 0): nothing.
    `deferred`: the file is written from the yielded handler's `open()` on (earlier records included)."""
    if not enabled:
        yield None
        return
    handler = _LogFile(path, deferred)
    root, package, steps = logging.getLogger(), logging.getLogger("metasft"), logging.getLogger(STEP_LOG)
    level = package.level
    if package.getEffectiveLevel() > logging.INFO:  # called as a library (tests): still log to the file
        package.setLevel(logging.INFO)
    root.addHandler(handler)
    steps.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        steps.removeHandler(handler)
        package.setLevel(level)
        handler.close()


# ----------------------------------------------------------------------------------------- --out
def dir_kind(path: Path) -> str | None:
    """Which command kind wrote directory `path` (KINDS), from its manifest; None if not metasft's."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (ValueError, OSError):
            return None
        if not isinstance(manifest, dict):
            return None
        if manifest.get("kind") in KINDS:
            return manifest["kind"]
        # manifests written before they named their kind
        for kind, key in (("run", "stages"), ("train", "arm"), ("data", "eval_tasks")):
            if key in manifest:
                return kind
        return None
    return "eval" if (path / RESULTS_FILE).is_file() else None  # evaluations before their manifest


# ----------------------------------------------------------------------- one writer per directory
class DirectoryInUse(OutputError):
    """Another metasft process is writing the directory (it holds its lock, see `lock_dir`)."""


@dataclass
class _Held:
    path: Path      # the lock file
    file: object    # its open file, which holds the flock
    depth: int      # lock_dir calls of this process not yet undone by unlock_dir


_HELD: dict[Path, _Held] = {}  # this process's locks, by resolved directory


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} ({info['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its pid yet"


def lock_dir(directory: Path) -> Path | None:
    """Make this process the only metasft writer of existing `directory` until `unlock_dir`.

    An advisory lock (fcntl.flock) on `directory`/.metasft.lock, which names the holder (pid, command);
    a second writer gets DirectoryInUse naming it. Re-entrant within a process (a command's stages
    lock what the command already holds). The kernel drops the lock when the process dies however it
    dies, so a killed run never leaves a directory locked. Under torchrun only rank 0 locks: the
    other ranks write beside it, as one writer. Returns the key for `unlock_dir` (None: not locked).
    """
    if int(os.environ.get("RANK", "0")) > 0:
        return None
    key = Path(directory).resolve()
    if key in _HELD:
        _HELD[key].depth += 1
        return key
    path = key / LOCK
    while True:
        f = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise DirectoryInUse(f"{directory} is being written by another metasft process, {_holder(path)}; "
                                 f"wait for it to end or stop it (one writer per directory)") from None
        try:  # a holder releasing removes the file: if it went between our open and our flock, lock the new one
            if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        f.close()
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"pid": os.getpid(), "command": " ".join(["metasft", *sys.argv[1:]])}) + "\n")
    f.flush()
    _HELD[key] = _Held(path, f, 1)
    return key


def unlock_dir(key: Path | None, moved_to: Path | None = None) -> None:
    """Undo one `lock_dir`; the last one removes the lock file and releases the lock. `moved_to`:
    where the directory is now, if it was moved while locked."""
    if key is None or key not in _HELD:
        return
    held = _HELD[key]
    held.depth -= 1
    if held.depth:
        return
    del _HELD[key]
    path = held.path if moved_to is None else Path(moved_to) / LOCK
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_ino == os.fstat(held.file.fileno()).st_ino:
            os.unlink(path)  # still holding it: whoever opens the file next finds it gone and retries
    held.file.close()


@contextlib.contextmanager
def hold(directory: Path) -> Iterator[None]:
    """`lock_dir(directory)` while the block runs (a command that writes an existing directory)."""
    key = lock_dir(directory)
    try:
        yield
    finally:
        unlock_dir(key)


class OutputDir:
    """`--out` of one command: a new path, an empty directory or one the same kind wrote before.

    Anything else is refused, unless `overwrite`, which first moves it aside to a visible
    `<path>.old-<time>`. Used as a context: if the command fails (an exception, not a kill) before
    `commit()`, what it created there is removed again and a directory moved aside is put back, so a
    refused or failed command leaves what was there as it was. `start()` marks a directory that has
    no manifest yet as this kind's (a killed attempt is recognised on the rerun). `lock`: the
    directory is created at once and locked (`lock_dir`) until the context ends, before anything in
    it is looked at; a second writer is refused.
    """

    def __init__(self, path: Path, kind: str, *, overwrite: bool = False, flag: str = "--out", lock: bool = True):
        self.path, self.kind, self.flag, self.committed = Path(path), kind, flag, False
        self._aside: Path | None = None
        self._lock: Path | None = None
        path = self.path
        if path.is_symlink() and not path.exists():
            raise OutputError(f"{flag} {path}: a broken symbolic link")
        if lock and path.is_dir():
            self._lock = lock_dir(path)
        try:
            self._claim(overwrite, lock)
        except BaseException:
            unlock_dir(self._lock)
            raise

    def _claim(self, overwrite: bool, lock: bool) -> None:
        path, kind, flag = self.path, self.kind, self.flag
        if path.exists() and not (path.is_dir() and (not _entries(path) or dir_kind(path) == kind)):
            if not overwrite:
                found = ("a file" if not path.is_dir() else
                         f"a {dir_kind(path)} directory" if dir_kind(path) else
                         f"a directory whose {MANIFEST} is not a metasft record (unreadable, cut short or another "
                         f"program's)" if (path / MANIFEST).exists() else "a non-empty directory metasft did not write")
                raise OutputError(f"{flag} {path} is {found}, not a {kind} directory; choose a new path "
                                  f"or pass --overwrite to move it aside")
        if overwrite and path.exists() and (not path.is_dir() or _entries(path)):
            aside = _aside_name(path)
            os.replace(path, aside)
            self._aside = aside
            unlock_dir(self._lock, moved_to=aside)  # the new directory is locked below
            self._lock = None
            log.warning("--overwrite: moved the old %s to %s (put back if this command fails)", path, aside)
        self._created = self._missing_ancestors(path)
        if lock and not path.exists():
            self._mkdir()
            self._lock = lock_dir(path)
        self._before = _entries(path) if path.is_dir() else set()

    def _mkdir(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{self.flag} {self.path}: cannot create it: {e.strerror}") from None

    @staticmethod
    def _missing_ancestors(path: Path) -> list[Path]:
        out = []
        while not path.exists() and path != path.parent:
            out.append(path)
            path = path.parent
        return out  # deepest first

    def start(self, record: dict) -> None:
        """Create the directory and, if it has no manifest, write `record` (metasft.manifests.started_record
        of this kind) as its manifest."""
        self._mkdir()
        if not (self.path / MANIFEST).is_file():
            write_json(self.path / MANIFEST, record)

    def commit(self) -> None:
        """From here on the directory holds a record worth keeping, even if the command fails."""
        self.committed = True

    def __enter__(self) -> "OutputDir":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            failed = exc_type is not None and not self.committed
            if failed and (issubclass(exc_type, Exception) or self._aside is not None):
                self._undo()
        finally:
            unlock_dir(self._lock)
        for p in self._created:  # created to be locked, then left empty: not there, as before
            with contextlib.suppress(OSError):
                p.rmdir()

    def _undo(self) -> None:
        """Remove what this command created; put back the directory --overwrite moved aside."""
        if self._created:
            shutil.rmtree(self.path, ignore_errors=True)
            for p in self._created[1:]:
                with contextlib.suppress(OSError):
                    p.rmdir()  # only if empty
        elif self.path.is_dir():
            for name in _entries(self.path) - self._before:
                p = self.path / name
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        if self._aside is not None:
            if self.path.exists() or self.path.is_symlink():
                log.warning("%s was written by another process: the old directory stays at %s", self.path, self._aside)
            else:
                os.replace(self._aside, self.path)
                log.warning("the command failed: put the old %s back from %s", self.path, self._aside)


def _entries(path: Path) -> set[str]:
    """The names in directory `path`, less the lock file of its writer."""
    return set(os.listdir(path)) - {LOCK}
