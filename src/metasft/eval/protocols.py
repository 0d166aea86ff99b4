"""`metasft eval`: protocol A (few-shot learning curves) for every model on every eval task, into one
resumable results store.

Protocol A (`metasft.eval.adaptation`): for each model x eval task x n_shots x seed, adapt the
model's LoRA on n shots and evaluate at each recorded step. Protocol B, cross-task zero-shot, is the
0-shot cells of the tasks flagged `unseen`: the report reads it from the same store.

A group's rows are written in one transaction with its `done` mark, so a rerun skips finished groups
(`metasft.eval.results`). The groups are split across shards (torchrun ranks, `metasft launch`
workers: `metasft.eval.schedule.Shard`), each writing its own store and claiming each group before
it evaluates it (`metasft.eval.claims`), so no group is evaluated twice; a group done in any store
of the directory is skipped. Each
later few-shot group reuses its model's 0-shot result as its step 0. With `eval.cells_per_batch` 1 a
model's pending 0-shot groups are evaluated together (`evaluate_steps`): the questions of all its
tasks share generation batches. With `eval.cells_per_batch` > 1 a task's groups run in stacks
(`metasft.eval.grid`): its 0-shot groups, one cell per model, decode together; its few-shot groups
adapt and decode together.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable

from metasft.config import Config, ConfigError, eval_dtype, save_config
from metasft.eval.adaptation import group_rows, run_group, step0, stored_zero_shot
from metasft.eval.claims import Claims
from metasft.eval.eta import EvalProgress, adaptation_size, evaluation_size
from metasft.eval.evaluator import Evaluator, StepResult, device_for, evaluate_steps
from metasft.eval.grid import evaluate_stacked, run_stack
from metasft.eval.lora_forward import check_supported
from metasft.eval.results import GRADING_KEY, ResultsStore, ResultsUnion, store_file, store_paths
from metasft.eval.schedule import Group, Shard, enumerate_groups, recorded_steps, stacks
from metasft.eval.scoring import Grader
from metasft.eval.specs import EvalError, ModelSpec, adapter_fingerprint, check_lora_settings, check_names
from metasft.eval.tasks import TaskData, load_task
from metasft.manifests import (DataManifest, EvalManifest, EvalTaskEntry, Provenance, manifest_path, read_manifest,
                               started_record, write_manifest)
from metasft.rundir import EVAL_CONFIG, EVAL_DATA_PREFIX, EVAL_LOG, STEP_LOG, OutputDir, remove_stale_temps, stage_log

log = logging.getLogger(__name__)
step_log = logging.getLogger(STEP_LOG)  # eval.log only: one line per stored cell


def _settings(cfg: Config, manifest: DataManifest) -> dict:
    """What the stored numbers depend on besides the adapters (checked on resume)."""
    m, e, d = cfg.model, cfg.eval, cfg.data
    return {
        "model": {k: getattr(m, k) for k in ("partial_pretrain", "lora_rank", "lora_alpha", "lora_dropout",
                                             "target_modules", "dtype")},
        "eval": {"adaptation_steps": e.adaptation_steps, "adaptation_lr": e.adaptation_lr,
                 "adaptation_batch_size": e.adaptation_batch_size, "max_new_tokens": e.max_new_tokens,
                 "record_steps": recorded_steps(e.record_steps, e.adaptation_steps)},
        "data": {"use_chat_template": d.use_chat_template, "max_length": d.max_length, "truncation": d.truncation,
                 "eval_files": {k: v.sha256 for k, v in sorted(manifest.files.items())
                                if k.startswith(EVAL_DATA_PREFIX)}},
        "seed": cfg.seed,
    }


def validate_eval(cfg: Config, manifest: DataManifest, models: list[ModelSpec]) -> None:
    """What evaluating `models` on the data of `manifest` needs beyond the config's own checks
    (`config.validate`: ranges, seeds), before any model loads."""
    if not models:
        raise ConfigError("no models to evaluate (eval.models is empty)")
    e = cfg.eval
    if e.cells_per_batch > 1 and cfg.model.lora_dropout:
        raise ConfigError("eval.cells_per_batch > 1 (the grid engine) applies no LoRA dropout: set "
                          "model.lora_dropout: 0, or eval.cells_per_batch: 1")
    check_names(models)
    m = cfg.model
    for spec in models:
        if spec.adapter is not None and Path(spec.adapter).exists():  # a directory, or a fresh_lora.json
            check_lora_settings(Path(spec.adapter), m.lora_rank, m.lora_alpha, m.target_modules)
    tasks = manifest.eval_tasks
    if not tasks:
        raise EvalError("the data manifest lists no eval_tasks")
    for m in models:
        unknown = sorted(set(m.tasks or []) - set(tasks))
        if unknown:
            raise EvalError(f"model {m.name}: tasks {unknown} are not eval tasks of the data ({sorted(tasks)})")


def _groups(cfg: Config, manifest: DataManifest, models: list[ModelSpec]) -> list[Group]:
    return enumerate_groups(models, {t: info.n_shots for t, info in manifest.eval_tasks.items()}, cfg.eval.seeds)


def _key(group: Group) -> tuple[str, str, int, int]:
    return group.model, group.task, group.n_shots, group.seed


def run_eval(cfg: Config, data_dir: Path, models: list[ModelSpec], out: Path, *, shard: Shard | None = None,
             after_group: Callable[[Group], None] | None = None, acc_k: int | None = None) -> Path:
    """Protocol A for every model on every eval task of `data_dir`, into the stores of `out`.

    Resumable (groups done in any store of `out` are skipped). `shard`: this worker's share and store
    (default: torchrun's rank of its world, env RANK / WORLD_SIZE; a lone process writes
    results.sqlite). A group claimed by another live worker is left to it (see `unfinished_groups`).
    `after_group(group)` runs after each group is stored; `acc_k` samples k answers per question at
    every evaluation for acc@k (k times the generation cost). The settings are recorded with the
    first group stored, so an evaluation that fails before that leaves `out` as it was. Returns `out`.
    """
    data_dir, out = Path(data_dir), Path(out)
    shard = shard or Shard.from_env()
    acc_k = acc_k or cfg.eval.acc_k or None
    if not manifest_path(data_dir).is_file():
        raise EvalError(f"{data_dir} is not a built data directory (no manifest.json)")
    manifest = read_manifest(data_dir, DataManifest)
    validate_eval(cfg, manifest, models)
    task_info = manifest.eval_tasks
    groups = _groups(cfg, manifest, models)
    mine = shard.share(groups)
    meta = {"settings": _settings(cfg, manifest), "acc_k": acc_k, GRADING_KEY: cfg.eval.grading,
            **{f"adapter:{spec.name}" + (f"[{','.join(spec.tasks)}]" if spec.tasks else ""):
               adapter_fingerprint(spec, cfg.seed) for spec in models}}
    lead = shard.index == 0  # checks and records the directory; the others only write their store
    # the workers of a sharded evaluation share `out` (a resubmitted one may even run beside its old self):
    # their per-group claims keep them apart, under `metasft launch`'s lock on the experiment directory
    claim = OutputDir(out, "eval", lock=shard.count == 1) if lead else contextlib.nullcontext()
    with claim:
        if lead:
            if shard.count == 1:  # with other workers a temp may be theirs, still being written
                remove_stale_temps(out, r"eval_config\.yaml|manifest\.json|task_similarity\.json")
            claim.start(started_record("eval"))
            if shard.count > 1:
                claim.commit()  # other workers write here too: a failure here removes nothing of theirs
        else:
            out.mkdir(parents=True, exist_ok=True)
        log_file = out / (EVAL_LOG if shard.count == 1 else f"eval.shard-{shard.index}.log")
        with stage_log(log_file, deferred=True) as log_handler, \
                ResultsStore(out / store_file(shard.index, shard.count)) as store:
            written = False

            def recorded() -> None:
                """After the first group is stored: the config and log beside the results; a record now."""
                nonlocal written
                log_handler.open()
                if lead and not written:
                    save_config(cfg, out / EVAL_CONFIG)
                    write_manifest(out, EvalManifest(str(data_dir), Provenance.now()))
                    claim.commit()
                    written = True

            with ResultsUnion(store_paths(out)) as stored:  # this worker's store and the others'
                stored.check_settings(meta)
                done = stored.done_groups()
            other_seeds = sorted({seed for _, _, n_shots, seed in done if n_shots > 0} - set(cfg.eval.seeds))
            if other_seeds:  # eval_config.yaml would claim seeds the stored results do not have (issue 23)
                raise EvalError(f"{out}: its results hold few-shot groups of seeds {other_seeds}, which eval.seeds "
                                f"{list(cfg.eval.seeds)} leaves out; keep them in eval.seeds, or evaluate into a new "
                                f"--out (or pass --overwrite)")
            todo = [g for g in mine if _key(g) not in done]
            log.info("eval: %d groups in all, %d for shard %d of %d, %d left to do", len(groups), len(mine),
                     shard.index, shard.count, len(todo))
            if todo:
                specs = {(m.name, t): m for m in models for t in (m.tasks or task_info)}
                claims = Claims(out, worker=f"shard {shard.index} of {shard.count}")
                try:
                    others = _run_groups(cfg, data_dir, task_info, specs, todo, store, claims, after_group, acc_k,
                                         meta, recorded, bar_desc="eval" if shard.count == 1 else
                                         f"eval shard {shard.index}", show_bar=lead)
                finally:
                    claims.release_all()
                if others:
                    log.warning("eval: %d group(s) of shard %d were claimed by another live worker and left to it",
                                len(others), shard.index)
            if done:
                recorded()
    return out


def unfinished_groups(cfg: Config, data_dir: Path, models: list[ModelSpec], out: Path) -> list[Group]:
    """The groups of this evaluation that no store of `out` holds yet."""
    with ResultsUnion(store_paths(out)) as stored:
        done = stored.done_groups()
    return [g for g in _groups(cfg, read_manifest(data_dir, DataManifest), models) if _key(g) not in done]


def _run_groups(cfg: Config, data_dir: Path, task_info: dict[str, EvalTaskEntry], specs: dict[tuple[str, str], ModelSpec],
                todo: list[Group], store: ResultsStore, claims: Claims, after_group, acc_k, meta: dict,
                recorded: Callable[[], None], *, bar_desc: str, show_bar: bool) -> list[Group]:
    """Each unit of `stacks(todo, eval.cells_per_batch)`: a group alone (`run_group`), or a stack of a
    task's 0-shot groups (`grid.evaluate_stacked`) or few-shot groups (`grid.run_stack`), of the groups
    this worker claims and no store holds; every group is stored as soon as it is finished, with
    `meta` (the settings) recorded in the same transaction, then its claim released; `recorded()`
    runs after each store. Returns the groups left to other workers (claimed by them)."""
    ev = Evaluator(cfg, device_for(cfg), eval_dtype(cfg))
    if cfg.eval.cells_per_batch > 1:
        check_supported(ev.peft)
    tasks: dict[str, TaskData] = {}
    zero_shots: dict[tuple[str, str], StepResult] = {}

    def task(name: str) -> TaskData:
        if name not in tasks:
            tasks[name] = load_task(data_dir, name, task_info[name].max_new_tokens, ev.tokenizer, cfg)
        return tasks[name]

    units = stacks(todo, cfg.eval.cells_per_batch)
    progress = _plan_progress(cfg, units, task, acc_k, EvalProgress(bar_desc, len(todo), enabled=show_bar))

    def store_group(group: Group, cells: list[dict], preds: list[dict]) -> None:
        zero_shots.setdefault((group.model, group.task), step0(cells, preds))
        store.write_group(group.model, group.task, group.n_shots, group.seed, cells, preds, meta=meta)
        claims.release(group)
        recorded()
        for c in cells:
            loss = f", loss {c['loss']:.4f}" if c.get("loss") is not None else ""
            step_log.info("%s %s %d-shot seed %d step %d: accuracy %.3f (%d/%d)%s", c["model"], c["task"],
                          c["n_shots"], c["seed"], c["step"], c["accuracy"], c["n_correct"], c["n"], loss)
        progress.group_stored()
        if after_group is not None:
            after_group(group)

    others: list[Group] = []
    # the bar is closed however this ends: an error's or Ctrl-C's one line then starts a line of its own
    with Grader(timeout_s=cfg.eval.grade_timeout_s, grading=cfg.eval.grading) as grader, progress:
        for i, unit in enumerate(units):
            progress.end()  # the unit before, if any
            progress.begin(i)
            others += [g for g in unit if not claims.take(g)]
            unit = [g for g in unit if g not in others]
            with ResultsUnion(store_paths(store.path.parent)) as stored:  # every worker's results so far
                done = stored.done_groups()
                for group in [g for g in unit if _key(g) in done]:  # stored by another worker meanwhile
                    claims.release(group)
                    progress.group_stored()
                unit = [g for g in unit if _key(g) not in done]
                for group in unit:
                    zkey = (group.model, group.task)
                    if zkey not in zero_shots:
                        zero_shot = stored_zero_shot(stored, *zkey)
                        if zero_shot is not None:
                            zero_shots[zkey] = zero_shot
            if not unit:
                continue
            if unit[0].n_shots == 0 and cfg.eval.cells_per_batch > 1:
                # a task's 0-shot groups: one stack, a cell per model
                pending = [g for g in unit if (g.model, g.task) not in zero_shots]
                if pending:
                    results = evaluate_stacked(ev, [specs[(g.model, g.task)] for g in pending], task(unit[0].task),
                                               grader, acc_k, progress=progress.piece)
                    for group, result in zip(pending, results):
                        zero_shots[(group.model, group.task)] = result
                for group in unit:
                    store_group(group, *group_rows(group, {0: zero_shots[(group.model, group.task)]}, []))
                continue
            for group in unit:
                zkey = (group.model, group.task)
                if zkey not in zero_shots and group.n_shots == 0:
                    # this model's pending 0-shot groups, all tasks in one generation
                    spec = specs[zkey]
                    names = [g.task for g in todo if g.n_shots == 0 and g.model == group.model
                             and specs[(g.model, g.task)].key == spec.key and (g.model, g.task) not in zero_shots]
                    ev.load(spec)
                    results = evaluate_steps(ev, [task(n) for n in names], grader, acc_k)
                    progress.piece("evaluation")
                    for name, result in zip(names, results):
                        zero_shots[(group.model, name)] = result
            if cfg.eval.cells_per_batch == 1:  # units of one group
                group = unit[0]
                zkey = (group.model, group.task)
                store_group(group, *run_group(ev, specs[zkey], group, task(group.task), grader, zero_shots.get(zkey),
                                              acc_k=acc_k, progress=progress.piece))
                continue
            # step 0 of each cell: its model's 0-shot result, computed once (a task without 0-shot groups)
            missing = list(dict.fromkeys((g.model, g.task) for g in unit if (g.model, g.task) not in zero_shots))
            if missing:
                results = evaluate_stacked(ev, [specs[k] for k in missing], task(unit[0].task), grader, acc_k)
                zero_shots.update(zip(missing, results))
            rows = run_stack(ev, [specs[(g.model, g.task)] for g in unit], unit, task(unit[0].task), grader,
                             [zero_shots[(g.model, g.task)] for g in unit], acc_k, progress=progress.piece)
            for group, (cells, preds) in zip(unit, rows):
                store_group(group, cells, preds)
        progress.end()
    return others


def _plan_progress(cfg: Config, units: list[list[Group]], task, acc_k: int | None,
                   progress: EvalProgress) -> EvalProgress:
    """Every unit's pieces, sized (metasft.eval.eta), in the order `_run_groups` meets them: a stack
    of a task's 0-shot groups is one evaluation of its cells; one group at a time, a model's first
    pending 0-shot group evaluates all its pending 0-shot tasks in one generation."""
    e = cfg.eval
    stacked = e.cells_per_batch > 1
    later = len([s for s in recorded_steps(e.record_steps, e.adaptation_steps) if s > 0])
    todo = [g for unit in units for g in unit]
    zero_done: set[str] = set()
    for unit in units:
        first = unit[0]
        if first.n_shots == 0 and stacked:
            size = evaluation_size([task(first.task)], len(unit), e.batch_size, acc_k, stacked=True)
            progress.add(f"{first.task} 0-shot ({len(unit)} cells)", {"evaluation": ("grid", size, 1)})
            continue
        if first.n_shots == 0:
            if first.model in zero_done:  # evaluated with its model's first
                progress.add(f"{first.model} {first.task} 0-shot", {})
                continue
            zero_done.add(first.model)
            names = [g.task for g in todo if g.n_shots == 0 and g.model == first.model]
            size = evaluation_size([task(n) for n in names], 1, e.batch_size, acc_k, stacked=False)
            progress.add(f"{first.model} 0-shot on {len(names)} task(s)", {"evaluation": ("one", size, 1)})
            continue
        t = task(first.task)
        step = adaptation_size(t, [g.n_shots for g in unit], e.adaptation_batch_size)
        evaluation = evaluation_size([t], len(unit), e.batch_size, acc_k, stacked=stacked)
        note = (f"{t.name} ({len(unit)} cells, {'/'.join(sorted({str(g.n_shots) for g in unit}, key=int))}-shot)"
                if stacked else f"{first.model} {t.name} {first.n_shots}-shot seed {first.seed}")
        progress.add(note, {"adaptation step": ("adapt", step, e.adaptation_steps),
                            "evaluation": ("grid" if stacked else "one", evaluation, later)})
    return progress
