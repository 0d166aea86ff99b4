"""metasft.manifests: one typed reader and writer per manifest; old, foreign or malformed files are
one-line errors that name the file and the key."""
import json

import pytest

from metasft.manifests import (SCHEMA, Best, Budget, DataFile, DataManifest, EvalManifest, EvalTaskEntry,
                               ExperimentManifest, Fingerprint, ManifestError, MetaTaskEntry, Provenance, Relation,
                               SplitCounts, StageRecord, TrainManifest, has_record, read_manifest, started_record,
                               write_manifest)
from metasft.rundir import MANIFEST, RunWarning, write_json

CODE = Provenance("abc123", {"torch": "2.13.0", "peft": None}, ["metasft", "run"])


def data_manifest() -> DataManifest:
    return DataManifest(
        seed=3, template="en", data_root=None,
        tasks={"algebra": MetaTaskEntry("math", {"support": SplitCounts(4, {"1": 3, "none": 1})})},
        eval_tasks={"gsm": EvalTaskEntry("gsm8k", [0, 5], False, Relation("unseen_source", "unseen source"), False, 256,
                                         {"test": SplitCounts(10, {"none": 10})})},
        dedup_removed={"gsm8k": 2}, overlap_check="checked", code=CODE,
        files={"data/eval/gsm_test.parquet": DataFile("f" * 64, 10)})


def train_manifest() -> TrainManifest:
    return TrainManifest(status="finished", arm="fomaml", name="x", seed=0, data_dir="d",
                         data_files={"a": DataFile("0" * 64, 1)}, world_size=1, fsdp=False, code=CODE,
                         budget=Budget(8, 6, 100, 50, 2, 8, {"algebra": 8}), best=Best("val_loss", None, None),
                         warnings=[RunWarning("inner_loop_did_not_adapt", "0.00%")])


@pytest.mark.parametrize("manifest", [data_manifest(), train_manifest(), EvalManifest("d", CODE),
                                      ExperimentManifest(CODE, {"eval": StageRecord("finished", Fingerprint("1" * 64,
                                                                                                             {"k": 1}), 2.5)})])
def test_each_manifest_reads_back_as_written_in_strict_json(tmp_path, manifest):
    write_manifest(tmp_path, manifest)
    def no_constant(name):
        raise AssertionError(f"not strict JSON: {name}")
    raw = json.loads((tmp_path / MANIFEST).read_text(), parse_constant=no_constant)
    assert raw["kind"] == type(manifest).KIND and raw["schema"] == SCHEMA
    assert read_manifest(tmp_path, type(manifest)) == manifest


def _corrupt(tmp_path, change) -> str:
    write_manifest(tmp_path, train_manifest())
    raw = json.loads((tmp_path / MANIFEST).read_text())
    change(raw)
    (tmp_path / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(ManifestError) as e:
        read_manifest(tmp_path, TrainManifest)
    assert "\n" not in str(e.value) and str(tmp_path / MANIFEST) in str(e.value)
    return str(e.value)


def test_a_manifest_without_schema_is_an_older_layout(tmp_path):
    assert "written by an older metasft (no schema key)" in _corrupt(tmp_path, lambda m: m.pop("schema"))
    assert "manifest schema 7" in _corrupt(tmp_path, lambda m: m.update(schema=7))


def test_a_manifest_of_another_kind_is_refused(tmp_path):
    write_manifest(tmp_path, EvalManifest("d", CODE))
    with pytest.raises(ManifestError, match="kind 'eval', expected 'train'"):
        read_manifest(tmp_path, TrainManifest)


@pytest.mark.parametrize("change, message", [
    (lambda m: m["budget"].pop("examples"), "required key 'budget.examples' is missing"),
    (lambda m: m["budget"].update(examples=8.5), "budget.examples must be an integer, got 8.5"),
    (lambda m: m["budget"].update(examples=True), "budget.examples must be an integer, got True"),
    (lambda m: m["best"].update(value="inf"), "best.value must be a finite number, got 'inf'"),
    (lambda m: m["data_files"]["a"].update(sha256=None), "data_files.a.sha256 must be a string, got None"),
    (lambda m: m.update(warnings=[{"kind": "k"}]), "required key 'warnings[0].message' is missing"),
    (lambda m: m.update(budgets={}), "unknown key 'budgets'"),
    (lambda m: m["code"].update(versions=["torch"]), "code.versions must be an object"),
])
def test_a_malformed_manifest_names_the_key(tmp_path, change, message):
    assert message in _corrupt(tmp_path, change)


def test_not_json_and_a_claimed_directory(tmp_path):
    (tmp_path / MANIFEST).write_text("{cut")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(tmp_path, DataManifest)
    write_json(tmp_path / MANIFEST, started_record("train", arm="fomaml"))
    assert not has_record(tmp_path)
    with pytest.raises(ManifestError, match="recorded nothing yet"):
        read_manifest(tmp_path, TrainManifest)
    write_manifest(tmp_path, train_manifest())
    assert has_record(tmp_path) and not has_record(tmp_path / "nothing")


def test_a_stage_status_other_than_running_or_finished_is_refused(tmp_path):
    """Issue 23's corpus: a hand-edited status was taken for a killed stage and the stage rerun."""
    write_manifest(tmp_path, ExperimentManifest(CODE, {"eval": StageRecord("finished", Fingerprint("1" * 64, {}))}))
    raw = json.loads((tmp_path / MANIFEST).read_text())
    raw["stages"]["eval"]["status"] = "done"
    (tmp_path / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match=r"stages\.eval\.status must be 'running' or 'finished', got 'done'"):
        read_manifest(tmp_path, ExperimentManifest)
