"""Number theory: primes and factorisation, congruences, divisibility."""
from __future__ import annotations

import math
import random

from metasft.data.sources.embedded._common import Problem, factorize, problem

_SMALL_PRIMES = (5, 7, 11, 13, 17, 19)


def _factored(factors: dict[int, int]) -> str:
    """{2: 2, 3: 1} -> "2^2 * 3"."""
    return " * ".join(f"{p}^{k}" if k > 1 else str(p) for p, k in sorted(factors.items()))


def _composite(rng: random.Random, lo: int, hi: int, distinct: int) -> tuple[int, dict[int, int]]:
    """A composite n in [lo, hi] with at least `distinct` different prime factors, all below 100 (so it can be
    factored by hand), and its factorisation."""
    while True:
        n = rng.randint(lo, hi)
        factors = factorize(n)
        if sum(factors.values()) >= 2 and len(factors) >= distinct and max(factors) < 100:
            return n, factors


def primes_factorisation(rng: random.Random, level: int) -> Problem:
    """Level 1: smallest or largest prime factor; 2: count or sum of distinct prime factors;
    3: number of divisors; 4: sum of divisors; 5: Euler's totient. Numbers grow with the level."""
    hi = {1: 300, 2: 2000, 3: 5000, 4: 5000, 5: 20000}[level]
    n, f = _composite(rng, 4 if level == 1 else 100, hi, 1 if level == 1 else 2)
    lines = [("Factor:", f"{n} = {_factored(f)}")]
    ps = sorted(f)
    if level == 1:
        which = rng.choice(("smallest", "largest"))
        return problem(f"What is the {which} prime factor of {n}?", lines, ps[0] if which == "smallest" else ps[-1])
    if level == 2:
        if rng.random() < 0.5:
            return problem(f"How many distinct prime factors does {n} have?",
                           lines + [("Distinct primes:", ", ".join(map(str, ps)))], len(ps))
        return problem(f"What is the sum of the distinct prime factors of {n}?",
                       lines + [("Sum:", f"{' + '.join(map(str, ps))} = {sum(ps)}")], sum(ps))
    if level == 3:
        count = math.prod(k + 1 for k in f.values())
        return problem(f"How many positive divisors does {n} have?",
                       lines + [("Number of divisors:", "".join(f"({f[p]} + 1)" for p in ps) + f" = {count}")], count)
    if level == 4:
        sums = [sum(p ** i for i in range(f[p] + 1)) for p in ps]
        formula = "".join(f"({' + '.join(str(p ** i) for i in range(f[p] + 1))})" for p in ps)
        return problem(f"What is the sum of all positive divisors of {n}?",
                       lines + [("Sum of divisors:", f"{formula} = {' * '.join(map(str, sums))} = {math.prod(sums)}")],
                       math.prod(sums))
    parts = [p ** f[p] - p ** (f[p] - 1) for p in ps]
    lines += [(f"For {p}^{f[p]}:" if f[p] > 1 else f"For {p}:", f"{p ** f[p]} - {p ** (f[p] - 1)} = {part}")
              for p, part in zip(ps, parts)]
    return problem(f"Compute Euler's totient phi({n}).",
                   lines + [("Multiply:", f"phi({n}) = {' * '.join(map(str, parts))} = {math.prod(parts)}")],
                   math.prod(parts))


