"""Geometry3K (Lu et al., 2021, InterGPS): geometry problems with a diagram, four choices each.

Local files only: the published layout `<root>/geometry3k/<split>/<id>/data.json` (keys
include id, problem_text, choices, answer letter, problem_type_goal, problem_type_graph) beside
`img_diagram.png`, as unzipped from lupantech/InterGPS `data/geometry3k/{train,val,test}.zip`. The hub
has no copy with the original text, choices and letters, so a build needs a root for it: `data_root`,
or `data.roots.geometry3k` alone when the other sources come from the hub.

The diagram is not read: many problems ("Find x.") cannot be solved from the text alone, which
limits what a text-only model can learn from them. There are no solutions, so `solution` is the
answer-only placeholder.
"""
from __future__ import annotations

from pathlib import Path

from metasft.data.cot import answer_text, placeholder_solution
from metasft.data.records import DataError, Record, option_letters, validate
from metasft.data.sources._files import Origin, SourceUnavailable, check_split, read_json

ORIGIN = Origin(hub=None, local="geometry3k/{train,val,test}/<id>/data.json",
                get="lupantech/InterGPS data/geometry3k/{train,val,test}.zip, unzipped into DIR/geometry3k/")
SPLITS = ("train", "val", "test")
SUBJECTS = ("geometry",)


def load(split: str = "train", data_root: Path | None = None, *, seed: int = 0, size: int | None = None) -> list[Record]:
    """Geometry3K records of `split`, id `geometry3k/<split>/<id>`, in numeric folder order."""
    check_split("geometry3k", split, SPLITS)
    if data_root is None:
        raise SourceUnavailable("geometry3k: no Hugging Face copy has the original problem text, choices and "
                                "answer letters")
    folder = Path(data_root) / "geometry3k" / split
    if not folder.is_dir():
        raise SourceUnavailable(f"{folder}: directory not found; expected Geometry3K problems as {folder}/<id>/data.json")
    paths = sorted(folder.glob("*/data.json"), key=lambda p: (not p.parent.name.isdigit(), p.parent.name.zfill(12)))
    if not paths:
        raise SourceUnavailable(f"{folder}: no <id>/data.json files found")
    return [row_to_record(read_json(path, "a Geometry3K problem"), split, str(path)) for path in paths]


def row_to_record(row: dict, split: str, where: str) -> Record:
    """One Geometry3K data.json -> Record."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    try:
        pid, text, choices, letter = row["id"], row["problem_text"], row["choices"], row["answer"]
        goal = row["problem_type_goal"]
    except KeyError as e:
        raise DataError(f"{where}: missing field {e}") from None
    choices = tuple(str(c).strip() for c in choices)
    letter = str(letter).strip().upper()
    letters = option_letters(len(choices))
    if len(letter) != 1 or letter not in letters:
        raise DataError(f"{where}: answer {letter!r} is not one of the choice letters {list(letters)}")
    record = Record(
        id=f"geometry3k/{split}/{pid}", problem=str(text).strip(),
        solution=placeholder_solution(answer_text(letter, choices)), answer=letter,
        domain="geometry", subject="geometry", source="geometry3k",
        topic=", ".join(goal) if isinstance(goal, list) else str(goal),
        answer_type="choice", choices=choices,
    )
    return validate(record, where)
