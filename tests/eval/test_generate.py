"""HFBackend against references: `model.generate` one prompt at a time, and log-probs by hand."""
from __future__ import annotations

import math

import pytest
import torch

from metasft.data.formats import chat_text
from metasft.eval.generate import HFBackend, LoraMerger, stop_token_ids

pytestmark = pytest.mark.floors

PROBLEMS = [
    "What is 2 + 2?",
    "Solve for x: 3x + 5 = 20. Show every step and box the final answer.",
    "A train travels 120 km in 2 hours, then 60 km in 1.5 hours. What is its average speed over the "
    "whole journey, in km/h? Explain.",
    "Is 91 prime?",
    "Compute the derivative of x^3 - 4x.",
]


@pytest.fixture(scope="module")
def lm():
    """The tiny Llama with large random layer weights: at its default init the tied embeddings make it
    repeat the prompt's last token forever, which would hide padding and position errors."""
    from metasft.models import tiny_llama
    model, tokenizer = tiny_llama(seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.model.layers.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model, tokenizer


def _prompts(tokenizer) -> list[str]:
    return [chat_text(tokenizer, p, None)[0] for p in PROBLEMS]


def _reference(model, tokenizer, prompt: str, max_new_tokens: int, stop_ids: list[int]) -> list[int]:
    """`model.generate`, one prompt alone (no padding), stop token removed."""
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=max_new_tokens, eos_token_id=stop_ids,
                             pad_token_id=0)  # one row: never padded (older transformers want an id)
    new = out[0, ids.shape[1]:].tolist()
    for i, t in enumerate(new):
        if t in stop_ids:
            return new[:i]
    return new


