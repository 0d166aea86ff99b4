"""Run by tests/train/test_distributed.py under `torchrun --nproc_per_node N` (or alone, N=1).

One FOMAML outer step on the tiny model from a fixed θ and fixed global batches; rank 0 writes the
resulting whole adapter tensors to argv[1]. argv[2]: "fsdp" or "replicated".
"""
import sys

import torch
from safetensors.torch import save_file

from metasft.models import add_lora, tiny_llama
from metasft.train.batching import tokenize
from metasft.train.checkpoint import adapter_tensors
from metasft.train.common import TrainModel
from metasft.train.distributed import copy_full_into, init_world, wrap
from metasft.train.fomaml import outer_step
from metasft.train.loss import ResponseLoss

ROWS = [{"id": f"e{i}", "prompt": f"Compute {i} * {i + 2}" + " please" * (i % 3),
         "response": f"{i} * {i + 2} = {i * (i + 2)}"} for i in range(16)]


def main(out: str, mode: str) -> None:
    world = init_world("cpu", fsdp=(mode == "fsdp"))
    base, tok = tiny_llama(seed=0)
    lm = add_lora(base, rank=2, alpha=4, dropout=0.0, target_modules=["q_proj", "v_proj"])
    g = torch.Generator().manual_seed(1)
    theta = {n: torch.randn(p.shape, generator=g) * 0.05 for n, p in sorted(lm.named_parameters()) if p.requires_grad}
    loss_module = wrap(ResponseLoss(lm), world)
    named = sorted(((n, p) for n, p in loss_module.named_parameters() if p.requires_grad), key=lambda x: x[0])
    for n, p in named:
        copy_full_into(p, theta[n[len("lm."):]])
    model = TrainModel(loss_module, [p for _, p in named], world, tok.pad_token_id)
    ex = tokenize(ROWS, tok, max_length=64, truncation="right")
    tasks = [("a", [ex[0:4], ex[4:8]], ex[8:12]), ("b", [ex[12:16], ex[0:4]], ex[4:8])]
    opt = torch.optim.AdamW(model.params, lr=1e-2, weight_decay=0.01)
    outer_step(model, opt, tasks, algorithm="fomaml", inner_lr=0.05, inner_kind="sgd", clip_grad=1.0, micro=2)
    tensors = adapter_tensors(named)
    if world.main:
        save_file(tensors, out)
    if world.distributed:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
