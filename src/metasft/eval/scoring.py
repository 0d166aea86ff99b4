"""Answer scoring: pull the final answer out of a model's output and decide whether it is right.

`extract_answer` finds the answer in free text, `is_equivalent` compares it with the gold answer by
the record's `answer_type` (see `metasft.data.records.ANSWER_TYPES`), and `Grader` runs those
comparisons in killable worker processes so that one pathological expression cannot stall an
evaluation. Every output gets two verdicts (issue 19), as lm-evaluation-harness reports for GSM8K:
strict (the answer the output states with a final-answer marker, `stated_answer`) and flexible
(`extract_answer`'s fallbacks too, the last number); neither credits an output cut off at
max_new_tokens or caught looping (`repeating`), which is how grading noise was counted as skill.
`reasoning_steps`, `step_correctness` and `acc_at_k` are the design's reasoning-quality and acc@k
metrics.
"""
from __future__ import annotations

import logging
import math
import multiprocessing
import os
import re
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.connection import wait as wait_for_connections
from typing import Callable, Iterable, Sequence

from metasft.answers import (INTEGER, answer_key, check_type, clean_answer, extract_answer, latex_radicals,
                             option_letter, split_list, stated_answer, to_bool, to_number)
from metasft.config import GRADINGS

log = logging.getLogger(__name__)

# TheoremQA's own grader accepts a float within 4% of the gold value; we use a stricter 1% relative
# tolerance (of the larger magnitude, `math.isclose`) so that a rounding step in the chain of thought
# passes but a different answer does not.
FLOAT_REL_TOL = 1e-2
FLOAT_ABS_TOL = 1e-9


# ----------------------------------------------------------------------------------------------
# Equivalence
# ----------------------------------------------------------------------------------------------


def _numbers_match(pred: Fraction, gold: Fraction, answer_type: str) -> bool:
    """float: within the relative tolerance (also for a whole gold such as TheoremQA's 3.0); else exact."""
    if answer_type == "float":
        return math.isclose(float(pred), float(gold), rel_tol=FLOAT_REL_TOL, abs_tol=FLOAT_ABS_TOL)
    return pred == gold


def cheap_equivalent(pred: str | None, gold: str, answer_type: str) -> bool | None:
    """The verdict when string and number rules settle it, else None (math-verify is needed).

    Never wrong where it answers: it says True on equal keys or equal plain numbers, and False only
    for types whose comparison needs no symbolic algebra (choice, bool, and numbers/lists whose
    parts all parse as plain numbers).
    """
    check_type(answer_type)
    if pred is None:
        return False
    gold = clean_answer(gold, answer_type)
    if answer_key(pred) == answer_key(gold):
        return True
    if answer_type == "choice":
        letter = option_letter(pred)
        return letter is not None and letter == option_letter(gold)
    if answer_type == "bool":
        p, g = to_bool(pred), to_bool(gold)
        return p is not None and p == g
    if answer_type == "list":
        p_items, g_items = split_list(pred), split_list(gold)
        if len(p_items) != len(g_items):
            return False
        p_nums = [to_number(x) for x in p_items]
        g_nums = [to_number(x) for x in g_items]
        if any(x is None for x in g_nums):
            return all(answer_key(a) == answer_key(b) for a, b in zip(p_items, g_items))
        if any(x is None for x in p_nums):
            return None
        # Gold elements written as integers ("list of integer") must match exactly, others
        # ("1.0", "2.5") within the float tolerance.
        kinds = ["integer" if INTEGER.match(g) else "float" for g in g_items]
        return all(_numbers_match(p, g, kind) for p, g, kind in zip(p_nums, g_nums, kinds))
    p, g = to_number(pred), to_number(gold)
    if p is not None and g is not None:
        if answer_type in ("integer", "float"):
            return _numbers_match(p, g, answer_type)
        if p == g:
            return True
    return None


