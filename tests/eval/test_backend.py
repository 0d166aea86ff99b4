"""A third evaluation backend written against `metasft.eval.backend.Backend` alone, in this one file:
plain PyTorch over the PEFT model (LoRA unmerged), one sequence at a time, its own greedy decoding,
log-likelihoods, losses and AdamW loop. Protocol A (`adaptation.run_group`) runs through it end to
end and stores what the Hugging Face backend (`Evaluator`) stores."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tiny_eval import LORA, base_and_tuned, tiny_config  # the shared tiny setup (tests/eval)

from metasft.eval.adaptation import run_group
from metasft.eval.backend import Backend
from metasft.eval.evaluator import Evaluator
from metasft.eval.generate import Completion, stop_token_ids
from metasft.eval.schedule import Group
from metasft.eval.scoring import Grader
from metasft.eval.specs import read_peft_adapter
from metasft.eval.tasks import load_task
from metasft.models import adapter_parameters, adapter_state, add_lora, load_adapter_state, tiny_llama
from metasft.train.batching import Sampler


class PlainTorch:
    """Backend: the tiny model with its LoRA, no batching, no KV cache, no merged weights."""

    def __init__(self, cfg):
        self.cfg = cfg
        model, self.tokenizer = tiny_llama()
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            self.peft = add_lora(model, **LORA)
        self.fresh = adapter_state(self.peft)
        self.stops = set(stop_token_ids(self.tokenizer))

    def load(self, spec) -> None:
        load_adapter_state(self.peft, self.fresh if spec.adapter is None else read_peft_adapter(spec.adapter, self.peft))

    def _response_ce(self, ids: list[int], start: int) -> torch.Tensor:
        """Summed cross-entropy of tokens ids[start:] given what precedes each."""
        logits = self.peft(input_ids=torch.tensor([ids])).logits[0].float()
        return F.cross_entropy(logits[start - 1:-1], torch.tensor(ids[start:]), reduction="sum")

    def adapt(self, shots, *, steps, lr, batch_size, seed, on_step=None) -> list[float]:
        params = adapter_parameters(self.peft)
        optimizer = torch.optim.AdamW(params, lr=lr)
        sampler, k, losses = Sampler(len(shots), seed=seed), min(batch_size, len(shots)), []
        self.peft.train()
        for step in range(1, steps + 1):
            batch = [shots[i] for i in sampler.next(k)]
            tokens = sum(len(e.input_ids) - e.n_prompt for e in batch)
            loss = sum(self._response_ce(list(e.input_ids), e.n_prompt) for e in batch) / tokens
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(step)
        for p in params:
            p.grad = None
        return losses

    @torch.no_grad()
    def reference_losses(self, examples):
        return [(float(self._response_ce(list(e.input_ids), e.n_prompt)), len(e.input_ids) - e.n_prompt)
                for e in examples]

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def loglikelihood(self, contexts, continuations):
        out = []
        for context, continuation in zip(contexts, continuations):
            ctx, whole = self._encode(context), self._encode(context + continuation)
            out.append(-float(self._response_ce(whole, len(ctx))))
        return out

    @torch.no_grad()
    def _decode(self, prompt: str, limit: int, pick) -> Completion:
        ids, new = self._encode(prompt), []
        for _ in range(limit):
            nxt = pick(self.peft(input_ids=torch.tensor([ids + new])).logits[0, -1].float())
            if nxt in self.stops:
                return Completion(self.tokenizer.decode(new, skip_special_tokens=True), False)
            new.append(nxt)
        return Completion(self.tokenizer.decode(new, skip_special_tokens=True), True)

    def complete(self, prompts, max_new_tokens):
        self.peft.eval()
        return [self._decode(p, n, lambda logits: int(logits.argmax())) for p, n in zip(prompts, max_new_tokens)]

    def sample(self, prompts, k, *, temperature, max_new_tokens, seed):
        g = torch.Generator().manual_seed(seed)
        draw = lambda logits: int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=g))
        self.peft.eval()
        return [[self._decode(p, max_new_tokens, draw) for _ in range(k)] for p in prompts]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return base_and_tuned(tmp_path_factory.mktemp("backend"))


def test_protocol_a_runs_through_a_third_backend_and_stores_what_the_hf_backend_stores(setup):
    _, data, models = setup
    cfg = tiny_config()
    toy: Backend = PlainTorch(cfg)
    hf: Backend = Evaluator(cfg, torch.device("cpu"))
    tuned = models[1]
    with Grader(n_workers=1) as grader:
        for name in ("arith", "mcq"):  # mcq: option log-likelihoods too
            group = Group("tuned", name, 2, 0)
            mine = run_group(toy, tuned, group, load_task(data, name, 4, toy.tokenizer, cfg), grader, None)
            theirs = run_group(hf, tuned, group, load_task(data, name, 4, hf.tokenizer, cfg), grader, None)
            for rows_a, rows_b in zip(mine, theirs):  # cells, then predictions
                assert len(rows_a) == len(rows_b) > 0
                for a, b in zip(rows_a, rows_b):
                    assert a.keys() == b.keys()
                    for key in a:
                        if isinstance(a[key], float) and not math.isnan(a[key]):
                            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (name, key)
                        else:
                            assert a[key] == b[key], (name, key)
            assert [c["step"] for c in mine[0]] == [0, 1, 2]
            assert mine[0][0]["loss"] != mine[0][-1]["loss"]  # adaptation moved the adapter
            if name == "mcq":
                assert all(p["ll_choice"] in "ABC" for p in mine[1])
