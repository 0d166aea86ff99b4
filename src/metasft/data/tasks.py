"""Meta-training tasks and few-shot evaluation tasks from records: filtering, dedup, stratified splits.

Splits are stratified by difficulty level: in every split each level's share equals its share in the
task (within one example). No normalized problem text appears in two splits, in two tasks, or in both
meta-training and evaluation data.
"""
from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from metasft.data.records import DataError, Record, normalized_text

SPLITS = ("support", "query", "val", "test")


def select(records: list[Record], *, task: str, source: str, subjects: list[str] = (),
           levels: list[int] = ()) -> list[Record]:
    """Records of the given subjects and levels; an unknown subject or an absent level is an error."""
    if subjects:
        available = sorted({r.subject for r in records})
        unknown = [s for s in subjects if s not in available]
        if unknown:
            raise DataError(f"task {task!r}: subject(s) {unknown} do not exist in source {source!r}; "
                            f"available: {available}")
        records = [r for r in records if r.subject in subjects]
    if levels:
        present = sorted({r.level for r in records if r.level is not None})
        absent = [lv for lv in levels if lv not in present]
        if absent:
            raise DataError(f"task {task!r}: level(s) {absent} do not exist in source {source!r} "
                            f"for subjects {list(subjects) or 'all'}; levels present: {present}")
        records = [r for r in records if r.level in levels]
    return records


@dataclass
class Dedup:
    """Removes problems already seen (by normalized text) and counts what it removed, per reason."""
    seen: set[str] = field(default_factory=set)
    removed: Counter = field(default_factory=Counter)

    def keep_new(self, records: list[Record], reason: str, *, remember: bool = True) -> list[Record]:
        out, local = [], set()
        for r in records:
            key = normalized_text(r.problem)
            if key in self.seen or key in local:
                self.removed[reason] += 1
                continue
            local.add(key)
            out.append(r)
        if remember:
            self.seen |= local
        return out


def _level_key(r: Record) -> int:
    return r.level if r.level is not None else 0


def stratified_split(records: list[Record], sizes: dict[str, int], seed: int) -> dict[str, list[Record]]:
    """Split `records` into named parts of the given sizes, stratified by level; seeded.

    `sizes` maps split name -> count, in order; their sum must not exceed len(records) and what is
    left over is dropped (callers give the last split the remainder).
    """
    strata: dict[int, list[Record]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.id):
        strata[_level_key(r)].append(r)
    rng = random.Random(seed)
    for key in sorted(strata):
        rng.shuffle(strata[key])
    remaining = {k: len(v) for k, v in strata.items()}
    total_left = sum(remaining.values())
    out = {}
    for name, size in sizes.items():
        # allocate against the original shares so every split keeps the task's level mix
        alloc = _allocate_with_shares(remaining, {k: len(v) for k, v in strata.items()}, size, total_left)
        part = []
        for k, count in alloc.items():
            start = len(strata[k]) - remaining[k]
            part.extend(strata[k][start:start + count])
            remaining[k] -= count
        total_left -= size
        out[name] = sorted(part, key=lambda r: r.id)
    return out


def _allocate_with_shares(remaining: dict[int, int], full: dict[int, int], size: int, total_left: int) -> dict[int, int]:
    n = sum(full.values())
    quota = {k: full[k] * size / n for k in full}
    alloc = {k: min(int(q), remaining[k]) for k, q in quota.items()}
    short = size - sum(alloc.values())
    order = sorted(full, key=lambda k: (-(quota[k] - int(quota[k])), k))
    while short > 0:
        progressed = False
        for k in order:
            if short and alloc[k] < remaining[k]:
                alloc[k] += 1
                short -= 1
                progressed = True
        if not progressed:
            raise ValueError(f"cannot take {size} from {total_left} remaining")
    return alloc


def split_sizes(n: int, *, task: str, support_ratio: float, query_ratio: float, val_ratio: float,
                val_max: int, support_max: int | None = None, query_max: int | None = None) -> dict[str, int]:
    """Support / query / val / test counts for a task of `n` records (counts win over ratios)."""
    support = support_max if support_max is not None else round(n * support_ratio)
    query = query_max if query_max is not None else round(n * query_ratio)
    if support < 1 or query < 1 or support + query > n:
        raise DataError(f"task {task!r} has {n} examples but its splits ask for support={support} and "
                        f"query={query} (each at least 1, together at most {n})")
    held_out = n - support - query
    val = min(val_max, round(held_out * val_ratio))
    return {"support": support, "query": query, "val": val, "test": held_out - val}


def sample(records: list[Record], k: int, seed: int) -> list[Record]:
    """`k` records drawn without replacement, seeded, in a stable order."""
    ordered = sorted(records, key=lambda r: r.id)
    return sorted(random.Random(seed).sample(ordered, k), key=lambda r: r.id)


def level_counts(records: list[Record]) -> dict[str, int]:
    counts = Counter("none" if r.level is None else str(r.level) for r in records)
    return dict(sorted(counts.items()))
