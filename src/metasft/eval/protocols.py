"""Evaluation protocols of the design and the `metasft eval` entry point.

Protocol A, few-shot learning curves (`evaluate_few_shot_learning_curve`): for each model × eval task
× n_shots × seed, take n shots from the task's pool, fine-tune the model's LoRA adapter on them with
AdamW for `eval.adaptation_steps` steps, and evaluate on the task's test items at each step of
`eval.record_steps` (0 and the last always included). 0-shot is the model as it is: one cell at step
0 stored with seed 0 (greedy decoding is deterministic).

Protocol B, cross-task zero-shot: the 0-shot cells of the tasks flagged `unseen` in the data manifest,
read from protocol A's results (`cross_task_zero_shot`), and the task-distance vs transfer points of
the design's transfer plot (`transfer_points`).

Paired design: shots and adaptation batches are drawn with seeds that depend only on (task, n_shots,
seed), so every model adapts on the same examples in the same order. One base model and one LoRA
wrapper are built per process; each model's adapter is copied into the LoRA tensors in place.

Evaluation at one step (`evaluate_step`): greedy generation and grading (accuracy, reasoning steps,
step correctness against the record's `steps`), the token-mean response cross-entropy of the
reference solutions, and for multiple-choice questions the option log-likelihood accuracy: after the
chat prompt the assistant turn is prefilled with "The answer is (" and the option letters "A", "B",
... are compared by log P(letter | prompt + "The answer is ("): MMLU's letter scoring (Hendrycks et
al. 2021 score " A" after "Answer:"), with the parenthesis of the prompt's "(A) ..." option list so
that each letter is one token; one forward pass per question.

Work is split in groups (model, task, n_shots, seed), enumerated in a fixed order: 0-shot groups
first, then few-shot ones. Under torchrun, rank r takes groups i with i % world_size == r. A group's
rows are written in one transaction with its `done` mark, so a rerun skips finished groups. Step 0 of
a few-shot group is the model's 0-shot evaluation: reused from memory or from the store, computed
only when neither has it. A model's pending 0-shot groups are evaluated together
(`evaluate_steps`): the questions of all tasks share generation batches.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file
from tqdm import tqdm

from metasft.config import Config, ConfigError, save_config
from metasft.data.formats import chat_text
from metasft.data.records import Record
from metasft.data.store import read_sft
from metasft.eval.generate import HFBackend, LoraMerger, eval_mode
from metasft.eval.results import RESULTS_FILE, ResultsStore
from metasft.eval.scoring import Grader, acc_at_k, reasoning_steps, step_correctness
from metasft.models import adapter_parameters, adapter_state, add_lora, load_adapter_state, load_base
from metasft.rundir import file_sha256, read_json
from metasft.train.batching import Example, Sampler, tokenize
from metasft.train.common import TrainModel, check_finite
from metasft.train.distributed import World
from metasft.train.loss import ResponseLoss

log = logging.getLogger(__name__)

ADAPTER_NAME = "default"          # PEFT's adapter name inside parameter names
CHOICE_PREFILL = "The answer is ("
LETTERS = "ABCDEFGHIJ"


class EvalError(RuntimeError):
    """Bad evaluation input: an unknown task or model, an adapter that does not fit, a missing file."""


# ----------------------------------------------------------------------------------------- models
@dataclass
class ModelSpec:
    """A model to evaluate: the base model plus this LoRA adapter.

    `adapter`: a PEFT adapter directory, a hub id of one, or None for a freshly initialised LoRA
    (B = 0, i.e. the base model). `tasks` restricts the model to some eval tasks (None: all).
    """
    name: str
    adapter: Path | str | None = None
    tasks: list[str] | None = None

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
    present, else `adapter/`; named by its config's `arm`, restricted to `data.sft_task` for the arm
    sft_task), a PEFT adapter directory, or a hub id of a PEFT adapter. "name=entry" sets the name."""
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
        adapter = next((path / d for d in ("adapter_best", "adapter") if (path / d / "adapter_config.json").is_file()), None)
        if adapter is None:
            raise ConfigError(f"eval.models: {target} has no adapter_best/ or adapter/ with adapter_config.json")
        tasks = None
        arm = path.name
        if (path / "config.yaml").is_file():
            import yaml
            run_cfg = yaml.safe_load((path / "config.yaml").read_text()) or {}
            arm = run_cfg.get("arm", arm)
            sft_task = (run_cfg.get("data") or {}).get("sft_task")
            if arm == "sft_task" and sft_task:
                tasks = [sft_task]
        return ModelSpec(name or arm, adapter, tasks)
    if target.count("/") == 1 and not target.startswith((".", "/", "~")):
        return ModelSpec(name or target.split("/")[-1], target)  # hub id, fetched when loaded
    raise ConfigError(f"eval.models: {target!r} is neither 'base', an existing directory nor a hub id")


