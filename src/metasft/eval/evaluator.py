"""One evaluation of the current adapter on a task's test items (`evaluate_step`).

Greedy generation and grading (accuracy, reasoning steps, step correctness against the record's
`steps`), the token-mean response cross-entropy of each reference solution, and for
multiple-choice questions the option log-likelihood accuracy: after the chat prompt the assistant
turn is prefilled with "The answer is (" and the option letters "A", "B", ... are compared by
log P(letter | prompt + "The answer is ("): MMLU's letter scoring (Hendrycks et al. 2021 score " A"
after "Answer:"), with the parenthesis of the prompt's "(A) ..." option list so that each letter is
one token; one forward pass per question.

One base model and one LoRA wrapper are built per process (`Evaluator`); each model's adapter is
copied into the LoRA tensors in place.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from metasft.config import Config, ConfigError
from metasft.eval.backend import Backend
from metasft.eval.generate import Completion, HFBackend, LoraMerger, eval_mode
from metasft.eval.schedule import stable_seed
from metasft.data.records import OPTION_LETTERS
from metasft.eval.scoring import acc_at_k, reasoning_steps, step_correctness
from metasft.eval.specs import ModelSpec, read_peft_adapter
from metasft.eval.tasks import TaskData
from metasft.models import adapter_parameters, adapter_state, add_lora, load_adapter_state, load_base
from metasft.train.batching import Example, Sampler
from metasft.train.common import TrainModel, check_finite
from metasft.train.distributed import World
from metasft.train.loss import ResponseLoss

CHOICE_PREFILL = "The answer is ("
ACC_K_TEMPERATURE = 1.0  # acc@k's samples: plain softmax sampling, no top-k / top-p


def acc_k_seed(task: str) -> int:
    """The sampling seed of acc@k on `task`: the same for every model, shot level, seed and step, so
    each question's k samples use the same random draws in every cell (common random numbers)."""
    return stable_seed("acc_at_k", task)


def device_for(cfg: Config) -> torch.device:
    """The evaluation device: trainer.device, the local rank's GPU under torchrun."""
    want = cfg.trainer.device
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("trainer.device=cuda but no CUDA device is available")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


@dataclass
class StepResult:
    """One evaluation of the current adapter on a task: the cell's aggregates and one row per question."""
    cell: dict
    predictions: list[dict]


class Evaluator:
    """The base model with one LoRA wrapper, its backend and loss; adapters swapped in place.

    `dtype`: the base weights' (float32 | bfloat16), model.dtype unless given (the eval stage gives
    `eval_dtype(cfg)`)."""

    def __init__(self, cfg: Config, device: torch.device, dtype: str | None = None):
        m = cfg.model
        dtype = dtype or m.dtype
        base, self.tokenizer = load_base(m.partial_pretrain, dtype=dtype, cache_dir=m.cache_dir)
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
        self._merger = LoraMerger(self.peft) if dtype == "float32" else None

    def merged(self):
        """Context in which the adapter is folded into the base weights (float32 bases only)."""
        return self._merger() if self._merger is not None else contextlib.nullcontext()

    def state(self, spec: ModelSpec) -> dict[str, torch.Tensor]:
        """`spec`'s adapter as a state dict keyed like the LoRA parameters (read once per process)."""
        if spec.key not in self._states:
            self._states[spec.key] = (self.fresh if spec.adapter is None
                                      else read_peft_adapter(spec.adapter, self.peft))
        return self._states[spec.key]

    def load(self, spec: ModelSpec) -> None:
        """Copy `spec`'s adapter into the LoRA tensors."""
        load_adapter_state(self.peft, self.state(spec))

    # the Backend protocol (metasft.eval.backend): scoring and decoding with the LoRA folded in
    def adapt(self, shots: list[Example], *, steps: int, lr: float, batch_size: int, seed: int,
              on_step: Callable[[int], None] | None = None) -> list[float]:
        self.peft.train()
        return adapt(self.model, shots, steps=steps, lr=lr, batch_size=batch_size, seed=seed, on_step=on_step)

    def reference_losses(self, examples: list[Example]) -> list[tuple[float, int]]:
        with self.merged(), eval_mode(self.peft):
            return self.model.example_losses(examples, micro=self.cfg.eval.batch_size)

    def loglikelihood(self, contexts: list[str], continuations: list[str]) -> list[float]:
        with self.merged():
            return self.backend.loglikelihood(contexts, continuations)

    def complete(self, prompts: list[str], max_new_tokens: list[int]) -> list[Completion]:
        with self.merged():
            return self.backend.complete(prompts, max_new_tokens)

    def sample(self, prompts: list[str], k: int, *, temperature: float, max_new_tokens: int,
               seed: int) -> list[list[Completion]]:
        with self.merged():
            return self.backend.sample(prompts, k, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)


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


def evaluate_step(ev: Backend, task: TaskData, grader, acc_k: int | None = None) -> StepResult:
    """Generate, grade and score the current adapter on `task`'s test items."""
    return evaluate_steps(ev, [task], grader, acc_k)[0]


