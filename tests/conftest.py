"""Shared fixtures: the real data files beside the repo, and the tiny model."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def shared_data_dir() -> Path:
    return Path(os.environ.get("METASFT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "SOURCES.md").is_file():
        pytest.skip(f"real data files not found at {path} (set METASFT_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer): a 2-layer Llama with the real SmolLM2 tokenizer."""
    from metasft.models import tiny_llama
    return tiny_llama()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """The tiny FOMAML config's data (embedded source), built once for the training tests."""
    from metasft.config import load_config
    from metasft.data.build import build_data
    out = tmp_path_factory.mktemp("data")
    build_data(load_config(CONFIGS / "tiny" / "fomaml_sft.yaml"), out)
    return out


@pytest.fixture(scope="session")
def tiny_experiment(tmp_path_factory):
    """`metasft run configs/tiny/experiment.yaml`, finished once; tests rerun copies of it."""
    from metasft.cli import main
    out = tmp_path_factory.mktemp("pipeline") / "exp"
    assert main(["run", str(CONFIGS / "tiny" / "experiment.yaml"), "--out", str(out)]) == 0
    return out


class Killed(Exception):
    pass


def killed_after(step_to_die: int, run_once):
    """Run `run_once()` with the process 'killed' right after training step `step_to_die` is logged."""
    from metasft.train import session as session_mod
    real_end = session_mod.Session.end_step

    def dying(self, step, row, extra):
        real_end(self, step, row, extra)
        if step == step_to_die:
            raise Killed()

    session_mod.Session.end_step = dying
    try:
        with pytest.raises(Killed):
            run_once()
    finally:
        session_mod.Session.end_step = real_end
