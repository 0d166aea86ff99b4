"""What both training loops need around the method: budget accounting, metrics sinks, validation with
checkpoint selection, periodic resumable checkpoints and the progress bar."""
from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from metasft.data.records import DataError
from metasft.progress import Bar
from metasft.rundir import BEST_ADAPTER_DIR, CHECKPOINTS_DIR, METRICS_FILE, STEP_LOG, JsonlWriter, atomic_dir
from metasft.train import checkpoint
from metasft.train.batching import Example
from metasft.train.common import TrainModel

log = logging.getLogger(__name__)
step_log = logging.getLogger(STEP_LOG)  # train.log only (rundir.stage_log)


@dataclass
class Budget:
    """What a run consumed; written to its manifest so paired runs can be checked for equal budgets."""
    examples: int = 0
    distinct: set = field(default_factory=set)
    tokens: int = 0
    response_tokens: int = 0
    optimizer_steps: int = 0
    inner_steps: int = 0
    per_task: Counter = field(default_factory=Counter)  # task name -> examples processed

    def add(self, examples: list[Example], task: str | list[str]) -> None:
        """Count `examples`, all from `task`, or from `task[i]` each."""
        self.per_task.update([task] * len(examples) if isinstance(task, str) else task)
        self.examples += len(examples)
        self.distinct.update(e.id for e in examples)
        self.tokens += sum(len(e.input_ids) for e in examples)
        self.response_tokens += sum(e.n_response for e in examples)

    def summary(self) -> dict:
        return {"examples": self.examples, "distinct_examples": len(self.distinct), "tokens": self.tokens,
                "response_tokens": self.response_tokens, "optimizer_steps": self.optimizer_steps,
                "inner_steps": self.inner_steps, "examples_per_task": dict(sorted(self.per_task.items()))}

    def state(self) -> dict:
        return {**self.summary(), "distinct": sorted(self.distinct)}

    @classmethod
    def from_state(cls, s: dict) -> "Budget":
        return cls(s["examples"], set(s["distinct"]), s["tokens"], s["response_tokens"],
                   s["optimizer_steps"], s["inner_steps"], Counter(s["examples_per_task"]))


