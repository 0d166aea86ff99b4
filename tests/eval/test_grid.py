"""The grid engine (issue 10) against the one-cell reference path, on the tiny 2-layer model in float32:
stacked adaptation vs `adaptation.adapt` one group at a time, per-row LoRA decoding and scoring vs
each cell alone with its adapter (`HFBackend`, `example_losses`), a task's 0-shot groups in one
stack vs `evaluate_steps` per model, the full stacked `run_eval` vs
`eval.cells_per_batch: 1`, and a killed stacked evaluation resuming."""
from __future__ import annotations

import pytest
import torch
from tiny_eval import tiny_config, write_adapter, write_data_dir  # the shared tiny setup (tests/eval)

from metasft.eval import adaptation as A
from metasft.eval import evaluator as E
from metasft.eval import grid as GR
from metasft.eval import protocols as P
from metasft.eval import schedule as G
from metasft.eval import specs as S
from metasft.eval import tasks as T
from metasft.eval.generate import eval_mode
from metasft.eval import grid_eval
from metasft.eval.grid_eval import GridScorer, shared_prefix_len
from metasft.eval.lora_forward import KVCache
from metasft.eval.results import ResultsStore
from metasft.eval.stacked_lora import RowCells, StackedLora
from metasft.models import adapter_state, load_adapter_state
from metasft.rundir import RESULTS_FILE


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    data = write_data_dir(root / "data")
    models = [S.ModelSpec("base", None), S.ModelSpec("tuned", write_adapter(root / "tuned_adapter")),
              S.ModelSpec("other", write_adapter(root / "other_adapter", seed=7))]
    return root, data, models


# cells with different models, shot levels and seeds; 1 shot makes a batch of 1 next to batches of 2
CELLS = [("base", 2, 0), ("tuned", 4, 1), ("other", 6, 0), ("tuned", 1, 3)]


def _cells(ev, task, models):
    by_name = {m.name: m for m in models}
    specs = [by_name[m] for m, _, _ in CELLS]
    shots = [[task.shots[i] for i in G.shot_indices(task.name, n, s, len(task.shots))] for _, n, s in CELLS]
    seeds = [G.stable_seed("batches", task.name, n, s) for _, n, s in CELLS]
    return specs, shots, seeds


def test_row_layout_grid():
    rows = RowCells.blocks([1, 2, 2], torch.device("cpu"))
    assert rows.slot.tolist() == [0, 2, 3, 4, 5] and rows.n_max == 2
    dense = RowCells.blocks([2, 2], torch.device("cpu"))
    assert dense.slot is None
    kept = rows.select(torch.tensor([1, 2, 4]))  # cell 0 gone, cell 1 with 2 rows, cell 2 with 1
    assert kept.present.tolist() == [1, 2] and kept.slot.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="sorted"):
        RowCells.of(torch.tensor([1, 0]))


