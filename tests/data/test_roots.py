"""Per-source roots (data.roots): hub and local files mixed in one build, where each source came from
in the manifest, a source that cannot load said in one line, and scheme B as shipped with a local
Geometry3K (issue 20)."""
from __future__ import annotations

import json

import pytest

from conftest import CONFIGS
from metasft.cli import main
from metasft.config import ConfigError, load_config, validate
from metasft.data.build import build_data
from metasft.data.sources import SOURCE_MODULES, origin, source_root
from metasft.data.store import read_records
from metasft.rundir import MANIFEST
from test_sources import write_geometry3k


def test_every_source_states_where_it_loads_from():
    for name in SOURCE_MODULES:
        where = origin(name)
        assert where.hub or where.local or where.get, name
    assert origin("geometry3k").hub is None and "InterGPS" in origin("geometry3k").get
    assert origin("gsm8k").hub == "openai/gsm8k" and origin("gsm8k").local == "gsm8k/{train,test}.jsonl"
    assert origin("embedded").local is None


def test_a_root_per_source_overrides_data_root():
    roots = {"geometry3k": "/g", "math": "hub"}
    assert str(source_root("geometry3k", None, roots)) == "/g"
    assert source_root("math", "/shared", roots) is None  # hub, whatever data_root says
    assert str(source_root("gsm8k", "/shared", roots)) == "/shared"
    assert source_root("gsm8k", None, roots) is None