def _math_verify_equivalent(pred: str, gold: str, answer_type: str) -> bool:
    """math-verify's `parse` + `verify` with its SIGALRM timeouts off (the caller bounds the time)."""
    from math_verify import parse, verify

    gold, pred = clean_answer(gold, answer_type), latex_radicals(pred)
    gold_parsed = parse(f"\\boxed{{{gold}}}", parsing_timeout=None)
    pred_parsed = parse(f"\\boxed{{{pred}}}", parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    if answer_type in ("integer", "float"):
        g = to_number(gold)
        try:
            p = complex(pred_parsed[0].evalf())
        except (TypeError, ValueError, AttributeError):
            return False
        if g is None or abs(p.imag) > FLOAT_ABS_TOL:
            return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
        if answer_type == "integer":
            return math.isclose(p.real, float(g), rel_tol=1e-12, abs_tol=FLOAT_ABS_TOL)
        return math.isclose(p.real, float(g), rel_tol=FLOAT_REL_TOL, abs_tol=FLOAT_ABS_TOL)
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def is_equivalent(pred: str | None, gold: str, answer_type: str = "math") -> bool:
    """Whether the extracted answer `pred` equals the gold answer under `answer_type`'s rule.

    math: equal after cleaning, else math-verify (`\\frac12` = 0.5, `\\frac{\\sqrt2}{2}` = `\\sqrt{2}/2`,
    `x = 3` = 3, `90^\\circ` = 90). integer: exact. float: within `FLOAT_REL_TOL` relative.
    list: same length, element-wise (whole gold elements exact, others with the float tolerance).
    bool: True/False/yes/no. choice: the same letter. Non-plain numbers for integer/float (`\\sqrt 2`)
    are evaluated by math-verify.

    No time limit here: math-verify can hang on inputs like `9^{9^{9^{9}}}`; use `Grader` to bound it.
    """
    cheap = cheap_equivalent(pred, gold, answer_type)
    if cheap is not None:
        return cheap
    return _math_verify_equivalent(pred, gold, answer_type)


# ----------------------------------------------------------------------------------------------
# Grading in killable worker processes
# ----------------------------------------------------------------------------------------------



# An output caught looping (greedy decoding's failure mode, "21, 21, 21, ..."): a span of at most
# LOOP_MAX_PERIOD characters, holding a letter or digit, repeated at least LOOP_MIN_REPEATS times in a
# row over at least LOOP_MIN_CHARS characters. A 20-character sentence said four times is a loop; a
# worked solution does not repeat itself verbatim, and "0.333..." or "1,000,000" stay short of 60.
LOOP_MAX_PERIOD = 400
LOOP_MIN_REPEATS = 3
LOOP_MIN_CHARS = 60
_LOOP = re.compile(rf"(.{{1,{LOOP_MAX_PERIOD}}}?)\1{{{LOOP_MIN_REPEATS - 1},}}", re.DOTALL)
_ALNUM = re.compile(r"[^\W_]")


def repeating(text: str) -> bool:
    """Whether `text` holds a loop: the same span repeated (see LOOP_MIN_REPEATS, LOOP_MIN_CHARS)."""
    # A loop of period p over S >= max(3p, 60) characters repeats each of its 20-character pieces p
    # characters later (p + 20 <= S), so a text whose 20-character pieces are all distinct holds none:
    # the common case, decided without the regex (which costs about 10 ms per 1,000 characters).
    pieces = {text[i:i + 20] for i in range(len(text) - 19)}
    if len(pieces) == max(0, len(text) - 19):
        return False
    pos = 0
    while (match := _LOOP.search(text, pos)) is not None:
        if match.end() - match.start() >= LOOP_MIN_CHARS and _ALNUM.search(match.group(1)):
            return True
        # A short run ("aaa") can hide a longer loop starting at the same place; a long run without a
        # letter or digit ("=====") holds no loop's first span, except one reaching past its end.
        pos = max(match.start() + 1, match.end() - LOOP_MAX_PERIOD)
    return False


def check_grading(grading: str) -> None:
    if grading not in GRADINGS:
        raise ValueError(f"unknown grading {grading!r}; expected one of {GRADINGS}")


@dataclass(frozen=True)
class Verdict:
    """One graded output.

    extracted: the answer flexible extraction finds (None if none); correct_flexible: it equals the
    gold answer and the output was neither cut off nor looping; correct_strict: that, and the output
    states the answer with a final-answer marker (so strict never credits what flexible does not);
    correct: the verdict of the Grader's primary grading. truncated: generation hit max_new_tokens
    without a stop token; repeating: `repeating(output)`. timed_out: the comparison ran out of time
    (then every verdict is False).
    """

    extracted: str | None
    correct: bool
    timed_out: bool = False
    correct_strict: bool = False
    correct_flexible: bool = False
    truncated: bool = False
    repeating: bool = False


def _worker_main(conn, compare: Callable[[str, str, str], bool]) -> None:
    """Worker loop: receive (index, pred, gold, answer_type), send ("result", index, ok, error)."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    _math_verify_equivalent("1/2", "0.5", "math")  # import sympy now, not inside a timed comparison
    conn.send(("ready",))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        index, pred, gold, answer_type = message
        try:
            ok, error = bool(compare(pred, gold, answer_type)), None
        except Exception as e:  # a parse failure is a wrong answer, not a crashed evaluation
            ok, error = False, f"{type(e).__name__}: {e}"
        conn.send(("result", index, ok, error))


class _Worker:
    def __init__(self, context, compare):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, compare), daemon=True)
        self.process.start()
        child.close()
        self.state = "starting"
        self.index: int | None = None
        self.deadline = 0.0

    def stop(self, kill: bool) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class Grader:
    """Grades batches of model outputs with a hard time limit per comparison.

    Extraction and the cheap rules (`cheap_equivalent`) run in this process. The rest runs in
    `n_workers` processes started with the "spawn" context (never fork: the parent may hold torch
    and CUDA state). math-verify's own timeout relies on SIGALRM, which only works in the main
    thread and cannot interrupt sympy inside C code, so it is switched off; instead a comparison
    still running after `timeout_s` seconds has its worker killed and replaced, and is marked wrong
    with `timed_out=True`. `compare(pred, gold, answer_type) -> bool` must be importable at module
    level (spawn pickles it by name); it defaults to `is_equivalent`. `grading` (GRADINGS) names the
    verdict each Verdict's `correct` holds; both are computed either way.

        with Grader(grading="strict") as grader:
            verdicts = grader.grade_many([(output, record.answer, record.answer_type, record.source)], cut_off=[False])
    """

    def __init__(
        self,
        n_workers: int | None = None,
        timeout_s: float = 5.0,
        compare: Callable[[str, str, str], bool] = is_equivalent,
        start_timeout_s: float = 300.0,
        grading: str = "strict",
    ):
        check_grading(grading)
        self.grading = grading
        self.n_workers = n_workers or min(2, os.cpu_count() or 1)
        self.timeout_s = timeout_s
        self.compare = compare
        self.start_timeout_s = start_timeout_s
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []

    def __enter__(self) -> "Grader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes (they restart on the next `grade_many`)."""
        for worker in self._workers:
            worker.stop(kill=worker.state == "busy")
        self._workers = []

    def grade_many(self, items: Sequence[tuple[str, str, str, str]],
                   cut_off: Sequence[bool] | None = None) -> list[Verdict]:
        """Grade (pred_text, gold, answer_type, source) tuples; one Verdict each, in order.

        `cut_off[i]`: item i's generation stopped at max_new_tokens without a stop token (None: none
        did). Outputs cut off or looping are credited by neither grading and not compared at all."""
        cut_off = [False] * len(items) if cut_off is None else [bool(c) for c in cut_off]
        if len(cut_off) != len(items):
            raise ValueError(f"{len(cut_off)} cut_off flags for {len(items)} items")
        extracted = [extract_answer(text, answer_type, source) for text, _, answer_type, source in items]
        stated = [stated_answer(text, answer_type, source) is not None for text, _, answer_type, source in items]
        loops = [repeating(text) for text, _, _, _ in items]
        creditable = [not (c or r) for c, r in zip(cut_off, loops)]
        correct: list[bool | None] = []
        for pred, (_, gold, answer_type, _), ok in zip(extracted, items, creditable):
            correct.append(cheap_equivalent(pred, gold, answer_type) if ok else False)
        timed_out = [False] * len(items)
        pending = deque(i for i, c in enumerate(correct) if c is None)
        if pending:
            try:
                self._run(pending, extracted, items, correct, timed_out)
            except BaseException:  # interrupted: busy workers would answer stale items next time
                self.close()
                raise
        verdicts = []
        for i, match in enumerate(correct):
            flexible = bool(match)
            strict = flexible and stated[i]
            verdicts.append(Verdict(extracted[i], strict if self.grading == "strict" else flexible, timed_out[i],
                                    correct_strict=strict, correct_flexible=flexible, truncated=cut_off[i],
                                    repeating=loops[i]))
        return verdicts

    def _run(self, pending, extracted, items, correct, timed_out) -> None:
        while len(self._workers) < self.n_workers:
            self._workers.append(self._start_worker())
        while pending or any(w.state == "busy" for w in self._workers):
            for worker in self._workers:
                if worker.state == "idle" and pending:
                    index = pending.popleft()
                    _, gold, answer_type, _ = items[index]
                    worker.conn.send((index, extracted[index], gold, answer_type))
                    worker.state, worker.index = "busy", index
                    worker.deadline = time.monotonic() + self.timeout_s
            waiting = [w for w in self._workers if w.state in ("starting", "busy")]
            next_deadline = min(w.deadline for w in waiting)
            ready = wait_for_connections([w.conn for w in waiting], timeout=max(0.0, next_deadline - time.monotonic()))
            for worker in waiting:
                if worker.conn in ready:
                    self._receive(worker, correct)
            now = time.monotonic()
            for i, worker in enumerate(self._workers):
                if worker.state == "busy" and now >= worker.deadline:
                    log.warning("grading item %d took over %.1f s; killed its worker (pred %.80r)",
                                worker.index, self.timeout_s, extracted[worker.index])
                    correct[worker.index], timed_out[worker.index] = False, True
                    worker.stop(kill=True)
                    self._workers[i] = self._start_worker()
                elif worker.state == "starting" and now >= worker.deadline:
                    raise RuntimeError(f"grader worker did not start within {self.start_timeout_s} s")

    def _receive(self, worker: _Worker, correct) -> None:
        try:
            message = worker.conn.recv()
        except EOFError:  # the worker died (out of memory, segfault): that item is wrong
            if worker.state == "starting":
                worker.process.join(timeout=10)
                raise RuntimeError(f"grader worker exited while starting (exit code {worker.process.exitcode})") from None
            log.warning("grader worker died on item %s; replacing it", worker.index)
            if worker.index is not None:
                correct[worker.index] = False
            worker.stop(kill=True)
            self._workers[self._workers.index(worker)] = self._start_worker()
            return
        if message[0] == "result":
            _, index, ok, error = message
            if error:
                log.debug("comparison of item %d raised %s; counted wrong", index, error)
            correct[index] = ok
        worker.state, worker.index = "idle", None

    def _start_worker(self) -> _Worker:
        worker = _Worker(self._context, self.compare)
        worker.deadline = time.monotonic() + self.start_timeout_s
        return worker


# ----------------------------------------------------------------------------------------------
# Reasoning-quality metrics
# ----------------------------------------------------------------------------------------------

_STEP_MARKER = re.compile(r"(?:\bstep\s*(\d+)|步骤\s*(\d+)|第\s*(\d+)\s*步)", re.IGNORECASE)
# A sentence ends at . ! ? (not a decimal point: it needs white space or the end after it) or at
# Chinese 。！？.
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")
_ENUMERATOR = re.compile(r"^\(?\d+[.)]?$")


def reasoning_steps(text: str) -> int:
    """Number of steps in a chain of thought.

    If the text numbers its steps ("Step 1", "步骤1", "第1步"), the number of distinct step numbers.
    Otherwise the number of sentences, counted over non-empty lines (a line break always ends a
    step; so does . ! ? followed by white space, and 。！？). Lines holding only a GSM8K
    `#### answer` and bare enumerators ("1.") are not steps.
    """
    markers = {next(g for g in m.groups() if g) for m in _STEP_MARKER.finditer(text)}
    if markers:
        return len(markers)
    count = 0
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("####"):
            continue
        count += sum(1 for s in _SENTENCE_SPLIT.split(line) if s.strip() and not _ENUMERATOR.match(s.strip()))
    return count


def _light(s: str) -> str:
    """Text with `$`, LaTeX spacing and thousands separators removed; white space kept."""
    s = re.sub(r"\$|\\[,;:! ]|\\left|\\right", "", s).replace("\\dfrac", "\\frac")
    return re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s)


