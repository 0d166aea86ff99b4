"""Algebra: linear equations, quadratics, inequalities."""
from __future__ import annotations

import math
import random
from fractions import Fraction

from metasft.data.sources.embedded._common import Problem, nonzero, poly, problem

_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}


def _remove(c: int, var: str = "") -> str:
    """Prose for taking the term c*var (a constant if var is empty) off both sides."""
    term = poly({1: abs(c)}, var) if var else str(abs(c))
    return f"Subtract {term} from both sides:" if c > 0 else f"Add {term} to both sides:"


def _coef(rng: random.Random, lo: int, hi: int) -> int:
    """A coefficient in [lo, hi] other than 0 and 1, so that every step changes the equation."""
    while True:
        k = rng.randint(lo, hi)
        if k not in (0, 1):
            return k


def linear_equations(rng: random.Random, level: int) -> Problem:
    """Level 1: ax + b = c; 2: negatives; 3: x on both sides; 4: brackets; 5: fractions, rational root."""
    v = "x" if level == 1 else rng.choice("xyn")
    if level <= 2:
        a = rng.randint(2, 9) if level == 1 else _coef(rng, -12, 12)
        x = rng.randint(1, 15) if level == 1 else nonzero(rng, -20, 20)
        b = rng.randint(1, 30) if level == 1 else nonzero(rng, -50, 50)
        c = a * x + b
        lines = [(_remove(b), f"{poly({1: a}, v)} = {c - b}"), (f"Divide both sides by {a}:", f"{v} = {x}")]
        return problem(f"Solve for {v}: {poly({1: a, 0: b}, v)} = {c}.", lines, x)
    if level <= 4:
        c, x = nonzero(rng, -12, 12), rng.randint(-20, 20)
        a, b = nonzero(rng, -12, 12), nonzero(rng, -40, 40)
        left = poly({1: a, 0: b}, v)
        if level == 4:
            k, e = rng.randint(2, 9), nonzero(rng, -30, 30)
            left = f"{k}({left}) {'+' if e > 0 else '-'} {abs(e)}"
            a, b = k * a, k * b + e
        if a - c in (0, 1) or b == 0:  # a step would do nothing: draw again
            return linear_equations(rng, level)
        d = (a - c) * x + b
        lines = [("Expand:", f"{poly({1: a, 0: b}, v)} = {poly({1: c, 0: d}, v)}")] if level == 4 else []
        lines += [(_remove(c, v), f"{poly({1: a - c, 0: b}, v)} = {d}"),
                  (_remove(b), f"{poly({1: a - c}, v)} = {d - b}"),
                  (f"Divide both sides by {a - c}:", f"{v} = {x}")]
        return problem(f"Solve for {v}: {left} = {poly({1: c, 0: d}, v)}.", lines, x)
    p, q = rng.randint(1, 9), rng.randint(1, 9)
    b, d = rng.randint(2, 9), rng.randint(2, 9)
    while d * p - b * q in (0, 1):
        q = rng.randint(1, 9)
    a, c = nonzero(rng, -20, 20), nonzero(rng, -20, 20)
    x = Fraction(b * c - d * a, d * p - b * q)
    lines = [(f"Multiply both sides by {b * d}:", f"{d}({poly({1: p, 0: a}, v)}) = {b}({poly({1: q, 0: c}, v)})"),
             ("Expand:", f"{poly({1: d * p, 0: d * a}, v)} = {poly({1: b * q, 0: b * c}, v)}"),
             (_remove(b * q, v), f"{poly({1: d * p - b * q, 0: d * a}, v)} = {b * c}"),
             (_remove(d * a), f"{poly({1: d * p - b * q}, v)} = {b * c - d * a}"),
             (f"Divide both sides by {d * p - b * q}:", f"{v} = {x}")]
    return problem(f"Solve for {v}: ({poly({1: p, 0: a}, v)})/{b} = ({poly({1: q, 0: c}, v)})/{d}.", lines, x)


