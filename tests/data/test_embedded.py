"""The embedded generator: counts, determinism, distinctness, record contract, and answers re-derived
independently from the problem text (sympy, brute force, the standard library), not from the generator."""
from __future__ import annotations

import functools
import math
import re
import statistics
from collections import Counter
from fractions import Fraction

import pytest
import sympy
from sympy.parsing.sympy_parser import (
    convert_xor, implicit_multiplication_application, parse_expr, standard_transformations,
)

from metasft.data.records import DOMAINS, normalized_text, validate
from metasft.data.sources import load_source
from metasft.data.sources.embedded import load

EIGHT = DOMAINS[:8]
_TRANSFORMS = standard_transformations + (implicit_multiplication_application, convert_xor)
_SYMBOLS = {v: sympy.Symbol(v) for v in "xyn"}


@pytest.fixture(scope="module")
def records():
    return load("train", seed=0, size=1000)


@pytest.fixture(scope="module")
def sample():
    """A smaller set, 20 per (domain, topic, level), for the slower sympy re-checks."""
    return load("train", seed=3, size=300)


def expr(text: str) -> sympy.Expr:
    return parse_expr(text, local_dict=_SYMBOLS, transformations=_TRANSFORMS)


def of(records, domain: str, topic: str, level: int | None = None):
    out = [r for r in records if r.domain == domain and r.topic == topic and (level is None or r.level == level)]
    assert out, (domain, topic, level)
    return out


def ints(text: str) -> list[int]:
    return [int(v) for v in re.findall(r"-?\d+", text)]


# --- the record contract -------------------------------------------------------------------------


def test_every_domain_topic_and_level_is_balanced(records):
    assert [d for d in dict.fromkeys(r.domain for r in records)] == list(EIGHT)
    for domain in EIGHT:
        rs = [r for r in records if r.domain == domain]
        assert len(rs) == 1000
        topics = Counter(r.topic for r in rs)
        assert len(topics) == 3 and set(topics.values()) <= {333, 334}
        assert Counter(r.level for r in rs) == {level: 200 for level in range(1, 6)}
        assert set(Counter((r.topic, r.level) for r in rs).values()) <= {66, 67}
        assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", t) for t in topics)


def test_records_follow_the_contract(records):
    ids = [r.id for r in records]
    assert len(set(ids)) == len(ids)
    for r in records:
        validate(r)
        assert re.fullmatch(rf"embedded/train/{r.domain}/\d+", r.id)
        assert (r.subject, r.source, r.answer_type) == (r.domain, "embedded", "math")
        assert r.steps and all(step in r.solution for step in r.steps), r
        assert "boxed" not in r.solution and "answer is" not in r.solution.lower()
        assert len(r.problem.split()) <= 60 and len(r.solution.splitlines()) <= 8, r


def test_problems_are_distinct_even_for_thousands_per_domain():
    big = load("train", seed=0, size=3000)
    assert Counter(r.domain for r in big) == {d: 3000 for d in EIGHT}
    keys = [normalized_text(r.problem) for r in big]
    assert len(set(keys)) == len(keys)


def test_deterministic_per_seed_and_split():
    first = load("train", seed=7, size=60)
    assert first == load("train", seed=7, size=60)
    assert [r.problem for r in first] != [r.problem for r in load("train", seed=8, size=60)]
    test = load("test", seed=7, size=60)
    assert [r.problem for r in first] != [r.problem for r in test]
    assert all(r.id.startswith("embedded/test/") for r in test)
    # a smaller size is a prefix of each domain's list
    small = load("train", seed=7, size=20)
    for d in EIGHT:
        assert [r for r in small if r.domain == d] == [r for r in first if r.domain == d][:20]


def test_load_source_reaches_the_generator():
    assert load_source("embedded", "validation", seed=2, size=15) == load("validation", seed=2, size=15)


def test_levels_get_harder(records):
    for domain in EIGHT:
        rs = [r for r in records if r.domain == domain]
        length = [statistics.mean(len(r.solution) for r in rs if r.level == level) for level in range(1, 6)]
        steps = [statistics.mean(len(r.steps) for r in rs if r.level == level) for level in range(1, 6)]
        assert length == sorted(length) and len(set(length)) == 5, (domain, length)
        assert steps[4] > steps[0] + 1.5, (domain, steps)
        for topic in {r.topic for r in rs}:
            by_level = [statistics.mean(len(r.solution) for r in rs if r.topic == topic and r.level == lv)
                        for lv in (1, 5)]
            assert by_level[1] > 1.3 * by_level[0], (domain, topic, by_level)


