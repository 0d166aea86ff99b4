"""The one answer parser, for gold solutions (MATH's boxed answers) and model outputs alike."""
from __future__ import annotations

import pytest
from math_verify import parse, verify

from metasft.answers import extract_answer, last_boxed
from metasft.eval.scoring import is_equivalent


@pytest.mark.parametrize("text, expected", [
    ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    ("first \\boxed{1} then \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("$\\fbox{7}$", "7"),
    ("so $x^2 + y^2 = \\boxed 9$.", "9"),
    ("no box here", None),
    ("\\boxed{}", None),
    ("\\boxed{unbalanced", None),
    ("\\boxed{4} and then a cut-off \\boxed{unbalanced", "4"),  # an output stopped mid-box
    ("\\boxed 9 \\text{ cm}$ more", "9 \\text{ cm}"),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("The correct option is B because the others contradict the data.", "B"),
    ("Option A fails at x = 0. Option (C) is the right one.", "C"),
    ("The best answer: d, since it balances.", "D"),
    ("Options A and B are both wrong; so is C.", None),  # no option named as the answer: nothing taken
])
def test_choice_letter_stated_in_prose(text, expected):
    assert extract_answer(text, "choice") == expected


@pytest.mark.parametrize("pred, gold", [
    ("2√2", r"\sqrt{8}"), ("√8", r"2\sqrt{2}"), ("2√(2)", r"\sqrt{8}"), ("√3/3", r"\frac{1}{\sqrt{3}}"),
    ("sqrt2", r"\sqrt{2}"), ("∛16", r"2\sqrt[3]{2}"), ("√(2+√3)", r"\sqrt{2+\sqrt{3}}"),
])
def test_radicals_written_as_text_that_math_verify_misses_are_accepted(pred, gold):
    # math-verify alone does not see these as equal (so the test is about our rewriting, not about it)
    assert not verify(parse(f"\\boxed{{{gold}}}"), parse(f"\\boxed{{{pred}}}"))
    assert is_equivalent(pred, gold, "math")
    assert is_equivalent(extract_answer(f"So the side is \\boxed{{{pred}}}.", "math"), gold, "math")


@pytest.mark.parametrize("pred, gold", [("2√2", r"\sqrt{9}"), ("√3", "3"), ("∛8", r"\sqrt{8}"), ("√(2", r"\sqrt{2}")])
def test_different_radicals_stay_different(pred, gold):
    assert not is_equivalent(pred, gold, "math")
