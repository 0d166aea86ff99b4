"""`metasft train`: one arm (fomaml, reptile, sft_mixed, sft_task, base) into a run directory.

    <run>/config.yaml      resolved config         <run>/manifest.json   versions, seeds, data hashes, budget
    <run>/metrics.jsonl    one line per step       <run>/train.log       the run log
    <run>/checkpoints/     resumable checkpoints: the newest while it runs, trainer.keep_checkpoints once finished
    <run>/adapter/         final adapter (PEFT format)
    <run>/adapter_best/    adapter with the best validation value ("选择最佳checkpoint"): by default each
                           arm's own objective (trainer.select_by), val_loss_adapted for FOMAML/Reptile;
                           absent when that is the final adapter (the best step is the last): adapter/ is it
    <run>/fresh_lora.json  the base arm, which trains nothing: its fresh LoRA's seed and settings, no weights
                           (built on load by models.fresh_lora_state, as `add_lora` made it at that seed)
The manifest's `warnings` (metasft.rundir.RunWarning) say when the inner loop did not adapt or the best
checkpoint is the untrained step 0; the report opens with them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import math
import os
import random
import shutil
import time
from pathlib import Path

import torch

from metasft import arms
from metasft.budget import extra_size, meta_budget
from metasft.config import Config, ConfigError, fields_used_by, load_config, meta_tasks, save_config, to_dict
from metasft.data.records import DataError
from metasft.data.store import read_sft
from metasft.manifests import (Best, Budget, DataManifest, InnerLoop, Pool, Provenance, TrainManifest, has_record,
                               manifest_path, manifest_status, read_manifest, started_record, write_manifest)
from metasft.models import add_lora, check_model, fresh_lora_record, load_base
from metasft.rundir import (ADAPTER_DIR, BEST_ADAPTER_DIR, BEST_AT_STEP_0, CHECKPOINTS_DIR, CONFIG_FILE, DATASET_DIR,
                            FRESH_LORA_FILE, METRICS_FILE, NO_ADAPTATION, POOL_SHORT, TRAIN_LOG, OutputDir, RunWarning,
                            eval_task_file, meta_train_file, pooled_file, remove_stale_temps, stage_log, write_json)
from metasft.train import checkpoint
from metasft.train.batching import BalancedSampler, Example, Sampler, tokenize
from metasft.train.common import TrainModel, outer_optimizer
from metasft.train.distributed import World, init_world, wrap
from metasft.train.fomaml import InnerLoopGuard, TaskData, adapt, inner_optimizer, restore, snapshot, train_meta
from metasft.train.loss import ResponseLoss
from metasft.train.session import Session, Sinks, rng_from_json, save_peft_adapter
from metasft.train.sft import train_sft

log = logging.getLogger(__name__)


def ensure_data(cfg: Config, out: Path, world: World) -> Path:
    """The data directory: `data.dir`, or a build of this config's data into `<out>/dataset`."""
    if cfg.data.dir:
        path = Path(cfg.data.dir)
        if not manifest_path(path).is_file():
            raise DataError(f"data.dir={path}: no manifest.json; build it with `metasft data build`")
        return path
    path = out / DATASET_DIR
    if world.main and not manifest_path(path).is_file():
        from metasft.data.build import build_data
        with OutputDir(path, "data", flag="the data directory") as claim:
            build_data(cfg, path)
            claim.commit()
    if world.distributed:
        torch.distributed.barrier()
    return path


def _read_files(data_dir: Path, files: list[str], limit: int | None, seed: int, what: str,
                strict: bool = False) -> list[dict]:
    """Rows of `files`, at most `limit` (a seeded subsample); `strict`: fewer than `limit` is an error.
    Each row gains `_file`: the entry of `files` it came from."""
    rows = [{**row, "_file": f} for f in files for row in read_sft(data_dir / f)]
    if not rows:
        raise DataError(f"{what}: no examples in {files} under {data_dir}")
    if strict and limit is not None and limit > len(rows):
        raise DataError(f"{what}: the budget asks for {limit} distinct examples but the pool {files} "
                        f"under {data_dir} has only {len(rows)}")
    if limit is not None and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    return rows