def _compact(s: str) -> str:
    return re.sub(r"\s+", "", _light(s))


# A number standing alone: not inside a longer number or word ("112", "1.2", "x2" hold no 12).
_STANDALONE = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?!\d|\.\d)")
# A number right after '=' that is the whole right-hand side ("= 9", "=9>>", "= 2." but not "= 2x",
# "= 2/3", "= 2^5").
_AFTER_EQUALS = re.compile(r"=\s*(-?\d+(?:\.\d+)?)(?![\w.^/_{(\\]|\.\d)")


def _occurs(text: str, term: str) -> bool:
    """Whether `term` (compacted) occurs in `text` with any spacing and not inside a longer word
    or number: "x = 2" occurs in "so x=2." but not in "x = 20"; "x" not in "next"."""
    pattern = r"\s*".join(re.escape(c) for c in term)
    if term[:1].isalnum():
        pattern = r"(?<![A-Za-z0-9.])" + pattern
    if term[-1:].isalnum():
        pattern += r"(?![A-Za-z0-9]|\.\d)"
    return re.search(pattern, text) is not None


def step_correctness(text: str, steps: Sequence[str]) -> float | None:
    """Share of a record's known intermediate results that the output states; None if no steps.

    Output and steps are compared without `$`, LaTeX spacing or thousands commas (and, for string
    matches, without white space). A step counts as stated when
      1. the whole step occurs in the output, not inside a longer word or number ("2x = 4" occurs
         in "so 2x=4 and"; "x = 2" does not occur in "x = 20"), or
      2. it is "lhs = rhs", the lhs occurs in the output (same sense: "x" is not in "next"), and
         some '=' in the output is followed by the rhs: a number equal in value if the rhs is a
         number ("x = 2" is stated by "x = 6/3 = 2.0"), else the same string, or
      3. it is a bare number ("12") and the output holds that number standing alone ("112",
         "1.2" and "1,200" do not hold 12).
    Rule 2 accepts a result reached through a differently written chain; the rhs must follow '='
    ("4 = 2x" does not state "2x = 4"). Rule 3 is lenient by nature, so steps are best written
    as "lhs = rhs".
    """
    if not steps:
        return None
    light = _light(text)
    # Numbers over Python's 4300-digit int conversion limit are not intermediate results; skip them.
    standalone = {Fraction(n) for n in _STANDALONE.findall(light) if len(n) < 4000}
    after_equals = {Fraction(n) for n in _AFTER_EQUALS.findall(light) if len(n) < 4000}
    stated = 0
    for step in steps:
        s = _compact(step)
        value = to_number(s)
        if value is not None:  # rule 3
            stated += value in standalone
        elif s and _occurs(light, s):  # rule 1
            stated += 1
        elif "=" in s:  # rule 2
            lhs, rhs = s.split("=", 1)[0], s.rsplit("=", 1)[1]
            value = to_number(rhs)
            if lhs and rhs and _occurs(light, lhs):
                stated += value in after_equals if value is not None else _occurs(light, "=" + rhs)
    return stated / len(steps)


def acc_at_k(verdicts_per_question: Iterable[Sequence[bool]]) -> float:
    """acc@k: share of questions where at least one of the k sampled answers is right.

    `verdicts_per_question[i]` holds the verdicts of question i's samples (k of them); with k = 1
    this is plain accuracy.
    """
    rows = [list(v) for v in verdicts_per_question]
    if not rows or any(not row for row in rows):
        raise ValueError("acc_at_k needs at least one question and at least one sample per question")
    return sum(any(row) for row in rows) / len(rows)
