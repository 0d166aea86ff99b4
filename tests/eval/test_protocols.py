"""Protocol A on a tiny model and data directory: paired shots, in-place adapter restore, 0-shot cells,
per-question losses and the rank split."""
from __future__ import annotations

import re

import pytest
import torch
from tiny_eval import base_and_tuned, tiny_config, write_adapter  # the shared tiny setup (tests/eval)

from metasft.eval import adaptation as A
from metasft.eval import evaluator as E
from metasft.eval import protocols as P
from metasft.eval import schedule as G
from metasft.eval import specs as S
from metasft.eval import tasks as T
from metasft.eval.results import ResultsStore, ResultsUnion, store_paths
from metasft.models import adapter_state, add_lora, tiny_llama
from metasft.rundir import ADAPTER_DIR, BEST_ADAPTER_DIR, CONFIG_FILE, EVAL_CONFIG, EVAL_LOG, RESULTS_FILE

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return base_and_tuned(tmp_path_factory.mktemp("eval"))


@pytest.fixture(scope="module")
def full_run(setup):
    root, data, models = setup
    out = P.run_eval(tiny_config(), data, models, root / "full")
    with ResultsStore(out / RESULTS_FILE) as store:
        return out, store.cells(), store.predictions()


# ----------------------------------------------------------------------------------------- unit pieces
def test_shot_indices_are_seeded_nested_and_model_free():
    a = G.shot_indices("arith", 5, seed=0, pool_size=50)
    assert a == G.shot_indices("arith", 5, seed=0, pool_size=50)
    assert G.shot_indices("arith", 20, seed=0, pool_size=50)[:5] == a  # nested
    assert a != G.shot_indices("arith", 5, seed=1, pool_size=50)
    assert a != G.shot_indices("mcq", 5, seed=0, pool_size=50)
    assert len(set(a)) == 5
    with pytest.raises(S.EvalError):
        G.shot_indices("arith", 51, seed=0, pool_size=50)


def test_recorded_steps_include_zero_and_last():
    assert G.recorded_steps([10, 25, 200], 100) == [0, 10, 25, 100]


def test_groups_split_across_ranks_exactly_once():
    models = [S.ModelSpec("a"), S.ModelSpec("b", tasks=["t2"])]
    groups = G.enumerate_groups(models, {"t1": [0, 5], "t2": [0, 5, 10]}, seeds=[0, 1, 2])
    assert groups[:3] == [G.Group("a", "t1", 0, 0), G.Group("a", "t2", 0, 0), G.Group("b", "t2", 0, 0)]
    assert len(groups) == 3 + 3 * (1 + 2 + 2)
    shares = [G.rank_share(groups, r, 3) for r in range(3)]
    flat = [g for s in shares for g in s]
    assert sorted(flat) == sorted(groups) and len(set(flat)) == len(groups)
    assert G.enumerate_groups(models, {"t1": [0, 5], "t2": [0, 5, 10]}, seeds=[0, 1, 2]) == groups  # fixed order
    zero = G.enumerate_groups(models + [S.ModelSpec("c", zero_shot_only=True)], {"t1": [0, 5], "t2": [0, 5, 10]},
                              seeds=[0, 1, 2])
    assert sorted(set(zero) - set(groups)) == [G.Group("c", "t1", 0, 0), G.Group("c", "t2", 0, 0)]


def test_parse_model_specs(tmp_path):
    run = tmp_path / "run_sft"
    write_adapter(run / ADAPTER_DIR)
    write_adapter(run / BEST_ADAPTER_DIR, seed=2)
    (run / CONFIG_FILE).write_text("arm: sft_task\ndata:\n  sft_task: mcq\n")
    bare = write_adapter(tmp_path / "bare_adapter")
    specs = S.parse_model_specs(["base", str(run), f"mine={bare}", "someone/lora-adapter"])
    assert specs[0] == S.ModelSpec("base", None)
    assert specs[1] == S.ModelSpec("sft_task", run / BEST_ADAPTER_DIR, ["mcq"], zero_shot_only=True)
    assert specs[2] == S.ModelSpec("mine", bare)
    assert specs[3] == S.ModelSpec("lora-adapter", "someone/lora-adapter")
    with pytest.raises(Exception, match="overlap"):
        S.parse_model_specs(["base", "base"])
    # task-specific SFT runs, one per eval task, form one model "sft_task"
    other = tmp_path / "run_sft_arith"
    write_adapter(other / ADAPTER_DIR)
    (other / CONFIG_FILE).write_text("arm: sft_task\ndata:\n  sft_task: arith\n")
    pair = S.parse_model_specs([str(run), str(other)])
    assert [(m.name, m.tasks) for m in pair] == [("sft_task", ["mcq"]), ("sft_task", ["arith"])]
    # Baseline 2 is read 0-shot only (the report's upper reference): no few-shot group is evaluated for it
    groups = G.enumerate_groups(pair, {"arith": [0, 2], "mcq": [0, 2]}, [0, 1])
    assert sorted(groups) == [G.Group("sft_task", "arith", 0, 0), G.Group("sft_task", "mcq", 0, 0)]
    with pytest.raises(Exception, match="overlap"):
        S.parse_model_specs([str(run), str(run)])
    with pytest.raises(Exception, match="neither"):
        S.parse_model_specs([str(tmp_path / "missing" / "dir")])


