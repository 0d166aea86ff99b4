"""Physics: mechanics, electromagnetism, thermodynamics, in SI units with the unit of the answer stated.

Quantities are drawn so that answers are exact where possible; otherwise the problem says how to round.
"""
from __future__ import annotations

import random
from fractions import Fraction

from metasft.data.sources.embedded._common import Problem, dec, listing, problem, rounded

_MOVERS = ("A car", "A cyclist", "A runner", "A train", "A boat", "A drone")
_HEAT = {"water": 4200, "aluminium": 900, "iron": 450, "copper": 390}  # specific heat, J/(kg K)
_METALS = ("aluminium", "iron", "copper")
# Resistor pairs whose parallel combination is a whole number of ohms.
_PARALLEL = [(a, b) for a in range(2, 61) for b in range(a, 61) if a * b % (a + b) == 0]


def mechanics(rng: random.Random, level: int) -> Problem:
    """Level 1: average speed; 2: force -> acceleration -> speed; 3: distance under constant acceleration;
    4: height reached from kinetic energy; 5: pulling against friction."""
    if level == 1:
        v, t = rng.randint(2, 30), rng.randint(2, 20)
        d_unit, t_unit = rng.choice((("km", "h"), ("m", "s")))
        return problem(f"{rng.choice(_MOVERS)} travels {v * t} {d_unit} in {t} {t_unit}. "
                       f"What is its average speed in {d_unit}/{t_unit}?",
                       [("Speed = distance / time:", f"{v * t} / {t} = {v}")], v)
    if level == 2:
        m, a, t = rng.randint(2, 50), Fraction(rng.randint(1, 12), 2), rng.randint(2, 15)
        if (m * a).denominator != 1:
            return mechanics(rng, level)
        return problem(f"A net force of {m * a} N acts on a {m} kg cart at rest for {t} s. "
                       f"What is its final speed in m/s?",
                       [("a = F / m:", f"{m * a} / {m} = {dec(a)} m/s^2"),
                        ("v = a t:", f"{dec(a)} * {t} = {dec(a * t)}")], dec(a * t))
    if level == 3:
        u, a, t = rng.randint(0, 25), rng.randint(1, 6), rng.randint(2, 12)
        half = Fraction(a * t * t, 2)
        return problem(f"{rng.choice(_MOVERS)} moving at {u} m/s accelerates uniformly at {a} m/s^2 for {t} s. "
                       f"How far does it travel in m?",
                       [("u t:", f"{u} * {t} = {u * t}"), ("1/2 a t^2:", f"0.5 * {a} * {t}^2 = {dec(half)}"),
                        ("Distance:", f"{u * t} + {dec(half)} = {dec(u * t + half)}")], dec(u * t + half))
    if level == 4:
        m, v = Fraction(rng.randint(1, 20), 2), rng.randint(2, 30)
        ke = m * v * v / 2
        h = ke / (m * 10)
        return problem(f"A {dec(m)} kg ball is thrown straight up at {v} m/s. Ignoring air resistance and taking "
                       f"g = 10 m/s^2, how high does it rise in m?",
                       [("Kinetic energy:", f"0.5 * {dec(m)} * {v}^2 = {dec(ke)} J"),
                        ("Weight:", f"{dec(m)} * 10 = {dec(m * 10)} N"),
                        ("Height = energy / weight:", f"{dec(ke)} / {dec(m * 10)} = {dec(h)}")], dec(h))
    m, mu, a, t = rng.randint(2, 20), Fraction(rng.randint(1, 5), 10), rng.randint(1, 5), rng.randint(2, 10)
    normal = 10 * m
    friction = mu * normal
    force = friction + m * a
    s = Fraction(a * t * t, 2)
    return problem(f"A {m} kg crate at rest is pulled along a floor by a horizontal {dec(force)} N force. The "
                   f"coefficient of friction is {dec(mu)} and g = 10 m/s^2. How far does it move in {t} s, in m?",
                   [("Normal force:", f"{m} * 10 = {normal} N"),
                    ("Friction:", f"{dec(mu)} * {normal} = {dec(friction)} N"),
                    ("Net force:", f"{dec(force)} - {dec(friction)} = {m * a} N"),
                    ("Acceleration:", f"{m * a} / {m} = {a} m/s^2"), ("Distance:", f"0.5 * {a} * {t}^2 = {dec(s)}")],
                   dec(s))


