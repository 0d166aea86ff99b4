"""Stage fingerprints (metasft.fingerprint): which stages a config change reaches, without running any."""

import pytest

from conftest import CONFIGS
from metasft.config import load_config
from metasft.fingerprint import changes, digest, flatten, plan
from metasft.manifests import DataFile, DataManifest, Provenance, write_manifest

TINY = CONFIGS / "tiny" / "experiment.yaml"
RUNS = [("fomaml", "fomaml", None), ("sft_mixed", "sft_mixed", "fomaml"), ("base", "base", None)]
ALL = ["data", "train/fomaml", "train/sft_mixed", "train/base", "eval", "similarity", "report"]


def stale_after(*overrides: str, runs=RUNS) -> list[str]:
    """Stages whose digest differs between the tiny config and the tiny config with `overrides`."""
    old = plan(load_config(TINY), RUNS, None)
    new = plan(load_config(TINY, list(overrides)), runs, None)
    return [s for s in ALL if s not in new or s not in old or digest(old[s]) != digest(new[s])]


def test_plan_lists_every_stage_in_run_order():
    assert list(plan(load_config(TINY), RUNS, None)) == ALL


@pytest.mark.parametrize("overrides, stale", [
    # execution details: no stage's result changes
    (["trainer.loggers=[jsonl,tensorboard]", "trainer.log_freq=5", "trainer.save_freq=2",
      "trainer.device=cpu", "model.cache_dir=/tmp/elsewhere", "eval.batch_size=3",
      "eval.cells_per_batch=4"], []),
    (["meta.inner_lr=1e-4"], ["train/fomaml", "train/sft_mixed", "eval", "report"]),  # SFT's budget is FOMAML's
    (["trainer.lr=1e-2"], ["train/sft_mixed", "eval", "report"]),
    (["data.mixture=pooled"], ["train/sft_mixed", "eval", "report"]),
    (["trainer.select_by=val_loss"], ["train/fomaml", "train/sft_mixed", "eval", "report"]),
    (["data.tasks.0.exclude_levels=[4]"], ["data", "train/fomaml", "train/sft_mixed", "eval", "similarity", "report"]),
    (["eval.adaptation_lr=2e-3"], ["eval", "report"]),
    (["eval.adaptation_batch_size=1"], ["eval", "similarity", "report"]),
    (["eval.similarity_batches=2"], ["similarity", "report"]),
    (["eval.target_acc=0.5"], ["report"]),
    (["model.lora_rank=2"], ["train/fomaml", "train/sft_mixed", "train/base", "eval", "similarity", "report"]),
    (["data.support_ratio=0.3"], ["data", "train/fomaml", "train/sft_mixed", "eval", "similarity", "report"]),
    (["data.tasks.0.size=7"], ["data", "train/fomaml", "train/sft_mixed", "eval", "similarity", "report"]),
    (["seed=1"], ALL),
])
def test_a_change_reaches_exactly_the_stages_that_depend_on_it(overrides, stale):
    assert stale_after(*overrides) == stale


def test_dropping_an_arm_changes_eval_and_report_only():
    assert stale_after("arms=[base,fomaml]", runs=RUNS[::2]) == ["train/sft_mixed", "eval", "report"]


def test_an_external_data_dir_enters_by_its_file_hashes(tmp_path):
    manifest = DataManifest(seed=0, template="en", data_root=None, tasks={}, eval_tasks={}, dedup_removed={},
                            overlap_check="", code=Provenance(None, {}), files={"data/a.parquet": DataFile("1" * 64, 3)})
    write_manifest(tmp_path, manifest)
    before = plan(load_config(TINY), RUNS, tmp_path)
    assert "data" not in before and "input.data" in before["train/fomaml"]
    manifest.files["data/a.parquet"].sha256 = "2" * 64
    write_manifest(tmp_path, manifest)
    after = plan(load_config(TINY), RUNS, tmp_path)
    assert [s for s in after if digest(after[s]) != digest(before[s])] == [s for s in ALL if s not in ("data", "train/base")]
    assert changes(before["train/fomaml"], after["train/fomaml"]) == "other data.dir files"


def test_changes_names_keys_and_values():
    old, new = flatten(load_config(TINY)), flatten(load_config(TINY, ["meta.inner_lr=1e-4", "data.tasks.0.size=7"]))
    assert changes(old, new) == "data.tasks.0.size=60, now 7 and meta.inner_lr=0.001, now 0.0001"
    assert changes({"after.eval": "a"}, {"after.eval": "b"}) == "other eval results"
    assert changes({"after.train/x": "a"}, {}) == "train/x, now without it"
    assert changes({}, {"k": [1, 2]}) == "k unset, now [1, 2]"
