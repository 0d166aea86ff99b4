"""Scorer tests: hand cases per answer type, real MATH and GSM8K solutions, and the hard timeout."""
from __future__ import annotations

import json
import os
import random
import time

import pytest

from metasft.answers import stated_answer
from metasft.eval.scoring import (
    Grader,
    acc_at_k,
    cheap_equivalent,
    clean_answer,
    extract_answer,
    is_equivalent,
    reasoning_steps,
    repeating,
    step_correctness,
)


def slow_compare(pred: str, gold: str, answer_type: str) -> bool:
    """A comparison that hangs on the answer "slow" (module level so spawned workers can import it)."""
    if pred == "slow":
        time.sleep(60)
    return pred == gold


def crashing_compare(pred: str, gold: str, answer_type: str) -> bool:
    """A comparison whose process dies on the answer "crash", as on a segfault or the OOM killer."""
    if pred == "crash":
        os._exit(1)
    return pred == gold


@pytest.fixture(scope="module")
def grader():
    with Grader(n_workers=2, timeout_s=10.0) as g:
        yield g


# --- extraction --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, answer_type, expected", [
    (r"so the result is \boxed{\frac{1}{2}}.", "math", r"\frac{1}{2}"),
    (r"first \boxed{1}, then \fbox{2}", "math", "2"),
    (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", "math", r"\left( 3, \frac{\pi}{2} \right)"),
    ("She makes 18.\n#### 1,000", "math", "1000"),
    ("The answer is 3.5. Next we check.", "math", "3.5"),
    ("So the answer is 4. Wait, the final answer is $\\frac{1}{2}$.", "math", r"\frac{1}{2}"),
    ("因此，答案是 42。", "math", "42"),
    ("We get 5 and then 7 apples", "math", "7"),
    (r"\boxed{x = 3}", "math", "3"),
    (r"\boxed{10\text{ m/s}}", "math", "10"),
    ("The answer is 10 m/s.", "float", "10"),
    ("The answer is approximately 3.5 m/s.", "float", "3.5"),
    ("The answer is $18.", "math", "18"),
    (r"\boxed{\text{(C)}}", "math", "(C)"),
    ("no number here", "math", None),
    ("The answer is (B)", "choice", "B"),
    ("answer is B.", "choice", "B"),
    (r"\boxed{B}", "choice", "B"),
    ("A. 12\nLet me think.\nC. 5", "choice", "C"),
    ("(A) is wrong because ... so (D) it is", "choice", "D"),
    ("答案是 C", "choice", "C"),
    ("So the answer is (c).", "choice", "C"),
    (r"\boxed{d}", "choice", "D"),
    ("The answer is a tricky one: (B)", "choice", "B"),
    ("There is no letter", "choice", None),
    ("The answer is: [1, 2]", "list", "[1, 2]"),
    ("maybe [1,2] but really [3, 4]", "list", "[3, 4]"),
    ("The answer is True", "bool", "True"),
    ("So, no.", "bool", "False"),
    (r"Answer: 1.2 \times 10^{-3}", "float", r"1.2 \times 10^{-3}"),
])
def test_extract_answer(text, answer_type, expected):
    assert extract_answer(text, answer_type) == expected


def test_gsm8k_marker_wins_for_gsm8k_source():
    text = r"We might write \boxed{17} but\n#### 18"
    assert extract_answer(text, "math") == "17"
    assert extract_answer(text, "math", source="gsm8k") == "18"


def test_unknown_answer_type_is_an_error():
    with pytest.raises(ValueError, match="answer_type"):
        extract_answer("The answer is 3", "number")


def test_degenerate_long_outputs_are_scored():
    """Degenerate 100k-character outputs (the regexes are linear: a backtracking one would hang here)."""
    assert extract_answer("1" * 100_000) == "1" * 100_000
    assert extract_answer("1 " * 50_000) == "1"
    assert extract_answer("x=1 " * 20_000) == "1"
    assert extract_answer("\\boxed{" + "{" * 20_000) is None  # unbalanced and nothing else: no answer
    for text in ("1" * 100_000, "x=1 " * 20_000):
        assert clean_answer(text)
        assert step_correctness(text, ["x = 2", "12"]) == 0.0


