"""The grid engine (issue 10): several groups of one task adapt and evaluate together.

A stack is up to `eval.cells_per_batch` groups of one task: few-shot groups (any models, shot levels
and seeds: `run_stack`), or 0-shot groups, one cell per model and no adaptation (`evaluate_stacked`,
issue 22). Their adapters live in one `StackedLora`; each adaptation step draws each cell's own batch
exactly as `adaptation.adapt` does for that group (same shot indices, same `Sampler` seed and order:
the paired design is unchanged), runs forward and backward over all cells' rows (in passes of
similar length, to cut padding), and one AdamW step over the stacked tensors. AdamW is elementwise, so one optimizer over (C, ...) tensors is C
optimizers, one per cell; each cell's objective is its own token-mean loss, and the cells share no
trainable tensor, so the gradient of their sum is each cell's own gradient. At each recorded step all
cells are evaluated in shared batches (`grid_eval.GridScorer`). `adaptation.run_group` stays the
one-cell reference path (`eval.cells_per_batch: 1`); tests/eval/test_grid.py checks the two agree.
"""
from __future__ import annotations

from typing import Callable

import torch

from metasft.eval.adaptation import group_rows
from metasft.eval.evaluator import ACC_K_TEMPERATURE, Evaluator, StepResult, acc_k_seed, step_result
from metasft.eval.grid_eval import GridScorer
from metasft.eval.schedule import Group, recorded_steps, shot_indices, stable_seed
from metasft.eval.specs import ModelSpec
from metasft.eval.stacked_lora import RowCells, StackedLora
from metasft.eval.tasks import TaskData
from metasft.train.batching import Example, Sampler, collate
from metasft.train.common import check_finite


def adapt_stacked(loss_module, lora: StackedLora, shots: list[list[Example]], *, steps: int, lr: float,
                  batch_size: int, seeds: list[int], pad_id: int,
                  on_step: Callable[[int], None] | None = None) -> list[list[float]]:
    """`adaptation.adapt` for every cell of `lora` at once, in place: cell c draws min(batch_size,
    len(shots[c])) of its shots per step from `Sampler(len(shots[c]), seeds[c])`.

    `loss_module`: the model's `ResponseLoss`. Returns each cell's loss before each step.
    """
    n_cells = lora.n_cells
    if not (len(shots) == len(seeds) == n_cells):
        raise ValueError(f"{len(shots)} shot lists and {len(seeds)} seeds for {n_cells} cells")
    device = lora.A[0].device
    optimizer = torch.optim.AdamW(lora.params, lr=lr)   # adapt()'s optimizer: torch's defaults but lr
    samplers = [Sampler(len(s), seed=seed) for s, seed in zip(shots, seeds)]
    ks = [min(batch_size, len(s)) for s in shots]
    losses: list[list[float]] = [[] for _ in range(n_cells)]
    for step in range(1, steps + 1):
        drawn = [(c, shots[c][i]) for c in range(n_cells) for i in samplers[c].next(ks[c])]
        tokens = torch.zeros(n_cells, device=device)
        for c, e in drawn:  # ResponseLoss's count: response positions after the first token
            tokens[c] += len(e.input_ids) - max(e.n_prompt, 1)
        for p in lora.params:
            p.grad = None
        cell_sum = torch.zeros(n_cells, device=device)
        for part in _similar_lengths(drawn):    # fewer padded tokens than one batch of all cells' rows
            rows = RowCells.of(torch.tensor([c for c, _ in part], device=device))
            b = collate([e for _, e in part], pad_id).to(device)                          # (n, T) right-padded
            with lora.active(rows):
                sums, _ = loss_module(b.input_ids, b.attention_mask, b.labels, per_row=True)  # (n,)
            part_sum = sums.new_zeros(n_cells).index_add(0, rows.cells, sums)
            (part_sum / tokens).sum().backward()    # each cell's token mean: its own tokens, all parts
            cell_sum += part_sum.detach()
        cell_loss = cell_sum / tokens                                                        # (C,)
        for c, value in enumerate(cell_loss.tolist()):
            check_finite(value, f"adaptation step {step} (stacked cell {c})")
            losses[c].append(value)
        optimizer.step()
        if on_step is not None:
            on_step(step)
    for p in lora.params:
        p.grad = None
    return losses


# Padded tokens of one adaptation pass at most: its activations are kept for the backward (about
# 2.5 MB per token for SmolLM2-135M with the scored positions' logits: 1020 tokens peaked 3.4 GB above the
# process), so 512 bounds a pass near 1.3 GB; a stack's 12 rows of 384 tokens in one pass took about
# 10 GB more than one group at a time, 1024 tokens 5.8 GB for the whole stack's adaptation, 512 tokens
# 2.75 GB at +2 % CPU (BENCHMARKS.md, "Where the stack's peak goes").
PASS_TOKENS = 512


