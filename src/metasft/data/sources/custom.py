"""Your own data: a JSONL / JSON / CSV / parquet file, or a Hugging Face dataset id, read through a
column mapping (`data.sources` entries, config.UserSource).

    data:
      sources:
        - name: my_problems
          path: my_problems.jsonl            # or hub: org/dataset (+ hub_config)
          columns: {problem: question, solution: worked, answer: final, subject: topic, level: difficulty}
      tasks:      [{name: my_algebra, source: my_problems, subject: algebra}]
      eval_tasks: [{name: my_geometry, source: my_problems, subject: geometry, n_shots: [0, 4], test_size: 20}]

Splits: `path` may hold `{split}` (`mine/{split}.jsonl`); else `split_column` picks the rows whose
value is the split name; else every split reads the whole file, and evaluation keeps its test items
and shots disjoint by itself (data/build.py). A bad row is a DataError naming the file and its line
(JSONL, CSV) or row number (JSON, parquet, hub), the column and what was expected.
"""
from __future__ import annotations

import json
import logging
import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from metasft.answers import last_boxed
from metasft.data.cot import answer_text, placeholder_solution
from metasft.data.records import OPTION_LETTERS, DataError, Record, option_letters, validate
from metasft.data.sources._files import hub_rows, read_csv, read_json, read_jsonl, require_file, snake
from metasft.rundir import file_sha256

if TYPE_CHECKING:  # an annotation only: config validates data.sources against this package
    from metasft.config import UserSource

log = logging.getLogger(__name__)

FORMATS = (".jsonl", ".json", ".csv", ".parquet")


def load(split: str = "train", data_root: Path | None = None, *, seed: int = 0, size: int | None = None,
         spec: UserSource) -> list[Record]:
    """Records of `spec` for `split`, id `<name>/<id column or row>`; `data_root`, `seed`, `size` unused."""
    rows = list(_rows(spec, split))
    if spec.split_column is not None:
        found = Counter()
        kept = []
        for where, row in rows:
            value = _cell(row, spec.split_column, "split_column", where)
            found[str(value)] += 1
            if str(value) == split:
                kept.append((where, row))
        if not kept:
            raise DataError(f"source {spec.name!r}: no row has {spec.split_column}={split!r}; values found: "
                            f"{dict(sorted(found.items()))}")
        rows = kept
    if not rows:
        raise DataError(f"source {spec.name!r}: {_origin(spec, split)} has no rows")
    per_split = spec.hub is not None or "{split}" in (spec.path or "")
    records, owner = [], {}
    for i, (where, row) in enumerate(rows):
        record = row_to_record(row, spec, f"{split}/{i}" if per_split else str(i), where)
        if record.id in owner:
            raise DataError(f"{where}: id {record.id!r} repeats {owner[record.id]} (columns.id must be unique)")
        owner[record.id] = where
        records.append(record)
    return records


def _origin(spec: UserSource, split: str) -> str:
    if spec.hub is not None:
        return f"hub dataset {spec.hub!r} (config {spec.hub_config!r}, split {split!r})"
    return str(file_path(spec, split))


def file_path(spec: UserSource, split: str) -> Path:
    return Path(spec.path.replace("{split}", split))


def content_sha256(spec: UserSource) -> dict[str, str]:
    """{file: sha256} of the files a path source reads (every `{split}` file present); {} for the hub.
    Part of the data stage's fingerprint: editing your file makes a rerun rebuild the data."""
    if spec.path is None:
        return {}
    if "{split}" not in spec.path:
        path = Path(spec.path)
        return {str(path): file_sha256(path)} if path.is_file() else {}
    head, _, tail = Path(spec.path).name.partition("{split}")
    folder = Path(spec.path).parent
    files = sorted(folder.glob(f"{head}*{tail}")) if folder.is_dir() else []
    return {str(p): file_sha256(p) for p in files if p.is_file()}


