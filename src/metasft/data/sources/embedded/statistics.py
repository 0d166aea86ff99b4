"""Statistics: descriptive statistics, probability distributions, hypothesis tests."""
from __future__ import annotations

import random
from fractions import Fraction

from metasft.data.sources.embedded._common import Problem, dec, listing, problem, pythagorean_triples, rounded

_TRIPLES = pythagorean_triples(25)
_P0 = {Fraction(1, 2): Fraction(1, 2), Fraction(1, 5): Fraction(2, 5), Fraction(4, 5): Fraction(2, 5),
       Fraction(1, 10): Fraction(3, 10), Fraction(9, 10): Fraction(3, 10)}  # p0 -> sqrt(p0 (1 - p0)), exact


def descriptive(rng: random.Random, level: int) -> Problem:
    """Level 1: mean; 2: median; 3: the missing value for a given mean; 4: population variance;
    5: sample variance. Lists get longer and numbers larger with the level."""
    n = rng.randint(*{1: (3, 5), 2: (5, 8), 3: (4, 7), 4: (4, 5), 5: (5, 8)}[level])
    xs = [rng.randint(1, 20 * level) for _ in range(n)]
    total = sum(xs)
    if level == 2:
        s = sorted(xs)
        mid = s[n // 2] if n % 2 else Fraction(s[n // 2 - 1] + s[n // 2], 2)
        middle = (f"{s[n // 2]}" if n % 2 else f"({s[n // 2 - 1]} + {s[n // 2]}) / 2 = {dec(mid, 1)}")
        return problem(f"Find the median of {listing(xs)}.",
                       [("Sorted:", ", ".join(map(str, s))), ("Middle:", middle)], dec(mid, 1))
    if total % n:  # levels 1, 3 and 4 use a whole-number mean
        return descriptive(rng, level)
    mean = total // n
    sum_line = ("Sum:", f"{' + '.join(map(str, xs))} = {total}")
    if level == 1:
        return problem(f"Find the mean of {listing(xs)}.", [sum_line, ("Mean:", f"{total} / {n} = {mean}")], mean)
    if level == 3:
        known = xs[:-1]
        return problem(f"The mean of {n} numbers is {mean}. {n - 1} of them are {listing(known)}. Find the last one.",
                       [("Total:", f"{n} * {mean} = {total}"),
                        ("Known:", f"{' + '.join(map(str, known))} = {sum(known)}"),
                        ("Missing:", f"{total} - {sum(known)} = {xs[-1]}")], xs[-1])
    squares = [(x - mean) ** 2 for x in xs]
    lines = [sum_line, ("Mean:", f"{total} / {n} = {mean}"),
             ("Squared deviations:", f"{' + '.join(map(str, squares))} = {sum(squares)}")]
    divisor = n if level == 4 else n - 1
    answer, note = rounded(Fraction(sum(squares), divisor), 2)
    kind = "population variance" if level == 4 else "sample variance (divide by n - 1)"
    return problem(f"Find the {kind} of {listing(xs)}{note}.",
                   lines + [("Variance:", f"{sum(squares)} / {divisor} = {answer}")], answer)


def _tenths(rng: random.Random, k: int) -> list[Fraction]:
    """k probabilities in tenths, each at least 0.1, summing to 1."""
    cuts = sorted(rng.sample(range(1, 10), k - 1))
    return [Fraction(b - a, 10) for a, b in zip([0] + cuts, cuts + [10])]


def distributions(rng: random.Random, level: int) -> Problem:
    """Level 1: binomial mean; 2: expectation of a discrete variable; 3: geometric probability;
    4: variance of a discrete variable; 5: binomial P(X <= 1) or P(X >= n - 1)."""
    if level == 1:
        p = Fraction(rng.randint(1, 19), 20)
        n = 20 * rng.randint(1, 50)
        return problem(f"X is binomial with n = {n} trials and success probability {dec(p)}. Find the mean of X.",
                       [("Mean:", f"n * p = {n} * {dec(p)} = {dec(n * p)}")], dec(n * p))
    if level in (2, 4):
        values = sorted(rng.sample(range(0, 11 if level == 4 else 21), 3))
        probs = _tenths(rng, 3)
        mean = sum(v * p for v, p in zip(values, probs))
        text = f"X takes the values {listing(values)} with probabilities {listing([dec(p) for p in probs])}."
        mean_line = ("E[X]:", f"{' + '.join(f'{v} * {dec(p)}' for v, p in zip(values, probs))} = {dec(mean)}")
        if level == 2:
            return problem(f"{text} Find E[X].", [mean_line], dec(mean))
        second = sum(v * v * p for v, p in zip(values, probs))
        var = second - mean ** 2
        squares = " + ".join(f"{v * v} * {dec(p)}" for v, p in zip(values, probs))
        return problem(f"{text} Find the variance of X.",
                       [mean_line, ("E[X^2]:", f"{squares} = {dec(second)}"),
                        ("Var(X):", f"{dec(second)} - {dec(mean)}^2 = {dec(var)}")], dec(var))
    b = rng.randint(2, 10)
    p = Fraction(rng.randint(1, b - 1), b)
    q = 1 - p
    if level == 3:
        k = rng.randint(3, 7)
        who = rng.choice(("A player scores each penalty", "A machine passes each test", "An archer hits the target",
                          "A student answers each question correctly", "A seed sprouts"))
        return problem(f"{who} with probability {p}, independently. What is the probability that the first "
                       f"success is on attempt {k}?",
                       [(f"{k - 1} failures:", f"({q})^{k - 1} = {q ** (k - 1)}"),
                        ("Then a success:", f"{q ** (k - 1)} * {p} = {q ** (k - 1) * p}")], q ** (k - 1) * p)
    n = rng.randint(3, 8)
    if rng.random() < 0.5:  # P(X <= 1) counts failures; P(X >= n - 1) counts successes the same way
        p0, p1 = q ** n, n * p * q ** (n - 1)
        return problem(f"X is binomial with n = {n} and p = {p}. Find P(X <= 1).",
                       [("P(X = 0):", f"({q})^{n} = {p0}"), ("P(X = 1):", f"{n} * {p} * ({q})^{n - 1} = {p1}"),
                        ("Sum:", f"{p0} + {p1} = {p0 + p1}")], p0 + p1)
    pn, pm = p ** n, n * q * p ** (n - 1)
    return problem(f"X is binomial with n = {n} and p = {p}. Find P(X >= {n - 1}).",
                   [(f"P(X = {n}):", f"({p})^{n} = {pn}"), (f"P(X = {n - 1}):", f"{n} * {q} * ({p})^{n - 1} = {pm}"),
                    ("Sum:", f"{pn} + {pm} = {pn + pm}")], pn + pm)


def hypothesis_tests(rng: random.Random, level: int) -> Problem:
    """Test statistics. Level 1: z from a given standard error; 2: one-sample z; 3: chi-square goodness of
    fit; 4: one-proportion z; 5: two-sample z. Numbers are chosen so square roots are whole."""
    if level <= 2:
        mu, root, se = rng.randint(10, 200), rng.randint(2, 12), rng.randint(2, 12)
        xbar = mu + rng.choice((1, -1)) * rng.randint(1, 25)
        z, note = rounded(Fraction(xbar - mu, se), 2)
        lines = [("Difference:", f"{xbar} - {mu} = {xbar - mu}"), ("z:", f"{xbar - mu} / {se} = {z}")]
        if level == 1:
            return problem(f"Testing H0: mu = {mu}, a sample has mean {xbar} with standard error {se}. "
                           f"Find the z statistic{note}.", lines, z)
        return problem(f"Testing H0: mu = {mu} with known sigma = {se * root}, a sample of {root * root} has mean "
                       f"{xbar}. Find the z statistic{note}.",
                       [("Standard error:", f"{se * root} / sqrt({root * root}) = {se}")] + lines, z)
    if level == 3:
        k, e = rng.randint(3, 5), rng.randint(10, 40)
        counts = [e] * k
        for _ in range(rng.randint(2, 12)):  # move people between options, keeping the total
            i, j = rng.sample(range(k), 2)
            step = min(counts[i] - 1, rng.randint(1, 5))
            counts[i] -= step
            counts[j] += step
        squares = [(c - e) ** 2 for c in counts]
        chi, note = rounded(Fraction(sum(squares), e), 2)
        return problem(f"{k * e} people each chose one of {k} options; the counts were {listing(counts)}. "
                       f"Find the chi-square statistic for equal preference{note}.",
                       [("Expected each:", f"{k * e} / {k} = {e}"),
                        ("Squared differences:", f"{' + '.join(map(str, squares))} = {sum(squares)}"),
                        ("Chi-square:", f"{sum(squares)} / {e} = {chi}")], chi)
    if level == 4:
        p0, root = rng.choice(list(_P0)), rng.randint(4, 30)
        n = root * root
        expected, sd = n * p0, root * _P0[p0]
        x = max(0, min(n, round(expected + rng.uniform(-3, 3) * sd)))
        z, note = rounded((x - expected) / sd, 2)
        return problem(f"Testing H0: p = {dec(p0)}, {x} of {n} sampled items are successes. "
                       f"Find the z statistic{note}.",
                       [("Expected successes:", f"{n} * {dec(p0)} = {dec(expected)}"),
                        ("Standard deviation:", f"sqrt({n} * {dec(p0)} * {dec(1 - p0)}) = {dec(sd)}"),
                        ("z:", f"({x} - {dec(expected)}) / {dec(sd)} = {z}")], z)
    a, b, c = rng.choice(_TRIPLES)
    r1, r2 = rng.randint(2, 10), rng.randint(2, 10)
    s1, s2 = a * r1, b * r2  # so sigma1^2/n1 = a^2 and sigma2^2/n2 = b^2, and the standard error is c
    m1, m2 = rng.randint(40, 120), rng.randint(40, 120)
    z, note = rounded(Fraction(m1 - m2, c), 2)
    return problem(f"Group A: {r1 * r1} people, mean {m1}, known sigma {s1}. Group B: {r2 * r2} people, mean {m2}, "
                   f"known sigma {s2}. Find the two-sample z statistic for mean A minus mean B{note}.",
                   [("A term:", f"{s1}^2 / {r1 * r1} = {a * a}"), ("B term:", f"{s2}^2 / {r2 * r2} = {b * b}"),
                    ("Standard error:", f"sqrt({a * a} + {b * b}) = {c}"),
                    ("Difference:", f"{m1} - {m2} = {m1 - m2}"), ("z:", f"{m1 - m2} / {c} = {z}")], z)


TOPICS = {"descriptive": descriptive, "distributions": distributions, "hypothesis_tests": hypothesis_tests}
