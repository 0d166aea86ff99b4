"""Run directories end to end on the tiny config: layout, budgets, resume after a kill, bad input."""
import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import CONFIGS, killed_after
from metasft.config import ConfigError, load_config
from metasft.train.checkpoint import CheckpointError
from metasft.train.run import train
from metasft.rundir import (ADAPTER_DIR, BEST_ADAPTER_DIR, CHECKPOINTS_DIR, CONFIG_FILE, FRESH_LORA_FILE, MANIFEST,
                            METRICS_FILE, TRAIN_LOG)

FOMAML = CONFIGS / "tiny" / "fomaml_sft.yaml"
SFT = CONFIGS / "tiny" / "baseline_sft.yaml"



def cfg(path, data_dir, *overrides):
    return load_config(path, [f"data.dir={data_dir}", "trainer.test_freq=3", *overrides])


def adapter(run):
    return load_file(str(run / ADAPTER_DIR / "adapter_model.safetensors"))


def test_fomaml_and_sft_runs_write_their_directory_and_match_budgets(tmp_path, data_dir):
    fomaml = train(cfg(FOMAML, data_dir), tmp_path / "fomaml")
    sft = train(cfg(SFT, data_dir, f"trainer.paired_run={fomaml}"), tmp_path / "sft")
    for run in (fomaml, sft):
        for name in (CONFIG_FILE, MANIFEST, METRICS_FILE, TRAIN_LOG, "adapter/adapter_config.json"):
            assert (run / name).is_file(), name
        m = json.loads((run / MANIFEST).read_text())
        # adapter_best/ only when the best step is not the last: otherwise adapter/ is that adapter
        assert (run / BEST_ADAPTER_DIR).is_dir() == (m["best"]["step"] != m["budget"]["optimizer_steps"])
    mf, ms = (json.loads((r / MANIFEST).read_text()) for r in (fomaml, sft))
    assert mf["budget"]["examples"] == ms["budget"]["examples"] == 6 * 2 * (2 * 2 + 2)
    assert ms["budget"]["optimizer_steps"] == 18 and mf["budget"]["optimizer_steps"] == 6
    assert mf["status"] == ms["status"] == "finished" and mf["data_files"]
    rows = [json.loads(line) for line in (fomaml / METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4, 5, 6]
    for key in ("support_loss_pre", "support_loss_post", "query_loss", "adaptation_gap", "lr", "tokens_per_s", "tasks"):
        assert key in rows[1], key
    assert "val_loss" in rows[3] and "val_loss_adapted" in rows[3]  # validation adapts with grads on
    # train.log carries the per-step lines at trainer.log_freq (default 1), with validation when it ran
    steps = [line.split("metasft.steps: ", 1)[1] for line in (fomaml / TRAIN_LOG).read_text().splitlines()
             if "metasft.steps: " in line]
    assert [s.split()[1] for s in steps] == [f"{i}/6" for i in range(7)]
    assert all(k in steps[1] for k in ("loss ", "tok/s ", "lr ")) and "val_loss " in steps[3]

    from peft import PeftModel
    from metasft.models import tiny_llama
    PeftModel.from_pretrained(tiny_llama()[0], str(fomaml / ADAPTER_DIR))


def test_adapter_best_is_dropped_only_when_it_equals_the_final_adapter(tmp_path):
    from metasft.train.run import _drop_duplicate_best
    for run, best_bytes in ((tmp_path / "same", b"w1"), (tmp_path / "differs", b"w0")):
        for d, weights in ((ADAPTER_DIR, b"w1"), (BEST_ADAPTER_DIR, best_bytes)):
            (run / d).mkdir(parents=True)
            (run / d / "adapter_config.json").write_text("{}")
            (run / d / "adapter_model.safetensors").write_bytes(weights)
        _drop_duplicate_best(run)
    assert sorted(p.name for p in (tmp_path / "same").iterdir()) == [ADAPTER_DIR]
    assert (tmp_path / "differs" / BEST_ADAPTER_DIR / "adapter_model.safetensors").read_bytes() == b"w0"


def test_log_freq_thins_train_log_lines(tmp_path, data_dir):
    run = train(cfg(FOMAML, data_dir, "trainer.log_freq=4", "trainer.test_freq=0"), tmp_path / "run")
    steps = [line.split("metasft.steps: step ", 1)[1].split()[0] for line in (run / TRAIN_LOG).read_text().splitlines()
             if "metasft.steps: " in line]
    assert steps == ["4/6", "6/6"]  # every 4th step and the last


def test_batches_are_not_redrawn(tmp_path, data_dir):
    run = train(cfg(FOMAML, data_dir), tmp_path / "r")
    distinct = json.loads((run / MANIFEST).read_text())["budget"]["distinct_examples"]
    assert distinct > 2 * 2 + 2  # next(iter(loader)) would see the same few examples every step


@pytest.mark.parametrize("config", [FOMAML, SFT], ids=["fomaml", "sft"])
def test_resume_after_kill_is_bit_identical(tmp_path, data_dir, config):
    full = train(cfg(config, data_dir), tmp_path / "full")
    killed_after(5, lambda: train(cfg(config, data_dir), tmp_path / "killed"))
    assert not (tmp_path / "killed" / ADAPTER_DIR).exists()
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg(config, data_dir), tmp_path / "killed")
    resumed = train(cfg(config, data_dir), tmp_path / "killed", resume=True)
    a, b = adapter(full), adapter(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(line)["step"] for line in (resumed / METRICS_FILE).read_text().splitlines()]
    assert steps == sorted(set(steps))  # no step logged twice
    budget_full = json.loads((full / MANIFEST).read_text())["budget"]
    assert json.loads((resumed / MANIFEST).read_text())["budget"] == budget_full


