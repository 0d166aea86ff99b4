"""Geometry: plane figures, solids, analytic (coordinate) geometry."""
from __future__ import annotations

import math
import random
from fractions import Fraction

from metasft.data.sources.embedded._common import (
    Problem, dec, nonzero, poly, problem, pythagorean_triples, quotient, signed_sum, times,
)

_UNITS = ("mm", "cm", "m", "km", "in", "ft")
_TRIPLES = pythagorean_triples(150)
# Cuboids with a whole-number space diagonal: (l, w, h, d), l^2 + w^2 + h^2 = d^2.
_QUADRUPLES = [(l, w, h, math.isqrt(l * l + w * w + h * h))
               for l in range(1, 40) for w in range(1, 40) for h in range(1, 40)
               if math.isqrt(l * l + w * w + h * h) ** 2 == l * l + w * w + h * h]
_PI = Fraction(314, 100)  # the problems say "use 3.14 for pi", so answers are exact decimals


def _triple(rng: random.Random, max_c: int) -> tuple[int, int, int]:
    """A right triangle (a, b, c) with c <= max_c, legs in random order."""
    a, b, c = rng.choice([t for t in _TRIPLES if t[2] <= max_c])
    return (a, b, c) if rng.random() < 0.5 else (b, a, c)


def plane(rng: random.Random, level: int) -> Problem:
    """Level 1: rectangle; 2: triangle or trapezoid area; 3: Pythagoras; 4: right triangle from hypotenuse
    and leg; 5: isosceles triangle or rhombus area through a height found by Pythagoras."""
    u = rng.choice(_UNITS)
    if level == 1:
        l, w = rng.randint(2, 30), rng.randint(2, 30)
        if rng.random() < 0.5:
            return problem(f"A rectangle is {l} {u} long and {w} {u} wide. What is its area in {u}^2?",
                           [("Area:", f"{l} * {w} = {l * w}")], l * w)
        return problem(f"A rectangle is {l} {u} long and {w} {u} wide. What is its perimeter in {u}?",
                       [("Perimeter:", f"2 * ({l} + {w}) = {2 * (l + w)}")], 2 * (l + w))
    if level == 2:
        h = rng.randint(2, 30)
        if rng.random() < 0.5:
            b = rng.randrange(2, 41, 1 if h % 2 == 0 else 2)
            return problem(f"A triangle has base {b} {u} and height {h} {u}. What is its area in {u}^2?",
                           [("Base times height:", f"{b} * {h} = {b * h}"),
                            ("Half of it:", f"{b * h} / 2 = {b * h // 2}")], b * h // 2)
        a, b = rng.randint(2, 30), rng.randint(2, 30)
        if (a + b) * h % 2:
            return plane(rng, level)
        return problem(f"A trapezoid has parallel sides {a} {u} and {b} {u} and height {h} {u}. "
                       f"What is its area in {u}^2?",
                       [("Sum of the parallel sides:", f"{a} + {b} = {a + b}"),
                        ("Times the height:", f"{a + b} * {h} = {(a + b) * h}"),
                        ("Half of it:", f"{(a + b) * h} / 2 = {(a + b) * h // 2}")], (a + b) * h // 2)
    a, b, c = _triple(rng, 100 if level == 3 else 150)
    leg = [("Pythagoras:", f"b^2 = {c}^2 - {a}^2 = {c * c} - {a * a} = {b * b}"), ("So", f"b = sqrt({b * b}) = {b}")]
    if level == 3:
        if rng.random() < 0.5:
            return problem(f"A right triangle has legs {a} {u} and {b} {u}. How long is its hypotenuse in {u}?",
                           [("Square the legs:", f"{a}^2 = {a * a} and {b}^2 = {b * b}"),
                            ("Pythagoras:", f"c^2 = {a * a} + {b * b} = {c * c}"),
                            ("So", f"c = sqrt({c * c}) = {c}")], c)
        return problem(f"A right triangle has hypotenuse {c} {u} and one leg {a} {u}. "
                       f"How long is the other leg in {u}?",
                       [("Square the sides:", f"{c}^2 = {c * c} and {a}^2 = {a * a}")] + leg, b)
    if level == 4:
        given = f"A right triangle has hypotenuse {c} {u} and one leg {a} {u}."
        if rng.random() < 0.5:
            return problem(f"{given} What is its perimeter in {u}?",
                           leg + [("Perimeter:", f"{a} + {b} + {c} = {a + b + c}")], a + b + c)
        return problem(f"{given} What is its area in {u}^2?", leg + [("Area:", f"{a} * {b} / 2 = {a * b // 2}")],
                       a * b // 2)
    height = [("Pythagoras:", f"h^2 = {c}^2 - {a}^2 = {b * b}"), ("So", f"h = {b}")]
    if rng.random() < 0.5:
        return problem(f"An isosceles triangle has two sides of {c} {u} and a base of {2 * a} {u}. "
                       f"What is its area in {u}^2?",
                       [("Half the base:", f"{2 * a} / 2 = {a}")] + height +
                       [("Area:", f"{2 * a} * {b} / 2 = {a * b}")], a * b)
    return problem(f"A rhombus has side {c} {u} and one diagonal of {2 * a} {u}. What is its area in {u}^2?",
                   [("Half the diagonal:", f"{2 * a} / 2 = {a}")] + height +
                   [("Other diagonal:", f"2 * {b} = {2 * b}"), ("Area:", f"{2 * a} * {2 * b} / 2 = {2 * a * b}")],
                   2 * a * b)


def solid(rng: random.Random, level: int) -> Problem:
    """Level 1: cuboid volume; 2: cuboid surface; 3: cylinder volume from its diameter; 4: cone volume from
    its diameter, or cube from its surface; 5: cuboid from its space diagonal."""
    u = rng.choice(_UNITS)
    if level <= 2:
        l, w, h = (rng.randint(2, 12 if level == 1 else 20) for _ in range(3))
        text = f"A box (cuboid) measures {l} {u} by {w} {u} by {h} {u}."
        if level == 1:
            return problem(f"{text} What is its volume in {u}^3?", [("Volume:", f"{l} * {w} * {h} = {l * w * h}")],
                           l * w * h)
        half = l * w + l * h + w * h
        return problem(f"{text} What is its total surface area in {u}^2?",
                       [("Face areas:", f"{l * w} + {l * h} + {w * h} = {half}"),
                        ("Both of each pair:", f"2 * {half} = {2 * half}")], 2 * half)
    if level == 3:
        r, h = rng.randint(1, 15), rng.randint(1, 30)
        volume = _PI * r * r * h
        return problem(f"A cylinder has diameter {2 * r} {u} and height {h} {u}. Using 3.14 for pi, "
                       f"what is its volume in {u}^3?",
                       [("Radius:", f"{2 * r} / 2 = {r}"), ("Radius squared:", f"{r}^2 = {r * r}"),
                        ("Volume:", f"3.14 * {r * r} * {h} = {dec(volume)}")], dec(volume))
    if level == 4:
        if rng.random() < 0.5:
            r, h = rng.randint(2, 20), 3 * rng.randint(1, 12)
            volume = _PI * r * r * h / 3
            return problem(f"A cone has base diameter {2 * r} {u} and height {h} {u}. Using 3.14 for pi, "
                           f"what is its volume in {u}^3?",
                           [("Radius:", f"{2 * r} / 2 = {r}"), ("Radius squared:", f"{r}^2 = {r * r}"),
                            ("One third of r^2 h:", f"{r * r} * {h} / 3 = {r * r * h // 3}"),
                            ("Volume:", f"3.14 * {r * r * h // 3} = {dec(volume)}")], dec(volume))
        s = rng.randint(2, 40)
        return problem(f"A cube has a total surface area of {6 * s * s} {u}^2. What is its volume in {u}^3?",
                       [("One face:", f"{6 * s * s} / 6 = {s * s}"), ("Edge:", f"sqrt({s * s}) = {s}"),
                        ("Volume:", f"{s}^3 = {s ** 3}")], s ** 3)
    l, w, h, d = rng.choice(_QUADRUPLES)
    return problem(f"A box (cuboid) has length {l} {u}, width {w} {u} and a space diagonal of {d} {u}. "
                   f"What is its volume in {u}^3?",
                   [("Space diagonal:", f"h^2 = {d}^2 - {l}^2 - {w}^2 = {h * h}"), ("So", f"h = {h}"),
                    ("Volume:", f"{l} * {w} * {h} = {l * w * h}")], l * w * h)


def _point(x: object, y: object) -> str:
    return f"({x}, {y})"


def _minus(p: int, q: int) -> str:
    """`p - q` with a negative q in parentheses."""
    return f"{p} - {q if q >= 0 else f'({q})'}"


def analytic(rng: random.Random, level: int) -> Problem:
    """Level 1: slope; 2: distance; 3: y-intercept of a line through two points; 4: where two lines meet;
    5: distance from a point to a line."""
    x1, y1 = rng.randint(-10, 10), rng.randint(-10, 10)
    if level == 1:
        dx, m = nonzero(rng, -6, 6), rng.randint(-5, 5)
        x2, y2 = x1 + dx, y1 + m * dx
        return problem(f"Find the slope of the line through {_point(x1, y1)} and {_point(x2, y2)}.",
                       [("Slope:", f"({_minus(y2, y1)})/({_minus(x2, x1)}) = {m * dx}/{dx} = {m}")], m)
    if level == 2:
        a, b, c = _triple(rng, 50)
        x2, y2 = x1 + rng.choice((a, -a)), y1 + rng.choice((b, -b))
        return problem(f"Find the distance between {_point(x1, y1)} and {_point(x2, y2)}.",
                       [("Differences:", f"dx = {x2 - x1}, dy = {y2 - y1}"),
                        ("Distance:", f"sqrt({a * a} + {b * b}) = sqrt({c * c}) = {c}")], c)
    if level == 3:
        dx = nonzero(rng, -9, 9)
        x2, y2 = x1 + dx, y1 + nonzero(rng, -12, 12)
        m = Fraction(y2 - y1, dx)
        b = y1 - m * x1
        return problem(f"A line passes through {_point(x1, y1)} and {_point(x2, y2)}. Find its y-intercept.",
                       [("Slope:", f"m = ({_minus(y2, y1)})/({_minus(x2, x1)}) = {quotient(y2 - y1, dx)}"),
                        ("Intercept:", f"b = {y1} - {times(m, x1)} = {b}")], b)
    if level == 4:
        m1, m2 = rng.sample([k for k in range(-8, 9) if k], 2)
        m1, m2 = (m2, m1) if m1 - m2 == 1 else (m1, m2)  # so that dividing by m1 - m2 is a real step
        x, y = rng.randint(-10, 10), rng.randint(-20, 20)
        b1, b2 = y - m1 * x, y - m2 * x
        return problem(f"The lines y = {poly({1: m1, 0: b1})} and y = {poly({1: m2, 0: b2})} meet at a point. "
                       f"Find its y-coordinate.",
                       [("Set equal:", f"{poly({1: m1, 0: b1})} = {poly({1: m2, 0: b2})}"),
                        ("Collect terms:", f"{poly({1: m1 - m2})} = {b2 - b1}"), ("So", f"x = {x}"),
                        ("Then", f"y = {signed_sum([times(m1, x), b1])} = {y}")], y)
    a, b, c = _triple(rng, 30)
    a, b, k = a * rng.choice((1, -1)), b * rng.choice((1, -1)), nonzero(rng, -40, 40)
    value = a * x1 + b * y1 + k
    if value == 0:
        return analytic(rng, level)
    distance = Fraction(abs(value), c)
    line = f"{poly({1: a})} {'+' if b > 0 else '-'} {poly({1: abs(b)}, 'y')} {'+' if k > 0 else '-'} {abs(k)} = 0"
    return problem(f"Find the distance from the point {_point(x1, y1)} to the line {line}.",
                   [("Substitute the point:", f"|{signed_sum([times(a, x1), times(b, y1), k])}| = {abs(value)}"),
                    ("Normal length:", f"sqrt({a * a} + {b * b}) = {c}"),
                    ("Distance:", f"d = {quotient(abs(value), c)}")], distance)


TOPICS = {"plane": plane, "solid": solid, "analytic": analytic}
