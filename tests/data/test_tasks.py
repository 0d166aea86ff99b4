from collections import Counter

import pytest

from metasft.data import tasks as T
from metasft.data.records import DataError, Record


def rec(i, level, subject="algebra"):
    return Record(id=f"r{i:04d}", problem=f"problem number {i}", solution="s", answer="1",
                  domain="algebra", subject=subject, source="test", level=level)


def pool(counts):  # level -> count
    out, i = [], 0
    for level, n in counts.items():
        for _ in range(n):
            out.append(rec(i, level))
            i += 1
    return out


def test_split_is_stratified_disjoint_and_complete():
    records = pool({1: 50, 2: 100, 3: 150, 4: 120, 5: 80})
    sizes = T.split_sizes(len(records), task="t", support_ratio=0.2, query_ratio=0.3, val_ratio=0.1, val_max=64)
    parts = T.stratified_split(records, sizes, seed=0)
    ids = [r.id for part in parts.values() for r in part]
    assert len(ids) == len(set(ids)) == len(records)
    assert {k: len(v) for k, v in parts.items()} == sizes == {"support": 100, "query": 150, "val": 25, "held_out": 225}
    full = Counter(r.level for r in records)
    for name, part in parts.items():
        got = Counter(r.level for r in part)
        for level, n in full.items():
            expected = n / len(records) * len(part)
            assert abs(got[level] - expected) <= 1, (name, level, got[level], expected)


def test_split_is_seeded():
    records = pool({1: 30, 2: 30})
    sizes = {"support": 10, "query": 20, "test": 30}
    a, b = T.stratified_split(records, sizes, 1), T.stratified_split(records, sizes, 1)
    c = T.stratified_split(records, sizes, 2)
    assert a == b and a != c


def test_shortest_takes_each_levels_shortest_records_in_split_order():
    """data.shortest (the rehearsal's): support gets each level's shortest records, then query, then val;
    the level mix is the seeded split's; `sample` keeps the k shortest. Lengths drawn at random, the
    expected parts found by sorting each level by hand."""
    import random
    rng = random.Random(7)
    records = [Record(id=f"r{i:04d}", problem="p" * rng.randint(1, 400), solution="s" * rng.randint(1, 400),
                      answer="1", domain="algebra", subject="algebra", source="test", level=1 + i % 3,
                      choices=("c" * rng.randint(0, 50),)) for i in range(90)]
    sizes = {"support": 9, "query": 12, "val": 6, "held_out": 63}
    parts = T.stratified_split(records, sizes, seed=0, shortest=True)
    seeded = T.stratified_split(records, sizes, seed=0)
    for level in (1, 2, 3):
        by_length = sorted((r for r in records if r.level == level),
                           key=lambda r: (len(r.problem) + len(r.choices[0]) + len(r.solution), r.id))
        taken = 0
        for name in sizes:
            mine = sorted(r.id for r in parts[name] if r.level == level)
            assert len(mine) == sum(r.level == level for r in seeded[name])  # the same level mix
            assert mine == sorted(r.id for r in by_length[taken:taken + len(mine)]), (name, level)
            taken += len(mine)
    lengths = sorted(len(r.problem) + len(r.choices[0]) + len(r.solution) for r in records)
    short = T.sample(records, 5, seed=0, shortest=True)
    assert sorted(len(r.problem) + len(r.choices[0]) + len(r.solution) for r in short) == lengths[:5]
    assert [r.id for r in short] == sorted(r.id for r in short)


def test_counts_win_over_ratios_and_too_small_task_is_an_error():
    assert T.split_sizes(100, task="t", support_ratio=0.2, query_ratio=0.3, val_ratio=0, val_max=0,
                         support_max=5, query_max=7) == {"support": 5, "query": 7, "val": 0, "held_out": 88}
    with pytest.raises(DataError, match="task 'tiny' has 10 examples"):
        T.split_sizes(10, task="tiny", support_ratio=0.2, query_ratio=0.3, val_ratio=0, val_max=0,
                      support_max=6, query_max=6)


def test_select_rejects_unknown_subject_and_absent_level():
    records = pool({1: 3, 2: 3})
    with pytest.raises(DataError, match="subject.*'geometry'.*available: \\['algebra'\\]"):
        T.select(records, task="t", source="s", subjects=["geometry"])
    with pytest.raises(DataError, match="level\\(s\\) \\[5\\]"):
        T.select(records, task="t", source="s", levels=[5])
    assert len(T.select(records, task="t", source="s", levels=[2])) == 3


def test_dedup_uses_normalized_text():
    a = Record(id="a", problem="Solve  $2x+3 = 7$.", solution="s", answer="2", domain="algebra",
               subject="algebra", source="x")
    b = Record(id="b", problem="solve 2x + 3 = 7", solution="s", answer="2", domain="algebra",
               subject="algebra", source="y")
    d = T.Dedup()
    assert d.keep_new([a], "first") == [a]
    assert d.keep_new([b], "second") == []
    assert d.removed["second"] == 1


def test_controlled_rounding_keeps_sums_and_stays_within_one():
    import random
    rng = random.Random(0)
    for _ in range(300):
        rows = [rng.randint(0, 40) for _ in range(rng.randint(1, 6))]
        n = sum(rows)
        cuts = sorted(rng.randint(0, n) for _ in range(3))
        cols = [cuts[0], cuts[1] - cuts[0], cuts[2] - cuts[1], n - cuts[2]]
        m = T.controlled_rounding(rows, cols)
        assert [sum(r) for r in m] == rows
        assert [sum(m[i][j] for i in range(len(rows))) for j in range(4)] == cols
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                assert abs(m[i][j] - (r * c / n if n else 0)) < 1
