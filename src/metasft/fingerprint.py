"""Stage fingerprints: what each stage of `metasft run` depends on, so a rerun can tell a finished
stage from a stale one (make's rule; issue 12).

A fingerprint is a flat, JSON-ready {key: value} of
    <dotted config key>   each resolved config key that changes the stage's result (`meta.inner_lr`;
                          list entries by index: `data.tasks.0.size`); loggers, progress, paths,
                          devices and other execution details are left out
    code.<kind>           the stage's code version (VERSIONS: bump it when a stage's output changes)
    after.<stage>         the digest of each upstream stage's fingerprint, so a change reaches
                          everything downstream
    input.data            sha256 of an external `data.dir`'s file hashes (when the run builds none)
    input.source.<name>   sha256 of a data.sources file's content (the data stage: your file edited)
and its digest is the sha256 of that dict as canonical JSON. `metasft run` stores both per stage in
the experiment's manifest.json and reuses a recorded stage only when the digests match.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from metasft import arms
from metasft.config import Config, fields_used_by
from metasft.manifests import DataManifest, read_manifest

# Bump a stage's version when its code starts producing different results for the same settings.
# data 2: eval-task relations in the manifest (issue 9); train 2: balanced task draws, best checkpoint
# by each arm's objective, inner-loop drop and warnings (issue 9); eval 2 and report 2: strict and
# flexible grading, cut-off and looping outputs credited by neither (issue 19); data 3: data.cot also
# writes the eval tasks' shots, the manifest records each source's origin and the shots' working (issue 20)
VERSIONS = {"data": 3, "train": 2, "eval": 2, "similarity": 1, "report": 2}
# SFT arms' own version (code.sft), so a change to them leaves the meta runs' fingerprints alone.
# sft 1: sft_task trains total_epochs over its pool; data.budget_scale scales the distinct examples (issue 9)
SFT_VERSION = 1

# Each stage's config keys: the fields that declare it (config.used_by). data.sources enters the data
# stage's only when used, so directories from before it existed keep their digests.
_DATA, _BASE, _TRAINED = fields_used_by("data"), fields_used_by("train.base"), fields_used_by("train")
_META, _SFT, _SFT_UNPAIRED = fields_used_by("train.meta"), fields_used_by("train.sft"), fields_used_by("train.sft_unpaired")
# eval.models is the trained arms (after.train/*); batch size, cells per batch (same results, see
# tests/eval/test_grid.py) and grading timeout declare no stage
_EVAL, _SIMILARITY, _REPORT = fields_used_by("eval"), fields_used_by("similarity"), fields_used_by("report")


def flatten(obj, prefix: str = "") -> dict:
    """{dotted key: JSON value}; lists of mappings are indexed (`data.tasks.0.size`), other lists kept."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, (list, tuple)) and obj and any(isinstance(v, dict) or dataclasses.is_dataclass(v) for v in obj):
        out = {}
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}.{i}"))
        return out
    return {prefix: json.loads(json.dumps(obj, allow_nan=False))}


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def config_keys(cfg: Config, include: tuple[str, ...]) -> dict:
    """{dotted key: value} of `cfg`'s keys under the fields `include`."""
    return {k: v for k, v in flatten(cfg).items() if _under(k, include)}


def digest(keys: dict) -> str:
    return hashlib.sha256(json.dumps(keys, sort_keys=True, separators=(",", ":"), allow_nan=False)
                          .encode()).hexdigest()


def data_files_digest(data_dir: Path) -> str:
    """sha256 of a built data directory's per-file hashes (its manifest's `files`)."""
    files = read_manifest(Path(data_dir), DataManifest).files
    return digest({rel: info.sha256 for rel, info in files.items()})


def plan(cfg: Config, runs: list[tuple], external_data: Path | None) -> dict[str, dict]:
    """{stage: fingerprint keys} in run order for `metasft run`.

    runs: (run name, arm, name of the meta run an SFT arm's budget is matched to, else None[, the run's
    own config: a matrix variant's, metasft.matrix; default `cfg`]), as the pipeline trains them;
    external_data: a pre-built `data.dir`, else None (the run builds `data`).
    """
    from metasft.budget import pool_scale
    stages: dict[str, dict] = {}

    def add(name: str, kind: str, keys: dict, after: list[str]) -> None:
        keys = {**keys, f"code.{kind}": VERSIONS[kind]}
        for up in after:
            keys[f"after.{up}"] = digest(stages[up])
        stages[name] = keys

    data_in: dict = {}
    data_after: list[str] = []
    if external_data is None:
        from metasft.data.sources.custom import content_sha256
        keys = config_keys(cfg, _DATA if cfg.data.sources else tuple(k for k in _DATA if k != "data.sources"))
        files = {f"input.source.{s.name}": digest(content_sha256(s)) for s in cfg.data.sources if s.path}
        scale = pool_scale(cfg)  # > 1: the build sets extra distinct examples aside (Exp 5)
        add("data", "data", {**keys, **files, **({"pool_scale": scale} if scale > 1 else {})}, [])
        data_after = ["data"]
    else:
        data_in = {"input.data": data_files_digest(external_data)}
    for name, arm, paired, *own in runs:
        run_cfg = own[0] if own else cfg
        if arms.ARMS[arm].kind == "none":
            add(f"train/{name}", "train", {**config_keys(run_cfg, _BASE), "arm": arm}, [])
            continue
        if arms.ARMS[arm].kind == "meta":
            keys = config_keys(run_cfg, (*_TRAINED, *_META))
        else:
            # sft_task's budget is its own (total_epochs over its pool), never FOMAML's
            extra = () if paired or arm == "sft_task" or run_cfg.data.budget != "matched" else _SFT_UNPAIRED
            keys = {**config_keys(run_cfg, (*_TRAINED, *_SFT, *extra)), "code.sft": SFT_VERSION}
        add(f"train/{name}", "train", {**keys, **data_in, "arm": arm},
            data_after + ([f"train/{paired}"] if paired else []))
    trained = [f"train/{run[0]}" for run in runs]
    add("eval", "eval", {**config_keys(cfg, _EVAL), **data_in}, data_after + trained)
    add("similarity", "similarity", {**config_keys(cfg, _SIMILARITY), **data_in}, data_after)
    add("report", "report", config_keys(cfg, _REPORT), data_after + trained + ["eval", "similarity"])
    return stages


def _show(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def changes(old: dict, new: dict, limit: int = 4) -> str:
    """What differs between a recorded fingerprint and this run's, in words: `meta.inner_lr=0.001, now 0.0001`."""
    out = []
    for key in sorted(set(old) | set(new)):
        if key in old and key in new and old[key] == new[key]:
            continue
        if key.startswith("after."):
            stage = key.removeprefix("after.")
            out.append(f"other {stage} results" if key in old and key in new
                       else f"{stage}, now without it" if key in old else f"no {stage}, now with it")
        elif key.startswith("input."):
            what = "data.dir files" if key == "input.data" else f"{key.removeprefix('input.source.')} file content"
            out.append(f"other {what}" if key in old and key in new
                       else f"{key}, now without it" if key in old else f"no {key}, now with it")
        else:
            was = f"{key}={_show(old[key])}" if key in old else f"{key} unset"
            now = _show(new[key]) if key in new else "unset"
            out.append(f"{was}, now {now}")
    if len(out) > limit:
        out = out[:limit] + [f"{len(out) - limit} more"]
    return " and ".join(out) if out else "the same keys but another digest"