@pytest.mark.parametrize("cells", [[0, 2, 2, 2, 2], [0, 0, 1, 1, 2, 2]])
def test_stacked_lora_delta_against_plain_matmuls(setup, cells):
    """Each row gets output + scale * B_c A_c x with its own cell's factors, whether the rows fill
    the (cells x rows) grid (one baddbmm) or not (cell 1 absent, unequal counts: scattered)."""
    cfg = tiny_config()
    ev = E.Evaluator(cfg, torch.device("cpu"))
    lora = StackedLora(ev.peft, 3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in lora.params:
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.randn(len(cells), 3, lora.A[0].shape[-1], generator=g)
    base = torch.randn(len(cells), 3, lora.B[0].shape[1], generator=g)
    lora._rows = RowCells.of(torch.tensor(cells))
    got = lora.add_delta(0, x, base)
    for r, c in enumerate(cells):
        want = base[r] + lora.scales[0] * (x[r] @ lora.A[0][c].T @ lora.B[0][c].T)
        torch.testing.assert_close(got[r], want, rtol=1e-5, atol=1e-5)


def test_stacked_lora_delta_on_a_bfloat16_base_trains_the_float32_factors(setup):
    """On a bfloat16 base (eval.dtype) the delta comes back in bfloat16, within bfloat16 rounding of
    the float32 product, and the gradients reach the float32 factors as plain float32 autograd gives
    them (within bfloat16 rounding)."""
    ev = E.Evaluator(tiny_config(), torch.device("cpu"))
    lora = StackedLora(ev.peft, 2)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in lora.params:
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.randn(4, 3, lora.A[0].shape[-1], generator=g)
    base = torch.randn(4, 3, lora.B[0].shape[1], generator=g)
    cells = [0, 0, 1, 1]
    lora._rows = RowCells.of(torch.tensor(cells))
    got = lora.add_delta(0, x.bfloat16(), base.bfloat16())
    assert got.dtype == torch.bfloat16
    got.float().sum().backward()
    A = lora.A[0].detach().clone().requires_grad_(True)
    B = lora.B[0].detach().clone().requires_grad_(True)
    want = torch.stack([base[r] + lora.scales[0] * (x[r] @ A[c].T @ B[c].T) for r, c in enumerate(cells)])
    want.sum().backward()
    torch.testing.assert_close(got.float(), want.detach(), rtol=2e-2, atol=2e-2 * want.abs().max().item())
    assert lora.A[0].grad.dtype == torch.float32 and lora.B[0].grad.dtype == torch.float32
    for mine, plain in ((lora.A[0].grad, A.grad), (lora.B[0].grad, B.grad)):
        torch.testing.assert_close(mine, plain, rtol=3e-2, atol=3e-2 * plain.abs().max().item())


@pytest.mark.floors
@pytest.mark.parametrize("passes", ["by length", "one row each"])
def test_stacked_adaptation_equals_one_at_a_time(setup, passes, monkeypatch):
    """4 cells (3 models, 1/2/4/6 shots, different seeds; batches of 1 and 2 together): adapter
    tensors and losses after 3 AdamW steps equal `adaptation.adapt` run for each group alone, whether
    a step's rows run in passes of similar length or one row per pass (a cell's batch split apart)."""
    if passes == "one row each":
        monkeypatch.setattr(GR, "_similar_lengths", lambda drawn: [[row] for row in drawn])
    _, data, models = setup
    cfg = tiny_config()
    ev = E.Evaluator(cfg, torch.device("cpu"))
    task = T.load_task(data, "arith", 4, ev.tokenizer, cfg)
    specs, shots, seeds = _cells(ev, task, models)
    lr, steps, batch = 1e-2, 3, 2

    lora = StackedLora(ev.peft, len(CELLS))
    for c, spec in enumerate(specs):
        lora.load(c, ev.state(spec))
    stacked = GR.adapt_stacked(ev.model.loss_module, lora, shots, steps=steps, lr=lr, batch_size=batch,
                               seeds=seeds, pad_id=ev.model.pad_id)

    for c, spec in enumerate(specs):
        ev.load(spec)
        alone = A.adapt(ev.model, shots[c], steps=steps, lr=lr, batch_size=batch, seed=seeds[c])
        assert stacked[c] == pytest.approx(alone, rel=1e-5, abs=1e-6)
        want, got = adapter_state(ev.peft), lora.cell_state(c)
        assert set(got) == set(want)
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-5)
        moved = max(float((want[n] - ev.state(spec)[n]).abs().max()) for n in want)
        assert moved > 1e-3  # the comparison is not between untouched adapters


def _poison_new_caches(monkeypatch):
    """New KV caches hold NaN, as reused memory may: a slot that is masked but never written would
    turn a row's attention into NaN (0 x NaN), so every slot read must be written first."""
    fresh = KVCache.__init__

    def poisoned(self, *args, **kwargs):
        fresh(self, *args, **kwargs)
        for t in self.keys + self.values:
            t.fill_(float("nan"))
    monkeypatch.setattr(KVCache, "__init__", poisoned)


def _scorer_and_lora(ev, task, models, rows_per_batch, steps=2):
    """A stack of the CELLS adapted for `steps` steps, and a scorer on `task`."""
    specs, shots, seeds = _cells(ev, task, models)
    lora = StackedLora(ev.peft, len(CELLS))
    for c, spec in enumerate(specs):
        lora.load(c, ev.state(spec))
    GR.adapt_stacked(ev.model.loss_module, lora, shots, steps=steps, lr=5e-2, batch_size=2, seeds=seeds,
                     pad_id=ev.model.pad_id)
    scorer = GridScorer(ev.peft, ev.tokenizer, task, rows_per_batch=rows_per_batch,
                        loss_module=ev.model.loss_module, backend=ev.backend)
    return lora, scorer


