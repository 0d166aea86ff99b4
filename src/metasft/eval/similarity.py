"""Task similarity from adapter gradients: the design's first debugging step.

Each task's mean loss gradient with respect to the LoRA adapter, taken at one adapter state (the
base model with a fresh LoRA, or a trained adapter), and the cosine similarity between tasks. If
meta-training tasks point the same way, FOMAML's inner loops have little to specialise and it should
behave like SFT; the report draws the matrix as a heatmap and plots transfer against task distance
(1 − similarity).

At a fresh LoRA (B = 0) only the B matrices get a gradient: dL/dB = (dL/dW) Aᵀ, a random projection
of the full-weight gradient by the fixed A, which preserves inner products and so cosine similarities
approximately (Johnson–Lindenstrauss).
"""
from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch

from metasft.config import Config
from metasft.data.store import read_sft
from metasft.heap import release_freed
from metasft.manifests import DataManifest, read_manifest
from metasft.rundir import SIMILARITY_FILE, eval_task_file, meta_train_file, write_json
from metasft.train.batching import Example, tokenize
from metasft.train.common import TrainModel

log = logging.getLogger(__name__)


def task_gradients(model: TrainModel, tasks: dict[str, list[Example]], *, micro: int = 8) -> dict[str, torch.Tensor]:
    """Per task, d(token-mean response CE over its examples)/dθ flattened over the adapter (float32, CPU).

    The adapter is left as it was; `.grad` is cleared before and after each task.
    """
    out = {}
    for name, examples in tasks.items():
        if not examples:
            raise ValueError(f"task {name!r} has no examples for its gradient")
        model.zero_grad()
        model.backward(examples, micro)
        out[name] = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().float().flatten().cpu()
                               for p in model.params])
        model.zero_grad()
        release_freed()  # this task's activations: not under the next task's peak
    return out


def similarity_matrix(grads: dict[str, torch.Tensor]) -> tuple[list[str], np.ndarray]:
    """(task names, their pairwise cosine similarities): symmetric, ones on the diagonal."""
    names = list(grads)
    g = torch.stack([grads[n].double() for n in names])
    norms = g.norm(dim=1)
    zero = [n for n, v in zip(names, norms.tolist()) if v == 0]
    if zero:
        raise ValueError(f"zero gradient for task(s) {zero}: cosine similarity is undefined")
    unit = g / norms[:, None]
    sim = (unit @ unit.T).clamp(-1, 1)
    sim = (sim + sim.T) / 2  # exact symmetry despite rounding
    sim.fill_diagonal_(1.0)
    return names, sim.numpy()


def write_similarity(out_dir: Path, names: list[str], matrix: np.ndarray, meta: dict | None = None) -> Path:
    """`task_similarity.json`: tasks, similarity (cosine), distance (1 − similarity), and `meta`."""
    path = Path(out_dir) / SIMILARITY_FILE
    write_json(path, {"tasks": list(names), "similarity": np.asarray(matrix).tolist(),
                      "distance": (1.0 - np.asarray(matrix)).tolist(), **(meta or {})})
    return path


def similarity_examples(data_dir: Path, tokenizer, cfg: Config, n: int) -> dict[str, list[Example]]:
    """Up to `n` tokenized examples per task, drawn with a fixed seed: each meta-training task's
    support file, each eval task's pool of shots (what the model adapts on in protocol A)."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir, DataManifest)
    files = {t: data_dir / meta_train_file(t, "support") for t in manifest.tasks}
    files.update({t: data_dir / eval_task_file(t, "shots") for t in manifest.eval_tasks})
    d = cfg.data
    out = {}
    for name, path in files.items():
        rows = read_sft(path)
        rows = random.Random(f"similarity/{name}/{cfg.seed}").sample(rows, min(n, len(rows)))
        out[name] = tokenize(rows, tokenizer, max_length=d.max_length, truncation=d.truncation,
                             use_chat_template=d.use_chat_template, where=str(path))
    return out


def run_similarity(cfg: Config, data_dir: Path, out: Path, adapter: Path | str | None = None) -> Path:
    """Gradients of every task at `adapter` (None: a fresh LoRA) on `eval.similarity_batches` batches
    of `eval.adaptation_batch_size` examples each; writes and returns `out/task_similarity.json`."""
    from metasft.eval.evaluator import Evaluator, device_for
    from metasft.eval.specs import ModelSpec

    ev = Evaluator(cfg, device_for(cfg))
    ev.load(ModelSpec("similarity", adapter))
    n = cfg.eval.similarity_batches * cfg.eval.adaptation_batch_size
    examples = similarity_examples(data_dir, ev.tokenizer, cfg, n)
    log.info("similarity: adapter gradients of %d task(s), %d example(s) each, at %s", len(examples), n,
             adapter or "a fresh LoRA")
    ev.peft.train()
    # one example per forward + backward: the same token-mean gradient, its activations at their least
    # (two 384-token examples of the competition task held 1.9 GB more than the model)
    names, matrix = similarity_matrix(task_gradients(ev.model, examples, micro=1))
    manifest = read_manifest(Path(data_dir), DataManifest)
    meta = {"adapter": str(adapter) if adapter else "fresh LoRA", "examples_per_task": n,
            "meta_train_tasks": list(manifest.tasks), "eval_tasks": list(manifest.eval_tasks)}
    return write_similarity(out, names, matrix, meta)
