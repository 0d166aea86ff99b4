"""Run directories: atomic writes, content hashes, and the manifest that makes a result traceable."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Iterator

PACKAGES = ("metasft", "torch", "transformers", "peft", "datasets", "math-verify", "numpy", "scipy")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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


def read_json(path: Path):
    return json.loads(Path(path).read_text())


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temp directory beside `path`; on success it replaces `path`, on error it is removed.

    No half-written output directory is ever left at `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


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


def run_warnings(manifest: dict) -> list[RunWarning]:
    """The warnings a run manifest records (none for manifests written before they existed)."""
    return [RunWarning(w["kind"], w["message"]) for w in manifest.get("warnings") or []]


# Per-step lines (training steps, evaluation cells) go to the stage's log file only: the console
# has the progress bar, and a line per step would bury it.
STEP_LOG = "metasft.steps"
logging.getLogger(STEP_LOG).propagate = False


@contextlib.contextmanager
def stage_log(path: Path, enabled: bool = True) -> Iterator[None]:
    """While the block runs, append every log record (INFO and up for metasft's loggers) and the
    per-step lines of STEP_LOG to `path`, e.g. `<run>/train.log`. `enabled=False` (ranks > 0): nothing."""
    if not enabled:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root, package, steps = logging.getLogger(), logging.getLogger("metasft"), logging.getLogger(STEP_LOG)
    level = package.level
    if package.getEffectiveLevel() > logging.INFO:  # called as a library (tests): still log to the file
        package.setLevel(logging.INFO)
    root.addHandler(handler)
    steps.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        steps.removeHandler(handler)
        package.setLevel(level)
        handler.close()