def _adapter_dir(adapter: Path | str) -> Path:
    path = Path(adapter)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download
    return Path(snapshot_download(str(adapter), allow_patterns=["adapter_config.json", "adapter_model.safetensors"]))


def read_peft_adapter(adapter: Path | str, model) -> dict[str, torch.Tensor]:
    """A PEFT adapter (directory or hub id) as a state dict keyed like `model`'s LoRA parameters.

    Checks that its rank, alpha and target modules are the model's and that the tensors match
    one to one in name and shape, so no weight is silently left at its initial value.
    """
    path = _adapter_dir(adapter)
    config = json.loads((path / "adapter_config.json").read_text())
    ours = model.peft_config[ADAPTER_NAME]
    theirs = {"r": config.get("r"), "lora_alpha": config.get("lora_alpha"),
              "target_modules": sorted(config.get("target_modules") or [])}
    mine = {"r": ours.r, "lora_alpha": ours.lora_alpha, "target_modules": sorted(ours.target_modules)}
    if theirs != mine:
        raise EvalError(f"adapter {adapter}: LoRA settings {theirs} differ from model.* {mine}")
    tensors = load_file(str(path / "adapter_model.safetensors"))
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
    path = _adapter_dir(spec.adapter)
    return f"sha256:{file_sha256(path / 'adapter_model.safetensors')}"


# ----------------------------------------------------------------------------------------- groups
@dataclass(frozen=True, order=True)
class Group:
    """One (model, task, n_shots, seed): the unit of work, of resumption and of the rank split."""
    model: str
    task: str
    n_shots: int
    seed: int


def enumerate_groups(models: list[ModelSpec], task_shots: dict[str, list[int]], seeds: list[int]) -> list[Group]:
    """Every group in a fixed order: all 0-shot groups (seed 0), then the few-shot ones."""
    def tasks_of(m: ModelSpec) -> list[str]:
        return [t for t in task_shots if m.tasks is None or t in m.tasks]

    zero = [Group(m.name, t, 0, 0) for m in models for t in tasks_of(m) if 0 in task_shots[t]]
    few = [Group(m.name, t, n, s) for m in models for t in tasks_of(m)
           for n in sorted(set(task_shots[t])) if n > 0 for s in seeds]
    return zero + few


def rank_share(groups: list[Group], rank: int, world_size: int) -> list[Group]:
    """Groups i with i % world_size == rank: ranks together take every group exactly once."""
    return [g for i, g in enumerate(groups) if i % world_size == rank]


