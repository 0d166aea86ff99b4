"""Small helpers shared by the source loaders: reading files with located errors, the hub, names.

Every reader names the file and line of a bad row (`DataError`), so a broken download is found at
load time and not as a crash in the middle of training. A file that is not there, or a hub dataset
that does not load, is a `SourceUnavailable`, which `load_source` completes with how to get the data.
While `recording_reads()` is active, every file and hub split a loader reads is noted, so the data
build's manifest says where each source actually came from.
"""
from __future__ import annotations

import csv
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from metasft.data.records import DataError

logger = logging.getLogger(__name__)


class SourceUnavailable(DataError):
    """A source's files are not where they were looked for, or its hub copy did not load."""


@dataclass(frozen=True)
class Origin:
    """Where a source module loads from (its `ORIGIN`), for errors, docs and `metasft ls`.

    `hub`: the Hugging Face dataset id(s) read without a root, None when the hub has no usable copy;
    `local`: the files it expects under a root laid out like ../shared/data (`data_root`, or
    `data.roots.<source>`), None for data shipped in a package; `get`: where those files come from.
    """
    hub: str | None
    local: str | None
    get: str = ""


# ("file", Path) / ("hub", "id config split") per read, while a recording_reads() block is active
_READS: ContextVar[list | None] = ContextVar("metasft_source_reads", default=None)


@contextmanager
def recording_reads():
    """Collect what loaders read inside the block: a list of ("file", Path) and ("hub", text)."""
    reads: list = []
    token = _READS.set(reads)
    try:
        yield reads
    finally:
        _READS.reset(token)


def _note(kind: str, what) -> None:
    reads = _READS.get()
    if reads is not None:
        reads.append((kind, what))


def check_split(source: str, split: str, splits: tuple[str, ...]) -> None:
    """Raise DataError if `split` is not one of the source's `splits`."""
    if split not in splits:
        raise DataError(f"{source}: unknown split {split!r}; expected one of {list(splits)}")


def require_file(path: Path, what: str) -> Path:
    """Return `path` if it is a file, else raise DataError saying what was expected there."""
    if not path.is_file():
        raise SourceUnavailable(f"{path}: file not found; expected {what}")
    _note("file", path)
    return path


def read_jsonl(path: Path, what: str) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line of a JSONL file."""
    with require_file(path, what).open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")  # a BOM (Excel, Notepad) is no data
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not UTF-8 text (byte {e.start} of the line: {e.reason})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def read_json(path: Path, what: str):
    """The parsed content of a JSON file."""
    with require_file(path, what).open(encoding="utf-8-sig") as f:  # utf-8-sig: a leading BOM is skipped
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None


def read_csv(path: Path, what: str, *, ncols: int | None = None,
             header: bool = False) -> Iterator[tuple[int, list[str] | dict[str, str]]]:
    """Yield (first line number, row) per CSV record; a row is a dict when the file has a header.

    `ncols` (header-less files): every row must have exactly that many fields.
    """
    with require_file(path, what).open(encoding="utf-8-sig", newline="") as f:  # Excel's CSV starts with a BOM
        reader = csv.reader(f)
        columns = None
        start = 1
        try:
            for fields in reader:
                lineno, start = start, reader.line_num + 1  # quoted fields may span lines
                if header and columns is None:
                    columns = fields
                    continue
                if columns is not None:
                    if len(fields) != len(columns):
                        raise DataError(f"{path}:{lineno}: expected {len(columns)} fields {columns}, got {len(fields)}")
                    yield lineno, dict(zip(columns, fields))
                    continue
                if ncols is not None and len(fields) != ncols:
                    raise DataError(f"{path}:{lineno}: expected {ncols} fields, got {len(fields)}")
                yield lineno, fields
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: near line {start}: not UTF-8 text ({e.reason})") from None


def hub_rows(dataset_id: str, config: str | None, split: str) -> list[dict]:
    """Rows of a Hugging Face hub dataset split, as plain dicts."""
    import datasets  # imported here: reading local files must not need it

    try:
        data = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as e:  # network, auth, missing config: all mean "not loaded from the hub"
        raise SourceUnavailable(f"could not load {dataset_id!r} (config {config!r}, split {split!r}) from the "
                                f"Hugging Face hub: {' '.join(str(e).split())}") from e
    _note("hub", " ".join(str(x) for x in (dataset_id, config, split) if x is not None))
    return [dict(row) for row in data]


_NON_WORD = re.compile(r"[^a-z0-9]+")


def snake(name: str) -> str:
    """'Counting & Probability' -> 'counting_and_probability'; 'units-and-measurement' -> 'units_and_measurement'."""
    return _NON_WORD.sub("_", name.lower().replace("&", " and ")).strip("_")


def log_skips(where: str, skipped: Counter) -> None:
    """Log how many rows were skipped, per documented reason."""
    for reason, count in sorted(skipped.items()):
        logger.info("%s: skipped %d row(s): %s", where, count, reason)
