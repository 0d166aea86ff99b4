"""The FOMAML and Reptile updates against an independent plain-PyTorch computation, and the pitfalls."""
import copy

import pytest
import torch
from torch.func import functional_call

from metasft.models import add_lora, tiny_llama
from metasft.train.batching import collate, tokenize
from metasft.train.common import TrainModel
from metasft.train.distributed import World
from metasft.train.fomaml import outer_step, restore, snapshot
from metasft.train.loss import ResponseLoss

ROWS = [{"id": f"e{i}", "prompt": f"Compute {i} + {i + 3}.", "response": f"{i} + {i + 3} = {2 * i + 3}"}
        for i in range(12)]
INNER_LR, OUTER_LR, WD, CLIP, K = 0.05, 0.01, 0.01, 1.0, 2


def make_model(seed=0):
    base, tok = tiny_llama(seed=seed)
    lm = add_lora(base, rank=2, alpha=4, dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"])
    with torch.no_grad():  # LoRA B starts at zero; make θ generic so every adapter tensor gets a gradient
        g = torch.Generator().manual_seed(seed + 1)
        for n, p in lm.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    loss_module = ResponseLoss(lm)
    named = sorted(((n, p) for n, p in loss_module.named_parameters() if p.requires_grad), key=lambda x: x[0])
    return TrainModel(loss_module, [p for _, p in named], World(), tok.pad_token_id), lm, tok, named


@pytest.fixture(scope="module")
def setup():
    model, lm, tok, named = make_model()
    ex = tokenize(ROWS, tok, max_length=64, truncation="right")
    tasks = [("a", [ex[0:2], ex[2:4]], ex[4:6]), ("b", [ex[6:8], ex[8:10]], ex[10:12])]
    return model, lm, tok, named, tasks


def hf_loss(lm, params: dict, examples, pad_id):
    """Mean response-token CE through the model's own forward with labels (not metasft's loss)."""
    b = collate(examples, pad_id)
    return functional_call(lm, params, args=(), kwargs=dict(input_ids=b.input_ids, attention_mask=b.attention_mask,
                                                          labels=b.labels)).loss


def hand_meta_grad(lm, names, theta, tasks, pad_id, algorithm):
    grads = [torch.zeros_like(t) for t in theta]
    for _, support, query in tasks:
        w = [t.clone().requires_grad_(True) for t in theta]
        for batch in support:  # K plain SGD steps
            loss = hf_loss(lm, dict(zip(names, w)), batch, pad_id)
            g = torch.autograd.grad(loss, w)
            w = [(wi - INNER_LR * gi).detach().requires_grad_(True) for wi, gi in zip(w, g)]
        if algorithm == "fomaml":
            g = torch.autograd.grad(hf_loss(lm, dict(zip(names, w)), query, pad_id), w)
        else:
            g = [t - wi.detach() for t, wi in zip(theta, w)]
        grads = [acc + gi / len(tasks) for acc, gi in zip(grads, g)]
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    scale = min(1.0, CLIP / (float(norm) + 1e-6))
    return [g * scale for g in grads]


def hand_adamw_first_step(theta, grads, lr, wd, eps=1e-8):
    # AdamW step 1: m̂ = g, v̂ = g², θ ← θ(1 − lr·wd) − lr·g/(|g| + eps)
    return [t * (1 - lr * wd) - lr * g / (g.abs() + eps) for t, g in zip(theta, grads)]


@pytest.mark.floors
@pytest.mark.parametrize("algorithm", ["fomaml", "reptile"])
def test_outer_step_equals_independent_computation(setup, algorithm):
    model, lm, tok, named, tasks = setup
    names = [n[len("lm."):] for n, _ in named]
    theta = snapshot(model.params)
    expected_grad = hand_meta_grad(lm, names, theta, tasks, tok.pad_token_id, algorithm)
    assert all(g.abs().sum() > 0 for g in expected_grad)

    # 1) the meta-gradient itself: an SGD(lr=1) outer step moves θ by exactly -grad
    sgd = torch.optim.SGD(model.params, lr=1.0)
    outer_step(model, sgd, tasks, algorithm=algorithm, inner_lr=INNER_LR, inner_kind="sgd", clip_grad=CLIP, micro=8)
    for t, p, g in zip(theta, model.params, expected_grad):
        torch.testing.assert_close(t - p.detach(), g, atol=1e-6, rtol=1e-4)
    restore(model.params, theta)

    # 2) the trainer's AdamW update
    adamw = torch.optim.AdamW(model.params, lr=OUTER_LR, weight_decay=WD)
    outer_step(model, adamw, tasks, algorithm=algorithm, inner_lr=INNER_LR, inner_kind="sgd", clip_grad=CLIP, micro=8)
    expected = hand_adamw_first_step(theta, expected_grad, OUTER_LR, WD)
    # |g| tiny would make sign(g) unstable; compare where the gradient is clearly non-zero
    for e, p, g in zip(expected, model.params, expected_grad):
        mask = g.abs() > 1e-5
        torch.testing.assert_close(p.detach()[mask], e[mask], atol=1e-6, rtol=0)
    restore(model.params, theta)


def test_theta_is_restored_between_tasks_and_model_not_copied(setup, monkeypatch):
    model, lm, tok, named, tasks = setup
    theta = snapshot(model.params)
    seen = []
    import metasft.train.fomaml as F
    real_adapt = F.adapt

    def spy(m, support, opt, micro):
        seen.append([p.detach().clone() for p in m.params])  # weights at the start of each inner loop
        return real_adapt(m, support, opt, micro)

    def no_deepcopy(*a, **k):
        raise AssertionError("the model must not be deep-copied per task")

    monkeypatch.setattr(F, "adapt", spy)
    monkeypatch.setattr(copy, "deepcopy", no_deepcopy)
    outer_step(model, torch.optim.SGD(model.params, lr=0.0), tasks, algorithm="fomaml", inner_lr=INNER_LR,
               inner_kind="sgd", clip_grad=CLIP, micro=8)
    assert len(seen) == 2
    for start in seen:
        for s, t in zip(start, theta):
            assert torch.equal(s, t)
    for p, t in zip(model.params, theta):  # lr=0: θ back exactly
        assert torch.equal(p.detach(), t)


def test_inner_step_is_not_lost_on_bf16_base_weights():
    """With bf16 base weights the adapters stay float32, so an SGD step of lr 1e-5 moves them by
    exactly lr x grad; in bf16 (8 mantissa bits) most of that step would round away."""
    base, tok = tiny_llama()
    lm = add_lora(base.to(torch.bfloat16), rank=2, alpha=4, dropout=0.0, target_modules=["q_proj"])
    params = [p for p in lm.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for p in params)
    ids = torch.tensor([tok("The answer is 42.")["input_ids"]])
    lm(input_ids=ids, labels=ids).loss.backward()
    a = next(p for n, p in lm.named_parameters() if "lora_A" in n)  # B = 0 at init: A has no gradient yet
    b = next(p for n, p in lm.named_parameters() if "lora_B" in n)
    assert b.grad is not None and b.grad.abs().max() > 0
    before, lr = b.detach().clone(), 1e-5
    with torch.no_grad():
        b.sub_(lr * b.grad)
    assert torch.allclose(b.detach() - before, -lr * b.grad, rtol=1e-3, atol=1e-12)
    nonzero = a.detach().abs() > 0
    step = (lr * torch.randn_like(a)).to(torch.float32)
    lost = ((a.detach().bfloat16() + step.bfloat16()) == a.detach().bfloat16())[nonzero].float().mean()
    assert lost > 0.5  # the same size of step on bf16 values of A's magnitude mostly vanishes


def test_outer_lr_is_used(setup):
    model, lm, tok, named, tasks = setup
    theta = snapshot(model.params)
    moves = []
    for lr in (1e-3, 2e-3):
        opt = torch.optim.AdamW(model.params, lr=lr, weight_decay=0.0)
        outer_step(model, opt, tasks, algorithm="fomaml", inner_lr=INNER_LR, inner_kind="sgd", clip_grad=CLIP, micro=8)
        moves.append(sum(float((p.detach() - t).abs().sum()) for p, t in zip(model.params, theta)))
        restore(model.params, theta)
    assert moves[1] == pytest.approx(2 * moves[0], rel=1e-3)
