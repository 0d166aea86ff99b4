"""`metasft run CONFIG --rehearse`: the study a config describes, at a size a CPU runs in minutes,
before anyone spends GPU hours on it (issue 20; PyTorch Lightning's `fast_dev_run`, for a whole study).

The rehearsal keeps the config's *structure*: every arm and matrix variant, every meta-training and
evaluation task with its source, split, levels and template, every shot level, the per-task generation
lengths' structure, checkpoint selection and the report. It cuts the *size*: the tiny model
(`tiny-llama`, a 2-layer Llama: every configured model here is of the Llama family), a few examples
per split, each split's shortest (`data.shortest`: the cost is their tokens, each scored over the
tokenizer's whole vocabulary), two training and adaptation steps, at most two inner steps (a variant's
own K kept), one training and one evaluation seed, short generations.

Before running it reads what would fail or mislead at full size (`check`): a source that cannot load
(its tasks are left out of the rehearsal and named), a shot pool smaller than a task's largest shot
level, shots that carry no worked solution, generation caps below the reference solutions' lengths
(tokens of the configured tokenizer when it is available here, else the embedded SmolLM2's), and the
cost plan's memory per stage against the named GPU. Each is one line of `Finding`.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

from metasft.config import Config, EvalTask, TaskSource, validate
from metasft.data.cot import WORKED_SHARE, shows_working
from metasft.rundir import pooled_file

log = logging.getLogger(__name__)

TINY = "tiny-llama"
EXAMPLES = 2            # support and query examples per meta-training task
TEST_QUESTIONS = 2      # test questions per eval task
SHOT_POOL = 8           # shots kept per eval task beyond its largest shot level (Baseline 2 trains on them)
STEPS = 2               # training steps, and adaptation steps
GENERATED = 8           # new tokens per answer: decoding, stopping and grading run (the real caps are checked
                        # on the references, not generated); each token is a decoding step, the eval's cost
MAX_LENGTH = 768        # tokens per training example: the longest MATH problems' prompts fit
LONG_SHARE = 0.05       # warn when more than this share of reference solutions exceed the cap


@dataclass(frozen=True)
class Finding:
    """One thing the rehearsal found: `kind` (source, shots, generation, memory), where, what."""
    kind: str
    where: str
    message: str

    def line(self) -> str:
        return f"[{self.kind}] {self.where}: {self.message}"


# ----------------------------------------------------------------------------------------- sources
def _root(cfg: Config, source: str):
    from metasft.data.sources import source_root
    own = any(s.name == source for s in cfg.data.sources)  # a data.sources entry names its own file
    return None if own else source_root(source, cfg.data_root, cfg.data.roots)


def _load(cfg: Config, source: str, split: str, size: int | None):
    from metasft.data.sources import load_source
    return load_source(source, split, _root(cfg, source), seed=cfg.seed, size=size, user=cfg.data.sources)


def _selected(cfg: Config, spec: TaskSource | EvalTask, split: str) -> list:
    from metasft.data import tasks as T
    levels = list(getattr(spec, "levels", []) or ([spec.level] if getattr(spec, "level", None) else []))
    subjects = [spec.subject] if spec.subject else list(spec.subjects)
    records = _load(cfg, spec.source, split, min(spec.size, 60) if spec.size else None)
    return T.select(records, task=spec.name, source=spec.source, subjects=subjects, levels=levels,
                    exclude_levels=list(getattr(spec, "exclude_levels", [])))




def probe(cfg: Config) -> tuple[dict[str, int], dict[str, int], dict[str, list], list[Finding]]:
    """Load every task's records once: (meta task -> records, eval task -> shot pool size, eval task ->
    test records, findings for the sources that could not load)."""
    meta, pools, tests, findings = {}, {}, {}, []
    failed: dict[tuple[str, str], str] = {}

    def attempt(spec, split):
        key = (spec.source.lower(), split)
        if key in failed:
            return None
        try:
            return _selected(cfg, spec, split)
        except Exception as e:  # noqa: BLE001 - any failure to load is a finding, not a crash
            failed[key] = " ".join(str(e).split())[:400]
            findings.append(Finding("source", f"{spec.source}/{split}", f"{failed[key]}; its tasks are left out "
                                                                          "of this rehearsal"))
            return None

    for spec in cfg.data.tasks:
        records = attempt(spec, spec.split)
        if records is not None:
            meta[spec.name] = len(records)
    for spec in cfg.data.eval_tasks:
        test, pool = attempt(spec, spec.split), attempt(spec, spec.shots_split)
        if test is not None and pool is not None:
            tests[spec.name], pools[spec.name] = test, len(pool)
    return meta, pools, tests, findings


# ----------------------------------------------------------------------------------------- checks
def _tokenizer(cfg: Config):
    """The configured model's tokenizer where it loads here (a local or cached copy), else SmolLM2's."""
    from transformers import AutoTokenizer

    from metasft.models import embedded_tokenizer_dir
    name = cfg.model.partial_pretrain
    try:
        if name != TINY:
            return AutoTokenizer.from_pretrained(name, local_files_only=True), name
    except Exception:  # noqa: BLE001 - not available offline: measure with the embedded tokenizer
        pass
    return AutoTokenizer.from_pretrained(embedded_tokenizer_dir("smollm2-135m-instruct", cfg.model.cache_dir)), \
        "smollm2-135m-instruct (the configured tokenizer is not available here)"


def generation_findings(cfg: Config, tests: dict[str, list]) -> list[Finding]:
    """Eval tasks whose reference solutions are longer than their generation cap, in tokens."""
    out = []
    if not tests:
        return out
    tokenizer, which = _tokenizer(cfg)
    caps = {t.name: min(t.max_new_tokens, cfg.eval.max_new_tokens) for t in cfg.data.eval_tasks}
    for name, records in tests.items():
        lengths = sorted(len(tokenizer(r.solution)["input_ids"]) for r in records if r.solution)
        if not lengths:
            continue
        over = sum(n > caps[name] for n in lengths) / len(lengths)
        if over > LONG_SHARE:
            p90 = lengths[min(len(lengths) - 1, math.ceil(0.9 * len(lengths)) - 1)]
            out.append(Finding("generation", f"data.eval_tasks[{name}]",
                               f"{100 * over:.0f}% of its {len(lengths)} reference solutions are longer than its "
                               f"cap of {caps[name]} new tokens (90th percentile {p90} tokens of {which}); "
                               f"raise max_new_tokens (and eval.max_new_tokens, the cap over every task)"))
    return out


def shot_findings(cfg: Config, pools: dict[str, int], tests: dict[str, list]) -> list[Finding]:
    """Shot pools smaller than a task's largest shot level, and shots without a worked solution."""
    out = []
    for spec in cfg.data.eval_tasks:
        if spec.name not in pools:
            continue
        need = max(spec.n_shots, default=0)
        # test items drawn from the same split leave the pool (the data build removes them)
        left = pools[spec.name] - (spec.test_size if spec.split == spec.shots_split else 0)
        if left < need:
            out.append(Finding("shots", f"data.eval_tasks[{spec.name}]",
                               f"the shot pool ({spec.source}/{spec.shots_split}) holds {max(left, 0)} items after "
                               f"its {spec.test_size} test items, fewer than its largest shot level {need}"))
        records = tests.get(spec.name, [])
        worked = sum(shows_working(r) for r in records) / len(records) if records else 1.0
        covered = cfg.data.cot.base_url and cfg.data.cot.eval_shots
        if worked < WORKED_SHARE and not covered:
            out.append(Finding("shots", f"data.eval_tasks[{spec.name}]",
                               f"{100 * (1 - worked):.0f}% of {spec.source}'s solutions are answer-only: adapting on "
                               f"such shots teaches the model to stop reasoning; set data.cot.base_url (a CoT "
                               f"endpoint) to give its shots worked solutions"))
    return out


