"""The results store: atomic groups, reopening, concurrent writers, a killed evaluation resuming, and the
union of an evaluation's shard stores."""
from __future__ import annotations

import json
import multiprocessing
import re
import sqlite3

import pandas as pd
import pytest

from metasft.eval.results import (ResultsError, ResultsStore, ResultsUnion, read_results, readable_store, store_file,
                                  store_paths)
from metasft.rundir import ADAPTER_DIR, EVAL_DIR, RESULTS_FILE


def _group(model="m", task="t", n_shots=5, seed=0, steps=(0, 10), questions=("q1", "q2")):
    key = {"model": model, "task": task, "n_shots": n_shots, "seed": seed}
    cells = [{**key, "step": s, "accuracy": 0.5, "loss": 1.25, "n": len(questions), "n_correct": 1, "n_timed_out": 0,
              "reasoning_steps": 3.0, "step_correctness": None, "accuracy_ll": 0.5 if task == "c" else None,
              "acc_at_k": None} for s in steps]
    preds = [{**key, "step": s, "question_id": q, "prompt": f"prompt {q}", "output": f"out {q} {s}",
              "extracted": None if i else "7", "gold": "7", "correct": i == 0, "timed_out": False,
              "shot_ids": ["a", "b"], "reasoning_steps": 3, "step_correctness": None, "ll_choice": None}
             for s in steps for i, q in enumerate(questions)]
    return key, cells, preds


def test_write_reopen_and_read(tmp_path):
    path = tmp_path / RESULTS_FILE
    with ResultsStore(path) as store:
        key, cells, preds = _group()
        store.write_group(**key, cells=cells, predictions=preds)
        key2, cells2, preds2 = _group(model="m2", n_shots=0, steps=(0,))
        store.write_group(**key2, cells=cells2, predictions=preds2)
    with ResultsStore(path) as store:
        assert store.is_done("m", "t", 5, 0) and store.is_done("m2", "t", 0, 0)
        assert not store.is_done("m", "t", 5, 1) and not store.is_done("m", "t", 0, 0)
        assert store.done_groups() == {("m", "t", 5, 0), ("m2", "t", 0, 0)}
        c = store.cells()
        p = store.predictions(model="m")
    assert len(c) == 3 and c["step"].tolist() == [0, 10, 0]
    assert c["step_correctness"].isna().all() and c["loss"].tolist() == [1.25] * 3
    assert len(p) == 4 and p["correct"].tolist() == [True, False, True, False]
    assert p["shot_ids"].iloc[0] == ["a", "b"] and p["extracted"].tolist() == ["7", None, "7", None]


