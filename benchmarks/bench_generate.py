"""Greedy generation throughput: HFBackend.generate vs plain `model.generate`, same model and questions.

    python benchmarks/bench_generate.py --n 32 --max-new-tokens 96 --batch 16 --threads 1

The embedded SmolLM2-135M-Instruct with a fresh PEFT LoRA (rank 16, all seven projections: what every
evaluated model is), `--n` questions of the embedded generator's test split (every domain), chat
formatted as in evaluation. Variants, all greedy and stopping at the end-of-turn token:
  hf_one            model.generate, one question at a time
  hf_batched        model.generate on left-padded batches of --batch, in input order
  backend           HFBackend.generate: model.generate on length-sorted left-padded batches
  backend_merged    the same with the LoRA update folded into the base weights (LoraMerger): what
                    `metasft eval` runs
  backend_merged_2x backend_merged with batches of 2 x --batch
tokens/s counts generated tokens (stop token excluded) of the decoded texts re-tokenized, the same way
for every variant. Prints a markdown table: speed and identical output texts relative to the first
variant run (the baseline).
"""
from __future__ import annotations

import argparse
import os
import platform
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--variants", default="hf_one,hf_batched,backend,backend_merged,backend_merged_2x")
    args = ap.parse_args()

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from metasft.data.formats import build_prompt, chat_text
    from metasft.data.sources import load_source
    from metasft.eval.generate import HFBackend, LoraMerger, stop_token_ids
    from metasft.models import add_lora, load_base

    model, tok = load_base("smollm2-135m-instruct")
    torch.manual_seed(0)
    peft = add_lora(model, rank=16, alpha=32, dropout=0.0,
                    target_modules=["q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    peft.eval()
    records = load_source("embedded", "test", size=50)
    records = records[:: max(1, len(records) // args.n)][: args.n]
    prompts = [chat_text(tok, build_prompt(r), None)[0] for r in records]
    stops = stop_token_ids(tok)
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]

    def cut(ids: list[int]) -> list[int]:
        for i, t in enumerate(ids):
            if t in stops:
                return ids[:i]
        return ids

    def hf(batch: int) -> list[str]:
        tok.padding_side = "left"
        out = []
        with torch.inference_mode():
            for i in range(0, len(prompts), batch):
                enc = tok(prompts[i:i + batch], add_special_tokens=False, return_tensors="pt", padding=True)
                gen = peft.generate(**enc, do_sample=False, max_new_tokens=args.max_new_tokens,
                                    eos_token_id=stops, pad_token_id=tok.pad_token_id)
                out += [tok.decode(cut(row[enc["input_ids"].shape[1]:].tolist()), skip_special_tokens=True)
                        for row in gen]
        tok.padding_side = "right"
        return out

    def backend(batch: int = args.batch) -> list[str]:
        return HFBackend(peft, tok, batch_size=batch).generate(prompts, args.max_new_tokens)

    merger = LoraMerger(peft)

    def backend_merged(batch: int = args.batch) -> list[str]:
        with merger():
            return backend(batch)

    variants = {"hf_one": lambda: hf(1), "hf_batched": lambda: hf(args.batch), "backend": backend,
                "backend_merged": backend_merged, "backend_merged_2x": lambda: backend_merged(2 * args.batch)}
    results = {}
    for name in args.variants.split(","):
        t0 = time.perf_counter()
        outs = variants[name]()
        dt = time.perf_counter() - t0
        n_tokens = sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in outs)
        results[name] = (dt, n_tokens, outs)
        print(f"{name}: {n_tokens} tokens in {dt:.1f} s = {n_tokens / dt:.1f} tokens/s", flush=True)

    base_name = next(iter(results))
    base = results[base_name]
    print(f"\n{len(prompts)} questions, prompt tokens {min(lengths)}-{max(lengths)}, max_new_tokens "
          f"{args.max_new_tokens}, batch {args.batch}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.1f}\n")
    print(f"| variant | generated tokens | seconds | tokens/s | speed-up vs {base_name} | "
          f"outputs identical to {base_name} |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (dt, n_tokens, outs) in results.items():
        speed = (n_tokens / dt) / (base[1] / base[0])
        same = sum(a == b for a, b in zip(outs, base[2]))
        print(f"| {name} | {n_tokens} | {dt:.1f} | {n_tokens / dt:.1f} | {speed:.2f}x | {same}/{len(outs)} |")


if __name__ == "__main__":
    main()
