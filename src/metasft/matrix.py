"""The experiment matrix of `metasft run` (the design's Exp 1-5): which runs to train, each with its
config, and which pairs of them to compare.

    primary pair   fomaml vs sft_mixed (Exp 1 vs Exp 2) from `arms`: the report's verdicts
    meta variants  `variants` entries with arm fomaml | reptile and overrides (Exp 3: inner_lr 1e-4, K 3;
                   Exp 4: K 10), each compared with an SFT-Mixed run matched to *its* example budget:
                   its `partner`, else sft_mixed when the two budgets are equal by construction, else
                   `<name>_sft_mixed`, trained for it
    SFT variants   `variants` entries with arm sft_mixed (Exp 5: data.budget_scale 2, twice the distinct
                   examples and twice the examples processed), compared with the meta run they are paired to
    sft_task       one run per eval task (Baseline 2, the upper reference), trained on its own pool
    training seeds with trainer.seeds [s0, s1, ...], every run but sft_task and base is trained once
                   per seed: <name> with s0, <name>_seed<s> with the others, each SFT run paired with
                   its meta run of the same seed (`replicates` lists them for the verdicts)

Config logic only (no torch): the pipeline trains what `plan_runs` lists, the report compares what
`pairs` lists, and both read them from the same config.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from metasft.config import Config, ConfigError, Variant, _build, _set_dotted, meta_tasks, to_dict, validate

META_ARMS = ("fomaml", "reptile")
VARIANT_ARMS = (*META_ARMS, "sft_mixed")
# what a variant may change: the training of its own run. Data, model, evaluation and seed are the
# whole experiment's (one data build, one evaluation), and pairing is the matrix's job.
OVERRIDABLE = ("meta.", "trainer.", "optim.", "data.budget_scale", "data.mixture", "data.total_samples",
               "data.train_batch_size", "data.train_files")
NOT_OVERRIDABLE = ("meta.tasks", "trainer.paired_run", "trainer.device")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Run:
    """One training run of `metasft run`: runs/<name>."""
    name: str
    arm: str
    cfg: Config                  # the run's config (the pipeline adds data.dir and paired_run)
    paired: str | None = None    # SFT runs: the meta run whose example budget they match
    sft_task: str | None = None  # arm sft_task: its eval task
    variant: str | None = None   # the `variants` entry it comes from (a partner: its meta variant)

    @property
    def model(self) -> str:
        """The model's name in the results: the task-specific runs together are one model, sft_task."""
        return "sft_task" if self.arm == "sft_task" else self.name


@dataclass(frozen=True)
class Pair:
    """A meta run and the SFT-Mixed run it is compared with; `scale`: the SFT budget over the meta one
    (1 for a matched pair, data.budget_scale for Exp 5)."""
    meta: str
    sft: str
    scale: float
    label: str
    primary: bool = False


def meta_budget(cfg: Config, n_tasks: int) -> int:
    """Examples one FOMAML/Reptile run processes (support + query over every outer step)."""
    per_task = cfg.meta.num_inner_steps * cfg.meta.inner_batch_size
    if cfg.meta.algorithm == "fomaml" and cfg.arm != "reptile":
        per_task += cfg.meta.query_batch_size
    return cfg.trainer.total_steps * min(cfg.meta.meta_batch_size, n_tasks) * per_task


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


def _base_runs(cfg: Config) -> tuple[list[str], list[str]]:
    arms = list(dict.fromkeys(cfg.arms))
    return [a for a in META_ARMS if a in arms], arms


def _partner(cfg: Config, v: Variant, vcfg: Config, primary_meta: str | None, n_tasks: int) -> tuple[str, bool]:
    """(the SFT run compared with meta variant `v`, whether the matrix trains it for `v`)."""
    if v.partner:
        return v.partner, False
    if primary_meta is not None and "sft_mixed" in cfg.arms and cfg.data.budget_scale == 1:
        primary_cfg = dataclasses.replace(cfg, arm=primary_meta)
        if meta_budget(vcfg, n_tasks) == meta_budget(primary_cfg, n_tasks):
            return "sft_mixed", False  # sft_mixed is already matched to this budget
    return f"{v.name}_sft_mixed", True


def plan_runs(cfg: Config, eval_tasks: list[str]) -> list[Run]:
    """Every run of the experiment in training order: meta runs first, so SFT runs can match their budget."""
    meta_arms, arms = _base_runs(cfg)
    primary_meta = meta_arms[0] if meta_arms else None
    matched = cfg.data.budget == "matched"
    n_tasks = len(meta_tasks(cfg))
    meta = [Run(a, a, dataclasses.replace(cfg, arm=a)) for a in meta_arms]
    sft = []
    if "sft_mixed" in arms:
        sft.append(Run("sft_mixed", "sft_mixed", dataclasses.replace(cfg, arm="sft_mixed"),
                       primary_meta if matched else None))
    partners = []
    for v in cfg.variants:
        vcfg = variant_config(cfg, v)
        if v.arm in META_ARMS:
            meta.append(Run(v.name, v.arm, vcfg, variant=v.name))
            partner, trained = _partner(cfg, v, vcfg, primary_meta, n_tasks)
            if trained:
                partners.append(Run(partner, "sft_mixed", dataclasses.replace(cfg, arm="sft_mixed"), v.name,
                                    variant=v.name))
        else:
            sft.append(Run(v.name, v.arm, vcfg, v.paired, variant=v.name))
    tail = []
    if "sft_task" in arms:  # Baseline 2: its own budget (total_epochs over its pool), paired with nothing
        tail += [Run(f"sft_task_{t}", "sft_task", dataclasses.replace(cfg, arm="sft_task"), None, t)
                 for t in eval_tasks]
    if "base" in arms:
        tail.append(Run("base", "base", dataclasses.replace(cfg, arm="base")))
    return _per_seed(cfg, meta) + _per_seed(cfg, sft + partners) + tail


