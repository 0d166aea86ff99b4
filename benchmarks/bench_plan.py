"""The CPU figures of the cost plan (metasft.plan.CPU) that the other benchmarks do not give: the
training rate of SmolLM2-135M, and the fixed costs (a model build, a training pass, a decoding step,
the grader, a graded answer), each measured on inputs too small for the arithmetic to count.

    python benchmarks/bench_plan.py --threads 1 --repeat 30

  train     forward + backward of 8 examples of 157 tokens (72 of them response, the embedded data's
            mean) on SmolLM2-135M with a rank-8 LoRA: tokens/s (fastest of 6)
  load      Evaluator(cfg): the base model, its LoRA wrapper and the decoding backend (the tiny model
            and the embedded SmolLM2-135M from a warm cache)
  pass      one forward + backward of a 1-example, 8-token micro-batch and an AdamW step (tiny model)
  tokens    forward + backward, and forward alone, of 2 examples of 157 tokens (72 scored each) on the
            tiny model: what a narrow model's tokens cost beyond the arithmetic (elementwise layers, the
            49k-wide LM head's skinny product) is that less the pass and the FLOPs, per token
  decode    one greedy decoding step of a 1-question batch (tiny model): 64 new tokens, minus one
            prefill-only call, over 63
  grader    starting the Grader's worker processes (once per evaluation stage)
  answer    Grader.grade_many on 60 model-like outputs against their gold answers, per answer
Prints the fastest of --repeat timings (load, grader: of 3) in milliseconds: the fastest is the one
least disturbed by other processes on a shared machine.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _fastest_ms(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    from metasft.config import load_config
    from metasft.eval.evaluator import Evaluator
    from metasft.eval.scoring import Grader
    from metasft.eval.specs import ModelSpec
    from metasft.train.batching import Example

    tiny, default = load_config(CONFIGS / "tiny" / "experiment.yaml"), load_config(CONFIGS / "experiment.yaml")
    rows = []
    for name, cfg in (("tiny-llama", tiny), ("smollm2-135m-instruct", default)):
        rows.append((f"load ({name})", _fastest_ms(lambda c=cfg: Evaluator(c, torch.device("cpu")), 3)))

    ev = Evaluator(default, torch.device("cpu"))
    ev.load(ModelSpec("base"))
    ev.peft.train()
    batch = [Example(str(i), tuple(range(100, 257)), 85) for i in range(8)]

    def train_pass():
        ev.model.zero_grad()
        ev.model.backward(batch, micro=8)

    ms = _fastest_ms(train_pass, 6)
    rows.append(("train (smollm2, 8 x 157 tokens): tokens/s", 8 * 157 / (ms / 1e3)))

    ev = Evaluator(tiny, torch.device("cpu"))
    ev.load(ModelSpec("base"))
    ev.peft.train()
    optimizer = torch.optim.AdamW(ev.model.params, lr=1e-4)
    example = Example("x", tuple(range(100, 108)), 4)

    def one_pass():
        ev.model.zero_grad()
        ev.model.backward([example], micro=1)
        optimizer.step()

    rows.append(("pass (tiny)", _fastest_ms(one_pass, args.repeat)))
    pair = [Example(str(i), tuple(range(100, 257)), 85) for i in range(2)]

    def pair_backward():
        ev.model.zero_grad()
        ev.model.backward(pair, micro=2)

    rows.append(("forward + backward (tiny, 2 x 157 tokens)", _fastest_ms(pair_backward, args.repeat)))
    rows.append(("forward (tiny, 2 x 157 tokens)", _fastest_ms(lambda: ev.model.loss(pair, micro=2), args.repeat)))
    # a random model never stops early: every call decodes exactly its max_new_tokens
    prompt = ["What is 2 + 3?"]
    full = _fastest_ms(lambda: ev.backend.generate(prompt, 64), args.repeat)
    first = _fastest_ms(lambda: ev.backend.generate(prompt, 1), args.repeat)
    rows.append(("decode step (tiny, batch 1)", (full - first) / 63))

    outputs = [(f"We compute step by step. The answer is $\\boxed{{{i}}}$.", str(i if i % 3 else i + 1), "math", "math")
               for i in range(60)]

    def start_grader():
        with Grader(timeout_s=5.0) as grader:
            grader.grade_many(outputs[:2])  # starts its workers

    rows.append(("grader start", _fastest_ms(start_grader, 3)))
    with Grader(timeout_s=5.0) as grader:
        grader.grade_many(outputs[:2])
        rows.append(("answer (grading, per answer)", _fastest_ms(lambda: grader.grade_many(outputs), 5) / len(outputs)))

    print(f"threads {args.threads}, fastest of {args.repeat} (load, grader start: of 3)\n")
    print("| figure | ms (or tokens/s) |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value:.3g} |")


if __name__ == "__main__":
    main()
