"""Training throughput: metasft SFT vs transformers.Trainer, and FOMAML vs SFT, on one model and data.

    python benchmarks/bench_train.py --steps 24 --batch 8

Each arm runs in its own process (clean peak-memory figures) on the embedded SmolLM2-135M-Instruct
with the same PEFT LoRA (rank 16, all seven projections), the same tokenized embedded problems and the
same batch size. tokens/s counts real (non-pad) tokens, after `--warmup` steps. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARMS = ("trainer_sft", "metasft_sft", "metasft_fomaml")


def setup(batch: int):
    import torch
    from metasft.config import load_config
    from metasft.data.formats import to_sft
    from metasft.data.sources import load_source
    from metasft.train.batching import tokenize
    from metasft.train.distributed import World
    from metasft.train.run import build_model

    torch.manual_seed(0)
    cfg = load_config(None, ["model.partial_pretrain=smollm2-135m-instruct", "data.max_length=512"])
    lm, tok, named, model = build_model(cfg, World())
    records = load_source("embedded", "train", size=100)
    rows = [{"id": r.id, **to_sft(r, "en")} for r in records]
    examples = tokenize(rows, tok, max_length=512, truncation="right")
    return cfg, lm, tok, named, model, examples


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_metasft(arm: str, steps: int, warmup: int, batch: int) -> dict:
    from metasft.train.batching import Sampler
    from metasft.train.common import outer_optimizer
    from metasft.train.fomaml import InnerLoopGuard, TaskData, train_meta
    from metasft.train.session import Session, Sinks
    from metasft.train.sft import train_sft
    import random

    cfg, lm, tok, named, model, examples = setup(batch)
    rss_loaded = rss_mb()
    times, tokens = [], []

    class Timing(Session):
        def end_step(self, step, row, extra):
            times.append(time.perf_counter())
            tokens.append(self.budget.tokens)

    with tempfile.TemporaryDirectory() as tmp:
        opt = outer_optimizer(model.params, 1e-4, 0.01, [0.9, 0.999])
        session = Timing(out=Path(tmp), model=model, named_params=named, optimizer=opt,
                         sinks=Sinks(Path(tmp), [], False, {}), save_freq=0, test_freq=0,
                         total_steps=steps, val_fn=None, save_adapter=None, select_by="val_loss")
        if arm == "metasft_sft":
            train_sft(session, model, opt, examples, ["all"] * len(examples), Sampler(len(examples), 0),
                      budget_examples=steps * batch,
                      batch_size=batch, micro=batch, lr=1e-4, warmup_steps=0, clip_grad=1.0)
        else:
            by_domain: dict[str, list] = {}
            for e in examples:
                by_domain.setdefault(e.id.split("/")[2], []).append(e)
            tasks = [TaskData(name, ex[: len(ex) // 2], ex[len(ex) // 2:], Sampler(len(ex) // 2, 1),
                              Sampler(len(ex) - len(ex) // 2, 2)) for name, ex in sorted(by_domain.items())]
            # steps counted in optimizer passes over `batch` examples: K inner + 1 query per task
            k, meta_bs = 5, 3
            outer_steps = max(2, round(steps / (meta_bs * (k + 1))))
            session.total_steps = outer_steps
            train_meta(session, model, opt, tasks, algorithm="fomaml", total_steps=outer_steps,
                       meta_batch_size=meta_bs, num_inner_steps=k, inner_batch_size=batch, query_batch_size=batch,
                       inner_lr=1e-4, inner_kind="sgd", outer_lr=1e-4, warmup_steps=0, clip_grad=1.0,
                       micro=batch, task_rng=random.Random(0), task_counts={t.name: 0 for t in tasks},
                       guard=InnerLoopGuard(0.01, outer_steps))
            warmup = 1
    t0, n0 = times[warmup - 1], tokens[warmup - 1]
    return {"tokens_per_s": (tokens[-1] - n0) / (times[-1] - t0), "peak_rss_mb": rss_mb(),
            "rss_after_load_mb": rss_loaded, "measured_steps": len(times) - warmup}


def run_trainer(steps: int, warmup: int, batch: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    cfg, lm, tok, named, model, examples = setup(batch)
    rss_loaded = rss_mb()
    ds = Dataset.from_list([{"input_ids": list(e.input_ids),
                             "labels": [-100] * e.n_prompt + list(e.input_ids[e.n_prompt:])} for e in examples])
    base_collate = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    real_tokens: list[int] = []

    def collate(features):
        out = base_collate(features)
        real_tokens.append(int(out["attention_mask"].sum()))
        return out

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=batch, max_steps=steps,
                                 learning_rate=1e-4, weight_decay=0.01, max_grad_norm=1.0, logging_steps=10_000,
                                 save_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0,
                                 remove_unused_columns=False, seed=0)
        Trainer(model=lm, args=args, train_dataset=ds, data_collator=collate, callbacks=[Timer()]).train()
    # the dataloader collates one batch ahead at most; count the tokens of the measured steps
    measured = sum(real_tokens[warmup:steps])
    return {"tokens_per_s": measured / (times[steps - 1] - times[warmup - 1]), "peak_rss_mb": rss_mb(),
            "rss_after_load_mb": rss_loaded, "measured_steps": steps - warmup, "torch_threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--arm", choices=ARMS)
    a = p.parse_args()
    if a.arm:
        result = run_trainer(a.steps, a.warmup, a.batch) if a.arm == "trainer_sft" else \
            run_metasft(a.arm, a.steps, a.warmup, a.batch)
        print(json.dumps(result))
        return
    results = {}
    for arm in ARMS:
        cmd = [sys.executable, __file__, "--arm", arm, "--steps", str(a.steps), "--warmup", str(a.warmup),
               "--batch", str(a.batch)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[arm] = json.loads(proc.stdout.strip().splitlines()[-1])
    print("| arm | tokens/s | peak RSS (MB) | RSS after model load (MB) |\n|---|---|---|---|")
    for arm, r in results.items():
        print(f"| {arm} | {r['tokens_per_s']:.0f} | {r['peak_rss_mb']:.0f} | {r['rss_after_load_mb']:.0f} |")
    sft, tr, fo = (results[k] for k in ("metasft_sft", "trainer_sft", "metasft_fomaml"))
    print(f"\nmetasft SFT / Trainer tokens/s: {sft['tokens_per_s'] / tr['tokens_per_s']:.2f}")
    print(f"FOMAML / SFT tokens/s: {fo['tokens_per_s'] / sft['tokens_per_s']:.2f}")
    print(f"FOMAML / SFT peak RSS: {fo['peak_rss_mb'] / sft['peak_rss_mb']:.2f}; "
          f"above model load: {(fo['peak_rss_mb'] - fo['rss_after_load_mb']) / max(sft['peak_rss_mb'] - sft['rss_after_load_mb'], 1):.2f}")


if __name__ == "__main__":
    main()
