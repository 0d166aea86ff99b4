"""`metasft run`: the whole study in one directory, stage by stage; a finished stage is not redone.

    <exp>/config.yaml  manifest.json (stage timings, versions)
    <exp>/dataset/     data build                <exp>/runs/<arm>/   one training run per arm
    <exp>/eval/        results.sqlite, task_similarity.json
    <exp>/report/      report.md, report.html, plots
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from metasft.config import Config, ConfigError, save_config
from metasft.rundir import provenance, read_json, write_json

log = logging.getLogger(__name__)

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_CONFIG = REPO_CONFIGS / "experiment.yaml"


def arm_runs(cfg: Config, eval_tasks: list[str]) -> list[tuple[str, str, str | None]]:
    """(run name, arm, sft task) in training order: meta arms first, so SFT can match their budget."""
    order = {"fomaml": 0, "reptile": 1, "sft_mixed": 2, "sft_task": 3, "base": 4}
    out = []
    for arm in sorted(dict.fromkeys(cfg.arms), key=order.__getitem__):
        if arm == "sft_task":
            out += [(f"sft_task_{t}", arm, t) for t in eval_tasks]
        else:
            out.append((arm, arm, None))
    return out


def _arm_config(cfg: Config, arm: str, data_dir: Path, paired: Path | None, sft_task: str | None) -> Config:
    data = dataclasses.replace(cfg.data, dir=str(data_dir), sft_task=sft_task)
    trainer = dataclasses.replace(cfg.trainer, paired_run=str(paired) if paired else cfg.trainer.paired_run)
    return dataclasses.replace(cfg, arm=arm, data=data, trainer=trainer)


def check_budgets(run_a: Path, run_b: Path, batch: int, allow: bool) -> dict:
    """Refuse a paired comparison whose example budgets differ by more than one batch."""
    a, b = (read_json(r / "manifest.json")["budget"] for r in (run_a, run_b))
    diff = abs(a["examples"] - b["examples"])
    if diff > batch and not allow:
        raise ConfigError(f"budgets differ: {run_a.name} processed {a['examples']} examples, {run_b.name} "
                          f"{b['examples']} (more than one batch of {batch}); set eval.allow_budget_mismatch=true "
                          f"to compare them anyway")
    return {"a": a, "b": b, "examples_diff": diff}


class _Stages:
    """Times each stage into the experiment manifest; a stage recorded as done is skipped."""

    def __init__(self, out: Path):
        self.path = out / "manifest.json"
        self.manifest = read_json(self.path) if self.path.is_file() else {"stages": {}}
        self.manifest.update(provenance())

    def done(self, name: str) -> bool:
        return self.manifest["stages"].get(name, {}).get("status") == "finished"

    def run(self, name: str, fn) -> None:
        if self.done(name):
            log.info("stage %s: finished before, skipped", name)
            return
        log.info("stage %s", name)
        t0 = time.time()
        fn()
        self.manifest["stages"][name] = {"status": "finished", "seconds": round(time.time() - t0, 1)}
        write_json(self.path, self.manifest)


def run_experiment(cfg: Config, out: Path) -> Path:
    """Data build, every arm's training, both evaluation protocols, task similarity, report."""
    from metasft.data.build import build_data
    from metasft.eval.protocols import parse_model_specs, run_eval
    from metasft.eval.similarity import run_similarity
    from metasft.report import write_report
    from metasft.train.run import train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    stages = _Stages(out)
    data_dir = Path(cfg.data.dir) if cfg.data.dir else out / "dataset"
    if not cfg.data.dir:
        stages.run("data", lambda: build_data(cfg, data_dir))
    eval_tasks = list(read_json(data_dir / "manifest.json")["eval_tasks"])

    runs = arm_runs(cfg, eval_tasks)
    meta_run = next((out / "runs" / name for name, arm, _ in runs if arm in ("fomaml", "reptile")), None)
    for name, arm, task in runs:
        paired = meta_run if arm in ("sft_mixed", "sft_task") and cfg.data.budget == "matched" else None
        arm_cfg = _arm_config(cfg, arm, data_dir, paired, task)
        stages.run(f"train/{name}", lambda c=arm_cfg, n=name: train(c, out / "runs" / n, resume=True))

    names = {name for name, _, _ in runs}
    if {"fomaml", "sft_mixed"} <= names:
        stages.manifest["budget_check"] = check_budgets(out / "runs" / "fomaml", out / "runs" / "sft_mixed",
                                                        cfg.data.train_batch_size, cfg.eval.allow_budget_mismatch)
    models = parse_model_specs([f"{name}={out / 'runs' / name}" for name, _, _ in runs])
    stages.run("eval", lambda: run_eval(cfg, data_dir, models, out / "eval"))
    # the design's first debugging step: cosine similarity of the tasks' gradients at the base model
    stages.run("similarity", lambda: run_similarity(cfg, data_dir, out / "eval"))
    stages.run("report", lambda: write_report(out))
    return out