def _tokenize(rows, tokenizer, cfg: Config, where: str) -> list[Example]:
    return tokenize(rows, tokenizer, max_length=cfg.data.max_length, truncation=cfg.data.truncation,
                    use_chat_template=cfg.data.use_chat_template, where=where)


def fomaml_budget(cfg: Config, n_tasks: int) -> int:
    """Examples one FOMAML/Reptile run processes (support + query over every outer step)."""
    return meta_budget(cfg, n_tasks)


def sft_budget(cfg: Config, pool_size: int, n_tasks: int) -> tuple[int, str]:
    """(examples to process, where the number came from) under data.budget and data.budget_scale.

    sft_task (Baseline 2, "3 epochs on the task's full training data") ignores both: total_epochs passes
    over its pool."""
    if cfg.arm == "sft_task":
        return pool_size * cfg.trainer.total_epochs, f"{pool_size} distinct x {cfg.trainer.total_epochs} epochs"
    if cfg.data.budget == "unique":  # the pool is already data.budget_scale times the distinct examples
        return pool_size * cfg.trainer.total_epochs, f"{pool_size} distinct x {cfg.trainer.total_epochs} epochs"
    if cfg.trainer.paired_run:
        paired = read_manifest(Path(cfg.trainer.paired_run), TrainManifest)
        if paired.budget is None:
            raise ConfigError(f"trainer.paired_run={cfg.trainer.paired_run}: that run has not finished (no budget)")
        base, why = paired.budget.examples, f"matched to {cfg.trainer.paired_run}"
    else:
        base, why = fomaml_budget(cfg, n_tasks), "matched to this config's FOMAML settings"
    return round(base * cfg.data.budget_scale), why + (f" x {cfg.data.budget_scale}" if cfg.data.budget_scale != 1 else "")


def routine(arm: str):
    """The training routine of `arm` (metasft.arms: "module:function"), imported on first use."""
    module, _, name = arms.ARMS[arm].routine.partition(":")
    return getattr(importlib.import_module(module), name)


def build_model(cfg: Config, world: World):
    """(PEFT model, tokenizer, named adapter params, TrainModel) for `cfg.model`, sharded if asked."""
    base, tokenizer = load_base(cfg.model.partial_pretrain, dtype=cfg.model.dtype, cache_dir=cfg.model.cache_dir)
    if cfg.model.gradient_checkpointing:
        base.gradient_checkpointing_enable()
    lm = add_lora(base, rank=cfg.model.lora_rank, alpha=cfg.model.lora_alpha, dropout=cfg.model.lora_dropout,
                  target_modules=cfg.model.target_modules)
    loss_module = wrap(ResponseLoss(lm).to(world.device), world)
    named = sorted(((n, p) for n, p in loss_module.named_parameters() if p.requires_grad), key=lambda x: x[0])
    model = TrainModel(loss_module, [p for _, p in named], world, tokenizer.pad_token_id, cfg.trainer.bf16)
    return lm, tokenizer, named, model


def check_world(cfg: Config, world_size: int) -> None:
    """Every global batch must give each rank at least one example: a rank with none skips the forward
    pass and its collectives, and the others wait for it forever (a hang, not an error)."""
    kind = arms.ARMS[cfg.arm].kind
    if world_size <= 1 or kind == "none":
        return
    if kind == "meta":
        keys = {"meta.inner_batch_size": cfg.meta.inner_batch_size}
        if arms.setting(cfg.arm, "meta.algorithm", cfg.meta.algorithm) == "fomaml":
            keys["meta.query_batch_size"] = cfg.meta.query_batch_size
    else:
        keys = {"data.train_batch_size": cfg.data.train_batch_size}
    for key, value in keys.items():
        if value < world_size:
            raise ConfigError(f"{key}={value} is smaller than the world size {world_size}: some ranks would get "
                              f"no examples and hang; use at least {world_size} or fewer processes")