def congruences(rng: random.Random, level: int) -> Problem:
    """Level 1: a remainder; 2: remainder of a sum or product; 3: linear congruence; 4: a power, by Fermat's
    little theorem; 5: two simultaneous congruences (Chinese remainder theorem)."""
    if level == 1:
        a, m = rng.randint(20, 500), rng.randint(3, 15)
        return problem(f"What is the remainder when {a} is divided by {m}?",
                       [("Divide:", f"{a} = {m} * {a // m} + {a % m}")], a % m)
    if level == 2:
        a, b, m = rng.randint(20, 999), rng.randint(20, 999), rng.randint(3, 20)
        op = rng.choice("+*")
        ra, rb = a % m, b % m
        value = ra + rb if op == "+" else ra * rb
        return problem(f"What is the remainder when {a} {op} {b} is divided by {m}?",
                       [("Reduce:", f"{a} ≡ {ra} (mod {m})"), ("Reduce:", f"{b} ≡ {rb} (mod {m})"),
                        ("Combine:", f"{ra} {op} {rb} = {value} ≡ {value % m} (mod {m})")], value % m)
    if level == 3:
        m = rng.randint(5, 40)
        a = rng.choice([k for k in range(2, m) if math.gcd(k, m) == 1])
        b = rng.randint(1, m - 1)
        inv = pow(a, -1, m)
        x = inv * b % m
        return problem(f"Find the smallest positive integer x with {a}x ≡ {b} (mod {m}).",
                       [(f"Inverse of {a}:", f"{a} * {inv} = {a * inv} ≡ 1 (mod {m})"),
                        ("Multiply by it:", f"x ≡ {inv} * {b} = {inv * b} ≡ {x} (mod {m})")], x)
    if level == 4:
        p = rng.choice(_SMALL_PRIMES)
        a = rng.choice([k for k in range(2, 60) if k % p])
        k = rng.randint(20, 400)
        r, (q, s) = a % p, divmod(k, p - 1)
        value = pow(a, k, p)
        lines = [("Reduce:", f"{a} ≡ {r} (mod {p})")] if a >= p else []
        lines += [("Fermat's little theorem:", f"{r}^{p - 1} ≡ 1 (mod {p})"),
                  ("Split the exponent:", f"{k} = {p - 1} * {q} + {s}"),
                  ("So", f"{a}^{k} ≡ {r}^{s} ≡ {value} (mod {p})")]
        return problem(f"What is the remainder when {a}^{k} is divided by {p}?", lines, value)
    m, n = rng.sample(range(3, 26), 2)
    if math.gcd(m, n) != 1:
        return congruences(rng, level)
    a, b = rng.randint(1, m - 1), rng.randint(0, n - 1)
    c, inv = (b - a) % n, pow(m, -1, n)
    t = c * inv % n
    x = a + m * t
    return problem(f"Find the smallest positive integer x with x ≡ {a} (mod {m}) and x ≡ {b} (mod {n}).",
                   [("From the first:", f"x = {a} + {m}t"), ("Substitute:", f"{m}t ≡ {c} (mod {n})"),
                    (f"Inverse of {m} mod {n}:", f"{m} * {inv} = {m * inv} ≡ 1 (mod {n})"),
                    ("Solve:", f"t ≡ {c} * {inv} = {c * inv} ≡ {t} (mod {n})"),
                    ("So", f"x = {a} + {m} * {t} = {x}")], x)


def _euclid(a: int, b: int) -> list[tuple[str, str]]:
    """The lines of Euclid's algorithm for gcd(a, b), a >= b, ending with the gcd."""
    lines, x, y = [], a, b
    while y:
        lines.append(("", f"{x} = {x // y} * {y} + {x % y}"))
        x, y = y, x % y
    return lines + [("So", f"gcd({a}, {b}) = {x}")]


def divisibility(rng: random.Random, level: int) -> Problem:
    """Level 1: count multiples; 2: gcd by Euclid; 3: lcm through the gcd; 4: divisible by a or b
    (inclusion-exclusion); 5: by neither, or a common remainder."""
    if level == 1:
        n, k = rng.randint(20, 200), rng.randint(2, 12)
        return problem(f"How many multiples of {k} are there from 1 to {n}?",
                       [("Divide:", f"{n} = {k} * {n // k} + {n % k}")], n // k)
    if level <= 3:
        scale = rng.randint(2, 20)  # so the gcd is not 1
        x, y = sorted(rng.sample(range(2, 30 if level == 2 else 40), 2), reverse=True)
        a, b = scale * x, scale * y
        lines, g = _euclid(a, b), math.gcd(a, b)
        if level == 2:
            return problem(f"Use Euclid's algorithm to find the greatest common divisor of {a} and {b}.", lines, g)
        return problem(f"Find the least common multiple of {a} and {b}.",
                       lines + [("lcm:", f"{a} * {b} / {g} = {a * b // g}")], a * b // g)
    n = rng.randint(100, 2000 if level == 4 else 10000)
    a, b = sorted(rng.sample(range(2, 16 if level == 4 else 30), 2))
    if level == 5 and rng.random() < 0.5:
        c = rng.randint(2, 25)
        m, r = math.lcm(a, b, c), rng.randint(1, min(a, c) - 1)
        k = (n - r) // m + 1
        return problem(f"Find the smallest integer greater than {n} that leaves remainder {r} when divided by "
                       f"each of {a}, {b} and {c}.",
                       [("lcm:", f"lcm({a}, {b}, {c}) = {m}"), ("Such numbers are", f"{m}k + {r}"),
                        (f"Smallest k with {m}k + {r} > {n}:", f"k = {k}"), ("So", f"{m} * {k} + {r} = {m * k + r}")],
                       m * k + r)
    if b % a == 0:
        return divisibility(rng, level)
    l = math.lcm(a, b)
    either = n // a + n // b - n // l
    lines = [(f"Multiples of {a}:", f"floor({n}/{a}) = {n // a}"), (f"Multiples of {b}:", f"floor({n}/{b}) = {n // b}"),
             (f"Multiples of both (of {l}):", f"floor({n}/{l}) = {n // l}"),
             ("Divisible by either:", f"{n // a} + {n // b} - {n // l} = {either}")]
    if level == 4:
        return problem(f"How many integers from 1 to {n} are divisible by {a} or {b}?", lines, either)
    return problem(f"How many integers from 1 to {n} are divisible by neither {a} nor {b}?",
                   lines + [("Neither:", f"{n} - {either} = {n - either}")], n - either)


TOPICS = {"primes_and_factorisation": primes_factorisation, "congruences": congruences, "divisibility": divisibility}