def quadratics(rng: random.Random, level: int) -> Problem:
    """Level 1: x^2 + b = c; 2: monic, positive roots; 3: monic, rearranged; 4: factoring ax^2 + bx + c;
    5: quadratic formula. Levels 2-5 ask for the larger or the smaller solution."""
    if level == 1:
        k, b = rng.randint(2, 20), rng.randint(-30, 30)
        lines = [(_remove(b), f"x^2 = {k * k}")] if b else []
        lines.append(("Take the positive square root:", f"x = {k}"))
        return problem(f"Find the positive solution of {poly({2: 1, 0: b})} = {k * k + b}.", lines, k)
    which = rng.choice(("larger", "smaller"))
    if level <= 3:
        pool = range(1, 26) if level == 2 else [k for k in range(-15, 16) if k]
        p, q = sorted(rng.sample(pool, 2))
        eq = poly({2: 1, 1: -(p + q), 0: p * q})
        lines = [(f"Two numbers with product {p * q} and sum {p + q}:", f"{p} and {q}"),
                 ("Factor:", f"({poly({1: 1, 0: -p})})({poly({1: 1, 0: -q})}) = 0"), ("So", f"x = {p} or x = {q}")]
        if level == 3:
            lines.insert(0, ("Move every term to the left:", f"{eq} = 0"))
            text = f"{poly({2: 1, 1: -(p + q)})} = {-p * q}"
        else:
            text = f"{eq} = 0"
        return problem(f"Find the {which} solution of {text}.", lines, q if which == "larger" else p)
    top = 5 if level == 4 else 9
    m, n = rng.randint(1, top), rng.randint(2, top)
    p, q = nonzero(rng, -12, 12), nonzero(rng, -12, 12)
    r1, r2 = Fraction(p, m), Fraction(q, n)
    if r1 == r2 or r1.denominator != m or r2.denominator != n:  # repeated root or a reducible factor
        return quadratics(rng, level)
    a, b, c = m * n, -(m * q + n * p), p * q
    low, high = sorted((r1, r2))
    answer = high if which == "larger" else low
    text = f"Find the {which} solution of {poly({2: a, 1: b, 0: c})} = 0."
    if level == 4:
        lines = [(f"Two numbers with product {a} * {c if c > 0 else f'({c})'} = {a * c} and sum {b}:",
                  f"{-m * q} and {-n * p}"),
                 ("Factor:", f"({poly({1: m, 0: -p})})({poly({1: n, 0: -q})}) = 0"),
                 ("Set each factor to zero:", f"{poly({1: m})} = {p} or {poly({1: n})} = {q}"),
                 ("So", f"x = {r1} or x = {r2}")]
        return problem(text, lines, answer)
    disc = b * b - 4 * a * c
    s = abs(m * q - n * p)
    bsq = f"{b}^2" if b >= 0 else f"({b})^2"
    lines = [("Discriminant:", f"D = {bsq} - 4 * {a} * {c if c > 0 else f'({c})'} = {disc}"),
             ("", f"sqrt({disc}) = {s}"),
             ("Quadratic formula:", f"x = ({-b} + {s})/{2 * a} = {Fraction(-b + s, 2 * a)} "
                                    f"or x = ({-b} - {s})/{2 * a} = {Fraction(-b - s, 2 * a)}")]
    return problem(text, lines, answer)


def inequalities(rng: random.Random, level: int) -> Problem:
    """Level 1: x + b > c; 2: ax + b > c; 3: negative a (reverse the sign); 4: x on both sides;
    5: count the integers in a double inequality."""
    v = "x" if level == 1 else rng.choice("xyn")
    op = rng.choice(tuple(_FLIP))
    if level <= 3:
        a = {1: 1, 2: rng.randint(2, 9), 3: rng.randint(-9, -2)}[level]
        k, b = rng.randint(-20, 30), nonzero(rng, -30, 30)
        c = a * k + b
        lines = [(_remove(b), f"{poly({1: a}, v)} {op} {c - b}")]
        if level == 2:
            lines.append((f"Divide both sides by {a}:", f"{v} {op} {k}"))
        if level == 3:
            lines.append((f"Divide both sides by {a} and reverse the inequality:", f"{v} {_FLIP[op]} {k}"))
        return problem(f"Solve for {v}: {poly({1: a, 0: b}, v)} {op} {c}.", lines, lines[-1][1])
    if level == 4:
        a, c = nonzero(rng, -9, 9), nonzero(rng, -9, 9)
        b, d = nonzero(rng, -30, 30), rng.randint(-30, 30)
        if a - c in (0, 1):
            return inequalities(rng, level)
        bound = Fraction(d - b, a - c)
        final = op if a > c else _FLIP[op]
        reverse = "" if a > c else " and reverse the inequality"
        lines = [(_remove(c, v), f"{poly({1: a - c, 0: b}, v)} {op} {d}"),
                 (_remove(b), f"{poly({1: a - c}, v)} {op} {d - b}"),
                 (f"Divide both sides by {a - c}{reverse}:", f"{v} {final} {bound}")]
        return problem(f"Solve for {v}: {poly({1: a, 0: b}, v)} {op} {poly({1: c, 0: d}, v)}.", lines, lines[-1][1])
    a, b = _coef(rng, -9, 9), nonzero(rng, -30, 30)
    lo = rng.randint(-60, 30)
    hi = lo + rng.randint(2 * abs(a), 25 * abs(a))
    lop, rop = rng.choice(("<", "<=")), rng.choice(("<", "<="))
    low, high = Fraction(lo - b, a), Fraction(hi - b, a)
    low_op, high_op = lop, rop
    if a < 0:  # dividing by a negative number swaps the ends
        low, high, low_op, high_op = high, low, rop, lop
    first = math.floor(low) + 1 if low_op == "<" else math.ceil(low)
    last = math.ceil(high) - 1 if high_op == "<" else math.floor(high)
    reverse = "" if a > 0 else " and reverse the inequalities"
    lines = [(_remove(b), f"{lo - b} {lop} {poly({1: a}, v)} {rop} {hi - b}"),
             (f"Divide by {a}{reverse}:", f"{low} {low_op} {v} {high_op} {high}"),
             ("The integers run from", f"{first} to {last}"),
             ("Count:", f"{last} - {first if first >= 0 else f'({first})'} + 1 = {last - first + 1}")]
    return problem(f"How many integers {v} satisfy {lo} {lop} {poly({1: a, 0: b}, v)} {rop} {hi}?", lines,
                   last - first + 1)


TOPICS = {"linear_equations": linear_equations, "quadratics": quadratics, "inequalities": inequalities}
