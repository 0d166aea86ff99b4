"""Protocol A for one group (model, task, n_shots, seed): take the n shots, fine-tune the model's LoRA
adapter on them with AdamW for `eval.adaptation_steps` steps, and evaluate at each recorded step.
0-shot is the model as it is: one cell at step 0 stored with seed 0 (greedy decoding is
deterministic). Step 0 of a few-shot group is the model's 0-shot evaluation."""
from __future__ import annotations

import math
from typing import Callable

from metasft.eval.backend import Backend
from metasft.eval.evaluator import StepResult, adapt, evaluate_step  # adapt: the HF backend's, re-exported
from metasft.eval.results import CELL_KEYS, ResultsUnion
from metasft.eval.schedule import Group, recorded_steps, shot_indices, stable_seed
from metasft.eval.specs import ModelSpec
from metasft.eval.tasks import TaskData


def run_group(ev: Backend, spec: ModelSpec, group: Group, task: TaskData, grader, zero_shot: StepResult | None,
              *, acc_k: int | None = None, progress: Callable[[str, float], None] | None = None
              ) -> tuple[list[dict], list[dict]]:
    """Cell rows and prediction rows of one group; the model's adapter is restored afterwards.

    `zero_shot` is the model's 0-shot result on the task, used as step 0 of a few-shot group;
    `progress(piece, 1)` hears of each "adaptation step" and "evaluation" done (`eta.EvalProgress.piece`).
    """
    def done(piece: str) -> None:
        if progress is not None:
            progress(piece, 1)

    e = ev.cfg.eval
    ev.load(spec)
    results: dict[int, StepResult] = {}
    shot_ids: list[str] = []
    if group.n_shots == 0:
        results[0] = zero_shot or evaluate_step(ev, task, grader, acc_k)
        done("evaluation")
    else:
        idx = shot_indices(task.name, group.n_shots, group.seed, len(task.shots))
        shot_ids = [task.shot_ids[i] for i in idx]
        record = set(recorded_steps(e.record_steps, e.adaptation_steps))
        results[0] = zero_shot or evaluate_step(ev, task, grader, acc_k)

        def on_step(step: int) -> None:
            done("adaptation step")
            if step in record:
                results[step] = evaluate_step(ev, task, grader, acc_k)
                done("evaluation")

        ev.adapt([task.shots[i] for i in idx], steps=e.adaptation_steps, lr=e.adaptation_lr,
                 batch_size=e.adaptation_batch_size, seed=stable_seed("batches", task.name, group.n_shots, group.seed),
                 on_step=on_step)
        ev.load(spec)
    return group_rows(group, results, shot_ids)


def group_rows(group: Group, results: dict[int, StepResult], shot_ids: list[str]) -> tuple[list[dict], list[dict]]:
    """A group's cell rows and prediction rows from its evaluation at each recorded step."""
    key = {"model": group.model, "task": group.task, "n_shots": group.n_shots, "seed": group.seed}
    cells = [{**key, "step": step, **r.cell} for step, r in sorted(results.items())]
    preds = [{**key, "step": step, **p, "shot_ids": shot_ids} for step, r in sorted(results.items()) for p in r.predictions]
    return cells, preds


def stored_zero_shot(store: ResultsUnion, model: str, task: str) -> StepResult | None:
    """The stored 0-shot evaluation of (model, task), if that group is done in any of the stores."""
    if not store.is_done(model, task, 0, 0):
        return None
    cell = store.cells(model=model, task=task, n_shots=0, seed=0, step=0)
    preds = store.predictions(model=model, task=task, n_shots=0, seed=0, step=0)
    drop = list(CELL_KEYS)
    cell_row = {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in cell.drop(columns=drop).iloc[0].to_dict().items()}
    pred_rows = []
    for row in preds.drop(columns=drop + ["shot_ids"]).to_dict("records"):
        pred_rows.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return StepResult(cell_row, pred_rows)


def step0(cells: list[dict], preds: list[dict]) -> StepResult:
    """A finished group's step-0 evaluation, as a StepResult (the model's 0-shot result)."""
    drop = CELL_KEYS
    cell = next(c for c in cells if c["step"] == 0)
    return StepResult({k: v for k, v in cell.items() if k not in drop},
                      [{k: v for k, v in p.items() if k not in drop + ("shot_ids",)} for p in preds if p["step"] == 0])
