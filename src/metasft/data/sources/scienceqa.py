"""ScienceQA (Lu et al., 2022), text-only questions: multiple choice across natural, social and
language science, grades 1-12.

Local files: `<data_root>/scienceqa/problems.json` (the full release, pid -> problem) or, when that is
absent, `problems_subset150.json` (150 problems in the same format); each problem's own `split`
field ("train", "val", "test") selects it. Hub: `derek-thomas/ScienceQA` (splits train, validation,
test; no pid, so ids are row indices).

`subject` is the problem's `topic` (physics, chemistry, biology, units_and_measurement, ...), not
ScienceQA's three-way `subject`; the design's science tasks are the physics and chemistry topics,
selected downstream by `domain`. Questions with an image are skipped (we train text-only models).
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from metasft.data.cot import answer_text, placeholder_solution
from metasft.data.records import OPTION_LETTERS, DataError, Record, validate
from metasft.data.sources._files import Origin, check_split, hub_rows, log_skips, read_json, snake

logger = logging.getLogger(__name__)

ORIGIN = Origin(hub="derek-thomas/ScienceQA", local="scienceqa/problems.json (else problems_subset150.json)",
                get="lupantech/ScienceQA data/scienceqa/problems.json")
SPLITS = ("train", "val", "test")
HUB_SPLIT = {"train": "train", "val": "validation", "test": "test"}
DOMAIN_OF_TOPIC = {"physics": "physics", "chemistry": "chemistry", "biology": "biology"}
SKIP_IMAGE = "question needs an image"


def load(split: str = "train", data_root: Path | None = None, *, seed: int = 0, size: int | None = None) -> list[Record]:
    """Text-only ScienceQA records of `split`, id `scienceqa/<pid>`."""
    check_split("scienceqa", split, SPLITS)
    skipped = Counter()
    records = []
    if data_root is None:
        hub_split = HUB_SPLIT[split]
        for i, row in enumerate(hub_rows("derek-thomas/ScienceQA", None, hub_split)):
            record = row_to_record(row, f"hub-{hub_split}-{i}", f"derek-thomas/ScienceQA {hub_split} row {i}")
            if record is None:
                skipped[SKIP_IMAGE] += 1
            else:
                records.append(record)
    else:
        folder = Path(data_root) / "scienceqa"
        path = folder / "problems.json"
        if not path.is_file():
            path = folder / "problems_subset150.json"
            logger.warning("scienceqa: %s not found; reading the 150-problem subset %s", folder / "problems.json", path)
        problems = read_json(path, "ScienceQA problems.json (a dict pid -> problem)")
        if not isinstance(problems, dict):
            raise DataError(f"{path}: expected a JSON object mapping pid -> problem, got {type(problems).__name__}")
        for pid, row in problems.items():
            where = f"{path} pid {pid}"
            if not isinstance(row, dict) or "split" not in row:
                raise DataError(f"{where}: expected an object with a 'split' field")
            if row["split"] != split:
                continue
            record = row_to_record(row, pid, where)
            if record is None:
                skipped[SKIP_IMAGE] += 1
            else:
                records.append(record)
    log_skips(f"scienceqa/{split}", skipped)
    return records


def row_to_record(row: dict, pid: str, where: str) -> Record | None:
    """One ScienceQA problem (file or hub row) -> Record; None when it has an image."""
    try:
        question, choices, index, hint = row["question"], row["choices"], row["answer"], row["hint"]
        topic, category, solution, image = row["topic"], row["category"], row["solution"], row["image"]
    except KeyError as e:
        raise DataError(f"{where}: missing field {e}") from None
    if image is not None:
        return None
    if not isinstance(index, int) or not 0 <= index < len(choices):
        raise DataError(f"{where}: answer index {index!r} is not an index into {len(choices)} choices")
    letter = OPTION_LETTERS[index]
    problem = f"{question.strip()}\nContext: {hint.strip()}" if hint.strip() else question.strip()
    subject = snake(topic)
    record = Record(
        id=f"scienceqa/{pid}", problem=problem,
        solution=solution.strip() or placeholder_solution(answer_text(letter, tuple(choices))),
        answer=letter, domain=DOMAIN_OF_TOPIC.get(subject, "mixed"), subject=subject,
        source="scienceqa", topic=category, answer_type="choice", choices=tuple(choices),
    )
    return validate(record, where)
