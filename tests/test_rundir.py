"""Run-directory files: strict JSON; one writer per directory; what a command may remove (issue 23)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from metasft.rundir import (CHECKPOINTS_DIR, CONFIG_FILE, LOCK, REPORT_DIR, REPORT_MD, JsonlWriter, OutputDir,
                            lock_dir, remove_owned, unlock_dir, write_json)


def _strict_load(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def test_json_files_are_strict(tmp_path):
    obj = {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "np": np.float32(0.5), "nested": [np.inf, 1.0]}
    write_json(tmp_path / "a.json", obj)
    assert _strict_load((tmp_path / "a.json").read_text()) == {
        "nan": None, "inf": "inf", "ninf": "-inf", "np": 0.5, "nested": ["inf", 1.0]}
    log = JsonlWriter(tmp_path / "m.jsonl")
    log.write({"step": 1, "loss": math.nan})
    log.close()
    assert _strict_load((tmp_path / "m.jsonl").read_text()) == {"step": 1, "loss": None}


# ------------------------------------------------------------------ one writer per directory (issue 23)
def _lock_in_child(directory) -> subprocess.CompletedProcess:
    code = ("import sys; from metasft.rundir import lock_dir, DirectoryInUse\n"
            "try:\n    lock_dir(sys.argv[1])\nexcept DirectoryInUse as e:\n    print(e); sys.exit(2)\n")
    return subprocess.run([sys.executable, "-c", code, str(directory)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})


def test_a_second_process_cannot_lock_a_held_directory_and_learns_who_holds_it(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    key = lock_dir(tmp_path)
    try:
        assert lock_dir(tmp_path) == key  # re-entrant: a command's stages lock what it holds
        unlock_dir(key)
        child = _lock_in_child(tmp_path)
        assert child.returncode == 2, child.stderr
        assert f"pid {os.getpid()} (metasft" in child.stdout and "another metasft process" in child.stdout
    finally:
        unlock_dir(key)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]  # the lock file goes with the lock
    assert _lock_in_child(tmp_path).returncode == 0


def test_the_lock_of_a_killed_holder_is_free(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from metasft.rundir import lock_dir; "
                               "lock_dir(sys.argv[1]); print('held', flush=True); time.sleep(60)", str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert holder.stdout.readline().strip() == "held"
    assert _lock_in_child(tmp_path).returncode == 2
    holder.kill()
    holder.wait()
    assert _lock_in_child(tmp_path).returncode == 0  # the kernel dropped it; the stale file is reused


def test_an_output_directory_is_locked_while_its_command_runs(tmp_path):
    out = tmp_path / "new"
    with OutputDir(out, "data"):
        assert (out / LOCK).is_file()
        child = _lock_in_child(out)
        assert child.returncode == 2 and f"pid {os.getpid()}" in child.stdout
    assert not out.exists()  # nothing committed: the directory it created is gone again


def test_a_failed_command_after_overwrite_puts_the_old_directory_back(tmp_path):
    out = tmp_path / "d"
    (out / "drafts").mkdir(parents=True)
    (out / "notes.txt").write_bytes(b"mine\x00\xff")
    (out / "drafts" / "v1.md").write_text("draft")
    before = _tree(out)
    with pytest.raises(ValueError):
        with OutputDir(out, "data", overwrite=True):
            assert not (out / "notes.txt").exists()  # moved aside while the command runs
            (out / "half.parquet").write_text("half")
            raise ValueError("the command failed")
    assert _tree(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no d.old-<time> left behind


def test_remove_owned_keeps_what_it_does_not_own(tmp_path):
    (tmp_path / CHECKPOINTS_DIR / "step_000001").mkdir(parents=True)
    (tmp_path / CHECKPOINTS_DIR / "step_000001" / "state.pt").write_text("x")
    (tmp_path / CONFIG_FILE).write_text("x")
    (tmp_path / "my_notes.txt").write_text("mine")
    assert remove_owned(tmp_path, ["checkpoints", CONFIG_FILE, "adapter"]) == ["my_notes.txt"]
    assert remove_owned(tmp_path, ["my_notes.txt"]) == [] and not tmp_path.exists()


def test_remove_owned_removes_nothing_outside_its_directory(tmp_path):
    """A damaged or hand-edited manifest listing ../ paths (issue 23's corpus) deletes nothing outside."""
    (tmp_path / REPORT_DIR).mkdir()
    (tmp_path / REPORT_DIR / REPORT_MD).write_text("x")
    (tmp_path / CONFIG_FILE).write_text("the run's")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "mine.txt").write_text("the user's")
    (tmp_path / REPORT_DIR / "link").symlink_to(tmp_path / "elsewhere")
    owned = [REPORT_MD, "../config.yaml", "../elsewhere/mine.txt", "link/mine.txt", str(tmp_path / CONFIG_FILE), ".."]
    assert remove_owned(tmp_path / REPORT_DIR, owned) == ["link"]
    assert (tmp_path / CONFIG_FILE).read_text() == "the run's"
    assert (tmp_path / "elsewhere" / "mine.txt").read_text() == "the user's"


def _tree(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else "dir" for p in sorted(root.rglob("*"))}