def test_level_one_is_small(records):
    for r in records:
        if r.level == 1:
            assert len(r.steps) <= 3 and len(r.solution) < 160, r


# --- answers re-derived from the problem text ----------------------------------------------------


def test_linear_equations(sample):
    for r in of(sample, "algebra", "linear_equations"):
        var, lhs, rhs = re.fullmatch(r"Solve for (\w): (.+) = (.+)\.", r.problem).groups()
        v = _SYMBOLS[var]
        assert sympy.solve(sympy.Eq(expr(lhs), expr(rhs)), v) == [sympy.Rational(r.answer)], r


def test_quadratics(sample):
    for r in of(sample, "algebra", "quadratics"):
        which, lhs, rhs = re.fullmatch(r"Find the (\w+) solution of (.+) = (.+)\.", r.problem).groups()
        roots = sorted(sympy.solve(sympy.Eq(expr(lhs), expr(rhs)), _SYMBOLS["x"]))
        want = {"positive": max(roots), "larger": max(roots), "smaller": min(roots)}[which]
        assert want == sympy.Rational(r.answer), r


def test_inequalities(sample):
    for r in of(sample, "algebra", "inequalities"):
        if r.level < 5:
            var, question = re.fullmatch(r"Solve for (\w): (.+)\.", r.problem).groups()
            v = _SYMBOLS[var]
            assert (sympy.solve_univariate_inequality(expr(question), v, relational=False)
                    == sympy.solve_univariate_inequality(expr(r.answer), v, relational=False)), r
        else:
            var, lo, lop, middle, rop, hi = re.fullmatch(
                r"How many integers (\w) satisfy (-?\d+) (<=?) (.+) (<=?) (-?\d+)\?", r.problem).groups()
            f = sympy.lambdify(_SYMBOLS[var], expr(middle))
            less = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b}
            count = sum(less[lop](int(lo), f(x)) and less[rop](f(x), int(hi)) for x in range(-1000, 1001))
            assert count == int(r.answer), r


def test_calculus(sample):
    x = _SYMBOLS["x"]
    for r in of(sample, "calculus", "derivatives"):
        body, at = re.fullmatch(r"Let f\(x\) = (.+)\. Find f'\((-?\d+)\)\.", r.problem).groups()
        assert sympy.diff(expr(body), x).subs(x, int(at)) == sympy.Rational(r.answer), r
    for r in of(sample, "calculus", "limits"):
        body, at = re.fullmatch(r"Find the limit of (.+) as x approaches (-?\d+)\.", r.problem).groups()
        assert sympy.limit(expr(body), x, int(at)) == sympy.Rational(r.answer), r
    for r in of(sample, "calculus", "integrals"):
        if m := re.fullmatch(r"Evaluate the integral of (.+) from x = (-?\d+) to x = (-?\d+)\.", r.problem):
            want = sympy.integrate(expr(m[1]), (x, int(m[2]), int(m[3])))
        elif m := re.fullmatch(r"Find the average value of f\(x\) = (.+) on the interval \[(-?\d+), (-?\d+)\]\.",
                               r.problem):
            lo, hi = int(m[2]), int(m[3])
            want = sympy.integrate(expr(m[1]), (x, lo, hi)) / (hi - lo)
        else:
            f, g = re.fullmatch(r"Find the area enclosed between y = (.+) and y = (.+)\.", r.problem).groups()
            a, b = sorted(sympy.solve(expr(f) - expr(g), x))
            want = abs(sympy.integrate(expr(f) - expr(g), (x, a, b)))
        assert want == sympy.Rational(r.answer), r