def _stable_seed(*parts) -> int:
    """A seed from the parts' text (Python's hash() differs between processes)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "big")


def shot_indices(task: str, n_shots: int, seed: int, pool_size: int) -> list[int]:
    """Indices of the n shots into the task's pool; the same for every model (paired design).

    Nested: the first n of one seeded permutation of the pool, so for a seed the 5 shots are among
    the 20 and a learning curve adds examples rather than redrawing them.
    """
    if n_shots > pool_size:
        raise EvalError(f"task {task!r}: {n_shots} shots asked from a pool of {pool_size}")
    order = list(range(pool_size))
    random.Random(_stable_seed("shots", task, seed)).shuffle(order)
    return order[:n_shots]


def recorded_steps(record_steps: list[int], adaptation_steps: int) -> list[int]:
    """The steps evaluated: eval.record_steps within [0, adaptation_steps], plus 0 and the last."""
    return sorted({s for s in record_steps if 0 <= s <= adaptation_steps} | {0, adaptation_steps})


# ----------------------------------------------------------------------------------------- tasks
@dataclass
class TaskData:
    """An eval task read and tokenized once per process."""
    name: str
    records: list[Record]
    prompts: list[str]                 # chat-formatted, generation starts right after
    examples: list[Example]            # prompt + reference response, for the loss
    shots: list[Example]               # the pool of shots, tokenized
    shot_ids: list[str]
    max_new_tokens: int                # the task's, capped by eval.max_new_tokens


def load_task(data_dir: Path, name: str, info: dict, tokenizer, cfg: Config) -> TaskData:
    d = cfg.data
    test_rows = read_sft(data_dir / "data" / "eval" / f"{name}_test.parquet")
    shot_rows = read_sft(data_dir / "data" / "eval" / f"{name}_shots.parquet")
    where = f"{data_dir}/data/eval/{name}"
    records = [Record.from_row({k: v for k, v in r.items() if k not in ("prompt", "response")}, where) for r in test_rows]
    prompts = [chat_text(tokenizer, r["prompt"], None, d.use_chat_template)[0] for r in test_rows]
    kw = dict(max_length=d.max_length, truncation=d.truncation, use_chat_template=d.use_chat_template)
    return TaskData(name=name, records=records, prompts=prompts,
                    examples=tokenize(test_rows, tokenizer, where=f"{where}_test", **kw),
                    shots=tokenize(shot_rows, tokenizer, where=f"{where}_shots", **kw),
                    shot_ids=[r["id"] for r in shot_rows],
                    max_new_tokens=min(info["max_new_tokens"], cfg.eval.max_new_tokens))


# ----------------------------------------------------------------------------------------- one step
@dataclass
class StepResult:
    """One evaluation of the current adapter on a task: the cell's aggregates and one row per question."""
    cell: dict
    predictions: list[dict]


class Evaluator:
    """The base model with one LoRA wrapper, its backend and loss; adapters swapped in place."""

    def __init__(self, cfg: Config, device: torch.device):
        m = cfg.model
        base, self.tokenizer = load_base(m.partial_pretrain, dtype=m.dtype, cache_dir=m.cache_dir)
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)  # the fresh LoRA's A matrices: adaptation of "base" starts there
            self.peft = add_lora(base, rank=m.lora_rank, alpha=m.lora_alpha, dropout=m.lora_dropout,
                                 target_modules=m.target_modules)
        self.peft.to(device)
        self.cfg = cfg
        self.model = TrainModel(ResponseLoss(self.peft), adapter_parameters(self.peft), World(device=device),
                                pad_id=self.tokenizer.pad_token_id)
        self.backend = HFBackend(self.peft, self.tokenizer, batch_size=cfg.eval.batch_size, device=device)
        self.fresh = adapter_state(self.peft)
        self._states: dict[str, dict[str, torch.Tensor]] = {}
        self._merger = LoraMerger(self.peft) if m.dtype == "float32" else None

    def merged(self):
        """Context in which the adapter is folded into the base weights (float32 bases only)."""
        return self._merger() if self._merger is not None else contextlib.nullcontext()

    def load(self, spec: ModelSpec) -> None:
        """Copy `spec`'s adapter into the LoRA tensors (read from disk once per process)."""
        if spec.key not in self._states:
            self._states[spec.key] = (self.fresh if spec.adapter is None
                                      else read_peft_adapter(spec.adapter, self.peft))
        load_adapter_state(self.peft, self._states[spec.key])


def evaluate_step(ev: Evaluator, task: TaskData, grader, acc_k: int | None = None) -> StepResult:
    """Generate, grade and score the current adapter on `task`'s test items."""
    return evaluate_steps(ev, [task], grader, acc_k)[0]