def memory_findings(cfg: Config, gpu: str) -> list[Finding]:
    """Stages whose planned memory per process exceeds one `gpu` device."""
    from metasft.plan import model_shape, stages, throughput
    tp = throughput(gpu)
    out = []
    for stage in stages(cfg, model_shape(cfg.model)):
        if stage.memory is not None and stage.memory.peak > tp.memory_gib * 2 ** 30:
            out.append(Finding("memory", stage.name, f"the plan puts one process at {stage.memory.peak / 2 ** 30:.1f} "
                                                     f"GiB, more than one {gpu}'s {tp.memory_gib:g} GiB "
                                                     f"(`metasft plan --gpu {gpu}` has the breakdown)"))
    return out


def check(cfg: Config, gpu: str = "h100") -> tuple[Config, list[Finding]]:
    """What would fail or mislead at full size, and the rehearsal config of what can run here."""
    meta, pools, tests, findings = probe(cfg)
    findings += shot_findings(cfg, pools, tests)
    findings += generation_findings(cfg, tests)
    try:
        findings += memory_findings(cfg, gpu)
    except Exception as e:  # noqa: BLE001 - a plan that cannot be made is itself a finding
        findings.append(Finding("memory", "metasft plan", f"no plan for this config: {e}"))
    return rehearsal_config(cfg, meta, pools, tests), findings