def _number_theory_answer(text: str) -> int:
    """The answer to a number-theory problem, by sympy or brute force."""
    nums = ints(text)
    if "prime factor" in text and "distinct" not in text:
        return (min if "smallest" in text else max)(sympy.primefactors(nums[0]))
    if "How many distinct prime factors" in text:
        return len(sympy.primefactors(nums[0]))
    if "sum of the distinct prime factors" in text:
        return sum(sympy.primefactors(nums[0]))
    if "How many positive divisors" in text:
        return int(sympy.divisor_count(nums[0]))
    if "sum of all positive divisors" in text:
        return int(sympy.divisor_sigma(nums[0]))
    if "totient" in text:
        return int(sympy.totient(nums[0]))
    if m := re.fullmatch(r"What is the remainder when (\d+)( [+*] |\^)?(\d+)? is divided by (\d+)\?", text):
        a, op, b, mod = m[1], (m[2] or "").strip(), m[3], int(m[4])
        value = {"": lambda: int(a), "+": lambda: int(a) + int(b), "*": lambda: int(a) * int(b),
                 "^": lambda: pow(int(a), int(b), mod)}[op]()
        return value % mod
    if m := re.fullmatch(r"Find the smallest positive integer x with (\d+)x ≡ (\d+) \(mod (\d+)\)\.", text):
        a, b, mod = map(int, m.groups())
        return next(x for x in range(1, mod + 1) if (a * x - b) % mod == 0)
    if m := re.fullmatch(r"Find the smallest positive integer x with x ≡ (\d+) \(mod (\d+)\) "
                         r"and x ≡ (\d+) \(mod (\d+)\)\.", text):
        a, m1, b, m2 = map(int, m.groups())
        return next(x for x in range(1, m1 * m2 + 1) if x % m1 == a and x % m2 == b)
    if text.startswith("How many multiples"):
        k, _, n = nums
        return sum(1 for v in range(1, n + 1) if v % k == 0)
    if "greatest common divisor" in text:
        return math.gcd(*nums)
    if "least common multiple" in text:
        return math.lcm(*nums)
    if m := re.fullmatch(r"How many integers from 1 to (\d+) are divisible by (neither )?(\d+) (?:or|nor) (\d+)\?",
                         text):
        n, neither, a, b = int(m[1]), m[2], int(m[3]), int(m[4])
        either = sum(1 for v in range(1, n + 1) if v % a == 0 or v % b == 0)
        return n - either if neither else either
    n, r, a, b, c = nums
    assert "smallest integer greater than" in text
    return next(v for v in range(n + 1, n + math.lcm(a, b, c) + 2) if all(v % k == r for k in (a, b, c)))


def test_number_theory(sample):
    for r in (r for r in sample if r.domain == "number_theory"):
        assert _number_theory_answer(r.problem) == int(r.answer), r


def test_combinatorics(sample):
    for r in of(sample, "combinatorics", "permutations_and_combinations", 5):
        word = re.search(r"letters (\w+)\?", r.problem)[1]
        counts = Counter(word).values()
        assert math.factorial(len(word)) // math.prod(math.factorial(k) for k in counts) == int(r.answer), r
    for r in of(sample, "combinatorics", "permutations_and_combinations", 3):
        k, n = ints(r.problem)
        assert math.comb(n, k) == int(r.answer), r
    for r in of(sample, "combinatorics", "probability", 3):
        good, bad = ints(r.problem)[:2]
        pairs = [(i, j) for i in range(good + bad) for j in range(good + bad) if i != j]
        assert Fraction(sum(i < good and j < good for i, j in pairs), len(pairs)) == Fraction(r.answer), r
    for r in of(sample, "combinatorics", "counting", 5):
        n, k, m = ints(r.problem)
        assert _shares(n, k, m) == int(r.answer), r


@functools.cache
def _shares(n: int, k: int, m: int) -> int:
    """Ways to write n as an ordered sum of k parts, each at least m, by recursion on the first part."""
    if k == 1:
        return int(n >= m)
    return sum(_shares(n - first, k - 1, m) for first in range(m, n + 1))


def _values(text: str) -> list[int]:
    listed = re.search(r"of ([\d, and]+?)(?:,? rounded.*)?\.$", text)[1]
    return ints(listed)


def test_statistics(sample):
    for r in of(sample, "statistics", "descriptive"):
        if r.level == 3:
            n, mean, *known = ints(r.problem)
            assert n * mean - sum(known[1:]) == int(r.answer), r  # known[0] is n - 1
            continue
        xs = [Fraction(v) for v in _values(r.problem)]
        want = {1: statistics.mean, 2: statistics.median, 4: statistics.pvariance, 5: statistics.variance}[r.level](xs)
        assert abs(Fraction(want) - Fraction(r.answer)) <= Fraction(1, 200), r
    for r in of(sample, "statistics", "distributions", 2):
        values, probs = r.problem.split(" with probabilities ")
        xs, ps = ints(values), [Fraction(p) for p in re.findall(r"\d\.\d+", probs)]
        assert sum(ps) == 1 and sum(x * p for x, p in zip(xs, ps)) == Fraction(r.answer), r