def _each_cell_alone(ev, lora, task, micro=2):
    """The reference path for every cell of `lora`: its adapter loaded into PEFT, HF-backend greedy
    generation (LoRA merged in float32), `example_losses`, option log-likelihoods; per cell
    (outputs, losses, choices)."""
    alone = []
    for c in range(lora.n_cells):
        load_adapter_state(ev.peft, lora.cell_state(c))
        with ev.merged():
            outputs = ev.backend.generate(task.prompts, task.max_new_tokens)
            with eval_mode(ev.peft):
                losses = ev.model.example_losses(task.examples, micro=micro)
            alone.append((outputs, losses, E._choice_by_loglikelihood(ev.backend, task)))
    return alone


@pytest.mark.floors
@pytest.mark.parametrize("task_name, rows_per_batch, logit_chunk, prefill_tokens",
                         [("arith", 64, 2048, 2048), ("mcq", 64, 2048, 2048), ("arith", 5, 2048, 2048),
                          ("arith", 64, 5, 2048), ("arith", 64, 2048, 100), ("mcq", 64, 2048, 100)])
def test_per_row_decoding_and_scoring_equal_each_cell_alone(setup, task_name, rows_per_batch, logit_chunk,
                                                            prefill_tokens, monkeypatch):
    """Greedy outputs, reference losses and option choices of all cells in shared batches (one
    prompt prefill each) equal each cell evaluated alone: its adapter loaded into PEFT, HF-backend
    generation with the LoRA merged, `example_losses`, option log-likelihoods. rows_per_batch=5 puts
    one question of each of the 4 cells in a batch; a logit chunk of 5 positions scores the references
    a few tokens at a time; a prefill budget of 100 tokens prefills a question or two at a time, each
    chunk's cache placed into one decoding batch of all the rows."""
    monkeypatch.setattr(grid_eval, "LOGIT_CHUNK", logit_chunk)
    monkeypatch.setattr(grid_eval, "PREFILL_TOKENS", prefill_tokens)
    _poison_new_caches(monkeypatch)
    _, data, models = setup
    cfg = tiny_config()
    ev = E.Evaluator(cfg, torch.device("cpu"))
    task = T.load_task(data, task_name, 12, ev.tokenizer, cfg)
    lora, scorer = _scorer_and_lora(ev, task, models, rows_per_batch)
    assert scorer.prefix_len > 10  # the chat template's turns: the shared-prefix path is the one compared
    if prefill_tokens < 2048:  # the chunked path is the one compared
        assert len(scorer._chunks(list(range(len(task.prompts))), len(CELLS))) > 2
    together = scorer.score(lora)
    for c, (outputs, losses, choices) in enumerate(_each_cell_alone(ev, lora, task)):
        assert together[c].outputs == outputs
        # real decoding, not empty strings
        assert any(len(ev.tokenizer(o, add_special_tokens=False)["input_ids"]) >= 3 for o in outputs)
        assert [n for _, n in together[c].losses] == [n for _, n in losses]
        assert [s for s, _ in together[c].losses] == pytest.approx([s for s, _ in losses], rel=1e-5)
        assert together[c].ll_choice == choices
    assert len({round(t.losses[0][0], 4) for t in together}) == len(CELLS)  # the cells differ


