"""GSM8K (Cobbe et al., 2021): grade-school word problems with worked solutions.

Local files: `<data_root>/gsm8k/{train,test}.jsonl` (question, answer). The `answer` field is the
worked solution with calculator marks `<<48/2=24>>` and a last line `#### 72`. Hub: `openai/gsm8k`
config "main", same columns. The calculator marks are the solution's intermediate results: they become
the record's `steps` ("48/2=24"), which step correctness checks (`metasft.eval.scoring`), and are
removed from the worked text.
"""
from __future__ import annotations

import re
from pathlib import Path

from metasft.data.records import DataError, Record, validate
from metasft.data.sources._files import Origin, check_split, hub_rows, read_jsonl

ORIGIN = Origin(hub="openai/gsm8k", local="gsm8k/{train,test}.jsonl",
                get="openai/grade-school-math grade_school_math/data/")
SPLITS = ("train", "test")
SUBJECTS = ("word_problems",)

_CALCULATOR = re.compile(r"<<([^<>]*)>>")


def load(split: str = "train", data_root: Path | None = None, *, seed: int = 0, size: int | None = None) -> list[Record]:
    """GSM8K records, id `gsm8k/<split>/<row index>`."""
    check_split("gsm8k", split, SPLITS)
    if data_root is None:
        rows = [(f"openai/gsm8k main {split} row {i}", row) for i, row in enumerate(hub_rows("openai/gsm8k", "main", split))]
    else:
        path = Path(data_root) / "gsm8k" / f"{split}.jsonl"
        rows = [(f"{path}:{lineno}", row) for lineno, row in read_jsonl(path, "GSM8K JSONL (question, answer)")]
    return [row_to_record(row, split, i, where) for i, (where, row) in enumerate(rows)]


def row_to_record(row: dict, split: str, index: int, where: str) -> Record:
    """One GSM8K row -> Record: the worked text without calculator marks, the marks' equations as
    `steps` (white space removed), the number after `####`."""
    try:
        question, worked = row["question"], row["answer"]
    except KeyError as e:
        raise DataError(f"{where}: missing field {e}") from None
    body, sep, final = worked.rpartition("####")
    if not sep:
        raise DataError(f"{where}: answer has no '#### <number>' line: {worked[-80:]!r}")
    record = Record(
        id=f"gsm8k/{split}/{index}", problem=question.strip(),
        solution=_CALCULATOR.sub("", body).strip(), answer=final.strip().replace(",", ""),
        domain="arithmetic", subject="word_problems", source="gsm8k", answer_type="math",
        steps=tuple(s for s in (re.sub(r"\s+", "", m) for m in _CALCULATOR.findall(body)) if "=" in s),
    )
    return validate(record, where)