def seeded(name: str, seed: int, seeds: list[int]) -> str:
    """The run name of `name` trained with `seed`: the first of `seeds` keeps the name."""
    return name if not seeds or seed == seeds[0] else f"{name}_seed{seed}"


def _per_seed(cfg: Config, runs: list[Run]) -> list[Run]:
    """`runs` once per trainer.seeds entry (seed order), each with its seed; unchanged without seeds."""
    seeds = list(cfg.trainer.seeds)
    if not seeds:
        return runs
    out = []
    for seed in seeds:
        for run in runs:
            rcfg = dataclasses.replace(run.cfg, seed=seed, trainer=dataclasses.replace(run.cfg.trainer, seeds=[]))
            out.append(dataclasses.replace(run, name=seeded(run.name, seed, seeds), cfg=rcfg,
                                           paired=seeded(run.paired, seed, seeds) if run.paired else None))
    return out


def replicates(cfg: Config) -> dict[str, list[str]]:
    """Each trained run's training runs, one per trainer.seeds entry, matched by position:
    {"fomaml": ["fomaml", "fomaml_seed1", "fomaml_seed2"], ...}; {} without seeds."""
    seeds = list(cfg.trainer.seeds)
    if len(seeds) < 2:
        return {}
    names = [r.name for r in plan_runs(dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, seeds=[])), [])
             if r.arm not in ("sft_task", "base")]
    return {n: [seeded(n, s, seeds) for s in seeds] for n in names}


def pairs(cfg: Config) -> list[Pair]:
    """The compared (meta, SFT-Mixed) pairs, the primary one (fomaml vs sft_mixed) first."""
    meta_arms, arms = _base_runs(cfg)
    primary_meta = meta_arms[0] if meta_arms else None
    n_tasks = len(meta_tasks(cfg))
    out = []
    if primary_meta is not None and "sft_mixed" in arms:
        out.append(Pair(primary_meta, "sft_mixed", cfg.data.budget_scale, "primary (Exp 1 vs Exp 2)", primary=True))
    by_name = {v.name: v for v in cfg.variants}
    for v in cfg.variants:
        label = v.label or v.name
        if v.arm in META_ARMS:
            partner, _ = _partner(cfg, v, variant_config(cfg, v), primary_meta, n_tasks)
            scale = by_name[partner].overrides.get("data.budget_scale", 1.0) if partner in by_name else 1.0
            out.append(Pair(v.name, partner, float(scale), label))
        else:
            out.append(Pair(v.paired, v.name, variant_config(cfg, v).data.budget_scale, label))
    seen, unique = set(), []
    for p in out:  # an SFT variant named as a meta variant's partner is one pair, not two
        if (p.meta, p.sft) not in seen:
            seen.add((p.meta, p.sft))
            unique.append(p)
    return unique


def pool_scale(cfg: Config) -> float:
    """The largest data.budget_scale of any SFT-Mixed run: the data build sets aside that many times
    each meta-training task's support ∪ query as extra distinct examples (data/meta_train/<task>_extra)."""
    scales = [cfg.data.budget_scale] + [variant_config(cfg, v).data.budget_scale
                                        for v in cfg.variants if v.arm == "sft_mixed"]
    return max(scales)


def extra_size(pool: int, scale: float) -> int:
    """Extra distinct examples a task of `pool` (support ∪ query) examples needs for `scale` x data."""
    return max(0, math.ceil((scale - 1) * pool - 1e-9))


def describe(v: Variant) -> str:
    """'meta.inner_lr=0.0001, meta.num_inner_steps=3' (its overrides), or 'no overrides'."""
    return ", ".join(f"{k}={val}" for k, val in v.overrides.items()) or "no overrides"


def check_variants(cfg: Config) -> None:
    """Names, arms, partners and pairings of `variants` (config.validate calls it)."""
    meta_arms, arms = _base_runs(cfg)
    if cfg.data.budget != "matched":
        raise ConfigError("variants: the matrix compares runs at matched example budgets; data.budget must be "
                          f"matched, got {cfg.data.budget!r}")
    taken = set(arms) | {"sft_task"}
    meta_names = set(meta_arms)
    sft_names = {"sft_mixed"} if "sft_mixed" in arms else set()
    for v in cfg.variants:
        where = f"variants[{v.name}]"
        if not isinstance(v.overrides, dict) or not all(isinstance(k, str) for k in v.overrides):
            raise ConfigError(f"{where}.overrides must be a mapping of dotted keys to values, got {v.overrides!r}")
        if not _NAME.match(v.name) or v.name.startswith("sft_task") or re.search(r"_seed\d+$", v.name):
            raise ConfigError(f"{where}: a variant name is a directory name: letters, digits, _ . - (and not "
                              f"sft_task*, nor ending in _seed<n>: a training seed's run), got {v.name!r}")
        if v.name in taken or f"{v.name}_sft_mixed" in taken:
            raise ConfigError(f"{where}: the name {v.name!r} is already a run of this experiment")
        if v.arm not in VARIANT_ARMS:
            raise ConfigError(f"{where}: arm must be one of {VARIANT_ARMS}, got {v.arm!r}")
        taken |= {v.name, f"{v.name}_sft_mixed"}
        (meta_names if v.arm in META_ARMS else sft_names).add(v.name)
        variant_config(cfg, v)  # its overrides load
    by_name = {v.name: v for v in cfg.variants}
    for v in cfg.variants:
        where = f"variants[{v.name}]"
        if v.arm in META_ARMS:
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