def evaluate_steps(ev: Evaluator, tasks: list[TaskData], grader, acc_k: int | None = None) -> list[StepResult]:
    """`evaluate_step` on several tasks at once: their questions share generation batches (larger
    batches decode faster), each with its task's max_new_tokens."""
    prompts = [p for t in tasks for p in t.prompts]
    limits = [t.max_new_tokens for t in tasks for _ in t.prompts]
    with ev.merged():
        outputs = ev.backend.generate(prompts, limits)
        scored = []
        for task in tasks:
            with eval_mode(ev.peft):
                losses = ev.model.example_losses(task.examples, micro=ev.cfg.eval.batch_size)
            samples = (ev.backend.sample(task.prompts, acc_k, temperature=1.0, max_new_tokens=task.max_new_tokens,
                                         seed=_stable_seed("acc_at_k", task.name)) if acc_k else None)
            scored.append((losses, _choice_by_loglikelihood(ev.backend, task), samples))
    results, start = [], 0
    for task, (losses, ll_choice, samples) in zip(tasks, scored):
        task_outputs = outputs[start:start + len(task.prompts)]
        start += len(task.prompts)
        results.append(_step_result(task, task_outputs, losses, ll_choice, samples, grader, acc_k))
    return results


def _step_result(task: TaskData, outputs: list[str], losses: list[tuple[float, int]], ll_choice: dict[int, str],
                 samples: list[list[str]] | None, grader, acc_k: int | None) -> StepResult:
    """`losses`: (summed CE, tokens) of each question's reference solution. The cell's loss is their
    token mean; each prediction row keeps its own token mean, the per-question loss outcome."""
    records = task.records
    verdicts = grader.grade_many([(o, r.answer, r.answer_type, r.source) for o, r in zip(outputs, records)])
    preds = []
    for i, (r, out, v) in enumerate(zip(records, outputs, verdicts)):
        preds.append({"question_id": r.id, "prompt": task.prompts[i], "output": out, "extracted": v.extracted,
                      "gold": r.answer, "correct": v.correct, "timed_out": v.timed_out,
                      "reasoning_steps": reasoning_steps(out), "step_correctness": step_correctness(out, r.steps),
                      "ll_choice": ll_choice.get(i), "loss": losses[i][0] / losses[i][1],
                      "loss_tokens": losses[i][1]})
    n = len(preds)
    loss = sum(s for s, _ in losses) / sum(c for _, c in losses)
    known = [p["step_correctness"] for p in preds if p["step_correctness"] is not None]
    choice = [(ll_choice[i], records[i].answer) for i in sorted(ll_choice)]
    cell = {"accuracy": sum(p["correct"] for p in preds) / n, "loss": loss, "n": n,
            "n_correct": sum(p["correct"] for p in preds), "n_timed_out": sum(p["timed_out"] for p in preds),
            "reasoning_steps": float(np.mean([p["reasoning_steps"] for p in preds])),
            "step_correctness": float(np.mean(known)) if known else None,
            "accuracy_ll": sum(a == b for a, b in choice) / len(choice) if choice else None,
            "acc_at_k": None}
    if samples is not None:
        flat = grader.grade_many([(s, r.answer, r.answer_type, r.source) for ss, r in zip(samples, records) for s in ss])
        cell["acc_at_k"] = acc_at_k([[v.correct for v in flat[i * acc_k:(i + 1) * acc_k]] for i in range(n)])
    return StepResult(cell, preds)


def _choice_by_loglikelihood(backend: HFBackend, task: TaskData) -> dict[int, str]:
    """Question index -> the option letter of highest log P(letter | prompt + "The answer is (")."""
    asks = [(i, LETTERS[k]) for i, r in enumerate(task.records) if r.answer_type == "choice"
            for k in range(len(r.choices))]
    if not asks:
        return {}
    scores = backend.loglikelihood([task.prompts[i] + CHOICE_PREFILL for i, _ in asks], [x for _, x in asks])
    best: dict[int, tuple[float, str]] = {}
    for (i, letter), s in zip(asks, scores):
        if i not in best or s > best[i][0]:
            best[i] = (s, letter)
    return {i: letter for i, (_, letter) in best.items()}


