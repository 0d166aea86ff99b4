"""One evaluation of C stacked cells of a task, in shared batches (issue 10).

What `evaluator.evaluate_step` computes for one adapter (greedy outputs, each reference solution's
summed CE and token count, the option letter of highest log-likelihood), here for every cell of a
`StackedLora` at once: a decoding batch holds the same questions for all C cells, cell-major, each
row through its cell's adapter. Questions are sorted by prompt length and taken
`rows_per_batch // C` at a time.

One prompt forward per question and cell serves everything (the issue's "less work per cell"):
the prompt is prefilled once into our `KVCache`, and the prefix every prompt of the task shares
(the chat template's system turn and the instruction) once per cell and batch, copied into the
rows of that cell; the reference solution is scored by continuing from that cache with its tokens
(then the cache is rewound), the choice prefill "The answer is (" likewise, and greedy decoding
starts from the prompt's last logits. Today's one-cell path computes each prompt twice
(generation, then the loss over prompt + reference). If a reference example does not start with
its prompt's tokens (left truncation), the loss falls back to one full forward of the examples
(`ResponseLoss`) for the task.

Prefill and decoding want different batches: a prefill over a few thousand tokens already runs
the matmuls near the CPU's peak, and more rows only add padding, while a decoding step runs one
token per row, so it is the more efficient the more rows it holds. The prompts and references are
therefore prefilled in chunks of similar length (PREFILL_TOKENS), and the chunks' caches placed
side by side into one decoding batch of all the rows.

acc@k (`score(lora, samples=k)`): after the greedy pass, the decoding batch decodes k more times from
a copy of the prompts' cache, sampling, each row with the generator `HFBackend.sample` gives the
same question and sample (`generate.sample_seeds`), so the samples are those of the one-cell path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from metasft.data.records import OPTION_LETTERS
from metasft.eval.evaluator import CHOICE_PREFILL
from metasft.eval.generate import Completion, eval_mode, left_pad, row_generators, sample_seeds, sample_tokens, stop_token_ids
from metasft.eval.lora_forward import KVCache, check_supported, forward, new_cache
from metasft.eval.specs import EvalError
from metasft.eval.stacked_lora import RowCells, StackedLora
from metasft.eval.tasks import TaskData
from metasft.heap import release_freed
from metasft.train.batching import collate
from metasft.train.loss import decoder_and_head


# Reference-solution positions whose logits (x the vocabulary, float32) are computed at once: 512 x
# SmolLM2's 49k is 0.1 GB (and as much for the cross-entropy's log-softmax), where a batch's whole
# references (48 rows x ~300 tokens) took ~5 GB; 512 rows still run the head's matmul at full rate.
LOGIT_CHUNK = 512

# Padded tokens of the prompts and references prefilled in one pass. Matmuls over 2048 rows of
# tokens already run near the CPU's peak, so smaller passes only cut padding (prompts and references
# vary in length); the decoding batch that follows holds all the rows (BENCHMARKS.md).
PREFILL_TOKENS = 2048


@dataclass
class CellScores:
    """One cell's evaluation before grading, as `evaluator.step_result` takes it."""
    outputs: list[str]                    # greedy output per question
    losses: list[tuple[float, int]]       # (summed CE, tokens) of each question's reference solution
    ll_choice: dict[int, str]             # choice question -> option letter of highest log-likelihood
    cut_off: list[bool]                   # the output reached max_new_tokens without a stop token
    samples: list[list[Completion]] | None = None  # question -> its k sampled completions (acc@k)

    def completions(self) -> list[Completion]:
        return [Completion(t, c) for t, c in zip(self.outputs, self.cut_off)]


