"""Example budgets of the experiment's runs: what a meta run processes, and the extra distinct
examples the data build sets aside for SFT runs asked for more than 1x data. Config arithmetic (no
torch), read by the matrix, the data build and training."""
from __future__ import annotations

import math

from metasft import arms
from metasft.config import Config, variant_config


def meta_budget(cfg: Config, n_tasks: int) -> int:
    """Examples one FOMAML/Reptile run processes (support + query over every outer step)."""
    per_task = cfg.meta.num_inner_steps * cfg.meta.inner_batch_size
    if arms.setting(cfg.arm, "meta.algorithm", cfg.meta.algorithm) == "fomaml":
        per_task += cfg.meta.query_batch_size
    return cfg.trainer.total_steps * min(cfg.meta.meta_batch_size, n_tasks) * per_task


def pool_scale(cfg: Config) -> float:
    """The largest data.budget_scale of any SFT-Mixed run: the data build sets aside that many times
    each meta-training task's support ∪ query as extra distinct examples (data/meta_train/<task>_extra)."""
    scales = [cfg.data.budget_scale] + [variant_config(cfg, v).data.budget_scale
                                        for v in cfg.variants if v.arm == "sft_mixed"]
    return max(scales)


def extra_size(pool: int, scale: float) -> int:
    """Extra distinct examples a task of `pool` (support ∪ query) examples needs for `scale` x data."""
    return max(0, math.ceil((scale - 1) * pool - 1e-9))