def _formula_atoms(formula: str) -> Counter:
    """Atom counts, written independently of the generator: expand (group)k, then count."""
    while m := re.search(r"\(([A-Za-z0-9]+)\)(\d+)", formula):
        formula = formula[:m.start()] + m[1] * int(m[2]) + formula[m.end():]
    out = Counter()
    for element, count in re.findall(r"([A-Z][a-z]?)(\d*)", formula):
        out[element] += int(count or 1)
    return out


def _sides(equation: str) -> list[list[tuple[int, str]]]:
    return [[(int(m[1] or 1), m[2]) for m in (re.fullmatch(r"(\d*)(\S+)", t) for t in side.split(" + "))]
            for side in equation.split(" -> ")]


def test_chemistry_equations_balance_and_answers(sample):
    for r in of(sample, "chemistry", "reactions"):
        if r.level == 1:
            continue
        balanced = re.search(r"Balanced: (.+)", r.solution)[1]
        left, right = _sides(balanced)
        total = [sum((Counter({e: c * k for e, k in _formula_atoms(s).items()}) for c, s in side), Counter())
                 for side in (left, right)]
        assert total[0] == total[1], r
        coefs = [c for c, _ in left + right]
        assert math.gcd(*coefs) == 1
        skeleton = re.search(r"Balance (.+) with", r.problem)[1]
        assert [s for _, s in left + right] == [s for side in _sides(skeleton) for _, s in side]
        if m := re.search(r"coefficient of (\S+)\?", r.problem):
            assert dict((s, c) for c, s in left + right)[m[1]] == int(r.answer), r
        elif "sum of the coefficients" in r.problem:
            assert sum(coefs) == int(r.answer), r


def test_chemistry_mass_balances(sample):
    masses = {"H": 1, "Li": 7, "C": 12, "N": 14, "O": 16, "F": 19, "Na": 23, "Mg": 24, "Al": 27, "P": 31, "S": 32,
              "Cl": Fraction(71, 2), "K": 39, "Ca": 40, "Fe": 56, "Zn": 65, "Br": 80, "I": 127, "Ba": 137}
    for r in of(sample, "chemistry", "reactions", 1):  # conservation of mass
        left, right = _sides(re.search(r"reaction (.+?), the masses", r.problem)[1])
        given = {s: Fraction(m) for m, s in re.findall(r"([\d.]+) g of (\S+?)(?:,| and|\.)", r.problem)}
        asked = re.search(r"What mass of (\S+)", r.problem)[1]
        given[asked] = Fraction(r.answer)
        assert sum(given[s] for _, s in left) == sum(given[s] for _, s in right), r
        molar = {s: sum(masses[e] * k for e, k in _formula_atoms(s).items()) for _, s in left + right}
        moles = {given[s] / (c * molar[s]) for c, s in left + right}
        assert len(moles) == 1, r  # the masses follow the balanced equation too
    for r in of(sample, "chemistry", "stoichiometry", 1):  # moles from mass, atomic masses from the text
        grams, formula = re.search(r"in ([\d.]+) g of (\S+)\?", r.problem).groups()
        stated = {e: Fraction(v) for e, v in re.findall(r"(\w+) = ([\d.]+)", r.problem)}
        molar = sum(stated[e] * k for e, k in _formula_atoms(formula).items())
        assert Fraction(grams) / molar == Fraction(r.answer), r


def test_physics_and_geometry(sample):
    for r in of(sample, "physics", "mechanics", 3):
        u, a, t = ints(r.problem.replace("m/s^2", "").replace("m/s", ""))[:3]
        assert u * t + Fraction(a * t * t, 2) == Fraction(r.answer), r
    for r in of(sample, "physics", "electromagnetism", 1):
        volts, ohms = ints(r.problem)
        assert Fraction(volts, ohms) == Fraction(r.answer), r
    for r in of(sample, "physics", "thermodynamics", 2):
        p1, v1, v2 = ints(r.problem)[:3]
        assert abs(Fraction(p1 * v1, v2) - Fraction(r.answer)) <= Fraction(1, 20), r
    for r in of(sample, "geometry", "analytic", 2):
        x1, y1, x2, y2 = ints(r.problem)
        assert math.hypot(x2 - x1, y2 - y1) == int(r.answer), r
    for r in of(sample, "geometry", "plane", 3):
        a, b = ints(r.problem.replace("^2", ""))[:2]
        side = math.hypot(a, b) if "legs" in r.problem else math.sqrt(a * a - b * b)
        assert side == int(r.answer), r
