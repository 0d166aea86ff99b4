"""The model side of evaluation as a narrow interface (lm-eval's `LM`: generate, log-likelihood).

`HFBackend` wraps a (PEFT-wrapped) Hugging Face causal LM. Prompts are plain text that is already
chat-formatted (`metasft.data.formats.chat_text`); they are tokenized without adding special tokens.

Greedy decoding is our own loop rather than `model.generate`: prompts sorted by length are cut into
batches of `batch_size`, left-padded (position ids count real tokens only, so a padded prompt sees
the positions it would see alone), prefilled once computing logits for the last position only, then
decoded one token per step through the KV cache. A sequence stops at a stop token (EOS and the chat
end-of-turn token); finished rows are dropped from the batch and its cache, so a batch costs what
its still-running sequences need. Measured against `model.generate` in benchmarks/bench_generate.py.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
from collections import defaultdict
from typing import Iterator, Sequence

import torch
from transformers.cache_utils import Cache, DynamicLayer

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


def cache_kwarg(model) -> str:
    """The name `model.forward` takes its KV cache under: transformers 5.x renamed `past_key_values`
    to `cache` (the old name raises a FutureWarning at every call, and is due to go in 5.40); older
    versions know only `past_key_values`. A PEFT wrapper passes keywords through to its base model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def stop_token_ids(tokenizer) -> list[int]:
    """EOS plus whichever chat end-of-turn tokens the tokenizer knows."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_OF_TURN if t in vocab)
    return sorted(ids)


class LoraMerger:
    """Evaluate with each LoRA update folded into its base weight, undone exactly afterwards.

    Unmerged, every adapted projection runs two extra small matmuls per token; merged generation is
    about 12% faster on CPU (BENCHMARKS.md: ours vs ours_merged, benchmarks/bench_generate.py). PEFT's own
    `unmerge` subtracts the update again, which leaves rounding residue in the base weights that
    would grow over hundreds of evaluations and make results depend on their order; instead the
    pristine base weights are kept (once, for the adapted projections only) and copied back.
    Only for float32 base weights: a bfloat16 weight would round small adaptation updates away.
    """

    def __init__(self, peft_model, adapter: str = "default"):
        from peft.tuners.lora import Linear as LoraLinear

        self.adapter = adapter
        self.layers = [m for m in peft_model.modules() if isinstance(m, LoraLinear)]
        dtypes = {m.base_layer.weight.dtype for m in self.layers}
        if dtypes != {torch.float32}:
            raise ValueError(f"LoraMerger needs float32 base weights, got {sorted(map(str, dtypes))}")
        self.originals = [m.base_layer.weight.detach().clone() for m in self.layers]

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with torch.no_grad():
            for layer, w0 in zip(self.layers, self.originals):
                layer.base_layer.weight.copy_(w0 + layer.get_delta_weight(self.adapter))
                layer.merged_adapters.append(self.adapter)
        try:
            yield
        finally:
            with torch.no_grad():
                for layer, w0 in zip(self.layers, self.originals):
                    layer.base_layer.weight.copy_(w0)
                    layer.merged_adapters.remove(self.adapter)


class PreallocatedLayer(DynamicLayer):
    """A KV-cache layer written into buffers sized for the whole generation.

    `DynamicLayer` concatenates every step, copying the whole cache: O(T²) bytes over a generation,
    a fifth of decoding time at 32 new tokens on CPU and growing. Here the prefill allocates
    (B, heads, prompt + `extra`, head_dim) once and each step writes one slot; attention reads a view
    of the filled part, so its cost still follows the current length.
    """

    def __init__(self, extra: int):
        super().__init__()
        self.extra = extra
        self.length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        if self.length == 0 or self.length + n > self._k.shape[-2]:
            self._grow(self.length + n + self.extra, key_states, value_states)
        self._k[:, :, self.length:self.length + n] = key_states
        self._v[:, :, self.length:self.length + n] = value_states
        self.length += n
        self.keys, self.values = self._k[:, :, :self.length], self._v[:, :, :self.length]
        return self.keys, self.values

    def _grow(self, capacity: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, dk = key_states.shape
        k = key_states.new_empty((b, h, capacity, dk))
        v = value_states.new_empty((b, h, capacity, value_states.shape[-1]))
        if self.length:
            k[:, :, :self.length], v[:, :, :self.length] = self.keys, self.values
        self._k, self._v = k, v

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.length:
            self._k, self._v = self._k[indices], self._v[indices]
            self.keys, self.values = self._k[:, :, :self.length], self._v[:, :, :self.length]

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("PreallocatedLayer does not crop")


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


class HFBackend:
    """generate / sample / loglikelihood over a causal LM, batched.

    `batch_size` bounds the sequences run together (generation and scoring). Outputs are returned
    in the order of the inputs whatever the batching. `stop_ids` defaults to `stop_token_ids`.
    """

    def __init__(self, model, tokenizer, *, batch_size: int = 16, device: torch.device | str | None = None,
                 stop_ids: list[int] | None = None):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.stop_ids = list(stop_ids) if stop_ids is not None else stop_token_ids(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        self._stop = torch.tensor(self.stop_ids, device=self.device)
        self._cache_kw = cache_kwarg(model)

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
    def generate(self, prompts: list[str], max_new_tokens: int | Sequence[int]) -> list[str]:
        """Greedy continuation of each prompt, up to a stop token (not included) or `max_new_tokens`
        (one limit for all, or one per prompt: prompts of several tasks then share batches)."""
        return self._decode_all(prompts, max_new_tokens, temperature=0.0, generator=None)

    def sample(self, prompts: list[str], n: int, temperature: float, max_new_tokens: int,
               seed: int = 0) -> list[list[str]]:
        """`n` sampled continuations per prompt (for acc@k), reproducible for `seed`."""
        if temperature <= 0:
            raise ValueError("sample needs temperature > 0; use generate for greedy decoding")
        generator = torch.Generator(device=self.device).manual_seed(seed)
        flat = self._decode_all([p for p in prompts for _ in range(n)], max_new_tokens, temperature, generator)
        return [flat[i * n:(i + 1) * n] for i in range(len(prompts))]

    def _decode_all(self, prompts, max_new_tokens, temperature, generator) -> list[str]:
        encoded = [self.encode(p) for p in prompts]
        limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
        if len(limits) != len(prompts):
            raise ValueError(f"{len(limits)} max_new_tokens for {len(prompts)} prompts")
        out: list[str | None] = [None] * len(prompts)
        with eval_mode(self.model):
            for batch in self._batches([len(e) for e in encoded]):
                tokens = self._decode_batch([encoded[i] for i in batch], [limits[i] for i in batch], temperature,
                                            generator)
                for i, toks in zip(batch, tokens):
                    out[i] = self.tokenizer.decode(toks, skip_special_tokens=True)
        return out

    def _decode_batch(self, seqs: list[list[int]], limits: list[int], temperature: float,
                      generator) -> list[list[int]]:
        """New token ids per sequence (stop token excluded), at most `limits[i]` for sequence i."""
        new: list[list[int]] = [[] for _ in seqs]
        longest = max(limits)
        if longest <= 0:
            return new
        ids, mask, positions = self._left_pad(seqs)
        cache = Cache(layer_class_to_replicate=functools.partial(PreallocatedLayer, longest))
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                            logits_to_keep=1, **{self._cache_kw: cache}).logits[:, -1]
        rows = torch.arange(len(seqs), device=self.device)  # original row of each running sequence
        limit = torch.tensor(limits, device=self.device)
        next_pos = positions[:, -1] + 1
        for step in range(longest):
            tok = self._pick(logits, temperature, generator)
            stopped = torch.isin(tok, self._stop)
            for r, t, s in zip(rows.tolist(), tok.tolist(), stopped.tolist()):
                if not s and len(new[r]) < limits[r]:
                    new[r].append(t)
            finished = stopped | (limit[rows] <= step + 1)
            if finished.any():
                keep = (~finished).nonzero().squeeze(1)
                if keep.numel() == 0:
                    break
                cache.batch_select_indices(keep)
                rows, tok, mask, next_pos = rows[keep], tok[keep], mask[keep], next_pos[keep]
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            logits = self.model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                                use_cache=True, **{self._cache_kw: cache}).logits[:, -1]
            next_pos = next_pos + 1
        return new

    @staticmethod
    def _pick(logits: torch.Tensor, temperature: float, generator) -> torch.Tensor:
        if temperature <= 0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

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