# ----------------------------------------------------------------------------------------- adaptation
def adapt(model: TrainModel, shots: list[Example], *, steps: int, lr: float, batch_size: int, seed: int,
          on_step: Callable[[int], None] | None = None) -> list[float]:
    """`steps` AdamW steps on batches drawn from `shots` (a fresh optimizer), in place.

    `on_step(k)` runs after step k (1-based). Returns the loss before each step.
    """
    optimizer = torch.optim.AdamW(model.params, lr=lr)
    sampler = Sampler(len(shots), seed=seed)
    k = min(batch_size, len(shots))
    losses = []
    for step in range(1, steps + 1):
        model.zero_grad()
        loss, _ = model.backward([shots[i] for i in sampler.next(k)], micro=k)
        check_finite(loss, f"adaptation step {step}")
        optimizer.step()
        losses.append(loss)
        if on_step is not None:
            on_step(step)
    model.zero_grad()
    return losses


def run_group(ev: Evaluator, spec: ModelSpec, group: Group, task: TaskData, grader, zero_shot: StepResult | None,
              *, acc_k: int | None = None) -> tuple[list[dict], list[dict]]:
    """Cell rows and prediction rows of one group; the model's adapter is restored afterwards.

    `zero_shot` is the model's 0-shot result on the task, used as step 0 of a few-shot group.
    """
    e = ev.cfg.eval
    ev.load(spec)
    key = {"model": group.model, "task": group.task, "n_shots": group.n_shots, "seed": group.seed}
    results: dict[int, StepResult] = {}
    shot_ids: list[str] = []
    if group.n_shots == 0:
        results[0] = zero_shot or evaluate_step(ev, task, grader, acc_k)
    else:
        idx = shot_indices(task.name, group.n_shots, group.seed, len(task.shots))
        shot_ids = [task.shot_ids[i] for i in idx]
        record = set(recorded_steps(e.record_steps, e.adaptation_steps))
        results[0] = zero_shot or evaluate_step(ev, task, grader, acc_k)
        ev.peft.train()

        def on_step(step: int) -> None:
            if step in record:
                results[step] = evaluate_step(ev, task, grader, acc_k)

        adapt(ev.model, [task.shots[i] for i in idx], steps=e.adaptation_steps, lr=e.adaptation_lr,
              batch_size=e.adaptation_batch_size, seed=_stable_seed("batches", task.name, group.n_shots, group.seed),
              on_step=on_step)
        ev.load(spec)
    cells = [{**key, "step": step, **r.cell} for step, r in sorted(results.items())]
    preds = [{**key, "step": step, **p, "shot_ids": shot_ids} for step, r in sorted(results.items()) for p in r.predictions]
    return cells, preds


def _from_store(store: ResultsStore, model: str, task: str) -> StepResult | None:
    """The stored 0-shot evaluation of (model, task), if that group is done."""
    if not store.is_done(model, task, 0, 0):
        return None
    cell = store.cells(model=model, task=task, n_shots=0, seed=0, step=0)
    preds = store.predictions(model=model, task=task, n_shots=0, seed=0, step=0)
    drop = ["model", "task", "n_shots", "seed", "step"]
    cell_row = {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in cell.drop(columns=drop).iloc[0].to_dict().items()}
    pred_rows = []
    for row in preds.drop(columns=drop + ["shot_ids"]).to_dict("records"):
        pred_rows.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return StepResult(cell_row, pred_rows)


# ----------------------------------------------------------------------------------------- entry point
def _device(cfg: Config) -> torch.device:
    want = cfg.trainer.device
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("trainer.device=cuda but no CUDA device is available")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _settings(cfg: Config, manifest: dict) -> dict:
    """What the stored numbers depend on besides the adapters (checked on resume)."""
    m, e, d = cfg.model, cfg.eval, cfg.data
    return {
        "model": {k: getattr(m, k) for k in ("partial_pretrain", "lora_rank", "lora_alpha", "lora_dropout",
                                             "target_modules", "dtype")},
        "eval": {"adaptation_steps": e.adaptation_steps, "adaptation_lr": e.adaptation_lr,
                 "adaptation_batch_size": e.adaptation_batch_size, "max_new_tokens": e.max_new_tokens,
                 "record_steps": recorded_steps(e.record_steps, e.adaptation_steps)},
        "data": {"use_chat_template": d.use_chat_template, "max_length": d.max_length, "truncation": d.truncation,
                 "eval_files": {k: v.get("sha256") for k, v in sorted(manifest.get("files", {}).items())
                                if k.startswith("data/eval/")}},
        "seed": cfg.seed,
    }


