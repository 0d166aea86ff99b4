"""Verdicts on synthetic runs with a known truth: per-question answers drawn at planted accuracies."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from metasft.stats import INCONCLUSIVE, LOSS, MET, NOT_MET, UNMEASURABLE, verdicts

FEW_SHOT = ["algebra", "geometry"]
UNSEEN = ["theorem_proving"]
CROSS = ["mmlu_physics"]
DESIGN_SHOTS = (0, 5, 10, 25, 50)


def simulate(accuracy, *, tasks=FEW_SHOT + UNSEEN + CROSS, shots=DESIGN_SHOTS, seeds=range(5), questions=200,
             steps=(0, 100), speed=None, rng_seed=0, shots_by_task=None):
    """(cells, predictions) of a run where `model` answers a question of task t at n shots after
    `step` adaptation steps right with probability difficulty_q + accuracy[model](n, step_frac),
    difficulty_q ~ U(-.15, .15) shared by the models (so the pairing matters); step_frac =
    min(1, step / speed[model]). The reference-solution loss is 1.5 - that probability + noise."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for task in tasks:
        difficulty = rng.uniform(-0.15, 0.15, questions)
        for model, acc in accuracy.items():
            for n in (shots_by_task or {}).get(task, shots):
                for seed in seeds if n else [0]:
                    grid = steps if n else (0,)
                    draws = rng.random(questions)
                    noise = rng.normal(0, 0.1, questions)
                    for step in grid:
                        frac = 1.0 if n == 0 else min(1.0, step / (speed or {}).get(model, 1))
                        p = np.clip(acc(0) + (acc(n) - acc(0)) * frac + difficulty, 0, 1)
                        right = draws < p
                        rows += [(model, task, n, seed, step, f"q{q}", bool(right[q]), 1.5 - p[q] + noise[q])
                                 for q in range(questions)]
    preds = pd.DataFrame(rows, columns=["model", "task", "n_shots", "seed", "step", "question_id", "correct", "loss"])
    cells = preds.groupby(["model", "task", "n_shots", "seed", "step"]).agg(
        accuracy=("correct", "mean"), loss=("loss", "mean")).reset_index()
    return cells, preds


def curve(zero, per_shot):
    """Accuracy at n shots: `zero` + `per_shot` x log(1 + n) / log(51), so 50 shots add `per_shot`."""
    return lambda n: zero + per_shot * math.log1p(n) / math.log(51)


def judge(cells, preds, **kwargs):
    kwargs = dict(unseen_tasks=UNSEEN, cross_domain_tasks=CROSS, few_shot_tasks=FEW_SHOT + CROSS, n_boot=1000) | kwargs
    return {v.name: v for v in verdicts(cells, preds, **kwargs)}


SFT = curve(0.35, 0.30)
BASE = curve(0.15, 0.30)


def plus(acc, points):
    return lambda n: acc(n) + points


def test_planted_advantage_is_met_and_significant():
    """FOMAML-SFT 10 points above SFT-Mixed everywhere, 200 questions x 5 seeds."""
    cells, preds = simulate({"fomaml": plus(SFT, 0.10), "sft_mixed": SFT, "base": BASE})
    v = judge(cells, preds)
    assert list(v) == ["H1", "H2", "H3", "C1", "C2", "C3", "C4", "C5"]
    assert v["C3"].status == MET
    assert all(e["p_holm"] < 0.05 and e["estimate"] > 0 for e in v["C3"].evidence["family"])
    assert v["C5"].status == MET and v["C5"].ci_lo > 0 and v["C5"].estimate == pytest.approx(0.10, abs=0.03)
    assert v["H2"].status == MET  # 10 points over SFT, 20 over base, 200 questions, 0-shot
    # FOMAML-SFT at 10 shots is 1.7 points below SFT-Mixed at 50: too close to call with 200 questions
    truth = plus(SFT, 0.10)(10) - SFT(50)
    assert v["H1"].status == INCONCLUSIVE and v["H1"].ci_lo < truth < v["H1"].ci_hi
    assert v["C1"].status in (MET, INCONCLUSIVE)  # SFT at 30 is ~6 points above SFT at 10
    assert 0 < v["C5"].mde < 0.1
    for verdict in v.values():
        json.dumps(verdict.to_dict(), allow_nan=False)  # strict JSON