class Sinks:
    """metrics.jsonl always; TensorBoard and W&B when listed in trainer.loggers (rank 0 only)."""

    def __init__(self, out: Path, loggers: list[str], enabled: bool, config: dict):
        self.jsonl = JsonlWriter(out / METRICS_FILE) if enabled else None
        self.tb = self.wandb = None
        if enabled and "tensorboard" in loggers:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise RuntimeError("trainer.loggers has tensorboard but it is not installed: "
                                   "pip install 'metasft[tensorboard]'") from e
            self.tb = SummaryWriter(str(out / "tensorboard"))
        if enabled and "wandb" in loggers:
            try:
                import wandb
            except ImportError as e:
                raise RuntimeError("trainer.loggers has wandb but it is not installed: pip install wandb") from e
            self.wandb = wandb.init(project="metasft", dir=str(out), config=config, resume="allow")

    def write(self, row: dict) -> None:
        if self.jsonl:
            self.jsonl.write(row)
        scalars = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
        if self.tb:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, row["step"])
        if self.wandb:
            self.wandb.log(scalars, step=row["step"])

    def close(self) -> None:
        if self.jsonl:
            self.jsonl.close()
        if self.tb:
            self.tb.close()
        if self.wandb:
            self.wandb.finish()


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines logged after the checkpoint a run resumes from (they will be logged again).

    A last line cut short by a kill is dropped too; a malformed line elsewhere is an error.
    """
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    keep = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError) as e:
            if i == len(lines):
                log.warning("%s: dropping its last line, cut short when the run was killed", path)
                continue
            raise DataError(f"{path}:{i}: not a metrics line ({type(e).__name__}: {e}); "
                            f"repair or delete that line to resume") from None
        if step <= last_step:
            keep.append(line)
    # in place, not by rename: the run's open append-mode writer must keep pointing at this file
    with open(path, "r+", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in keep))
        f.truncate()


def rng_from_json(state: list) -> tuple:
    """random.getstate() back from its JSON form (tuples stored as lists)."""
    return (state[0], tuple(state[1]), state[2])


class Session:
    """Validation, checkpoints and logging for one run, shared by the SFT and meta loops."""

    def __init__(self, *, out: Path, model: TrainModel, named_params, optimizer, sinks: Sinks,
                 save_freq: int, test_freq: int, total_steps: int, val_fn, save_adapter, select_by: str,
                 log_freq: int = 1, keep_checkpoints: int = 0, label: str = "train"):
        """`select_by`: the key of `val_fn()`'s result whose lowest value picks adapter_best;
        `keep_checkpoints`: while the run runs, the newest max(N, 1) checkpoints are kept (what a resume
        needs); `train.run` prunes to the newest N once it has finished; `label`: the progress bar's
        name (`train fomaml`)."""
        self.out, self.model, self.named_params, self.optimizer = out, model, named_params, optimizer
        self.sinks, self.save_freq, self.test_freq, self.total_steps = sinks, save_freq, test_freq, total_steps
        self.log_freq = log_freq
        self.val_fn, self.save_adapter, self.select_by = val_fn, save_adapter, select_by
        self.keep_checkpoints, self.label = keep_checkpoints, label
        self.best: dict = {"metric": select_by, "value": float("inf"), "step": None}
        self.budget = Budget()
        self.start_step = 0
        self.bar = None
        self._t = time.perf_counter()
        self._tokens_since = 0

    # ------------------------------------------------------------------ resume
    def resume(self, extra_load) -> None:
        """Continue from the newest checkpoint that loads; warn about each newer one that does not."""
        candidates = checkpoint.steps(self.out / CHECKPOINTS_DIR)
        if not candidates:
            if (self.out / METRICS_FILE).exists() and (self.out / METRICS_FILE).stat().st_size:
                log.info("no checkpoint in %s; starting again from step 0", self.out)
                if self.model.world.main:
                    truncate_metrics(self.out / METRICS_FILE, -1)  # step 0 is validated again
            return
        errors = []
        for path in candidates:
            try:
                state = checkpoint.load(path, self.named_params, self.optimizer, self.model.world)
            except checkpoint.CheckpointError as e:
                errors.append(str(e))
                log.warning("%s; trying the previous checkpoint", e)
                continue
            break
        else:
            raise checkpoint.CheckpointError(f"no usable checkpoint in {self.out / CHECKPOINTS_DIR}: {errors[0]}"
                                             + (f" (and {len(errors) - 1} older ones fail too)" if len(errors) > 1 else ""))
        self.start_step = state["step"]
        self.budget = Budget.from_state(state["budget"])
        self.best = {**state["best"], "value": float(state["best"]["value"])}  # stored "inf" before any validation
        torch.set_rng_state(torch.as_tensor(state["torch_rng"], dtype=torch.uint8))
        random.setstate(rng_from_json(state["python_rng"]))
        extra_load(state["extra"])
        if self.model.world.main:
            truncate_metrics(self.out / METRICS_FILE, self.start_step)
        log.info("resumed from %s (step %d)", path, self.start_step)

    # ------------------------------------------------------------------ per step
    def begin(self) -> None:
        self.bar = Bar(self.label, self.total_steps, initial=self.start_step, enabled=self.model.world.main)
        if self.start_step == 0 and self.test_freq:
            if self.model.world.main:  # minutes on a large model, before the bar's first step
                log.info("%s: validating the untrained adapter (step 0) before the first step", self.label)
            # the untrained adapter's validation loss: the baseline every later value is read against
            row = {"step": 0, "time": time.time(), **self.validate(0)}
            self.sinks.write(row)
            self.log_line(row)
        self._t = time.perf_counter()

    def tokens_per_s(self, tokens: int) -> float:
        now = time.perf_counter()
        rate = tokens / max(now - self._t, 1e-9)
        self._t = now
        return rate

    def end_step(self, step: int, row: dict, extra_state) -> None:
        """Log step `step` (1-based), validate and checkpoint when due."""
        row = {"step": step, "time": time.time(), **row}
        if self.test_freq and (step % self.test_freq == 0 or step == self.total_steps):
            row.update(self.validate(step))
        self.sinks.write(row)
        if (self.log_freq and step % self.log_freq == 0) or step == self.total_steps or "val_loss" in row:
            self.log_line(row)
        if self.bar:
            shown = [f"{k} {row[k]:.3f}" for k in ("loss", "query_loss", "val_loss") if row.get(k) is not None]
            self.bar.update(1, note=", ".join([*shown, f"{row.get('tokens_per_s', 0):.0f} tok/s"]))
        # the last step too: a finished run can be extended (trainer.total_steps) from where it ended
        if self.save_freq and (step % self.save_freq == 0 or step == self.total_steps):
            self.checkpoint(step, extra_state())

    def log_line(self, row: dict) -> None:
        """One train.log line: `step 40/500 loss 1.2345 tok/s 812 lr 2e-05` (+ validation when it ran).
        Written every trainer.log_freq steps, at the last step and at every validation."""
        parts = [f"step {row['step']}/{self.total_steps}"]
        for key, name, fmt in (("loss", "loss", ".4f"), ("tokens_per_s", "tok/s", ".0f"), ("lr", "lr", ".3g"),
                               ("val_loss", "val_loss", ".4f"), ("val_loss_adapted", "val_loss_adapted", ".4f")):
            if isinstance(row.get(key), (int, float)):
                parts.append(f"{name} {row[key]:{fmt}}")
        step_log.info("  ".join(parts))

    def validate(self, step: int) -> dict:
        """Validate; the adapter with the lowest `select_by` so far becomes adapter_best (step 0 included:
        the untrained adapter is the baseline a run must beat, and `best_at_step_0` says when none did)."""
        metrics = self.val_fn()
        value = metrics.get(self.select_by)
        if value is not None and math.isfinite(value) and value < self.best["value"]:
            self.best = {"metric": self.select_by, "value": value, "step": step, "val_loss": metrics["val_loss"]}
            self.save_adapter(self.out / BEST_ADAPTER_DIR)
        return metrics

    def best_at_step_0(self) -> str | None:
        """A warning when the selected checkpoint is the untrained step-0 adapter, else None."""
        if self.best["step"] != 0:
            return None
        return (f"adapter_best is the step-0 adapter (untrained): {self.select_by} never fell below its step-0 "
                f"value {self.best['value']:.4f} at any later validation, so this run evaluates as the base model")

    def checkpoint(self, step: int, extra: dict) -> None:
        state = {"step": step, "budget": self.budget.state(), "best": self.best, "extra": extra,
                 "torch_rng": torch.get_rng_state().tolist(), "python_rng": random.getstate()}
        checkpoint.save(self.out / CHECKPOINTS_DIR, step, self.named_params, self.optimizer, state,
                        self.model.world)
        if self.model.world.main:
            checkpoint.prune(self.out / CHECKPOINTS_DIR, max(self.keep_checkpoints, 1))

    def close(self) -> None:
        if self.bar:
            self.bar.close()
        self.sinks.close()


def save_peft_adapter(peft_model, named_params, path: Path, world, prefix: str = "lm.") -> None:
    """Save the adapter in PEFT format (`PeftModel.from_pretrained` loads it), atomically, on rank 0."""
    tensors = checkpoint.adapter_tensors(named_params)
    if not world.main:
        return
    state = {n[len(prefix):] if n.startswith(prefix) else n: t for n, t in tensors.items()}
    with atomic_dir(Path(path)) as tmp:
        peft_model.save_pretrained(str(tmp), state_dict=state)
