"""First-order MAML (and Reptile) on LoRA adapters: the method as small functions, then the loop.

One outer step (Finn et al. 2017, first-order variant; Nichol et al. 2018 for Reptile):
  θ: the adapter weights (base weights frozen). For each of `meta_batch_size` sampled tasks:
    restore θ in place; K optimizer steps on support batches -> θ'ᵢ;
    FOMAML: gᵢ = ∇ L_query(θ'ᵢ), taken *before* θ is restored (backward needs the θ'ᵢ activations);
    Reptile: gᵢ = θ − θ'ᵢ.
  meta-gradient = mean gᵢ, clipped; one AdamW step on θ with meta.outer_lr.
Only adapter tensors are snapshotted and restored; the model is never copied.
Whether the inner loop adapted at all is measured every outer step (`TaskStep.inner_drop`) and judged
over the first steps (`InnerLoopGuard`): with θ'ᵢ ≈ θ the FOMAML gradient is the plain query gradient.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

import torch
from torch import nn

from metasft.train.batching import Example, Sampler
from metasft.train.common import NonFiniteLoss, TrainModel, check_finite

log = logging.getLogger(__name__)


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

    @property
    def inner_drop(self) -> float:
        return relative_drop(self.support_loss_pre, self.support_loss_post)


def relative_drop(pre: float, post: float) -> float:
    """(pre - post) / pre: the share of the support loss the inner loop removed (same batch both times)."""
    return (pre - post) / pre if pre > 0 else 0.0


@dataclass
class InnerLoopGuard:
    """Did the inner loop adapt? The mean relative support-loss drop over the first `steps` outer steps,
    against `threshold` (meta.min_inner_drop). Below it θ'ᵢ ≈ θ: FOMAML's update is then SFT on the
    query batches alone, and θ is not meta-learned for the adaptation evaluation runs (issue 9)."""
    threshold: float
    steps: int
    drops: list[float] = field(default_factory=list)

    def observe(self, drop: float) -> bool:
        """Record one outer step's mean drop; True when it completes the judged window."""
        if len(self.drops) >= self.steps:
            return False
        self.drops.append(drop)
        return len(self.drops) == self.steps

    @property
    def mean_drop(self) -> float | None:
        return sum(self.drops) / len(self.drops) if self.drops else None

    @property
    def adapted(self) -> bool | None:
        """None before any step; else whether the mean drop reached the threshold."""
        return None if not self.drops else self.mean_drop >= self.threshold

    def message(self) -> str:
        return (f"the inner loop did not adapt: over the first {len(self.drops)} outer steps the support loss "
                f"fell by {self.mean_drop:.3%} on average (before vs after the inner loop, same batch), below "
                f"meta.min_inner_drop={self.threshold:g}; θ' ≈ θ, so this run is SFT on its query batches, not "
                f"FOMAML; raise meta.inner_lr or set meta.inner_optimizer=adam")

    def summary(self) -> dict:
        return {"mean_drop": self.mean_drop, "threshold": self.threshold, "steps": self.steps,
                "steps_observed": len(self.drops), "adapted": self.adapted}


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


def sample_tasks(rng: random.Random, tasks: list[TaskData], k: int, counts: dict[str, int]) -> list[TaskData]:
    """`k` distinct tasks, uniformly at random among the least chosen so far (`counts`, updated).

    Tasks are drawn without replacement across steps, like epochs over the tasks: each is equally likely,
    and over a run every task is chosen equally often within one, so the task mixture is the same
    deterministic share SFT-Mixed's balanced mixture reproduces (data.mixture).
    """
    shuffled = rng.sample(tasks, len(tasks))
    chosen = sorted(shuffled, key=lambda t: counts[t.name])[:min(k, len(tasks))]  # stable: random among ties
    for t in chosen:
        counts[t.name] += 1
    return chosen


def check_step(steps: list[TaskStep], step: int) -> None:
    for s in steps:
        for key in ("support_loss_pre", "support_loss_post", "query_loss"):
            value = getattr(s, key)
            if value is not None:
                check_finite(value, f"outer step {step}, task {s.name!r}, {key}")


def train_meta(session, model: TrainModel, outer_opt, tasks: list[TaskData], *, algorithm: str,
               total_steps: int, meta_batch_size: int, num_inner_steps: int, inner_batch_size: int,
               query_batch_size: int, inner_lr: float, inner_kind: str, outer_lr: float,
               warmup_steps: int, clip_grad: float, micro: int, task_rng: random.Random,
               task_counts: dict[str, int], guard: InnerLoopGuard) -> None:
    """The meta-training loop: `total_steps` outer steps, logging and checkpointing through `session`.

    `task_counts` (times each task was chosen) and `guard` are updated in place and checkpointed.
    """
    from metasft.train.common import set_lr

    def extra_state():
        return {"task_rng": task_rng.getstate(), "task_counts": dict(task_counts), "inner_drops": list(guard.drops),
                "samplers": {t.name: [t.support_sampler.state(), t.query_sampler.state()] for t in tasks}}

    session.begin()
    for step in range(session.start_step, total_steps):
        lr = set_lr(outer_opt, outer_lr, step, warmup_steps)
        chosen = sample_tasks(task_rng, tasks, meta_batch_size, task_counts)
        drawn = [(t.name, *t.draw(num_inner_steps, inner_batch_size, query_batch_size, algorithm == "fomaml"))
                 for t in chosen]
        steps = outer_step(model, outer_opt, drawn, algorithm=algorithm, inner_lr=inner_lr,
                           inner_kind=inner_kind, clip_grad=clip_grad, micro=micro, check_at=step + 1)
        consumed = [e for _, support, query in drawn for batch in support for e in batch] + \
                   [e for _, _, query in drawn for e in query]
        for name, support, query in drawn:
            session.budget.add([e for batch in support for e in batch] + list(query), task=name)
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
        row["inner_drop"] = sum(s.inner_drop for s in steps) / len(steps)
        if guard.observe(row["inner_drop"]) and not guard.adapted:
            log.warning("%s", guard.message())
        row["tasks"] = {s.name: {"support_loss_pre": s.support_loss_pre, "support_loss_post": s.support_loss_post,
                                 "inner_drop": s.inner_drop, "query_loss": s.query_loss,
                                 "adaptation_gap": None if s.query_loss is None else abs(s.query_loss - s.support_loss_post)}
                        for s in steps}
        session.end_step(step + 1, row, extra_state)
    if len(guard.drops) < guard.steps and guard.adapted is False:
        log.warning("%s (the run ended before meta.inner_drop_steps=%d)", guard.message(), guard.steps)