def electromagnetism(rng: random.Random, level: int) -> Problem:
    """Level 1: Ohm's law; 2: series resistors; 3: two resistors in parallel; 4: energy and cost of an
    appliance; 5: Coulomb's law."""
    if level == 1:
        r = rng.randint(2, 60)
        i = rng.randint(1, max(1, 240 // r))
        return problem(f"A {i * r} V supply drives current through a {r} ohm resistor. What is the current in A?",
                       [("I = V / R:", f"{i * r} / {r} = {i}")], i)
    if level == 2:
        rs = [rng.randint(2, 60) for _ in range(rng.randint(2, 3))]
        total, i = sum(rs), Fraction(rng.randint(1, 20), 2)
        v = total * i
        if v.denominator != 1 or v > 400:
            return electromagnetism(rng, level)
        return problem(f"Resistors of {listing(f'{r} ohm' for r in rs)} are connected in series to a {v} V supply. "
                       f"What is the current in A?",
                       [("Total resistance:", f"{' + '.join(map(str, rs))} = {total} ohm"),
                        ("I = V / R:", f"{v} / {total} = {dec(i)}")], dec(i))
    if level == 3:
        r1, r2 = rng.choice(_PARALLEL)
        rp, v = r1 * r2 // (r1 + r2), rng.randint(2, 240)
        i, note = rounded(Fraction(v, rp), 2)
        return problem(f"Resistors of {r1} ohm and {r2} ohm are connected in parallel to a {v} V supply. "
                       f"What is the total current in A{note}?",
                       [("Combined resistance:", f"{r1} * {r2} / ({r1} + {r2}) = {rp} ohm"),
                        ("I = V / R:", f"{v} / {rp} = {i}")], i)
    if level == 4:
        p, hours, price = 100 * rng.randint(1, 30), rng.randint(1, 12), rng.randint(10, 40)
        kw = Fraction(p, 1000)
        energy = kw * hours
        return problem(f"A {p} W heater runs for {hours} h. Electricity costs {price} cents per kWh. "
                       f"What does it cost to run, in cents?",
                       [("Power:", f"{p} W = {dec(kw)} kW"), ("Energy:", f"{dec(kw)} * {hours} = {dec(energy)} kWh"),
                        ("Cost:", f"{dec(energy)} * {price} = {dec(energy * price)}")], dec(energy * price))
    q1, q2, r_cm = rng.randint(1, 12), rng.randint(1, 12), 10 * rng.randint(1, 10)
    r = Fraction(r_cm, 100)
    force = Fraction(9 * 10**9) * q1 * q2 * Fraction(1, 10**12) / (r * r)
    f, note = rounded(force, 2)
    return problem(f"Two point charges of {q1} uC and {q2} uC are {r_cm} cm apart. Taking k = 9e9 N m^2/C^2, "
                   f"what is the force between them in N{note}?",
                   [("Product of charges:", f"{q1}e-6 * {q2}e-6 = {q1 * q2}e-12 C^2"),
                    ("Distance squared:", f"{dec(r)}^2 = {dec(r * r, 4)} m^2"),
                    ("F = k q1 q2 / r^2:", f"9e9 * {q1 * q2}e-12 / {dec(r * r, 4)} = {f}")], f)


def thermodynamics(rng: random.Random, level: int) -> Problem:
    """Level 1: heat to warm a mass; 2: Boyle's law; 3: Carnot efficiency; 4: combined gas law;
    5: final temperature of a metal dropped into water. Kelvin = Celsius + 273."""
    if level == 1:
        stuff = rng.choice(list(_HEAT))
        m, dt = Fraction(rng.randint(1, 10), 2), rng.randint(2, 80)
        q = m * _HEAT[stuff] * dt
        return problem(f"How much heat, in kJ, warms {dec(m)} kg of {stuff} by {dt} K? "
                       f"(Specific heat {_HEAT[stuff]} J/(kg K).)",
                       [("Q = m c dT:", f"{dec(m)} * {_HEAT[stuff]} * {dt} = {dec(q)} J"),
                        ("In kJ:", f"{dec(q)} / 1000 = {dec(q / 1000, 3)}")], dec(q / 1000, 3))
    if level == 2:
        p1, v1, v2 = 10 * rng.randint(5, 30), rng.randint(2, 30), rng.randint(1, 30)
        if v1 == v2:
            return thermodynamics(rng, level)
        p2, note = rounded(Fraction(p1 * v1, v2), 1)
        return problem(f"A gas at {p1} kPa fills {v1} L. At constant temperature its volume changes to {v2} L. "
                       f"What is its new pressure in kPa{note}?",
                       [("P1 V1:", f"{p1} * {v1} = {p1 * v1}"), ("P2 = P1 V1 / V2:", f"{p1 * v1} / {v2} = {p2}")], p2)
    if level == 3:
        hot, cold = rng.randint(100, 600), rng.randint(0, 60)
        th, tc = hot + 273, cold + 273
        eff, note = rounded(100 * (1 - Fraction(tc, th)), 1)
        return problem(f"A Carnot engine works between {hot} C and {cold} C. What is its efficiency in percent{note}? "
                       f"(Use K = C + 273.)",
                       [("Hot:", f"{hot} + 273 = {th} K"), ("Cold:", f"{cold} + 273 = {tc} K"),
                        ("Efficiency:", f"100 * (1 - {tc}/{th}) = {eff}")], eff)
    if level == 4:
        p1, p2 = 10 * rng.randint(5, 30), 10 * rng.randint(5, 30)
        v1, c1, c2 = rng.randint(2, 30), rng.randint(0, 100), rng.randint(0, 200)
        t1, t2 = c1 + 273, c2 + 273
        v2, note = rounded(Fraction(p1 * v1 * t2, p2 * t1), 2)
        return problem(f"A gas occupies {v1} L at {p1} kPa and {c1} C. What volume, in L, does it occupy at {p2} kPa "
                       f"and {c2} C{note}? (Use K = C + 273.)",
                       [("Temperatures:", f"T1 = {t1} K, T2 = {t2} K"),
                        ("V2 = V1 (P1/P2)(T2/T1):", f"{v1} * ({p1}/{p2}) * ({t2}/{t1}) = {v2}")], v2)
    metal = rng.choice(_METALS)
    m1, m2 = Fraction(rng.randint(1, 10), 10), Fraction(rng.randint(1, 10), 10)
    hot, cold = rng.randint(60, 300), rng.randint(5, 30)
    c1, c2 = m1 * _HEAT[metal], m2 * _HEAT["water"]
    total = c1 * hot + c2 * cold
    final, note = rounded(total / (c1 + c2), 1)
    return problem(f"A {dec(m1)} kg {metal} block at {hot} C is dropped into {dec(m2)} kg of water at {cold} C. "
                   f"Specific heats: {metal} {_HEAT[metal]}, water 4200 J/(kg K). Ignoring losses, what is the final "
                   f"temperature in C{note}?",
                   [("Heat capacities:",
                     f"{dec(m1)} * {_HEAT[metal]} = {dec(c1)} J/K and {dec(m2)} * 4200 = {dec(c2)} J/K"),
                    ("Weighted sum:", f"{dec(c1)} * {hot} + {dec(c2)} * {cold} = {dec(total)}"),
                    ("Final temperature:", f"{dec(total)} / {dec(c1 + c2)} = {final}")], final)


TOPICS = {"mechanics": mechanics, "electromagnetism": electromagnetism, "thermodynamics": thermodynamics}