@pytest.mark.parametrize("rows_per_batch", [64, 5])
def test_stacked_samples_equal_each_cell_sampled_alone(setup, rows_per_batch):
    """acc@k's samples: every cell's k sampled completions in shared batches (rows leaving the batch as
    they stop: a sixth of the vocabulary stops) equal `HFBackend.sample` of each cell alone with the same
    seed, in batches of another size; a sample is its seed's, not its batch's."""
    from metasft.eval.generate import HFBackend
    _, data, models = setup
    cfg = tiny_config()
    ev = E.Evaluator(cfg, torch.device("cpu"))
    task = T.load_task(data, "arith", 12, ev.tokenizer, cfg)
    stop = list(range(0, ev.tokenizer.vocab_size, 6))
    lora, _ = _scorer_and_lora(ev, task, models, rows_per_batch)
    scorer = GridScorer(ev.peft, ev.tokenizer, task, rows_per_batch=rows_per_batch,
                        loss_module=ev.model.loss_module, backend=ev.backend, stop_ids=stop)
    together = scorer.score(lora, samples=3, seed=5, temperature=1.0)
    backend = HFBackend(ev.peft, ev.tokenizer, batch_size=3, device="cpu", stop_ids=stop)
    lengths = set()
    for c in range(len(CELLS)):
        load_adapter_state(ev.peft, lora.cell_state(c))
        with ev.merged():
            alone = backend.sample(task.prompts, 3, temperature=1.0, max_new_tokens=task.max_new_tokens, seed=5)
        assert together[c].samples == alone
        lengths |= {len(ev.tokenizer(s.text, add_special_tokens=False)["input_ids"]) for q in alone for s in q}
    assert len(lengths) > 3  # rows stopped at many different steps
    assert all(len({s.text for s in q}) > 1 for t in together for q in t.samples)  # sampled, not k copies
    assert [t.outputs for t in together] == [t.outputs for t in scorer.score(lora)]  # greedy unchanged


def test_adaptation_passes_keep_every_row_once_within_the_token_bound():
    """A stack's rows split into passes of at most PASS_TOKENS padded tokens (memory), every row once."""
    from metasft.train.batching import Example
    drawn = [(c, Example(f"{c}-{i}", tuple(range(200 - 7 * i)), 10)) for c in range(6) for i in range(2)]
    parts = GR._similar_lengths(drawn)
    assert sorted(e.id for p in parts for _, e in p) == sorted(e.id for _, e in drawn)
    assert all(len(p) * max(len(e.input_ids) for _, e in p) <= GR.PASS_TOKENS for p in parts)
    assert len(parts) > 1 and max(len(p) for p in parts) > 1
    assert all([c for c, _ in p] == sorted(c for c, _ in p) for p in parts)


def test_shared_prefix_leaves_every_prompt_a_token_of_its_own():
    assert shared_prefix_len([[1, 2, 3], [1, 2, 4, 5]]) == 2
    assert shared_prefix_len([[1, 2], [1, 2, 3]]) == 1
    assert shared_prefix_len([[1, 2, 3], [1, 2, 3]]) == 2
    assert shared_prefix_len([[7], [7, 8]]) == 0 and shared_prefix_len([]) == 0
    assert shared_prefix_len([[1, 2], [3, 2]]) == 0


def test_rows_finishing_early_leave_the_batch_and_outputs_still_match(setup, monkeypatch):
    """With a stop token that the tiny model emits in some rows only, rows finish at different steps
    and leave the batch (unequal rows per cell, some cells empty); outputs, and which of them were cut
    off at max_new_tokens, still equal each cell alone."""
    from metasft.eval.generate import HFBackend
    _, data, models = setup
    cfg = tiny_config()
    ev = E.Evaluator(cfg, torch.device("cpu"))
    task = T.load_task(data, "arith", 12, ev.tokenizer, cfg)
    monkeypatch.setattr(grid_eval, "PREFILL_TOKENS", 100)   # chunks of several widths in one decoding batch
    _poison_new_caches(monkeypatch)
    lora, scorer = _scorer_and_lora(ev, task, models, rows_per_batch=64)
    first = scorer.score(lora)
    # a token some rows emit early: the 3rd generated token of cell 0's first question
    stop = ev.tokenizer(first[0].outputs[0], add_special_tokens=False)["input_ids"][2]
    scorer = GridScorer(ev.peft, ev.tokenizer, task, rows_per_batch=64, loss_module=ev.model.loss_module,
                        backend=ev.backend, stop_ids=[stop])
    together = scorer.score(lora)
    backend = HFBackend(ev.peft, ev.tokenizer, batch_size=4, device="cpu", stop_ids=[stop])
    for c in range(len(CELLS)):
        load_adapter_state(ev.peft, lora.cell_state(c))
        with ev.merged():
            assert together[c].completions() == backend.complete(task.prompts, task.max_new_tokens)
    rows = [(a, b) for t, f in zip(together, first) for a, b in zip(t.outputs, f.outputs)]
    assert any(a == b for a, b in rows) and any(a != b for a, b in rows)  # some rows stopped early, some not
    cut = [c for t in together for c in t.cut_off]
    assert any(cut) and not all(cut)


