"""The models an evaluation compares: `eval.models` entries parsed into specs, and their PEFT adapters
read and checked against the evaluator's LoRA (rank, alpha, target modules, every tensor's shape)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from metasft import arms
from metasft.config import ConfigError, load_config
from metasft.errors import MetasftError
from metasft.rundir import ADAPTER_DIR, BEST_ADAPTER_DIR, CONFIG_FILE, FRESH_LORA_FILE, file_sha256

ADAPTER_NAME = "default"          # PEFT's adapter name inside parameter names


class EvalError(MetasftError, RuntimeError):
    """Bad evaluation input: an unknown task or model, an adapter that does not fit, a missing file."""


@dataclass
class ModelSpec:
    """A model to evaluate: the base model plus this LoRA adapter.

    `adapter`: a PEFT adapter directory, a hub id of one, a run's fresh_lora.json (the base arm: a
    fresh LoRA built from the seed it records), or None for a fresh LoRA at the evaluation's seed
    (B = 0, i.e. the base model). `tasks` restricts the model to some eval tasks (None: all);
    `zero_shot_only` to their 0-shot cells (an arm's `zero_shot_only`: Baseline 2).
    """
    name: str
    adapter: Path | str | None = None
    tasks: list[str] | None = None
    zero_shot_only: bool = False

    @property
    def key(self) -> str:
        """Identifies the adapter: specs may share a name (one per task, see `check_names`)."""
        return "fresh" if self.adapter is None else str(self.adapter)


def check_names(specs: list[ModelSpec]) -> None:
    """A name may repeat only across specs restricted to disjoint tasks: the task-specific SFT runs
    (one per eval task) together form one model, "sft_task"."""
    by_name: dict[str, list[ModelSpec]] = {}
    for s in specs:
        by_name.setdefault(s.name, []).append(s)
    for name, group in by_name.items():
        if len(group) == 1:
            continue
        tasks = [t for s in group for t in (s.tasks or ["<all tasks>"])]
        if any(s.tasks is None for s in group) or len(set(tasks)) != len(tasks):
            raise ConfigError(f"eval.models: the name {name!r} is used by {len(group)} models whose tasks "
                              f"overlap ({tasks}); name them explicitly as name=path")


def parse_model_specs(entries: list[str]) -> list[ModelSpec]:
    """`eval.models` entries -> specs. An entry is "base", a run directory (its `adapter_best/` when
    present, else `adapter/`, else the base arm's fresh_lora.json; named by its config's `arm`,
    restricted to `data.sft_task` for the arm sft_task and to 0-shot cells for a `zero_shot_only` arm),
    a PEFT adapter directory, or a hub id of a PEFT adapter. "name=entry" sets the name."""
    specs = []
    for entry in entries:
        name, sep, target = entry.partition("=")
        if not sep:
            name, target = "", entry
        specs.append(_parse_one(name.strip(), target.strip()))
    check_names(specs)
    return specs


def _parse_one(name: str, target: str) -> ModelSpec:
    if target == "base":
        return ModelSpec(name or "base", None)
    path = Path(os.path.expanduser(target))
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            return ModelSpec(name or path.name, path)
        adapter = next((path / d for d in (BEST_ADAPTER_DIR, ADAPTER_DIR)
                        if (path / d / "adapter_config.json").is_file()), None)
        if adapter is None and (path / FRESH_LORA_FILE).is_file():
            adapter = path / FRESH_LORA_FILE
        if adapter is None:
            raise ConfigError(f"eval.models: {target} has no adapter_best/ or adapter/ with adapter_config.json, "
                              f"nor a {FRESH_LORA_FILE}")
        tasks = None
        arm = path.name
        if (path / CONFIG_FILE).is_file():
            run_cfg = load_config(path / CONFIG_FILE)  # a run's resolved config: the arm and its task
            arm = run_cfg.arm
            if arm == "sft_task" and run_cfg.data.sft_task:
                tasks = [run_cfg.data.sft_task]
        return ModelSpec(name or arm, adapter, tasks, arm in arms.ARMS and arms.ARMS[arm].zero_shot_only)
    if target.count("/") == 1 and not target.startswith((".", "/", "~")):
        return ModelSpec(name or target.split("/")[-1], target)  # hub id, fetched when loaded
    raise ConfigError(f"eval.models: {target!r} is neither 'base', an existing directory nor a hub id")


def is_fresh_lora(adapter: Path | str | None) -> bool:
    """`adapter` is a run's fresh_lora.json (a fresh LoRA recorded by its seed, not stored)."""
    return adapter is not None and Path(adapter).name == FRESH_LORA_FILE and Path(adapter).is_file()


def read_fresh_lora(path: Path) -> dict:
    """A run's fresh_lora.json (models.fresh_lora_record), checked."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise EvalError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    want = {"seed": int, "lora_rank": int, "lora_alpha": int, "target_modules": list}
    bad = [k for k, kind in want.items() if not isinstance(record, dict) or not isinstance(record.get(k), kind)
           or isinstance(record.get(k), bool)]
    if bad:
        raise EvalError(f"{path}: not a fresh-LoRA record: {', '.join(bad)} missing or of the wrong type "
                        f"(expected integers seed, lora_rank, lora_alpha and a list target_modules)")
    return record


def _adapter_dir(adapter: Path | str) -> Path:
    path = Path(adapter)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download
    return Path(snapshot_download(str(adapter), allow_patterns=["adapter_config.json", "adapter_model.safetensors"]))


def check_lora_settings(path: Path, rank: int, alpha: int, target_modules) -> None:
    """Raise EvalError if the adapter in directory `path` (or the fresh LoRA `path` records) has
    other LoRA settings than model.*."""
    if is_fresh_lora(path):
        record = read_fresh_lora(path)
        theirs = {"r": record["lora_rank"], "lora_alpha": record["lora_alpha"],
                  "target_modules": sorted(record["target_modules"])}
    else:
        try:
            config = json.loads((path / "adapter_config.json").read_text())
        except (OSError, ValueError) as e:
            raise EvalError(f"adapter {path}: unreadable adapter_config.json ({type(e).__name__}: {e})") from None
        theirs = {"r": config.get("r"), "lora_alpha": config.get("lora_alpha"),
                  "target_modules": sorted(config.get("target_modules") or [])}
    mine = {"r": rank, "lora_alpha": alpha, "target_modules": sorted(target_modules)}
    if theirs != mine:
        diff = ", ".join(f"model.{k if k != 'r' else 'lora_rank'}={mine[k]} but the adapter has {theirs[k]}"
                         for k in mine if mine[k] != theirs[k])
        raise EvalError(f"adapter {path}: LoRA settings differ from the config: {diff}")


def read_peft_adapter(adapter: Path | str, model) -> dict[str, torch.Tensor]:
    """A PEFT adapter (directory or hub id) as a state dict keyed like `model`'s LoRA parameters.

    Checks that its rank, alpha and target modules are the model's and that the tensors match
    one to one in name and shape, so no weight is silently left at its initial value. A fresh_lora.json
    is built at its seed (models.fresh_lora_state), as the run that recorded it had it.
    """
    ours = model.peft_config[ADAPTER_NAME]
    if is_fresh_lora(adapter):
        check_lora_settings(Path(adapter), ours.r, ours.lora_alpha, ours.target_modules)
        from metasft.models import fresh_lora_state
        return fresh_lora_state(model, read_fresh_lora(Path(adapter))["seed"])
    path = _adapter_dir(adapter)
    check_lora_settings(path, ours.r, ours.lora_alpha, ours.target_modules)
    try:
        tensors = load_file(str(path / "adapter_model.safetensors"))
    except Exception as e:  # missing, truncated or not safetensors at all
        raise EvalError(f"adapter {adapter}: adapter_model.safetensors is unreadable ({type(e).__name__}: {e})") from None
    params = dict(model.named_parameters())
    by_saved = {n.replace(f".{ADAPTER_NAME}.", "."): n for n, p in params.items() if p.requires_grad}
    missing, unknown = sorted(set(by_saved) - set(tensors)), sorted(set(tensors) - set(by_saved))
    if missing or unknown:
        raise EvalError(f"adapter {adapter} does not fit the model: missing {missing[:3]}, unexpected {unknown[:3]}")
    state = {}
    for saved, name in by_saved.items():
        if tensors[saved].shape != params[name].shape:
            raise EvalError(f"adapter {adapter}: {saved} has shape {tuple(tensors[saved].shape)}, "
                            f"the model {tuple(params[name].shape)}")
        state[name] = tensors[saved].to(params[name].dtype)
    return state


def adapter_fingerprint(spec: ModelSpec, seed: int) -> str:
    if spec.adapter is None:
        return f"fresh LoRA, seed {seed}"
    if is_fresh_lora(spec.adapter):
        return f"fresh LoRA, seed {read_fresh_lora(Path(spec.adapter))['seed']}"
    path = _adapter_dir(spec.adapter)
    return f"sha256:{file_sha256(path / 'adapter_model.safetensors')}"