@pytest.mark.parametrize("override, message", [
    ("data.roots.nosuch=/x", "data.roots.nosuch: not a built-in source"),
    ("data.roots.geometry3k=hub", "data.roots.geometry3k=hub: geometry3k has no usable Hugging Face copy; give a "
                                  "directory with geometry3k/{train,val,test}/<id>/data.json under it"),
    ("data.roots.embedded=/x", "data.roots.embedded: embedded reads no files"),
    ("data.roots.math=''", "data.roots.math must be a directory or 'hub'"),
    ("data.roots=[1]", "data.roots must be a mapping"),
])
def test_bad_roots_are_refused_naming_the_key(override, message, capsys):
    with pytest.raises(ConfigError) as e:
        validate(load_config(CONFIGS / "data" / "mixed_scheme_b.yaml", [override]))
    assert message in str(e.value)
    assert main(["config", "show", str(CONFIGS / "data" / "mixed_scheme_b.yaml"), override]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_good_roots_validate():
    cfg = load_config(CONFIGS / "data" / "mixed_scheme_b.yaml", ["data.roots.geometry3k=/x", "data.roots.math=hub"])
    validate(cfg)
    assert cfg.data.roots == {"geometry3k": "/x", "math": "hub"}


def test_hub_and_local_files_in_one_build(tmp_path, shared_data, monkeypatch):
    """gsm8k from the "hub" (load_dataset answered locally: tests have no network), MATH from data_root,
    TheoremQA from a root of its own; the manifest says which came from where."""
    import datasets
    asked = []

    def hub(dataset_id, config=None, split=None, **kwargs):
        asked.append((dataset_id, config, split))
        return [{"question": f"Tom has {i} apples and buys 2 more. How many now?",
                 "answer": f"{i} + 2 = {i + 2}.\n#### {i + 2}"} for i in range(12)]

    monkeypatch.setattr(datasets, "load_dataset", hub)
    own = tmp_path / "tqa"
    (own / "theoremqa").mkdir(parents=True)
    (own / "theoremqa" / "theoremqa_test.json").write_bytes((shared_data / "theoremqa" / "theoremqa_test.json").read_bytes())
    config = tmp_path / "mixed.yaml"
    config.write_text("""
data:
  val_max_samples: 2
  tasks:
    - {name: algebra, source: math, subject: algebra, exclude_levels: [5], support: 4, query: 4}
    - {name: words, source: gsm8k, support: 4, query: 4}
  eval_tasks:
    - {name: theorem_proving, source: theoremqa, split: test, shots_split: test, n_shots: [0, 2], test_size: 4}
""")
    cfg = load_config(config, [f"data_root={shared_data}", "data.roots.gsm8k=hub", f"data.roots.theoremqa={own}"])
    validate(cfg)
    out = tmp_path / "out"
    build_data(cfg, out)
    assert asked == [("openai/gsm8k", "main", "train")]
    sources = json.loads((out / MANIFEST).read_text())["sources"]
    assert sources["gsm8k"] == {"kind": "hub", "root": None, "read": ["hub openai/gsm8k main train"]}
    assert sources["math"] == {"kind": "files", "root": str(shared_data.resolve()), "read": ["math/train.jsonl"]}
    assert sources["theoremqa"] == {"kind": "files", "root": str(own.resolve()),
                                    "read": ["theoremqa/theoremqa_test.json"]}
    words = read_records(out / "data" / "meta_train" / "words_support.parquet")
    assert words and all(r.source == "gsm8k" for r in words)


def test_a_source_that_cannot_load_says_where_it_looked_and_how_to_get_it(tmp_path, capsys):
    config = tmp_path / "g.yaml"
    config.write_text("data:\n  tasks:\n    - {name: geometry_proof, source: geometry3k, split: train}\n")
    assert main(["data", "build", str(config), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "source 'geometry3k' (split 'train') did not load on the Hugging Face hub" in err
    assert "data.roots.geometry3k=DIR" in err and "lupantech/InterGPS" in err
    # a root without the files: the path it looked at, and the hub is not offered (there is none)
    assert main(["data", "build", str(config), "--out", str(tmp_path / "b"), f"data.roots.geometry3k={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"did not load under {tmp_path}: {tmp_path / 'geometry3k' / 'train'}: directory not found" in err
    assert "=hub" not in err and not (tmp_path / "b").exists()
    # a source that has a hub copy offers it when its local file is missing
    config.write_text("data:\n  tasks:\n    - {name: words, source: gsm8k}\n")
    assert main(["data", "build", str(config), "--out", str(tmp_path / "c"), f"data_root={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{tmp_path / 'gsm8k' / 'train.jsonl'}: file not found" in err
    assert "data.roots.gsm8k=hub to read openai/gsm8k from the Hugging Face hub" in err


SCHEME_B_CONFIGS = ["data/mixed_scheme_b.yaml", "fomaml_sft.yaml", "baseline_sft.yaml", "full/design.yaml",
                    "experiments/matrix.yaml", *[f"experiments/{p.name}" for p in sorted((CONFIGS / "experiments").glob("exp*.yaml"))]]


@pytest.mark.parametrize("path", SCHEME_B_CONFIGS)
def test_design_configs_say_how_their_data_builds(path):
    """Scheme B needs Geometry3K, which only local files have: the command in the header passes its root."""
    cfg = load_config(CONFIGS / path)
    assert "geometry3k" in {t.source for t in cfg.data.tasks}, path
    text = (CONFIGS / path).read_text()
    header = text[:text.index("\ninclude:")]
    assert "data.roots.geometry3k=DIR" in header.splitlines()[0], path
    assert "runs unchanged" not in header.lower(), path


# scheme B's meta-training tasks (configs/data/mixed_scheme_b.yaml, in order) cut to what ../shared/data holds:
# its ScienceQA subset has 2 text-only physics and 2 chemistry problems in the train split
SCHEME_B_SIZES = {"algebra": 6, "geometry": 6, "number_theory": 6, "word_problems": 6, "physics": 1, "chemistry": 1,
                  "geometry_proof": 3}


def test_scheme_b_builds_from_shared_data_plus_a_local_geometry3k(tmp_path, shared_data):
    """Every task of scheme B as shipped (the design's eval tasks at their sizes), every source but
    Geometry3K read from ../shared/data, Geometry3K from a root of its own in the published layout."""
    geometry = tmp_path / "intergps"
    write_geometry3k(geometry, "train", [(i, "ABCD"[i % 4]) for i in range(1, 11)])
    path = CONFIGS / "data" / "mixed_scheme_b.yaml"
    names = [t.name for t in load_config(path).data.tasks]
    assert names == list(SCHEME_B_SIZES)
    sizes = [f"data.tasks.{i}.{key}={SCHEME_B_SIZES[name]}" for i, name in enumerate(names)
             for key in ("support_max_samples", "query_max_samples")]
    out = tmp_path / "data"
    assert main(["data", "build", str(path), "--out", str(out), f"data_root={shared_data}",
                 f"data.roots.geometry3k={geometry}", "data.val_max_samples=2", *sizes]) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["tasks"]) == sorted(names)
    assert sorted(manifest["eval_tasks"]) == ["aime", "applied_physics", "calculus", "hard_algebra", "mmlu_stem",
                                              "theorem_proving"]
    for name, n in SCHEME_B_SIZES.items():
        assert manifest["tasks"][name]["splits"]["support"]["n"] == n
    proofs = read_records(out / "data" / "meta_train" / "geometry_proof_support.parquet")
    assert {r.source for r in proofs} == {"geometry3k"}
    sources = manifest["sources"]
    assert sources["geometry3k"] == {"kind": "files", "root": str(geometry.resolve()),
                                     "read": ["geometry3k/train/*/data.json (10 files)"]}
    assert sorted(sources) == ["aime", "geometry3k", "gsm8k", "math", "mmlu_stem", "scienceqa", "theoremqa"]
    for name in ("aime", "gsm8k", "math", "mmlu_stem", "scienceqa", "theoremqa"):
        assert sources[name]["kind"] == "files" and sources[name]["root"] == str(shared_data.resolve()), name
    assert sources["scienceqa"]["read"] == ["scienceqa/problems_subset150.json"]  # no full problems.json there
    assert sources["mmlu_stem"]["read"] == ["mmlu_stem/dev/*_dev.csv (18 files)", "mmlu_stem/test/*_test.csv (18 files)",
                                            "mmlu_stem/val/*_val.csv (18 files)"]
    # the design's eval tasks: worked shots for MATH's, answer-only ones for TheoremQA, MMLU and the AIME CSV
    assert {name: t["shots_reason"] for name, t in manifest["eval_tasks"].items()} == {
        "hard_algebra": True, "calculus": True, "theorem_proving": False, "mmlu_stem": False, "applied_physics": False,
        "aime": False}
    from metasft.data.stats import stats_table
    table = stats_table(out)
    assert f"geometry3k: files under {geometry.resolve()}: geometry3k/train/*/data.json (10 files)" in table
    assert ("shots that show working: aime 0% (answer-only), applied_physics 0% (answer-only), calculus 100%, "
            "hard_algebra 100%, mmlu_stem 0% (answer-only), theorem_proving 0% (answer-only)") in table


def test_ls_says_where_each_source_loads_from():
    from metasft.catalog import catalogue

    text = " ".join(catalogue(CONFIGS).split())  # wrapped at the catalogue's width
    assert ("from: no usable hub copy; files geometry3k/{train,val,test}/<id>/data.json under data_root or "
            "data.roots.geometry3k (from lupantech/InterGPS") in text
    assert "from: hub openai/gsm8k; files gsm8k/{train,test}.jsonl under data_root or data.roots.gsm8k" in text
