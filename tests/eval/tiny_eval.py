"""The tiny eval setup the eval tests share: a data directory with two eval tasks, a config, an adapter.
A helper module, not a test module."""
from __future__ import annotations

from pathlib import Path

import torch

from metasft.config import Config, DataArgs, EvalArgs, ModelArgs, TrainerArgs
from metasft.data.records import Record
from metasft.data.store import write_examples
from metasft.models import add_lora, tiny_llama
from metasft.manifests import DataManifest, EvalTaskEntry, MetaTaskEntry, Provenance, Relation, write_manifest
from metasft.rundir import eval_task_file

LORA = dict(rank=2, alpha=4, dropout=0.0, target_modules=["q_proj", "v_proj"])


def _arith(i: int, kind: str) -> Record:
    a, b = i + 2, 3 * i + 1
    return Record(id=f"{kind}-{i}", problem=f"What is {a} + {b}?", solution=f"{a} + {b} = {a + b}.",
                  answer=str(a + b), domain="arithmetic", subject="arithmetic", source="toy",
                  steps=(f"{a} + {b} = {a + b}",))


def _mcq(i: int, kind: str) -> Record:
    return Record(id=f"{kind}-{i}", problem=f"Which gas is element number {i + 1}?", solution="Look it up. (B)",
                  answer="B", domain="chemistry", subject="chemistry", source="toy", answer_type="choice",
                  choices=("helium", "hydrogen", "neon"))


def write_data_dir(root: Path) -> Path:
    """A built data directory: eval tasks `arith` (seen) and `mcq` (unseen, multiple choice), 3 test
    items and 6 shots each, n_shots [0, 2]; one meta-training task `alg` (support file only)."""
    tasks = {"arith": _arith, "mcq": _mcq}
    for name, make in tasks.items():
        write_examples(root / eval_task_file(name, "test"), [make(i, f"{name}-test") for i in range(3)], "en")
        write_examples(root / eval_task_file(name, "shots"), [make(i, f"{name}-shot") for i in range(10, 16)], "en")
    write_examples(root / "data" / "meta_train" / "alg_support.parquet", [_arith(i, "alg") for i in range(20, 26)], "en")
    relation = Relation("unseen_source", "unseen source")
    entry = lambda unseen: EvalTaskEntry("toy", [0, 2], unseen, relation, unseen, 4, {})
    write_manifest(root, DataManifest(seed=0, template="en", data_root=None, tasks={"alg": MetaTaskEntry("toy", {})},
                                      eval_tasks={"arith": entry(False), "mcq": entry(True)}, dedup_removed={},
                                      overlap_check="", code=Provenance(None, {})))
    return root


def tiny_config(**eval_overrides) -> Config:
    e = dict(seeds=[0, 1], adaptation_steps=2, adaptation_lr=1e-2, adaptation_batch_size=2,
             record_steps=[0, 1, 2], batch_size=4, max_new_tokens=4, grade_timeout_s=30.0)
    e.update(eval_overrides)
    return Config(model=ModelArgs(partial_pretrain="tiny-llama", lora_rank=LORA["rank"], lora_alpha=LORA["alpha"],
                                  target_modules=LORA["target_modules"]),
                  data=DataArgs(max_length=512), eval=EvalArgs(**e), trainer=TrainerArgs(device="cpu"))


def write_adapter(path: Path, seed: int = 1) -> Path:
    """A PEFT adapter for the tiny model with random (non-zero) B matrices."""
    model, _ = tiny_llama()
    peft = add_lora(model, **LORA)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in peft.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    peft.save_pretrained(str(path))
    return path


def base_and_tuned(root: Path):
    """(root, data directory, [the base model, a tuned adapter]) under `root`: the setup most eval tests share."""
    from metasft.eval.specs import ModelSpec
    data = write_data_dir(root / "data")
    return root, data, [ModelSpec("base", None), ModelSpec("tuned", write_adapter(root / "tuned_adapter"))]