# ----------------------------------------------------------------------------------------- whole runs
def _rows(out):
    with ResultsStore(out / RESULTS_FILE) as store:
        return store.cells(), store.predictions(), store.done()


def _assert_same_store(a, b):
    """Accuracy, counts and outputs exact; losses within 1e-5."""
    cells_a, preds_a, _ = a
    cells_b, preds_b, _ = b
    exact = ["model", "task", "n_shots", "seed", "step", "accuracy", "n", "n_correct", "n_timed_out",
             "reasoning_steps", "step_correctness", "accuracy_ll", "accuracy_strict", "accuracy_flexible",
             "n_truncated", "n_repeating"]
    assert cells_a[exact].equals(cells_b[exact])
    assert cells_a["loss"].tolist() == pytest.approx(cells_b["loss"].tolist(), rel=1e-5)
    exact = ["model", "task", "n_shots", "seed", "step", "question_id", "output", "extracted", "correct",
             "shot_ids", "ll_choice", "loss_tokens", "correct_strict", "correct_flexible", "truncated", "repeating"]
    assert preds_a[exact].equals(preds_b[exact])
    assert preds_a["loss"].tolist() == pytest.approx(preds_b["loss"].tolist(), rel=1e-5)


@pytest.fixture(scope="module")
def one_at_a_time(setup):
    root, data, models = setup
    out = P.run_eval(tiny_config(seeds=[0, 1], max_new_tokens=8), data, models, root / "one")
    return _rows(out)


def test_stacked_run_writes_the_rows_of_one_at_a_time(setup, one_at_a_time, monkeypatch):
    """run_eval with eval.cells_per_batch 3 (stacks mixing models and seeds, decoding batches of 4 rows
    across cells) stores what cells_per_batch 1 stores."""
    root, data, models = setup
    stack_sizes, zero_stacks = [], []
    original, original_zero = P.run_stack, P.evaluate_stacked
    monkeypatch.setattr(P, "run_stack",
                        lambda ev, specs, *a, **kw: stack_sizes.append(len(specs)) or original(ev, specs, *a, **kw))
    monkeypatch.setattr(P, "evaluate_stacked", lambda ev, specs, task, *a, **kw:
                        zero_stacks.append((task.name, len(specs))) or original_zero(ev, specs, task, *a, **kw))
    seen = []
    out = P.run_eval(tiny_config(seeds=[0, 1], max_new_tokens=8, cells_per_batch=3), data, models,
                     root / "stacked", after_group=seen.append)
    groups = G.enumerate_groups(models, {"arith": [0, 2], "mcq": [0, 2]}, [0, 1])
    assert sorted(seen) == sorted(groups) and len(seen) == len(groups)
    assert stack_sizes == [3, 3, 3, 3]  # each task's 6 few-shot groups in two stacks
    assert zero_stacks == [("arith", 3), ("mcq", 3)]  # each task's 0-shot groups in one stack, a cell per model
    stacked = _rows(out)
    assert len(stacked[0]) == 6 + 12 * 3  # 3 models x 2 tasks 0-shot; 12 few-shot groups at steps 0, 1, 2
    _assert_same_store(stacked, one_at_a_time)


class Interrupt(Exception):
    pass


