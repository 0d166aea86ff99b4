"""Source loaders, one module per source, each returning `list[Record]`.

Every module exposes `load(split="train", data_root=None, *, seed=0, size=None) -> list[Record]`:
`split` is the source's own split name ("train", "test", ...), `data_root` a local directory laid out
like `../shared/data/` (None: the Hugging Face hub, or the package's own data), `seed` and `size` are
read by the generators that make data (the embedded source) and ignored by file-backed sources.
Every module also states where it loads from: `ORIGIN` (`_files.Origin`: its hub id, the files it
expects under a root, where to get them). The root is per source: `data.roots.<source>` (a directory,
or "hub"), else `data_root` (`source_root`). Your own files and hub datasets are `data.sources`
entries read by `custom` through their column mapping; `load_source` reaches them by name through `user`.
"""
from __future__ import annotations

import importlib
import os
from collections import defaultdict
from pathlib import Path

from metasft.data.records import DataError, Record
from metasft.data.sources._files import Origin, SourceUnavailable, recording_reads  # recording_reads: for the data build

# name used in configs -> module under metasft.data.sources
SOURCE_MODULES = {
    "embedded": "embedded",
    "math": "math",
    "gsm8k": "gsm8k",
    "scienceqa": "scienceqa",
    "theoremqa": "theoremqa",
    "mmlu_stem": "mmlu_stem",
    "aime": "aime",
    "geometry3k": "geometry3k",
    "amps": "amps",
    "champ": "champ",
}
MANY_FILES = 3  # describe_reads: more files than this in one folder are shown as a pattern
HUB = "hub"  # data.roots.<source>: hub reads that source from the Hugging Face hub whatever data_root says


def origin(name: str) -> Origin:
    """Where built-in source `name` loads from (its module's ORIGIN)."""
    return importlib.import_module(f"metasft.data.sources.{SOURCE_MODULES[name.lower()]}").ORIGIN


def source_root(name: str, data_root: str | Path | None, roots: dict | None = None) -> Path | None:
    """The root source `name` reads: data.roots[name] (HUB: None), else `data_root`; None: the hub."""
    root = (roots or {}).get(name.lower(), data_root)
    return None if root is None or root == HUB else Path(root)


def describe_origin(name: str) -> str:
    """Where built-in source `name` loads from, in a line: "hub X; files Y under a root (from Z)"."""
    where = origin(name)
    parts = [f"hub {where.hub}"] if where.hub else ["no usable hub copy"] if where.local else []
    if where.local:
        parts.append(f"files {where.local} under data_root or data.roots.{name}" + (f" (from {where.get})" if where.get else ""))
    return "; ".join(parts) or where.get


def how_to_get(name: str, root: Path | None) -> str:
    """One clause telling how to make source `name` load: its files under a root, or the hub."""
    where = origin(name)
    ways = []
    if where.local:
        ways.append(f"data.roots.{name}=DIR (or data_root=DIR) with {where.local} under DIR"
                    + (f" (from {where.get})" if where.get else ""))
    if where.hub and root is not None:
        ways.append(f"data.roots.{name}={HUB} to read {where.hub} from the Hugging Face hub")
    return "to get it: " + (", or ".join(ways) or where.get)


def load_source(name: str, split: str = "train", data_root: str | Path | None = None, *,
                seed: int = 0, size: int | None = None, user=()) -> list[Record]:
    """Load source `name` (a data.sources entry of `user`, else built-in: case-insensitive, see
    SOURCE_MODULES) as records."""
    for spec in user:
        if spec.name == name:
            from metasft.data.sources import custom
            return custom.load(split, data_root, seed=seed, size=size, spec=spec)
    key = name.lower()
    if key not in SOURCE_MODULES:
        raise DataError(f"unknown source {name!r}; expected one of {sorted(SOURCE_MODULES)} "
                        f"or a data.sources entry {[s.name for s in user]}")
    module = importlib.import_module(f"metasft.data.sources.{SOURCE_MODULES[key]}")
    root = Path(data_root) if data_root is not None else None
    try:
        return module.load(split, root, seed=seed, size=size)
    except SourceUnavailable as e:
        looked = f"under {root}" if root is not None else "on the Hugging Face hub"
        raise SourceUnavailable(f"source {key!r} (split {split!r}) did not load {looked}: {e}; "
                                f"{how_to_get(key, root)}") from e


def describe_reads(reads: list, root: Path | None) -> list[str]:
    """What one source's loads read (`_files.recording_reads`), for the data manifest: "hub <id> [config]
    <split>" per hub split, then the files, relative to `root`. Many files become a pattern with a count:
    those that differ only in one folder ("geometry3k/train/*/data.json (2101 files)"), then more than
    MANY_FILES in one folder ("mmlu_stem/dev/*_dev.csv (18 files)")."""
    base = Path(root).resolve() if root is not None else None
    files = set()
    for kind, path in reads:
        if kind == "file":
            path = Path(path).resolve()
            files.add(path.relative_to(base) if base is not None and path.is_relative_to(base) else path)
    by_name = defaultdict(list)
    for f in files:
        by_name[f.parent.parent / "*" / f.name].append(f)
    singles = defaultdict(list)
    out = []
    for pattern, group in sorted(by_name.items()):
        if len(group) > 1:
            out.append(f"{pattern} ({len(group)} files)")
        else:
            singles[group[0].parent].append(group[0].name)
    for folder, names in sorted(singles.items()):
        if len(names) > MANY_FILES:
            suffix = os.path.commonprefix([n[::-1] for n in names])[::-1]
            out.append(f"{folder / ('*' + suffix)} ({len(names)} files)")
        else:
            out += [str(folder / n) for n in sorted(names)]
    return [f"hub {what}" for what in sorted({what for kind, what in reads if kind == "hub"})] + sorted(out)
