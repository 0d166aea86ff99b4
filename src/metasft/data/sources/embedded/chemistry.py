"""Chemistry: reactions (balancing, mass conservation), stoichiometry, equilibrium and kinetics.

Reactions are built from ion charges (synthesis, combustion, metal + acid, neutralisation, oxide + acid)
and balanced exactly by solving the atom-balance equations, so every equation shown is balanced.
Atomic masses are the rounded school values, and each problem states the ones it uses.
"""
from __future__ import annotations

import math
import random
import re
from collections import Counter
from fractions import Fraction

from metasft.data.sources.embedded._common import Problem, dec, listing, problem, rounded

MASSES = {"H": 1, "Li": 7, "C": 12, "N": 14, "O": 16, "F": 19, "Na": 23, "Mg": 24, "Al": 27, "P": 31,
          "S": 32, "Cl": Fraction(71, 2), "K": 39, "Ca": 40, "Fe": 56, "Zn": 65, "Br": 80, "I": 127, "Ba": 137}
_METALS = {"Li": 1, "Na": 1, "K": 1, "Mg": 2, "Ca": 2, "Ba": 2, "Zn": 2, "Al": 3, "Fe": 3}  # ion charges
_NONMETALS = {"F2": ("F", 1), "Cl2": ("Cl", 1), "Br2": ("Br", 1), "I2": ("I", 1), "O2": ("O", 2), "S": ("S", 2),
              "N2": ("N", 3)}  # element as it reacts -> (anion, charge)
_ACIDS = {"HCl": ("Cl", 1), "HNO3": ("NO3", 1), "H2SO4": ("SO4", 2), "H3PO4": ("PO4", 3)}
_TOKEN = re.compile(r"([A-Z][a-z]?)(\d*)|(\()|\)(\d*)")


def atoms(formula: str) -> Counter:
    """Atom counts of a formula such as "Ca(OH)2" -> {Ca: 1, O: 2, H: 2}."""
    stack = [Counter()]
    for element, count, opening, group_count in _TOKEN.findall(formula):
        if opening:
            stack.append(Counter())
        elif element:
            stack[-1][element] += int(count or 1)
        else:
            group = stack.pop()
            for e, c in group.items():
                stack[-1][e] += c * int(group_count or 1)
    return stack[0]


def molar_mass(formula: str) -> Fraction:
    return sum((MASSES[e] * k for e, k in atoms(formula).items()), Fraction(0))