def validate_eval(cfg: Config, manifest: dict, models: list[ModelSpec]) -> None:
    e = cfg.eval
    if not models:
        raise ConfigError("no models to evaluate (eval.models is empty)")
    if not e.seeds:
        raise ConfigError("eval.seeds is empty")
    if e.adaptation_steps < 1 or e.adaptation_batch_size < 1 or e.batch_size < 1:
        raise ConfigError("eval.adaptation_steps, eval.adaptation_batch_size and eval.batch_size must be >= 1")
    beyond = [s for s in e.record_steps if s > e.adaptation_steps or s < 0]
    if beyond:
        raise ConfigError(f"eval.record_steps {beyond} fall outside [0, eval.adaptation_steps={e.adaptation_steps}]")
    check_names(models)
    tasks = manifest.get("eval_tasks") or {}
    if not tasks:
        raise EvalError("the data manifest lists no eval_tasks")
    for m in models:
        unknown = sorted(set(m.tasks or []) - set(tasks))
        if unknown:
            raise EvalError(f"model {m.name}: tasks {unknown} are not eval tasks of the data ({sorted(tasks)})")


def run_eval(cfg: Config, data_dir: Path, models: list[ModelSpec], out: Path, *,
             after_group: Callable[[Group], None] | None = None, acc_k: int | None = None) -> Path:
    """Protocol A for every model on every eval task of `data_dir`, into `out/results.sqlite`.

    Resumable (finished groups are skipped) and shardable under torchrun (env RANK / WORLD_SIZE).
    `after_group(group)` runs after each group is stored; `acc_k` samples k answers per question at
    every evaluation for acc@k (k times the generation cost). Returns `out`.
    """
    data_dir, out = Path(data_dir), Path(out)
    acc_k = acc_k or cfg.eval.acc_k or None
    if not (data_dir / "manifest.json").is_file():
        raise EvalError(f"{data_dir} is not a built data directory (no manifest.json)")
    manifest = read_json(data_dir / "manifest.json")
    validate_eval(cfg, manifest, models)
    rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    task_info = manifest["eval_tasks"]
    groups = enumerate_groups(models, {t: info["n_shots"] for t, info in task_info.items()}, cfg.eval.seeds)
    mine = rank_share(groups, rank, world_size)
    with ResultsStore(out / RESULTS_FILE) as store:
        store.check_meta("settings", _settings(cfg, manifest))
        store.check_meta("acc_k", acc_k)
        for spec in models:
            store.check_meta(f"adapter:{spec.name}" + (f"[{','.join(spec.tasks)}]" if spec.tasks else ""),
                             adapter_fingerprint(spec, cfg.seed))
        if rank == 0:
            save_config(cfg, out / "eval_config.yaml")
        done = store.done_groups()
        todo = [g for g in mine if (g.model, g.task, g.n_shots, g.seed) not in done]
        log.info("eval: %d groups in all, %d for rank %d, %d left to do", len(groups), len(mine), rank, len(todo))
        if todo:
            specs = {(m.name, t): m for m in models for t in (m.tasks or task_info)}
            _run_groups(cfg, data_dir, task_info, specs, todo, store, after_group, acc_k,
                        bar_desc=f"eval rank {rank}" if world_size > 1 else "eval", show_bar=rank == 0)
    return out


