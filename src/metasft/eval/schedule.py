"""Which cells an evaluation computes, in which order, on which rank, with which shots.

Work is split in groups (model, task, n_shots, seed), enumerated in a fixed order: 0-shot groups
first, then few-shot ones. Shard k of n (a torchrun rank, a `metasft launch` worker) takes groups i
with i % n == k; each shard stacks its own groups of a task for the grid engine (`stacks`,
eval.cells_per_batch).

Paired design: shots and adaptation batches are drawn with seeds that depend only on (task,
n_shots, seed), so every model adapts on the same examples in the same order.
"""
from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass

from metasft import arms
from metasft.config import Config
from metasft.eval.specs import EvalError, ModelSpec
from metasft.matrix import plan_runs


@dataclass(frozen=True, order=True)
class Group:
    """One (model, task, n_shots, seed): the unit of work, of resumption and of the rank split."""
    model: str
    task: str
    n_shots: int
    seed: int


def enumerate_groups(models: list[ModelSpec], task_shots: dict[str, list[int]], seeds: list[int]) -> list[Group]:
    """Every group in a fixed order: all 0-shot groups (seed 0), then the few-shot ones (none for a
    `zero_shot_only` model)."""
    def tasks_of(m: ModelSpec) -> list[str]:
        return [t for t in task_shots if m.tasks is None or t in m.tasks]

    zero = [Group(m.name, t, 0, 0) for m in models for t in tasks_of(m) if 0 in task_shots[t]]
    few = [Group(m.name, t, n, s) for m in models if not m.zero_shot_only for t in tasks_of(m)
           for n in sorted(set(task_shots[t])) if n > 0 for s in seeds]
    return zero + few


def rank_share(groups: list[Group], rank: int, world_size: int) -> list[Group]:
    """Groups i with i % world_size == rank: ranks together take every group exactly once."""
    return [g for i, g in enumerate(groups) if i % world_size == rank]


@dataclass(frozen=True)
class Shard:
    """Worker `index` of `count`: its share of the groups and its own results store (results.store_file)."""
    index: int = 0
    count: int = 1

    @classmethod
    def from_env(cls) -> "Shard":
        """torchrun's rank of its world (RANK, WORLD_SIZE), else the one shard of a lone process."""
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))

    def share(self, groups: list[Group]) -> list[Group]:
        return rank_share(groups, self.index, self.count)


def stacks(groups: list[Group], cells_per_batch: int) -> list[list[Group]]:
    """Units of work in the order of `groups`: the groups of one task in stacks of up to
    `cells_per_batch`, 0-shot groups (one per model) and few-shot ones (any models, shot levels and
    seeds) apart, a stack starting where its first group stands. With cells_per_batch 1, one group
    per unit as before."""
    units: list[list[Group]] = []
    open_stack: dict[tuple[str, bool], list[Group]] = {}
    for g in groups:
        if cells_per_batch == 1:
            units.append([g])
            continue
        key = (g.task, g.n_shots == 0)
        stack = open_stack.get(key)
        if stack is None or len(stack) == cells_per_batch:
            stack = open_stack[key] = []
            units.append(stack)
        stack.append(g)
    return units


def stable_seed(*parts) -> int:
    """A seed from the parts' text (Python's hash() differs between processes)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "big")


def shot_indices(task: str, n_shots: int, seed: int, pool_size: int) -> list[int]:
    """Indices of the n shots into the task's pool; the same for every model (paired design).

    Nested: the first n of one seeded permutation of the pool, so for a seed the 5 shots are among
    the 20 and a learning curve adds examples rather than redrawing them.
    """
    if n_shots > pool_size:
        raise EvalError(f"task {task!r}: {n_shots} shots asked from a pool of {pool_size}")
    order = list(range(pool_size))
    random.Random(stable_seed("shots", task, seed)).shuffle(order)
    return order[:n_shots]


def recorded_steps(record_steps: list[int], adaptation_steps: int) -> list[int]:
    """The steps evaluated: eval.record_steps within [0, adaptation_steps], plus 0 and the last."""
    return sorted({s for s in record_steps if 0 <= s <= adaptation_steps} | {0, adaptation_steps})


def run_specs(runs) -> list[ModelSpec]:
    """The models of `matrix.plan_runs` runs as parse_model_specs makes them from their directories
    (the sft_task runs are one model, each on its own task, 0-shot only), without their adapters."""
    return [ModelSpec(r.model, None, [r.sft_task] if r.sft_task else None, arms.ARMS[r.arm].zero_shot_only)
            for r in runs]


def count_groups(cfg: Config, shots: dict[str, list[int]]) -> int:
    """How many (model, task, n_shots, seed) groups the eval stage has: the models of `plan_runs` on
    the eval tasks `shots` ({task: n_shots}, in the data's order)."""
    return len(enumerate_groups(run_specs(plan_runs(cfg, list(shots))), shots, cfg.eval.seeds))