def train(cfg: Config, out: Path, resume: bool = False, overwrite: bool = False) -> Path:
    """Train `cfg.arm` into run directory `out`; return it.

    Nothing in `out` is written before the config, the data and (on resume) the checkpoint have been
    checked: a refused or failed start leaves the run's record as it was.
    """
    out = Path(out)
    check_model(cfg.model)
    if cfg.data.dir and not manifest_path(Path(cfg.data.dir)).is_file():
        raise DataError(f"data.dir={cfg.data.dir}: no manifest.json; build it with `metasft data build`")
    world = init_world(cfg.trainer.device, cfg.model.use_fsdp)
    check_world(cfg, world.size)
    claim = OutputDir(out, "train", overwrite=overwrite) if world.main else contextlib.nullcontext()
    with claim:
        if (out / CHECKPOINTS_DIR).exists() or (out / METRICS_FILE).exists():
            if not resume:
                raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        amendments = check_resume(cfg, out) if resume else {}
        if manifest_status(out) == "finished" and not amendments:
            log.info("%s is finished; nothing to do", out)
            return out
        if world.main:
            remove_stale_temps(out, r"adapter|adapter_best|dataset|config\.yaml|manifest\.json")
            remove_stale_temps(out / CHECKPOINTS_DIR, checkpoint.STEP_NAMES)
            claim.start(started_record("train", arm=cfg.arm, name=cfg.name))
        with stage_log(out / TRAIN_LOG, enabled=world.main, deferred=True) as log_file:
            return _train(cfg, out, world, claim, amendments, log_file)


# Keys a resume may change: they do not change what the finished run computes (total_steps extends it)
RESUME_MAY_CHANGE = fields_used_by("resume")
_PATH_KEYS = fields_used_by("path")


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = str(Path(v).resolve()) if key in _PATH_KEYS and v is not None else v
    return out


def check_resume(cfg: Config, out: Path) -> dict:
    """The changes from the run's stored config.yaml that a resume may make, as {key: [old, new]}.

    A change to anything else is refused with the keys named; so is a shorter trainer.total_steps.
    """
    stored_path = out / CONFIG_FILE
    if not stored_path.is_file():
        if (out / CHECKPOINTS_DIR).exists() or (out / METRICS_FILE).exists():  # it was written before either
            raise ConfigError(f"--resume {out}: the run's config.yaml is missing, so this config cannot be checked "
                              f"against the one it trained with; put it back, or train into a new --out")
        return {}  # killed before its config was recorded: nothing to compare with
    old, new = _flat(to_dict(load_config(stored_path))), _flat(to_dict(cfg))
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    refused = [k for k in changed if k not in RESUME_MAY_CHANGE]
    if refused:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in refused[:5])
        raise ConfigError(f"--resume {out}: the config differs from the run's config.yaml in {shown}"
                          f"{' ...' if len(refused) > 5 else ''}; a resume may change only {list(RESUME_MAY_CHANGE)}; "
                          f"train into a new --out to change the others")
    if new["trainer.total_steps"] < old["trainer.total_steps"]:
        raise ConfigError(f"--resume {out}: trainer.total_steps can only grow ({old['trainer.total_steps']} -> "
                          f"{new['trainer.total_steps']})")
    return {k: [old[k], new[k]] for k in changed}


