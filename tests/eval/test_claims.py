"""Claims (issue 14): workers writing into one evaluation directory never evaluate or store the same
group; a live worker's claim is left alone, a killed worker's claim is taken over."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
from collections import namedtuple

import pytest

from metasft.eval.claims import CLAIMS_DIR, Claims, claim_name
from metasft.eval.results import ResultsStore, ResultsUnion, store_file, store_paths
from metasft.manifests import started_record
from metasft.rundir import EVAL_DIR, OutputDir

# eval.schedule.Group's fields, without its torch import in every spawned racer
Group = namedtuple("Group", "model task n_shots seed")
GROUPS = [Group(m, t, n, s) for m in ("a", "b/c") for t in ("t1", "t 2") for n in (0, 5) for s in (0, 1, 2)]


def _rows(g: Group) -> dict:
    key = {"model": g.model, "task": g.task, "n_shots": g.n_shots, "seed": g.seed}
    cell = {**key, "step": 0, "accuracy": 1.0, "loss": 0.5, "n": 1, "n_correct": 1, "n_timed_out": 0}
    pred = {**key, "step": 0, "question_id": "q", "prompt": "p", "output": "o", "gold": "7", "correct": True,
            "timed_out": False, "shot_ids": []}
    return dict(**key, cells=[cell], predictions=[pred])


def _claiming_worker(out, worker: int, workers: int, barrier) -> None:
    """What run_eval does per group: claim it, skip it if any store holds it, store it, release it."""
    claims = Claims(out, worker=f"w{worker}")
    with ResultsStore(out / store_file(worker, workers)) as store:
        barrier.wait()
        for group in GROUPS:
            if not claims.take(group):
                continue
            with ResultsUnion(store_paths(out)) as stored:
                done = stored.is_done(group.model, group.task, group.n_shots, group.seed)
            if not done:
                store.write_group(**_rows(group))
            claims.release(group)


def test_racing_workers_store_each_group_exactly_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_claiming_worker, args=(tmp_path, w, 4, barrier)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    counts = []
    for path in store_paths(tmp_path):
        with ResultsStore(path) as store:
            counts.append(len(store.done_groups()))
    assert sum(counts) == len(GROUPS)  # each group stored once over all stores
    with ResultsUnion(store_paths(tmp_path)) as stored:  # refuses a group stored twice
        assert stored.done_groups() == {(g.model, g.task, g.n_shots, g.seed) for g in GROUPS}
    assert not list((tmp_path / CLAIMS_DIR).iterdir())


def _hold_claim(out, group, ready, die) -> None:
    Claims(out, worker="holder").take(group)
    ready.set()
    die.wait(60)


def test_a_live_claim_is_left_alone_and_a_killed_workers_claim_is_taken_over(tmp_path):
    group = GROUPS[3]
    ctx = multiprocessing.get_context("spawn")
    ready, die = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_claim, args=(tmp_path, group, ready, die))
    holder.start()
    assert ready.wait(60)
    held = json.loads((tmp_path / CLAIMS_DIR / claim_name(group)).read_text())
    assert held["worker"] == "holder" and held["pid"] == holder.pid
    claims = Claims(tmp_path, worker="me")
    assert not claims.take(group)  # its holder lives
    assert claims.take(GROUPS[4])  # other groups are free
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(60)
    assert claims.take(group)  # the kernel dropped the dead holder's lock
    assert json.loads((tmp_path / CLAIMS_DIR / claim_name(group)).read_text())["worker"] == "me"
    claims.release_all()
    assert not list((tmp_path / CLAIMS_DIR).iterdir())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tiny_eval import base_and_tuned  # the shared tiny setup (tests/eval)
    return base_and_tuned(tmp_path_factory.mktemp("claims"))


def test_groups_a_live_worker_claimed_are_left_to_it(setup, tmp_path):
    from tiny_eval import tiny_config

    from metasft.eval import protocols as P
    from metasft.eval import schedule as G
    _, data, models = setup
    out = tmp_path / EVAL_DIR
    OutputDir(out, "eval", lock=False).start(started_record("eval"))  # the directory of the evaluation that holds the claims
    groups = G.enumerate_groups(models, {"arith": [0, 2], "mcq": [0, 2]}, [0])
    other = Claims(out, worker="another evaluation")  # its own locks: another worker for run_eval's claims
    held = [groups[1], groups[5]]
    assert all(other.take(g) for g in held)
    stored: list = []
    P.run_eval(tiny_config(seeds=[0]), data, models, out, after_group=stored.append)
    assert stored == [g for g in groups if g not in held]
    assert P.unfinished_groups(tiny_config(seeds=[0]), data, models, out) == held
    other.release_all()
    P.run_eval(tiny_config(seeds=[0]), data, models, out, after_group=stored.append)
    assert sorted(stored) == sorted(groups) and not P.unfinished_groups(tiny_config(seeds=[0]), data, models, out)


def _evaluating_worker(data, models, out, barrier, seen_file) -> None:
    from tiny_eval import tiny_config

    from metasft.eval import protocols as P
    from metasft.eval import schedule as G
    seen: list = []
    barrier.wait()
    P.run_eval(tiny_config(seeds=[0, 1]), data, models, out, shard=G.Shard(0, 2), after_group=seen.append)
    seen_file.write_text(json.dumps([[g.model, g.task, g.n_shots, g.seed] for g in seen]))


def test_two_workers_of_one_shard_split_its_groups(setup, tmp_path):
    """A resubmitted array task while its old self still runs: two processes, the same shard and store."""
    from metasft.eval import schedule as G
    _, data, models = setup
    out = tmp_path / EVAL_DIR
    OutputDir(out, "eval", lock=False).start(started_record("eval"))  # as metasft launch does before its workers start
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_evaluating_worker, args=(data, models, out, barrier, tmp_path / f"seen{i}.json"))
             for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0]  # a group stored twice in one store would raise
    seen = [{tuple(g) for g in json.loads((tmp_path / f"seen{i}.json").read_text())} for i in range(2)]
    share = G.Shard(0, 2).share(G.enumerate_groups(models, {"arith": [0, 2], "mcq": [0, 2]}, [0, 1]))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == {(g.model, g.task, g.n_shots, g.seed) for g in share}
    with ResultsUnion(store_paths(out)) as stored:
        assert len(stored.done_groups()) == len(share)
