"""Data parallelism under torchrun: FSDP2 (`fully_shard`) or replicated weights with all-reduced grads.

Both keep one invariant the method needs: the loss a rank back-propagates is its share of the *global*
token-mean, so the averaged gradient equals the single-process gradient of the same global batch, and
a task's inner loop sees that task's gradient only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")
    fsdp: bool = False

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        """This rank's share of a global batch (contiguous, so ranks together cover it once)."""
        if not self.distributed:
            return items
        per, extra = divmod(len(items), self.size)
        start = self.rank * per + min(self.rank, extra)
        return items[start:start + per + (1 if self.rank < extra else 0)]


def init_world(device: str = "auto", fsdp: bool = False) -> World:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on CPU), or run alone."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("trainer.device=cuda but no CUDA device is available; use trainer.device=cpu")
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(device=torch.device("cuda" if use_cuda else "cpu"), fsdp=False)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    rank = dist.get_rank()
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    return World(rank=rank, size=dist.get_world_size(), device=dev, fsdp=fsdp)


def wrap(loss_module: nn.Module, world: World) -> nn.Module:
    """Shard with FSDP2 when asked (each decoder layer, then the root); else leave replicated."""
    if world.distributed and world.fsdp:
        from torch.distributed.fsdp import fully_shard
        for layer in loss_module.modules():
            if type(layer).__name__.endswith("DecoderLayer"):
                fully_shard(layer)
        fully_shard(loss_module)
    return loss_module


def all_reduce_sum(value: float, world: World) -> float:
    if not world.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return float(t.item())


def average_grads(params: list[nn.Parameter], world: World) -> None:
    """Replicated data parallel: mean of the ranks' gradients (FSDP2 reduces its own)."""
    if not world.distributed or world.fsdp:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world.size)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor, gathered if it is an FSDP2 shard (DTensor)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def copy_full_into(param: torch.Tensor, full: torch.Tensor) -> None:
    """Copy a whole tensor into a parameter, taking this rank's shard when it is a DTensor."""
    with torch.no_grad():
        if hasattr(param, "device_mesh"):
            from torch.distributed.tensor import distribute_tensor
            param.copy_(distribute_tensor(full.to(param.dtype), param.device_mesh, param.placements))
        else:
            param.copy_(full)