def _train(cfg: Config, out: Path, world: World, claim, amendments: dict, log_file) -> Path:
    data_dir = ensure_data(cfg, out, world)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    data_files = read_manifest(data_dir, DataManifest).files
    previous = read_manifest(out, TrainManifest).amendments if has_record(out) else []
    code = Provenance.now()
    manifest = TrainManifest(status="running", arm=cfg.arm, name=cfg.name, seed=cfg.seed, data_dir=str(data_dir),
                             data_files=data_files, world_size=world.size, fsdp=world.fsdp, code=code,
                             amendments=previous + ([{"time": time.time(), "changed": amendments,
                                                      "command": code.command}] if amendments else []))

    def record() -> None:
        """Config and manifest, once the data, the model and the checkpoint to resume from have loaded."""
        if world.main:
            save_config(cfg, out / CONFIG_FILE)
            write_manifest(out, manifest)
            claim.commit()
            log_file.open()

    def save_adapter(path: Path) -> None:
        save_peft_adapter(lm, named, path, world)

    t0 = time.time()
    if arms.ARMS[cfg.arm].routine is None:  # the base arm: nothing trained; its fresh LoRA recorded by its seed
        record()
        if world.main:
            write_json(out / FRESH_LORA_FILE, fresh_lora_record(cfg.model, cfg.seed))
        budget, extra = Budget(0, 0, 0, 0, 0, 0), {}
    else:
        lm, tokenizer, named, model = build_model(cfg, world)
        specs = meta_tasks(cfg)
        if not specs:
            raise ConfigError("no meta-training tasks: set data.tasks or meta.tasks")
        val_sets = {t.name: _tokenize(read_sft(data_dir / meta_train_file(t.name, "val")), tokenizer, cfg,
                                      f"{t.name} val") for t in specs
                    if (data_dir / meta_train_file(t.name, "val")).is_file()}
        val_sets = {name: examples for name, examples in val_sets.items() if examples}  # a task too small for one
        run = routine(cfg.arm)
        budget, extra = run(cfg, out, model, named, save_adapter, data_dir, tokenizer, specs, val_sets, record)
        save_adapter(out / ADAPTER_DIR)
        if world.main:
            _drop_duplicate_best(out)
    for w in extra.get("warnings", []):
        log.warning("%s", w.message)
    manifest = dataclasses.replace(manifest, status="finished", budget=budget,
                                   train_seconds=round(time.time() - t0, 2), **extra)
    if world.main:
        write_manifest(out, manifest)
        # finished: the adapters are the result; keep only what trainer.keep_checkpoints asks for
        checkpoint.prune(out / CHECKPOINTS_DIR, cfg.trainer.keep_checkpoints)
    return out


def _drop_duplicate_best(out: Path) -> None:
    """Remove adapter_best/ when it holds the same files as adapter/ (the best step was the last): the
    loaders (eval.specs) then take adapter/, the same adapter, without a second copy on disk."""
    best, final = out / BEST_ADAPTER_DIR, out / ADAPTER_DIR
    if not best.is_dir():
        return
    names = sorted(p.name for p in best.iterdir())
    if names != sorted(p.name for p in final.iterdir()) or any(
            (best / n).read_bytes() != (final / n).read_bytes() for n in names):
        return
    old = best.with_name(f".{best.name}.old")  # a kill mid-delete leaves a name the next start removes
    os.replace(best, old)
    shutil.rmtree(old)


def _selection(cfg: Config, meta: bool) -> str:
    """The validation metric that picks adapter_best (trainer.select_by)."""
    return "val_loss_adapted" if meta and cfg.trainer.select_by == "objective" else "val_loss"


def _warnings(session: Session, guard: InnerLoopGuard | None = None) -> list[RunWarning]:
    """The run's RunWarnings: no inner-loop adaptation, best checkpoint at step 0."""
    out = []
    if guard is not None and guard.adapted is False:
        out.append(RunWarning(NO_ADAPTATION, guard.message()))
    if (msg := session.best_at_step_0()) is not None:
        out.append(RunWarning(BEST_AT_STEP_0, msg))
    return out


def _best(session: Session) -> Best:
    """The manifest's record of adapter_best (value None when no validation ran)."""
    best = session.best
    value = best["value"] if math.isfinite(best["value"]) else None
    return Best(best["metric"], value, best["step"], best.get("val_loss"))