# ----------------------------------------------------------------------------------------- the cut
def _inner_steps(cfg: Config) -> int:
    """meta.num_inner_steps cut to STEPS (the inner loop and the adapted validation cost K passes each),
    but never onto a K a variant sets itself: a variant's budget must stay matched to the primary run's,
    or not, as at full size (metasft.matrix pairs them by it). A variant's own K stays as it is."""
    k = cfg.meta.num_inner_steps
    theirs = {v.overrides.get("meta.num_inner_steps") for v in cfg.variants}
    if k in theirs:
        return k
    return next(n for n in range(min(k, STEPS), k + 1) if n == k or n not in theirs)


def rehearsal_config(cfg: Config, meta: dict[str, int], pools: dict[str, int], tests: dict[str, list]) -> Config:
    """`cfg` with its structure and the size of a rehearsal: only the tasks whose sources loaded
    (`meta`: records per meta task; `pools`, `tests`: per eval task)."""
    tasks = []
    for t in cfg.data.tasks:
        if t.name not in meta:
            continue
        each = max(1, min(EXAMPLES, meta[t.name] // 2))
        tasks.append(dataclasses.replace(t, support_max_samples=each, query_max_samples=each,
                                         size=min(t.size, 60) if t.size else None))
    if not tasks:
        from metasft.data.records import DataError
        raise DataError("rehearsal: no meta-training task's source could load; see the [source] lines above")
    eval_tasks = []
    for t in cfg.data.eval_tasks:
        if t.name not in pools:
            continue
        test = max(1, min(TEST_QUESTIONS, len(tests[t.name])))
        shots = [n for n in t.n_shots if n <= pools[t.name] - test] or [0]
        eval_tasks.append(dataclasses.replace(t, test_size=test, max_new_tokens=min(t.max_new_tokens, GENERATED),
                                              n_shots=shots, size=min(t.size, 60) if t.size else None,
                                              shots_max=max(max(shots), SHOT_POOL)))
    kept = {t.name for t in tasks}
    meta_tasks = [m for m in cfg.meta.tasks if m.name in kept]
    dropped_files = {pooled_file(t.name) for t in cfg.data.tasks if t.name not in kept}
    data = dataclasses.replace(cfg.data, tasks=tasks, eval_tasks=eval_tasks, shortest=True,
                               max_length=min(cfg.data.max_length, MAX_LENGTH),
                               train_files=[f for f in cfg.data.train_files if f not in dropped_files], val_max_samples=min(cfg.data.val_max_samples, 1),
                               train_batch_size=min(cfg.data.train_batch_size, 4),
                               total_samples=None if cfg.data.total_samples is None else min(cfg.data.total_samples, 16))
    model = dataclasses.replace(cfg.model, partial_pretrain=TINY, use_fsdp=False, dtype="float32",
                                gradient_checkpointing=False, lora_rank=min(cfg.model.lora_rank, 8),
                                lora_alpha=min(cfg.model.lora_alpha, 16))
    meta = dataclasses.replace(cfg.meta, tasks=meta_tasks, num_inner_steps=_inner_steps(cfg),
                               inner_batch_size=min(cfg.meta.inner_batch_size, 2),
                               query_batch_size=min(cfg.meta.query_batch_size, 2),
                               meta_batch_size=min(cfg.meta.meta_batch_size, len(tasks)),
                               min_inner_drop=0.0)  # two steps of a random tiny model say nothing of adaptation
    trainer = dataclasses.replace(cfg.trainer, total_steps=STEPS, total_epochs=1, save_freq=STEPS, test_freq=STEPS,
                                  micro_batch_size=min(cfg.trainer.micro_batch_size, 4), val_batch_size=2,
                                  device="cpu", bf16=False, loggers=["jsonl"], seeds=cfg.trainer.seeds[:1])
    steps = min(STEPS, cfg.eval.adaptation_steps)
    record = sorted({min(steps, round(r * steps / cfg.eval.adaptation_steps)) for r in cfg.eval.record_steps})
    evaluation = dataclasses.replace(cfg.eval, seeds=cfg.eval.seeds[:1], adaptation_steps=steps, record_steps=record,
                                     adaptation_batch_size=min(cfg.eval.adaptation_batch_size, 2),
                                     batch_size=min(cfg.eval.batch_size, 16), max_new_tokens=GENERATED,
                                     acc_k=min(cfg.eval.acc_k, 2), similarity_batches=1)
    out = dataclasses.replace(cfg, name=f"{cfg.name}_rehearsal", model=model, data=data, meta=meta, trainer=trainer,
                              eval=evaluation)
    validate(out)
    return out
