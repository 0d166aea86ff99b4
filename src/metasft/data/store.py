"""Parquet files of records with their SFT prompt and response: one row per example."""
from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from metasft.data.formats import to_sft
from metasft.data.records import DataError, Record
from metasft.rundir import atomic_write_bytes

SCHEMA = pa.schema([
    ("id", pa.string()), ("problem", pa.string()), ("solution", pa.string()), ("answer", pa.string()),
    ("domain", pa.string()), ("subject", pa.string()), ("source", pa.string()), ("level", pa.int64()),
    ("topic", pa.string()), ("answer_type", pa.string()), ("choices", pa.list_(pa.string())),
    ("steps", pa.list_(pa.string())), ("prompt", pa.string()), ("response", pa.string()),
])
SFT_COLUMNS = ("prompt", "response")


def write_examples(path: Path, records: list[Record], template: str) -> None:
    """Write records with their SFT prompt/response (template `en` or `zh`), atomically.

    The bytes depend only on the records and template, so a rebuild with one seed is identical.
    """
    rows = []
    for r in records:
        sft = to_sft(r, template)
        rows.append({**r.to_row(), "prompt": sft["prompt"], "response": sft["response"]})
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    atomic_write_bytes(Path(path), buf.getvalue())


def read_table(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected a parquet file written by `metasft data build`)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file: {e}") from None
    missing = [c for c in SCHEMA.names if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected {SCHEMA.names}")
    return table.to_pylist()


def read_records(path: Path) -> list[Record]:
    """The records of a file written by `write_examples` (row numbers in errors are 1-based)."""
    return [Record.from_row({k: v for k, v in row.items() if k not in SFT_COLUMNS}, f"{path} row {i}")
            for i, row in enumerate(read_table(path), 1)]


def read_sft(path: Path) -> list[dict]:
    """Rows with `prompt`, `response` and the record's `id`, `level`, `answer`, ..., checked non-empty."""
    rows = read_table(path)
    for i, row in enumerate(rows, 1):
        for key in SFT_COLUMNS:
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DataError(f"{path} row {i}: {key!r} must be a non-empty string, got {row.get(key)!r}")
    return rows
