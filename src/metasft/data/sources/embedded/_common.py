"""What every embedded topic function returns, and the number and expression formatting they share.

A topic function is `(rng: random.Random, level: int) -> Problem`, level 1 (easiest) to 5.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction


@dataclass(frozen=True)
class Problem:
    """A generated problem. The solution is one line per `(prose, step)` pair, reading "prose step",
    so every step (an intermediate result) appears verbatim in the solution."""

    text: str
    lines: tuple[tuple[str, str], ...]
    answer: str

    @property
    def solution(self) -> str:
        return "\n".join(f"{prose} {step}" if prose else step for prose, step in self.lines)

    @property
    def steps(self) -> tuple[str, ...]:
        return tuple(step for _, step in self.lines)


Topic = Callable[[random.Random, int], Problem]


def problem(text: str, lines: Iterable[tuple[str, object]], answer: object) -> Problem:
    """Build a Problem; steps and answer may be numbers (a Fraction prints as `3/4` or `5`)."""
    return Problem(text, tuple((prose, str(step)) for prose, step in lines), str(answer))


def dec(x: Fraction | int, places: int = 2, fixed: bool = False) -> str:
    """`x` as a decimal rounded half-up to `places`, trailing zeros dropped unless `fixed`:
    2.50 -> "2.5", 3.0 -> "3"; fixed: "2.50", "3.00"."""
    x = Fraction(x)
    q = (Decimal(x.numerator) / Decimal(x.denominator)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    text = f"{abs(q) if q == 0 else q:f}"  # no "-0.00"
    if "." in text and not fixed:
        text = text.rstrip("0").rstrip(".")
    return text


def exact_decimal(x: Fraction | int, places: int = 2) -> bool:
    """Whether `x` has at most `places` decimal places, so `dec(x, places)` is exact."""
    return (Fraction(x) * 10**places).denominator == 1


def rounded(x: Fraction | int, places: int) -> tuple[str, str]:
    """`dec(x, places)` and the phrase a problem needs for it: "" when exact, else ", rounded to N decimal places"."""
    if exact_decimal(x, places):
        return dec(x, places), ""
    return dec(x, places, fixed=True), f", rounded to {places} decimal place{'s' if places > 1 else ''}"


def listing(values: Iterable[object]) -> str:
    """[1, 2, 3] -> "1, 2 and 3"."""
    *head, last = (str(v) for v in values)
    return f"{', '.join(head)} and {last}" if head else last


def poly(coeffs: dict[int, int | Fraction], var: str = "x") -> str:
    """A polynomial from {power: coefficient}, highest power first: {2: 3, 1: -1, 0: 5} -> "3x^2 - x + 5"."""
    terms = []
    for power in sorted((p for p, c in coeffs.items() if c), reverse=True):
        c = coeffs[power]
        body = var if power == 1 else f"{var}^{power}" if power else ""
        size = abs(c)
        mag = str(size) if size != 1 or not body else ""
        if isinstance(size, Fraction) and size.denominator != 1 and body:
            mag = f"({size})"
        sign = "-" if c < 0 else "+"
        terms.append((sign, f"{mag}{body}"))
    if not terms:
        return "0"
    (sign, first), rest = terms[0], terms[1:]
    return ("-" if sign == "-" else "") + first + "".join(f" {s} {t}" for s, t in rest)


def quotient(num: int, den: int) -> str:
    """`num/den`, followed by its lowest terms when they differ: (6, 4) -> "6/4 = 3/2", (3, 4) -> "3/4",
    (5, -3) -> "5/(-3) = -5/3"."""
    f = Fraction(num, den)
    text = f"{num}/{den}" if den > 0 else f"{num}/({den})"
    return text if (f.numerator, f.denominator) == (num, den) else f"{text} = {f}"


def signed_sum(values: Iterable[object]) -> str:
    """Numbers joined by their signs: [588, 14, -12] -> "588 + 14 - 12"."""
    first, *rest = (str(v) for v in values)
    return first + "".join(f" - {v[1:]}" if v.startswith("-") else f" + {v}" for v in rest)


def nonzero(rng: random.Random, lo: int, hi: int) -> int:
    """A random integer in [lo, hi] other than 0."""
    while True:
        k = rng.randint(lo, hi)
        if k:
            return k


def times(*factors: object) -> str:
    """`a * b * c`, negative factors in parentheses."""
    return " * ".join(f"({f})" if str(f).startswith("-") else str(f) for f in factors)


def factorize(n: int) -> dict[int, int]:
    """Prime factorisation {prime: exponent} of n >= 2 by trial division."""
    out: dict[int, int] = {}
    p = 2
    while p * p <= n:
        while n % p == 0:
            out[p] = out.get(p, 0) + 1
            n //= p
        p += 1
    if n > 1:
        out[n] = out.get(n, 0) + 1
    return out


def pythagorean_triples(max_c: int) -> list[tuple[int, int, int]]:
    """All (a, b, c) with a < b, a^2 + b^2 = c^2, c <= max_c."""
    out = []
    for a in range(1, max_c):
        for b in range(a + 1, max_c):
            c = math.isqrt(a * a + b * b)
            if c > max_c:
                break
            if c * c == a * a + b * b:
                out.append((a, b, c))
    return out