def _tokens(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_batched_greedy_equals_one_at_a_time(lm):
    model, tokenizer = lm
    prompts = _prompts(tokenizer)
    assert len({len(_tokens(tokenizer, p)) for p in prompts}) == len(prompts)  # left padding is exercised
    backend = HFBackend(model, tokenizer, batch_size=3)
    outputs = backend.generate(prompts, max_new_tokens=12)
    stops = stop_token_ids(tokenizer)
    for prompt, text in zip(prompts, outputs):
        expected = _reference(model, tokenizer, prompt, 12, stops)
        assert text == tokenizer.decode(expected, skip_special_tokens=True)
        assert len(expected) == 12  # the random tiny model does not stop: every token is compared
    assert len(set(outputs)) == len(outputs)


def test_stops_at_stop_token_and_keeps_order(lm):
    """A stop token chosen from a sequence's own greedy output ends it there; the other sequences of
    the batch (some dropped from the cache mid-batch) still match their one-at-a-time output."""
    model, tokenizer = lm
    prompts = _prompts(tokenizer)
    free = [_reference(model, tokenizer, p, 10, []) for p in prompts]
    stop = free[1][4]  # sequence 1 must stop at the first occurrence of this token
    backend = HFBackend(model, tokenizer, batch_size=4, stop_ids=[stop])
    outputs = backend.generate(prompts, max_new_tokens=10)
    assert model.training  # restored after generation (tiny_llama builds it in train mode)
    cut = [seq[:seq.index(stop)] if stop in seq else seq for seq in free]
    assert len(cut[1]) <= 4
    assert any(len(c) == 10 for c in cut)  # some sequences run to the end after others stopped
    for text, expected in zip(outputs, cut):
        assert text == tokenizer.decode(expected, skip_special_tokens=True)
    # reversed input order: outputs follow the inputs, not the length-sorted batches
    assert backend.generate(prompts[::-1], max_new_tokens=10) == outputs[::-1]


def test_per_prompt_limits_share_batches(lm):
    """One limit per prompt (tasks evaluated together): each output is its one-at-a-time greedy
    output cut at its own limit, 0 included, while longer rows of the same batch go on."""
    model, tokenizer = lm
    prompts = _prompts(tokenizer)
    limits = [3, 12, 0, 7, 12]
    backend = HFBackend(model, tokenizer, batch_size=5, stop_ids=[-1])
    outputs = backend.generate(prompts, max_new_tokens=limits)
    for prompt, limit, text in zip(prompts, limits, outputs):
        assert text == tokenizer.decode(_reference(model, tokenizer, prompt, 12, [])[:limit], skip_special_tokens=True)
    assert outputs[2] == ""
    with pytest.raises(ValueError, match="2 max_new_tokens for 5 prompts"):
        backend.generate(prompts, max_new_tokens=[1, 2])


def test_cut_off_is_a_limit_reached_without_a_stop_token(lm):
    """An output is cut off when it reaches its max_new_tokens before a stop token: with the stop token
    as the (j+1)-th greedy token, a limit of j + 1 ends at it and a limit of j cuts the output off."""
    model, tokenizer = lm
    prompt = _prompts(tokenizer)[0]
    free = _reference(model, tokenizer, prompt, 10, [])
    j = free.index(free[1])
    backend = HFBackend(model, tokenizer, batch_size=3, stop_ids=[free[1]])
    done, cut, never = backend.complete([prompt] * 3, max_new_tokens=[j + 1, j, 10])
    text = tokenizer.decode(free[:j], skip_special_tokens=True)
    assert (done.text, done.cut_off) == (text, False) and (cut.text, cut.cut_off) == (text, True)
    assert never == done  # a longer limit ends at the same stop token
    assert backend.generate([prompt], max_new_tokens=j) == [text]


def test_a_batch_ends_when_each_row_is_done(lm, monkeypatch):
    """A row that has its own limit's tokens is done even though the batch's longest limit is not
    reached: with row 0 stopped by a stop token after two tokens and row 1 at its limit of 3, the
    batch takes three forward passes (prefill and two steps), not ten."""
    model, tokenizer = lm
    prompts = _prompts(tokenizer)[:2]
    free = _reference(model, tokenizer, prompts[0], 10, [])
    backend = HFBackend(model, tokenizer, batch_size=2, stop_ids=[free[1]])
    calls = []
    forward = model.forward

    def counting(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counting)
    outputs = backend.generate(prompts, max_new_tokens=[10, 3])
    assert len(calls) <= 3
    assert outputs[0] == tokenizer.decode(free[:free.index(free[1])], skip_special_tokens=True)


def test_sample_is_reproducible_and_shaped(lm):
    model, tokenizer = lm
    backend = HFBackend(model, tokenizer, batch_size=4)
    prompts = _prompts(tokenizer)[:2]
    a = backend.sample(prompts, n=3, temperature=1.0, max_new_tokens=5, seed=1)
    b = backend.sample(prompts, n=3, temperature=1.0, max_new_tokens=5, seed=1)
    assert a == b and len(a) == 2 and all(len(x) == 3 for x in a)
    assert len({s for x in a for s in x}) > 1  # sampling, not greedy


def test_sampled_tokens_follow_the_softmax_and_their_own_generator():
    """`sample_tokens` draws from softmax(logits / T): frequencies over 20,000 rows within 0.015 of the
    probabilities computed here; a row's token depends on its generator only (the same seed in a batch
    of other rows draws the same token)."""
    from metasft.eval.generate import row_generators, sample_tokens
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
    for temperature in (1.0, 0.5):
        weights = [math.exp(x / temperature) for x in logits.tolist()]
        probs = [w / sum(weights) for w in weights]
        tok = sample_tokens(logits.expand(20_000, -1), row_generators(range(20_000), torch.device("cpu")),
                            temperature)
        freq = torch.bincount(tok, minlength=5).double() / 20_000
        assert max(abs(f - p) for f, p in zip(freq.tolist(), probs)) < 0.015, (freq, probs)
    alone = sample_tokens(logits[None], row_generators([7], torch.device("cpu")), 1.0)
    batch = sample_tokens(torch.randn(4, 5).index_copy(0, torch.tensor([2]), logits[None]),
                          row_generators([1, 2, 7, 3], torch.device("cpu")), 1.0)
    assert batch[2] == alone[0]


def test_loglikelihood_matches_hand_computation(lm):
    model, tokenizer = lm
    prompt = _prompts(tokenizer)[1] + "The answer is ("
    contexts = [prompt] * 4 + [_prompts(tokenizer)[0], "Short context "]
    continuations = ["A", "B", "C", "D", "The answer is 4.", "and a longer continuation here"]
    backend = HFBackend(model, tokenizer, batch_size=4)
    got = backend.loglikelihood(contexts, continuations)

    for ctx, cont, value in zip(contexts, continuations, got):
        stripped = ctx.rstrip()  # lm-eval's convention: trailing white space belongs to the continuation
        ctx, cont = stripped, ctx[len(stripped):] + cont
        ctx_ids = _tokens(tokenizer, ctx)
        whole = _tokens(tokenizer, ctx + cont)
        assert whole[:len(ctx_ids)] == ctx_ids
        with torch.no_grad():
            logits = model(torch.tensor([whole])).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        expected = sum(float(logp[t - 1, whole[t]]) for t in range(len(ctx_ids), len(whole)))
        assert value == pytest.approx(expected, abs=1e-4)
    assert len(set(got[:4])) == 4


def test_loglikelihood_shares_one_forward_per_context(lm, monkeypatch):
    model, tokenizer = lm
    backend = HFBackend(model, tokenizer, batch_size=8)
    calls = []
    forward = model.forward

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape)
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counting)
    prompts = [p + "The answer is (" for p in _prompts(tokenizer)[:3]]
    backend.loglikelihood([p for p in prompts for _ in "ABCD"], [x for _ in prompts for x in "ABCD"])
    assert len(calls) == 1 and calls[0][0] == 3  # one batch of three rows: one per question