# ----------------------------------------------------------------------------------------- adapters
@pytest.mark.floors
def test_adaptation_changes_adapter_and_restore_is_bit_equal(setup):
    _, data, models = setup
    cfg = tiny_config()
    ev = E.Evaluator(cfg, torch.device("cpu"))
    tuned = models[1]
    ev.load(tuned)
    loaded = adapter_state(ev.peft)
    saved = S.read_peft_adapter(tuned.adapter, ev.peft)
    assert all(torch.equal(loaded[n], saved[n]) for n in saved)
    task = T.load_task(data, "arith", 4, ev.tokenizer, cfg)
    A.adapt(ev.model, task.shots[:2], steps=2, lr=1e-2, batch_size=2, seed=0)
    assert not all(torch.equal(p, loaded[n]) for n, p in adapter_state(ev.peft).items())
    ev.load(models[0])  # another model in between
    assert all(torch.equal(p, ev.fresh[n]) for n, p in adapter_state(ev.peft).items())
    ev.load(tuned)
    assert all(torch.equal(p, loaded[n]) for n, p in adapter_state(ev.peft).items())

    # a whole few-shot group (adaptation, evaluations with the adapter merged) leaves every weight as it was
    from metasft.eval.scoring import Grader
    everything = {n: p.detach().clone() for n, p in ev.peft.named_parameters()}
    with Grader(n_workers=1) as grader:
        cells, _ = A.run_group(ev, tuned, G.Group("tuned", "arith", 2, 0), task, grader, None)
    assert [c["step"] for c in cells] == [0, 1, 2]
    assert cells[0]["loss"] != cells[-1]["loss"]  # adaptation moved the adapter
    assert all(torch.equal(p, everything[n]) for n, p in ev.peft.named_parameters())


@pytest.mark.floors
def test_tasks_evaluated_together_equal_one_at_a_time(setup):
    """evaluate_steps (a model's 0-shot groups, all tasks' questions in shared batches, each task
    with its own max_new_tokens) gives what evaluate_step gives task by task."""
    from metasft.eval.scoring import Grader
    _, data, models = setup
    cfg = tiny_config(batch_size=8)
    ev = E.Evaluator(cfg, torch.device("cpu"))
    ev.load(models[1])
    tasks = [T.load_task(data, "arith", 4, ev.tokenizer, cfg),
             T.load_task(data, "mcq", 2, ev.tokenizer, cfg)]
    with Grader(n_workers=1) as grader:
        together = E.evaluate_steps(ev, tasks, grader)
        alone = [E.evaluate_step(ev, t, grader) for t in tasks]
    for a, b, task in zip(together, alone, tasks):
        assert [p["output"] for p in a.predictions] == [p["output"] for p in b.predictions]
        assert [p["question_id"] for p in a.predictions] == [r.id for r in task.records]
        assert a.cell["accuracy"] == b.cell["accuracy"] and a.cell["loss"] == pytest.approx(b.cell["loss"])
    lengths = [len(ev.tokenizer(p["output"], add_special_tokens=False)["input_ids"]) for p in together[1].predictions]
    assert max(lengths) <= 2


