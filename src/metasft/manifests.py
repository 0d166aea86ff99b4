"""The manifests stages hand each other: typed, versioned, one reader and one writer each.

    <data dir>/manifest.json      DataManifest        `metasft data build`: tasks, counts, file hashes
    <run dir>/manifest.json       TrainManifest       `metasft train`: arm, budget, best checkpoint, warnings
    <eval dir>/manifest.json      EvalManifest        `metasft eval`: which data it evaluated
    <experiment>/manifest.json    ExperimentManifest  `metasft run`: stage records, budget checks
    <experiment>/report/manifest.json  ReportManifest  `metasft report`: the files it wrote

Every manifest carries `kind` (rundir.KINDS) and `schema` (SCHEMA). `read_manifest` builds the
dataclass with every key type-checked; a file from an older layout, of another kind, or with a
missing or mistyped key is a ManifestError naming the file and the key. `write_manifest` writes
strict JSON atomically. A directory claimed by a command that has not recorded anything yet holds
only `{"kind", "schema", "status": "started"}` (rundir.OutputDir.start): `has_record` tells.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from metasft.errors import MetasftError
from metasft.rundir import MANIFEST, RunWarning, provenance, write_json

SCHEMA = 2  # 2: typed manifests (2026-11); a manifest without `schema` is layout 1, read by no version since
STARTED = "started"  # status of a directory claimed before its command recorded anything


class ManifestError(MetasftError, ValueError):
    """A manifest that is missing, from an older layout, of another kind, or malformed."""


# ------------------------------------------------------------------------------------ pieces
@dataclass
class Provenance:
    """The code that wrote a manifest (rundir.provenance)."""
    git_commit: str | None
    versions: dict[str, str | None]
    command: list[str] = field(default_factory=list)

    @classmethod
    def now(cls) -> "Provenance":
        return cls(**provenance())


@dataclass
class DataFile:
    sha256: str
    n: int          # records


@dataclass
class SplitCounts:
    n: int
    levels: dict[str, int]  # level ("1".."5", "none") -> records


@dataclass
class Relation:
    """An eval task's relation to meta-training (data.tasks.relation_to_meta_training)."""
    kind: str
    detail: str


@dataclass
class MetaTaskEntry:
    source: str
    splits: dict[str, SplitCounts]


@dataclass
class EvalTaskEntry:
    source: str
    n_shots: list[int]
    unseen: bool
    relation: Relation
    cross_domain: bool
    max_new_tokens: int
    splits: dict[str, SplitCounts]
    # the pool of shots (which sft_task also trains on): the share whose solutions show working
    # (metasft.data.cot.shows_working), and whether it reaches cot.WORKED_SHARE; None: no pool, or not recorded
    shots_worked: float | None = None
    shots_reason: bool | None = None


@dataclass
class SourceRead:
    """Where one source's records came from in a data build (data/build.py)."""
    kind: str               # files | hub | package (generated, or shipped in a Python package)
    root: str | None        # the directory read under (data.roots.<source>, else data_root); None: none
    read: list[str]         # what was read: "hub <id> [config] <split>", files relative to root


@dataclass
class Budget:
    """What a training run consumed (train.session.Budget.summary)."""
    examples: int
    distinct_examples: int
    tokens: int
    response_tokens: int
    optimizer_steps: int
    inner_steps: int
    examples_per_task: dict[str, int] = field(default_factory=dict)


@dataclass
class Best:
    """The checkpoint that became adapter_best; value None when no validation ran."""
    metric: str
    value: float | None
    step: int | None
    val_loss: float | None = None


@dataclass
class InnerLoop:
    """FOMAML / Reptile: did the inner loop lower the support loss (train.fomaml.InnerLoopGuard)."""
    mean_drop: float | None
    threshold: float
    steps: int
    steps_observed: int
    adapted: bool | None


@dataclass
class Pool:
    """The examples an SFT arm drew from (train.run._sft_pool)."""
    distinct: int
    file: str | None = None          # sft_task: the eval task's pool of shots
    split: str | None = None
    epochs: int | None = None
    scale: float | None = None       # sft_mixed: data.budget_scale and what it gave
    base_distinct: int | None = None
    distinct_scale: float | None = None
    per_task: dict[str, int] | None = None
    short: list[str] | None = None


@dataclass
class Fingerprint:
    sha256: str
    keys: dict[str, Any]


@dataclass
class StageRecord:
    status: Literal["running", "finished"]
    fingerprint: Fingerprint
    seconds: float | None = None
    wrote: str | None = None        # the data stage: fingerprint.data_files_digest of what it built


@dataclass
class BudgetCheck:
    """A compared pair's example budgets (pipeline.check_budgets)."""
    a: Budget
    b: Budget
    examples_diff: int
    scale: float


# ---------------------------------------------------------------------------------- manifests
@dataclass
class DataManifest:
    seed: int
    template: str
    data_root: str | None
    tasks: dict[str, MetaTaskEntry]
    eval_tasks: dict[str, EvalTaskEntry]
    dedup_removed: dict[str, int]
    overlap_check: str
    code: Provenance
    files: dict[str, DataFile] = field(default_factory=dict)
    sources: dict[str, SourceRead] = field(default_factory=dict)  # per source name; {} before issue 20

    KIND: typing.ClassVar[str] = "data"


