"""Answers: the final answer stated in a text and its normalized form, for gold solutions and model
outputs alike (one parser: what a source's gold answer is and what a model said go through the same
code, so a difference in parsing cannot become a difference in accuracy).

`extract_answer` finds the answer in free text by the record's `answer_type`
(`metasft.data.records.ANSWER_TYPES`), falling back to the last number (flexible grading);
`stated_answer` only takes an answer the text states with a final-answer marker (strict grading,
issue 19); `last_boxed` is its `\\boxed{}` reader, which the data
sources use for MATH-style gold solutions; `clean_answer` normalizes an answer string for comparison.
"""
from __future__ import annotations

import re
from fractions import Fraction

from metasft.data.records import ANSWER_TYPES, OPTION_LETTERS

LETTERS = OPTION_LETTERS

# ----------------------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------------------

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOXED_BARE = re.compile(r"\\boxed +([^$\n]+)")  # MATH's rare "\boxed 9$": up to the "$" (hendrycks/math)
_GSM8K = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)
# "The answer is 5", "the final answer is: 5", "Answer: 5", "答案是 5", "因此，答案是 5", "答案为 5".
_PHRASE = re.compile(r"(?:(?:final\s+)?answer\s*(?:is|:)|答案\s*(?:是|为|:|：))\s*[:：]?[ \t]*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=\S)\.(?=\s|$)|。")
_NUMBER = re.compile(r"(?:(?<![\w)\]}])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_LIST = re.compile(r"\[[^\[\]]*\]")
_BOOL_WORD = re.compile(r"\b(true|false|yes|no)\b", re.IGNORECASE)
_BOOLS = {"true": True, "yes": True, "correct": True, "false": False, "no": False, "incorrect": False}

# A letter standing alone as an option: "(B)", "B", "B.", "B)" but not the start of a word; lower
# case ("(c)", TheoremQA's style) only in parentheses or alone, since "a" is also a word.
_LETTER = re.compile(rf"^\(?([{LETTERS}])\)?(?![A-Za-z])|^\(([{LETTERS.lower()}])\)|^([{LETTERS.lower()}])[.)]?$")
# An output that is one option and nothing else: "B", "(B)", "B.", "(c)".
_LETTER_ALONE = re.compile(rf"^\s*(?:\(?([{LETTERS}])\)?|\(([{LETTERS.lower()}])\))\.?\s*$")
_LETTER_PAREN = re.compile(rf"\(([{LETTERS}])\)")
_LETTER_LINE = re.compile(rf"^\s*([{LETTERS}])[.)](?:\s|$)", re.MULTILINE)
# An option named in prose: "the correct option is B because ...", "option (C) is the right one".
_LETTER_PROSE = re.compile(
    rf"(?:correct|right|best)\s+(?:option|choice|answer)\s*(?:is|:)?\s*\(?([{LETTERS}])\)?(?![A-Za-z])"
    rf"|\b(?:option|choice)\s*\(?([{LETTERS}])\)?\s+is\s+(?:the\s+)?(?:correct|right|best)\b", re.IGNORECASE)


def last_boxed(text: str) -> str | None:
    """Content of the last balanced `\\boxed{...}` / `\\fbox{...}` (a later unbalanced one, as a cut-off
    generation leaves, is passed over), else of a brace-less `\\boxed 9$` up to the `$` or line end;
    stripped, None if absent or empty. Gold solutions and model outputs are both read with it."""
    found = None
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    found = text[start:i]
                    break
    if found is None:
        bare = _BOXED_BARE.findall(text)
        found = bare[-1] if bare else None
    if found is None or not found.strip():
        return None
    return found.strip()


def _last_phrase(text: str) -> str | None:
    """What follows the last "the answer is" / "答案是", up to the end of its sentence."""
    markers = list(_PHRASE.finditer(text))
    if not markers:
        return None
    tail = text[markers[-1].end() :].split("\n", 1)[0]
    end = _SENTENCE_END.search(tail)
    tail = tail[: end.start()] if end else tail
    return tail if tail.strip() else None


def option_letter(text: str) -> str | None:
    """A choice letter from an answer string: "B", "(B)", "B.", "\\text{(B)} 42", "B) 42"."""
    text = _unwrap_text(text.strip().strip("$").strip())
    match = _LETTER.match(text)
    return next(g for g in match.groups() if g).upper() if match else None


def _stated_choice(text: str) -> str | None:
    """The option letter the text states as its answer: boxed, after "the answer is" / "Answer:",
    named in prose ("the correct option is B"), or the whole output ("B", "(B)")."""
    boxed = last_boxed(text)
    if boxed is not None and option_letter(boxed):
        return option_letter(boxed)
    phrase = _last_phrase(text)
    if phrase is not None and option_letter(phrase):
        return option_letter(phrase)
    prose = [m.group(1) or m.group(2) for m in _LETTER_PROSE.finditer(text)]
    if prose:
        return prose[-1].upper()
    whole = _LETTER_ALONE.match(text)
    return next(g for g in whole.groups() if g).upper() if whole else None


def _extract_choice(text: str) -> str | None:
    """`_stated_choice`, else the last "(B)" or line starting "B." / "B)" anywhere in the text (which
    may be an option the output only restates)."""
    stated = _stated_choice(text)
    if stated is not None:
        return stated
    candidates = [(m.start(), m.group(1)) for m in _LETTER_PAREN.finditer(text)]
    candidates += [(m.start(), m.group(1)) for m in _LETTER_LINE.finditer(text)]
    if candidates:
        return max(candidates)[1]
    return option_letter(text) if len(text.strip()) <= 4 else None


def extract_answer(text: str, answer_type: str = "math", source: str = "") -> str | None:
    """The final answer in `text` (a model output or a worked solution), cleaned; None if none:
    flexible extraction, lm-evaluation-harness's "flexible-extract".

    The answer `stated_answer` finds; when the text states none, the last number for "math",
    "integer" and "float", the last `[...]` for "list", the last true/false/yes/no for "bool", and
    for "choice" the last "(B)" or line starting "B." / "B)". The result goes through `clean_answer`.
    """
    check_type(answer_type)
    if answer_type == "choice":
        return _extract_choice(text)
    found = _stated(text, answer_type, source)
    if found is None:
        found = _fallback(text, answer_type)
    return (clean_answer(found, answer_type) or None) if found is not None else None


def stated_answer(text: str, answer_type: str = "math", source: str = "") -> str | None:
    """The final answer `text` states explicitly, cleaned; None if it states none: strict grading's
    extraction, lm-evaluation-harness's "strict-match" for GSM8K widened to the markers our sources use.

    Looked for in this order, the last occurrence of each winning: `\\boxed{...}` or `\\fbox{...}`
    (balanced braces); GSM8K's `#### n` (first when `source` names gsm8k); "the (final) answer is
    ...", "Answer: ...", "答案是 ..." up to the end of that sentence. For "choice" an option letter
    A-J: from the box or the answer phrase, named in prose ("the correct option is B"), or the
    whole output ("B", "(B)"). A number that merely ends the text is not a stated answer.
    """
    check_type(answer_type)
    if answer_type == "choice":
        return _stated_choice(text)
    found = _stated(text, answer_type, source)
    return (clean_answer(found, answer_type) or None) if found is not None else None


def _stated(text: str, answer_type: str, source: str) -> str | None:
    """The raw answer after a final-answer marker (see `stated_answer`), uncleaned; None if none."""
    gsm8k = _GSM8K.findall(text)
    found = None
    if gsm8k and "gsm8k" in source.lower():
        found = gsm8k[-1]
    if found is None:
        found = last_boxed(text)
    if found is None and gsm8k:
        found = gsm8k[-1]
    if found is None:
        found = _last_phrase(text)
        # "The answer is approximately 3.5": a numeric type takes the phrase's first number.
        if found is not None and answer_type in ("integer", "float"):
            if to_number(clean_answer(found, answer_type)) is None and "\\" not in found:
                numbers = _NUMBER.findall(found)
                found = numbers[0] if numbers else found
    return found


def check_type(answer_type: str) -> None:
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"unknown answer_type {answer_type!r}; expected one of {ANSWER_TYPES}")