def test_lora_merger_matches_unmerged_and_restores_exactly(lm):
    from metasft.models import add_lora
    model, tokenizer = lm
    peft = add_lora(model, rank=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"])
    try:
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for p in peft.parameters():
                if p.requires_grad:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        base = {n: p.detach().clone() for n, p in peft.named_parameters()}
        ids = torch.tensor([_tokens(tokenizer, _prompts(tokenizer)[2])])
        with torch.no_grad():
            unmerged = peft(ids).logits
            with peft.disable_adapter():
                plain = peft(ids).logits
        merger = LoraMerger(peft)
        with pytest.raises(RuntimeError, match="inside"):
            with merger(), torch.no_grad():
                merged = peft(ids).logits
                assert not all(torch.equal(p, base[n]) for n, p in peft.named_parameters())  # really merged
                raise RuntimeError("inside")
        assert not torch.allclose(unmerged, plain, atol=1e-3)  # the adapter matters
        torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-4)
        assert all(torch.equal(p, base[n]) for n, p in peft.named_parameters())  # bit-equal after an error too
        with torch.no_grad():
            assert torch.equal(peft(ids).logits, unmerged)  # back to the unmerged forward
    finally:
        peft.unload()  # the module-scoped model is shared with the other tests


@pytest.mark.slow
def test_real_model_stops_at_end_of_turn():
    from metasft.models import load_base
    model, tokenizer = load_base("smollm2-135m-instruct")
    prompts = [chat_text(tokenizer, "Reply with the single word: yes", None)[0],
               chat_text(tokenizer, "What is 1 + 1? Answer briefly.", None)[0]]
    backend = HFBackend(model, tokenizer, batch_size=2)
    outputs = backend.generate(prompts, max_new_tokens=40)
    for prompt, text in zip(prompts, outputs):
        expected = _reference(model, tokenizer, prompt, 40, stop_token_ids(tokenizer))
        assert len(expected) < 40  # the instruct model ends its turn
        assert text == tokenizer.decode(expected, skip_special_tokens=True)