def test_a_store_cut_short_is_not_readable(tmp_path):
    """`metasft run` reads a finished evaluation's store this way before skipping the stage (issue 23's
    corpus: a store cut in half was skipped over, and the old verdicts printed)."""
    path = tmp_path / RESULTS_FILE
    with ResultsStore(path) as store:
        for seed in range(20):
            key, cells, preds = _group(seed=seed, questions=[f"q{i}" for i in range(20)])
            store.write_group(**key, cells=cells, predictions=preds)
    assert readable_store(path)
    whole = path.read_bytes()
    for p in tmp_path.glob("results.sqlite-*"):
        p.unlink()
    path.write_bytes(whole[: len(whole) // 2])
    assert not readable_store(path)
    path.write_bytes(b"not a database" * 100)
    assert not readable_store(path)


@pytest.mark.parametrize("edit, message", [
    ("DELETE FROM predictions WHERE model = 'm2'", "cell model=m2, task=t, n_shots=0, seed=0, step=0 has n=2 and no predictions"),
    ("DELETE FROM predictions WHERE model = 'm' AND step = 10 AND question_id = 'q1'",
     "cell model=m, task=t, n_shots=5, seed=0, step=10 has n=2 and 1 predictions"),
    ("DELETE FROM predictions", "cell model=m, task=t, n_shots=5, seed=0, step=0 has n=2 and no predictions"),
    ("DELETE FROM cells WHERE model = 'm' AND step = 0", "cell model=m, task=t, n_shots=5, seed=0, step=0 has no cell and 2"),
])
def test_a_store_edited_after_it_was_written_is_refused_not_read(tmp_path, edit, message):
    """A group is stored whole; a store missing some of a cell's predictions (or a cell) would change
    the report's verdicts without a word (issue 23's corpus), so reading it is an error naming the cell."""
    path = tmp_path / RESULTS_FILE
    with ResultsStore(path) as store:
        store.write_group(**_group()[0], cells=_group()[1], predictions=_group()[2])
        key2, cells2, preds2 = _group(model="m2", n_shots=0, steps=(0,))
        store.write_group(**key2, cells=cells2, predictions=preds2)
    assert len(read_results([path])[1]) == 6
    with sqlite3.connect(path) as db:
        db.execute(edit)
    db.close()
    with pytest.raises(ResultsError, match=re.escape(message)):
        read_results([path])


def test_group_is_written_once_and_whole(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        key, cells, preds = _group()
        store.write_group(**key, cells=cells, predictions=preds)
        with pytest.raises(ResultsError, match="already done"):
            store.write_group(**key, cells=cells, predictions=preds)
        # a failure inside the transaction (a repeated question) leaves neither rows nor a done mark
        key, cells, preds = _group(seed=1)
        with pytest.raises(sqlite3.IntegrityError):
            store.write_group(**key, cells=cells, predictions=preds + preds[:1])
        assert not store.is_done(**key)
        assert len(store.cells(seed=1)) == 0 and len(store.predictions(seed=1)) == 0
        # rows of another group or of a step without a cell are refused before writing
        with pytest.raises(ResultsError, match="does not belong"):
            store.write_group(**{**key, "seed": 2}, cells=cells, predictions=preds)
        with pytest.raises(ResultsError, match="no cell row"):
            store.write_group(**key, cells=cells[:1], predictions=preds)


def test_meta_mismatch_is_refused(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.check_meta("settings", {"lr": 1e-4})
        store.check_meta("settings", {"lr": 1e-4})
        with pytest.raises(ResultsError, match="new output directory"):
            store.check_meta("settings", {"lr": 2e-4})


def _writer(path, worker: int, n: int) -> None:
    with ResultsStore(path) as store:
        for seed in range(n):
            key, cells, preds = _group(model=f"w{worker}", seed=seed)
            store.write_group(**key, cells=cells, predictions=preds)


def test_concurrent_writers(tmp_path):
    path = tmp_path / "r.sqlite"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 15)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    with ResultsStore(path) as store:
        assert len(store.done_groups()) == 45
        assert len(store.cells()) == 90 and len(store.predictions()) == 180


# ----------------------------------------------------------------------------------------- resume
class Interrupt(Exception):
    pass


def test_killed_evaluation_resumes_without_redoing_finished_groups(tmp_path):
    from tiny_eval import tiny_config, write_adapter, write_data_dir  # the tiny setup (tests/eval)

    from metasft.eval import protocols as P
    from metasft.eval import schedule as G
    from metasft.eval import specs as S
    from metasft.eval.generate import HFBackend

    data = write_data_dir(tmp_path / "data")
    models = [S.ModelSpec("base"), S.ModelSpec("tuned", write_adapter(tmp_path / ADAPTER_DIR))]
    cfg = tiny_config(seeds=[0], record_steps=[0, 2])
    out = tmp_path / EVAL_DIR
    groups = G.enumerate_groups(models, {"arith": [0, 2], "mcq": [0, 2]}, [0])

    first: list = []

    def die_after_five(group):
        first.append(group)
        if len(first) == 5:
            raise Interrupt  # as if the job were killed right after storing its 5th group

    with pytest.raises(Interrupt):
        P.run_eval(cfg, data, models, out, after_group=die_after_five)
    with ResultsStore(out / RESULTS_FILE) as store:
        finished = store.done()
    assert len(finished) == 5

    calls = []
    original = HFBackend.complete

    def counting(self, prompts, max_new_tokens):
        calls.append(len(prompts))
        return original(self, prompts, max_new_tokens)

    second: list = []
    try:
        HFBackend.complete = counting
        P.run_eval(cfg, data, models, out, after_group=second.append)
    finally:
        HFBackend.complete = original
    assert first == groups[:5] and second == groups[5:]
    # the 3 remaining groups are few-shot: steps 0 (the stored 0-shot result) and 2 -> one generation each
    assert len(calls) == 3

    with ResultsStore(out / RESULTS_FILE) as store:
        done = store.done()
        cells = store.cells()
        preds = store.predictions()
    assert len(done) == len(groups)
    kept = done.merge(finished, on=["model", "task", "n_shots", "seed"], suffixes=("", "_before"))
    assert (kept["finished_at"] == kept["finished_at_before"]).all()  # not rewritten
    assert len(cells) == 4 + 4 * 2 and len(preds) == len(cells) * 3

    # a third run finds nothing to do and loads no model
    P.run_eval(cfg, data, models, out, after_group=lambda g: pytest.fail("recomputed a finished group"))
    # changed settings are refused rather than mixed into the same table
    with pytest.raises(ResultsError, match="settings"):
        P.run_eval(tiny_config(seeds=[0], record_steps=[0, 2], adaptation_lr=0.5), data, models, out)


def test_a_store_from_before_per_question_losses_gains_the_columns(tmp_path):
    """Written by an older metasft (predictions without loss, loss_tokens): reopening adds them, old
    rows read NaN there, and new groups store them."""
    path = tmp_path / RESULTS_FILE
    with sqlite3.connect(path) as con:
        con.execute("""CREATE TABLE predictions (model TEXT NOT NULL, task TEXT NOT NULL, n_shots INTEGER NOT NULL,
            seed INTEGER NOT NULL, step INTEGER NOT NULL, question_id TEXT NOT NULL, prompt TEXT NOT NULL,
            output TEXT NOT NULL, extracted TEXT, gold TEXT NOT NULL, correct INTEGER NOT NULL,
            timed_out INTEGER NOT NULL, shot_ids TEXT NOT NULL, reasoning_steps INTEGER, step_correctness REAL,
            ll_choice TEXT, PRIMARY KEY (model, task, n_shots, seed, step, question_id))""")
        con.execute("INSERT INTO predictions VALUES ('old', 't', 0, 0, 0, 'q1', 'p', 'o', NULL, '7', 1, 0, '[]', "
                    "NULL, NULL, NULL)")
    con.close()
    with ResultsStore(path) as store:
        key, cells, preds = _group()
        preds = [{**p, "loss": 0.5 + i, "loss_tokens": 4} for i, p in enumerate(preds)]
        store.write_group(**key, cells=cells, predictions=preds)
        frame = store.predictions()
    assert frame.loc[frame["model"] == "old", "loss"].isna().all()
    assert frame.loc[frame["model"] == "m", "loss"].tolist() == [0.5, 1.5, 2.5, 3.5]


def _graded_group(**kw):
    """`_group` with both gradings: q1 right by its last number only, q2 cut off and looping."""
    key, cells, preds = _group(**kw)
    cells = [{**c, "accuracy": 0.0, "n_correct": 0, "accuracy_strict": 0.0, "accuracy_flexible": 0.5,
              "n_truncated": 1, "n_repeating": 1} for c in cells]
    flags = {"q1": (False, True, False, False), "q2": (False, False, True, True)}
    preds = [{**p, "correct": False, **dict(zip(("correct_strict", "correct_flexible", "truncated", "repeating"),
                                                flags[p["question_id"]]))} for p in preds]
    return key, cells, preds


def test_both_gradings_round_trip(tmp_path):
    """The strict and flexible verdicts, the cut-off and looping flags of each prediction and their
    cell aggregates come back as written: from the store, the report's reader and an export."""
    from metasft.eval.results import export_predictions
    key, cells, preds = _graded_group()
    with ResultsStore(tmp_path / RESULTS_FILE) as store:
        store.write_group(**key, cells=cells, predictions=preds)
        c, p = store.cells(), store.predictions()
        export_predictions(store, tmp_path / "out.jsonl")
    assert c["accuracy_strict"].tolist() == [0.0, 0.0] and c["accuracy_flexible"].tolist() == [0.5, 0.5]
    assert c["n_truncated"].tolist() == [1, 1] and c["n_repeating"].tolist() == [1, 1]
    columns = ["correct", "correct_strict", "correct_flexible", "truncated", "repeating"]
    assert p[columns].to_dict("records")[:2] == [
        dict(zip(columns, (False, False, True, False, False))), dict(zip(columns, (False, False, False, True, True)))]
    assert all(p[column].dtype == bool for column in columns)
    cells_read, _ = read_results([tmp_path / RESULTS_FILE])
    assert cells_read["accuracy_flexible"].tolist() == [0.5, 0.5] and cells_read["n_truncated"].tolist() == [1, 1]
    exported = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["correct_flexible"], r["truncated"], r["repeating"]) for r in exported[:2]] == [
        (True, False, False), (False, True, True)]


def test_a_store_from_before_the_gradings_gains_the_columns(tmp_path):
    """A store written before strict / flexible grading reads (read-only too) with those columns empty,
    and reopened for writing gains them."""
    path = tmp_path / RESULTS_FILE
    with ResultsStore(path) as store:
        key, cells, preds = _group(model="old")
        store.write_group(**key, cells=cells, predictions=preds)
    with sqlite3.connect(path) as con:
        for table, columns in (("cells", ("accuracy_strict", "accuracy_flexible", "n_truncated", "n_repeating")),
                               ("predictions", ("correct_strict", "correct_flexible", "truncated", "repeating"))):
            for column in columns:
                con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    con.close()
    with ResultsUnion([path]) as old:
        assert old.cells()["accuracy_strict"].isna().all()
        assert old.predictions()["correct_strict"].tolist() == [None] * 4
    assert read_results([path])[0]["accuracy"].tolist() == [0.5, 0.5]
    with ResultsStore(path) as store:
        key, cells, preds = _graded_group()
        store.write_group(**key, cells=cells, predictions=preds)
        c, p = store.cells(), store.predictions()
    assert c.loc[c["model"] == "old", "n_truncated"].isna().all()
    assert c.loc[c["model"] == "m", "n_truncated"].eq(1).all()
    assert p.loc[p["model"] == "m", "truncated"].tolist() == [False, True, False, True]
    assert p.loc[p["model"] == "old", "truncated"].tolist() == [None] * 4


# ----------------------------------------------------------------------------------------- shards
def test_the_stores_of_an_evaluation_read_as_one(tmp_path):
    """One store per worker (results.shard-<k>.sqlite): the union gives what one store with every
    group gives, in the same order; `read_results` (the report's reader) gives the same rows."""
    groups = [_group(model=m, seed=s) for m in ("a", "b") for s in (0, 1)]
    with ResultsStore(tmp_path / "one" / store_file(0, 1)) as one:
        for key, cells, preds in groups:
            one.write_group(**key, cells=cells, predictions=preds, meta={"settings": 1})
        whole_cells, whole_preds = one.cells(), one.predictions()
    shards = tmp_path / "sharded"
    for i, (key, cells, preds) in enumerate(groups):
        with ResultsStore(shards / store_file(i % 3, 3)) as store:
            store.write_group(**key, cells=cells, predictions=preds, meta={"settings": 1})
    assert [p.name for p in store_paths(shards)] == [f"results.shard-{k}.sqlite" for k in range(3)]
    assert store_paths(tmp_path / "one") == [tmp_path / "one" / RESULTS_FILE]
    with ResultsUnion(store_paths(shards)) as union:
        assert union.done_groups() == {tuple(k.values()) for k, _, _ in groups}
        assert union.is_done("b", "t", 5, 1) and not union.is_done("b", "t", 5, 2)
        pd.testing.assert_frame_equal(union.cells(), whole_cells)
        pd.testing.assert_frame_equal(union.predictions(), whole_preds)
        pd.testing.assert_frame_equal(union.predictions(model="b", seed=0), whole_preds[
            (whole_preds["model"] == "b") & (whole_preds["seed"] == 0)].reset_index(drop=True))
    cells, preds = read_results(store_paths(shards))
    pd.testing.assert_frame_equal(cells, read_results(store_paths(tmp_path / "one"))[0])
    assert len(preds) == len(whole_preds) and preds["question_id"].tolist() == whole_preds["question_id"].tolist()


def test_a_group_in_two_stores_or_stores_of_two_settings_are_refused(tmp_path):
    key, cells, preds = _group()
    for k in (0, 1):
        with ResultsStore(tmp_path / "dup" / store_file(k, 2)) as store:
            store.write_group(**key, cells=cells, predictions=preds)
    message = r"group model=m, task=t, n_shots=5, seed=0 is stored twice, in .*results.shard-0.sqlite and " \
              r".*results.shard-1.sqlite"
    with pytest.raises(ResultsError, match=message):
        ResultsUnion(store_paths(tmp_path / "dup"))
    with pytest.raises(ResultsError, match=message):
        read_results(store_paths(tmp_path / "dup"))
    for k, lr in ((0, 1e-4), (1, 2e-4)):
        key, cells, preds = _group(seed=k)
        with ResultsStore(tmp_path / "meta" / store_file(k, 2)) as store:
            store.write_group(**key, cells=cells, predictions=preds, meta={"settings": {"lr": lr}})
    with pytest.raises(ResultsError, match="results.shard-0.sqlite and .*results.shard-1.sqlite were written with "
                                           "different settings"):
        ResultsUnion(store_paths(tmp_path / "meta"))
