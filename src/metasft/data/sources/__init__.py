"""Source loaders, one module per source, each returning `list[Record]`.

Every module exposes `load(split="train", data_root=None, *, seed=0, size=None) -> list[Record]`:
`split` is the source's own split name ("train", "test", ...), `data_root` a local directory laid out
like `../shared/data/` (None: the Hugging Face hub, or the package's own data), `seed` and `size` are
read by the generators that make data (the embedded source) and ignored by file-backed sources.
Your own files and hub datasets are `data.sources` entries read by `custom` through their column
mapping; `load_source` reaches them by name through `user`.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from metasft.data.records import DataError, Record

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
    return module.load(split, root, seed=seed, size=size)