def _label(cfg: Config, out: Path) -> str:
    """The progress bar's name: `train fomaml`, with the run's name when it is not the arm's."""
    return f"train {cfg.arm}" + ("" if out.name == cfg.arm else f" ({out.name})")


def _validation(model: TrainModel, val_sets: dict, micro: int, adapt_fn=None):
    """val_loss: mean over tasks of the held-out loss; val_loss_adapted: the same after adapting."""
    def run() -> dict:
        if not val_sets:
            return {"val_loss": float("nan")}
        per_task = {name: model.loss(ex, micro) for name, ex in val_sets.items()}
        row = {"val_loss": sum(per_task.values()) / len(per_task), "val_tasks": per_task}
        if adapt_fn is not None:
            if model.world.main:  # the longer half: an adaptation per task
                log.info("validation: val_loss %.4f; now adapting a copy to each of %d task(s) on its support "
                         "set for val_loss_adapted", row["val_loss"], len(val_sets))
            adapted = {name: adapt_fn(name, ex) for name, ex in val_sets.items()}
            row["val_loss_adapted"] = sum(adapted.values()) / len(adapted)
        return row
    return run


def run_meta(cfg, out, model, named, save_adapter, data_dir, tokenizer, specs, val_sets, record):
    m = cfg.meta
    tasks = []
    for i, spec in enumerate(specs):
        support = _tokenize(_read_files(data_dir, spec.support_files, spec.support_max_samples, cfg.seed,
                                        f"meta.tasks[{spec.name}].support_files"), tokenizer, cfg, spec.name)
        query = _tokenize(_read_files(data_dir, spec.query_files, spec.query_max_samples, cfg.seed,
                                      f"meta.tasks[{spec.name}].query_files"), tokenizer, cfg, spec.name)
        tasks.append(TaskData(spec.name, support, query, Sampler(len(support), cfg.seed * 1000 + 2 * i),
                              Sampler(len(query), cfg.seed * 1000 + 2 * i + 1)))
    algorithm = arms.setting(cfg.arm, "meta.algorithm", m.algorithm)
    outer = outer_optimizer(model.params, cfg.optim.optimizer_type, m.outer_lr, cfg.optim.weight_decay,
                            cfg.optim.betas)
    by_name = {t.name: t for t in tasks}

    def adapted_val_loss(name: str, val_examples) -> float:
        # adapt a copy of θ on the task's support set (fixed batches), score its val split, restore θ;
        # gradients must stay enabled here even though this is validation
        theta = snapshot(model.params)
        fixed = Sampler(len(by_name[name].support), seed=12345)
        support = [[by_name[name].support[j] for j in fixed.next(m.inner_batch_size)] for _ in range(m.num_inner_steps)]
        adapt(model, support, inner_optimizer(model.params, m.inner_optimizer, m.inner_lr), micro=m.inner_batch_size)
        loss = model.loss(val_examples, cfg.trainer.val_batch_size)
        restore(model.params, theta)
        return loss

    task_rng = random.Random(cfg.seed)
    task_counts = {t.name: 0 for t in tasks}
    guard = InnerLoopGuard(m.min_inner_drop, m.inner_drop_steps)
    session = Session(out=out, model=model, named_params=named, optimizer=outer,
                      sinks=Sinks(out, cfg.trainer.loggers, model.world.main, to_dict(cfg)),
                      save_freq=cfg.trainer.save_freq, test_freq=cfg.trainer.test_freq,
                      log_freq=cfg.trainer.log_freq, total_steps=cfg.trainer.total_steps,
                      val_fn=_validation(model, val_sets, cfg.trainer.val_batch_size, adapted_val_loss),
                      save_adapter=save_adapter, select_by=_selection(cfg, meta=True),
                      keep_checkpoints=cfg.trainer.keep_checkpoints, label=_label(cfg, out))

    def load_extra(extra):
        task_rng.setstate(rng_from_json(extra["task_rng"]))
        task_counts.update(extra["task_counts"])
        guard.drops[:] = extra["inner_drops"]
        for t in tasks:
            t.support_sampler.load(extra["samplers"][t.name][0])
            t.query_sampler.load(extra["samplers"][t.name][1])

    session.resume(load_extra)
    record()
    try:
        train_meta(session, model, outer, tasks, algorithm=algorithm, total_steps=cfg.trainer.total_steps,
                   meta_batch_size=m.meta_batch_size, num_inner_steps=m.num_inner_steps,
                   inner_batch_size=m.inner_batch_size, query_batch_size=m.query_batch_size,
                   inner_lr=m.inner_lr, inner_kind=m.inner_optimizer, outer_lr=m.outer_lr,
                   warmup_steps=cfg.optim.warmup_steps, clip_grad=cfg.optim.clip_grad,
                   micro=max(m.inner_batch_size, m.query_batch_size), task_rng=task_rng,
                   task_counts=task_counts, guard=guard)
    finally:
        session.close()
    pool = {e.id for t in tasks for e in t.support + t.query}
    return Budget(**session.budget.summary()), {
        "best": _best(session), "pool_examples": len(pool), "algorithm": algorithm,
        "inner_loop": InnerLoop(**guard.summary()), "warnings": _warnings(session, guard)}


