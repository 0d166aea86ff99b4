"""Shared fixtures: the real data files beside the repo, the tiny model and the tiny experiment; and
how pytest-xdist workers (scripts/test.sh runs two) share what is expensive to build."""
from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import shutil
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


@pytest.fixture
def statsmodels_holm(monkeypatch):
    """statsmodels' Holm-adjusted p-values of one family (the statistics tests' reference).
    `multipletests` calls `gc.collect()` on every call, 0.3 s in a test worker that holds models; that
    collection changes no result."""
    import gc

    from statsmodels.stats import multitest  # a test dependency (pyproject [test])
    monkeypatch.setattr(gc, "collect", lambda *args: 0)
    return lambda p: multitest.multipletests(p, method="holm")[1]


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # one torch thread per worker: the workers share the cores
        import torch
        torch.set_num_threads(1)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under `--dist loadgroup`, the tests that use a module-scoped fixture run on one worker, so that
    the fixture is built once; every other test goes to whichever worker is free (xdist hands out the
    largest groups first, then single tests in this order): one test that needs the tiny experiment,
    so that one worker builds it while the other runs the `slow` ones (the longest: SmolLM2, the
    design's rehearsals), which come next so that no worker ends alone on one."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)
        if defs and any(d.scope == "module" for fds in defs.name2fixturedefs.values() for d in fds):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    builder = next((item for item in items if "tiny_experiment" in getattr(item, "fixturenames", ())
                    and not item.get_closest_marker("xdist_group")), None)
    items.sort(key=lambda item: (item is not builder, item.get_closest_marker("slow") is None))


def pytest_sessionstart(session):
    """`--dist loadgroup` tells the scheduler a test's group by appending it to the test's node id
    (`item._nodeid`); from pytest 9.2 a node id no longer reads it (pytest-dev/pytest-xdist#1386) and
    the grouping silently stops, each worker building every module-scoped fixture. Checked on the
    controller, on a node of this pytest, before any worker starts."""
    if os.environ.get("PYTEST_XDIST_WORKER") or session.config.getoption("dist", "no") != "loadgroup":
        return
    before = session.nodeid
    session._nodeid = f"{before}@probe"
    grouped = session.nodeid == f"{before}@probe"
    session._nodeid = before
    if not grouped:
        raise pytest.UsageError(f"pytest {pytest.__version__}: pytest-xdist's --dist loadgroup does not group "
                                f"here; install the pytest that pyproject.toml's [test] allows")


def built_once(tmp_path_factory, name: str, build) -> Path:
    """`build(out)` done once per test session: by the first xdist worker that asks (the others wait
    for it), each worker then using a copy of its own."""
    out = tmp_path_factory.mktemp(name) / "exp"
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        build(out)
        return out
    base = tmp_path_factory.getbasetemp()
    shared = base.parent / name  # the session's directory, which holds every worker's basetemp
    with open(base.parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "done").exists():
            shutil.rmtree(shared, ignore_errors=True)  # a build that failed in another worker
            build(shared / "exp")
            (shared / "done").touch()
    shutil.copytree(shared / "exp", out)
    for beside in shared.iterdir():  # what the build wrote beside the experiment (its captured output)
        if beside.is_file() and beside.name != "done":
            shutil.copy(beside, out.parent / beside.name)
    return out


@pytest.fixture(scope="session")
def tiny_experiment(tmp_path_factory):
    """`metasft run configs/tiny/experiment.yaml`, finished once; tests rerun copies of it."""
    from metasft.cli import main

    def build(out):
        with captured(out.parent / RUN_OUTPUT):
            assert main(["run", str(CONFIGS / "tiny" / "experiment.yaml"), "--out", str(out)]) == 0
    return built_once(tmp_path_factory, "pipeline", build)


def killed_after_training(finished: Path, out: Path) -> None:
    """`out`: a copy of the finished tiny experiment as `metasft run` leaves it when killed after its
    first arms: data, train/base and train/fomaml finished; train/sft_mixed and what follows not begun."""
    import json

    from metasft.rundir import EVAL_DIR, MANIFEST, REPORT_DIR, RUNS_DIR
    shutil.copytree(finished, out)
    record = json.loads((out / MANIFEST).read_text())
    for stage in ("train/sft_mixed", "eval", "similarity", "report"):
        del record["stages"][stage]
    (out / MANIFEST).write_text(json.dumps(record))
    for written in (out / RUNS_DIR / "sft_mixed", out / EVAL_DIR, out / REPORT_DIR):
        shutil.rmtree(written)


RUN_OUTPUT = "run_output.txt"  # beside the tiny experiment: what its `metasft run` printed


@contextlib.contextmanager
def captured(path: Path):
    """stdout, stderr and metasft's INFO log lines (as the CLI prints them off a terminal) into `path`."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    package = logging.getLogger("metasft")
    level = package.level
    package.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield
    finally:
        logging.getLogger().removeHandler(handler)
        package.setLevel(level)
        path.write_text(buffer.getvalue())


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
