"""MMLU (Hendrycks et al., 2021), the 18 STEM subjects: four-option multiple choice, no solutions.

Local files under `<data_root>/mmlu_stem/`: the original header-less CSVs
`{test,dev,val}/<subject>_<split>.csv` (question, A, B, C, D, answer letter; the September-2020
pre-release) and `final_release_test.jsonl` (question, type = subject, choices, answer index; the
final release), read as split "final_test". Hub: `cais/mmlu`, one config per subject; its "test" is
the final release, so splits "test" and "final_test" both read it there.

MMLU has no worked solutions: `solution` is `placeholder_solution("(X) <option>")`.
"""
from __future__ import annotations

from pathlib import Path

from metasft.data.cot import answer_text, placeholder_solution
from metasft.data.records import DataError, Record, option_letters, validate
from metasft.data.sources._files import Origin, check_split, hub_rows, read_csv, read_jsonl

ORIGIN = Origin(hub="cais/mmlu", local="mmlu_stem/{test,dev,val}/<subject>_<split>.csv and mmlu_stem/final_release_test.jsonl",
                get="hendrycks/test data/ at commit 785eba57, ../shared/data/SOURCES.md")
SPLITS = ("test", "dev", "val", "final_test")
HUB_SPLIT = {"test": "test", "dev": "dev", "val": "validation", "final_test": "test"}
# subject -> design domain; electrical engineering (circuits, fields) counts as physics
DOMAIN_OF_SUBJECT = {
    "abstract_algebra": "algebra", "astronomy": "physics", "college_biology": "biology",
    "college_chemistry": "chemistry", "college_computer_science": "computer_science",
    "college_mathematics": "mixed", "college_physics": "physics", "computer_security": "computer_science",
    "conceptual_physics": "physics", "electrical_engineering": "physics",
    "elementary_mathematics": "arithmetic", "high_school_biology": "biology",
    "high_school_chemistry": "chemistry", "high_school_computer_science": "computer_science",
    "high_school_mathematics": "mixed", "high_school_physics": "physics",
    "high_school_statistics": "statistics", "machine_learning": "computer_science",
}
SUBJECTS = tuple(DOMAIN_OF_SUBJECT)
LETTERS = option_letters(4)


def load(split: str = "test", data_root: Path | None = None, *, seed: int = 0, size: int | None = None) -> list[Record]:
    """MMLU-STEM records of all 18 subjects, id `mmlu_stem/<split>/<subject>/<row index>`."""
    check_split("mmlu_stem", split, SPLITS)
    records = []
    if data_root is None:
        for subject in SUBJECTS:
            for i, row in enumerate(hub_rows("cais/mmlu", subject, HUB_SPLIT[split])):
                where = f"cais/mmlu {subject} {HUB_SPLIT[split]} row {i}"
                records.append(make_record(row["question"], row["choices"], row["answer"], subject, split, i, where))
    elif split == "final_test":
        path = Path(data_root) / "mmlu_stem" / "final_release_test.jsonl"
        counts = dict.fromkeys(SUBJECTS, 0)
        for lineno, row in read_jsonl(path, "MMLU-STEM final-release JSONL (question, type, choices, answer)"):
            where = f"{path}:{lineno}"
            try:
                subject = row["type"]
                question, choices, answer = row["question"], row["choices"], row["answer"]
            except KeyError as e:
                raise DataError(f"{where}: missing field {e}") from None
            if subject not in counts:
                raise DataError(f"{where}: unknown subject {subject!r}; expected one of {SUBJECTS}")
            records.append(make_record(question, choices, answer, subject, split, counts[subject], where))
            counts[subject] += 1
    else:
        for subject in SUBJECTS:
            path = Path(data_root) / "mmlu_stem" / split / f"{subject}_{split}.csv"
            rows = read_csv(path, "MMLU CSV without header: question, A, B, C, D, answer letter", ncols=6)
            for i, (lineno, fields) in enumerate(rows):
                records.append(make_record(fields[0], fields[1:5], fields[5], subject, split, i, f"{path}:{lineno}"))
    return records


def make_record(question: str, choices: list[str], answer: str | int, subject: str, split: str,
                index: int, where: str) -> Record:
    """A row of any MMLU form -> Record; `answer` is a letter (CSV) or a 0-based index (JSONL, hub)."""
    if isinstance(answer, int) and 0 <= answer < len(LETTERS):
        answer = LETTERS[answer]
    letter = str(answer).strip().upper()
    if len(choices) != 4 or letter not in LETTERS:
        raise DataError(f"{where}: expected 4 choices and an answer in A-D or 0-3, "
                        f"got {len(choices)} choices, answer {answer!r}")
    choices = tuple(str(c).strip() for c in choices)
    record = Record(
        id=f"mmlu_stem/{split}/{subject}/{index}", problem=question.strip(),
        solution=placeholder_solution(answer_text(letter, choices)), answer=letter,
        domain=DOMAIN_OF_SUBJECT[subject], subject=subject, source="mmlu_stem",
        answer_type="choice", choices=choices,
    )
    return validate(record, where)
