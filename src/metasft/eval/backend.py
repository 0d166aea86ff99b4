"""What protocol A needs from an inference engine, in the spirit of lm-evaluation-harness's `LM`
(`lm_eval/api/model.py`: loglikelihood, generate): one cell's adapter at a time, adapted on its shots,
then scored and decoded.

Implementations: `metasft.eval.evaluator.Evaluator` (Hugging Face + PEFT, one cell at a time, LoRA folded
into the base weights while scoring). The grid engine (`metasft.eval.grid`, eval.cells_per_batch > 1)
is the Evaluator's own batched path over many cells and does not go through this interface. A vLLM or
SGLang backend would be one more module here implementing these methods (its `adapt` a few AdamW
steps on the LoRA tensors it then serves); `evaluate_step(s)` and `adaptation.run_group` take any of them.
"""
from __future__ import annotations

from typing import Callable, Protocol

from metasft.config import Config
from metasft.eval.generate import Completion
from metasft.eval.specs import ModelSpec
from metasft.train.batching import Example


class Backend(Protocol):
    """An inference engine for protocol A. `cfg`: the evaluation's config (eval.* settings)."""

    cfg: Config

    def load(self, spec: ModelSpec) -> None:
        """Make `spec`'s adapter (None: the fresh LoRA) the current one, undoing any adaptation."""

    def adapt(self, shots: list[Example], *, steps: int, lr: float, batch_size: int, seed: int,
              on_step: Callable[[int], None] | None = None) -> list[float]:
        """`steps` AdamW steps of the current adapter on batches drawn from `shots` (a fresh optimizer,
        batches from `seed`); `on_step(k)` after step k. Returns the loss before each step."""

    def reference_losses(self, examples: list[Example]) -> list[tuple[float, int]]:
        """(summed response cross-entropy, response tokens) of each example under the current adapter."""

    def loglikelihood(self, contexts: list[str], continuations: list[str]) -> list[float]:
        """log P(continuation | context) of each pair."""

    def complete(self, prompts: list[str], max_new_tokens: list[int]) -> list[Completion]:
        """Greedy completions, each prompt with its own token limit."""

    def sample(self, prompts: list[str], k: int, *, temperature: float, max_new_tokens: int,
               seed: int) -> list[list[Completion]]:
        """`k` sampled completions per prompt (acc@k)."""