def test_killed_stacked_evaluation_resumes_without_redoing_finished_groups(setup, one_at_a_time):
    """Killed right after storing the first group of a stack (the stack's other groups are lost), the
    rerun computes only the groups not done, keeps the stored ones, and ends with the same store."""
    root, data, models = setup
    cfg = tiny_config(seeds=[0, 1], max_new_tokens=8, cells_per_batch=3)
    out = root / "killed"
    first: list = []

    def die_after_seven(group):
        first.append(group)
        if len(first) == 7:
            raise Interrupt  # 6 zero-shot groups, then the first group of the first stack

    with pytest.raises(Interrupt):
        P.run_eval(cfg, data, models, out, after_group=die_after_seven)
    finished = _rows(out)[2]
    assert len(finished) == 7 and first[-1].n_shots == 2
    second: list = []
    P.run_eval(cfg, data, models, out, after_group=second.append)
    groups = G.enumerate_groups(models, {"arith": [0, 2], "mcq": [0, 2]}, [0, 1])
    assert sorted(first + second) == sorted(groups) and not set(first) & set(second)
    resumed = _rows(out)
    kept = resumed[2].merge(finished, on=["model", "task", "n_shots", "seed"], suffixes=("", "_before"))
    assert len(kept) == 7 and (kept["finished_at"] == kept["finished_at_before"]).all()  # not rewritten
    _assert_same_store(resumed, one_at_a_time)
    P.run_eval(cfg, data, models, out, after_group=lambda g: pytest.fail("recomputed a finished group"))


def test_stacks_keep_tasks_and_zero_shot_groups_apart():
    """A task's 0-shot groups stack by model, apart from its few-shot groups and from other tasks."""
    gs = [G.Group("a", "t", 0, 0), G.Group("a", "u", 0, 0), G.Group("b", "t", 0, 0), G.Group("c", "t", 0, 0),
          G.Group("a", "t", 2, 0), G.Group("a", "u", 2, 0), G.Group("a", "t", 2, 1), G.Group("b", "t", 2, 0),
          G.Group("b", "u", 2, 0)]
    assert G.stacks(gs, 2) == [[gs[0], gs[2]], [gs[1]], [gs[3]], [gs[4], gs[6]], [gs[5], gs[8]], [gs[7]]]
    assert G.stacks(gs, 1) == [[g] for g in gs]


@pytest.mark.parametrize("batch_size, acc_k", [(4, None), (64, 2)])
def test_zero_shot_stack_equals_each_model_through_evaluate_steps(setup, batch_size, acc_k):
    """A task's 0-shot groups as one stack, a cell per model (`grid.evaluate_stacked`), give what the
    one-cell path gives each model (`evaluate_steps` over its tasks together, adapter merged, HF
    backend): outputs, verdicts, option choices and acc@k's sampled verdicts identical, losses within
    1e-5. Batches of 4 rows hold one question of each of the 3 cells; 64 rows, all of them."""
    from metasft.eval.scoring import Grader
    _, data, models = setup
    cfg = tiny_config(max_new_tokens=8, batch_size=batch_size)
    ev = E.Evaluator(cfg, torch.device("cpu"))
    tasks = [T.load_task(data, name, 8, ev.tokenizer, cfg) for name in ("arith", "mcq")]
    shares = []
    with Grader(n_workers=1) as grader:
        stacked = {t.name: GR.evaluate_stacked(ev, models, t, grader, acc_k,
                                               progress=lambda piece, share: shares.append((piece, share)))
                   for t in tasks}
        alone = []
        for spec in models:
            ev.load(spec)
            alone.append(E.evaluate_steps(ev, tasks, grader, acc_k))
    assert {p for p, _ in shares} == {"evaluation"} and sum(s for _, s in shares) == pytest.approx(len(tasks))
    assert len(shares) == (6 if batch_size == 4 else 2)  # one report per decoding batch
    exact = ["question_id", "output", "extracted", "correct", "correct_strict", "correct_flexible", "truncated",
             "repeating", "ll_choice", "loss_tokens", "correct_at_k", "reasoning_steps", "step_correctness"]
    for c, spec in enumerate(models):
        for t, want in zip(tasks, alone[c]):
            got = stacked[t.name][c]
            assert [{k: p[k] for k in exact} for p in got.predictions] == \
                   [{k: p[k] for k in exact} for p in want.predictions]
            assert [p["loss"] for p in got.predictions] == pytest.approx([p["loss"] for p in want.predictions],
                                                                         rel=1e-5)
            assert {k: v for k, v in got.cell.items() if k != "loss"} == \
                   {k: v for k, v in want.cell.items() if k != "loss"}
            assert got.cell["loss"] == pytest.approx(want.cell["loss"], rel=1e-5)
            if acc_k:
                assert all(p["correct_at_k"] is not None for p in got.predictions)
    outputs = [p["output"] for r in alone for t in r for p in t.predictions]
    assert any(len(ev.tokenizer(o, add_special_tokens=False)["input_ids"]) >= 3 for o in outputs)  # real decoding
    assert len({round(r[0].cell["loss"], 4) for r in alone}) == len(models)  # the models differ


