"""AMPS (Hendrycks et al., 2021), the auxiliary mathematics pretraining set of the MATH paper.

Local files only (AMPS is a tarball, not on the hub):
- Khan Academy part, `<data_root>/amps/khan/<topic>/.../<n>.json`: `problem` and `hints`, a list of
  steps whose last one states the answer. solution = the hints, one per line; answer = the last
  \\boxed{} of the last hint, else the right-hand side of the last `$...$` formula in it.
- Mathematica part, `<data_root>/amps/mathematica/<topic>/.../<n>.txt`: "Problem:\\n...\\nAnswer:\\n...".
  Only the first answer of a file is kept; there is no solution, so `solution` is the answer-only
  placeholder.

Splits: "khan", "mathematica", and "train" = every part present (AMPS has no held-out split).
subject = the topic folder (first level under khan/ or mathematica/), snake_case. domain: "algebra"
for Khan (mostly algebra and pre-algebra drills), "mixed" for Mathematica. Problems whose answer
cannot be found are skipped, counted and logged.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from metasft.data.cot import placeholder_solution
from metasft.data.records import DataError, Record, validate
from metasft.answers import last_boxed
from metasft.data.sources._files import Origin, SourceUnavailable, check_split, log_skips, read_json, require_file, snake

ORIGIN = Origin(hub=None, local="amps/khan/<topic>/.../<n>.json and/or amps/mathematica/<topic>/.../<n>.txt",
                get="the AMPS tarball of hendrycks/math")
SPLITS = ("train", "khan", "mathematica")
SKIP_ANSWER = "no answer found in the last hint"
SKIP_FORMAT = "not in 'Problem:/Answer:' form"

_FORMULA = re.compile(r"\$+([^$]+)\$+|\\\((.+?)\\\)", re.DOTALL)


def load(split: str = "train", data_root: Path | None = None, *, seed: int = 0, size: int | None = None) -> list[Record]:
    """AMPS records of `split`, id `amps/<part>/<path below the part folder, without suffix>`."""
    check_split("amps", split, SPLITS)
    if data_root is None:
        raise SourceUnavailable("amps: not on the Hugging Face hub")
    root = Path(data_root) / "amps"
    wanted = ("khan", "mathematica") if split == "train" else (split,)
    present = [part for part in wanted if (root / part).is_dir()]
    if not present:
        raise SourceUnavailable(f"{root}: no {' or '.join(wanted)} folder found; expected "
                        f"{root}/khan/<topic>/<n>.json and/or {root}/mathematica/<topic>/<n>.txt")
    skipped = Counter()
    records = []
    for part in present:
        folder = root / part
        pattern, reader = ("*.json", _khan_record) if part == "khan" else ("*.txt", _mathematica_record)
        for path in sorted(folder.rglob(pattern)):
            relative = path.relative_to(folder)
            if len(relative.parts) < 2:
                raise DataError(f"{path}: expected the file inside a topic folder, {folder}/<topic>/...")
            record = reader(path, relative, skipped)
            if record is not None:
                records.append(record)
    log_skips(f"amps/{split}", skipped)
    return records


def khan_answer(last_hint: str) -> str | None:
    """The answer stated by a Khan hint: its last \\boxed{}, else the right side of its last formula."""
    boxed = last_boxed(last_hint)
    if boxed is not None:
        return boxed
    formulas = [a or b for a, b in _FORMULA.findall(last_hint)]
    if not formulas:
        return None
    answer = formulas[-1].rsplit("=", 1)[-1].strip()
    return answer or None


def _khan_record(path: Path, relative: Path, skipped: Counter) -> Record | None:
    row = read_json(path, "an AMPS Khan problem (problem, hints)")
    try:
        problem, hints = row["problem"], row["hints"]
    except (KeyError, TypeError):
        raise DataError(f"{path}: expected a JSON object with 'problem' and 'hints'") from None
    if not isinstance(hints, list) or not hints:
        raise DataError(f"{path}: 'hints' must be a non-empty list of steps")
    answer = khan_answer(str(hints[-1]))
    if answer is None:
        skipped[SKIP_ANSWER] += 1
        return None
    record = Record(
        id=f"amps/khan/{relative.with_suffix('').as_posix()}", problem=str(problem).strip(),
        solution="\n".join(str(h).strip() for h in hints), answer=answer,
        domain="algebra", subject=snake(relative.parts[0]), source="amps", answer_type="math",
    )
    return validate(record, str(path))


def _mathematica_record(path: Path, relative: Path, skipped: Counter) -> Record | None:
    text = require_file(path, "an AMPS Mathematica problem").read_text(encoding="utf-8")
    match = re.match(r"\s*Problem:\n(.*?)\nAnswer:\n(.*?)(?:\nAnswer:\n|\Z)", text, re.DOTALL)
    if match is None:
        skipped[SKIP_FORMAT] += 1
        return None
    answer = match.group(2).strip()
    record = Record(
        id=f"amps/mathematica/{relative.with_suffix('').as_posix()}", problem=match.group(1).strip(),
        solution=placeholder_solution(answer), answer=answer,
        domain="mixed", subject=snake(relative.parts[0]), source="amps", answer_type="math",
    )
    return validate(record, str(path))
