"""Checkpoints: nothing pickled is loaded, a bad newest checkpoint falls back, old ones are pruned; and
the resume around them (issue 13)."""
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import CONFIGS, killed_after
from metasft.config import load_config
from metasft.data.build import build_data
from metasft.train import checkpoint
from metasft.train.distributed import World
from metasft.train.run import train
from metasft.rundir import ADAPTER_DIR, CHECKPOINTS_DIR, CONFIG_FILE, MANIFEST, METRICS_FILE

FOMAML = CONFIGS / "tiny" / "fomaml_sft.yaml"


class Evil:
    """Unpickling this runs code: what a hostile state.pt / optimizer file would carry."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _tiny_checkpoint(root):
    p = torch.nn.Parameter(torch.ones(2, 3))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.grad = torch.ones_like(p)
    opt.step()
    state = {"step": 1, "note": "x"}
    return checkpoint.save(root, 1, [("w", p)], opt, state, World()), p, opt


@pytest.mark.floors
def test_checkpoint_round_trips_without_pickle(tmp_path):
    path, p, opt = _tiny_checkpoint(tmp_path)
    assert sorted(f.name for f in path.iterdir()) == ["adapter.safetensors", "optimizer_rank0.pt", "state.json"]
    q = torch.nn.Parameter(torch.zeros(2, 3))
    opt2 = torch.optim.AdamW([q], lr=0.1)
    assert checkpoint.load(path, [("w", q)], opt2, World()) == {"step": 1, "note": "x"}
    assert torch.equal(q, p) and torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_a_pickled_object_in_a_checkpoint_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, p, opt = _tiny_checkpoint(tmp_path / "ckpt")
    torch.save({"state": {}, "param_groups": [], "payload": Evil()}, path / "optimizer_rank0.pt")
    with pytest.raises(checkpoint.CheckpointError, match="pickled Python objects.*refused"):
        checkpoint.load(path, [("w", p)], opt, World())
    assert not (tmp_path / "pwned").exists()


def test_prune_keeps_the_newest_n_and_only_touches_step_directories(tmp_path):
    root = tmp_path / CHECKPOINTS_DIR
    for step in (1, 2, 10, 11, 100):  # newest by step number, not by name
        (root / f"step_{step:06d}").mkdir(parents=True)
    checkpoint.prune(root, keep=2)
    assert sorted(p.name for p in root.iterdir()) == ["step_000011", "step_000100"]
    (root / "notes.txt").write_text("mine")
    checkpoint.prune(root, keep=0)
    assert [p.name for p in root.iterdir()] == ["notes.txt"]
    (root / "notes.txt").unlink()
    checkpoint.prune(root, keep=0)
    assert not root.exists()  # nothing left: no empty checkpoints/ either


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    build_data(load_config(FOMAML), out)
    return out


def cfg(data_dir, *overrides):
    return load_config(FOMAML, [f"data.dir={data_dir}", *overrides])


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, data_dir):
    """An uninterrupted 6-step run: what every resumed run below must reproduce bit for bit."""
    return train(cfg(data_dir), tmp_path_factory.mktemp("full") / "run")


def _adapter(run):
    return load_file(str(run / ADAPTER_DIR / "adapter_model.safetensors"))


def test_resume_skips_a_corrupt_newest_checkpoint_and_cleans_up_after_the_kill(tmp_path, data_dir, full_run, caplog):
    run = tmp_path / "run"
    settings = ("trainer.save_freq=1", "trainer.keep_checkpoints=2")
    killed_after(5, lambda: train(cfg(data_dir, *settings), run))
    kept = sorted(p.name for p in (run / CHECKPOINTS_DIR).iterdir())
    assert kept == ["step_000004", "step_000005"]  # while running: the newest keep_checkpoints
    (run / CHECKPOINTS_DIR / "step_000005" / "state.json").write_text('{"step": 5, "bud')  # cut by a kill
    # what a kill inside atomic writes leaves behind, and a file of the user's that only looks similar
    for stale in (".adapter_best.abcd1234.tmp", "checkpoints/.step_000006.abcd1234.tmp", ".dataset.abcd1234.tmp"):
        (run / stale).mkdir()
        (run / stale / "x").write_text("partial")
    (run / ".config.yaml.abcd1234.tmp").write_text("partial")
    (run / ".notes.tmp").write_text("mine")
    with open(run / METRICS_FILE, "a") as f:
        f.write('{"step": 6, "lo')  # the last line, cut short
    resumed = train(cfg(data_dir, *settings), run, resume=True)
    assert "step_000005" in caplog.text and "trying the previous checkpoint" in caplog.text
    a, b = _adapter(full_run), _adapter(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    leftovers = [p.name for p in run.rglob("*") if p.name.endswith((".tmp", ".old")) and p.name != ".notes.tmp"]
    assert leftovers == [] and (run / ".notes.tmp").read_text() == "mine"
    steps = [json.loads(line)["step"] for line in (run / METRICS_FILE).read_text().splitlines()]
    assert steps == [0, 1, 2, 3, 4, 5, 6]
    assert {p.name for p in (run / CHECKPOINTS_DIR).iterdir()} == {"step_000005", "step_000006"}
    umask = os.umask(0)
    os.umask(umask)
    assert (run / CONFIG_FILE).stat().st_mode & 0o777 == 0o666 & ~umask
    assert (run / ADAPTER_DIR).stat().st_mode & 0o777 == 0o777 & ~umask


def test_resume_may_extend_total_steps_and_records_the_amendment(tmp_path, data_dir, full_run):
    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    before = (run / CONFIG_FILE).read_text()
    extended = train(cfg(data_dir, "trainer.total_steps=9"), run, resume=True)
    manifest = json.loads((extended / MANIFEST).read_text())
    assert manifest["status"] == "finished" and manifest["budget"]["optimizer_steps"] == 9
    assert [a["changed"] for a in manifest["amendments"]] == [{"trainer.total_steps": [6, 9]}]
    assert before != (run / CONFIG_FILE).read_text() and "total_steps: 9" in (run / CONFIG_FILE).read_text()
    steps = [json.loads(line)["step"] for line in (run / METRICS_FILE).read_text().splitlines()]
    assert steps == list(range(10))
    fresh = train(cfg(data_dir, "trainer.total_steps=9"), tmp_path / "fresh")
    a, b = _adapter(fresh), _adapter(extended)
    assert all(torch.equal(a[k], b[k]) for k in a)  # extending continues exactly where the run ended
