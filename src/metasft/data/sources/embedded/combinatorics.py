"""Combinatorics: permutations and combinations, probability, counting."""
from __future__ import annotations

import math
import random
from fractions import Fraction

from metasft.data.sources.embedded._common import Problem, problem, quotient

_THINGS = ("books", "photos", "flags", "toys", "cards", "trophies", "plants", "paintings")
_PEOPLE = ("students", "members", "players", "employees", "volunteers", "friends")
_GROUPS = (("boys", "girls"), ("teachers", "parents"), ("doctors", "nurses"), ("engineers", "designers"),
           ("juniors", "seniors"))
_COLOURS = ("red", "blue", "green", "white", "black", "yellow")
_OBJECTS = ("balls", "marbles", "counters", "beads")
_SHARED = ("sweets", "coins", "stickers", "apples", "pencils")


def permutations_and_combinations(rng: random.Random, level: int) -> Problem:
    """Level 1: n! or two ordered roles; 2: three or four ordered places; 3: C(n, k); 4: a committee from two
    groups; 5: arrangements of letters with repeats."""
    if level == 1:
        if rng.random() < 0.3:
            n, things = rng.randint(3, 8), rng.choice(_THINGS)
            return problem(f"In how many ways can {n} different {things} be arranged in a row?",
                           [("Arrangements:", f"{n}! = {' * '.join(map(str, range(n, 0, -1)))} = {math.factorial(n)}")],
                           math.factorial(n))
        n, people = rng.randint(4, 60), rng.choice(_PEOPLE)
        return problem(f"In how many ways can a president and a vice-president be chosen from {n} {people}?",
                       [("Choices:", f"{n} * {n - 1} = {n * (n - 1)}")], n * (n - 1))
    if level == 2:
        n, k = rng.randint(6, 40), rng.choice((3, 4))
        factors = list(range(n, n - k, -1))
        if k == 3 and rng.random() < 0.5:
            people = rng.choice(_PEOPLE)
            text = f"In how many ways can a chair, a secretary and a treasurer be chosen from {n} {people}?"
        else:
            roles = "gold, silver and bronze medals" if k == 3 else "the first four places"
            athletes = rng.choice(("runners", "swimmers", "cyclists", "skaters"))
            text = f"In how many ways can {roles} be awarded among {n} {athletes}?"
        return problem(text,
                       [("Choices for each place:", ", ".join(map(str, factors))),
                        ("Multiply:", f"{' * '.join(map(str, factors))} = {math.prod(factors)}")], math.prod(factors))
    if level == 3:
        n, k = rng.randint(6, 30), rng.randint(2, 5)
        ordered = math.perm(n, k)
        return problem(f"How many committees of {k} can be chosen from {n} {rng.choice(_PEOPLE)}?",
                       [("Ordered choices:", f"{' * '.join(map(str, range(n, n - k, -1)))} = {ordered}"),
                        (f"Divide by {k}! = {math.factorial(k)}:",
                         f"{ordered} / {math.factorial(k)} = {math.comb(n, k)}")], math.comb(n, k))
    if level == 4:
        (g1, g2), m, w = rng.choice(_GROUPS), rng.randint(4, 15), rng.randint(4, 15)
        a, b = rng.randint(2, min(m - 1, 4)), rng.randint(1, min(w - 1, 4))
        ca, cb = math.comb(m, a), math.comb(w, b)
        return problem(f"A team of {a} {g1} and {b} {g2} is chosen from {m} {g1} and {w} {g2}. "
                       f"How many teams are possible?",
                       [(f"Choose the {g1}:", f"C({m}, {a}) = {ca}"), (f"Choose the {g2}:", f"C({w}, {b}) = {cb}"),
                        ("Multiply:", f"{ca} * {cb} = {ca * cb}")], ca * cb)
    counts = [rng.randint(1, 3) for _ in range(rng.randint(3, 5))]
    if max(counts) == 1:
        return permutations_and_combinations(rng, level)
    letters = rng.sample("ABCDEFGHKLMNPRST", len(counts))
    word = [c for c, k in zip(letters, counts) for _ in range(k)]
    rng.shuffle(word)
    n = len(word)
    repeats = [(c, k) for c, k in zip(letters, counts) if k > 1]
    den, orders = math.prod(math.factorial(k) for _, k in repeats), math.factorial(n)
    return problem(f"How many distinct arrangements are there of the letters {''.join(word)}?",
                   [("Letter counts:", ", ".join(f"{c} {k}" for c, k in zip(letters, counts))),
                    ("All orders:", f"{n}! = {orders}"),
                    ("Repeated letters:", f"{' * '.join(f'{k}!' for _, k in repeats)} = {den}"),
                    ("Divide:", f"{orders} / {den} = {orders // den}")], orders // den)


def probability(rng: random.Random, level: int) -> Problem:
    """Level 1: one draw; 2: two draws with replacement; 3: two draws without replacement; 4: at least one
    in k draws (complement); 5: exactly k successes in n trials (binomial)."""
    if level == 5:
        n, b = rng.randint(3, 6), rng.randint(2, 8)
        k = rng.randint(1, n)
        p = Fraction(rng.randint(1, b - 1), b)
        c, pk, qk = math.comb(n, k), p ** k, (1 - p) ** (n - k)
        thing, outcome, act = rng.choice((("spinner", "red", "spun"), ("biased coin", "heads", "tossed"),
                                          ("loaded die", "six", "rolled")))
        return problem(f"A {thing} shows {outcome} with probability {p}. It is {act} {n} times. "
                       f"What is the probability of {outcome} exactly {k} times?",
                       [(f"Ways to place the {outcome} results:", f"C({n}, {k}) = {c}"),
                        (f"{outcome.capitalize()}:", f"({p})^{k} = {pk}"),
                        ("Others:", f"({1 - p})^{n - k} = {qk}"), ("Multiply:", f"{c} * {pk} * {qk} = {c * pk * qk}")],
                       c * pk * qk)
    c1, c2 = rng.sample(_COLOURS, 2)
    obj = rng.choice(_OBJECTS)
    r, s = rng.randint(1 if level == 1 else 2, 15), rng.randint(1, 15)
    n = r + s
    bag = f"A bag holds {r} {c1} and {s} {c2} {obj}."
    lines = [("Total:", f"{r} + {s} = {n}")]
    if level == 1:
        return problem(f"{bag} One is drawn at random. What is the probability that it is {c1}?",
                       lines + [("Probability:", quotient(r, n))], Fraction(r, n))
    if level == 2:
        p = Fraction(r, n)
        return problem(f"{bag} One is drawn, put back, and a second is drawn. "
                       f"What is the probability that both are {c1}?",
                       lines + [("One draw:", quotient(r, n)), ("Both:", f"{p} * {p} = {p * p}")], p * p)
    if level == 3:
        p1, p2 = Fraction(r, n), Fraction(r - 1, n - 1)
        return problem(f"{bag} Two are drawn without replacement. What is the probability that both are {c1}?",
                       lines + [("First:", quotient(r, n)), ("Second:", quotient(r - 1, n - 1)),
                                ("Both:", f"{p1} * {p2} = {p1 * p2}")], p1 * p2)
    k = rng.randint(2, 4)
    q = Fraction(s, n)
    return problem(f"{bag} A {obj[:-1]} is drawn and put back, {k} times in all. "
                   f"What is the probability that at least one is {c1}?",
                   lines + [(f"Not {c1} on one draw:", quotient(s, n)), (f"Never {c1}:", f"({q})^{k} = {q ** k}"),
                            ("At least one:", f"1 - {q ** k} = {1 - q ** k}")], 1 - q ** k)


def counting(rng: random.Random, level: int) -> Problem:
    """Level 1: two independent choices; 2: three choices, or codes with repetition; 3: numbers with distinct
    digits; 4: at least one digit (complement); 5: identical objects shared with a minimum each (stars and bars)."""
    if level == 1:
        a, b = rng.randint(2, 15), rng.randint(2, 15)
        menu = rng.choice((("shirts", "pairs of trousers", "outfits"), ("starters", "main courses", "meals"),
                           ("pens", "notebooks", "sets"), ("ice-cream flavours", "toppings", "desserts")))
        return problem(f"There are {a} {menu[0]} and {b} {menu[1]}. How many {menu[2]} of one of each are possible?",
                       [("Multiply:", f"{a} * {b} = {a * b}")], a * b)
    if level == 2:
        if rng.random() < 0.5:
            a, b, c = rng.randint(2, 12), rng.randint(2, 12), rng.randint(2, 12)
            return problem(f"A meal has one of {a} starters, one of {b} main courses and one of {c} desserts. "
                           f"How many different meals are possible?",
                           [("First two courses:", f"{a} * {b} = {a * b}"),
                            ("With dessert:", f"{a * b} * {c} = {a * b * c}")], a * b * c)
        a, k, j = rng.randint(2, 26), rng.randint(1, 3), rng.randint(1, 3)
        return problem(f"A code is {k} letters from an alphabet of {a} letters followed by {j} digits (0-9); "
                       f"repeats are allowed. How many codes are possible?",
                       [("Letters:", f"{a}^{k} = {a ** k}"), ("Digits:", f"10^{j} = {10 ** j}"),
                        ("Total:", f"{a ** k} * {10 ** j} = {a ** k * 10 ** j}")], a ** k * 10 ** j)
    if level == 3:
        digits = sorted(rng.sample(range(1, 10), rng.randint(3, 7)) + [0])
        d, k = len(digits), rng.randint(2, min(4, len(digits) - 1))
        rest = list(range(d - 1, d - k, -1))
        total = (d - 1) * math.prod(rest)
        return problem(f"How many {k}-digit numbers with all digits different can be made from the digits "
                       f"{', '.join(map(str, digits))}?",
                       [("First digit (not 0):", f"{d - 1} choices"), ("Remaining digits:", " * ".join(map(str, rest))),
                        ("Total:", f"{d - 1} * {' * '.join(map(str, rest))} = {total}")], total)
    if level == 4:
        a, d, k = rng.randint(3, 26), rng.randint(2, 10), rng.randint(2, 4)
        return problem(f"Each character of a {k}-character code is one of {a} letters or {d} digits. "
                       f"How many codes contain at least one digit?",
                       [("All codes:", f"{a + d}^{k} = {(a + d) ** k}"), ("No digit:", f"{a}^{k} = {a ** k}"),
                        ("At least one digit:", f"{(a + d) ** k} - {a ** k} = {(a + d) ** k - a ** k}")],
                       (a + d) ** k - a ** k)
    k, m = rng.randint(3, 5), rng.randint(1, 4)
    n = k * m + rng.randint(1, 15)
    r = n - k * m
    ways = math.comb(r + k - 1, k - 1)
    return problem(f"In how many ways can {n} identical {rng.choice(_SHARED)} be shared among {k} children "
                   f"so that each child gets at least {m}?",
                   [(f"Give each child {m} first:", f"{n} - {k * m} = {r} left"),
                    ("Stars and bars:", f"C({r} + {k - 1}, {k - 1}) = C({r + k - 1}, {k - 1})"),
                    ("Compute:", f"{' * '.join(map(str, range(r + k - 1, r, -1)))} / {math.factorial(k - 1)} = {ways}")
                    ], ways)


TOPICS = {"permutations_and_combinations": permutations_and_combinations, "probability": probability,
          "counting": counting}