def _rows(spec: UserSource, split: str):
    """(where, row dict) for each row, `where` naming the file and line or row."""
    if spec.hub is not None:
        for i, row in enumerate(hub_rows(spec.hub, spec.hub_config, split)):
            yield f"{spec.hub} {split} row {i}", row
        return
    path = file_path(spec, split)
    suffix = path.suffix.lower()
    what = f"data.sources[{spec.name}] data ({', '.join(FORMATS)})"
    if suffix == ".jsonl":
        for lineno, row in read_jsonl(path, what):
            yield f"{path}:{lineno}", row
    elif suffix == ".json":
        data = read_json(path, what)
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of objects, got {type(data).__name__} (JSON lines: name it .jsonl)")
        for i, row in enumerate(data, start=1):
            if not isinstance(row, dict):
                raise DataError(f"{path} row {i}: expected a JSON object, got {type(row).__name__}")
            yield f"{path} row {i}", row
    elif suffix == ".csv":
        for lineno, row in read_csv(path, what, header=True):
            yield f"{path}:{lineno}", row
    elif suffix == ".parquet":
        import pandas as pd
        try:
            frame = pd.read_parquet(require_file(path, what))
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: not a readable parquet file ({e})") from None
        for i, row in enumerate(frame.to_dict("records"), start=1):
            yield f"{path} row {i}", row
    else:
        raise DataError(f"data.sources[{spec.name}].path {spec.path!r}: unknown format {suffix!r}; expected one of {FORMATS}")


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def _cell(row: dict, column: str, key: str, where: str):
    if column not in row:
        raise DataError(f"{where}: no column {column!r} (columns.{key}); the row has {sorted(row)}")
    return row[column]


def _text(row: dict, column: str, key: str, where: str) -> str:
    value = _cell(row, column, key, where)
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 3.0 from a parquet/pandas column of numbers
    if _missing(value) or not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise DataError(f"{where}: column {column!r} (columns.{key}) must be non-empty text, got {value!r}")
    return str(value).strip()


def _level(value, column: str, where: str) -> int | None:
    if _missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip().removeprefix("Level").strip()
    if isinstance(value, bool) or not text.isdigit() or not 1 <= int(text) <= 5:
        raise DataError(f"{where}: column {column!r} (columns.level) must be a level 1-5 (or 'Level 3', or empty), got {value!r}")
    return int(text)


def _choices(value, column: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            value = json.loads(value)  # CSV: the options as a JSON list
        except json.JSONDecodeError:
            raise DataError(f"{where}: column {column!r} (columns.choices) must be a list of options "
                            f"(in CSV a JSON list such as [\"3\", \"4\"]), got {value!r}") from None
    if hasattr(value, "tolist"):
        value = value.tolist()  # parquet lists arrive as numpy arrays
    if not isinstance(value, list) or len(value) < 2 or any(_missing(v) for v in value):
        raise DataError(f"{where}: column {column!r} (columns.choices) must list at least two non-empty options, got {value!r}")
    if len(value) > len(OPTION_LETTERS):
        raise DataError(f"{where}: column {column!r} (columns.choices) lists {len(value)} options; at most "
                        f"{len(OPTION_LETTERS)} ({OPTION_LETTERS[0]}-{OPTION_LETTERS[-1]}) can be asked and graded")
    return tuple(str(v).strip() for v in value)


def _choice_letter(answer: str, choices: tuple[str, ...], column: str, where: str) -> str:
    """The answer as an option letter: given as the letter, the 0-based index or the option's text."""
    letters = list(option_letters(len(choices)))
    if answer.upper() in letters:
        return answer.upper()
    if answer.isdigit() and int(answer) < len(choices):
        return letters[int(answer)]
    if answer in choices:
        return letters[choices.index(answer)]
    raise DataError(f"{where}: column {column!r} (columns.answer) {answer!r} is not an option: give a letter "
                    f"{letters}, a 0-based index or an option's text {list(choices)}")


def row_to_record(row: dict, spec: UserSource, number: str, where: str) -> Record:
    """One row -> Record through `spec.columns`; `number` ids the row when there is no id column."""
    c = spec.columns
    problem = _text(row, c.problem, "problem", where)
    solution = _text(row, c.solution, "solution", where) if c.solution else None
    choices = _choices(_cell(row, c.choices, "choices", where), c.choices, where) if c.choices else ()
    if c.answer:
        answer = _text(row, c.answer, "answer", where)
    else:
        answer = last_boxed(solution)
        if answer is None:
            raise DataError(f"{where}: column {c.solution!r} (columns.solution) has no \\boxed{{}} answer and "
                            f"columns.answer is null")
    if choices:
        answer = _choice_letter(answer, choices, c.answer, where)
    subject = snake(_text(row, c.subject, "subject", where)) if c.subject else snake(spec.name)
    record = Record(
        id=f"{spec.name}/{_text(row, c.id, 'id', where) if c.id else number}",
        problem=problem, solution=solution or placeholder_solution(answer_text(answer, choices)),
        answer=answer, domain=spec.domain, subject=subject, source=spec.name,
        level=_level(_cell(row, c.level, "level", where), c.level, where) if c.level else None,
        answer_type="choice" if choices else spec.answer_type, choices=choices,
    )
    return validate(record, where)