def test_clean_answer():
    assert clean_answer("$10,\\!000$.") == "10000"
    assert clean_answer(r"\text{Evelyn}") == "Evelyn"
    assert clean_answer("y = 2x + 3") == "2x + 3"
    assert clean_answer("x = 1, y = 2") == "x = 1, y = 2"  # two equations: keep both sides
    assert clean_answer("yes", "bool") == "True"
    assert clean_answer("5 square feet") == "5"
    assert clean_answer("3 and 4") == "3 and 4"


# --- equivalence -------------------------------------------------------------------------------

@pytest.mark.floors
@pytest.mark.parametrize("pred, gold, answer_type, expected", [
    ("0.5", r"\frac{1}{2}", "math", True),
    (r"\frac{\sqrt2}{2}", r"\sqrt{2}/2", "math", True),
    (r"\dfrac{3}{4}", "0.75", "math", True),
    ("3", "x = 3", "math", True),
    (r"90^\circ", "90", "math", True),
    ("2", "3", "math", False),
    (r"\frac{1}{3}", "0.5", "math", False),
    ("3", "3", "integer", True),
    ("3.0", "3", "integer", True),
    ("3.2", "3", "integer", False),
    (r"\sqrt{9}", "3", "integer", True),
    ("3.03", "3.0", "float", True),   # within 1% relative
    ("3.05", "3.0", "float", False),  # 1.7% off
    ("0.0012", r"1.2 \times 10^{-3}", "float", True),
    (r"\pi", "3.14159", "float", True),
    ("[1, 2]", "[1,2]", "list", True),
    ("[1, 3]", "[1, 2]", "list", False),
    ("[1, 2, 3]", "[1, 2]", "list", False),
    ("[1.005, 2.5]", "[1.0, 2.5]", "list", True),   # float elements: tolerance
    ("[1, 101]", "[1, 100]", "list", False),         # integer elements: exact
    ("True", "True", "bool", True),
    ("yes", "True", "bool", True),
    ("False", "True", "bool", False),
    ("B", "B", "choice", True),
    ("(B)", "B", "choice", True),
    ("C", "B", "choice", False),
    ("C", "(c)", "choice", True),  # TheoremQA writes options as "(c)"
    (None, "3", "math", False),
])
def test_is_equivalent(pred, gold, answer_type, expected):
    assert is_equivalent(pred, gold, answer_type) is expected


def test_units_and_equations_through_extraction():
    assert is_equivalent(extract_answer("The speed is 10 m/s, so the answer is 10 m/s."), "10", "math")
    assert is_equivalent(extract_answer(r"Hence \boxed{x = 3}."), "3", "math")
    assert not is_equivalent(extract_answer(r"Hence \boxed{x = 4}."), "3", "math")


@pytest.mark.floors
def test_grader_hand_cases(grader):
    items = [
        (r"so \boxed{0.5}", r"\frac{1}{2}", "math", "math"),
        (r"\boxed{\frac{\sqrt2}{2}}", r"\sqrt{2}/2", "math", "math"),
        ("#### 7", "8", "math", "gsm8k"),
        ("The answer is (C).", "C", "choice", "mmlu_stem"),
        ("The answer is [1, 2].", "[1, 2]", "list", "theoremqa"),
        ("nothing", "1", "math", "math"),
    ]
    verdicts = grader.grade_many(items)
    assert [v.correct for v in verdicts] == [True, True, False, True, True, False]
    assert verdicts[0].extracted == "0.5" and verdicts[5].extracted is None
    assert not any(v.timed_out for v in verdicts)


# --- strict and flexible grading (issue 19) ----------------------------------------------------

