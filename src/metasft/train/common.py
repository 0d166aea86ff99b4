"""Pieces both training loops share: the model under training, its loss and backward, the optimizer."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn

from metasft.errors import MetasftError
from metasft.train.batching import Example, collate
from metasft.train.distributed import World, all_reduce_sum, average_grads


class NonFiniteLoss(MetasftError, RuntimeError):
    """The loss became NaN or infinite; the message names the step, task and batch."""


@dataclass
class TrainModel:
    """The loss module (possibly FSDP-sharded), its trainable adapter parameters, and where it runs."""
    loss_module: nn.Module
    params: list[nn.Parameter]
    world: World
    pad_id: int
    bf16: bool = False

    def _autocast(self):
        if self.bf16 and self.world.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _run(self, examples: list[Example], micro: int, backward: bool) -> tuple[float, int]:
        """Global token-mean loss over `examples` (split across ranks), optionally back-propagated."""
        mine = self.world.shard(examples)
        batches = [collate(mine[i:i + micro], self.pad_id).to(self.world.device) for i in range(0, len(mine), micro)]
        n_global = all_reduce_sum(sum(b.n_response for b in batches), self.world)
        total = 0.0
        for b in batches:
            with self._autocast():
                loss_sum, _ = self.loss_module(b.input_ids, b.attention_mask, b.labels)
            if backward:
                # FSDP2 and average_grads divide by the world size: scale so the result is the global mean
                (loss_sum * (self.world.size / n_global)).backward()
            total += float(loss_sum.detach())
        if backward:
            average_grads(self.params, self.world)
        return all_reduce_sum(total, self.world) / n_global, int(n_global)

    def backward(self, examples: list[Example], micro: int) -> tuple[float, int]:
        """Accumulate d(mean response CE)/dθ into .grad; return (loss, response tokens)."""
        return self._run(examples, micro, backward=True)

    @torch.no_grad()
    def loss(self, examples: list[Example], micro: int) -> float:
        return self._run(examples, micro, backward=False)[0]

    @torch.no_grad()
    def example_losses(self, examples: list[Example], micro: int) -> list[tuple[float, int]]:
        """(summed response CE, response tokens) of each example, in order; one process only (the
        evaluator's). The token-mean loss of the set is sum(sums) / sum(tokens)."""
        if self.world.distributed:
            raise RuntimeError("example_losses runs in one process; shard the examples outside")
        out = []
        for i in range(0, len(examples), micro):
            b = collate(examples[i:i + micro], self.pad_id).to(self.world.device)
            with self._autocast():
                sums, counts = self.loss_module(b.input_ids, b.attention_mask, b.labels, per_row=True)
            out += [(float(s), int(c)) for s, c in zip(sums.tolist(), counts.tolist())]
        return out

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def check_finite(loss: float, where: str) -> None:
    if not math.isfinite(loss):
        raise NonFiniteLoss(f"non-finite loss {loss} at {where}; the last good checkpoint is kept")


def outer_optimizer(params: list[nn.Parameter], kind: str, lr: float, weight_decay: float, betas: list[float]):
    """The outer (and SFT) optimizer, `optim.optimizer_type`: AdamW (decoupled weight decay, the
    design's) or Adam (weight decay as an L2 term in the gradient)."""
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[kind.lower()]
    return cls(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas))


def set_lr(optimizer, base_lr: float, step: int, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then constant; returns the lr set."""
    lr = base_lr * min(1.0, (step + 1) / warmup) if warmup > 0 else base_lr
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr

