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
from metasft.train.common import TrainModel, check_finite


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
               *, algorithm: str, inner_lr: float, inner_kind: str, clip_grad: float, micro: int) -> list[TaskStep]:
    """One meta-update of θ from `tasks` = [(name, support batches, query batch)]."""
    theta = snapshot(model.params)
    steps = []
    meta = [torch.zeros_like(t) for t in theta]
    for name, support, query in tasks:
        step = task_meta_grad(model, theta, support, query, algorithm=algorithm, inner_lr=inner_lr,
                              inner_kind=inner_kind, micro=micro, name=name)
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
