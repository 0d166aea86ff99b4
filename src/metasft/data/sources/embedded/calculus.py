"""Calculus: limits, derivatives, integrals of polynomials and simple rational and root functions.

Polynomials are {power: coefficient} dicts, differentiated and integrated by hand so that answers are
exact without sympy.
"""
from __future__ import annotations

import random
from fractions import Fraction

from metasft.data.sources.embedded._common import Problem, nonzero, poly, problem, quotient, signed_sum, times

Poly = dict[int, int | Fraction]


def _value(p: Poly, x: int | Fraction) -> Fraction:
    return sum((Fraction(c) * Fraction(x) ** k for k, c in p.items()), Fraction(0))


def _derivative(p: Poly) -> Poly:
    return {k - 1: k * c for k, c in p.items() if k}


def _antiderivative(p: Poly) -> Poly:
    return {k + 1: Fraction(c, k + 1) for k, c in p.items()}


def _par(x: object) -> str:
    """A number, in parentheses when negative."""
    return f"({x})" if str(x).startswith("-") else str(x)


def _plugged(p: Poly, x: int) -> str:
    """The polynomial with x substituted, term by term: {2: 2, 1: -5, 0: 1} at 3 -> "2 * 3^2 - 5 * 3 + 1"."""
    out = []
    for k in sorted((k for k, c in p.items() if c), reverse=True):
        c = p[k]
        body = "" if k == 0 else _par(x) if k == 1 else f"{_par(x)}^{k}"
        term = str(abs(c)) if not body else body if abs(c) == 1 else f"{abs(c)} * {body}"
        out.append(("-" if c < 0 else "+", term))
    (sign, first), rest = out[0], out[1:]
    return ("-" if sign == "-" else "") + first + "".join(f" {s} {t}" for s, t in rest)


def _random_poly(rng: random.Random, degree: int, top: int) -> Poly:
    """A polynomial of exactly `degree` with coefficients in [-top, top]."""
    p = {k: rng.randint(-top, top) for k in range(degree)}
    p[degree] = nonzero(rng, -top, top)
    return p


def limits(rng: random.Random, level: int) -> Problem:
    """Level 1: linear, by substitution; 2: quadratic, by substitution; 3: a 0/0 form cancelled by factoring
    the numerator; 4: factoring both numerator and denominator; 5: a root, by the conjugate."""
    a = rng.randint(-9, 9)
    if level <= 2:
        p = _random_poly(rng, level, 9 if level == 1 else 12)
        lines = [("Substitute:", f"{_plugged(p, a)} = {_value(p, a)}")]
        if level == 2:
            terms = signed_sum(c * a ** k for k, c in sorted(p.items(), reverse=True) if c)
            lines = [("Substitute:", _plugged(p, a)), ("Term by term:", f"{terms} = {_value(p, a)}")]
        return problem(f"Find the limit of {poly(p)} as x approaches {a}.", lines, _value(p, a))
    a, b = rng.randint(-15, 15), rng.randint(-15, 15)
    num = poly({2: 1, 1: -(a + b), 0: a * b})
    factors = f"({poly({1: 1, 0: -a})})({poly({1: 1, 0: -b})})"
    if level == 3:
        if a == b:
            return limits(rng, level)
        return problem(f"Find the limit of ({num})/({poly({1: 1, 0: -a})}) as x approaches {a}.",
                       [("Factor:", f"{num} = {factors}"), ("Cancel:", poly({1: 1, 0: -b})),
                        ("Substitute:", f"{a} - {_par(b)} = {a - b}")], a - b)
    if level == 4:
        c = rng.randint(-9, 9)
        if len({a, b, c}) < 3:
            return limits(rng, level)
        den = poly({2: 1, 1: -(a + c), 0: a * c})
        value = Fraction(a - b, a - c)
        return problem(f"Find the limit of ({num})/({den}) as x approaches {a}.",
                       [("Factor the numerator:", f"{num} = {factors}"),
                        ("Factor the denominator:", f"{den} = ({poly({1: 1, 0: -a})})({poly({1: 1, 0: -c})})"),
                        ("Cancel:", f"({poly({1: 1, 0: -b})})/({poly({1: 1, 0: -c})})"),
                        ("Substitute:", f"({a} - {_par(b)})/({a} - {_par(c)}) = {value}")], value)
    r, b, c = rng.randint(1, 12), rng.randint(1, 20), rng.randint(1, 9)
    inner = poly({1: b, 0: r * r})
    value = Fraction(b, 2 * r * c)
    return problem(f"Find the limit of (sqrt({inner}) - {r})/({poly({1: c})}) as x approaches 0.",
                   [("Multiply by the conjugate:", f"{poly({1: b})}/({poly({1: c})}(sqrt({inner}) + {r}))"),
                    ("Cancel x:", f"{b}/({c}(sqrt({inner}) + {r}))"),
                    ("Substitute x = 0:", f"{b}/({c} * {2 * r}) = {value}")], value)