def _similar_lengths(drawn: list[tuple[int, Example]], waste: float = 0.1) -> list[list[tuple[int, Example]]]:
    """The (cell, example) rows of one step in forward passes of similar length: longest first, a
    pass grows while its padding stays within `waste` of its real tokens and its padded tokens
    within PASS_TOKENS; rows sorted by cell inside each pass (the `RowCells` order). The loss is a
    sum over rows, so the split changes nothing but the padding and the memory."""
    order = sorted(drawn, key=lambda ce: -len(ce[1].input_ids))
    parts: list[list[tuple[int, Example]]] = []
    real = 0
    for c, e in order:
        n = len(e.input_ids)
        padded = (len(parts[-1]) + 1) * len(parts[-1][0][1].input_ids) if parts else n
        if parts and padded <= (1 + waste) * (real + n) and padded <= PASS_TOKENS:
            parts[-1].append((c, e))
            real += n
        else:
            parts.append([(c, e)])
            real = n
    return [sorted(p, key=lambda ce: ce[0]) for p in parts]


def run_stack(ev: Evaluator, specs: list[ModelSpec], groups: list[Group], task: TaskData, grader,
              zero_shots: list[StepResult], acc_k: int | None = None,
              progress: Callable[[str, float], None] | None = None) -> list[tuple[list[dict], list[dict]]]:
    """Cell rows and prediction rows of each group of a stack (all few-shot groups of `task`), as
    `adaptation.run_group` gives them one at a time (`acc_k` samples too). `zero_shots[c]`: step 0 of
    group c (its model's 0-shot result on the task). The evaluator's own adapter is not touched.
    `progress(piece, amount)` hears of each "adaptation step" done and each decoding batch as its
    share of an "evaluation" (`eta.EvalProgress.piece`)."""
    e = ev.cfg.eval
    if any(g.n_shots == 0 or g.task != task.name for g in groups):
        raise ValueError(f"a stack holds few-shot groups of task {task.name} only, got {groups}")
    states = [ev.state(spec) for spec in specs]  # read (or built) before the stack hooks the model
    lora = StackedLora(ev.peft, len(groups))
    shots, seeds, shot_ids = [], [], []
    for c, (state, g) in enumerate(zip(states, groups)):
        lora.load(c, state)
        idx = shot_indices(task.name, g.n_shots, g.seed, len(task.shots))
        shots.append([task.shots[i] for i in idx])
        shot_ids.append([task.shot_ids[i] for i in idx])
        seeds.append(stable_seed("batches", task.name, g.n_shots, g.seed))
    results: list[dict[int, StepResult]] = [{0: z} for z in zero_shots]
    record = set(recorded_steps(e.record_steps, e.adaptation_steps))
    scorer = _scorer(ev, task)

    def on_step(step: int) -> None:
        if progress is not None:
            progress("adaptation step", 1)
        if step in record:
            for c, r in enumerate(_evaluate(scorer, lora, grader, acc_k, progress)):
                results[c][step] = r

    ev.peft.train()
    adapt_stacked(ev.model.loss_module, lora, shots, steps=e.adaptation_steps, lr=e.adaptation_lr,
                  batch_size=e.adaptation_batch_size, seeds=seeds, pad_id=ev.model.pad_id, on_step=on_step)
    return [group_rows(g, results[c], shot_ids[c]) for c, g in enumerate(groups)]


def evaluate_stacked(ev: Evaluator, specs: list[ModelSpec], task: TaskData, grader, acc_k: int | None = None,
                     progress: Callable[[str, float], None] | None = None) -> list[StepResult]:
    """`evaluator.evaluate_step` of each model of `specs` on `task` as it is (its 0-shot result), all
    of them one stack of cells in shared batches; acc@k's samples seeded as the one-cell path's. The
    evaluator's own adapter is not touched. `progress` hears of each decoding batch as its share of
    the "evaluation"."""
    states = [ev.state(spec) for spec in specs]  # read (or built) before the stack is made on the model
    lora = StackedLora(ev.peft, len(specs))
    for c, state in enumerate(states):
        lora.load(c, state)
    return _evaluate(_scorer(ev, task), lora, grader, acc_k, progress)


def _scorer(ev: Evaluator, task: TaskData) -> GridScorer:
    return GridScorer(ev.peft, ev.tokenizer, task, rows_per_batch=ev.cfg.eval.batch_size,
                      loss_module=ev.model.loss_module, backend=ev.backend)


def _evaluate(scorer: GridScorer, lora: StackedLora, grader, acc_k: int | None,
              progress: Callable[[str, float], None] | None) -> list[StepResult]:
    """Each cell of `lora` evaluated and graded on the scorer's task, as `evaluate_step` does one."""
    task = scorer.task
    scored = scorer.score(lora, samples=acc_k or 0, seed=acc_k_seed(task.name), temperature=ACC_K_TEMPERATURE,
                          on_batch=None if progress is None else lambda share: progress("evaluation", share))
    return [step_result(task, s.completions(), s.losses, s.ll_choice, s.samples, grader, acc_k) for s in scored]
