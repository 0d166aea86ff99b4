"""Experiment configuration: a dataclass schema, YAML files, dotted command-line overrides.

Defaults live in the dataclasses only. A YAML file (optionally `include:`-ing others, paths relative
to it) and then `key.sub=value` overrides are merged on top; an unknown key, a wrong type or a missing
required key is a `ConfigError` naming the key, the file and what was expected. The key names are the
design's (`model.partial_pretrain`, `meta.inner_lr`, ...); verl's names for the same settings are
accepted as aliases (see ALIASES).
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from metasft import arms
from metasft.errors import MetasftError
from metasft.rundir import meta_train_file


class ConfigError(MetasftError, ValueError):
    """A config key is unknown, mistyped, missing or inconsistent; the message names it."""


# ------------------------------------------------------------------------------- what a field changes
# Every config field declares, in its `used_by` metadata, what depends on it; the stage fingerprints
# (metasft.fingerprint), the resume check (train.run) and compare's ignored keys are read from these
# declarations (`fields_used_by`), and tests/test_contracts.py fails on a field that declares nothing.
#   data, train, eval, similarity, report   the stage whose result it changes; train.base: the base
#       arm's (a fresh LoRA), train.meta: meta arms', train.sft: SFT arms', train.sft_unpaired: an SFT
#       arm's whose budget is matched to this config's meta settings rather than a run
#   resume   a `train --resume` may change it      path   a filesystem path (compared resolved)
#   where    differs between directories without changing what was run (compare leaves it out)
#   no tag at all (NO_STAGE): no result depends on it (how or where a stage runs)
USES = ("data", "train", "train.base", "train.meta", "train.sft", "train.sft_unpaired", "eval", "similarity",
        "report", "resume", "path", "where")


def used_by(*uses: str) -> dict:
    """A config field's metadata: what depends on it (USES)."""
    unknown = set(uses) - set(USES)
    assert not unknown, f"unknown uses {unknown}; expected some of {USES}"
    return {"used_by": frozenset(uses)}


NO_STAGE = used_by()
MODEL_KEY = used_by("train", "train.base", "eval", "similarity")
TOKENS_KEY = used_by("train", "eval", "similarity")
DATA_KEY, TRAIN_KEY, EVAL_KEY, REPORT_KEY = used_by("data"), used_by("train"), used_by("eval"), used_by("report")
META_KEY, SFT_KEY = used_by("train.meta"), used_by("train.sft")
META_BUDGET_KEY = used_by("train.meta", "train.sft_unpaired")  # an unpaired SFT run's budget reads it too