@pytest.mark.parametrize("text, answer_type, stated, extracted", [
    (r"Adding gives 7, so \boxed{7}.", "math", "7", "7"),
    ("3 + 4 = 7. The answer is 7.", "math", "7", "7"),
    ("She has 3 + 4 = 7 apples.\n#### 7", "math", "7", "7"),
    ("Answer: 12", "integer", "12", "12"),
    ("The answer is (B).", "choice", "B", "B"),
    ("Answer: B", "choice", "B", "B"),
    ("The correct option is C because it is a noble gas.", "choice", "C", "C"),
    ("(D)", "choice", "D", "D"),
    ("B", "choice", "B", "B"),
    # no final-answer marker: flexible's fallbacks find an answer, strict none
    ("3 + 4 = 7", "math", None, "7"),
    ("We get 5 and then 7 apples", "math", None, "7"),
    ("Options: (A) helium (B) hydrogen", "choice", None, "B"),
    ("A. 12\nLet me think.\nC. 5", "choice", None, "C"),
    ("maybe [1,2] but really [3, 4]", "list", None, "[3, 4]"),
])
def test_stated_answer_needs_a_marker(text, answer_type, stated, extracted):
    assert stated_answer(text, answer_type) == stated
    assert extract_answer(text, answer_type) == extracted


@pytest.mark.parametrize("text, loops", [
    ("The numbers are 21, " + "21, " * 30, True),                  # the default run's looping output
    ("The answer is 21. " * 4, True),
    ("x = 5\n" * 20, True),
    ("The answer is 21. " * 3, False),                             # 54 characters: short of a loop
    ("0.33333333333333333333", False),
    ("1,000,000,000,000", False),
    ("=" * 200, False),                                            # a rule line, no letter or digit
    ("Step 1: 3 + 4 = 7.\nStep 2: 7 * 2 = 14.\nStep 3: 14 - 1 = 13.\nThe answer is 13.", False),
    (r"\begin{align*} x &= 1 \end{align*}" + "\n" + r"\begin{align*} y &= 2 \end{align*}", False),
])
def test_repeating(text, loops):
    assert repeating(text) is loops


def test_strict_and_flexible_verdicts(grader):
    """Hand cases for both verdicts: markers credited by both; a last number by flexible only; a cut-off
    or looping output by neither, whatever its answer."""
    loop = "Let me list them: 21, " + "21, " * 40
    items = [
        (r"3 + 4 = 7, so \boxed{7}.", "7", "math", "math"),         # boxed
        ("3 + 4 = 7. The answer is 7.", "7", "math", "math"),       # "The answer is"
        ("3 + 4 = 7\n#### 7", "7", "math", "gsm8k"),                # ####
        ("Hydrogen is element 1. The answer is (B).", "B", "choice", "mmlu_stem"),
        ("Answer: B", "B", "choice", "mmlu_stem"),
        ("3 + 4 = 7", "7", "math", "math"),                         # last number only
        ("(A) helium (B) hydrogen", "B", "choice", "mmlu_stem"),    # an option restated, none chosen
        (r"3 + 4 = 7, so \boxed{7}. Next, 8 + 1 = 9 and", "7", "math", "math"),  # cut off
        ("3 + 4 = 7 and then 7 +", "7", "math", "math"),            # cut off, last number right
        (loop, "21", "math", "math"),                               # looping
        ("The answer is 8.", "7", "math", "math"),                  # stated and wrong
    ]
    cut_off = [False] * 7 + [True, True, False, False]
    verdicts = grader.grade_many(items, cut_off=cut_off)
    got = [(v.correct_strict, v.correct_flexible) for v in verdicts]
    assert got == [(True, True)] * 5 + [(False, True)] * 2 + [(False, False)] * 4
    assert [v.truncated for v in verdicts] == cut_off
    assert [v.repeating for v in verdicts] == [False] * 9 + [True, False]
    assert verdicts[9].extracted == "21"  # the loop's last number is there; it is not credited
    assert [v.correct for v in verdicts] == [s for s, _ in got]  # the fixture grades strict
    with Grader(n_workers=1, grading="flexible") as flexible:
        assert [v.correct for v in flexible.grade_many(items, cut_off=cut_off)] == [f for _, f in got]
    with pytest.raises(ValueError, match="grading"):
        Grader(grading="lenient")
    with pytest.raises(ValueError, match="cut_off"):
        grader.grade_many(items, cut_off=[False])


