"""CHAMP (Mao et al., 2024): 270 competition problems in 5 categories, each with a step-by-step
solution and a final answer.

Read from the `champ_dataset` package's own copy (`champ_dataset.load("v0")`), so it needs neither
the hub nor `data_root`, which is ignored. The package marks math spans with "@@"; the `.text` and
`.answer` properties used here have them removed. One split, "all".
"""
from __future__ import annotations

from pathlib import Path

from metasft.data.records import DataError, Record, validate
from metasft.data.sources._files import Origin, check_split, snake

ORIGIN = Origin(hub=None, local=None, get="the champ_dataset package")
SPLITS = ("all",)
SUBJECTS = ("competition",)
VERSION = "v0"
DOMAIN_OF_CATEGORY = {
    "combinatorics": "combinatorics", "number_theory": "number_theory",
    "inequality": "algebra", "polynomial": "algebra", "sequence": "algebra",
}


def load(split: str = "all", data_root: Path | None = None, *, seed: int = 0, size: int | None = None) -> list[Record]:
    """The 270 CHAMP problems, id `champ/<identifier>` (e.g. champ/P_Combinatorics_1)."""
    check_split("champ", split, SPLITS)
    import champ_dataset  # imported here: only this source needs it

    dataset = champ_dataset.load(VERSION)
    return [problem_to_record(problem, f"champ_dataset {VERSION} problem {key}")
            for key, problem in dataset.problems.items()]


def problem_to_record(problem, where: str) -> Record:
    """One `champ_dataset.Problem` (identifier, text, answer, category, solution.steps) -> Record."""
    category = snake(problem.category or "")
    if category not in DOMAIN_OF_CATEGORY:
        raise DataError(f"{where}: unknown category {problem.category!r}; expected one of {sorted(DOMAIN_OF_CATEGORY)}")
    steps = problem.solution.steps if problem.solution is not None else None
    if not steps:
        raise DataError(f"{where}: no solution steps")
    record = Record(
        id=f"champ/{problem.identifier}", problem=(problem.text or "").strip(),
        solution="\n".join(step.text.strip() for step in steps), answer=(problem.answer or "").strip(),
        domain=DOMAIN_OF_CATEGORY[category], subject="competition", source="champ",
        topic=category, answer_type="math",
    )
    return validate(record, where)