def _compound(cation: str, plus: int, anion: str, minus: int) -> str:
    """Neutral formula from ions: ("Al", 3, "SO4", 2) -> "Al2(SO4)3"."""
    g = math.gcd(plus, minus)
    parts = []
    for ion, k in ((cation, minus // g), (anion, plus // g)):
        polyatomic = sum(c.isupper() for c in ion) > 1 or any(c.isdigit() for c in ion)
        parts.append(ion if k == 1 else f"({ion}){k}" if polyatomic else f"{ion}{k}")
    return "".join(parts)


def balance(reactants: tuple[str, ...], products: tuple[str, ...]) -> tuple[int, ...]:
    """Smallest positive whole coefficients, by Gaussian elimination on the element-balance matrix."""
    species = reactants + products
    counts = [atoms(s) for s in species]
    rows = [[Fraction(c[e]) * (1 if i < len(reactants) else -1) for i, c in enumerate(counts)]
            for e in sorted(set().union(*counts))]
    pivots, r = [], 0
    for col in range(len(species)):
        pivot = next((i for i in range(r, len(rows)) if rows[i][col]), None)
        if pivot is None:
            continue
        rows[r], rows[pivot] = rows[pivot], rows[r]
        rows[r] = [x / rows[r][col] for x in rows[r]]
        for i in range(len(rows)):
            if i != r and rows[i][col]:
                rows[i] = [a - rows[i][col] * b for a, b in zip(rows[i], rows[r])]
        pivots.append(col)
        r += 1
    free = [c for c in range(len(species)) if c not in pivots]
    if len(free) != 1:
        raise ValueError(f"{reactants} -> {products} has no unique balance")
    x = [Fraction(1) if c == free[0] else Fraction(0) for c in range(len(species))]
    for i, col in enumerate(pivots):
        x[col] = -rows[i][free[0]]
    scale = math.lcm(*(v.denominator for v in x))
    ints = [int(v * scale) for v in x]
    g = math.gcd(*ints)
    ints = [v // g for v in ints]
    if any(v <= 0 for v in ints):
        raise ValueError(f"{reactants} -> {products} balances only with non-positive coefficients")
    return tuple(ints)


def _reactions() -> dict[str, list[tuple[tuple[str, ...], tuple[str, ...]]]]:
    """The reaction families, each a list of (reactants, products)."""
    def ch(c: int, h: int) -> str:
        return f"C{c if c > 1 else ''}H{h}"

    fuels = ([ch(n, 2 * n + 2) for n in range(1, 13)] + [ch(n, 2 * n) for n in range(2, 11)]  # alkanes, alkenes
             + [ch(n, 2 * n - 2) for n in range(2, 9)]  # alkynes
             + [ch(n, 2 * n + 1) + "OH" for n in range(1, 9)])  # alcohols
    acid_metals = {**_METALS, "Fe": 2}  # iron dissolves in dilute acid as Fe2+
    return {
        "synthesis": [((m, x), (_compound(m, q, ion, z),))
                      for m, q in _METALS.items() for x, (ion, z) in _NONMETALS.items()],
        "combustion": [((f, "O2"), ("CO2", "H2O")) for f in fuels],
        "metal_acid": [((m, a), (_compound(m, q, ion, z), "H2")) for m, q in acid_metals.items()
                       for a, (ion, z) in _ACIDS.items() if a in ("HCl", "H2SO4")],
        "neutralisation": [((a, _compound(m, q, "OH", 1)), (_compound(m, q, ion, z), "H2O"))
                           for m, q in _METALS.items() for a, (ion, z) in _ACIDS.items()],
        "oxide_acid": [((_compound(m, q, "O", 2), a), (_compound(m, q, ion, z), "H2O"))
                       for m, q in _METALS.items() for a, (ion, z) in _ACIDS.items()],
    }


REACTIONS = {family: [(r, p, balance(r, p)) for r, p in rs] for family, rs in _reactions().items()}
_TWO_BY_TWO = [x for fam in ("combustion", "metal_acid", "neutralisation", "oxide_acid") for x in REACTIONS[fam]]
_ALL = [x for rs in REACTIONS.values() for x in rs]


def equation(reactants: tuple[str, ...], products: tuple[str, ...], coefs: tuple[int, ...] | None = None) -> str:
    """ "4Al + 3O2 -> 2Al2O3"; without coefficients, the skeleton equation."""
    coefs = coefs or (1,) * (len(reactants) + len(products))
    terms = [f"{c if c > 1 else ''}{s}" for c, s in zip(coefs, reactants + products)]
    return f"{' + '.join(terms[:len(reactants)])} -> {' + '.join(terms[len(reactants):])}"


def _element_checks(reactants: tuple[str, ...], products: tuple[str, ...],
                    coefs: tuple[int, ...]) -> list[tuple[str, str]]:
    """One line per element: its atom count on each side, e.g. ("Check:", "O: 6 = 6")."""
    left, right = Counter(), Counter()
    for i, (c, s) in enumerate(zip(coefs, reactants + products)):
        for e, k in atoms(s).items():
            (left if i < len(reactants) else right)[e] += c * k
    return [("Check:", f"{e}: {left[e]} = {right[e]}") for e in sorted(left)]


def _masses_note(*formulas: str) -> str:
    """ "(Al = 27, O = 16)": the atomic masses a problem needs, in order of appearance."""
    elements = dict.fromkeys(e for f in formulas for e in atoms(f))
    return "(" + ", ".join(f"{e} = {dec(MASSES[e])}" for e in elements) + ")"


def _molar_mass_line(formula: str) -> tuple[str, str]:
    parts = [f"{k} * {dec(MASSES[e])}" if k > 1 else dec(MASSES[e]) for e, k in atoms(formula).items()]
    return (f"Molar mass of {formula}:", f"{' + '.join(parts)} = {dec(molar_mass(formula))} g/mol")


def reactions(rng: random.Random, level: int) -> Problem:
    """Level 1: conservation of mass; 2: balance a synthesis or metal + acid; 3: balance a combustion or scale
    it by moles; 4: balance a neutralisation or oxide + acid; 5: balance a two-reactant reaction and scale it
    by moles."""
    if level == 1:
        r, p, c = rng.choice(_ALL)
        scale = Fraction(rng.randint(1, 30), 10)
        species = r + p
        masses = [k * molar_mass(s) * scale for k, s in zip(c, species)]
        hidden = rng.randrange(len(species))
        shown = [f"{dec(m)} g of {s}" for i, (m, s) in enumerate(zip(masses, species)) if i != hidden]
        same = [i for i in range(len(species)) if (i < len(r)) == (hidden < len(r)) and i != hidden]
        other = [i for i in range(len(species)) if (i < len(r)) != (hidden < len(r))]
        total = sum(masses[i] for i in other)
        lines = [("Mass of the other side:", f"{' + '.join(dec(masses[i]) for i in other)} = {dec(total)} g")]
        if same:
            lines.append(("Subtract the rest of this side:",
                          f"{dec(total)} - {' - '.join(dec(masses[i]) for i in same)} = {dec(masses[hidden])} g"))
        verb = "reacts" if hidden < len(r) else "forms"
        return problem(f"In the reaction {equation(r, p, c)}, the masses involved are {listing(shown)}. "
                       f"What mass of {species[hidden]} {verb}, in g?", lines, dec(masses[hidden]))
    family = rng.choice({2: ("synthesis", "metal_acid"), 3: ("combustion",), 4: ("neutralisation", "oxide_acid"),
                         5: ("combustion", "metal_acid", "neutralisation", "oxide_acid")}[level])
    r, p, c = rng.choice(REACTIONS[family])
    species = r + p
    lines = [("Balanced:", equation(r, p, c))] + _element_checks(r, p, c)
    skeleton = f"Balance {equation(r, p)} with the smallest whole-number coefficients."
    if level in (3, 5) and rng.random() < (0.5 if level == 3 else 1):
        i, j = rng.sample(range(len(species)), 2)
        known = c[i] * rng.randint(1, 6) if level == 3 else Fraction(rng.randint(1, 40), 10)
        moles = Fraction(known) * c[j] / c[i]
        answer, note = rounded(moles, 2)
        verb = "react" if j < len(r) else "form"
        return problem(f"{skeleton} How many moles of {species[j]} {verb} when {dec(known)} mol of {species[i]} "
                       f"{'reacts' if i < len(r) else 'forms'}{note}?",
                       lines + [("Mole ratio:", f"{dec(known)} * {c[j]}/{c[i]} = {answer}")], answer)
    if rng.random() < 0.25:
        return problem(f"{skeleton} What is the sum of the coefficients?",
                       lines + [("Sum:", f"{' + '.join(map(str, c))} = {sum(c)}")], sum(c))
    i = rng.randrange(len(species))
    return problem(f"{skeleton} What is the coefficient of {species[i]}?", lines, c[i])


def stoichiometry(rng: random.Random, level: int) -> Problem:
    """Level 1: moles from mass; 2: percent by mass of an element; 3: mass of product from mass of reactant;
    4: percent yield; 5: limiting reagent. Levels 3-5 give the molar masses."""
    if level <= 2:
        formula = rng.choice(sorted({s for r, p, _ in _ALL for s in r + p if len(atoms(s)) > 1 or s == "O2"}))
        mm = molar_mass(formula)
        if level == 1:
            n = Fraction(rng.randint(1, 100), 10)  # tenths keep the mass at two decimals even with Cl = 35.5
            return problem(f"How many moles are in {dec(mm * n)} g of {formula}? {_masses_note(formula)}",
                           [_molar_mass_line(formula), ("Moles:", f"{dec(mm * n)} / {dec(mm)} = {dec(n)}")], dec(n))
        element = rng.choice(sorted(atoms(formula)))
        count = atoms(formula)[element]
        part = count * MASSES[element]
        pct, note = rounded(100 * part / mm, 1)
        return problem(f"What is the percentage by mass of {element} in {formula}{note}? {_masses_note(formula)}",
                       [_molar_mass_line(formula),
                        (f"Mass of {element}:", f"{count} * {dec(MASSES[element])} = {dec(part)}"),
                        ("Percentage:", f"100 * {dec(part)} / {dec(mm)} = {pct}")], pct)
    r, p, c = rng.choice(_TWO_BY_TWO)
    x, y = rng.randrange(len(r)), len(r) + rng.randrange(len(p))
    species = r + p
    X, Y = species[x], species[y]
    mx, my = molar_mass(X), molar_mass(Y)
    text = f"For the reaction {equation(r, p, c)}"
    if level == 5:
        masses = [c[i] * molar_mass(s) * Fraction(rng.randint(1, 30), 10) for i, s in enumerate(r)]
        moles = [m / molar_mass(s) for m, s in zip(masses, r)]
        units = [n / k for n, k in zip(moles, c)]
        lim = min(range(len(r)), key=lambda i: units[i])
        if units[0] == units[1]:
            return stoichiometry(rng, level)
        ny = units[lim] * c[y]
        mass, note = rounded(ny * my, 2)
        note_mm = ", ".join(f"{s} {dec(molar_mass(s))}" for s in (*r, Y))
        return problem(f"{text}, {dec(masses[0])} g of {r[0]} and {dec(masses[1])} g of {r[1]} react. What mass of {Y} "
                       f"forms, in g{note}? (Molar masses: {note_mm} g/mol.)",
                       [(f"Moles of {s}:", f"{dec(m)} / {dec(molar_mass(s))} = {dec(n)}")
                        for s, m, n in zip(r, masses, moles)]
                       + [("Limiting reagent:", f"{r[lim]}, since {dec(moles[lim])}/{c[lim]} < "
                                                f"{dec(moles[1 - lim])}/{c[1 - lim]}"),
                          (f"Moles of {Y}:", f"{dec(moles[lim])} * {c[y]}/{c[lim]} = {dec(ny, 4)}"),
                          (f"Mass of {Y}:", f"{dec(ny, 4)} * {dec(my)} = {mass}")], mass)
    nx = c[x] * Fraction(rng.randint(1, 30), 10)
    ny = nx * c[y] / c[x]
    mass = ny * my
    lines = [(f"Moles of {X}:", f"{dec(nx * mx)} / {dec(mx)} = {dec(nx)}"),
             (f"Moles of {Y}:", f"{dec(nx)} * {c[y]}/{c[x]} = {dec(ny)}"),
             (f"Mass of {Y}:", f"{dec(ny)} * {dec(my)} = {dec(mass)} g")]
    given = f"{text}, {dec(nx * mx)} g of {X} reacts completely"
    molar = f"(Molar masses: {X} {dec(mx)}, {Y} {dec(my)} g/mol.)"
    if level == 3:
        return problem(f"{given}. What mass of {Y} forms, in g? {molar}", lines, dec(mass))
    actual = Fraction(dec(mass * Fraction(rng.randint(50, 98), 100)))  # as weighed: to 0.01 g
    pct, note = rounded(100 * actual / mass, 1)
    return problem(f"{given} and {dec(actual)} g of {Y} is collected. What is the percent yield{note}? {molar}",
                   lines + [("Percent yield:", f"100 * {dec(actual)} / {dec(mass)} = {pct}")], pct)


# Gas-phase equilibria: (reactants, products) with coefficients.
_EQUILIBRIA = [
    ({"PCl5": 1}, {"PCl3": 1, "Cl2": 1}), ({"CO": 1, "Cl2": 1}, {"COCl2": 1}),
    ({"NO2": 1, "CO": 1}, {"NO": 1, "CO2": 1}), ({"CO": 1, "H2O": 1}, {"CO2": 1, "H2": 1}),
    ({"H2": 1, "I2": 1}, {"HI": 2}), ({"N2O4": 1}, {"NO2": 2}),
    ({"N2": 1, "H2": 3}, {"NH3": 2}), ({"SO2": 2, "O2": 1}, {"SO3": 2}), ({"N2": 1, "O2": 1}, {"NO": 2}),
]


def _product_of(conc: dict[str, Fraction], coefs: dict[str, int]) -> tuple[str, str, Fraction]:
    """("[HI]^2", "0.4^2", value) for a side of a Kc expression."""
    symbols = " * ".join(f"[{s}]" + (f"^{k}" if k > 1 else "") for s, k in coefs.items())
    numbers = " * ".join(dec(conc[s], 3) + (f"^{k}" if k > 1 else "") for s, k in coefs.items())
    return symbols, numbers, math.prod((conc[s] ** k for s, k in coefs.items()), start=Fraction(1))


def _kc_lines(conc: dict[str, Fraction], left: dict[str, int], right: dict[str, int]) -> tuple[list, str, str]:
    top_sym, top_num, top = _product_of(conc, right)
    bot_sym, bot_num, bot = _product_of(conc, left)
    k, note = rounded(top / bot, 4)
    return [("Kc:", f"{top_sym} / ({bot_sym}) = ({top_num}) / ({bot_num}) = {k}")], k, note


def _reaction_text(left: dict[str, int], right: dict[str, int]) -> str:
    """ "N2 + 3H2 <=> 2NH3"."""
    return " <=> ".join(" + ".join(f"{k if k > 1 else ''}{s}" for s, k in side.items()) for side in (left, right))


def equilibrium_and_kinetics(rng: random.Random, level: int) -> Problem:
    """Level 1: average rate; 2: Kc from concentrations (all coefficients 1); 3: first-order half-lives;
    4: rate constant from initial-rate experiments; 5: Kc from an ICE table."""
    if level == 1:
        start, t = rng.randint(20, 200), rng.choice((10, 20, 25, 40, 50, 100))
        c0, c1 = Fraction(start, 100), Fraction(start - rng.randint(1, start - 1), 100)
        rate, note = rounded((c0 - c1) / t, 4)
        return problem(f"The concentration of a reactant falls from {dec(c0)} M to {dec(c1)} M in {t} s. "
                       f"What is the average rate of reaction in M/s{note}?",
                       [("Change:", f"{dec(c0)} - {dec(c1)} = {dec(c0 - c1)} M"),
                        ("Rate:", f"{dec(c0 - c1)} / {t} = {rate}")], rate)
    if level == 2:
        left, right = rng.choice([e for e in _EQUILIBRIA if all(k == 1 for side in e for k in side.values())])
        conc = {s: Fraction(rng.randint(1, 40), 20) for s in (*left, *right)}
        lines, k, note = _kc_lines(conc, left, right)
        given = ", ".join(f"[{s}] = {dec(v, 3)} M" for s, v in conc.items())
        return problem(f"For {_reaction_text(left, right)} at equilibrium, {given}. Find Kc{note}.", lines, k)
    if level == 3:
        m0, h, n = rng.randint(1, 100) * 4, rng.randint(2, 60), rng.randint(1, 6)
        left_over, note = rounded(Fraction(m0, 2 ** n), 2)
        return problem(f"A first-order reactant has a half-life of {h} min. Starting from {m0} g, how much remains "
                       f"after {h * n} min, in g{note}?",
                       [("Half-lives:", f"{h * n} / {h} = {n}"), ("Fraction left:", f"(1/2)^{n} = 1/{2 ** n}"),
                        ("Remaining:", f"{m0} / {2 ** n} = {left_over}")], left_over)
    if level == 4:
        m, n, fa, fb = rng.randint(0, 2), rng.randint(0, 2), rng.randint(2, 3), rng.randint(2, 3)
        a1, b1, k = Fraction(rng.randint(1, 5), 10), Fraction(rng.randint(1, 5), 10), Fraction(rng.randint(1, 50), 10)
        r1, r2, r3 = (k * a ** m * b ** n for a, b in ((a1, b1), (fa * a1, b1), (a1, fb * b1)))
        table = (f"exp 1: [A] = {dec(a1)}, [B] = {dec(b1)}, rate = {dec(r1, 6)}; "
                 f"exp 2: [A] = {dec(fa * a1)}, [B] = {dec(b1)}, rate = {dec(r2, 6)}; "
                 f"exp 3: [A] = {dec(a1)}, [B] = {dec(fb * b1)}, rate = {dec(r3, 6)}")
        return problem(f"For rate = k[A]^m[B]^n, initial rates (M/s) at concentrations (M) were {table}. Find k.",
                       [("Order in A:", f"{dec(r2, 6)} / {dec(r1, 6)} = {dec(r2 / r1)} = {fa}^m, so m = {m}"),
                        ("Order in B:", f"{dec(r3, 6)} / {dec(r1, 6)} = {dec(r3 / r1)} = {fb}^n, so n = {n}"),
                        ("k:", f"{dec(r1, 6)} / ({dec(a1)}^{m} * {dec(b1)}^{n}) = {dec(k)}")], dec(k))
    left, right = rng.choice(_EQUILIBRIA)
    start = {s: Fraction(rng.randint(5, 30), 10) for s in left}
    half = min(start[s] / k for s, k in left.items()) / 2  # react at most half of the limiting reactant
    x = Fraction(rng.randint(1, math.floor(100 * half)), 100)
    product = next(iter(right))
    conc = {**{s: start[s] - k * x for s, k in left.items()}, **{s: k * x for s, k in right.items()}}

    def times_x(k: int) -> str:
        return f"{k} * {dec(x)}" if k > 1 else dec(x)

    lines = [("Extent:", f"x = {dec(conc[product])} / {right[product]} = {dec(x)}")] if right[product] > 1 else []
    lines += [("At equilibrium:", f"[{s}] = {dec(start[s])} - {times_x(k)} = {dec(conc[s])} M")
              for s, k in left.items()]
    lines += [("At equilibrium:", f"[{s}] = {times_x(k)} M") for s, k in right.items() if s != product]
    kc_lines, k, note = _kc_lines(conc, left, right)
    starting = " and ".join(f"{dec(start[s])} M {s}" for s in left)
    return problem(f"For {_reaction_text(left, right)}, a vessel starts with {starting} and no products. At "
                   f"equilibrium [{product}] = {dec(conc[product])} M. Find Kc{note}.", lines + kc_lines, k)

TOPICS = {"reactions": reactions, "stoichiometry": stoichiometry, "equilibrium_and_kinetics": equilibrium_and_kinetics}