def _sft_pool(cfg: Config, data_dir: Path) -> tuple[list[dict], list[str], list[str], dict]:
    """(rows, task of each row, files read, pool record) of an SFT arm.

    sft_task: the eval task's pool of shots, data/eval/<task>_shots.parquet: every item of its
    `shots_split` in the task's slice less its test items and anything meta-training saw, i.e. the
    task's training data (its own train split where the source has one and the config names it).
    sft_mixed: the meta-training tasks' support ∪ query (data.train_files, at most data.total_samples),
    scaled per task by data.budget_scale: above 1 with that many times the distinct examples, the
    extra ones from data/meta_train/<task>_extra.parquet (Exp 5's 2x data: new examples, not the
    same ones repeated); below 1 a seeded subsample.
    """
    if cfg.arm == "sft_task":
        if not cfg.data.sft_task:
            raise ConfigError("arm sft_task needs data.sft_task: the eval task whose data to train on")
        eval_tasks = read_manifest(data_dir, DataManifest).eval_tasks
        if cfg.data.sft_task not in eval_tasks:
            raise ConfigError(f"data.sft_task={cfg.data.sft_task!r} is not an eval task of {data_dir} "
                              f"({', '.join(eval_tasks) or 'it has none'})")
        files = [eval_task_file(cfg.data.sft_task, "shots")]
        rows = _read_files(data_dir, files, None, cfg.seed, "data.sft_task")
        split = next((t.shots_split for t in cfg.data.eval_tasks if t.name == cfg.data.sft_task), None)
        return rows, [cfg.data.sft_task] * len(rows), files, {
            "file": files[0], "distinct": len(rows), "split": split, "epochs": cfg.trainer.total_epochs}
    specs = meta_tasks(cfg)
    files = cfg.data.train_files or [pooled_file(t.name) for t in specs]
    limit = cfg.data.total_samples  # the design's mixed-pool size
    rows = _read_files(data_dir, files, limit, cfg.seed, "data.total_samples", strict=True)
    # a file is a task: data/processed/<task>_all.parquet
    task_of = [Path(r["_file"]).stem.removesuffix("_all") for r in rows]
    scale = cfg.data.budget_scale
    record = {"scale": scale, "base_distinct": len(rows)}
    if scale != 1:
        by_task: dict[str, list[dict]] = {}
        for r, t in zip(rows, task_of):
            by_task.setdefault(t, []).append(r)
        rows, task_of, short = [], [], []
        for i, (t, base) in enumerate(by_task.items()):
            if scale < 1:
                keep = random.Random(cfg.seed * 7919 + i).sample(base, max(1, round(scale * len(base))))
            else:
                extra_file = meta_train_file(t, "extra")
                if not (data_dir / extra_file).is_file():
                    raise DataError(f"data.budget_scale={scale} needs {extra_file} under {data_dir} (the data build "
                                    f"writes it when a run of the experiment asks for more than 1x data); each train "
                                    f"file must be a task's pooled file, {pooled_file('<task>')}")
                extra = [{**r, "_file": extra_file} for r in read_sft(data_dir / extra_file)]
                want = extra_size(len(base), scale)
                if want > len(extra):
                    short.append(f"{t} {len(extra)} of {want}")
                keep = base + random.Random(cfg.seed * 7919 + i).sample(extra, min(want, len(extra)))
            rows += keep
            task_of += [t] * len(keep)
        record.update(distinct=len(rows), distinct_scale=round(len(rows) / record["base_distinct"], 4),
                      per_task={t: task_of.count(t) for t in by_task})
        if short:
            record["short"] = short
    else:
        record["distinct"] = len(rows)
    return rows, task_of, files, record


