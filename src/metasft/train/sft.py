"""Supervised fine-tuning of the LoRA adapters: the baselines (SFT on all tasks mixed, task-specific SFT).

Same loss, model, LoRA, optimizer family and data formatting as FOMAML; only the algorithm differs.
"""
from __future__ import annotations

import math

from metasft.train.batching import Example, length_grouped
from metasft.train.common import TrainModel, check_finite, set_lr


def sft_steps(budget_examples: int, batch_size: int) -> int:
    """Optimizer steps that process exactly `budget_examples` examples (the last batch may be short)."""
    return math.ceil(budget_examples / batch_size)


def train_sft(session, model: TrainModel, optimizer, pool: list[Example], task_of: list[str], sampler, *,
              budget_examples: int, batch_size: int, micro: int, lr: float, warmup_steps: int,
              clip_grad: float) -> None:
    """SFT on `pool` until `budget_examples` examples have been processed.

    task_of[i]: the task pool[i] belongs to (counted per task in the budget); `sampler`: a `Sampler`
    (pooled mixture) or `BalancedSampler` (every task an equal share), both resumable.
    """
    import torch

    total_steps = sft_steps(budget_examples, batch_size)
    session.begin()
    for step in range(session.start_step, total_steps):
        lr_now = set_lr(optimizer, lr, step, warmup_steps)
        size = min(batch_size, budget_examples - step * batch_size)
        indices = sampler.next(size)
        # similar lengths together: less padding, same examples and same global token-mean loss
        ordered = [i for group in length_grouped(pool, indices, micro) for i in group]
        batch = [pool[i] for i in ordered]
        model.zero_grad()
        loss, _ = model.backward(batch, micro)
        check_finite(loss, f"SFT step {step + 1}, batch example ids {[e.id for e in batch]}")
        if clip_grad and clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(model.params, clip_grad)
        optimizer.step()
        model.zero_grad()
        session.budget.add(batch, [task_of[i] for i in ordered])
        session.budget.optimizer_steps += 1
        row = {"loss": loss, "lr": lr_now, "tokens": session.budget.tokens, "examples": session.budget.examples,
               "tokens_per_s": session.tokens_per_s(sum(len(e.input_ids) for e in batch))}
        session.end_step(step + 1, row, lambda: {"sampler": sampler.state()})
