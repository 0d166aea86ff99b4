"""The one record schema every source produces, and its checks.

A `Record` is a problem with its worked solution (chain of thought) and final answer. Every loader in
`metasft.data.sources` returns a list of them; splitting, formatting, training and scoring only ever
see this shape.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, fields

from metasft.errors import MetasftError


# How an answer is graded (see metasft.eval.scoring): a mathematical expression, a multiple-choice
# letter, TheoremQA's typed answers.
ANSWER_TYPES = ("math", "choice", "integer", "float", "bool", "list")
# The one option alphabet: choice answers are letters, option i is OPTION_LETTERS[i] (at most 10).
OPTION_LETTERS = "ABCDEFGHIJ"


def option_letters(n_choices: int) -> str:
    """The letters of n options: 'ABCD' for 4."""
    return OPTION_LETTERS[:n_choices]

# The design's eight meta-training domains, plus the broader labels of sources that span them.
DOMAINS = (
    "algebra", "geometry", "number_theory", "combinatorics",
    "calculus", "statistics", "physics", "chemistry",
    "arithmetic", "biology", "computer_science", "finance", "mixed",
)


class DataError(MetasftError, ValueError):
    """Bad input data: the message names the file, row or key and what was expected."""


@dataclass(frozen=True)
class Record:
    """One problem. `level` is 1 (easiest) to 5 where the source has levels, else None.

    `steps` holds the intermediate results of the solution, in order, where the source knows them
    (the embedded generator does); `choices` holds the options of a multiple-choice question, whose
    `answer` is then the option's letter.
    """

    id: str
    problem: str
    solution: str
    answer: str
    domain: str
    subject: str
    source: str
    level: int | None = None
    topic: str = ""
    answer_type: str = "math"
    choices: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()

    def to_row(self) -> dict:
        """A flat dict for parquet/JSON (tuples become lists)."""
        row = asdict(self)
        row["choices"] = list(self.choices)
        row["steps"] = list(self.steps)
        return row

    @classmethod
    def from_row(cls, row: dict, where: str = "row") -> "Record":
        """Inverse of `to_row`; `where` names the file and row for errors."""
        names = {f.name for f in fields(cls)}
        unknown = set(row) - names
        if unknown:
            raise DataError(f"{where}: unknown field(s) {sorted(unknown)}; expected {sorted(names)}")
        row = dict(row)
        for key in ("choices", "steps"):
            value = row.get(key)
            row[key] = tuple(value) if value is not None else ()
        level = row.get("level")
        if level is not None and level == level:  # NaN from pandas means missing
            row["level"] = int(level)
        else:
            row["level"] = None
        try:
            record = cls(**row)
        except TypeError as e:
            raise DataError(f"{where}: {e}") from None
        return validate(record, where)


def validate(record: Record, where: str = "record") -> Record:
    """Raise DataError naming `where` if a field is empty or out of range; return the record."""
    for key in ("id", "problem", "solution", "answer", "domain", "subject", "source"):
        value = getattr(record, key)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where} (id={record.id!r}): field {key!r} must be a non-empty string, got {value!r}")
    if record.level is not None and record.level not in (1, 2, 3, 4, 5):
        raise DataError(f"{where} (id={record.id!r}): level must be 1-5 or missing, got {record.level!r}")
    if record.answer_type not in ANSWER_TYPES:
        raise DataError(f"{where} (id={record.id!r}): answer_type must be one of {ANSWER_TYPES}, got {record.answer_type!r}")
    if len(record.choices) > len(OPTION_LETTERS):
        raise DataError(f"{where} (id={record.id!r}): {len(record.choices)} options; at most {len(OPTION_LETTERS)} "
                        f"({OPTION_LETTERS[0]}-{OPTION_LETTERS[-1]}) can be asked and graded")
    if record.answer_type == "choice":
        letters = option_letters(len(record.choices))
        if len(record.answer) != 1 or record.answer not in letters:
            raise DataError(f"{where} (id={record.id!r}): choice answer {record.answer!r} is not one of {list(letters)}")
    return record


_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w]+")


def normalized_text(text: str) -> str:
    """The key used for deduplication: NFKC, lower case, punctuation and white space removed.

    Two problems that differ only in spacing, case, punctuation or LaTeX delimiters share a key.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = _PUNCT.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def dedup_key(record: Record) -> str:
    """Two records are the same problem when this matches: the normalized problem with its options
    (multiple-choice questions may share a stem such as "Which one of the following is true?")."""
    return normalized_text(" ".join((record.problem, *record.choices)))
