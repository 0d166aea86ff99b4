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

HELD_OUT = "held_out"  # a meta-training task's rest after support, query and val: counted, never written


def select(records: list[Record], *, task: str, source: str, subjects: list[str] = (),
           levels: list[int] = (), exclude_levels: list[int] = ()) -> list[Record]:
    """Records of the given subjects and levels, less `exclude_levels`; an unknown subject or an absent
    level is an error."""
    if not records:
        raise DataError(f"task {task!r}: source {source!r} has no records at all (an empty file or split?)")
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
    if exclude_levels:
        records = [r for r in records if r.level not in exclude_levels]
    return records


# ------------------------------------------------------------------ held out means held out
ALL_LEVELS = frozenset(range(1, 6))  # config.validate keeps every level within 1-5


@dataclass(frozen=True)
class Slice:
    """The part of a source a task draws on: subjects None = all of them; levels within 1-5."""
    source: str
    subjects: frozenset | None
    levels: frozenset


def _fmt_subjects(subjects: frozenset | None) -> str:
    return "all subjects" if subjects is None else "subject " + ", ".join(sorted(subjects))


def _fmt_levels(levels: frozenset) -> str:
    return "all levels" if levels == ALL_LEVELS else "level " + ", ".join(str(lv) for lv in sorted(levels))


def shared(a: Slice, b: Slice) -> tuple[frozenset | None, frozenset] | None:
    """(subjects, levels) two slices share, or None when they are disjoint. The split is not part of a
    slice: MATH's test split is the same distribution as its train split."""
    if a.source != b.source:
        return None
    if a.subjects is None or b.subjects is None:
        subjects = b.subjects if a.subjects is None else a.subjects
    else:
        subjects = a.subjects & b.subjects
    levels = a.levels & b.levels
    if (subjects is not None and not subjects) or not levels:
        return None
    return subjects, levels


def relation_to_meta_training(name: str, ev: Slice, allow_overlap: bool, meta: dict[str, Slice]) -> dict:
    """How eval task `name` relates to the meta-training tasks `meta`: {"kind", "detail"}, kind one of
    unseen_source | unseen_subject | unseen_level | declared_overlap. An overlap that the eval task does
    not declare (allow_overlap) is returned as kind "overlap", for the caller to refuse."""
    same_source = {t: s for t, s in meta.items() if s.source == ev.source}
    if not same_source:
        return {"kind": "unseen_source", "detail": f"unseen source: no meta-training task draws on {ev.source}"}
    overlaps = [(t, shared(ev, s)) for t, s in same_source.items()]
    overlaps = [(t, sl) for t, sl in overlaps if sl is not None]
    if overlaps:
        detail = "; ".join(f"eval task {name!r} and meta-training task {t!r} share source {ev.source}, "
                           f"{_fmt_subjects(subj)}, {_fmt_levels(lv)}" for t, (subj, lv) in overlaps)
        return {"kind": "declared_overlap" if allow_overlap else "overlap",
                "detail": ("declared overlap (allow_overlap): " if allow_overlap else "") + detail}
    subject_shared = [t for t, s in same_source.items()
                      if ev.subjects is None or s.subjects is None or ev.subjects & s.subjects]
    if not subject_shared:
        return {"kind": "unseen_subject", "detail": f"unseen subject: {ev.source} is meta-trained on other "
                                                    f"subjects ({', '.join(sorted(same_source))})"}
    return {"kind": "unseen_level", "detail": f"unseen level: {_fmt_levels(ev.levels)} of {_fmt_subjects(ev.subjects)}"
                                              f" is excluded from meta-training ({', '.join(sorted(subject_shared))})"}


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


def stratified_split(records: list[Record], sizes: dict[str, int], seed: int,
                     shortest: bool = False) -> dict[str, list[Record]]:
    """Split `records` into named parts of the given sizes, stratified by level; seeded.

    `sizes` maps split name -> count and must add up to len(records). Every level's count in every
    split is its exact proportional share rounded up or down (controlled rounding), so each split's
    level mix matches the task's within one example. `shortest`: within a level the parts take the
    shortest records first (`chars`), in the order of `sizes`, instead of a seeded shuffle.
    """
    strata: dict[int, list[Record]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.id):
        strata[_level_key(r)].append(r)
    rng = random.Random(seed)
    for key in sorted(strata):
        if shortest:
            strata[key].sort(key=chars)  # stable: ties stay in id order
        else:
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
    """Support / query / val / held_out counts for a task of `n` records (counts win over ratios).
    held_out: the rest, the design's 50 % "Hold-out", which no stage reads (the data build writes no
    file of it; Exp 5's extra examples are carved from it)."""
    support = support_max if support_max is not None else round(n * support_ratio)
    query = query_max if query_max is not None else round(n * query_ratio)
    if support < 1 or query < 1 or support + query > n:
        raise DataError(f"task {task!r} has {n} examples but its splits ask for support={support} and "
                        f"query={query} (each at least 1, together at most {n})")
    held_out = n - support - query
    val = min(val_max, round(held_out * val_ratio))
    return {"support": support, "query": query, "val": val, HELD_OUT: held_out - val}


def sample(records: list[Record], k: int, seed: int, shortest: bool = False) -> list[Record]:
    """`k` records drawn without replacement, seeded, in a stable order; `shortest`: the `k` shortest
    (`chars`, ties by id) instead of a draw."""
    ordered = sorted(records, key=lambda r: r.id)
    chosen = sorted(ordered, key=chars)[:k] if shortest else random.Random(seed).sample(ordered, k)
    return sorted(chosen, key=lambda r: r.id)


def chars(r: Record) -> int:
    """A record's length in characters (problem, choices, solution): what its training examples' tokens
    grow with."""
    return len(r.problem) + sum(map(len, r.choices)) + len(r.solution)


def level_counts(records: list[Record]) -> dict[str, int]:
    counts = Counter("none" if r.level is None else str(r.level) for r in records)
    return dict(sorted(counts.items()))
