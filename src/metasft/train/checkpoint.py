"""Atomic, resumable checkpoints: adapter, optimizer state, RNG states, data position, step.

    checkpoints/step_000500/adapter.safetensors   whole adapter tensors (gathered under FSDP)
    checkpoints/step_000500/optimizer_rank0.pt    each rank's optimizer state (tensors and plain data)
    checkpoints/step_000500/state.json            step, samplers, RNGs, budget counters, best val
A checkpoint directory appears only when complete (written to a temp directory, then renamed). While a
run runs it keeps the newest max(trainer.keep_checkpoints, 1), enough to resume; once it has finished,
the newest trainer.keep_checkpoints (0: none, the adapters are the result; 1 or more: it can be extended).
Nothing is unpickled: `.pt` files load with `weights_only=True`, so a checkpoint from someone else's
run directory cannot run code (issue 13).
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from metasft.errors import MetasftError
from metasft.rundir import atomic_dir, strict_json
from metasft.train.distributed import World, copy_full_into, full_tensor

STEP_DIR = re.compile(r"^step_(\d{6,})$")
STEP_NAMES = r"step_\d{6,}"  # for rundir.remove_stale_temps
log = logging.getLogger(__name__)


class CheckpointError(MetasftError, RuntimeError):
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
                _write(tmp, tensors, state, optimizer)
        dist.barrier()
        if not world.main:
            torch.save(optimizer.state_dict(), path / f"optimizer_rank{world.rank}.pt")
        dist.barrier()
        return path
    with atomic_dir(path) as tmp:
        _write(tmp, tensors, state, optimizer)
    return path


def _write(tmp: Path, tensors: dict, state: dict, optimizer) -> None:
    save_file(tensors, str(tmp / "adapter.safetensors"))
    (tmp / "state.json").write_text(json.dumps(strict_json(state), allow_nan=False))  # inf as "inf"
    torch.save(optimizer.state_dict(), tmp / "optimizer_rank0.pt")


def steps(ckpt_root: Path) -> list[Path]:
    """Checkpoint directories under `ckpt_root`, newest first."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    found = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)))
    return [p for _, p in reversed(found)]


def latest(ckpt_root: Path) -> Path | None:
    found = steps(ckpt_root)
    return found[0] if found else None


def prune(ckpt_root: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints under `ckpt_root` (0: every one, and the then
    empty `ckpt_root`). Only step directories are touched: whatever else is there stays."""
    for p in steps(ckpt_root)[keep:]:
        old = p.with_name(f".{p.name}.old")  # a kill mid-delete leaves a name the next start removes
        os.replace(p, old)
        shutil.rmtree(old, ignore_errors=True)
    root = Path(ckpt_root)
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()


def _torch_load(path: Path):
    """`torch.load` that unpickles tensors and plain data only; anything else is refused."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        if "global" in str(e).lower():  # "Unsupported global: GLOBAL os.system ..."
            raise CheckpointError(f"{path} holds pickled Python objects, not only tensors and plain data; "
                                  f"refused (loading it could run code). Was it written by metasft?") from None
        raise


def _read(path: Path, rank: int) -> tuple[dict, dict, dict]:
    """(adapter tensors, state, optimizer state) of checkpoint `path`, read and parsed."""
    try:
        tensors = load_file(str(path / "adapter.safetensors"))
        if (path / "state.json").is_file() or not (path / "state.pt").is_file():
            state = json.loads((path / "state.json").read_text())
        else:
            state = _torch_load(path / "state.pt")  # checkpoints written before state.json
        opt_state = _torch_load(path / f"optimizer_rank{rank}.pt")
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint {path} is incomplete: {Path(e.filename).name} is missing") from None
    except CheckpointError:
        raise
    except Exception as e:  # safetensors / JSON / zip errors on a corrupt file
        raise CheckpointError(f"checkpoint {path} is corrupt: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or not isinstance(opt_state, dict):
        raise CheckpointError(f"checkpoint {path} is corrupt: its state is not a mapping")
    return tensors, state, opt_state


def load(path: Path, named_params, optimizer, world: World) -> dict:
    """Restore adapter and optimizer in place from checkpoint `path`; return its saved state."""
    path = Path(path)
    tensors, state, opt_state = _read(path, world.rank)
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