@dataclass
class TrainManifest:
    status: str                     # "running" | "finished"
    arm: str
    name: str
    seed: int
    data_dir: str
    data_files: dict[str, DataFile]
    world_size: int
    fsdp: bool
    code: Provenance
    amendments: list[dict[str, Any]] = field(default_factory=list)  # --resume changes: time, changed, command
    budget: Budget | None = None    # set when finished
    train_seconds: float | None = None
    best: Best | None = None
    pool_examples: int | None = None
    warnings: list[RunWarning] = field(default_factory=list)
    algorithm: str | None = None    # fomaml / reptile
    inner_loop: InnerLoop | None = None
    mixture: str | None = None      # sft arms
    budget_rule: str | None = None
    train_files: list[str] | None = None
    pool: Pool | None = None

    KIND: typing.ClassVar[str] = "train"


@dataclass
class EvalManifest:
    data_dir: str
    code: Provenance

    KIND: typing.ClassVar[str] = "eval"


@dataclass
class ExperimentManifest:
    code: Provenance
    stages: dict[str, StageRecord] = field(default_factory=dict)
    budget_check: BudgetCheck | None = None                       # the primary pair
    budget_checks: dict[str, BudgetCheck] = field(default_factory=dict)  # every pair, with variants

    KIND: typing.ClassVar[str] = "run"


# The stages of an ExperimentManifest in the order `metasft run` runs them (metasft.pipeline); a
# name ending in "/" is a family (train/<run>).
STAGE_ORDER = ("data", "train/", "eval", "similarity", "report")


def stage_rank(name: str) -> int:
    """Position of stage `name` in STAGE_ORDER (an unknown stage after all of them)."""
    return next((i for i, s in enumerate(STAGE_ORDER) if name == s or (s.endswith("/") and name.startswith(s))),
                len(STAGE_ORDER))


@dataclass
class ReportManifest:
    files: list[str]    # every file the report wrote, relative to report/: a rewrite removes these only

    KIND: typing.ClassVar[str] = "report"


Manifest = TypeVar("Manifest", DataManifest, TrainManifest, EvalManifest, ExperimentManifest, ReportManifest)


# ------------------------------------------------------------------------------ read / write
def manifest_path(directory: Path) -> Path:
    return Path(directory) / MANIFEST


def write_manifest(directory: Path,
                   manifest: DataManifest | TrainManifest | EvalManifest | ExperimentManifest | ReportManifest) -> None:
    """`directory`/manifest.json, strict JSON, atomically."""
    write_json(manifest_path(directory), {"kind": manifest.KIND, "schema": SCHEMA, **dataclasses.asdict(manifest)})


def started_record(kind: str, **fields) -> dict:
    """The manifest of a directory claimed by a command that has recorded nothing yet."""
    return {"kind": kind, "schema": SCHEMA, "status": STARTED, **fields}


def _raw(path: Path) -> dict:
    if not path.is_file():
        raise ManifestError(f"{path}: not found")
    try:
        raw = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    return raw


def manifest_status(directory: Path) -> str | None:
    """The `status` a directory's manifest records (STARTED, "running", "finished"); None without one."""
    path = manifest_path(directory)
    return _raw(path).get("status") if path.is_file() else None


def has_record(directory: Path) -> bool:
    """Whether `directory` holds a manifest its command recorded (not missing, not only claimed)."""
    return manifest_path(directory).is_file() and manifest_status(directory) != STARTED


def read_manifest(directory: Path, cls: type[Manifest]) -> Manifest:
    """`directory`/manifest.json as `cls`, every key checked; ManifestError naming the file and key."""
    path = manifest_path(directory)
    raw = _raw(path)
    kind = raw.get("kind")
    if kind != cls.KIND:
        raise ManifestError(f"{path}: kind {kind!r}, expected {cls.KIND!r} (written by another command)")
    schema = raw.get("schema")
    if schema != SCHEMA:
        when = "an older metasft (no schema key)" if schema is None else f"metasft manifest schema {schema!r}"
        raise ManifestError(f"{path}: written by {when}; this version reads schema {SCHEMA}: rerun the command "
                            f"that wrote it into a new --out (or pass it --overwrite)")
    if raw.get("status") == STARTED:
        raise ManifestError(f"{path}: the command that claimed this directory recorded nothing yet (status "
                            f"{STARTED!r}); rerun it")
    body = {k: v for k, v in raw.items() if k not in ("kind", "schema")}
    return _build(cls, body, "", path)


def _build(cls, raw: Any, prefix: str, path: Path):
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: {prefix or 'the manifest'} must be an object, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ManifestError(f"{path}: unknown key {prefix}{unknown[0]!r} (keys here: {sorted(fields)})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        if name in raw:
            kwargs[name] = _typed(raw[name], hints[name], key, path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ManifestError(f"{path}: required key {key!r} is missing")
    return cls(**kwargs)


def _typed(value: Any, tp: Any, key: str, path: Path) -> Any:
    """`value` read as type `tp`: exactly the JSON that write_manifest writes for it."""
    def fail(expected: str):
        raise ManifestError(f"{path}: {key} must be {expected}, got {value!r}")

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _typed(value, inner, key, path)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, f"{key}.", path)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            fail("a list")
        return [_typed(v, item, f"{key}[{i}]", path) for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(tp)
        if not isinstance(value, dict):
            fail("an object")
        return {k: _typed(v, item, f"{key}.{k}", path) for k, v in value.items()}
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        return value if value in allowed else fail(" or ".join(map(repr, allowed)))
    if tp is Any:
        return value
    if tp is bool:
        return value if isinstance(value, bool) else fail("true or false")
    if tp is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else fail("an integer")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            fail("a finite number")
        return float(value)
    if tp is str:
        return value if isinstance(value, str) else fail("a string")
    raise TypeError(f"unsupported manifest type {tp} for {key}")
