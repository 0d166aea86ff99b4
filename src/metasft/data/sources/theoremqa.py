"""TheoremQA (Chen et al., 2023): 800 university-level questions, each driven by a named theorem,
across Math, EE&CS, Physics and Finance, with typed answers (integer, float, bool, list, option).

Local file: `<data_root>/theoremqa/theoremqa_test.json` (the v1 release: a JSON list with Question,
Answer, Answer_type, Picture, id, explanation, theorem, subfield, field). Hub: `TIGER-Lab/TheoremQA`
(split test), which has only Question, Answer, Answer_type and Picture; its ids are row indices.

Choices: the 18 "option" questions list "(a) ... (b) ..." inside the question; they become
answer_type "choice" with the options moved to `choices` (the formatter prints them); the
question keeps its stem and a specific closing question ("which color is brighter?"), while a
generic "Which option is correct?" is dropped. Skipped, counted and logged: questions with a
Picture (53), and option questions whose options are not in the text.

Solutions: none. The release's `explanation` is "NONE" or the path of a file that was never published
(all 747 questions without a picture), and the hub copy has no such column, so every record gets
`placeholder_solution(answer, theorem)` ("Using <theorem>, the answer is X."): an answer-only solution.
Only a configured CoT endpoint (data.cot) replaces it, in meta-training tasks and in eval tasks' pools
of shots (data.cot.eval_shots); test items keep it, and without data.cot the shots stay answer-only
(the data manifest's `shots_reason` is then false for a TheoremQA eval task).
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from metasft.data.cot import answer_text, placeholder_solution
from metasft.data.records import DataError, Record, option_letters, validate
from metasft.data.sources._files import Origin, check_split, hub_rows, log_skips, read_json, snake

ORIGIN = Origin(hub="TIGER-Lab/TheoremQA", local="theoremqa/theoremqa_test.json",
                get="wenhuchen/TheoremQA theoremqa_test.json")
SPLITS = ("test",)
ANSWER_TYPES = {"integer": "integer", "float": "float", "bool": "bool",
                "list of integer": "list", "list of float": "list", "option": "choice"}
DOMAIN_OF_FIELD = {"EECS": "computer_science", "Physics": "physics", "Finance": "finance"}
# Math subfields that are one of the design's domains; other Math subfields are "mixed"
DOMAIN_OF_MATH_SUBFIELD = {
    "calculus": "calculus", "combinatorics": "combinatorics", "algebra": "algebra",
    "number_theory": "number_theory", "geometry": "geometry",
    "statistics": "statistics", "probability_theory": "statistics",
}
SKIP_PICTURE = "question needs a picture"
SKIP_OPTIONS = "option question without its options in the text"

_OPTION = re.compile(r"(?<![\w$\\])\(([a-h])\)\s*:?\s*")
_CLOSING_QUESTION = re.compile(r"^(.*?)[\s.;,]*\b((?:Which|which)\b[^?]*\?)\s*$", re.DOTALL)
_GENERIC_CLOSING = re.compile(r"which (?:option|one) is correct\?", re.IGNORECASE)
_FILE_PATH = re.compile(r"^\S+\.(?:png|jpe?g|pdf|txt)$")  # the release lists unpublished solution files


def load(split: str = "test", data_root: Path | None = None, *, seed: int = 0, size: int | None = None) -> list[Record]:
    """TheoremQA records without pictures, id `theoremqa/<id>`."""
    check_split("theoremqa", split, SPLITS)
    if data_root is None:
        rows = [(f"TIGER-Lab/TheoremQA test row {i}", {"id": f"hub{i}", **row})
                for i, row in enumerate(hub_rows("TIGER-Lab/TheoremQA", None, "test"))]
    else:
        path = Path(data_root) / "theoremqa" / "theoremqa_test.json"
        data = read_json(path, "TheoremQA test set (a JSON list of questions)")
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of questions, got {type(data).__name__}")
        rows = [(f"{path} item {i}", row) for i, row in enumerate(data)]
    skipped = Counter()
    records = []
    for where, row in rows:
        record = row_to_record(row, where, skipped)
        if record is not None:
            records.append(record)
    log_skips(f"theoremqa/{split}", skipped)
    return records


def row_to_record(row: dict, where: str, skipped: Counter) -> Record | None:
    """One TheoremQA question -> Record, or None (counted in `skipped`) when it cannot be used."""
    try:
        question, value, kind, picture = row["Question"], row["Answer"], row["Answer_type"], row["Picture"]
        qid = row["id"]
    except KeyError as e:
        raise DataError(f"{where}: missing field {e}") from None
    if picture:
        skipped[SKIP_PICTURE] += 1
        return None
    if kind not in ANSWER_TYPES:
        raise DataError(f"{where}: unknown Answer_type {kind!r}; expected one of {sorted(ANSWER_TYPES)}")
    answer_type = ANSWER_TYPES[kind]
    problem, choices, answer = question.strip(), (), format_answer(value)
    if answer_type == "choice":
        parsed = split_options(question)
        letter = answer.strip("()").upper()
        if parsed is None or len(letter) != 1 or letter not in option_letters(len(parsed[1])):
            skipped[SKIP_OPTIONS] += 1
            return None
        (problem, choices), answer = parsed, letter
    theorem = str(row.get("theorem", "")).strip()  # absent from the hub copy
    field, subfield = str(row.get("field", "")), snake(str(row.get("subfield", "")))
    if field == "Math":
        domain = DOMAIN_OF_MATH_SUBFIELD.get(subfield, "mixed")
    else:
        domain = DOMAIN_OF_FIELD.get(field, "mixed")
    explanation = str(row.get("explanation", "")).strip()
    has_explanation = explanation and explanation != "NONE" and not _FILE_PATH.match(explanation)
    record = Record(
        id=f"theoremqa/{qid}", problem=problem,
        solution=explanation if has_explanation else placeholder_solution(answer_text(answer, choices), theorem),
        answer=answer, domain=domain, subject=subfield or "theorem", source="theoremqa",
        topic=theorem, answer_type=answer_type, choices=choices,
    )
    return validate(record, where)


def format_answer(value) -> str:
    """A TheoremQA answer as text: True/False, 3, 0.25, [1, 2.5], '(c)'; hub strings stay as given."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(format_answer(v) for v in value) + "]"
    return str(value).strip()


def split_options(question: str) -> tuple[str, tuple[str, ...]] | None:
    """'Stem? (a) x. (b) y. Which option is correct?' -> ('Stem? Which option is correct?', ('x', 'y')).

    The markers must run (a), (b), ... in order; None if fewer than two are found.
    """
    starts = []
    for match in _OPTION.finditer(question):
        if match.group(1) == chr(ord("a") + len(starts)):
            starts.append(match)
    if len(starts) < 2:
        return None
    ends = [m.start() for m in starts[1:]] + [len(question)]
    options = [question[m.end():end] for m, end in zip(starts, ends)]
    stem, closing = question[:starts[0].start()].strip(), ""
    tail = _CLOSING_QUESTION.match(options[-1])
    if tail:  # a generic "Which option is correct?" adds nothing once the options are listed apart
        options[-1], closing = tail.group(1), tail.group(2)
        closing = "" if _GENERIC_CLOSING.fullmatch(closing) else closing
    options = [o.strip().rstrip(".;,").strip() for o in options]
    if not all(options):
        return None
    return " ".join(part for part in (stem, closing) if part), tuple(options)