def test_planted_disadvantage_is_not_met():
    cells, preds = simulate({"fomaml": plus(SFT, -0.12), "sft_mixed": SFT, "base": BASE}, questions=400, seeds=range(3))
    v = judge(cells, preds)
    for name in ("H1", "H2", "C1", "C2", "C3", "C5"):
        assert v[name].status == NOT_MET, (name, v[name].explanation)


def test_no_effect_is_inconclusive():
    cells, preds = simulate({"fomaml": SFT, "sft_mixed": SFT, "base": BASE}, questions=150, seeds=range(3),
                            rng_seed=1)
    v = judge(cells, preds)
    for name in ("H2", "C2", "C3", "C5"):
        assert v[name].status == INCONCLUSIVE, (name, v[name].explanation)
    assert v["C5"].ci_lo < 0 < v["C5"].ci_hi


def test_a_run_at_floor_is_inconclusive_never_not_met():
    floor = lambda n: -1.0  # noqa: E731 - every answer wrong
    cells, preds = simulate({"fomaml": floor, "sft_mixed": floor, "base": floor}, questions=16, seeds=range(2),
                            steps=(0, 4))
    v = judge(cells, preds)
    for name in ("H1", "H2", "H3", "C1", "C2", "C3", "C4", "C5"):
        assert v[name].status == INCONCLUSIVE, (name, v[name].status, v[name].explanation)
    assert "floor" in v["C2"].explanation and "Neither model reaches" in v["H3"].explanation


def test_design_grid_judges_c1_and_h1_per_task():
    """The design's grid: MMLU-STEM runs 0/5 shots only. C1 (10 vs 30 shots) is judged on the tasks
    with 10 shots and levels around 30, and names MMLU as not judged instead of failing everywhere."""
    grid = {"mmlu_physics": (0, 5)}
    cells, preds = simulate({"fomaml": plus(SFT, 0.2), "sft_mixed": SFT, "base": BASE}, shots_by_task=grid,
                            questions=120, seeds=range(3))
    v = judge(cells, preds)
    for name in ("C1", "H1"):
        assert set(v[name].evidence["per_task"]) == {"algebra", "geometry"}
        assert "mmlu_physics" in v[name].evidence["not_judged"] and "mmlu_physics" in v[name].explanation
    assert v["H1"].evidence["shots"]["algebra"] == pytest.approx(
        {**v["H1"].evidence["shots"]["algebra"], "fomaml_shots": 10, "sft_shots": 50})
    assert v["C1"].evidence["shots"]["algebra"]["sft_shots"] == 30
    assert v["C1"].status == MET  # 20 points at 10 shots beats SFT's ~9-point gain from 10 to 30


def test_unmeasurable_names_what_is_missing():
    cells, preds = simulate({"fomaml": SFT, "sft_mixed": SFT}, shots=(0, 5), questions=20, seeds=range(2), steps=(4,))
    v = judge(cells, preds)
    assert v["C1"].status == UNMEASURABLE and "ran FOMAML-SFT [0, 5]" in v["C1"].explanation
    assert v["H2"].status == UNMEASURABLE and "Base" in v["H2"].explanation  # no base arm
    assert v["H3"].status == UNMEASURABLE and "2+ recorded" in v["H3"].explanation
    no_preds = judge(cells, None)
    assert all(x.status == UNMEASURABLE and "predictions" in x.explanation for x in no_preds.values())


