"""`metasft data build`: layout, manifest, stratification, no overlap, determinism, bad input."""
import json
from collections import Counter

import pytest

from conftest import CONFIGS
from metasft.cli import main
from metasft.config import load_config
from metasft.data.build import build_data
from metasft.data.records import DataError, dedup_key
from metasft.data.sources import math
from metasft.data.store import read_records
from metasft.rundir import MANIFEST, eval_task_file, file_sha256

TINY = CONFIGS / "tiny" / "data" / "embedded.yaml"


@pytest.fixture(scope="module")
def scheme_a(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("scheme_a") / "data"
    assert main(["data", "build", str(CONFIGS / "data" / "math_scheme_a.yaml"), "--out", str(out),
                 f"data_root={shared_data}"]) == 0
    return out


def test_scheme_a_gives_six_level_stratified_tasks(scheme_a, shared_data):
    manifest = json.loads((scheme_a / MANIFEST).read_text())
    assert sorted(manifest["tasks"]) == sorted(["algebra", "geometry", "counting_and_probability", "number_theory",
                                                "prealgebra", "intermediate_algebra"])  # precalculus is evaluated
    source = math.load("train", shared_data)
    key = lambda level: "none" if level is None else str(level)  # noqa: E731  the manifest's level keys
    written = {p.name for p in (scheme_a / "data/meta_train").iterdir()}
    assert written == {f"{name}_{s}.parquet" for name in manifest["tasks"] for s in ("support", "query", "val")}
    for name, task in manifest["tasks"].items():
        parts = {s: read_records(scheme_a / f"data/meta_train/{name}_{s}.parquet") for s in ("support", "query", "val")}
        # the design's 50 % hold-out: counted in the manifest (no file), the slice's rest, stratified too
        assert sorted(task["splits"]) == ["held_out", "query", "support", "val"]
        slice_ = {}  # a problem that repeats counts once, at its first level (as the build's dedup keeps it)
        for r in source:
            if r.subject == name and not (name == "algebra" and r.level == 5):
                slice_.setdefault(dedup_key(r), key(r.level))
        full, total = Counter(slice_.values()), len(slice_)
        held = task["splits"]["held_out"]
        assert held["n"] == total - sum(len(p) for p in parts.values())
        rest = full - Counter(key(r.level) for p in parts.values() for r in p)
        assert held["levels"] == dict(sorted(rest.items()))
        assert all(abs(n - full[k] / total * held["n"]) <= 1 for k, n in held["levels"].items())
        for split, records in parts.items():
            info = task["splits"][split]
            assert info["n"] == len(records)  # the manifest's counts match the files
            got = Counter(key(r.level) for r in records)
            assert info["levels"] == dict(sorted(got.items()))
            for level, n in full.items():
                assert abs(got[level] - n / total * len(records)) <= 1, (name, split, level)
        assert abs(task["splits"]["support"]["n"] - 0.2 * total) <= 1
        assert abs(task["splits"]["query"]["n"] - 0.3 * total) <= 1
    for rel, info in manifest["files"].items():
        assert file_sha256(scheme_a / rel) == info["sha256"]


def test_no_problem_in_two_files(scheme_a):
    owner = {}
    for path in sorted((scheme_a / "data").rglob("*.parquet")):
        if "processed" in path.parts:
            continue
        for r in read_records(path):
            key = dedup_key(r)
            assert key not in owner, f"{r.id} in {owner.get(key)} and {path.name}"
            owner[key] = path.name
    processed = read_records(scheme_a / "data/processed/algebra_all.parquet")
    pool = read_records(scheme_a / "data/meta_train/algebra_support.parquet") + \
        read_records(scheme_a / "data/meta_train/algebra_query.parquet")
    assert sorted(r.id for r in processed) == sorted(r.id for r in pool)


def test_eval_tasks_follow_the_design(scheme_a):
    manifest = json.loads((scheme_a / MANIFEST).read_text())
    hard = read_records(scheme_a / "data/eval/hard_algebra_test.parquet")
    assert len(hard) == 200 and {r.level for r in hard} == {5} and {r.subject for r in hard} == {"algebra"}
    assert all(r.id.startswith("math/test/") for r in hard)  # MATH's test split only
    assert manifest["eval_tasks"]["theorem_proving"]["unseen"] is True
    assert manifest["eval_tasks"]["mmlu_stem"]["splits"]["test"]["n"] == 500
    assert manifest["eval_tasks"]["mmlu_stem"]["splits"]["shots"]["n"] >= 5
    # protocol B's applied physics: MMLU's conceptual physics, unseen, 0-shot, a subject no other task uses
    applied = manifest["eval_tasks"]["applied_physics"]
    assert applied["unseen"] is True and applied["n_shots"] == [0] and applied["relation"]["kind"] == "unseen_source"
    parts = {s: read_records(scheme_a / eval_task_file("applied_physics", s)) for s in ("test", "shots")}
    assert len(parts["test"]) == 200 and {r.subject for p in parts.values() for r in p} == {"conceptual_physics"}
    assert all(r.id.startswith("mmlu_stem/test/") for r in parts["test"])
    assert all(r.id.startswith("mmlu_stem/val/") for r in parts["shots"])
    others = [r for name in manifest["eval_tasks"] if name != "applied_physics"
              for s in ("test", "shots") for r in read_records(scheme_a / eval_task_file(name, s))]
    assert "conceptual_physics" not in {r.subject for r in others}


def test_rebuild_is_byte_identical(tmp_path):
    cfg = load_config(TINY)
    a, b = build_data(cfg, tmp_path / "a"), build_data(cfg, tmp_path / "b")
    assert a.files == b.files
    for rel in a.files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    other = build_data(load_config(TINY, ["seed=1"]), tmp_path / "c")
    assert other.files != a.files


def test_eval_task_levels_select_the_test_items_and_shots(tmp_path):
    build_data(load_config(TINY, ["data.eval_tasks.1.levels=[1,2]"]), tmp_path / "d")
    for part in ("test", "shots"):
        records = read_records(tmp_path / "d" / eval_task_file("statistics", part))
        assert {r.level for r in records} == {1, 2}, part


def test_stats_prints_the_counts(tmp_path, capsys):
    build_data(load_config(TINY), tmp_path / "d")
    assert main(["data", "stats", str(tmp_path / "d")]) == 0
    table = capsys.readouterr().out
    assert "algebra" in table and "support" in table and "L5" in table


@pytest.mark.parametrize("override, match", [
    ("data.tasks.0.support_max_samples=1000", "task 'algebra' has .* examples but its splits ask for"),
    ("data.tasks.0.subject=topology", "subject.*'topology'.*do not exist"),
    ("data.eval_tasks.0.n_shots=[0,500]", "n_shots 500 is larger than the pool"),
    ("data.tasks.0.source=nosuch", "unknown source 'nosuch'"),
])
def test_bad_build_is_a_clear_error_and_leaves_no_directory(tmp_path, override, match, capsys):
    out = tmp_path / "out"
    assert main(["data", "build", str(TINY), "--out", str(out), override]) == 2
    assert pytest.importorskip("re").search(match, capsys.readouterr().err)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_missing_local_file_names_the_path(tmp_path):
    cfg = load_config(CONFIGS / "tiny" / "data" / "math_scheme_a.yaml", [f"data_root={tmp_path}"])
    with pytest.raises(DataError, match=str(tmp_path / "math")):
        build_data(cfg, tmp_path / "out")


# configs/data/math_scheme_a.yaml before issue 9: Level-5 algebra meta-trained and evaluated as
# hard_algebra; precalculus meta-trained and evaluated as "calculus"
SCHEME_A_BEFORE = """
data:
  tasks:
    - {name: algebra, source: math, subject: algebra}
    - {name: geometry, source: math, subject: geometry}
    - {name: counting_and_probability, source: math, subject: counting_and_probability}
    - {name: number_theory, source: math, subject: number_theory}
    - {name: prealgebra, source: math, subject: prealgebra}
    - {name: precalculus, source: math, subject: precalculus}
    - {name: intermediate_algebra, source: math, subject: intermediate_algebra}
  eval_tasks:
    - {name: hard_algebra, source: math, subject: algebra, level: 5, split: test, shots_split: test,
       n_shots: [0, 5, 10, 25, 50], test_size: 200, max_new_tokens: 512}
    - {name: calculus, source: math, subject: precalculus, split: test, shots_split: test,
       n_shots: [0, 5, 10, 25, 50], test_size: 200, max_new_tokens: 512}
    - {name: theorem_proving, source: theoremqa, split: test, shots_split: test,
       n_shots: [0, 5, 10, 25, 50], test_size: 200, unseen: true, max_new_tokens: 512}
"""


def test_scheme_a_as_it_was_is_refused_naming_tasks_and_slices(tmp_path, shared_data, capsys):
    path = tmp_path / "scheme_a_before.yaml"
    path.write_text(SCHEME_A_BEFORE)
    out = tmp_path / "out"
    assert main(["data", "build", str(path), "--out", str(out), f"data_root={shared_data}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "eval task 'hard_algebra' and meta-training task 'algebra' share source math, subject algebra, level 5" in err
    assert ("eval task 'calculus' and meta-training task 'precalculus' share source math, subject precalculus, "
            "all levels") in err
    assert "theorem_proving" not in err and not out.exists()
    # declared, the same overlap builds, and the manifest says it is one
    path.write_text(SCHEME_A_BEFORE.replace("level: 5,", "level: 5, allow_overlap: true,")
                    .replace("subject: precalculus, split", "subject: precalculus, allow_overlap: true, split"))
    cfg = load_config(path, [f"data_root={shared_data}", "data.eval_tasks.0.test_size=4",
                             "data.eval_tasks.1.test_size=4", "data.eval_tasks.2.test_size=4",
                             "data.eval_tasks.0.n_shots=[0]", "data.eval_tasks.1.n_shots=[0]",
                             "data.eval_tasks.2.n_shots=[0]", "data.val_max_samples=2"])
    from metasft.data.build import held_out_relations
    relations = held_out_relations(cfg)
    assert relations["hard_algebra"]["kind"] == relations["calculus"]["kind"] == "declared_overlap"
    assert relations["theorem_proving"]["kind"] == "unseen_source"


def test_shipped_schemes_are_held_out_and_say_how(scheme_a, shared_data):
    evals = json.loads((scheme_a / MANIFEST).read_text())["eval_tasks"]
    kinds = {name: t["relation"]["kind"] for name, t in evals.items()}
    assert kinds == {"hard_algebra": "unseen_level", "calculus": "unseen_subject", "theorem_proving": "unseen_source",
                     "mmlu_stem": "unseen_source", "applied_physics": "unseen_source", "aime": "unseen_source"}
    levels = set()
    for split in ("support", "query", "val"):
        levels |= {r.level for r in read_records(scheme_a / f"data/meta_train/algebra_{split}.parquet")}
    assert levels == {1, 2, 3, 4}  # Level 5 is untrained
    from metasft.data.build import held_out_relations
    for path in ("data/mixed_scheme_b.yaml", "tiny/data/math_scheme_a.yaml", "tiny/data/mixed_scheme_b.yaml",
                 "fomaml_sft.yaml", "full/design.yaml", "tiny/full/design.yaml", "experiment.yaml"):
        relations = held_out_relations(load_config(CONFIGS / path, [f"data_root={shared_data}"]))
        assert all(r["kind"] != "overlap" for r in relations.values()), path
    b = held_out_relations(load_config(CONFIGS / "data" / "mixed_scheme_b.yaml"))
    assert b["hard_algebra"]["kind"] == "unseen_level" and b["calculus"]["kind"] == "unseen_subject"


def test_applied_physics_is_refused_once_meta_training_sees_its_subject():
    """The held-out check covers protocol B's applied physics as every eval task: meta-training on MMLU's
    conceptual physics makes the design's scheme A a ConfigError naming both tasks and the slice."""
    import dataclasses

    from metasft.config import ConfigError, TaskSource
    from metasft.data.build import held_out_relations
    cfg = load_config(CONFIGS / "data" / "math_scheme_a.yaml")
    seen = TaskSource(name="physics_concepts", source="mmlu_stem", subject="conceptual_physics")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, tasks=[*cfg.data.tasks, seen]))
    with pytest.raises(ConfigError, match="eval task 'applied_physics' and meta-training task 'physics_concepts' "
                                          "share source mmlu_stem, subject conceptual_physics"):
        held_out_relations(cfg)
