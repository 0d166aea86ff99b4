"""First-order MAML (and Reptile) on LoRA adapters: the method as small functions, then the loop.

One outer step (Finn et al. 2017, first-order variant; Nichol et al. 2018 for Reptile):
  θ: the adapter weights (base weights frozen). For each of `meta_batch_size` sampled tasks:
    restore θ in place; K optimizer steps on support batches -> θ'ᵢ;
    FOMAML: gᵢ = ∇ L_query(θ'ᵢ), taken *before* θ is restored (backward needs the θ'ᵢ activations);
    Reptile: gᵢ = θ − θ'ᵢ.
  meta-gradient = mean gᵢ, clipped; one AdamW step on θ with meta.outer_lr.
Only adapter tensors are snapshotted and restored; the model is never copied.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import nn

from metasft.train.batching import Example, Sampler
from metasft.train.common import NonFiniteLoss, TrainModel, check_finite


def snapshot(params: list[nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


@torch.no_grad()
def restore(params: list[nn.Parameter], saved: list[torch.Tensor]) -> None:
    for p, s in zip(params, saved):
        p.copy_(s)


def inner_optimizer(params: list[nn.Parameter], kind: str, lr: float) -> torch.optim.Optimizer:
    """A fresh inner optimizer per task (Adam's moments must not leak between tasks)."""
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr)


def adapt(model: TrainModel, support: list[list[Example]], optimizer: torch.optim.Optimizer,
          micro: int) -> list[float]:
    """One optimizer step per support batch, in place; returns the loss before each step."""
    losses = []
    for batch in support:
        model.zero_grad()
        loss, _ = model.backward(batch, micro)
        losses.append(loss)
        optimizer.step()
    model.zero_grad()
    return losses


@dataclass
class TaskStep:
    """What one task contributed to an outer step."""
    name: str
    support_loss_pre: float
    support_loss_post: float
    query_loss: float | None
    grad: list[torch.Tensor]


def task_meta_grad(model: TrainModel, theta: list[torch.Tensor], support: list[list[Example]],
                   query: list[Example], *, algorithm: str, inner_lr: float, inner_kind: str,
                   micro: int, name: str) -> TaskStep:
    """Adapt from θ on `support`, then this task's meta-gradient (FOMAML or Reptile)."""
    restore(model.params, theta)
    pre = adapt(model, support, inner_optimizer(model.params, inner_kind, inner_lr), micro)
    post = model.loss(support[0], micro) if support else pre[0]
    query_loss = None
    if algorithm == "fomaml":
        model.zero_grad()
        query_loss, _ = model.backward(query, micro)  # at θ'ᵢ: must precede the restore
        grad = [p.grad.detach().clone() for p in model.params]
        model.zero_grad()
    else:
        grad = [t - p.detach() for t, p in zip(theta, model.params)]
    return TaskStep(name, pre[0] if pre else post, post, query_loss, grad)


def outer_step(model: TrainModel, outer_opt: torch.optim.Optimizer, tasks: list[tuple[str, list[list[Example]], list[Example]]],
               *, algorithm: str, inner_lr: float, inner_kind: str, clip_grad: float, micro: int,
               check_at: int | None = None) -> list[TaskStep]:
    """One meta-update of θ from `tasks` = [(name, support batches, query batch)].

    With `check_at` (the step number), a non-finite loss raises before θ is touched.
    """
    theta = snapshot(model.params)
    steps = []
    meta = [torch.zeros_like(t) for t in theta]
    for name, support, query in tasks:
        step = task_meta_grad(model, theta, support, query, algorithm=algorithm, inner_lr=inner_lr,
                              inner_kind=inner_kind, micro=micro, name=name)
        if check_at is not None:
            try:
                check_step([step], check_at)
            except NonFiniteLoss as e:
                restore(model.params, theta)
                ids = [e_.id for batch in support for e_ in batch] + [e_.id for e_ in query]
                raise NonFiniteLoss(f"{e} (batch example ids: {ids})") from None
        for m, g in zip(meta, step.grad):
            m.add_(g, alpha=1.0 / len(tasks))
        step.grad = []
        steps.append(step)
    restore(model.params, theta)
    for p, m in zip(model.params, meta):
        p.grad = m
    if clip_grad and clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(model.params, clip_grad)
    outer_opt.step()
    model.zero_grad()
    return steps