class GridScorer:
    """A task's token ids prepared once; `score(lora)` evaluates every cell of `lora` on it.

    `lm`: the (PEFT-wrapped) causal LM whose projections `lora` hooks; `loss_module`: its
    `ResponseLoss` (the fallback for examples that do not extend their prompt); `backend`: the
    one-cell `HFBackend`, whose tokenization and stop tokens (unless `stop_ids`) are used.
    """

    def __init__(self, lm, tokenizer, task: TaskData, *, rows_per_batch: int, loss_module, backend,
                 stop_ids: list[int] | None = None):
        check_supported(lm)
        self.lm, self.tokenizer, self.task = lm, tokenizer, task
        self.rows_per_batch, self.loss_module = rows_per_batch, loss_module
        _, self.head = decoder_and_head(lm)
        self.device = self.head.weight.device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_token_ids(tokenizer)[0]
        self.stop = torch.tensor(backend.stop_ids if stop_ids is None else stop_ids, device=self.device)
        self.prompts = [backend.encode(p) for p in task.prompts]
        self.prefix_len = shared_prefix_len(self.prompts)
        # reference tokens after the prompt, when every example starts with its prompt's tokens
        refs = [list(e.input_ids[e.n_prompt:]) for e in task.examples]
        shared = all(list(e.input_ids[:e.n_prompt]) == p for e, p in zip(task.examples, self.prompts))
        self.refs = refs if shared else None
        # choice questions: the prefill's tokens after the prompt and each option letter's token
        self.choices: dict[int, tuple[list[int], list[tuple[str, int]]]] = {}
        for q, r in enumerate(task.records):
            if r.answer_type != "choice":
                continue
            letters = []
            for letter in OPTION_LETTERS[:len(r.choices)]:
                ctx, cont = backend.encode_pair(task.prompts[q] + CHOICE_PREFILL, letter)
                p = self.prompts[q]
                if ctx[:len(p)] != p or len(ctx) == len(p) or len(cont) != 1:
                    raise EvalError(f"task {task.name} question {r.id}: the choice prefill does not extend the "
                                    f"prompt's tokens by whole tokens; use eval.cells_per_batch: 1")
                letters.append((letter, cont[0]))
            self.choices[q] = (ctx[len(p):], letters)

    # ------------------------------------------------------------------------------ entry point
    def score(self, lora: StackedLora, samples: int = 0, seed: int = 0, temperature: float = 1.0,
              on_batch: Callable[[float], None] | None = None) -> list[CellScores]:
        """Every cell of `lora` on every question of the task, in shared batches; with `samples` = k
        > 0 also k sampled completions per question (`HFBackend.sample(prompts, k, temperature,
        max_new_tokens, seed)`'s). `on_batch(share)` after each batch: the share of the questions it held."""
        n_cells, q_all = lora.n_cells, len(self.prompts)
        out = [CellScores([""] * q_all, [(0.0, 0)] * q_all, {}, [False] * q_all,
                          [[] for _ in range(q_all)] if samples else None) for _ in range(n_cells)]
        order = sorted(range(q_all), key=lambda q: -len(self.prompts[q]))
        per_batch = max(1, self.rows_per_batch // n_cells)
        seeds = sample_seeds(seed, q_all, samples) if samples else []
        release_freed()  # what the adaptation before left in the heap: not under this phase's own peak
        with eval_mode(self.lm):
            for start in range(0, q_all, per_batch):
                self._batch(lora, order[start:start + per_batch], out, samples, seeds, temperature)
                if on_batch is not None:
                    on_batch(len(order[start:start + per_batch]) / q_all)
        return out

    def _batch(self, lora: StackedLora, qs: list[int], out: list[CellScores], samples: int = 0,
               seeds: list[int] = (), temperature: float = 1.0) -> None:
        """Questions `qs` (longest prompt first) for all cells: the prompts are prefilled, and the
        references and option letters scored, in chunks of about PREFILL_TOKENS padded tokens (less
        padding, bounded activations); then every row decodes in one batch (rows cell-major:
        cell 0: qs, cell 1: qs, ...)."""
        n_cells, n_q = lora.n_cells, len(qs)
        shared = self.prefix_len
        prefix = self._shared_prefix(lora, qs[0]) if shared else None
        width = max(len(self.prompts[q]) for q in qs)
        cache = new_cache(self.lm, n_cells * n_q, width + max(self.task.max_new_tokens, 1))
        last = torch.empty((n_cells * n_q, self.head.out_features), device=self.device)  # prompts' last logits
        plen = torch.empty(n_cells * n_q, dtype=torch.long, device=self.device)          # real prompt tokens
        done = 0
        for chunk in self._chunks(qs, n_cells):
            rows = RowCells.blocks([len(chunk)] * n_cells, self.device)
            row_q = [q for _ in range(n_cells) for q in chunk]
            ids, valid, positions = self._left_pad([self.prompts[q][shared:] for q in row_q])
            ref_len = max((len(self.refs[q]) for q in chunk), default=0) if self.refs is not None else 0
            suffix_len = max((len(self.choices[q][0]) for q in chunk if q in self.choices), default=0)
            part = new_cache(self.lm, len(row_q), shared + ids.shape[1] + max(ref_len, suffix_len, 1))
            if prefix is not None:
                part.start_with(prefix, rows.cells)
            with lora.active(rows):
                part_last = self._logits(forward(self.lm, ids, positions + shared, valid, part)[:, -1])  # (n, V)
                part_plen = valid.sum(1) + shared                                  # (n,) real prompt tokens
                losses = (self._reference_losses(part, row_q, part_last, part_plen) if self.refs is not None
                          else self._full_losses(row_q))
                choices = self._choices(part, row_q, part_plen) if any(q in self.choices for q in chunk) else {}
            # this chunk's rows in the decoding batch: cell c's questions done .. done + len(chunk)
            dest = torch.tensor([c * n_q + done + j for c in range(n_cells) for j in range(len(chunk))],
                                device=self.device)
            cache.place(part, dest, width)
            last[dest], plen[dest] = part_last, part_plen
            for r, q in enumerate(row_q):
                cell = out[r // len(chunk)]
                cell.losses[q] = losses[r]
                if r in choices:
                    cell.ll_choice[q] = choices[r]
            done += len(chunk)
        rows = RowCells.blocks([n_q] * n_cells, self.device)
        prompts_only = cache.copy() if samples else None   # decoding writes into `cache`
        with lora.active(rows):
            outputs = self._decode(lora, rows, cache, last, plen)
        for r, (text, stopped) in enumerate(outputs):
            out[r // n_q].outputs[qs[r % n_q]] = text
            out[r // n_q].cut_off[qs[r % n_q]] = not stopped
        for j in range(samples):
            gens = row_generators([seeds[qs[r % n_q] * samples + j] for r in range(n_cells * n_q)], self.device)
            start = prompts_only.copy() if j + 1 < samples else prompts_only
            with lora.active(rows):
                drawn = self._decode(lora, rows, start, last, plen, gens, temperature)
            for r, (text, stopped) in enumerate(drawn):
                out[r // n_q].samples[qs[r % n_q]].append(Completion(text, not stopped))

    def _chunks(self, qs: list[int], n_cells: int) -> list[list[int]]:
        """`qs` in consecutive runs whose rows (n_cells per question) hold at most PREFILL_TOKENS
        padded tokens of prompt (after the shared prefix) plus reference or choice suffix; a question
        longer than that alone."""
        def padded(run: list[int]) -> int:
            prompt = max(len(self.prompts[q]) for q in run) - self.prefix_len
            ref = max(len(self.refs[q]) for q in run) if self.refs is not None else 0
            suffix = max((len(self.choices[q][0]) for q in run if q in self.choices), default=0)
            return n_cells * len(run) * (prompt + max(ref, suffix))
        runs: list[list[int]] = []
        for q in qs:
            if runs and padded(runs[-1] + [q]) <= PREFILL_TOKENS:
                runs[-1].append(q)
            else:
                runs.append([q])
        return runs

    # ------------------------------------------------------------------------------ pieces
    def _shared_prefix(self, lora: StackedLora, q: int) -> KVCache:
        """The task's shared prompt prefix through each cell's adapter: a cache with one row per cell."""
        n_cells, shared = lora.n_cells, self.prefix_len
        cache = new_cache(self.lm, n_cells, shared)
        ids = torch.tensor([self.prompts[q][:shared]] * n_cells, device=self.device)
        positions = torch.arange(shared, device=self.device).expand(n_cells, shared)
        with lora.active(RowCells.blocks([1] * n_cells, self.device)):
            forward(self.lm, ids, positions, torch.ones_like(ids, dtype=torch.bool), cache)
        return cache

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden).float()

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids, valid, positions), each (N, T), left-padded (`generate.left_pad`, the mask as bool)."""
        ids, mask, positions = left_pad(seqs, self.pad_id, self.device)
        return ids, mask.bool(), positions

    def _right_pad(self, seqs: list[list[int]], start: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(ids, valid, positions) of continuations, right-padded; row i's positions start at start[i]."""
        width = max(1, max(len(s) for s in seqs))
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        valid = torch.zeros((len(seqs), width), dtype=torch.bool)
        for i, s in enumerate(seqs):
            if s:
                ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
                valid[i, :len(s)] = True
        ids, valid = ids.to(self.device), valid.to(self.device)
        positions = start[:, None] + torch.arange(width, device=self.device)[None]
        return ids, valid, positions

    def _reference_losses(self, cache: KVCache, row_q: list[int], last: torch.Tensor,
                          plen: torch.Tensor) -> list[tuple[float, int]]:
        """(summed CE, tokens) of each row's reference solution, continuing from the prompt's cache:
        its first token is scored by the prompt's last logits, token j >= 1 by the continuation's
        output j - 1. The cache is rewound afterwards."""
        refs = [self.refs[q] for q in row_q]
        first = torch.tensor([r[0] for r in refs], device=self.device)
        sums = F.cross_entropy(last, first, reduction="none")                        # (N,)
        rest = [r[1:] for r in refs]
        if any(rest):
            filled = cache.length
            ids, valid, positions = self._right_pad([r[:-1] for r in refs], plen)
            hidden = forward(self.lm, ids, positions, valid, cache)                  # (N, R-1, d)
            cache.truncate(filled)
            targets, scored = self._right_pad(rest, plen)[:2]                       # (N, R-1)
            row_of, hidden, targets = scored.nonzero()[:, 0], hidden[scored], targets[scored]
            for start in range(0, len(targets), LOGIT_CHUNK):   # vocabulary-wide logits for a chunk at a time
                chunk = slice(start, start + LOGIT_CHUNK)
                ce = F.cross_entropy(self._logits(hidden[chunk]), targets[chunk], reduction="none")
                sums = sums.index_add(0, row_of[chunk], ce)
        return [(float(s), len(r)) for s, r in zip(sums.tolist(), refs)]

    def _full_losses(self, row_q: list[int]) -> list[tuple[float, int]]:
        """The same from one forward of prompt + reference (`ResponseLoss`), for examples whose
        tokens do not start with their prompt's."""
        b = collate([self.task.examples[q] for q in row_q], self.pad_id).to(self.device)
        sums, counts = self.loss_module(b.input_ids, b.attention_mask, b.labels, per_row=True)
        return [(float(s), int(c)) for s, c in zip(sums.tolist(), counts.tolist())]

    def _choices(self, cache: KVCache, row_q: list[int], plen: torch.Tensor) -> dict[int, str]:
        """Row -> the option letter of highest log P(letter | prompt + "The answer is ("), continuing
        from the prompt's cache (rewound afterwards); ties go to the earlier letter, as in
        `evaluator._choice_by_loglikelihood`."""
        filled = cache.length
        suffixes = [self.choices[q][0] if q in self.choices else [] for q in row_q]
        ids, valid, positions = self._right_pad(suffixes, plen)
        hidden = forward(self.lm, ids, positions, valid, cache)                      # (N, S, d)
        cache.truncate(filled)
        rows = [r for r, q in enumerate(row_q) if q in self.choices]
        at = torch.tensor([len(suffixes[r]) - 1 for r in rows], device=self.device)
        logprobs = torch.log_softmax(self._logits(hidden[torch.tensor(rows, device=self.device), at]), dim=-1)
        best = {}
        for j, r in enumerate(rows):
            scores = [(float(logprobs[j, tok]), letter) for letter, tok in self.choices[row_q[r]][1]]
            top = scores[0]
            for s in scores[1:]:
                if s[0] > top[0]:
                    top = s
            best[r] = top[1]
        return best

    def _decode(self, lora: StackedLora, rows: RowCells, cache: KVCache, last: torch.Tensor, plen: torch.Tensor,
                generators: list[torch.Generator] | None = None, temperature: float = 1.0) -> list[tuple[str, bool]]:
        """(text, stopped) of every row's continuation, up to a stop token (then `stopped`) or the
        task's max_new_tokens: greedy, or with `generators` (one per row) sampled at `temperature`
        (`generate.sample_tokens`).

        Finished rows leave the batch (and the cache, and the LoRA row layout) once they are an
        eighth of it: each removal copies the cache's filled slots, so until then they decode a pad
        token whose output is dropped (rows do not interact)."""
        limit = self.task.max_new_tokens
        new: list[list[int]] = [[] for _ in range(len(plen))]
        stopped_rows: set[int] = set()
        if limit > 0:
            alive = torch.arange(len(plen), device=self.device)    # original row of each row in the batch
            running = torch.ones(len(plen), dtype=torch.bool, device=self.device)
            pos = plen.clone()
            logits = last
            for step in range(limit):
                tok = (logits.argmax(dim=-1) if generators is None
                       else sample_tokens(logits, [generators[r] for r in alive.tolist()], temperature))
                stopped = running & torch.isin(tok, self.stop)
                for r, t, go, end in zip(alive.tolist(), tok.tolist(), (running & ~stopped).tolist(), stopped.tolist()):
                    if go:
                        new[r].append(t)
                    elif end:
                        stopped_rows.add(r)
                running = running & ~stopped
                n_running = int(running.sum())
                if n_running == 0 or step + 1 == limit:
                    break
                if len(alive) - n_running >= max(1, len(alive) // 8):
                    keep = running.nonzero().squeeze(1)
                    cache.keep(keep)
                    rows = rows.select(keep)
                    lora.set_rows(rows)
                    alive, tok, pos, running = alive[keep], tok[keep], pos[keep], running[keep]
                tok = torch.where(running, tok, self.pad_id)
                valid = torch.ones((len(alive), 1), dtype=torch.bool, device=self.device)
                logits = self._logits(forward(self.lm, tok[:, None], pos[:, None], valid, cache)[:, -1])
                pos = pos + 1
        return [(self.tokenizer.decode(t, skip_special_tokens=True), r in stopped_rows) for r, t in enumerate(new)]


def shared_prefix_len(prompts: list[list[int]]) -> int:
    """Tokens that every prompt starts with, leaving each prompt at least one token of its own."""
    if not prompts:
        return 0
    limit = min(len(p) for p in prompts) - 1
    n = 0
    while n < limit and all(p[n] == prompts[0][n] for p in prompts):
        n += 1
    return n