def _fallback(text: str, answer_type: str) -> str | None:
    if answer_type in ("math", "integer", "float"):
        numbers = _NUMBER.findall(text)
        return numbers[-1] if numbers else None
    if answer_type == "list":
        lists = _LIST.findall(text)
        return lists[-1] if lists else None
    if answer_type == "bool":
        words = _BOOL_WORD.findall(text)
        return words[-1] if words else None
    return None


# ----------------------------------------------------------------------------------------------
# Cleaning and normalization
# ----------------------------------------------------------------------------------------------

_TEXT_CMD = r"\\(?:text|textbf|mbox|mathrm)\s*"
_WHOLE_TEXT = re.compile(rf"^{_TEXT_CMD}\{{([^{{}}]*)\}}$")
_TRAILING_TEXT = re.compile(rf"\s*{_TEXT_CMD}\{{[^{{}}]*[A-Za-z][^{{}}]*\}}(?:\^\{{?\d\}}?)?$")
# A number followed by a plain-text unit of one or two words: "10 m/s", "12 apples", "5 square feet".
# Needs the space, so "2x" stays an expression; "3 and 4" is not a unit.
_UNIT_WORD = r"(?!(?:and|or|to|of)\b)[A-Za-z][A-Za-z/^\d.\-]*"
_PLAIN_UNIT = re.compile(rf"^(-?(?:\d{{1,3}}(?:,\d{{3}})+|\d+)(?:\.\d+)?)\s+{_UNIT_WORD}(?:\s+{_UNIT_WORD})?$")
_LHS_PREFIX = re.compile(r"^(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{?\w+\}?)?\s*=\s*(?=\S)")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
INTEGER = re.compile(r"^-?\d+$")
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?|°")