@dataclass
class TaskData:
    """A meta-training task's tokenized support and query pools and their samplers."""
    name: str
    support: list[Example]
    query: list[Example]
    support_sampler: Sampler
    query_sampler: Sampler

    def draw(self, k_steps: int, inner_bs: int, query_bs: int, need_query: bool):
        support = [[self.support[i] for i in self.support_sampler.next(inner_bs)] for _ in range(k_steps)]
        query = [self.query[i] for i in self.query_sampler.next(query_bs)] if need_query else []
        return support, query


def sample_tasks(rng: random.Random, tasks: list[TaskData], k: int) -> list[TaskData]:
    """`k` distinct tasks (all of them, shuffled, when k >= the number of tasks)."""
    return rng.sample(tasks, min(k, len(tasks)))


def check_step(steps: list[TaskStep], step: int) -> None:
    for s in steps:
        for key in ("support_loss_pre", "support_loss_post", "query_loss"):
            value = getattr(s, key)
            if value is not None:
                check_finite(value, f"outer step {step}, task {s.name!r}, {key}")


def train_meta(session, model: TrainModel, outer_opt, tasks: list[TaskData], *, algorithm: str,
               total_steps: int, meta_batch_size: int, num_inner_steps: int, inner_batch_size: int,
               query_batch_size: int, inner_lr: float, inner_kind: str, outer_lr: float,
               warmup_steps: int, clip_grad: float, micro: int, task_rng: random.Random) -> None:
    """The meta-training loop: `total_steps` outer steps, logging and checkpointing through `session`."""
    from metasft.train.common import set_lr

    def extra_state():
        return {"task_rng": task_rng.getstate(),
                "samplers": {t.name: [t.support_sampler.state(), t.query_sampler.state()] for t in tasks}}

    session.begin()
    for step in range(session.start_step, total_steps):
        lr = set_lr(outer_opt, outer_lr, step, warmup_steps)
        chosen = sample_tasks(task_rng, tasks, meta_batch_size)
        drawn = [(t.name, *t.draw(num_inner_steps, inner_batch_size, query_batch_size, algorithm == "fomaml"))
                 for t in chosen]
        steps = outer_step(model, outer_opt, drawn, algorithm=algorithm, inner_lr=inner_lr,
                           inner_kind=inner_kind, clip_grad=clip_grad, micro=micro, check_at=step + 1)
        consumed = [e for _, support, query in drawn for batch in support for e in batch] + \
                   [e for _, _, query in drawn for e in query]
        session.budget.add(consumed)
        session.budget.optimizer_steps += 1
        session.budget.inner_steps += num_inner_steps * len(chosen)
        row = {"lr": lr, "tokens_per_s": session.tokens_per_s(sum(len(e.input_ids) for e in consumed)),
               "tokens": session.budget.tokens, "examples": session.budget.examples}
        for key in ("support_loss_pre", "support_loss_post", "query_loss"):
            values = [getattr(s, key) for s in steps if getattr(s, key) is not None]
            if values:
                row[key] = sum(values) / len(values)
        if "query_loss" in row:
            row["adaptation_gap"] = abs(row["query_loss"] - row["support_loss_post"])
        row["loss"] = row.get("query_loss", row["support_loss_post"])
        row["tasks"] = {s.name: {"support_loss_pre": s.support_loss_pre, "support_loss_post": s.support_loss_post,
                                 "query_loss": s.query_loss,
                                 "adaptation_gap": None if s.query_loss is None else abs(s.query_loss - s.support_loss_post)}
                        for s in steps}
        session.end_step(step + 1, row, extra_state)