# --- real solutions ----------------------------------------------------------------------------

def _read_jsonl(path, n):
    with open(path) as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


def _wrong_pairs(golds, rng):
    """(i, j) pairs of different rows whose answers differ as strings and as plain numbers."""
    order = list(range(len(golds)))
    rng.shuffle(order)
    pairs = []
    for i, j in zip(range(len(golds)), order):
        a, b = golds[i], golds[j]
        if i == j or cheap_equivalent(clean_answer(a), b, "math") is True:
            continue
        pairs.append((i, j))
    return pairs


@pytest.mark.floors
def test_math_solutions(shared_data, grader):
    rows = _read_jsonl(shared_data / "math" / "test.jsonl", 200)
    golds = [extract_answer(r["solution"]) for r in rows]
    assert all(golds), "every MATH solution has a \\boxed answer"
    own = grader.grade_many([(r["solution"], g, "math", "math") for r, g in zip(rows, golds)])
    assert all(v.correct for v in own)
    pairs = _wrong_pairs(golds, random.Random(0))
    assert len(pairs) > 150
    other = grader.grade_many([(rows[i]["solution"], golds[j], "math", "math") for i, j in pairs])
    wrongly_right = [(golds[i], golds[j]) for (i, j), v in zip(pairs, other) if v.correct]
    assert not wrongly_right


def test_math500_solutions_against_independent_answers(shared_data, grader):
    """MATH-500 carries an `answer` field written by PRM800K, independent of our extraction."""
    rows = _read_jsonl(shared_data / "math" / "math500_test.jsonl", 500)
    verdicts = grader.grade_many([(r["solution"], r["answer"], "math", "math") for r in rows])
    wrong = [(r["answer"], v.extracted) for r, v in zip(rows, verdicts) if not v.correct]
    assert len(wrong) <= 5, wrong


def test_gsm8k_solutions(shared_data, grader):
    rows = _read_jsonl(shared_data / "gsm8k" / "test.jsonl", 200)
    golds = [r["answer"].split("####")[-1].strip() for r in rows]
    own = grader.grade_many([(r["answer"], g, "math", "gsm8k") for r, g in zip(rows, golds)])
    assert all(v.correct for v in own)
    pairs = _wrong_pairs(golds, random.Random(1))
    assert len(pairs) > 150
    other = grader.grade_many([(rows[i]["answer"], golds[j], "math", "gsm8k") for i, j in pairs])
    assert not any(v.correct for v in other)


THEOREMQA_TYPES = {"float": "float", "integer": "integer", "bool": "bool", "list of integer": "list",
                   "list of float": "list", "option": "choice"}


def test_theoremqa_typed_answers(shared_data, grader):
    """Each TheoremQA gold (number, bool, list, "(c)") restated in a sentence grades right, and
    against another question's answer of the same type wrong."""
    rows = json.loads((shared_data / "theoremqa" / "theoremqa_test.json").read_text())
    items = [(f"Some work.\nTherefore, the answer is {r['Answer']}.", str(r["Answer"]), THEOREMQA_TYPES[r["Answer_type"]],
              "theoremqa") for r in rows]
    assert all(v.correct for v in grader.grade_many(items))
    rng = random.Random(2)
    others = [(item, items[rng.randrange(len(items))]) for item in items]
    wrong = [(a[0], b[1], a[2], a[3]) for a, b in others
             if a[2] == b[2] and cheap_equivalent(extract_answer(a[0], a[2]), b[1], a[2]) is not True]
    assert len(wrong) > 150
    assert not any(v.correct for v in grader.grade_many(wrong))


# --- the hard time limit -----------------------------------------------------------------------