def test_speed_claims():
    """FOMAML-SFT reaches its final accuracy by step 10, SFT-Mixed by step 100: a 5x-10x ratio."""
    fast = dict(steps=(0, 10, 25, 50, 100), questions=150, seeds=range(3), tasks=FEW_SHOT)
    high = curve(0.3, 0.55)
    cells, preds = simulate({"fomaml": high, "sft_mixed": high}, speed={"fomaml": 10, "sft_mixed": 100}, **fast)
    v = judge(cells, preds, target_acc=0.7, few_shot_tasks=FEW_SHOT)
    assert v["C4"].status == MET, v["C4"].explanation
    # H3 is the design's ranges: FOMAML-SFT under 50 steps (yes), SFT-Mixed over 100 (no: ~70)
    assert v["H3"].status == NOT_MET, v["H3"].explanation
    # crossings interpolated between recorded steps: FOMAML-SFT's between 0 and 10, SFT-Mixed's between 50 and 100
    assert 0 < v["H3"].evidence["per_task"]["algebra"]["fomaml_steps"] < 10
    assert 50 < v["H3"].evidence["per_task"]["algebra"]["sft_steps"] < 100
    cells, preds = simulate({"fomaml": high, "sft_mixed": high}, speed={"fomaml": 100, "sft_mixed": 10}, **fast)
    v = judge(cells, preds, target_acc=0.7, few_shot_tasks=FEW_SHOT)
    assert v["C4"].status == NOT_MET and v["C4"].ci_hi < 2


def test_loss_outcome_has_more_power_at_floor():
    """Accuracy at floor, but FOMAML-SFT's reference solutions get a lower loss: the loss verdicts see it."""
    low = lambda n: -0.5  # noqa: E731 - every answer wrong; the loss still varies by question
    cells, preds = simulate({"fomaml": low, "sft_mixed": low, "base": low}, questions=60, seeds=range(2))
    preds.loc[preds["model"] == "fomaml", "loss"] -= 0.2
    acc = judge(cells, preds)
    loss = judge(cells, preds, outcome=LOSS)
    assert acc["C5"].status == INCONCLUSIVE
    assert loss["C5"].status == MET and loss["C5"].label == "C5 (loss)"
    assert loss["C5"].estimate == pytest.approx(-0.2, abs=0.05)  # FOMAML-SFT's loss minus SFT-Mixed's
    assert loss["C5"].ci_hi < 0
    assert loss["H3"].status == UNMEASURABLE and "no target loss" in loss["H3"].explanation
    assert loss["C2"].threshold == 0.0 and acc["C2"].threshold == 0.05


def test_the_design_configs_grid_judges_every_claim_it_can():
    """configs/full/design.yaml: three tasks at 0/5/10/25/50 shots, MMLU-STEM at 0/5, AIME at 0/5/10,
    applied physics at 0 (protocol B only: no adaptation speed to judge).
    H1 (10 vs 50 shots) and C1 (10 vs 30) are judged on the first three and name MMLU-STEM and AIME."""
    from metasft.config import load_config
    from metasft.pipeline import REPO_CONFIGS

    cfg = load_config(REPO_CONFIGS / "full" / "design.yaml")
    grid = {t.name: tuple(t.n_shots) for t in cfg.data.eval_tasks}
    full = [t for t, shots in grid.items() if {10, 25, 50} <= set(shots)]
    assert len(full) == 3
    cells, preds = simulate({"fomaml": plus(SFT, 0.05), "sft_mixed": SFT, "base": BASE}, tasks=list(grid),
                            shots_by_task=grid, questions=30, seeds=range(2), steps=tuple(cfg.eval.record_steps))
    v = {x.name: x for x in verdicts(cells, preds, unseen_tasks=[t.name for t in cfg.data.eval_tasks if t.unseen],
                                     cross_domain_tasks=[t.name for t in cfg.data.eval_tasks if t.cross_domain],
                                     target_acc=cfg.eval.target_acc, n_boot=200)}
    adapted = [t for t, shots in grid.items() if max(shots) > 0]  # applied_physics: protocol B, 0-shot only
    assert len(adapted) == len(grid) - 1
    for name in ("H1", "C1"):
        assert v[name].status != UNMEASURABLE
        assert sorted(v[name].evidence["per_task"]) == sorted(full)
        assert sorted(v[name].evidence["not_judged"]) == sorted(set(adapted) - set(full))
    assert v["H1"].evidence["shots"][full[0]]["sft_shots"] == 50
    for name in ("H3", "C4"):
        assert v[name].status != UNMEASURABLE and sorted(v[name].evidence["per_task"]) == sorted(adapted)