# ----------------------------------------------------------------------------------------- schema
@dataclass
class ModelArgs:
    # Hugging Face id, local directory, "smollm2-135m-instruct" (embedded GGUF) or "tiny-llama" (tests)
    partial_pretrain: str = field(default="smollm2-135m-instruct", metadata=MODEL_KEY)
    lora_rank: int = field(default=16, metadata=MODEL_KEY)
    lora_alpha: int = field(default=32, metadata=MODEL_KEY)
    lora_dropout: float = field(default=0.0, metadata=MODEL_KEY)
    target_modules: list[str] = field(metadata=MODEL_KEY, default_factory=lambda: [
        "q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    use_fsdp: bool = field(default=False, metadata=NO_STAGE)          # under torchrun: FSDP2 if true, else DDP
    # base weights: float32 | bfloat16 (adapters always float32)
    dtype: str = field(default="float32", metadata=MODEL_KEY)
    gradient_checkpointing: bool = field(default=False, metadata=NO_STAGE)
    # where the embedded model's safetensors cache goes
    cache_dir: str | None = field(default=None, metadata=used_by("path", "where"))


@dataclass
class MetaTask:
    """One meta-training task as the trainer sees it: files relative to the data directory."""
    name: str
    support_files: list[str] = field(default_factory=list)
    query_files: list[str] = field(default_factory=list)
    support_max_samples: int | None = None
    query_max_samples: int | None = None


@dataclass
class MetaArgs:
    # the design's key: first-order MAML; false (second order) is refused
    use_fomaml: bool = field(default=True, metadata=META_KEY)
    algorithm: str = field(default="fomaml", metadata=META_BUDGET_KEY)       # fomaml | reptile
    inner_lr: float = field(default=5e-5, metadata=META_KEY)
    num_inner_steps: int = field(default=5, metadata=META_BUDGET_KEY)
    inner_batch_size: int = field(default=4, metadata=META_BUDGET_KEY)
    # adam | sgd, state fresh for each task. Adam: at the design's inner_lr 5e-5, SGD leaves the LoRA where
    # it was (support-loss drop over K=5 steps on SmolLM2-135M: SGD 0.01 %, Adam 6-9 %; configs/fomaml_sft.yaml)
    inner_optimizer: str = field(default="adam", metadata=META_KEY)
    # the inner-loop guard (issue 9): mean relative support-loss drop, pre vs post adaptation on the same
    # batch, over the first `inner_drop_steps` outer steps; below `min_inner_drop`, the run warns that
    # θ' ≈ θ (FOMAML then reduces to SFT on the query batches) and records it in its manifest
    min_inner_drop: float = field(default=0.01, metadata=META_KEY)
    inner_drop_steps: int = field(default=20, metadata=META_KEY)
    outer_lr: float = field(default=2e-5, metadata=META_KEY)
    meta_batch_size: int = field(default=3, metadata=META_BUDGET_KEY)
    query_batch_size: int = field(default=4, metadata=META_BUDGET_KEY)
    # empty: every data.tasks entry
    tasks: list[MetaTask] = field(metadata=used_by("train.meta", "train.sft"), default_factory=list)


@dataclass
class TaskSource:
    """How a meta-training task is built from a source (for `metasft data build`)."""
    name: str
    source: str
    subject: str | None = None
    subjects: list[str] = field(default_factory=list)
    split: str = "train"
    levels: list[int] = field(default_factory=list)   # empty: all levels
    exclude_levels: list[int] = field(default_factory=list)  # levels held out (e.g. for an eval task)
    size: int | None = None                           # generated sources: problems per domain
    support_max_samples: int | None = None            # counts win over data.support_ratio
    query_max_samples: int | None = None


@dataclass
class EvalTask:
    """A held-out few-shot evaluation task (the design's FEW_SHOT_EVAL_TASKS)."""
    name: str
    source: str
    subject: str | None = None
    subjects: list[str] = field(default_factory=list)
    level: int | None = None        # the design's one-level form of `levels`
    levels: list[int] = field(default_factory=list)   # empty (and no `level`): all levels
    split: str = "test"             # where test items come from
    shots_split: str = "train"      # where the pool of shots comes from
    size: int | None = None
    n_shots: list[int] = field(default_factory=lambda: [0, 5, 10, 25, 50])
    test_size: int = 200
    unseen: bool = False            # protocol B (cross-task zero-shot)
    cross_domain: bool = False      # success criterion 5 (science / MMLU-STEM-like)
    allow_overlap: bool = False     # may share a (source, subject, level) slice with a meta-training task
    max_new_tokens: int = 256
    shots_max: int | None = None    # the shot pool cut to this many (seeded; Baseline 2 trains on it); None: all


@dataclass
class Columns:
    """Which column of a user's data holds each record field (metasft.data.sources.custom)."""
    problem: str = "problem"
    solution: str | None = "solution"   # None: no worked solution ("The answer is X."; data.cot can add one)
    answer: str | None = "answer"       # None: the last \boxed{} of the solution
    subject: str | None = None          # None: every row's subject is the source's name
    level: str | None = None            # 1-5 or "Level 3"; None (or an empty cell): no level
    choices: str | None = None          # a list of options (in CSV, a JSON list): multiple choice
    id: str | None = None               # None: the row number


@dataclass
class UserSource:
    """Your own data as a source: a JSONL / JSON / CSV / parquet file or a Hugging Face dataset id.
    Tasks (data.tasks, data.eval_tasks) name it in `source:` like a built-in source."""
    name: str
    path: str | None = None         # a file, relative to the working directory; `{split}` becomes the split name
    hub: str | None = None          # or a hub dataset id (the task's split is the hub's split)
    hub_config: str | None = None
    split_column: str | None = None  # rows whose column equals the split name; None: every split reads all rows
    columns: Columns = field(default_factory=Columns)
    domain: str = "mixed"
    answer_type: str = "math"       # how answers are graded: math | integer | float | bool | list (choice: set columns.choices)


@dataclass
class CotArgs:
    # any OpenAI-compatible endpoint; None: keep the source's solution
    base_url: str | None = field(default=None, metadata=DATA_KEY)
    model: str | None = field(default=None, metadata=DATA_KEY)
    api_key_env: str = field(default="OPENAI_API_KEY", metadata=NO_STAGE)
    cache_dir: str | None = field(default=None, metadata=NO_STAGE)
    # also the eval tasks' pools of shots (few-shot adaptation and Baseline 2 train on them); test items never
    eval_shots: bool = field(default=True, metadata=DATA_KEY)


@dataclass
class DataArgs:
    tasks: list[TaskSource] = field(metadata=DATA_KEY, default_factory=list)
    eval_tasks: list[EvalTask] = field(metadata=DATA_KEY, default_factory=list)
    sources: list[UserSource] = field(metadata=DATA_KEY, default_factory=list)  # your own files / hub datasets, by name
    # per built-in source: a directory laid out like ../shared/data, or "hub"; overrides data_root for
    # that source (e.g. {geometry3k: DIR}: the hub for the others, local files for Geometry3K)
    roots: dict = field(metadata=DATA_KEY, default_factory=dict)
    support_ratio: float = field(default=0.2, metadata=DATA_KEY)
    query_ratio: float = field(default=0.3, metadata=DATA_KEY)        # the rest is held out (val, then unused)
    # share of the held-out part kept for checkpoint selection
    val_ratio: float = field(default=0.1, metadata=DATA_KEY)
    val_max_samples: int = field(default=64, metadata=DATA_KEY)
    # every split, test set and shot pool takes its task's shortest records (characters) instead of a seeded
    # draw: a rehearsal's choice (metasft.rehearse), whose cost is its examples' tokens
    shortest: bool = field(default=False, metadata=DATA_KEY)
    template: str = field(default="en", metadata=DATA_KEY)            # en | zh (the design's Chinese prompt)
    use_chat_template: bool = field(default=True, metadata=TOKENS_KEY)
    cot: CotArgs = field(default_factory=CotArgs)
    # an already built data directory; None: build into the run
    dir: str | None = field(default=None, metadata=used_by("path", "where"))
    # training-time settings (the design's keys)
    max_length: int = field(default=2048, metadata=TOKENS_KEY)
    truncation: str = field(default="right", metadata=TOKENS_KEY)       # right | left | error
    train_files: list[str] = field(metadata=SFT_KEY, default_factory=list)  # SFT arms; empty: every task's _all file
    train_batch_size: int = field(default=32, metadata=SFT_KEY)
    # SFT budget; None: matched to the paired FOMAML run
    total_samples: int | None = field(default=None, metadata=SFT_KEY)
    # matched (same examples processed) | unique (same distinct, epochs)
    budget: str = field(default="matched", metadata=SFT_KEY)
    # Exp 5's "2x data": SFT-Mixed's distinct examples (new ones, set aside by the data build) and examples
    # processed, both x this; sft_task ignores it
    budget_scale: float = field(default=1.0, metadata=SFT_KEY)
    # SFT arms over several tasks: balanced (every task an equal share of the examples, as FOMAML samples
    # tasks uniformly) | pooled (examples drawn uniformly from all tasks' data together)
    mixture: str = field(default="balanced", metadata=SFT_KEY)
    # arm sft_task: the eval task whose pool it trains total_epochs over
    sft_task: str | None = field(default=None, metadata=SFT_KEY)


@dataclass
class OptimArgs:
    optimizer_type: str = field(default="AdamW", metadata=TRAIN_KEY)
    weight_decay: float = field(default=0.01, metadata=TRAIN_KEY)
    clip_grad: float = field(default=1.0, metadata=TRAIN_KEY)
    betas: list[float] = field(metadata=TRAIN_KEY, default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = field(default=0, metadata=TRAIN_KEY)


@dataclass
class TrainerArgs:
    total_steps: int = field(default=5000, metadata=used_by("train", "resume"))
    total_epochs: int = field(default=3, metadata=SFT_KEY)
    lr: float = field(default=2e-5, metadata=SFT_KEY)                # SFT arms
    # SFT arms: gradient accumulation splits train_batch_size
    micro_batch_size: int = field(default=8, metadata=SFT_KEY)
    # a resumable checkpoint every N steps (and at the last step)
    save_freq: int = field(default=500, metadata=used_by("resume"))
    # checkpoints kept once the run has finished, the newest N: 0 none (the adapters are the result),
    # 1 or more: the run can later be extended (a larger total_steps). While it runs: the newest max(N, 1)
    keep_checkpoints: int = field(default=1, metadata=used_by("resume"))
    test_freq: int = field(default=100, metadata=TRAIN_KEY)            # validation every N steps (0: none)
    val_batch_size: int = field(default=8, metadata=TRAIN_KEY)
    log_freq: int = field(default=1, metadata=used_by("resume"))
    loggers: list[str] = field(metadata=used_by("resume"), default_factory=lambda: ["jsonl"])  # + tensorboard, wandb
    device: str = field(default="auto", metadata=NO_STAGE)            # auto | cpu | cuda
    bf16: bool = field(default=False, metadata=TRAIN_KEY)              # autocast on GPU
    # SFT arms: the FOMAML run whose budget to match
    paired_run: str | None = field(default=None, metadata=used_by("path", "where"))
    # `metasft run`: train every arm (and matrix variant) once per seed, the first under the arm's own
    # name, the others as <name>_seed<s>; the verdicts then include the spread between training runs.
    # [] = one run per arm with `seed`
    seeds: list[int] = field(metadata=REPORT_KEY, default_factory=list)
    # which validation metric picks adapter_best: objective (each arm its own: FOMAML and Reptile the
    # loss after inner-loop adaptation, val_loss_adapted; SFT the plain val_loss) | val_loss (every arm)
    select_by: str = field(default="objective", metadata=TRAIN_KEY)


@dataclass
class EvalArgs:
    models: list[str] = field(metadata=used_by("where"), default_factory=list)  # run dirs, hub ids or "base"
    seeds: list[int] = field(metadata=EVAL_KEY, default_factory=lambda: [0, 1, 2, 3, 4])
    adaptation_steps: int = field(default=100, metadata=EVAL_KEY)
    adaptation_lr: float = field(default=1e-4, metadata=EVAL_KEY)
    adaptation_batch_size: int = field(default=4, metadata=used_by("eval", "similarity"))
    record_steps: list[int] = field(metadata=EVAL_KEY, default_factory=lambda: [0, 10, 25, 50, 100])
    batch_size: int = field(default=16, metadata=NO_STAGE)            # generation
    max_new_tokens: int = field(default=256, metadata=EVAL_KEY)
    # the base weights while evaluating: float32 | bfloat16 | auto | null (model.dtype). The adapters
    # stay float32 (their deltas computed in this dtype); bfloat16 halves the KV cache and, on a CPU
    # with bf16 matmul units (AMX, AVX512-BF16), runs the matmuls 3-7x faster (BENCHMARKS.md). auto is
    # resolved when the config loads: bfloat16 where the device has such units, else float32
    dtype: str | None = field(default=None, metadata=EVAL_KEY)
    target_acc: float = field(default=0.7, metadata=REPORT_KEY)
    grade_timeout_s: float = field(default=5.0, metadata=NO_STAGE)
    similarity_batches: int = field(default=4, metadata=used_by("similarity"))
    # > 0: also sample k answers per question for acc@k (k x the cost)
    acc_k: int = field(default=0, metadata=EVAL_KEY)
    # > 1: up to this many groups of one task adapt and decode together (eval/grid.py): its few-shot
    # groups, and apart from them its 0-shot groups (a cell per model); the results equal one at a
    # time (1). A decoding batch then holds batch_size rows across the cells.
    cells_per_batch: int = field(default=1, metadata=NO_STAGE)
    # compare FOMAML and SFT-Mixed even if their budgets differ
    allow_budget_mismatch: bool = field(default=False, metadata=NO_STAGE)
    # the verdict in `correct` and `accuracy`, what the statistics read: strict (an explicit final
    # answer: \boxed{}, "The answer is", ####, a stated option letter) | flexible (also the last
    # number); both are stored, and neither credits an output cut off or looping (issue 19)
    grading: str = field(default="strict", metadata=EVAL_KEY)


GRADINGS = ("strict", "flexible")  # eval.grading: which verdict is a prediction's `correct` (eval/scoring.py)

# the design's hypotheses and success criteria, in the order the report lists them (metasft.stats.verdicts)
CLAIMS = ("H1", "H2", "H3", "C1", "C2", "C3", "C4", "C5")


@dataclass
class StatsArgs:
    """How the report decides the design's claims (metasft.stats.verdicts); fixed before the run."""
    # H1, C1 ("matches", ">="): non-inferiority margin, accuracy points
    margin_accuracy: float = field(default=0.05, metadata=REPORT_KEY)
    # the same on the reference solutions' token-mean loss (nats)
    margin_loss: float = field(default=0.05, metadata=REPORT_KEY)
    # the primary claims: one family, family-wise 5% (Bonferroni); the others are exploratory
    primary: list[str] = field(metadata=REPORT_KEY, default_factory=lambda: ["H1", "H2", "H3"])


@dataclass
class Variant:
    """One more training run of the experiment matrix (the design's Exp 1-5) in `metasft run`.

    A meta variant (arm fomaml | reptile) is compared with an SFT-Mixed run matched to its own example
    budget: `partner`, the name of an SFT variant or "sft_mixed", else one trained for it (metasft.matrix).
    An SFT variant (arm sft_mixed) matches the budget of the meta run `paired` (data.budget_scale
    then scales it: Exp 5's 2x data is twice the distinct examples and twice the examples processed).
    """
    name: str                       # the run's name: runs/<name>, the model's name in the results
    arm: str
    overrides: dict = field(default_factory=dict)  # dotted key -> value on top of the experiment's config
    partner: str | None = None      # meta variants: the SFT run compared with it
    paired: str = "fomaml"          # SFT variants: the meta run whose budget they match
    label: str | None = None        # e.g. "Exp 3", shown in the report


@dataclass
class Config:
    name: str = field(default="metasft", metadata=REPORT_KEY)
    arm: str = field(default="fomaml", metadata=NO_STAGE)             # fomaml | reptile | sft_mixed | sft_task | base
    arms: list[str] = field(metadata=NO_STAGE, default_factory=lambda: ["base", "fomaml", "sft_mixed"])  # `metasft run`
    variants: list[Variant] = field(metadata=NO_STAGE, default_factory=list)  # `metasft run`: the matrix's other runs
    seed: int = field(default=0, metadata=used_by("data", "train", "train.base", "eval", "similarity"))
    # local copies laid out like ../shared/data; None: the hub (data.roots: per source)
    data_root: str | None = field(default=None, metadata=used_by("data", "path"))
    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    meta: MetaArgs = field(default_factory=MetaArgs)
    optim: OptimArgs = field(default_factory=OptimArgs)
    trainer: TrainerArgs = field(default_factory=TrainerArgs)
    eval: EvalArgs = field(default_factory=EvalArgs)
    stats: StatsArgs = field(default_factory=StatsArgs)


# verl's names -> (the design's name, value converter)
ALIASES: dict[str, tuple[str, Any]] = {
    "model.strategy": ("model.use_fsdp", lambda v: str(v).lower().startswith("fsdp")),
    "trainer.total_training_steps": ("trainer.total_steps", None),
    "optim.optimizer": ("optim.optimizer_type", None),
}
# inside list entries: the design's scheme-B shorthand
ENTRY_ALIASES = {"support": "support_max_samples", "query": "query_max_samples"}


def config_fields(cls=None, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    """(dotted key, field) of every leaf field of the config schema (a nested section is not a leaf; a
    list of entries is)."""
    cls = cls or Config
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += config_fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            out.append((f"{prefix}{f.name}", f))
    return out


def fields_used_by(use: str) -> tuple[str, ...]:
    """The dotted keys of the config fields that declare `use` (USES)."""
    assert use in USES, use
    return tuple(key for key, f in config_fields() if use in f.metadata["used_by"])


# ----------------------------------------------------------------------------------------- loading
def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then the YAML at `path` (with its includes), then `key=value` overrides."""
    raw: dict = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        raw = _read_yaml(Path(path), seen=())
    raw = _apply_aliases(raw, origin)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        key = key.strip()
        if key in ALIASES:
            key, convert = ALIASES[key]
            value = _override_value(key, text)
            value = convert(value) if convert else value
        else:
            value = _override_value(key, text)
        _set_dotted(raw, key, value, f"command-line override {item!r}")
    cfg = _build(Config, raw, "", origin)
    if cfg.eval.dtype == "auto":
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, dtype=native_half(cfg.trainer.device)))
    try:
        validate(cfg)
    except ConfigError as e:
        where = origin + (f" with overrides {list(overrides)}" if overrides else "")
        raise ConfigError(f"{where}: {e}") from None
    return cfg


def load_fields(base, path: str | Path):
    """Dataclass instance `base` with the keys of YAML file `path` replaced: the config's strict checks
    (an unknown key or a wrong type is a ConfigError naming the key and the file)."""
    return _build(type(base), _deep_merge(dataclasses.asdict(base), _read_yaml(Path(path), seen=())), "", str(path))


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (safe_load keeps the last one
    silently) and a key that is not a string (`1: x`, `null: x`); merge keys (<<) work as before."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise yaml.constructor.ConstructorError(
                        None, None, f"a key must be a string, got {type(key).__name__} {key!r}", key_node.start_mark)
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str, where: str):
    """The YAML document `text` (strictly: see _StrictLoader; an alias that contains itself, nesting
    deeper than Python's recursion and aliases that expand past MAX_YAML_VALUES refused); ConfigError
    naming `where` otherwise."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)
        _check_structure(data, where, {}, set())
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to be a config") from None
    return data


# A config has hundreds of values; aliases of aliases (`a1: [*a0, *a0, ...]`, a "billion laughs")
# expand exponentially and would hang every walk over the config.
MAX_YAML_VALUES = 100_000


def _check_structure(value, where: str, sizes: dict[int, int], open_: set[int]) -> int:
    """The number of values `value` expands to, each alias counted where it is used; ConfigError for
    an alias that contains itself or an expansion past MAX_YAML_VALUES. `sizes` memoizes by node
    identity, so a shared node is walked once."""
    if not isinstance(value, (dict, list)):
        return 1
    key = id(value)
    if key in open_:
        raise ConfigError(f"{where}: an alias (*name) refers to a node that contains it (a recursive structure)")
    if key not in sizes:
        open_.add(key)
        children = value.values() if isinstance(value, dict) else value
        sizes[key] = 1 + sum(_check_structure(child, where, sizes, open_) for child in children)
        open_.discard(key)
        if sizes[key] > MAX_YAML_VALUES:
            raise ConfigError(f"{where}: its aliases (*name) expand to more than {MAX_YAML_VALUES:,} values")
    return sizes[key]


def _override_value(key: str, text: str):
    """An override's value as YAML (1e-4, [0, 1], {a: b}); a plain unquoted string is kept whole,
    `#` included (YAML would read `/data/run #2` as a path and a comment)."""
    value = load_yaml(text, f"override {key}={text!r}")
    if isinstance(value, str) and "#" in text and not text.strip().startswith(("'", '"')):
        return text.strip()
    return value


def _read_yaml(path: Path, seen: tuple) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: include cycle through {[str(p) for p in seen]}")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), str(path)) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at top level, got {type(data).__name__}")
    includes = data.pop("include", [])
    includes = [includes] if isinstance(includes, str) else includes
    if not isinstance(includes, list) or not all(isinstance(inc, str) for inc in includes):
        raise ConfigError(f"{path}: include must be a file name or a list of them, got {includes!r}")
    merged: dict = {}
    for inc in includes:
        merged = _deep_merge(merged, _read_yaml(path.parent / inc, seen + (path.resolve(),)))
    return _deep_merge(merged, _apply_aliases(data, str(path)))


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _apply_aliases(raw: dict, origin: str) -> dict:
    raw = _deep_merge({}, raw)
    for alias, (target, convert) in ALIASES.items():
        section, key = alias.split(".")
        if isinstance(raw.get(section), dict) and key in raw[section]:
            value = raw[section].pop(key)
            tsection, tkey = target.split(".")
            if tkey in raw[tsection]:
                raise ConfigError(f"{origin}: both {alias} and its alias target {target} are set")
            raw[tsection][tkey] = convert(value) if convert else value
    return raw


def _set_dotted(raw: dict, key: str, value: Any, origin: str) -> None:
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[_index(part, node, key, origin)]
            continue
        node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"{origin}: {'.'.join(parts[:i + 1])} is not a section")
    last = parts[-1]
    if isinstance(node, list):
        node[_index(last, node, key, origin)] = value
    else:
        node[last] = value


def _index(part: str, node: list, key: str, origin: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"{origin}: {key}: {part!r} is not an index into a list of {len(node)}")
    return int(part)


def _build(cls, raw: Any, prefix: str, origin: str):
    """Instantiate dataclass `cls` from `raw`, type-checking every key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: {prefix or 'config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"{origin}: unknown key(s) {[where + k for k in unknown]}; "
                          f"valid keys here: {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in raw:
            kwargs[f.name] = _coerce(raw[f.name], hints[f.name], key, origin)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{origin}: required key {key!r} is missing")
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, key: str, origin: str) -> Any:
    def fail(expected: str):
        raise ConfigError(f"{origin}: {key} must be {expected}, got {value!r}")

    origin_tp = typing.get_origin(tp)
    if origin_tp in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        for i, arg in enumerate(args):  # the first type the value fits
            try:
                return _coerce(value, arg, key, origin)
            except ConfigError:
                if i == len(args) - 1:
                    raise
    if dataclasses.is_dataclass(tp):
        if isinstance(value, dict) and tp in (TaskSource, MetaTask):
            value = {ENTRY_ALIASES.get(k, k): v for k, v in value.items()}
        return _build(tp, value, key, origin)
    if origin_tp is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            fail("a list")
        return [_coerce(v, item_tp, f"{key}[{i}]", origin) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        fail("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower().startswith("level ") and value.split()[-1].isdigit():
            return int(value.split()[-1])  # the design's 'Level 5'
        fail("an integer")
    if tp is float:
        # YAML 1.1 reads 5e-5 (no dot) as a string: accept numeric strings; ints become floats.
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            fail("a finite number")
        try:
            number = float(value)
        except ValueError:
            fail("a finite number")
        if not math.isfinite(number):
            fail("a finite number")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        fail("a string (quote it in YAML)")
    if tp is Any or tp is dict:
        return value
    raise TypeError(f"unsupported config type {tp} for {key}")


# ----------------------------------------------------------------------------------------- checks
# A name from a config becomes a file or directory name in the output directory (data/meta_train/
# <task>_support.parquet, runs/<variant>/): it is never a path (issue 23: a task named
# ../../../../escaped wrote outside --out).
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def check_name(key: str, value: str) -> None:
    if not SAFE_NAME.fullmatch(value):
        raise ConfigError(f"{key}={value!r}: a name becomes a file name in the output directory; use letters, "
                          f"digits and _ . - only (no / or spaces, not starting with .)")


def check_experiment_name(value: str) -> None:
    """`name` titles the report and names a rehearsal's default directory (runs/<name>_rehearsal):
    any text (unicode and spaces too) that is one file name, never a path."""
    if (not value.strip() or len(value) > 100 or value in (".", "..") or any(c in value for c in "/\\")
            or any(not c.isprintable() for c in value)):
        raise ConfigError(f"name={value[:60]!r}{'...' if len(value) > 60 else ''}: the experiment's name must be "
                          f"one file name of at most 100 printable characters (no / or \\, not . or ..)")


def validate(cfg: Config) -> None:
    """Cross-field checks, run before any heavy work."""
    def need(cond: bool, msg: str):
        if not cond:
            raise ConfigError(msg)

    check_experiment_name(cfg.name)
    need(bool(cfg.model.target_modules), "model.target_modules is empty: LoRA needs at least one projection to adapt")

    for kind, named in (("data.tasks", cfg.data.tasks), ("data.eval_tasks", cfg.data.eval_tasks),
                        ("data.sources", cfg.data.sources), ("variants", cfg.variants)):
        for i, entry in enumerate(named):
            check_name(f"{kind}.{i}.name", entry.name)

    known = arms.names()
    need(cfg.arm in known, f"arm must be one of {known}, got {cfg.arm!r}")
    bad_arms = [a for a in cfg.arms if a not in known]
    need(not bad_arms, f"arms: unknown {bad_arms}; expected some of {known}")
    need(bool(cfg.arms), f"arms is empty: list the arms a run trains and compares, some of {known}")
    need(len(set(cfg.arms)) == len(cfg.arms), f"arms: {sorted({a for a in cfg.arms if cfg.arms.count(a) > 1})} "
                                              f"given twice (each arm is one run)")
    need(cfg.meta.algorithm in ("fomaml", "reptile"), f"meta.algorithm must be fomaml or reptile, got {cfg.meta.algorithm!r}")
    need(cfg.meta.inner_optimizer in ("sgd", "adam"), f"meta.inner_optimizer must be sgd or adam, got {cfg.meta.inner_optimizer!r}")
    need(cfg.optim.optimizer_type.lower() in ("adamw", "adam"),
         f"optim.optimizer_type must be AdamW or Adam, got {cfg.optim.optimizer_type!r}")
    need(cfg.meta.use_fomaml, "meta.use_fomaml: false would ask for second-order MAML, which metasft does not "
                              "implement; choose the first-order method with meta.algorithm (fomaml | reptile)")
    need(cfg.data.truncation in ("right", "left", "error"), f"data.truncation must be right, left or error, got {cfg.data.truncation!r}")
    need(cfg.data.template in ("en", "zh"), f"data.template must be en or zh, got {cfg.data.template!r}")
    need(cfg.data.mixture in ("balanced", "pooled"), f"data.mixture must be balanced or pooled, got {cfg.data.mixture!r}")
    need(cfg.data.budget != "unique" or cfg.data.mixture == "pooled",
         "data.budget=unique counts epochs over the pooled examples: set data.mixture=pooled with it")
    need(cfg.trainer.select_by in ("objective", "val_loss"),
         f"trainer.select_by must be objective or val_loss, got {cfg.trainer.select_by!r}")
    need(cfg.meta.min_inner_drop >= 0, f"meta.min_inner_drop must be >= 0, got {cfg.meta.min_inner_drop}")
    need(cfg.meta.inner_drop_steps >= 1, f"meta.inner_drop_steps must be >= 1, got {cfg.meta.inner_drop_steps}")
    need(cfg.data.budget in ("matched", "unique"), f"data.budget must be matched or unique, got {cfg.data.budget!r}")
    need(cfg.model.dtype in ("float32", "bfloat16"), f"model.dtype must be float32 or bfloat16, got {cfg.model.dtype!r}")
    need(cfg.eval.dtype in (None, "float32", "bfloat16"),
         f"eval.dtype must be float32, bfloat16, auto or null (model.dtype), got {cfg.eval.dtype!r}")
    need(cfg.trainer.device in ("auto", "cpu", "cuda"), f"trainer.device must be auto, cpu or cuda, got {cfg.trainer.device!r}")
    need(cfg.eval.grading in GRADINGS, f"eval.grading must be one of {GRADINGS}, got {cfg.eval.grading!r}")
    for key in ("support_ratio", "query_ratio", "val_ratio"):
        value = getattr(cfg.data, key)
        need(0 <= value <= 1, f"data.{key} must be in [0, 1], got {value}")
    need(cfg.data.support_ratio + cfg.data.query_ratio <= 1,
         f"data.support_ratio + data.query_ratio must be <= 1, got {cfg.data.support_ratio + cfg.data.query_ratio}")
    for key in ("inner_batch_size", "query_batch_size", "meta_batch_size"):
        need(getattr(cfg.meta, key) >= 1, f"meta.{key} must be >= 1")
    need(cfg.meta.num_inner_steps >= 1, f"meta.num_inner_steps must be >= 1, got {cfg.meta.num_inner_steps}")
    _check_ranges(cfg, need)
    need(cfg.data.train_batch_size % cfg.trainer.micro_batch_size == 0 or cfg.data.train_batch_size < cfg.trainer.micro_batch_size,
         f"data.train_batch_size ({cfg.data.train_batch_size}) must be a multiple of trainer.micro_batch_size ({cfg.trainer.micro_batch_size})")
    names = [t.name for t in cfg.data.tasks] + [t.name for t in cfg.data.eval_tasks]
    dup = sorted({n for n in names if names.count(n) > 1})
    need(not dup, f"data.tasks / data.eval_tasks: task names must be unique, repeated: {dup}")
    for t in cfg.data.tasks:
        need(all(1 <= lv <= 5 for lv in t.levels), f"data.tasks[{t.name}].levels must be within 1-5, got {t.levels}")
        need(all(1 <= lv <= 5 for lv in t.exclude_levels),
             f"data.tasks[{t.name}].exclude_levels must be within 1-5, got {t.exclude_levels}")
    for t in cfg.data.eval_tasks:
        need(t.level is None or 1 <= t.level <= 5, f"data.eval_tasks[{t.name}].level must be 1-5, got {t.level}")
        need(all(1 <= lv <= 5 for lv in t.levels), f"data.eval_tasks[{t.name}].levels must be within 1-5, got {t.levels}")
        need(t.level is None or not t.levels, f"data.eval_tasks[{t.name}]: give level or levels, not both")
        need(all(n >= 0 for n in t.n_shots), f"data.eval_tasks[{t.name}].n_shots must be >= 0")
    _validate_sources(cfg, need)
    need(cfg.eval.cells_per_batch >= 1, f"eval.cells_per_batch must be >= 1, got {cfg.eval.cells_per_batch}")
    need(cfg.data.budget_scale > 0, f"data.budget_scale must be > 0, got {cfg.data.budget_scale}")
    if cfg.variants:
        check_variants(cfg)
    unknown_loggers = set(cfg.trainer.loggers) - {"jsonl", "tensorboard", "wandb"}
    need(not unknown_loggers, f"trainer.loggers: unknown {sorted(unknown_loggers)}; expected jsonl, tensorboard, wandb")


def _validate_sources(cfg: Config, need) -> None:
    """data.sources entries are well formed, and every task names a source that exists."""
    from metasft.data.records import ANSWER_TYPES
    from metasft.data.sources import SOURCE_MODULES

    names = [s.name for s in cfg.data.sources]
    for s in cfg.data.sources:
        where = f"data.sources[{s.name}]"
        need(s.name.lower() not in SOURCE_MODULES, f"{where}: the name is a built-in source's; pick another")
        need(names.count(s.name) == 1, f"{where}: the name is used twice")
        need((s.path is None) != (s.hub is None), f"{where}: give path (a file) or hub (a dataset id), one of them")
        need(s.hub_config is None or s.hub is not None, f"{where}: hub_config needs hub")
        need(s.answer_type in ANSWER_TYPES and s.answer_type != "choice",
             f"{where}.answer_type must be one of {[t for t in ANSWER_TYPES if t != 'choice']} (multiple "
             f"choice: set columns.choices), got {s.answer_type!r}")
        need(s.columns.solution is not None or s.columns.answer is not None,
             f"{where}.columns: solution and answer cannot both be null")
    _validate_roots(cfg.data.roots, need)
    known = set(SOURCE_MODULES) | set(names)
    for kind, tasks in (("data.tasks", cfg.data.tasks), ("data.eval_tasks", cfg.data.eval_tasks)):
        for t in tasks:
            need(t.source.lower() in known or t.source in names,
                 f"{kind}[{t.name}]: unknown source {t.source!r}; expected a built-in source "
                 f"{sorted(SOURCE_MODULES)} or a data.sources entry {names}")


def _validate_roots(roots, need) -> None:
    """data.roots: built-in source -> a directory or "hub", each possible for that source."""
    from metasft.data.sources import HUB, SOURCE_MODULES, origin

    need(isinstance(roots, dict), f"data.roots must be a mapping of source -> directory or {HUB!r}, got {roots!r}")
    for name, value in roots.items():
        where = f"data.roots.{name}"
        need(name in SOURCE_MODULES, f"{where}: not a built-in source; expected one of {sorted(SOURCE_MODULES)} "
                                     f"(a data.sources entry names its own path or hub)")
        need(isinstance(value, str) and value.strip() != "",
             f"{where} must be a directory or {HUB!r}, got {value!r}")
        source = origin(name)
        need(source.local is not None, f"{where}: {name} reads no files ({source.get}); remove the key")
        need(value != HUB or source.hub is not None,
             f"{where}={HUB}: {name} has no usable Hugging Face copy; give a directory with {source.local} under it")


def _check_ranges(cfg: Config, need) -> None:
    """Every numeric key within its range (positive counts, finite positive learning rates, ...)."""
    def positive(key: str, value, allow_none: bool = False) -> None:
        if value is None and allow_none:
            return
        need(value is not None and math.isfinite(value) and value > 0, f"{key} must be > 0, got {value}")

    def at_least_0(key: str, value) -> None:
        need(math.isfinite(value) and value >= 0, f"{key} must be >= 0, got {value}")

    m, t, o, d, e = cfg.model, cfg.trainer, cfg.optim, cfg.data, cfg.eval
    for key in ("lora_rank", "lora_alpha"):
        positive(f"model.{key}", getattr(m, key))
    need(0 <= m.lora_dropout < 1, f"model.lora_dropout must be in [0, 1), got {m.lora_dropout}")
    for key in ("inner_lr", "outer_lr"):
        positive(f"meta.{key}", getattr(cfg.meta, key))
    for key in ("total_steps", "total_epochs", "lr", "micro_batch_size", "save_freq", "val_batch_size", "log_freq"):
        positive(f"trainer.{key}", getattr(t, key))
    at_least_0("trainer.test_freq", t.test_freq)
    at_least_0("trainer.keep_checkpoints", t.keep_checkpoints)
    at_least_0("optim.weight_decay", o.weight_decay)
    at_least_0("optim.clip_grad", o.clip_grad)
    at_least_0("optim.warmup_steps", o.warmup_steps)
    need(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), f"optim.betas must be two numbers in [0, 1), got {o.betas}")
    for key in ("max_length", "train_batch_size", "budget_scale"):
        positive(f"data.{key}", getattr(d, key))
    at_least_0("data.val_max_samples", d.val_max_samples)
    positive("data.total_samples", d.total_samples, allow_none=True)
    for task in d.tasks:
        for key in ("size", "support_max_samples", "query_max_samples"):
            positive(f"data.tasks[{task.name}].{key}", getattr(task, key), allow_none=True)
    for task in d.eval_tasks:
        where = f"data.eval_tasks[{task.name}]"
        positive(f"{where}.size", task.size, allow_none=True)
        positive(f"{where}.test_size", task.test_size)
        positive(f"{where}.max_new_tokens", task.max_new_tokens)
        positive(f"{where}.shots_max", task.shots_max, allow_none=True)
        need(task.shots_max is None or task.shots_max >= max(task.n_shots, default=0),
             f"{where}.shots_max ({task.shots_max}) must hold its largest shot level {max(task.n_shots, default=0)}")
        need(task.n_shots and len(set(task.n_shots)) == len(task.n_shots),
             f"{where}.n_shots must be a non-empty list without repeats, got {task.n_shots}")
    need(e.seeds and len(set(e.seeds)) == len(e.seeds), f"eval.seeds must be a non-empty list without repeats, got {e.seeds}")
    need(len(set(t.seeds)) == len(t.seeds) and all(0 <= x < 2 ** 31 for x in t.seeds),
         f"trainer.seeds must be distinct integers in [0, 2^31), got {t.seeds}")
    for key in ("adaptation_steps", "adaptation_lr", "adaptation_batch_size", "batch_size", "max_new_tokens",
                "grade_timeout_s", "similarity_batches"):
        positive(f"eval.{key}", getattr(e, key))
    need(0 < e.target_acc <= 1, f"eval.target_acc must be in (0, 1], got {e.target_acc}")
    at_least_0("eval.acc_k", e.acc_k)
    st = cfg.stats
    need(0 < st.margin_accuracy < 1, f"stats.margin_accuracy must be in (0, 1), got {st.margin_accuracy}")
    positive("stats.margin_loss", st.margin_loss)
    unknown = [c for c in st.primary if c not in CLAIMS]
    need(not unknown and len(set(st.primary)) == len(st.primary),
         f"stats.primary must list distinct claims of {list(CLAIMS)}, got {st.primary}")
    beyond = [s for s in e.record_steps if not 0 <= s <= e.adaptation_steps]
    need(not beyond, f"eval.record_steps {beyond} fall outside [0, eval.adaptation_steps={e.adaptation_steps}]")
    for key, value in [("seed", cfg.seed)] + [(f"eval.seeds.{i}", s) for i, s in enumerate(e.seeds)]:
        need(0 <= value <= MAX_SEED, f"{key} must be in [0, {MAX_SEED}] (numpy's seeds), got {value}")
    for key, value in _integers(to_dict(cfg)):
        need(abs(value) <= MAX_INT or key == "seed" or key.startswith("eval.seeds."),
             f"{key}={value} is too large: at most {MAX_INT} (torch and SQLite store it in 32 / 64 bits)")


MAX_SEED = 2**32 - 1
MAX_INT = 2**31 - 1  # no count, step or size of a run comes near it; a value beyond is a typo


def _integers(tree, prefix: str = ""):
    """(dotted key, value) of every integer in a to_dict tree (bools are not integers here)."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, int) and not isinstance(v, bool):
            yield key, v
        else:
            yield from _integers(v, key + ".")


def native_half(device: str) -> str:
    """eval.dtype auto: bfloat16 where `device` (trainer.device) multiplies in bfloat16 natively (a
    CUDA GPU that supports it; a CPU with AMX or AVX512-BF16), else float32 (elsewhere bfloat16 matmuls
    are emulated, slower than float32)."""
    import torch

    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    probes = (getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return "bfloat16" if any(probe is not None and probe() for probe in probes) else "float32"


def eval_dtype(cfg: Config) -> str:
    """The base weights' dtype in the eval stage: eval.dtype, else model.dtype."""
    return cfg.eval.dtype or cfg.model.dtype


def meta_tasks(cfg: Config) -> list[MetaTask]:
    """meta.tasks, or one entry per data.tasks in the built layout when none are listed."""
    if cfg.meta.tasks:
        return cfg.meta.tasks
    return [MetaTask(name=t.name,
                     support_files=[meta_train_file(t.name, "support")],
                     query_files=[meta_train_file(t.name, "query")])
            for t in cfg.data.tasks]


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    from metasft.rundir import atomic_write_text
    atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))


# ----------------------------------------------------------------------------------------- variants
# the experiment matrix's variants (metasft.matrix runs them): what one may change, and their checks
# what a variant may change: the training of its own run. Data, model, evaluation and seed are the
# whole experiment's (one data build, one evaluation), and pairing is the matrix's job.
OVERRIDABLE = ("meta.", "trainer.", "optim.", "data.budget_scale", "data.mixture", "data.total_samples",
               "data.train_batch_size", "data.train_files")
NOT_OVERRIDABLE = ("meta.tasks", "trainer.paired_run", "trainer.device")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def variant_config(cfg: Config, v: Variant) -> Config:
    """The experiment's config with `v.arm` and `v.overrides` (strict: unknown keys and wrong types are
    errors naming the variant)."""
    where = f"variants[{v.name}]"
    for key in v.overrides:
        if not key.startswith(OVERRIDABLE) or key.startswith(NOT_OVERRIDABLE):
            raise ConfigError(f"{where}.overrides: {key} cannot differ between the runs of one experiment; a variant "
                              f"may set {', '.join(k.rstrip('.') + ('.*' if k.endswith('.') else '') for k in OVERRIDABLE)}"
                              f" (not {', '.join(NOT_OVERRIDABLE)})")
    raw = to_dict(cfg)
    raw.update(arm=v.arm, variants=[])
    for key, value in v.overrides.items():
        _set_dotted(raw, key, value, f"{where}.overrides")
    out = _build(Config, raw, "", f"{where}.overrides")
    try:
        validate(out)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return out


def check_variants(cfg: Config) -> None:
    """Names, arms, partners and pairings of `variants` (config.validate calls it)."""
    listed = list(dict.fromkeys(cfg.arms))
    meta_arms = [a for a in arms.of_kind("meta") if a in listed]
    variant_arms = (*arms.of_kind("meta"), "sft_mixed")  # a meta arm, or SFT-Mixed matched to a meta run
    if cfg.data.budget != "matched":
        raise ConfigError("variants: the matrix compares runs at matched example budgets; data.budget must be "
                          f"matched, got {cfg.data.budget!r}")
    taken = set(listed) | {"sft_task"}
    meta_names = set(meta_arms)
    sft_names = {"sft_mixed"} if "sft_mixed" in listed else set()
    for v in cfg.variants:
        where = f"variants[{v.name}]"
        if not isinstance(v.overrides, dict) or not all(isinstance(k, str) for k in v.overrides):
            raise ConfigError(f"{where}.overrides must be a mapping of dotted keys to values, got {v.overrides!r}")
        if not _NAME.match(v.name) or v.name.startswith("sft_task") or re.search(r"_seed\d+$", v.name):
            raise ConfigError(f"{where}: a variant name is a directory name: letters, digits, _ . - (and not "
                              f"sft_task*, nor ending in _seed<n>: a training seed's run), got {v.name!r}")
        if v.name in taken or f"{v.name}_sft_mixed" in taken:
            raise ConfigError(f"{where}: the name {v.name!r} is already a run of this experiment")
        if v.arm not in variant_arms:
            raise ConfigError(f"{where}: arm must be one of {variant_arms}, got {v.arm!r}")
        taken |= {v.name, f"{v.name}_sft_mixed"}
        (meta_names if v.arm in arms.of_kind("meta") else sft_names).add(v.name)
        variant_config(cfg, v)  # its overrides load
    by_name = {v.name: v for v in cfg.variants}
    for v in cfg.variants:
        where = f"variants[{v.name}]"
        if v.arm in arms.of_kind("meta"):
            if v.partner is not None:
                if v.partner not in sft_names:
                    raise ConfigError(f"{where}.partner: {v.partner!r} is not an SFT-Mixed run of this experiment "
                                      f"({sorted(sft_names)})")
                paired = by_name[v.partner].paired if v.partner in by_name else (meta_arms or [None])[0]
                if paired != v.name:
                    raise ConfigError(f"{where}.partner: {v.partner} matches the budget of {paired}, not of "
                                      f"{v.name}; set paired: {v.name} on it")
        else:
            if v.partner is not None:
                raise ConfigError(f"{where}.partner: only meta variants (fomaml, reptile) have a partner")
            if v.paired not in meta_names:
                raise ConfigError(f"{where}.paired: {v.paired!r} is not a meta run of this experiment "
                                  f"({sorted(meta_names)})")
