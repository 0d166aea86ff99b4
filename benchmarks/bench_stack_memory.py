"""Peak memory of one stack of the default's few-shot groups (issue 22): a task's 9 groups (3 arms x 3
eval seeds) adapted and scored by the grid engine exactly as `grid.run_stack` does, with the process's
RSS sampled every 10 ms and CPU seconds counted per phase.

    /usr/bin/time -v python benchmarks/bench_stack_memory.py statistics OUT.json --data DATA --runs RUNS \
        [eval.adaptation_steps=2] [--no-score]

DATA: a dataset directory holding the task (the demo's, e.g. runs/embedded_default/data/...); RUNS: a
directory with the run directories fomaml, sft_mixed and base (the demo's `runs/`). Writes the scored
outputs and losses per recorded step to OUT.json (to compare before / after a change) and prints each
phase's peak RSS and CPU seconds.
"""
from __future__ import annotations

import argparse
import json
import resource
import threading
import time
from pathlib import Path

from metasft.config import eval_dtype, load_config
from metasft.eval.evaluator import Evaluator, device_for
from metasft.eval.grid import adapt_stacked
from metasft.eval.grid_eval import GridScorer
from metasft.eval.schedule import recorded_steps, shot_indices, stable_seed
from metasft.eval.specs import parse_model_specs
from metasft.eval.stacked_lora import StackedLora
from metasft.eval.tasks import load_task

ARMS = ("fomaml", "sft_mixed", "base")


def rss_gb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1e6


def cpu_s() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


class Phases:
    """Peak RSS (sampled every 10 ms on a thread) and CPU seconds per named phase."""

    def __init__(self):
        self.name, self.peaks, self.cpu, self.t = "start", {}, {}, cpu_s()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while True:
            self.peaks[self.name] = max(self.peaks.get(self.name, 0.0), rss_gb())
            time.sleep(0.01)

    def enter(self, name: str) -> None:
        now = cpu_s()
        self.cpu[self.name] = self.cpu.get(self.name, 0.0) + now - self.t
        self.t, self.name = now, name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task")
    ap.add_argument("out", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--config", default="configs/experiment.yaml")
    ap.add_argument("--no-score", action="store_true", help="adapt only (the adaptation's own peak)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()
    phases = Phases()
    cfg = load_config(args.config, args.overrides)
    e = cfg.eval
    ev = Evaluator(cfg, device_for(cfg), eval_dtype(cfg))
    max_new = next(t.max_new_tokens for t in cfg.data.eval_tasks if t.name == args.task)
    task = load_task(args.data, args.task, max_new, ev.tokenizer, cfg)
    cells = [(spec, seed) for m in ARMS for spec in parse_model_specs([f"{m}={args.runs / m}"]) for seed in e.seeds]
    phases.enter("setup (model, task, adapters)")
    lora = StackedLora(ev.peft, len(cells))
    shots, seeds = [], []
    for c, (spec, seed) in enumerate(cells):
        lora.load(c, ev.state(spec))
        shots.append([task.shots[i] for i in shot_indices(task.name, 8, seed, len(task.shots))])
        seeds.append(stable_seed("batches", task.name, 8, seed))
    scorer = GridScorer(ev.peft, ev.tokenizer, task, rows_per_batch=e.batch_size, loss_module=ev.model.loss_module,
                        backend=ev.backend)
    record = set(recorded_steps(e.record_steps, e.adaptation_steps))
    result = {}

    def on_step(step):
        if step in record and not args.no_score:
            phases.enter(f"score at step {step}")
            result[step] = [dict(outputs=s.outputs, losses=s.losses, ll_choice=s.ll_choice, cut_off=s.cut_off)
                            for s in scorer.score(lora)]
        phases.enter(f"adapt after step {step}")

    ev.peft.train()
    phases.enter("adapt to step 1")
    adapt_stacked(ev.model.loss_module, lora, shots, steps=e.adaptation_steps, lr=e.adaptation_lr,
                  batch_size=e.adaptation_batch_size, seeds=seeds, pad_id=ev.model.pad_id, on_step=on_step)
    phases.enter("end")
    args.out.write_text(json.dumps(result))
    for name, peak in phases.peaks.items():
        print(f"{name:32s} peak RSS {peak:5.2f} GB  cpu {phases.cpu.get(name, 0.0):7.1f} s")
    print(f"max {max(phases.peaks.values()):.2f} GB, cpu total {cpu_s():.1f} s")


if __name__ == "__main__":
    main()
