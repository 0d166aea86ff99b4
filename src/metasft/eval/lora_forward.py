"""Our own forward of a Llama-family decoder over a KV cache we own, for the grid engine (issue 10).

The grid decodes, scores reference solutions and scores option letters for many cells in one batch,
continuing from one prompt prefill: it needs to rewind the cache after a scored continuation,
drop finished rows, and mark left and right padding slot by slot. Owning both pieces keeps that
simple and independent of transformers' private cache classes (nanochat's `engine.py` does the same).

The forward calls the HF model's own modules (embedding, norms, rotary embedding, projections, MLP),
so the weights, rope scaling and any LoRA hooks on the projections (`metasft.eval.stacked_lora`) are
the model's; only the attention over the cache is ours (SDPA with an explicit boolean mask).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from metasft.config import ConfigError
from metasft.train.loss import decoder_and_head

SUPPORTED = ("llama",)   # SmolLM2 and Llama 3.x; other architectures keep eval.cells_per_batch: 1


def check_supported(lm: nn.Module) -> None:
    decoder, _ = decoder_and_head(lm)
    kind = getattr(decoder.config, "model_type", None)
    if kind not in SUPPORTED:
        raise ConfigError(f"the grid engine (eval.cells_per_batch > 1) runs {SUPPORTED} models, this one is {kind!r}; "
                         f"set eval.cells_per_batch: 1")


class KVCache:
    """Keys and values of every layer for N rows, preallocated for `capacity` slots.

    keys[l], values[l]: (N, kv_heads, capacity, head_dim); `valid` (N, capacity): the slots that hold a
    real token (not left padding of a prompt nor right padding of a continuation); `length` slots are
    filled. `truncate` rewinds (a scored continuation is forgotten), `keep` drops rows.
    """

    def __init__(self, n_layers: int, n_rows: int, kv_heads: int, head_dim: int, capacity: int,
                 dtype: torch.dtype, device: torch.device):
        shape = (n_rows, kv_heads, capacity, head_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.valid = torch.zeros((n_rows, capacity), dtype=torch.bool, device=device)
        self.length = 0
        self._adding = 0

    @property
    def capacity(self) -> int:
        return self.valid.shape[1]

    def open(self, valid_new: torch.Tensor) -> torch.Tensor:
        """Reserve S slots for the tokens of the next forward (`valid_new` (N, S)); returns the
        attention mask (N, 1, S, length + S): a real key slot at or before the query's slot."""
        n, s = valid_new.shape
        start, end = self.length, self.length + s
        if end > self.capacity:
            raise RuntimeError(f"KVCache: {end} slots needed, capacity {self.capacity}")
        self.valid[:, start:end] = valid_new
        q_slot = torch.arange(start, end, device=valid_new.device)[:, None]    # (S, 1)
        k_slot = torch.arange(end, device=valid_new.device)[None, :]           # (1, L)
        mask = self.valid[:, None, :end] & (k_slot <= q_slot)[None]            # (N, S, L)
        mask = mask | (k_slot == q_slot)[None]  # a padding query sees itself: no all-masked row (NaN)
        self._adding = s
        return mask[:, None]

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store layer `layer`'s new keys/values (N, kv_heads, S, head_dim); return all filled ones."""
        end = self.length + self._adding
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def close(self) -> None:
        self.length += self._adding
        self._adding = 0

    def truncate(self, length: int) -> None:
        self.length = length

    def start_with(self, prefix: "KVCache", source: torch.Tensor) -> None:
        """Begin every row i with the filled slots of `prefix`'s row source[i] (a prompt prefix that
        several rows share, computed once); this cache must be empty."""
        n = prefix.length
        for mine, theirs in ((self.keys, prefix.keys), (self.values, prefix.values)):
            for layer in range(len(mine)):
                mine[layer][:, :, :n] = theirs[layer][source, :, :n]
        self.valid[:, :n] = prefix.valid[source, :n]
        self.length = n

    def place(self, src: "KVCache", rows: torch.Tensor, length: int) -> None:
        """Rows `rows` take `src`'s filled slots, right-aligned to end at slot `length` (the slots
        before them invalid, as left padding); this cache is then filled up to `length`. Attention
        sees keys by validity and their stored positions, not by slot, so rows of caches of
        different widths decode together."""
        n = src.length
        if n > length or (self.length not in (0, length)):
            raise RuntimeError(f"KVCache.place: {n} slots into a cache filled to {self.length}, ending at {length}")
        for mine, theirs in ((self.keys, src.keys), (self.values, src.values)):
            for layer in range(len(mine)):
                mine[layer][rows, :, :length - n] = 0   # masked, but never garbage: 0 x NaN is NaN
                mine[layer][rows, :, length - n:length] = theirs[layer][:, :, :n]
        self.valid[rows, :length - n] = False
        self.valid[rows, length - n:length] = src.valid[:, :n]
        self.length = length

    def copy(self) -> "KVCache":
        """An independent cache with the same rows and filled slots (its own tensors, same capacity)."""
        other = copy.copy(self)
        other.keys = [t.clone() for t in self.keys]
        other.values = [t.clone() for t in self.values]
        other.valid = self.valid.clone()
        return other

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only rows `rows` (increasing indices into the current rows): their filled slots move to
        the front of the same tensors, one layer at a time, which then show the first len(rows) rows.
        Only a temporary of one layer's kept slots is allocated, never a new cache: finishing rows leave
        a decoding batch several times, and new tensors at each of those grew a long run's heap by about
        1 GB (BENCHMARKS.md)."""
        n, filled = len(rows), self.length
        for layer in range(len(self.keys)):
            for t in (self.keys[layer], self.values[layer]):
                t[:n, :, :filled] = t[rows, :, :filled]   # the gathered rows first, then written back
            self.keys[layer], self.values[layer] = self.keys[layer][:n], self.values[layer][:n]
        self.valid = self.valid.index_select(0, rows)


def new_cache(lm: nn.Module, n_rows: int, capacity: int) -> KVCache:
    decoder, _ = decoder_and_head(lm)
    c = decoder.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    w = decoder.embed_tokens.weight
    return KVCache(c.num_hidden_layers, n_rows, c.num_key_value_heads, head_dim, capacity, w.dtype, w.device)


def forward(lm: nn.Module, ids: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor,
            cache: KVCache) -> torch.Tensor:
    """Final hidden states (N, S, d) of tokens `ids` (N, S) at `positions` (N, S), appended to `cache`
    (`valid` (N, S): which of them are real tokens). The LM head is left to the caller, who usually
    needs it at a few positions only."""
    decoder, _ = decoder_and_head(lm)
    mask = cache.open(valid)
    h = decoder.embed_tokens(ids)
    cos, sin = decoder.rotary_emb(h, positions)
    n, s = ids.shape
    for i, layer in enumerate(decoder.layers):
        att = layer.self_attn
        x = layer.input_layernorm(h)
        q = att.q_proj(x).view(n, s, -1, att.head_dim).transpose(1, 2)      # (N, H, S, hd)
        k = att.k_proj(x).view(n, s, -1, att.head_dim).transpose(1, 2)      # (N, kvH, S, hd)
        v = att.v_proj(x).view(n, s, -1, att.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k, v = cache.write(i, k, v)                                          # (N, kvH, L, hd)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=att.scaling,
                                           enable_gqa=q.shape[1] != k.shape[1])
        h = h + att.o_proj(o.transpose(1, 2).reshape(n, s, -1))
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    cache.close()
    return decoder.norm(h)