@pytest.mark.floors
def test_per_question_loss_against_plain_pytorch(setup):
    """Each prediction's loss is its reference solution's token-mean cross-entropy, computed here from
    the full logits of the unwrapped model; the cell's loss is their token-weighted mean."""
    from metasft.eval.scoring import Grader
    _, data, models = setup
    cfg = tiny_config(batch_size=2)
    ev = E.Evaluator(cfg, torch.device("cpu"))
    ev.load(models[1])
    task = T.load_task(data, "arith", 2, ev.tokenizer, cfg)
    with Grader(n_workers=1) as grader:
        result = E.evaluate_step(ev, task, grader)
    ev.peft.eval()
    sums, counts = [], []
    with torch.no_grad():
        for example, pred in zip(task.examples, result.predictions):
            ids = torch.tensor([example.input_ids])
            logits = ev.peft(input_ids=ids).logits[0, :-1]
            targets = ids[0, 1:]
            scored = torch.arange(len(targets)) >= example.n_prompt - 1   # positions predicting response tokens
            ce = torch.nn.functional.cross_entropy(logits[scored], targets[scored], reduction="sum")
            assert pred["loss"] == pytest.approx(float(ce) / int(scored.sum()), rel=1e-5)
            assert pred["loss_tokens"] == int(scored.sum())
            sums.append(float(ce))
            counts.append(int(scored.sum()))
    assert result.cell["loss"] == pytest.approx(sum(sums) / sum(counts), rel=1e-5)