def test_timeout_kills_a_hanging_comparison_and_the_rest_continue():
    items = [
        ("The answer is 1.", "1", "math", ""),     # decided in process
        (r"\boxed{slow}", "2", "math", ""),        # hangs in the worker
        (r"\boxed{fast}", "fast2", "math", ""),    # goes to a worker, answers at once
        (r"\boxed{fast}", "fast", "math", ""),
    ]
    with Grader(n_workers=1, timeout_s=2.0, compare=slow_compare) as grader:
        verdicts = grader.grade_many(items)
        again = grader.grade_many([(r"\boxed{a}", "b", "math", "")])  # the replacement worker works
    assert [v.correct for v in verdicts] == [True, False, False, True]
    assert [v.timed_out for v in verdicts] == [False, True, False, False]
    assert again[0].correct is False and not again[0].timed_out


def test_a_dying_worker_is_replaced():
    items = [(r"\boxed{crash}", "1", "math", ""), (r"\boxed{ok}", "ok2", "math", ""), (r"\boxed{ok}", "ok", "math", "")]
    with Grader(n_workers=1, timeout_s=30.0, compare=crashing_compare) as grader:
        verdicts = grader.grade_many(items)
    assert [(v.correct, v.timed_out) for v in verdicts] == [(False, False), (False, False), (True, False)]


def test_timeout_on_a_pathological_expression():
    """math-verify's `verify` does not return (in minutes) on a power tower against a number."""
    with Grader(n_workers=1, timeout_s=3.0) as grader:
        verdicts = grader.grade_many([
            (r"\boxed{9^{9^{9^{9}}}}", "12345", "math", ""),
            (r"\boxed{\frac{1}{2}}", "0.5", "math", ""),
            (r"\boxed{\sqrt{2}/2}", r"\frac{\sqrt{2}}{2}", "math", ""),
        ])
    assert verdicts[0].timed_out and not verdicts[0].correct
    assert verdicts[1].correct and verdicts[2].correct


# --- reasoning metrics -------------------------------------------------------------------------

def test_reasoning_steps():
    gsm8k = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18"
    assert reasoning_steps(gsm8k) == 2
    assert reasoning_steps("Step 1: add. Then more.\nStep 2: divide.\nStep 2 again") == 2
    assert reasoning_steps("We have x = 3.5. Then y is 2! So z? 1. Done") == 4
    assert reasoning_steps("先算。再算。") == 2
    assert reasoning_steps("") == 0


def test_step_correctness():
    text = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs.\nThen 2x = 4, so x = 6/3 = 2.0 and the total is 1,200."
    assert step_correctness(text, ["16-3-4 = 9"]) == 1.0   # rule 1
    assert step_correctness(text, ["x = 2"]) == 1.0        # rule 2, numerically after '='
    assert step_correctness(text, ["2x=4"]) == 1.0         # rule 1 ignoring spaces
    assert step_correctness(text, ["1200", "9"]) == 1.0    # rule 3
    assert step_correctness(text, ["12", "x = 3", "y = 2"]) == 0.0  # 12 only inside 1200; no y
    assert step_correctness(text, ["16-3-4 = 9", "x = 3"]) == 0.5
    assert step_correctness("4 = 2x", ["2x = 4"]) == 0.0
    assert step_correctness(text, []) is None


def test_acc_at_k():
    assert acc_at_k([[False, True], [False, False], [True, True], [False, False]]) == 0.5
    assert acc_at_k([[True], [False]]) == 0.5
    with pytest.raises(ValueError):
        acc_at_k([[True], []])


def test_step_correctness_needs_whole_numbers():
    assert step_correctness("so x = 20", ["x = 2"]) == 0.0
    assert step_correctness("so x = 2.", ["x = 2"]) == 1.0
    assert step_correctness("we get x=\\frac{1}{2} here", ["x = \\frac{1}{2}"]) == 1.0


def test_grader_works_outside_the_main_thread(grader):
    """math-verify's own SIGALRM timeout fails off the main thread; the Grader does not use it."""
    import threading

    out = []
    thread = threading.Thread(target=lambda: out.extend(grader.grade_many([(r"\boxed{\frac{\sqrt{2}}{2}}", r"\sqrt{2}/2", "math", "")])))
    thread.start()
    thread.join(timeout=120)
    assert out and out[0].correct