def _run_groups(cfg: Config, data_dir: Path, task_info: dict, specs: dict[tuple[str, str], ModelSpec],
                todo: list[Group], store: ResultsStore, after_group, acc_k, *, bar_desc: str, show_bar: bool) -> None:
    ev = Evaluator(cfg, _device(cfg))
    tasks: dict[str, TaskData] = {}
    zero_shots: dict[tuple[str, str], StepResult] = {}
    bar = tqdm(todo, desc=bar_desc, dynamic_ncols=True, disable=not show_bar)

    def task(name: str) -> TaskData:
        if name not in tasks:
            tasks[name] = load_task(data_dir, name, task_info[name], ev.tokenizer, cfg)
        return tasks[name]

    with Grader(timeout_s=cfg.eval.grade_timeout_s) as grader:
        for group in bar:
            zkey = (group.model, group.task)
            if zkey not in zero_shots:
                stored = _from_store(store, *zkey)
                if stored is not None:
                    zero_shots[zkey] = stored
            if zkey not in zero_shots and group.n_shots == 0:
                # this model's pending 0-shot groups, all tasks in one generation
                spec = specs[zkey]
                names = [g.task for g in todo if g.n_shots == 0 and g.model == group.model
                         and specs[(g.model, g.task)].key == spec.key and (g.model, g.task) not in zero_shots]
                ev.load(spec)
                for name, result in zip(names, evaluate_steps(ev, [task(n) for n in names], grader, acc_k)):
                    zero_shots[(group.model, name)] = result
            cells, preds = run_group(ev, specs[zkey], group, task(group.task), grader, zero_shots.get(zkey),
                                     acc_k=acc_k)
            zero_shots.setdefault(zkey, _step0(cells, preds))
            store.write_group(group.model, group.task, group.n_shots, group.seed, cells, preds)
            bar.set_postfix(model=group.model, task=group.task, n=group.n_shots, acc=f"{cells[-1]['accuracy']:.2f}")
            if after_group is not None:
                after_group(group)


def _step0(cells: list[dict], preds: list[dict]) -> StepResult:
    drop = ("model", "task", "n_shots", "seed", "step")
    cell = next(c for c in cells if c["step"] == 0)
    return StepResult({k: v for k, v in cell.items() if k not in drop},
                      [{k: v for k, v in p.items() if k not in drop + ("shot_ids",)} for p in preds if p["step"] == 0])


# ----------------------------------------------------------------------------------------- protocol B
def cross_task_zero_shot(cells: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """Protocol B: 0-shot cells of the tasks the manifest flags `unseen`, one row per (task, model).

    Columns: task, cross_domain, model, accuracy, n, loss, accuracy_ll, reasoning_steps,
    step_correctness. A view over protocol A's cells; nothing is recomputed.
    """
    info = manifest["eval_tasks"]
    unseen = [t for t, i in info.items() if i.get("unseen")]
    zero = cells[(cells["n_shots"] == 0) & (cells["step"] == 0) & cells["task"].isin(unseen)].copy()
    zero["cross_domain"] = zero["task"].map(lambda t: bool(info[t].get("cross_domain")))
    columns = ["task", "cross_domain", "model", "accuracy", "n", "loss", "accuracy_ll", "reasoning_steps",
               "step_correctness"]
    return zero[columns].sort_values(["task", "model"]).reset_index(drop=True)


def transfer_points(cells: pd.DataFrame, similarity: dict, train_tasks: list[str], baseline: str = "base",
                    n_shots: int = 0) -> pd.DataFrame:
    """The design's transfer plot: per (eval task, model), the task's distance to meta-training and
    the model's accuracy gain over `baseline` at `n_shots` (final step, mean over seeds).

    distance = 1 − the largest cosine similarity between the eval task's gradient and any
    meta-training task's (`task_similarity.json`: nearest-task distance).
    """
    names = similarity["tasks"]
    sim = np.asarray(similarity["similarity"])
    train_idx = [names.index(t) for t in train_tasks if t in names]
    rows = cells[cells["n_shots"] == n_shots]
    last = rows.groupby(["model", "task", "seed"])["step"].transform("max")
    acc = rows[rows["step"] == last].groupby(["task", "model"])["accuracy"].mean()
    out = []
    for (task, model), a in acc.items():
        if task not in names or task in train_tasks or (task, baseline) not in acc.index:
            continue
        distance = 1.0 - float(max(sim[names.index(task), j] for j in train_idx)) if train_idx else math.nan
        out.append({"task": task, "model": model, "distance": distance, "accuracy": a,
                    "gain": a - acc[(task, baseline)]})
    return pd.DataFrame(out, columns=["task", "model", "distance", "accuracy", "gain"])