def evaluate_steps(ev: Backend, tasks: list[TaskData], grader, acc_k: int | None = None) -> list[StepResult]:
    """`evaluate_step` on several tasks at once: their questions share generation batches (larger
    batches decode faster), each with its task's max_new_tokens."""
    prompts = [p for t in tasks for p in t.prompts]
    limits = [t.max_new_tokens for t in tasks for _ in t.prompts]
    outputs = ev.complete(prompts, limits)
    scored = []
    for task in tasks:
        losses = ev.reference_losses(task.examples)
        samples = (ev.sample(task.prompts, acc_k, temperature=ACC_K_TEMPERATURE, max_new_tokens=task.max_new_tokens,
                             seed=acc_k_seed(task.name)) if acc_k else None)
        scored.append((losses, _choice_by_loglikelihood(ev, task), samples))
    results, start = [], 0
    for task, (losses, ll_choice, samples) in zip(tasks, scored):
        task_outputs = outputs[start:start + len(task.prompts)]
        start += len(task.prompts)
        results.append(step_result(task, task_outputs, losses, ll_choice, samples, grader, acc_k))
    return results


def step_result(task: TaskData, outputs: list[Completion], losses: list[tuple[float, int]], ll_choice: dict[int, str],
                samples: list[list[Completion]] | None, grader, acc_k: int | None) -> StepResult:
    """`losses`: (summed CE, tokens) of each question's reference solution. The cell's loss is their
    token mean; each prediction row keeps its own token mean, the per-question loss outcome. Each
    prediction carries both verdicts (strict, flexible) and `correct`, the grader's primary one; the
    cell's `accuracy` is the primary's. With `samples` (k per question), each prediction's
    `correct_at_k` says whether any of its k samples is right (primary grading) and the cell's
    `acc_at_k` is their mean; without, both are None."""
    records = task.records
    verdicts = grader.grade_many([(o.text, r.answer, r.answer_type, r.source) for o, r in zip(outputs, records)],
                                 cut_off=[o.cut_off for o in outputs])
    preds = []
    for i, (r, out, v) in enumerate(zip(records, outputs, verdicts)):
        preds.append({"question_id": r.id, "prompt": task.prompts[i], "output": out.text, "extracted": v.extracted,
                      "gold": r.answer, "correct": v.correct, "correct_strict": v.correct_strict,
                      "correct_flexible": v.correct_flexible, "truncated": v.truncated, "repeating": v.repeating,
                      "timed_out": v.timed_out, "reasoning_steps": reasoning_steps(out.text),
                      "step_correctness": step_correctness(out.text, r.steps), "ll_choice": ll_choice.get(i),
                      "loss": losses[i][0] / losses[i][1], "loss_tokens": losses[i][1], "correct_at_k": None})
    n = len(preds)
    loss = sum(s for s, _ in losses) / sum(c for _, c in losses)
    known = [p["step_correctness"] for p in preds if p["step_correctness"] is not None]
    choice = [(ll_choice[i], records[i].answer) for i in sorted(ll_choice)]
    count = lambda column: sum(p[column] for p in preds)
    cell = {"accuracy": count("correct") / n, "accuracy_strict": count("correct_strict") / n,
            "accuracy_flexible": count("correct_flexible") / n, "loss": loss, "n": n,
            "n_correct": count("correct"), "n_timed_out": count("timed_out"), "n_truncated": count("truncated"),
            "n_repeating": count("repeating"),
            "reasoning_steps": float(np.mean([p["reasoning_steps"] for p in preds])),
            "step_correctness": float(np.mean(known)) if known else None,
            "accuracy_ll": sum(a == b for a, b in choice) / len(choice) if choice else None,
            "acc_at_k": None}
    if samples is not None:
        flat = grader.grade_many([(s.text, r.answer, r.answer_type, r.source)
                                  for ss, r in zip(samples, records) for s in ss],
                                 cut_off=[s.cut_off for ss in samples for s in ss])
        per_question = [[v.correct for v in flat[i * acc_k:(i + 1) * acc_k]] for i in range(n)]
        for p, verdicts in zip(preds, per_question):
            p["correct_at_k"] = any(verdicts)
        cell["acc_at_k"] = acc_at_k(per_question)
    return StepResult(cell, preds)


def _choice_by_loglikelihood(backend: Backend, task: TaskData) -> dict[int, str]:
    """Question index -> the option letter of highest log P(letter | prompt + "The answer is (")."""
    asks = [(i, OPTION_LETTERS[k]) for i, r in enumerate(task.records) if r.answer_type == "choice"
            for k in range(len(r.choices))]
    if not asks:
        return {}
    scores = backend.loglikelihood([task.prompts[i] + CHOICE_PREFILL for i, _ in asks], [x for _, x in asks])
    best: dict[int, tuple[float, str]] = {}
    for (i, letter), s in zip(asks, scores):
        if i not in best or s > best[i][0]:
            best[i] = (s, letter)
    return {i: letter for i, (_, letter) in best.items()}
