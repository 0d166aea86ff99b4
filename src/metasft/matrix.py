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
from dataclasses import dataclass

from metasft import arms
from metasft.budget import meta_budget
from metasft.config import Config, Variant, meta_tasks, variant_config



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


def _base_runs(cfg: Config) -> tuple[list[str], list[str]]:
    listed = list(dict.fromkeys(cfg.arms))
    return [a for a in arms.of_kind("meta") if a in listed], listed


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
    meta_arms, listed = _base_runs(cfg)
    primary_meta = meta_arms[0] if meta_arms else None
    matched = cfg.data.budget == "matched"
    n_tasks = len(meta_tasks(cfg))
    meta = [Run(a, a, dataclasses.replace(cfg, arm=a)) for a in meta_arms]
    sft = []
    if "sft_mixed" in listed:
        sft.append(Run("sft_mixed", "sft_mixed", dataclasses.replace(cfg, arm="sft_mixed"),
                       primary_meta if matched else None))
    for a in listed:  # any other SFT arm of the registry: matched to the primary meta run's budget
        if a not in ("sft_mixed", "sft_task") and arms.ARMS[a].kind == "sft":
            paired = primary_meta if matched and arms.ARMS[a].budget == "matched" else None
            sft.append(Run(a, a, dataclasses.replace(cfg, arm=a), paired))
    partners = []
    for v in cfg.variants:
        vcfg = variant_config(cfg, v)
        if arms.ARMS[v.arm].kind == "meta":
            meta.append(Run(v.name, v.arm, vcfg, variant=v.name))
            partner, trained = _partner(cfg, v, vcfg, primary_meta, n_tasks)
            if trained:
                partners.append(Run(partner, "sft_mixed", dataclasses.replace(cfg, arm="sft_mixed"), v.name,
                                    variant=v.name))
        else:
            sft.append(Run(v.name, v.arm, vcfg, v.paired, variant=v.name))
    tail = []
    if "sft_task" in listed:  # Baseline 2: its own budget (total_epochs over its pool), paired with nothing
        tail += [Run(f"sft_task_{t}", "sft_task", dataclasses.replace(cfg, arm="sft_task"), None, t)
                 for t in eval_tasks]
    if "base" in listed:
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
    meta_arms, listed = _base_runs(cfg)
    primary_meta = meta_arms[0] if meta_arms else None
    n_tasks = len(meta_tasks(cfg))
    out = []
    if primary_meta is not None and "sft_mixed" in listed:
        out.append(Pair(primary_meta, "sft_mixed", cfg.data.budget_scale, "primary (Exp 1 vs Exp 2)", primary=True))
    by_name = {v.name: v for v in cfg.variants}
    for v in cfg.variants:
        label = v.label or v.name
        if arms.ARMS[v.arm].kind == "meta":
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


def describe(v: Variant) -> str:
    """'meta.inner_lr=0.0001, meta.num_inner_steps=3' (its overrides), or 'no overrides'."""
    return ", ".join(f"{k}={val}" for k, val in v.overrides.items()) or "no overrides"