def test_resume_before_the_first_checkpoint_starts_over_cleanly(tmp_path, data_dir):
    killed_after(1, lambda: train(cfg(FOMAML, data_dir, "trainer.save_freq=3"), tmp_path / "early"))
    assert not (tmp_path / "early" / CHECKPOINTS_DIR).exists()
    resumed = train(cfg(FOMAML, data_dir, "trainer.save_freq=3"), tmp_path / "early", resume=True)
    steps = [json.loads(line)["step"] for line in (resumed / METRICS_FILE).read_text().splitlines()]
    assert steps == [0, 1, 2, 3, 4, 5, 6]  # the killed attempt's step 0 and 1 are not kept twice


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, data_dir):
    run = tmp_path / "r"
    killed_after(4, lambda: train(cfg(FOMAML, data_dir), run))
    (run / CHECKPOINTS_DIR / "step_000003" / "adapter.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        train(cfg(FOMAML, data_dir), run, resume=True)
    assert (run / CHECKPOINTS_DIR / "step_000003").is_dir()  # nothing overwritten


def test_non_finite_loss_names_step_and_task(tmp_path, data_dir):
    from metasft.train.common import NonFiniteLoss
    with pytest.raises(NonFiniteLoss, match=r"outer step 1, task '\w+'.*batch example ids"):
        train(cfg(FOMAML, data_dir, "meta.inner_lr=1e30"), tmp_path / "nan")


def test_sft_budget_that_pool_cannot_meet_in_unique_mode_scales(tmp_path, data_dir):
    run = train(cfg(SFT, data_dir, "data.budget=unique", "data.mixture=pooled", "trainer.total_epochs=1", "data.total_samples=8"),
                tmp_path / "u")
    budget = json.loads((run / MANIFEST).read_text())["budget"]
    assert budget["examples"] == 8 and budget["distinct_examples"] == 8


def test_base_arm_records_its_fresh_lora_and_eval_builds_the_same_one(tmp_path, data_dir):
    """The base arm writes its LoRA's seed, not its weights; built on load it is, tensor for tensor, the
    LoRA the run's own `add_lora` made at that seed (what the base arm saved as adapter/ before)."""
    from metasft.eval.specs import adapter_fingerprint, parse_model_specs, read_peft_adapter
    from metasft.models import add_lora, load_base
    run = train(cfg(FOMAML, data_dir, "arm=base", "seed=5"), tmp_path / "base")
    assert sorted(p.name for p in run.iterdir()) == sorted([CONFIG_FILE, MANIFEST, TRAIN_LOG, FRESH_LORA_FILE])
    assert json.loads((run / MANIFEST).read_text())["budget"]["examples"] == 0
    m = load_config(run / CONFIG_FILE).model
    lora = dict(rank=m.lora_rank, alpha=m.lora_alpha, dropout=m.lora_dropout, target_modules=m.target_modules)
    torch.manual_seed(5)  # the base arm's model as train.run built it, seed then model then LoRA
    then = {n: p.detach() for n, p in add_lora(load_base(m.partial_pretrain)[0], **lora).named_parameters()
            if p.requires_grad}
    torch.manual_seed(0)  # an evaluator's model, its own LoRA drawn at another seed
    evaluator = add_lora(load_base(m.partial_pretrain)[0], **lora)
    own = {n: p.detach().clone() for n, p in evaluator.named_parameters() if p.requires_grad}
    [spec] = parse_model_specs([str(run)])
    assert spec.name == "base" and spec.adapter == run / FRESH_LORA_FILE
    assert adapter_fingerprint(spec, seed=0) == "fresh LoRA, seed 5"
    built = read_peft_adapter(spec.adapter, evaluator)
    assert built.keys() == then.keys() and len(then) > 0
    assert all(torch.equal(built[k], then[k]) for k in then)
    assert any(not torch.equal(own[k], then[k]) for k in then)  # the seed is the record's, not the evaluator's
    assert all(float(t.abs().sum()) == 0 for k, t in built.items() if "lora_B" in k)
    now = {n: p.detach() for n, p in evaluator.named_parameters() if p.requires_grad}
    assert now.keys() == own.keys() and all(torch.equal(now[k], own[k]) for k in own)  # its own LoRA untouched


def test_budget_the_pool_cannot_meet_is_an_error(tmp_path, data_dir):
    from metasft.data.records import DataError
    with pytest.raises(DataError, match="asks for 100000 distinct examples"):
        train(cfg(SFT, data_dir, "data.total_samples=100000"), tmp_path / "x")


def test_empty_task_split_is_an_error(tmp_path, data_dir):
    import shutil
    from metasft.data.records import DataError
    from metasft.data.store import write_examples
    broken = tmp_path / "data"
    shutil.copytree(data_dir, broken)
    write_examples(broken / "data/meta_train/geometry_query.parquet", [], "en")
    with pytest.raises(DataError, match="geometry.*query_files: no examples"):
        train(cfg(FOMAML, broken), tmp_path / "x")
