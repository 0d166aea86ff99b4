"""Verdicts on synthetic runs built to be clearly met, clearly not met, and unmeasurable."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from metasft.stats import MET, NOT_MET, UNMEASURABLE, verdicts

FEW_SHOT = ["algebra", "geometry"]
UNSEEN = ["theorem_proving"]
CROSS = ["mmlu_physics"]
ALL_TASKS = FEW_SHOT + UNSEEN + CROSS


def make_run(final_by_model, speed_by_model, shots=(0, 5, 10, 25, 50, 100), steps=(0, 10, 25, 50, 100),
             seeds=range(5), noise=0.005, n_questions=0, rng_seed=0):
    """cells (and predictions when n_questions) for a run whose accuracy after `step` adaptation
    steps at `n` shots is zero-shot + (final[n] - zero-shot) * min(1, step / speed), plus noise."""
    rng = np.random.default_rng(rng_seed)
    cells, preds = [], []
    for model, final in final_by_model.items():
        for task in ALL_TASKS:
            for n in shots:
                for seed in seeds:
                    grid = (0,) if n == 0 else steps
                    for step in grid:
                        frac = 1.0 if n == 0 else min(1.0, step / speed_by_model.get(model, 100))
                        acc = final[0] + (final[n] - final[0]) * frac + noise * rng.standard_normal()
                        if n_questions and step == grid[-1]:
                            right = rng.random(n_questions) < acc
                            preds += [(model, task, n, seed, step, q, bool(r)) for q, r in enumerate(right)]
                            acc = right.mean()
                        cells.append((model, task, n, seed, step, float(np.clip(acc, 0, 1)), 1.0 - acc))
    cells = pd.DataFrame(cells, columns=["model", "task", "n_shots", "seed", "step", "accuracy", "loss"])
    preds = pd.DataFrame(preds, columns=["model", "task", "n_shots", "seed", "step", "question_id", "correct"])
    return cells, (preds if n_questions else None)


SFT = {0: 0.40, 5: 0.45, 10: 0.50, 25: 0.60, 50: 0.75, 100: 0.80}
FOMAML = {0: 0.55, 5: 0.75, 10: 0.80, 25: 0.85, 50: 0.88, 100: 0.90}
BASE = {n: 0.20 for n in SFT}


def by_name(result):
    return {v.name: v for v in result}


def judge(cells, preds=None, **kwargs):
    kwargs = dict(unseen_tasks=UNSEEN, cross_domain_tasks=CROSS, few_shot_tasks=FEW_SHOT, n_boot=500) | kwargs
    return by_name(verdicts(cells, preds, **kwargs))


def test_clearly_met():
    cells, preds = make_run({"fomaml": FOMAML, "sft_mixed": SFT, "base": BASE},
                            {"fomaml": 25, "sft_mixed": 100}, n_questions=400)
    v = judge(cells, preds)
    assert [v[n].name for n in v] == ["H1", "H2", "H3", "C1", "C2", "C3", "C4", "C5"]
    assert {n: x.status for n, x in v.items()} == {n: MET for n in v}, {n: x.explanation for n, x in v.items()}
    assert v["H1"].evidence["reference_shots"] == 10
    assert v["H1"].evidence["ratio"] == pytest.approx(10, rel=0.3)
    assert v["C1"].evidence["sft_30_interpolated"] is True
    assert v["C2"].evidence["gain_points"] == pytest.approx(15, abs=3)
    assert v["C4"].evidence["per_shots"][50]["fomaml_steps"] == 25
    assert v["C4"].evidence["per_shots"][50]["sft_steps"] == 100
    assert all(x.statement and x.explanation for x in v.values())
    json.dumps([x.to_dict() for x in v.values()])  # evidence is plain data


def test_clearly_not_met():
    worse = {n: a - 0.05 for n, a in SFT.items()}
    cells, _ = make_run({"fomaml": worse, "sft_mixed": SFT, "base": BASE}, {"fomaml": 100, "sft_mixed": 100})
    v = judge(cells, target_acc=0.6)
    assert {n: x.status for n, x in v.items()} == {n: NOT_MET for n in v}, {n: x.explanation for n, x in v.items()}
    assert v["H1"].evidence["ratio"] < 1
    assert v["C2"].evidence["gain_points"] == pytest.approx(-5, abs=1)


def test_unmeasurable_with_a_small_run():
    low_f = {n: a * 0.5 for n, a in FOMAML.items()}
    low_s = {n: a * 0.5 for n, a in SFT.items()}
    cells, _ = make_run({"fomaml": low_f, "sft_mixed": low_s, "base": BASE}, {"fomaml": 5, "sft_mixed": 5},
                        shots=(0, 5), steps=(0, 5), seeds=[0])
    v = by_name(verdicts(cells, None))  # no unseen or cross-domain tasks named; target 0.7 by default
    assert {n: x.status for n, x in v.items()} == {n: UNMEASURABLE for n in v}, {n: x.explanation for n, x in v.items()}
    assert "neither model reaches" in v["C4"].explanation and v["C4"].evidence["target_accuracy"] == 0.7
    assert "10 shots" in v["C1"].explanation
    assert "seeds" in v["C3"].explanation


def test_nobody_reaches_the_design_target_is_unmeasurable_not_unmet():
    low_f = {n: a * 0.5 for n, a in FOMAML.items()}
    low_s = {n: a * 0.5 for n, a in SFT.items()}
    cells, _ = make_run({"fomaml": low_f, "sft_mixed": low_s, "base": BASE}, {"fomaml": 25, "sft_mixed": 100})
    v = judge(cells)
    assert v["H3"].status == v["C4"].status == UNMEASURABLE
    assert judge(cells, target_acc=0.35)["C4"].status == MET


def test_speed_unsettled_when_sft_curve_is_too_short():
    """FOMAML-SFT reaches the target at step 5, SFT-Mixed not by step 5, the last one evaluated:
    SFT-Mixed may need 6 steps, so a 2x speed-up is not shown."""
    cells, _ = make_run({"fomaml": FOMAML, "sft_mixed": SFT}, {"fomaml": 5, "sft_mixed": 5},
                        shots=(0, 5), steps=(0, 5))
    v = judge(cells)
    assert v["C4"].status == UNMEASURABLE and "SFT-Mixed not at the target by step 5" in v["C4"].explanation


def test_h1_bound_when_sft_never_catches_up():
    flat = {n: 0.40 for n in SFT}
    cells, _ = make_run({"fomaml": FOMAML, "sft_mixed": flat, "base": BASE}, {})
    v = judge(cells)
    assert v["H1"].status == MET and v["H1"].evidence["ratio_lower_bound"] == 10
    cells, _ = make_run({"fomaml": FOMAML, "sft_mixed": flat, "base": BASE}, {}, shots=(0, 5, 10, 25))
    v = judge(cells)
    assert v["H1"].status == UNMEASURABLE and "were not run" in v["H1"].explanation
    assert v["C1"].status == UNMEASURABLE  # 25 shots at most


def test_c1_uses_30_shots_when_run():
    sft = {0: 0.4, 5: 0.5, 10: 0.6, 30: 0.85}
    fom = {0: 0.5, 5: 0.7, 10: 0.8, 30: 0.9}
    cells, _ = make_run({"fomaml": fom, "sft_mixed": sft}, {}, shots=(0, 5, 10, 30), noise=0)
    v = judge(cells)
    assert v["C1"].status == NOT_MET and v["C1"].evidence["sft_30_interpolated"] is False
    assert v["C1"].evidence["sft_30"] == pytest.approx(0.85)
    assert v["H2"].status == UNMEASURABLE  # no base model in this run


def test_c3_needs_every_task_and_two_seeds():
    cells, _ = make_run({"fomaml": FOMAML, "sft_mixed": SFT}, {})
    # One task where FOMAML-SFT equals SFT-Mixed: C3 fails there.
    same = cells[(cells.task == "geometry") & (cells.model == "sft_mixed")].assign(model="fomaml")
    tied = pd.concat([cells[~((cells.task == "geometry") & (cells.model == "fomaml"))], same])
    v = judge(tied)
    assert v["C3"].status == NOT_MET and v["C3"].evidence["not_significant"] == ["geometry"]
    # Single seed on one task, significant elsewhere: cannot say.
    one_seed = cells[(cells.task != "geometry") | (cells.seed == 0)]
    v = judge(one_seed)
    assert v["C3"].status == UNMEASURABLE and v["C3"].evidence["fewer_than_2_seeds"] == ["geometry"]