def test_grid_settings_that_it_cannot_honour_are_refused(setup):
    root, data, models = setup
    from metasft.config import ConfigError
    cfg = tiny_config(cells_per_batch=2)
    cfg.model.lora_dropout = 0.1
    with pytest.raises(ConfigError, match="lora_dropout"):
        P.run_eval(cfg, data, models, root / "refused")


def test_a_model_the_grid_cannot_run_is_refused_before_any_group(setup, monkeypatch):
    """A model type outside `lora_forward.SUPPORTED` with eval.cells_per_batch > 1: one ConfigError that
    names the setting to use, before any group (the 0-shot stacks included) is evaluated; `out` is left
    as it was."""
    from metasft.config import ConfigError
    from metasft.eval import lora_forward
    monkeypatch.setattr(lora_forward, "SUPPORTED", ("qwen2",))
    root, data, models = setup
    out = root / "unsupported"
    with pytest.raises(ConfigError, match=r"'llama'; set eval.cells_per_batch: 1"):
        P.run_eval(tiny_config(cells_per_batch=3), data, models, out,
                   after_group=lambda g: pytest.fail(f"evaluated {g}"))
    assert not out.exists()


def test_stacked_acc_at_k_samples_what_one_group_at_a_time_samples(setup):
    """eval.acc_k 3 on the grid engine (stacks of 3 cells) stores the same sampled verdicts per question
    (`correct_at_k`) as one group at a time (`HFBackend.sample`), and each cell's acc@k is the share of
    its questions with a right sample, recomputed here from the prediction rows."""
    root, data, models = setup
    runs = [_rows(P.run_eval(tiny_config(seeds=[0], max_new_tokens=6, acc_k=3, cells_per_batch=c), data, models,
                             root / f"acc_k_{c}")) for c in (1, 3)]
    _assert_same_store(*runs)
    (cells, preds, _), (cells_b, preds_b, _) = runs
    assert preds["correct_at_k"].tolist() == preds_b["correct_at_k"].tolist()
    assert cells["acc_at_k"].tolist() == cells_b["acc_at_k"].tolist()
    assert preds["correct_at_k"].notna().all() and cells["acc_at_k"].notna().all()
    key = ["model", "task", "n_shots", "seed", "step"]
    share = preds.groupby(key)["correct_at_k"].mean().rename("share").reset_index()
    joined = cells.merge(share, on=key)
    assert len(joined) == len(cells) and (joined["acc_at_k"] == joined["share"]).all()


