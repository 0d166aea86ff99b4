"""The model side of evaluation as a narrow interface (lm-eval's `LM`: generate, log-likelihood).

`HFBackend` wraps a (PEFT-wrapped) Hugging Face causal LM. Prompts are plain text that is already
chat-formatted (`metasft.data.formats.chat_text`); they are tokenized without adding special tokens.

Decoding is `model.generate` on left-padded batches of `batch_size` prompts of similar length. Our
own decode loop (a preallocated KV cache subclassing transformers' cache internals, finished rows
dropped) measured no faster than batched `model.generate` (issue 11; BENCHMARKS.md), so it went:
the grid engine (`grid_eval`, `lora_forward`) is the one place with its own loop and its own cache.

Sampling (for acc@k) draws each row's tokens with that row's own seeded generator (`sample_tokens`),
so a sample depends on its seed and its logits only, not on the batch it shares: the grid engine
draws the same samples as this backend, whatever the batching of either.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from metasft.eval.schedule import stable_seed

END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """`model.eval()` and `torch.inference_mode()` inside; the previous train/eval mode after."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def stop_token_ids(tokenizer) -> list[int]:
    """EOS plus whichever chat end-of-turn tokens the tokenizer knows."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_OF_TURN if t in vocab)
    return sorted(ids)


class LoraMerger:
    """Evaluate with each LoRA update folded into its base weight, undone exactly afterwards.

    Unmerged, every adapted projection runs two extra small matmuls per token; merged generation was
    about 12% faster on an idle CPU (BENCHMARKS.md, benchmarks/bench_generate.py). PEFT's own
    `unmerge` subtracts the update again, which leaves rounding residue in the base weights that
    would grow over hundreds of evaluations and make results depend on their order; instead the
    pristine base weights of the adapted projections are copied aside while merged and copied back
    (the copy lives only inside the context: 425 MB for SmolLM2-135M that the grid engine, which never
    merges, would otherwise hold all along).
    Only for float32 base weights: a bfloat16 weight would round small adaptation updates away.
    """

    def __init__(self, peft_model, adapter: str = "default"):
        from peft.tuners.lora import Linear as LoraLinear

        self.adapter = adapter
        self.layers = [m for m in peft_model.modules() if isinstance(m, LoraLinear)]
        dtypes = {m.base_layer.weight.dtype for m in self.layers}
        if dtypes != {torch.float32}:
            raise ValueError(f"LoraMerger needs float32 base weights, got {sorted(map(str, dtypes))}")

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        merged = []   # (layer, its pristine weight), for the layers merged so far
        try:
            with torch.no_grad():
                for layer in self.layers:
                    w = layer.base_layer.weight
                    w0 = w.detach().clone()
                    w.add_(layer.get_delta_weight(self.adapter))
                    layer.merged_adapters.append(self.adapter)
                    merged.append((layer, w0))
            yield
        finally:
            with torch.no_grad():
                for layer, w0 in merged:
                    layer.base_layer.weight.copy_(w0)
                    layer.merged_adapters.remove(self.adapter)


def left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, position_ids), each (B, T), padded on the left; positions count real
    tokens only, so a padded prompt sees the positions it would see alone."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def sample_seeds(seed: int, n_prompts: int, n: int) -> list[int]:
    """The seed of sample j of prompt i, row i * n + j: one per row, from the sampling `seed`."""
    return [stable_seed("sample", seed, i, j) for i in range(n_prompts) for j in range(n)]


def sample_tokens(logits: torch.Tensor, generators: Sequence[torch.Generator], temperature: float) -> torch.Tensor:
    """One token per row of `logits` (N, V), drawn from softmax(logits / temperature) with row i's
    generator `generators[i]` (Gumbel-max: the argmax of logits / temperature plus Gumbel noise, V
    uniforms per row and token)."""
    vocab = logits.shape[-1]
    u = torch.stack([torch.rand(vocab, generator=g, device=g.device) for g in generators]).to(logits.device)
    gumbel = -torch.log(-torch.log(u.clamp(min=torch.finfo(u.dtype).tiny)))
    return (logits.float() / temperature + gumbel).argmax(dim=-1)


def row_generators(seeds: Sequence[int], device: torch.device) -> list[torch.Generator]:
    """A generator per row, seeded with its seed (`sample_seeds`)."""
    return [torch.Generator(device=device).manual_seed(s % 2**63) for s in seeds]


class _SeededSampling(LogitsProcessor):
    """Sampling inside greedy `generate`: every score but the row's drawn token (`sample_tokens`) is
    -inf, so the argmax is the sample; the rows' generators are those of the batch's rows."""

    def __init__(self, generators: list[torch.Generator], temperature: float):
        self.generators, self.temperature = generators, temperature

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        tok = sample_tokens(scores, self.generators, self.temperature)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, tok[:, None], 0.0)


@dataclass(frozen=True)
class Completion:
    """A generated continuation: its text (stop token excluded) and whether it was cut off, i.e.
    reached its max_new_tokens without a stop token (grading credits no cut-off output, issue 19)."""
    text: str
    cut_off: bool


class _RowLimits(StoppingCriteria):
    """Ends row i of a batch once it has `limits[i]` new tokens (prompts of several tasks, each with
    its own max_new_tokens, share batches)."""

    def __init__(self, prompt_width: int, limits: torch.Tensor):
        self.prompt_width, self.limits = prompt_width, limits

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return input_ids.shape[1] - self.prompt_width >= self.limits


class HFBackend:
    """complete (generate: its texts) / sample / loglikelihood over a causal LM, batched. A completion
    says whether it was cut off at its max_new_tokens, which grading never credits (issue 19).

    `batch_size` bounds the sequences run together (generation and scoring). Outputs are returned
    in the order of the inputs whatever the batching. `stop_ids` defaults to `stop_token_ids`.
    """

    def __init__(self, model, tokenizer, *, batch_size: int = 16, device: torch.device | str | None = None,
                 stop_ids: list[int] | None = None):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.stop_ids = list(stop_ids) if stop_ids is not None else stop_token_ids(tokenizer)
        # a real token id (custom stop_ids need not be): it is fed to the model for finished rows
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_token_ids(tokenizer)[0]

    # ------------------------------------------------------------------------------ helpers
    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped into batches of similar length, longest first (peak memory shows at once)."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return left_pad(seqs, self.pad_id, self.device)

    # ------------------------------------------------------------------------------ generation
    def complete(self, prompts: list[str], max_new_tokens: int | Sequence[int]) -> list[Completion]:
        """Greedy continuation of each prompt, up to a stop token (not included) or `max_new_tokens`
        (one limit for all, or one per prompt: prompts of several tasks then share batches)."""
        return self._decode_all(prompts, max_new_tokens, temperature=0.0)

    def generate(self, prompts: list[str], max_new_tokens: int | Sequence[int]) -> list[str]:
        """The texts of `complete`."""
        return [c.text for c in self.complete(prompts, max_new_tokens)]

    def sample(self, prompts: list[str], n: int, temperature: float, max_new_tokens: int,
               seed: int = 0) -> list[list[Completion]]:
        """`n` sampled continuations per prompt (for acc@k): sample j of prompt i is drawn with its own
        generator (`sample_seeds(seed, ...)`), so it is the same in any batch; the global RNG is untouched."""
        if temperature <= 0:
            raise ValueError("sample needs temperature > 0; use generate for greedy decoding")
        flat = self._decode_all([p for p in prompts for _ in range(n)], max_new_tokens, temperature,
                                sample_seeds(seed, len(prompts), n))
        return [flat[i * n:(i + 1) * n] for i in range(len(prompts))]

    def _decode_all(self, prompts, max_new_tokens, temperature, seeds=None) -> list[Completion]:
        encoded = [self.encode(p) for p in prompts]
        limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
        if len(limits) != len(prompts):
            raise ValueError(f"{len(limits)} max_new_tokens for {len(prompts)} prompts")
        out: list[Completion | None] = [None] * len(prompts)
        with eval_mode(self.model):
            for batch in self._batches([len(e) for e in encoded]):
                gens = row_generators([seeds[i] for i in batch], self.device) if seeds is not None else None
                rows = self._decode_batch([encoded[i] for i in batch], [limits[i] for i in batch], temperature, gens)
                for i, (toks, stopped) in zip(batch, rows):
                    out[i] = Completion(self.tokenizer.decode(toks, skip_special_tokens=True), not stopped)
        return out

    def _decode_batch(self, seqs: list[list[int]], limits: list[int], temperature: float,
                      generators: list[torch.Generator] | None = None) -> list[tuple[list[int], bool]]:
        """(new token ids, stopped) per sequence: at most `limits[i]` ids for sequence i, the stop token
        excluded; `stopped` when it ended at a stop token (not at its limit).

        A row ends at a stop token or its own limit (`_RowLimits`); generate pads finished rows until
        the batch's last row ends, and the padding is cut off here."""
        longest = max(limits)
        if longest <= 0:
            return [([], False) for _ in seqs]
        ids, mask, _ = self._left_pad(seqs)  # generate derives the same positions from the mask
        row_limits = _RowLimits(ids.shape[1], torch.tensor(limits, device=self.device))
        # Set explicitly so that a checkpoint's generation_config (do_sample, top_p 0.9, a repetition
        # penalty) changes neither greedy decoding nor plain temperature sampling, which is greedy
        # decoding of the scores `_SeededSampling` leaves.
        processors = LogitsProcessorList([_SeededSampling(generators, temperature)] if temperature > 0 else [])
        out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=longest, do_sample=False,
                                  logits_processor=processors,
                                  repetition_penalty=1.0, eos_token_id=self.stop_ids, pad_token_id=self.pad_id,
                                  stopping_criteria=StoppingCriteriaList([row_limits]))
        new = []
        for row, limit in zip(out[:, ids.shape[1]:].tolist(), limits):
            row = row[:limit]
            end = next((i for i, t in enumerate(row) if t in self.stop_ids), None)
            new.append((row[:end], True) if end is not None else (row, False))
        return new

    # ------------------------------------------------------------------------------ scoring
    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's split: trailing spaces of the context go to the continuation, and the
        continuation's tokens are those of the whole string after the context's tokens."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        if not ctx:  # nothing to condition on: start from the EOS token as lm-eval does
            ctx, whole = [self.stop_ids[0]], [self.stop_ids[0]] + whole
        cont = whole[len(ctx):]
        if not cont:
            raise ValueError(f"continuation {continuation!r} adds no token to its context")
        return ctx, cont

    def loglikelihood(self, contexts: list[str], continuations: list[str]) -> list[float]:
        """log P(continuation | context), summed over the continuation's tokens, per pair.

        Pairs whose model input (context + continuation minus its last token) is the same share one
        forward pass: options " A", " B", ... of one question after the same context cost one forward.
        """
        if len(contexts) != len(continuations):
            raise ValueError("loglikelihood needs one continuation per context")
        by_input: dict[tuple[int, ...], list[tuple[int, list[int]]]] = defaultdict(list)
        for i, (c, x) in enumerate(zip(contexts, continuations)):
            ctx, cont = self.encode_pair(c, x)
            by_input[tuple(ctx + cont[:-1])].append((i, cont))
        inputs = list(by_input)
        out = [0.0] * len(contexts)
        with eval_mode(self.model):
            for batch in self._batches([len(s) for s in inputs]):
                seqs = [list(inputs[j]) for j in batch]
                keep = max(len(cont) for j in batch for _, cont in by_input[inputs[j]])
                ids, mask, positions = self._left_pad(seqs)
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                    use_cache=False, logits_to_keep=keep).logits
                logprobs = torch.log_softmax(logits.float(), dim=-1)  # (B, keep, V); last position last
                for row, j in enumerate(batch):
                    for i, cont in by_input[inputs[j]]:
                        lp = logprobs[row, keep - len(cont):]
                        out[i] = float(lp.gather(1, torch.tensor(cont, device=lp.device)[:, None]).sum())
        return out
