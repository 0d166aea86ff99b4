"""Tokenized examples, resumable seeded samplers and padded batches.

Each example is tokenized once: the chat-formatted prompt followed by the response; labels mask the
prompt with -100 so the loss sees response tokens only.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from metasft.data.formats import chat_text
from metasft.errors import MetasftError

IGNORE = -100


class TruncationError(MetasftError, ValueError):
    """An example is longer than data.max_length and data.truncation is 'error'."""


@dataclass(frozen=True)
class Example:
    id: str
    input_ids: tuple[int, ...]
    n_prompt: int  # tokens before the response starts (masked in the loss)

    @property
    def n_response(self) -> int:
        return len(self.input_ids) - self.n_prompt


def tokenize(rows: list[dict], tokenizer, *, max_length: int, truncation: str,
             use_chat_template: bool = True, where: str = "") -> list[Example]:
    """Tokenize SFT rows (`prompt`, `response`, `id`) into Examples of at most `max_length` tokens.

    truncation 'right' drops the end of the response, 'left' the start of the prompt, 'error' raises.
    """
    if not rows:  # a split a small task leaves empty (its validation set, say)
        return []
    texts = [chat_text(tokenizer, r["prompt"], r["response"], use_chat_template) for r in rows]
    prompts = tokenizer([p for p, _ in texts], add_special_tokens=False)["input_ids"]
    responses = tokenizer([s for _, s in texts], add_special_tokens=False)["input_ids"]
    out = []
    for row, p, s in zip(rows, prompts, responses):
        ids = p + s
        n_prompt = len(p)
        if len(ids) > max_length:
            if truncation == "error":
                raise TruncationError(f"{where} example {row['id']!r} has {len(ids)} tokens > "
                                      f"data.max_length={max_length} (data.truncation=error)")
            if truncation == "left":
                cut = len(ids) - max_length
                ids, n_prompt = ids[cut:], max(0, n_prompt - cut)
            else:
                ids = ids[:max_length]
        if len(ids) - n_prompt < 1:
            raise TruncationError(f"{where} example {row['id']!r}: no response token left within "
                                  f"data.max_length={max_length}; raise it or truncate left")
        out.append(Example(row["id"], tuple(ids), n_prompt))
    return out


class Sampler:
    """Endless batches from a fixed pool: a fresh seeded permutation each epoch.

    Its whole state is (epoch, position), so a resumed run draws exactly the batches it would have.
    Every call advances: the first batch is never drawn twice by accident (`next(iter(loader))`).
    """

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError("cannot sample from an empty pool")
        self.n, self.seed, self.epoch, self.pos = n, seed, 0, 0
        self._order = self._permutation()

    def _permutation(self) -> list[int]:
        order = list(range(self.n))
        random.Random(self.seed * 100_003 + self.epoch).shuffle(order)
        return order

    def next(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.pos == self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._permutation()
            take = min(k - len(out), self.n - self.pos)
            out.extend(self._order[self.pos:self.pos + take])
            self.pos += take
        return out

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, state: dict) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]
        self._order = self._permutation()


class BalancedSampler:
    """Endless batches that give every group (task) an equal share of the examples.

    Example g of the run comes from group g mod n, drawn by that group's own seeded `Sampler`; so after
    any number of examples the groups' counts differ by at most one, whatever their pool sizes. Same
    interface as `Sampler`; `next` returns indices into the concatenated pool.
    """

    def __init__(self, groups: list[list[int]], seed: int):
        if not groups or any(not g for g in groups):
            raise ValueError("cannot sample from an empty group")
        self.groups = groups
        self.samplers = [Sampler(len(g), seed * 1000 + i) for i, g in enumerate(groups)]
        self.pos = 0

    def next(self, k: int) -> list[int]:
        out = []
        for _ in range(k):
            g = self.pos % len(self.groups)
            out.append(self.groups[g][self.samplers[g].next(1)[0]])
            self.pos += 1
        return out

    def state(self) -> dict:
        return {"pos": self.pos, "groups": [s.state() for s in self.samplers]}

    def load(self, state: dict) -> None:
        self.pos = state["pos"]
        for s, st in zip(self.samplers, state["groups"]):
            s.load(st)


@dataclass
class Batch:
    input_ids: torch.Tensor       # (B, T) right-padded
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor          # (B, T), IGNORE on prompt and padding
    ids: list[str]

    @property
    def n_tokens(self) -> int:
        """Real (non-pad) tokens."""
        return int(self.attention_mask.sum())

    @property
    def n_response(self) -> int:
        return int((self.labels != IGNORE).sum())

    def to(self, device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device), self.ids)


def collate(examples: list[Example], pad_id: int) -> Batch:
    """Right-pad to the longest example in the batch."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        mask[i, :n] = 1
        labels[i, e.n_prompt:n] = ids[i, e.n_prompt:n]
    return Batch(ids, mask, labels, [e.id for e in examples])


def length_grouped(examples: list[Example], indices: list[int], micro: int) -> list[list[int]]:
    """Split `indices` into micro-batches of similar length (less padding, same examples)."""
    ordered = sorted(indices, key=lambda i: len(examples[i].input_ids))
    return [ordered[i:i + micro] for i in range(0, len(ordered), micro)]