def run_sft(cfg, out, model, named, save_adapter, data_dir, tokenizer, specs, val_sets, record):
    rows, task_of, files, pool_record = _sft_pool(cfg, data_dir)
    pool = _tokenize(rows, tokenizer, cfg, "SFT pool")
    if cfg.arm == "sft_task":
        # Baseline 2 is the design's 3 epochs, evaluated as trained: the meta-training tasks' validation
        # loss says nothing about this task, so it picks no checkpoint (adapter/ is evaluated)
        val_sets = {}
    budget_examples, why = sft_budget(cfg, len(pool), len(specs))
    log.info("SFT budget: %d examples (%s) from a pool of %d, %s mixture", budget_examples, why, len(pool),
             cfg.data.mixture)
    optimizer = outer_optimizer(model.params, cfg.optim.optimizer_type, cfg.trainer.lr, cfg.optim.weight_decay,
                                cfg.optim.betas)
    if cfg.data.mixture == "balanced":
        names = list(dict.fromkeys(task_of))
        sampler = BalancedSampler([[i for i, t in enumerate(task_of) if t == name] for name in names], cfg.seed)
    else:
        sampler = Sampler(len(pool), cfg.seed)
    from metasft.train.sft import sft_steps
    session = Session(out=out, model=model, named_params=named, optimizer=optimizer,
                      sinks=Sinks(out, cfg.trainer.loggers, model.world.main, to_dict(cfg)),
                      save_freq=cfg.trainer.save_freq, test_freq=cfg.trainer.test_freq,
                      log_freq=cfg.trainer.log_freq, total_steps=sft_steps(budget_examples, cfg.data.train_batch_size),
                      val_fn=_validation(model, val_sets, cfg.trainer.val_batch_size), save_adapter=save_adapter,
                      select_by=_selection(cfg, meta=False), keep_checkpoints=cfg.trainer.keep_checkpoints,
                      label=_label(cfg, out))
    session.resume(lambda extra: sampler.load(extra["sampler"]))
    record()
    try:
        train_sft(session, model, optimizer, pool, task_of, sampler, budget_examples=budget_examples,
                  batch_size=cfg.data.train_batch_size, micro=cfg.trainer.micro_batch_size, lr=cfg.trainer.lr,
                  warmup_steps=cfg.optim.warmup_steps, clip_grad=cfg.optim.clip_grad)
    finally:
        session.close()
    warnings = _warnings(session)
    if pool_record.get("short"):
        warnings.append(RunWarning(POOL_SHORT, f"data.budget_scale={cfg.data.budget_scale} asked for that many times "
                                               f"the distinct examples, but the data has fewer left for "
                                               f"{', '.join(pool_record['short'])}: the pool is "
                                               f"{pool_record['distinct_scale']}x"))
    return Budget(**session.budget.summary()), {
        "best": _best(session), "pool_examples": len(pool), "mixture": cfg.data.mixture,
        "budget_rule": why, "train_files": files, "pool": Pool(**pool_record), "warnings": warnings}
