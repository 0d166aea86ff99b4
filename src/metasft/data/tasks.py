"""Meta-training tasks and few-shot evaluation tasks from records: filtering, dedup, stratified splits.

Splits are stratified by difficulty level: in every split each level's share equals its share in the
task (within one example). No normalized problem text appears in two splits, in two tasks, or in both
meta-training and evaluation data.
"""
from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from metasft.data.records import DataError, Record, dedup_key

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
            key = dedup_key(r)
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

    `sizes` maps split name -> count and must add up to len(records). Every level's count in every
    split is its exact proportional share rounded up or down (controlled rounding), so each split's
    level mix matches the task's within one example.
    """
    strata: dict[int, list[Record]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.id):
        strata[_level_key(r)].append(r)
    rng = random.Random(seed)
    for key in sorted(strata):
        rng.shuffle(strata[key])
    levels = sorted(strata)
    alloc = controlled_rounding([len(strata[k]) for k in levels], list(sizes.values()))
    out = {}
    taken = {k: 0 for k in levels}
    for j, name in enumerate(sizes):
        part = []
        for i, k in enumerate(levels):
            part.extend(strata[k][taken[k]:taken[k] + alloc[i][j]])
            taken[k] += alloc[i][j]
        out[name] = sorted(part, key=lambda r: r.id)
    return out


def controlled_rounding(rows: list[int], cols: list[int]) -> list[list[int]]:
    """Integer matrix with the given row and column sums whose entries are rows[i]*cols[j]/N rounded
    down or up (Bacharach 1966: such a rounding always exists). Found as a max flow on the cells
    with a fractional part, by augmenting paths (the matrix is levels x splits: tiny)."""
    n = sum(rows)
    if n != sum(cols):
        raise ValueError(f"row sums {sum(rows)} != column sums {sum(cols)}")
    quota = [[r * c / n if n else 0 for c in cols] for r in rows]
    alloc = [[int(q) for q in row] for row in quota]
    need_row = [r - sum(a) for r, a in zip(rows, alloc)]
    need_col = [c - sum(alloc[i][j] for i in range(len(rows))) for j, c in enumerate(cols)]
    can = [[quota[i][j] > alloc[i][j] for j in range(len(cols))] for i in range(len(rows))]
    bumped = [[False] * len(cols) for _ in rows]

    def augment(i: int, seen: set) -> bool:
        # find a column for row i: a free one, or one whose current bump can move to another row
        for j in range(len(cols)):
            if can[i][j] and not bumped[i][j] and j not in seen:
                seen.add(j)
                if need_col[j] > 0:
                    need_col[j] -= 1
                    bumped[i][j] = True
                    return True
                for k in range(len(rows)):
                    if bumped[k][j] and augment(k, seen):
                        bumped[k][j] = False
                        bumped[i][j] = True
                        return True
        return False

    for i in range(len(rows)):
        for _ in range(need_row[i]):
            if not augment(i, set()):
                raise AssertionError("controlled rounding failed")  # impossible by Bacharach's theorem
    return [[a + b for a, b in zip(arow, brow)] for arow, brow in zip(alloc, bumped)]


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
