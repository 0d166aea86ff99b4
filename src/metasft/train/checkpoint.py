"""Atomic, resumable checkpoints: adapter, optimizer state, RNG states, data position, step.

    checkpoints/step_000500/adapter.safetensors   whole adapter tensors (gathered under FSDP)
    checkpoints/step_000500/optimizer_rank0.pt    each rank's optimizer state
    checkpoints/step_000500/state.pt              step, samplers, RNGs, budget counters, best val
A checkpoint directory appears only when complete (written to a temp directory, then renamed).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from metasft.rundir import atomic_dir
from metasft.train.distributed import World, copy_full_into, full_tensor

STEP_DIR = re.compile(r"^step_(\d{6,})$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not fit the model being resumed."""


def adapter_tensors(named_params: list[tuple[str, torch.nn.Parameter]]) -> dict[str, torch.Tensor]:
    """Whole adapter tensors on CPU keyed by name (a collective under FSDP: every rank calls it)."""
    return {n: full_tensor(p.detach()).cpu().contiguous() for n, p in named_params}


def save(ckpt_root: Path, step: int, named_params, optimizer, state: dict, world: World) -> Path:
    """Write checkpoint `step` atomically; every rank calls it (adapters are gathered collectively)."""
    tensors = adapter_tensors(named_params)
    path = Path(ckpt_root) / f"step_{step:06d}"
    if world.distributed:
        # rank 0 owns the directory; other ranks write their optimizer shards into it afterwards
        import torch.distributed as dist
        if world.main:
            with atomic_dir(path) as tmp:
                save_file(tensors, str(tmp / "adapter.safetensors"))
                torch.save(state, tmp / "state.pt")
                torch.save(optimizer.state_dict(), tmp / "optimizer_rank0.pt")
        dist.barrier()
        if not world.main:
            torch.save(optimizer.state_dict(), path / f"optimizer_rank{world.rank}.pt")
        dist.barrier()
        return path
    with atomic_dir(path) as tmp:
        save_file(tensors, str(tmp / "adapter.safetensors"))
        torch.save(state, tmp / "state.pt")
        torch.save(optimizer.state_dict(), tmp / "optimizer_rank0.pt")
    return path


def latest(ckpt_root: Path) -> Path | None:
    root = Path(ckpt_root)
    if not root.is_dir():
        return None
    steps = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)))
    return steps[-1][1] if steps else None


def load(path: Path, named_params, optimizer, world: World) -> dict:
    """Restore adapter and optimizer in place from checkpoint `path`; return its saved state."""
    path = Path(path)
    try:
        tensors = load_file(str(path / "adapter.safetensors"))
        state = torch.load(path / "state.pt", weights_only=False)
        opt_state = torch.load(path / f"optimizer_rank{world.rank}.pt", weights_only=False)
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint {path} is incomplete: {e.filename} is missing") from None
    except Exception as e:  # safetensors / pickle errors on a corrupt file
        raise CheckpointError(f"checkpoint {path} is corrupt: {type(e).__name__}: {e}") from None
    names = [n for n, _ in named_params]
    if sorted(tensors) != sorted(names):
        raise CheckpointError(f"checkpoint {path} does not fit this model: its adapter has "
                              f"{len(tensors)} tensors, the model {len(names)} (different LoRA settings?)")
    for n, p in named_params:
        if tuple(tensors[n].shape) != tuple(p.shape):
            raise CheckpointError(f"checkpoint {path}: {n} has shape {tuple(tensors[n].shape)}, "
                                  f"the model {tuple(p.shape)} (different model.lora_rank?)")
    for n, p in named_params:
        copy_full_into(p, tensors[n])
    try:
        optimizer.load_state_dict(opt_state)
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {path}: optimizer state does not fit: {e}") from None
    return state