def derivatives(rng: random.Random, level: int) -> Problem:
    """f'(k) for: level 1, ax^2 + bx; 2: a cubic; 3: a product (product rule); 4: (ax + b)^n (chain rule);
    5: a quotient of linear functions (quotient rule)."""
    k = rng.randint(-4, 4) if level > 1 else rng.randint(1, 9)
    if level <= 2:
        p = {2: rng.randint(1, 9), 1: rng.randint(-9, 9)} if level == 1 else _random_poly(rng, 3, 9)
        d = _derivative(p)
        return problem(f"Let f(x) = {poly(p)}. Find f'({k}).",
                       [("Power rule:", f"f'(x) = {poly(d)}"),
                        (f"At x = {k}:", f"f'({k}) = {_plugged(d, k)} = {_value(d, k)}")], _value(d, k))
    if level == 3:
        a, b, c, d = nonzero(rng, -6, 6), nonzero(rng, -9, 9), nonzero(rng, -5, 5), nonzero(rng, -9, 9)
        u, v = {1: a, 0: b}, {2: c, 0: d}
        uk, vk = _value(u, k), _value(v, k)
        value = a * vk + uk * 2 * c * k
        return problem(f"Let f(x) = ({poly(u)})({poly(v)}). Find f'({k}).",
                       [("Product rule:", f"f'(x) = {a}({poly(v)}) + ({poly(u)})({poly({1: 2 * c})})"),
                        (f"At x = {k}:", f"f'({k}) = {times(a, vk)} + {times(uk, 2 * c * k)} = {value}")], value)
    if level == 4:
        a, b, n = rng.randint(2, 9), nonzero(rng, -8, 8), rng.randint(3, 4)
        k, u = rng.randint(-3, 3), poly({1: a, 0: b})
        inner = a * k + b
        value = n * a * inner ** (n - 1)
        return problem(f"Let f(x) = ({u})^{n}. Find f'({k}).",
                       [("Chain rule:", f"f'(x) = {n} * {a}({u})^{n - 1} = {n * a}({u})^{n - 1}"),
                        (f"At x = {k}:", f"{u} = {inner}"),
                        ("So", f"f'({k}) = {n * a} * {_par(inner)}^{n - 1} = {value}")], value)
    a, b, c, d = nonzero(rng, -9, 9), rng.randint(-9, 9), nonzero(rng, -6, 6), nonzero(rng, -9, 9)
    if a * d == b * c or c * k + d == 0:
        return derivatives(rng, level)
    num, den = poly({1: a, 0: b}), poly({1: c, 0: d})
    value = Fraction(a * d - b * c, (c * k + d) ** 2)
    return problem(f"Let f(x) = ({num})/({den}). Find f'({k}).",
                   [("Quotient rule:", f"f'(x) = ({a}({den}) - {_par(c)}({num}))/({den})^2"),
                    ("Simplify the numerator:", f"f'(x) = {a * d - b * c}/({den})^2"),
                    (f"At x = {k}:", f"{den} = {c * k + d}"),
                    ("So", f"f'({k}) = {quotient(a * d - b * c, (c * k + d) ** 2)}")], value)


def _evaluate(big: Poly, lo: int, hi: int, compact: bool = False) -> tuple[list[tuple[str, str]], Fraction]:
    """The lines F(hi), F(lo), F(hi) - F(lo) (one line if `compact`) for an antiderivative F, and the difference."""
    f_hi, f_lo = _value(big, hi), _value(big, lo)
    if compact:
        return [("Evaluate:", f"F({hi}) - F({lo}) = {f_hi} - {_par(f_lo)} = {f_hi - f_lo}")], f_hi - f_lo
    return [("", f"F({hi}) = {f_hi}"), ("", f"F({lo}) = {f_lo}"),
            ("Subtract:", f"{f_hi} - {_par(f_lo)} = {f_hi - f_lo}")], f_hi - f_lo


def integrals(rng: random.Random, level: int) -> Problem:
    """Level 1: a linear integrand; 2: quadratic; 3: cubic over negative bounds; 4: average value;
    5: area between a parabola and a line. Levels 1-4 have whole-number antiderivative coefficients."""
    if level == 5:
        p, q = sorted(rng.sample(range(-5, 6), 2))
        k, m, n = rng.randint(1, 3), rng.randint(-5, 5), rng.randint(-9, 9)
        gap = {2: -k, 1: k * (p + q), 0: -k * p * q}  # f - g, positive between the roots p < q
        f = {2: -k, 1: k * (p + q) + m, 0: -k * p * q + n}
        big = _antiderivative(gap)
        lines, area = _evaluate(big, p, q)
        return problem(f"Find the area enclosed between y = {poly(f)} and y = {poly({1: m, 0: n})}.",
                       [("Difference:", f"{poly(gap)}, zero at x = {p} and x = {q}"),
                        ("Antiderivative:", f"F(x) = {poly(big)}")] + lines, area)
    lo = rng.randint(0, 3) if level < 3 else rng.randint(-4, 2)
    hi = lo + rng.randint(1, 4)
    big = _random_poly(rng, min(level, 3) + 1, 6)
    del big[0]  # F(0) = 0: the constant of integration is irrelevant
    integrand = _derivative(big)
    lines, total = _evaluate(big, lo, hi, compact=level == 1)
    lines = [("Antiderivative:", f"F(x) = {poly(big)}")] + lines
    if level == 4:
        average = total / (hi - lo)
        return problem(f"Find the average value of f(x) = {poly(integrand)} on the interval [{lo}, {hi}].",
                       lines + [("Divide by the length:", quotient(total, hi - lo))], average)
    return problem(f"Evaluate the integral of {poly(integrand)} from x = {lo} to x = {hi}.", lines, total)


TOPICS = {"limits": limits, "derivatives": derivatives, "integrals": integrals}
