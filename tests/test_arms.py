"""An arm is one entry in metasft.arms plus its training routine: a toy arm added here is trained by
`metasft train`, listed by the experiment matrix and styled by the report, with nothing else changed."""
import dataclasses
import json

import pandas as pd

from conftest import CONFIGS
from metasft import arms
from metasft.config import load_config
from metasft.matrix import plan_runs
from metasft.report.plots import arm_style
from metasft.rundir import ADAPTER_DIR, MANIFEST, pooled_file
from metasft.train.run import run_sft, train

SFT = CONFIGS / "tiny" / "baseline_sft.yaml"
CALLS = []


def first_task_sft(cfg, out, model, named, save_adapter, data_dir, tokenizer, specs, val_sets, record):
    """The toy arm's routine: SFT-Mixed on the first meta-training task's pool alone."""
    first = pooled_file(specs[0].name)
    CALLS.append(first)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train_files=[first]))
    return run_sft(cfg, out, model, named, save_adapter, data_dir, tokenizer, specs, val_sets, record)


TOY = arms.Arm("sft_first", "SFT-First", "#CC79A7", "P", "-", "sft", f"{__name__}:first_task_sft", "matched")


def test_a_toy_arm_is_one_registry_entry_and_one_function(tmp_path, data_dir, monkeypatch):
    monkeypatch.setitem(arms.ARMS, TOY.name, TOY)
    CALLS.clear()
    run = train(load_config(SFT, [f"data.dir={data_dir}", "arm=sft_first", "trainer.test_freq=0"]), tmp_path / "toy")
    manifest = json.loads((run / MANIFEST).read_text())
    assert manifest["arm"] == "sft_first" and manifest["status"] == "finished"
    assert (run / ADAPTER_DIR / "adapter_model.safetensors").is_file()
    first = CALLS[0]
    assert CALLS == [first] and first.startswith("data/processed/")
    # the pool it trained on is that one task's file, every row of it (independently counted)
    assert manifest["pool"]["distinct"] == len(pd.read_parquet(data_dir / first))
    exp = load_config(CONFIGS / "tiny" / "experiment.yaml", ["arms=[base,fomaml,sft_mixed,sft_first]"])
    toy = [r for r in plan_runs(exp, []) if r.arm == "sft_first"]
    assert [(r.name, r.paired) for r in toy] == [("sft_first", "fomaml")]  # budget matched to the meta run
    assert arm_style("sft_first").label == "SFT-First" and arm_style("sft_first").marker == "P"


def test_the_registry_declares_the_design_arms():
    assert arms.names() == ("fomaml", "sft_mixed", "base", "reptile", "sft_task")
    assert arms.of_kind("meta") == ("fomaml", "reptile")
    assert arms.setting("reptile", "meta.algorithm", "fomaml") == "reptile"
    assert arms.setting("fomaml", "meta.algorithm", "fomaml") == "fomaml"
