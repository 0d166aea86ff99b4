"""AIME problems (integer answers 0-999), 1983-2024.

Splits:
- "train": the CSV's 1983-2023 problems, so that AIME 2024 stays unseen for evaluation;
- "all": every CSV problem, 1983-2024 (the CSV has only 14 of the 30 problems of 2024);
- "aime24": all 30 AIME 2024 problems, with AoPS wiki solutions.

Local files: `<data_root>/aime/AIME_Dataset_1983_2024.csv` (ID, Year, Problem Number, Question,
Answer, Part; no solutions, so `solution` is the answer-only placeholder) and
`<data_root>/aime/aime24_test.jsonl` (id, problem, solution, answer zero-padded, url). Hub:
`di-zhang-fdu/AIME_1983_2024` (same columns as the CSV) and `Maxwell-Jia/AIME_2024` (ID, Problem,
Solution, Answer).

Ids are `aime/<year>-<part>-<number>` in both files, so duplicates across splits can be found.
Skipped, counted and logged: questions that refer to a figure file (*.png, not included), and
2022-II-8, whose answer is "080 or 081 (both were accepted)".
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from metasft.data.cot import placeholder_solution
from metasft.data.records import DataError, Record, validate
from metasft.data.sources._files import Origin, check_split, hub_rows, log_skips, read_csv, read_jsonl

ORIGIN = Origin(hub="di-zhang-fdu/AIME_1983_2024, Maxwell-Jia/AIME_2024",
                local="aime/AIME_Dataset_1983_2024.csv and aime/aime24_test.jsonl",
                get="the copies listed in ../shared/data/SOURCES.md")
SPLITS = ("train", "all", "aime24")
SUBJECTS = ("competition",)
LAST_TRAIN_YEAR = 2023
SKIP_FIGURE = "question refers to a figure file"
SKIP_ANSWER = "answer is not a single integer"

_FIGURE = re.compile(r"\.png\b", re.IGNORECASE)
_WIKI_ID = re.compile(r"(\d{4})_AIME_(I{1,2})_Problems/Problem_(\d+)")


def load(split: str = "train", data_root: Path | None = None, *, seed: int = 0, size: int | None = None) -> list[Record]:
    """AIME records of `split` (see the module docstring)."""
    check_split("aime", split, SPLITS)
    skipped = Counter()
    records = []
    if split == "aime24":
        if data_root is None:
            rows = [(f"Maxwell-Jia/AIME_2024 train row {i}", row)
                    for i, row in enumerate(hub_rows("Maxwell-Jia/AIME_2024", None, "train"))]
        else:
            path = Path(data_root) / "aime" / "aime24_test.jsonl"
            what = "AIME 2024 JSONL (id, problem, solution, answer, url)"
            rows = [(f"{path}:{n}", row) for n, row in read_jsonl(path, what)]
        for where, row in rows:
            records.append(aime24_row_to_record(row, where))
    else:
        if data_root is None:
            rows = [(f"di-zhang-fdu/AIME_1983_2024 train row {i}", row)
                    for i, row in enumerate(hub_rows("di-zhang-fdu/AIME_1983_2024", None, "train"))]
        else:
            path = Path(data_root) / "aime" / "AIME_Dataset_1983_2024.csv"
            rows = [(f"{path}:{n}", row) for n, row in read_csv(
                path, "AIME CSV with header ID, Year, Problem Number, Question, Answer, Part", header=True)]
        for where, row in rows:
            record = csv_row_to_record(row, where, skipped)
            if record is not None and (split == "all" or int(row["Year"]) <= LAST_TRAIN_YEAR):
                records.append(record)
    log_skips(f"aime/{split}", skipped)
    return records


def csv_row_to_record(row: dict, where: str, skipped: Counter) -> Record | None:
    """One row of the 1983-2024 table (CSV or hub) -> Record, or None (counted) when skipped."""
    try:
        pid, question, answer = str(row["ID"]), str(row["Question"]), str(row["Answer"]).strip()
        int(row["Year"])
    except KeyError as e:
        raise DataError(f"{where}: missing field {e}") from None
    except ValueError:
        raise DataError(f"{where}: Year must be an integer, got {row['Year']!r}") from None
    if _FIGURE.search(question):
        skipped[SKIP_FIGURE] += 1
        return None
    if not answer.isdigit():
        skipped[SKIP_ANSWER] += 1
        return None
    return _record(pid, question, "", answer, where)


def aime24_row_to_record(row: dict, where: str) -> Record:
    """One AIME 2024 row (local JSONL: id, problem, solution, answer, url; hub: ID, Problem, Solution, Answer)."""
    try:
        if "url" in row:
            match = _WIKI_ID.search(row["url"])
            pid = "-".join(match.groups()) if match else f"2024-{row['id']}"
            question, solution, answer = row["problem"], row["solution"], row["answer"]
        else:
            pid, question, solution, answer = row["ID"], row["Problem"], row["Solution"], row["Answer"]
    except KeyError as e:
        raise DataError(f"{where}: missing field {e}") from None
    answer = str(answer).strip()
    if not answer.isdigit():
        raise DataError(f"{where}: AIME answer must be an integer, got {answer!r}")
    return _record(str(pid), question, solution, answer, where)


def _record(pid: str, question: str, solution: str, answer: str, where: str) -> Record:
    answer = str(int(answer))  # "025" -> "25"
    record = Record(
        id=f"aime/{pid}", problem=question.strip(),
        solution=solution.strip() or placeholder_solution(answer), answer=answer,
        domain="mixed", subject="competition", source="aime", answer_type="integer",
    )
    return validate(record, where)