def _unwrap_text(s: str) -> str:
    match = _WHOLE_TEXT.match(s)
    return match.group(1).strip() if match else s


def clean_answer(answer: str, answer_type: str = "math") -> str:
    """Strip what does not change an answer's value: math delimiters and `$`, a trailing period,
    a `\\text{...}` wrapper or trailing `\\text{units}`, a plain unit after a number ("10 m/s"),
    a single `x =` left-hand side, thousands separators ("1,000", "10,\\!000"); radicals written
    as text ("2√2", "√(3)/3", "∛5", "sqrt2") become LaTeX, which math-verify does not parse otherwise."""
    s = latex_radicals(str(answer).strip())
    for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right):
            s = s[len(left) : -len(right)]
    s = s.replace("\\$", "").replace("$", "").replace("\\!", "").strip()
    s = s.rstrip(".。,;").strip()
    s = _unwrap_text(s)
    match = _TRAILING_TEXT.search(s)
    if match and match.start() > 0:  # "10 \text{m/s}" -> "10"
        s = s[: match.start()].strip()
    if answer_type in ("integer", "float", "list"):
        s = _DEGREES.sub("", s).replace("\\%", "").replace("%", "").strip()
    match = _PLAIN_UNIT.match(s)
    if match:
        s = match.group(1)
    if s.count("=") == 1:
        s = _LHS_PREFIX.sub("", s)
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    if answer_type == "bool" and s.lower() in _BOOLS:
        s = str(_BOOLS[s.lower()])
    return s.strip()


_RADICAL_SIGN = {"√": "\\sqrt", "∛": "\\sqrt[3]", "∜": "\\sqrt[4]"}
_RADICAND = re.compile(r"\s*(\d+(?:\.\d+)?|[A-Za-z]|\\[A-Za-z]+)")
_SQRT_WORD = re.compile(r"(?<![\\A-Za-z])sqrt\s*(?=\d|\()")


def latex_radicals(s: str) -> str:
    """`√x`, `√(x)`, `√{x}` (and ∛, ∜), `sqrt2`, `sqrt (2)` as `\\sqrt{x}`; the rest unchanged.
    The radicand is the bracketed group, else the number, letter or command right after the sign."""
    s = _SQRT_WORD.sub("√", s)
    out, i = [], 0
    while i < len(s):
        sign = _RADICAL_SIGN.get(s[i])
        if sign is None:
            out.append(s[i])
            i += 1
            continue
        j = i + 1
        while j < len(s) and s[j] == " ":
            j += 1
        if j < len(s) and s[j] in "({":
            close = _matching(s, j)
            if close is None:
                return s  # unbalanced: leave it to math-verify as it is
            radicand, i = latex_radicals(s[j + 1:close]), close + 1
        else:
            match = _RADICAND.match(s, i + 1)
            if match is None:
                return s
            radicand, i = match.group(1), match.end()
        out.append(f"{sign}{{{radicand}}}")
    return "".join(out)


def _matching(s: str, start: int) -> int | None:
    """The index of the bracket closing the one at `start`, None if it is never closed."""
    pairs, depth = {"(": ")", "{": "}"}, 0
    for k in range(start, len(s)):
        if s[k] == s[start]:
            depth += 1
        elif s[k] == pairs[s[start]]:
            depth -= 1
            if depth == 0:
                return k
    return None


def answer_key(s: str) -> str:
    """A string key for the cheap exact-match test: no spaces, sizing commands or `\\dfrac`."""
    s = re.sub(r"\\left|\\right|\\[,;: ]|\s+", "", s)
    return s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")


_FRAC = re.compile(r"^(-?)\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}$")
_SCI = re.compile(r"^(-?\d+(?:\.\d+)?)\s*(?:\\times|\\cdot|\*|x)\s*10\s*\^\s*\{?(-?\d+)\}?$")


def to_number(s: str) -> Fraction | None:
    """A plain number ("-3", "0.5", "1e-3", "3/4", "\\frac{3}{4}", "1.2 \\times 10^{-3}"), else None."""
    s = answer_key(s).replace(",", "") if _THOUSANDS.match(answer_key(s)) else answer_key(s)
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        pass
    match = _FRAC.match(s)
    if match:
        sign, num, den = match.groups()
        if int(den) != 0:
            value = Fraction(int(num), int(den))
            return -value if sign else value
    match = _SCI.match(s)
    if match:
        return Fraction(match.group(1)) * Fraction(10) ** int(match.group(2))
    return None


def to_bool(s: str) -> bool | None:
    return _BOOLS.get(s.strip().lower())


def split_list(s: str) -> list[str]:
    s = s.strip()
    if s[:1] in "[(" and s[-1:] in "])":
        s = s[1:-1]
    return [part.strip() for part in s.split(",") if part.strip()]