def test_adapter_with_other_lora_settings_is_refused(tmp_path, setup):
    cfg = tiny_config()
    ev = E.Evaluator(cfg, torch.device("cpu"))
    model, _ = tiny_llama()
    peft = add_lora(model, rank=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    peft.save_pretrained(str(tmp_path / "r4"))
    with pytest.raises(S.EvalError, match="LoRA settings"):
        ev.load(S.ModelSpec("r4", tmp_path / "r4"))


# ----------------------------------------------------------------------------------------- protocol A
def test_cell_counts_and_zero_shot_cells(full_run):
    _, cells, preds = full_run
    # 2 models x 2 tasks: one 0-shot cell each; 2-shot x 2 seeds with steps 0, 1, 2
    assert len(cells) == 4 * 1 + 4 * 2 * 3
    zero = cells[cells["n_shots"] == 0]
    assert len(zero) == 4 and set(zero["step"]) == {0} and set(zero["seed"]) == {0}
    assert len(preds) == len(cells) * 3
    out = full_run[0]
    lines = [line for line in (out / EVAL_LOG).read_text().splitlines() if "metasft.steps: " in line]
    assert len(lines) == len(cells)  # one accuracy line per stored cell
    assert any(" tuned arith 2-shot seed 1 step 2: accuracy " in line for line in lines)
    assert cells["accuracy_ll"].notna().tolist() == (cells["task"] == "mcq").tolist()
    assert cells[cells["task"] == "arith"]["step_correctness"].notna().all()
    assert cells[cells["task"] == "mcq"]["step_correctness"].isna().all()
    # step 0 of a few-shot group is the model's 0-shot evaluation (reused, not recomputed)
    for (model, task), z in zero.set_index(["model", "task"]).iterrows():
        step0 = cells[(cells["model"] == model) & (cells["task"] == task) & (cells["step"] == 0) & (cells["n_shots"] == 2)]
        assert len(step0) == 2 and (step0["loss"] == z["loss"]).all() and (step0["accuracy"] == z["accuracy"]).all()


def test_same_shots_for_every_model(full_run):
    _, _, preds = full_run
    few = preds[preds["n_shots"] == 2]
    shots = {}
    for (_, task, seed), rows in few.groupby(["model", "task", "seed"]):
        ids = {tuple(s) for s in rows["shot_ids"]}
        assert len(ids) == 1 and len(next(iter(ids))) == 2
        shots.setdefault((task, seed), set()).add(next(iter(ids)))
    assert all(len(v) == 1 for v in shots.values())  # equal across models
    assert shots[("arith", 0)] != shots[("arith", 1)]  # but drawn per seed
    assert all(s == [] for s in preds[preds["n_shots"] == 0]["shot_ids"])


def test_two_ranks_cover_every_group_once_and_match_one_process(setup, full_run, monkeypatch):
    root, data, models = setup
    out = root / "ranks"
    seen: dict[int, list] = {0: [], 1: []}
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        P.run_eval(tiny_config(), data, models, out, after_group=seen[rank].append)
    groups = G.enumerate_groups(models, {"arith": [0, 2], "mcq": [0, 2]}, [0, 1])
    assert sorted(seen[0] + seen[1]) == sorted(groups) and not set(seen[0]) & set(seen[1])
    assert seen[0] == G.rank_share(groups, 0, 2) and seen[1] == G.rank_share(groups, 1, 2)
    # each rank writes its own store; the union is the evaluation one process writes
    assert [p.name for p in store_paths(out)] == ["results.shard-0.sqlite", "results.shard-1.sqlite"]
    for rank in (0, 1):
        with ResultsStore(out / f"results.shard-{rank}.sqlite") as store:
            assert store.done_groups() == {(g.model, g.task, g.n_shots, g.seed) for g in seen[rank]}
    with ResultsUnion(store_paths(out)) as stored:
        cells = stored.cells()
    _, single, _ = full_run
    cols = ["model", "task", "n_shots", "seed", "step", "accuracy", "n_correct"]
    assert cells[cols].equals(single[cols])
    assert cells["loss"].tolist() == pytest.approx(single["loss"].tolist(), rel=1e-5)
    assert (out / EVAL_CONFIG).is_file() and not list((out / "claims").iterdir())


def _canned(self, prompts, max_new_tokens):
    """Outputs with known gradings for the tiny data's questions: arith "What is a + b?" answered with
    a marker (a + b = 3), by its last number only (7), or cut off (11); mcq with a stated letter, B."""
    from metasft.eval.generate import Completion
    out = []
    for prompt in prompts:
        sums = [int(a) + int(b) for a, b in re.findall(r"What is (\d+) \+ (\d+)\?", prompt)]
        if not sums:
            out.append(Completion("Hydrogen. The answer is (B).", False))
        elif sums[-1] == 3:
            out.append(Completion("2 + 1 = 3. The answer is 3.", False))
        elif sums[-1] == 7:
            out.append(Completion("3 + 4 = 7", False))
        else:
            out.append(Completion(f"4 + 7 = {sums[-1]} and then", True))
    return out


def test_an_evaluation_stores_both_gradings(setup, tmp_path, monkeypatch):
    """Every prediction carries its strict and flexible verdicts and cut-off / looping flags, every cell
    their counts; `correct` and `accuracy` follow eval.grading, which a resumed evaluation must keep."""
    from metasft.eval.generate import HFBackend
    from metasft.eval.results import ResultsError
    _, data, models = setup
    monkeypatch.setattr(HFBackend, "complete", _canned)
    stored = {}
    for grading in ("strict", "flexible"):
        out = P.run_eval(tiny_config(seeds=[0], grading=grading), data, models[:1], tmp_path / grading)
        with ResultsStore(out / RESULTS_FILE) as store:
            stored[grading] = (store.cells(), store.predictions(), store.meta())
    cells, preds, meta = stored["strict"]
    assert meta["grading"] == "strict"
    arith = preds[preds["task"] == "arith"].set_index("question_id")
    expected = {"arith-test-0": (True, True, False), "arith-test-1": (False, True, False),
                "arith-test-2": (False, False, True)}  # marker, last number only, cut off
    for qid, rows in arith.groupby(level=0):
        verdicts = rows[["correct_strict", "correct_flexible", "truncated"]].to_numpy()
        assert {tuple(r) for r in verdicts} == {expected[qid]}
    assert (preds["correct"] == preds["correct_strict"]).all() and not preds["repeating"].any()
    by_task = cells.groupby("task")
    assert by_task["accuracy_strict"].unique().map(list).to_dict() == {"arith": [1 / 3], "mcq": [1.0]}
    assert by_task["accuracy_flexible"].unique().map(list).to_dict() == {"arith": [2 / 3], "mcq": [1.0]}
    assert by_task["n_truncated"].unique().map(list).to_dict() == {"arith": [1], "mcq": [0]}
    assert (cells["accuracy"] == cells["accuracy_strict"]).all() and (cells["n_repeating"] == 0).all()
    cells_f, preds_f, _ = stored["flexible"]
    assert (preds_f["correct"] == preds_f["correct_flexible"]).all()
    assert (cells_f["accuracy"] == cells_f["accuracy_flexible"]).all()
    assert preds_f["correct_strict"].tolist() == preds["correct_strict"].tolist()
    # a rerun with the other grading would mix gradings in one store: refused
    with pytest.raises(ResultsError, match='grading was "strict" when these results were written, now "flexible"'):
        P.run_eval(tiny_config(seeds=[0], grading="flexible"), data, models[:1], tmp_path / "strict")
