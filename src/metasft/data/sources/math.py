"""MATH (Hendrycks et al., 2021): competition problems with worked solutions, 7 subjects, levels 1-5.

Local files (`<data_root>/math/`): `train.jsonl`, `test.jsonl` (the original 7,500/5,000 split;
fields problem, level "Level N", type, solution, unique_id) and `math500_test.jsonl` (PRM800K's
MATH-500 subset of the test split, which adds an `answer` field). Hub: `EleutherAI/hendrycks_math`
(one config per subject) and `HuggingFaceH4/MATH-500`.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from metasft.data.records import DataError, Record, validate
from metasft.answers import last_boxed
from metasft.data.sources._files import Origin, check_split, hub_rows, log_skips, read_jsonl, snake

ORIGIN = Origin(hub="EleutherAI/hendrycks_math, HuggingFaceH4/MATH-500", local="math/{train,test,math500_test}.jsonl",
                get="the MATH release as JSONL, ../shared/data/SOURCES.md")
SPLITS = ("train", "test", "math500")
SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
            "number_theory", "prealgebra", "precalculus")
DOMAIN_OF_SUBJECT = {
    "algebra": "algebra", "intermediate_algebra": "algebra", "prealgebra": "algebra",
    "geometry": "geometry", "number_theory": "number_theory",
    "counting_and_probability": "combinatorics", "precalculus": "calculus",
}
FILES = {"train": "train.jsonl", "test": "test.jsonl", "math500": "math500_test.jsonl"}


def load(split: str = "train", data_root: Path | None = None, *, seed: int = 0, size: int | None = None) -> list[Record]:
    """MATH records; `answer` is the last \\boxed{} of the solution."""
    check_split("math", split, SPLITS)
    skipped = Counter()
    records = []
    if data_root is not None:
        path = Path(data_root) / "math" / FILES[split]
        for lineno, row in read_jsonl(path, f"MATH {split} split as JSONL (problem, level, type, solution, unique_id)"):
            record = row_to_record(row, f"{path}:{lineno}")
            if record is None:
                skipped["solution has no \\boxed{} answer or an empty one"] += 1
            else:
                records.append(record)
    elif split == "math500":
        for i, row in enumerate(hub_rows("HuggingFaceH4/MATH-500", None, "test")):
            records.append(row_to_record(row, f"HuggingFaceH4/MATH-500 test row {i}"))
    else:
        for subject in SUBJECTS:
            for i, row in enumerate(hub_rows("EleutherAI/hendrycks_math", subject, split)):
                # the hub rows carry no file name: number them within subject and split
                row = {**row, "unique_id": f"{split}/{subject}/hub{i}"}
                record = row_to_record(row, f"EleutherAI/hendrycks_math {subject} {split} row {i}")
                if record is None:
                    skipped["solution has no \\boxed{} answer or an empty one"] += 1
                else:
                    records.append(record)
    log_skips(f"math/{split}", skipped)
    return records


def row_to_record(row: dict, where: str) -> Record | None:
    """One MATH row (file or hub; `type` or MATH-500's `subject`) -> Record; None without a boxed answer."""
    try:
        problem, solution, unique_id = row["problem"], row["solution"], row["unique_id"]
        subject_name = row["type"] if "type" in row else row["subject"]
        level = row["level"]
    except KeyError as e:
        raise DataError(f"{where}: missing field {e}") from None
    for key, value in (("problem", problem), ("solution", solution), ("unique_id", unique_id), ("type", subject_name)):
        if not isinstance(value, str):
            raise DataError(f"{where}: field {key!r} must be a string, got {value!r}")
    answer = last_boxed(solution)
    if answer is None:
        return None
    if "answer" in row and row["answer"].strip() != answer:
        raise DataError(f"{where}: field answer {row['answer']!r} differs from the solution's \\boxed{{{answer}}}")
    subject = snake(subject_name)
    if subject not in DOMAIN_OF_SUBJECT:
        raise DataError(f"{where}: unknown MATH subject {subject_name!r}; expected one of {SUBJECTS}")
    record = Record(
        id=f"math/{unique_id}", problem=problem, solution=solution, answer=answer,
        domain=DOMAIN_OF_SUBJECT[subject], subject=subject, source="math",
        level=_level(level, where), answer_type="math",
    )
    return validate(record, where)


def _level(value, where: str) -> int | None:
    """'Level 3' or 3 -> 3; 'Level ?' (two train problems) -> None."""
    if isinstance(value, int):
        return value
    text = str(value).removeprefix("Level").strip()
    if text == "?":
        return None
    if not text.isdigit():
        raise DataError(f"{where}: level must look like 'Level 3', got {value!r}")
    return int(text)