# ----------------------------------------------------------------------------------------- the real model
@pytest.mark.slow
def test_per_row_decoding_on_smollm2_matches_each_cell_alone(tmp_path):
    """SmolLM2-135M (float32, rank-8 LoRA on all seven projections), 3 cells adapted on different
    shots and seeds: stacked decoding and scoring vs each cell alone (adapter merged, HF backend).

    Per-row LoRA computes W x + s B (A x), the one-cell path (W + s B A) x: float32 rounding differs
    by about 1e-6 relative, so a greedy argmax can flip where the top two logits are that close, and
    the continuation diverges from there. At most 1 of the 9 outputs may differ for that reason;
    losses agree within 1e-4 relative."""
    from metasft.config import Config, DataArgs, EvalArgs, ModelArgs, TrainerArgs
    data = write_data_dir(tmp_path / "data")
    cfg = Config(model=ModelArgs(partial_pretrain="smollm2-135m-instruct", lora_rank=8, lora_alpha=16),
                 data=DataArgs(max_length=512), eval=EvalArgs(batch_size=16, max_new_tokens=12),
                 trainer=TrainerArgs(device="cpu"))
    ev = E.Evaluator(cfg, torch.device("cpu"))
    task = T.load_task(data, "arith", 12, ev.tokenizer, cfg)  # 12 new tokens: half the decoding of 24
    cells = [(2, 0), (4, 1), (6, 2)]
    lora = StackedLora(ev.peft, len(cells))
    shots = [[task.shots[i] for i in G.shot_indices(task.name, n, s, len(task.shots))] for n, s in cells]
    seeds = [G.stable_seed("batches", task.name, n, s) for n, s in cells]
    for c in range(len(cells)):
        lora.load(c, ev.fresh)
    GR.adapt_stacked(ev.model.loss_module, lora, shots, steps=2, lr=1e-3, batch_size=2, seeds=seeds,
                     pad_id=ev.model.pad_id)
    scorer = GridScorer(ev.peft, ev.tokenizer, task, rows_per_batch=16, loss_module=ev.model.loss_module,
                        backend=ev.backend)
    together = scorer.score(lora)
    differ = 0
    for c, (outputs, losses, _) in enumerate(_each_cell_alone(ev, lora, task, micro=4)):
        differ += sum(a != b for a, b in zip(together[c].outputs, outputs))
        assert [s for s, _ in together[c].losses] == pytest.approx([s for s, _ in losses], rel=1e-4)
    assert differ <= 1
    assert any(o.strip() for t in together for o in t.outputs)


def test_rows_placed_side_by_side_decode_as_in_their_own_caches():
    """Prompts of 3 and 6 tokens prefilled apart, then placed into one (NaN-filled) decoding cache:
    the next token's hidden state of each row equals decoding on from its own cache."""
    from metasft.eval.lora_forward import forward, new_cache
    from metasft.models import tiny_llama
    model, _ = tiny_llama()
    model.eval()
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 100, (1, n), generator=g) for n in (3, 6)]
    nxt = torch.tensor([[7]])
    with torch.no_grad():
        alone, parts = [], []
        for ids in prompts:
            n = ids.shape[1]
            part = new_cache(model, 1, n + 1)
            forward(model, ids, torch.arange(n)[None], torch.ones_like(ids, dtype=torch.bool), part)
            parts.append(part)
            twin = new_cache(model, 1, n + 1)
            forward(model, ids, torch.arange(n)[None], torch.ones_like(ids, dtype=torch.bool), twin)
            alone.append(forward(model, nxt, torch.tensor([[n]]), torch.ones((1, 1), dtype=torch.bool), twin)[0, -1])
        joint = new_cache(model, 2, 7)
        for t in joint.keys + joint.values:
            t.fill_(float("nan"))
        for r, part in enumerate(parts):
            joint.place(part, torch.tensor([r]), 6)
        got = forward(model, nxt.repeat(2, 1), torch.tensor([[3], [6]]), torch.ones((2, 1), dtype=torch.bool), joint)
    for r in range(2):
        torch.testing.assert_close(got[r, -1], alone[r], rtol=1e-5, atol=1e-5)


def test_grid_in_bfloat16_matches_each_cell_alone(setup):
    """model.dtype bfloat16 (adapters float32): the per-row LoRA delta is computed in bfloat16, where
    PEFT's unmerged forward (each cell alone) computes it in float32 and rounds the sum once, so
    outputs and losses agree up to bfloat16 rounding: losses within 1e-3 relative, at most one of the
    12 greedy outputs may flip on a near tie."""
    import dataclasses
    _, data, models = setup
    cfg = tiny_config()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dtype="bfloat16"))
    ev = E.Evaluator(cfg, torch.device("cpu"))
    assert ev.peft.get_base_model().model.embed_tokens.weight.dtype == torch.bfloat16
    task = T.load_task(data, "arith", 12, ev.tokenizer, cfg)
    lora, scorer = _scorer_and_lora(ev, task, models, rows_per_batch=64)
    together = scorer.score(lora)
    differ = 0
    for c, (outputs, losses, _) in enumerate(_each_cell_alone(ev, lora, task)):
        differ += sum(a != b for a, b in zip(together[c].outputs, outputs))
        assert [s for s, _ in together[c].losses] == pytest.approx([s for s, _ in losses], rel=1e-3)
    assert differ <= 1
