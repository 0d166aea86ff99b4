"""The evaluation stage's few-shot cells: the grid engine vs one group at a time, same cells, one run.

    python benchmarks/bench_grid.py [--config configs/experiment.yaml] [--n-groups N]
                                    [--cells-per-batch C] [--threads T] [key=value ...]

Builds the config's data (into a temporary directory), evaluates three models (the fresh LoRA, as
the arm `base`, and two random adapters standing in for the trained arms: the cost does not depend
on the adapter's values) on the config's eval settings, as `metasft eval` would:
  one    `adaptation.run_group` per few-shot group (eval.cells_per_batch: 1, today's path)
  grid   `grid.run_stack` over stacks of up to --cells-per-batch groups of one task (default: all
         of a task's groups in one stack)
The 0-shot results (step 0 of every few-shot group; the same code in both engines) are computed once
beforehand and reported apart. --n-groups keeps the first N few-shot groups (enumeration order).

Prints, per engine: cells/min (few-shot groups per minute), wall seconds split into adaptation and
evaluation (generation + reference loss + option scoring), adaptation tokens/s (real tokens of the
shot batches) and generated tokens/s (re-tokenized outputs, the same way for both), the FLOPs of
the matmuls with frozen weights (every projection and the LM head; counted from the rows each
one sees, backward of adaptation counted as a second forward: frozen weights need only input
gradients; attention score/value products and the small LoRA matmuls left out) with and without
padding, and the achieved FLOP/s as a share of the fp32 matmul peak measured here with a 2048^3
torch.mm. Last, how many stored cells are identical between the engines.
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path


class Meter:
    """Phase-labelled counters: wall seconds, tokens and matmul FLOPs (padding included/excluded)."""

    def __init__(self):
        self.phase = "adapt"
        self.seconds = defaultdict(float)
        self.flops = defaultdict(float)        # (phase) -> FLOPs, padding included
        self.flops_real = defaultdict(float)   # padding excluded
        self.real_fraction = 1.0                # of the rows of the forward under way

    @contextlib.contextmanager
    def during(self, phase: str):
        previous, self.phase = self.phase, phase
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start
            self.phase = previous

    def linear_hook(self, module, inputs, output):
        x = inputs[0]
        rows = x.numel() // x.shape[-1]
        f = 2.0 * rows * module.in_features * module.out_features * (2 if self.phase == "adapt" else 1)
        self.flops[self.phase] += f
        self.flops_real[self.phase] += f * self.real_fraction

    def head_hook(self, module, inputs, output):  # the head only ever sees real positions here
        x = inputs[0]
        f = 2.0 * (x.numel() // x.shape[-1]) * module.in_features * module.out_features
        f *= 2 if self.phase == "adapt" else 1
        self.flops[self.phase] += f
        self.flops_real[self.phase] += f


def matmul_peak(threads: int) -> float:
    import torch
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/experiment.yaml")
    ap.add_argument("--n-groups", type=int, default=None, help="keep the first N few-shot groups")
    ap.add_argument("--cells-per-batch", type=int, default=None, help="grid stack size (default: a task's groups)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = ap.parse_args()

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from metasft.config import eval_dtype, load_config
    from metasft.data.build import build_data
    from metasft.eval import adaptation as A
    from metasft.eval import grid_eval
    from metasft.eval.evaluator import Evaluator, evaluate_steps
    from metasft.eval.grid import run_stack
    from metasft.eval.schedule import enumerate_groups, stacks
    from metasft.eval.scoring import Grader
    from metasft.eval.specs import ModelSpec
    from metasft.eval.tasks import load_task
    from metasft.models import load_adapter_state
    from metasft.train.loss import decoder_and_head

    cfg = load_config(args.config, args.overrides)
    tmp = Path(tempfile.mkdtemp(prefix="bench_grid_"))
    info = build_data(cfg, tmp / "data").eval_tasks
    ev = Evaluator(cfg, torch.device("cpu"), eval_dtype(cfg))

    # three models: the fresh LoRA and two random adapters saved as PEFT directories
    models = [ModelSpec("base")]
    g = torch.Generator().manual_seed(0)
    for k in (1, 2):
        with torch.no_grad():
            for name, p in ev.peft.named_parameters():
                if p.requires_grad and "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 1e-3)
        ev.peft.save_pretrained(str(tmp / f"adapter{k}"))
        models.append(ModelSpec(f"arm{k}", tmp / f"adapter{k}"))
    load_adapter_state(ev.peft, ev.fresh)

    groups = [g for g in enumerate_groups(models, {t: i.n_shots for t, i in info.items()}, cfg.eval.seeds)
              if g.n_shots > 0][: args.n_groups]
    specs = {m.name: m for m in models}
    tasks = {t: load_task(tmp / "data", t, info[t].max_new_tokens, ev.tokenizer, cfg) for t in sorted({g.task for g in groups})}

    meter = Meter()
    decoder, head = decoder_and_head(ev.peft)
    hooks = [m.register_forward_hook(meter.linear_hook) for m in decoder.modules()
             if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad]
    hooks.append(head.register_forward_hook(meter.head_hook))

    def hf_real_fraction(module, args_, kwargs):  # HF forwards: real tokens among the new ones
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        if ids is not None and mask is not None:
            meter.real_fraction = float(mask[:, -ids.shape[1]:].float().mean())
        else:
            meter.real_fraction = 1.0
    hooks.append(decoder.register_forward_pre_hook(hf_real_fraction, with_kwargs=True))
    ours = grid_eval.forward

    def counted_forward(lm, ids, positions, valid, cache):  # the grid's own forward
        meter.real_fraction = float(valid.float().mean())
        return ours(lm, ids, positions, valid, cache)
    grid_eval.forward = counted_forward

    results: dict[str, dict] = {}
    with Grader(timeout_s=cfg.eval.grade_timeout_s) as grader:
        zero = {}
        with meter.during("zero-shot"):
            for m in models:
                ev.load(m)
                for t, r in zip(tasks, evaluate_steps(ev, list(tasks.values()), grader)):
                    zero[(m.name, t)] = r

        # engine 1: one group at a time (evaluation timed inside adapt's on_step)
        original_eval = A.evaluate_step

        def timed_eval(*a, **k):
            with meter.during("eval"):
                return original_eval(*a, **k)
        A.evaluate_step = timed_eval
        start = time.perf_counter()
        with meter.during("adapt"):
            one = [A.run_group(ev, specs[g.model], g, tasks[g.task], grader, zero[(g.model, g.task)]) for g in groups]
        results["one"] = _summary(meter, time.perf_counter() - start, one, ev.tokenizer)
        A.evaluate_step = original_eval

        # engine 2: the grid
        original_score = grid_eval.GridScorer.score

        def timed_score(self, lora):
            with meter.during("eval"):
                return original_score(self, lora)
        grid_eval.GridScorer.score = timed_score
        size = args.cells_per_batch or len(groups)
        start = time.perf_counter()
        grid = []
        with meter.during("adapt"):
            for unit in stacks(groups, size):
                grid += run_stack(ev, [specs[g.model] for g in unit], unit, tasks[unit[0].task], grader,
                                  [zero[(g.model, g.task)] for g in unit])
        order = {g: i for i, g in enumerate(u for unit in stacks(groups, size) for u in unit)}
        grid = [grid[order[g]] for g in groups]
        results["grid"] = _summary(meter, time.perf_counter() - start, grid, ev.tokenizer)
        grid_eval.GridScorer.score = original_score
    for h in hooks:
        h.remove()

    shot_tokens = _adaptation_tokens(groups, tasks, cfg)
    peak = matmul_peak(torch.get_num_threads())
    print(f"\n{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{cfg.model.partial_pretrain}, {len(groups)} few-shot groups ({len(tasks)} tasks, "
          f"{cfg.eval.adaptation_steps} steps of {cfg.eval.adaptation_batch_size}, recorded "
          f"{cfg.eval.record_steps}), grid stacks of {size}, eval.batch_size {cfg.eval.batch_size}")
    print(f"0-shot results (shared, untimed below): {meter.seconds['zero-shot']:.1f} s; "
          f"fp32 matmul peak (2048^3 mm): {peak / 1e9:.1f} GFLOP/s\n")
    print("| engine | cells/min | seconds | adaptation s | evaluation s | adaptation tokens/s | generated tokens/s "
          "| GFLOP (padded) | GFLOP (real) | GFLOP/s | share of peak |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        rate = r["flops"] / r["seconds"]
        print(f"| {name} | {60 * len(groups) / r['seconds']:.2f} | {r['seconds']:.1f} | {r['adapt_s']:.1f} | "
              f"{r['eval_s']:.1f} | {shot_tokens / r['adapt_s']:.0f} | {r['generated'] / r['eval_s']:.0f} | "
              f"{r['flops'] / 1e9:.0f} | {r['flops_real'] / 1e9:.0f} | {rate / 1e9:.1f} | {rate / peak:.0%} |")
    speedup = results["one"]["seconds"] / results["grid"]["seconds"]
    same = sum(_same(a, b) for a, b in zip(one, grid))
    print(f"\ngrid / one cells per minute: {speedup:.2f}x; groups with identical outputs and accuracy "
          f"(losses within 1e-5): {same}/{len(groups)}")


def _summary(meter: Meter, seconds: float, rows: list, tokenizer) -> dict:
    """This engine's share of the meter (which is then reset) and its generated tokens."""
    generated = sum(len(tokenizer(p["output"], add_special_tokens=False)["input_ids"])
                    for _, preds in rows for p in preds if p["step"] > 0)
    out = {"seconds": seconds, "eval_s": meter.seconds["eval"], "adapt_s": seconds - meter.seconds["eval"],
           "flops": meter.flops["adapt"] + meter.flops["eval"],
           "flops_real": meter.flops_real["adapt"] + meter.flops_real["eval"], "generated": generated}
    for d in (meter.flops, meter.flops_real):
        d["adapt"] = d["eval"] = 0.0
    meter.seconds["eval"] = meter.seconds["adapt"] = 0.0
    return out


def _adaptation_tokens(groups, tasks, cfg) -> int:
    """Real tokens of every adaptation batch (the same batches in both engines)."""
    from metasft.eval.schedule import shot_indices, stable_seed
    from metasft.train.batching import Sampler
    e, total = cfg.eval, 0
    for g in groups:
        task = tasks[g.task]
        idx = shot_indices(g.task, g.n_shots, g.seed, len(task.shots))
        sampler = Sampler(len(idx), seed=stable_seed("batches", g.task, g.n_shots, g.seed))
        for _ in range(e.adaptation_steps):
            total += sum(len(task.shots[idx[i]].input_ids) for i in sampler.next(min(e.adaptation_batch_size, len(idx))))
    return total


def _same(a, b) -> bool:
    (cells_a, preds_a), (cells_b, preds_b) = a, b
    return ([p["output"] for p in preds_a] == [p["output"] for p in preds_b]
            and [c["accuracy"] for c in cells_a] == [c["accuracy"] for c in cells_b]
            and all(abs(x["loss"] - y["loss"]) <= 1e-5 * abs(y["loss"]) for x, y in zip(cells_a, cells_b)))


if __name__ == "__main__":
    main()
