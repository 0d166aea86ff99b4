"""The grid engine (issue 10) against the one-cell reference path, on the tiny 2-layer model in float32:
stacked adaptation vs `adaptation.adapt` one group at a time, per-row LoRA decoding and scoring vs
each cell alone with its adapter (`HFBackend`, `example_losses`), the full stacked `run_eval` vs
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
from metasft.eval.grid_eval import GridScorer
from metasft.eval.results import ResultsStore
from metasft.eval.stacked_lora import RowCells, StackedLora
from metasft.models import adapter_state, load_adapter_state


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


def test_stacked_lora_delta_against_plain_matmuls(setup):
    """Each row's delta is scale * B_c A_c x with its own cell's factors, in any layout."""
    cfg = tiny_config()
    ev = E.Evaluator(cfg, torch.device("cpu"))
    lora = StackedLora(ev.peft, 3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in lora.params:
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.randn(5, 3, lora.A[0].shape[-1], generator=g)
    lora._rows = RowCells.of(torch.tensor([0, 2, 2, 2, 2]))   # cell 1 absent, unequal counts
    got = lora.delta(0, x)
    for r, c in enumerate([0, 2, 2, 2, 2]):
        want = lora.scales[0] * (x[r] @ lora.A[0][c].T @ lora.B[0][c].T)
        torch.testing.assert_close(got[r], want, rtol=1e-5, atol=1e-6)


def test_stacked_adaptation_equals_one_at_a_time(setup):
    """4 cells (3 models, 1/2/4/6 shots, different seeds; batches of 1 and 2 together): adapter
    tensors and losses after 3 AdamW steps equal `adaptation.adapt` run for each group alone."""
    _, data, models = setup
    cfg = tiny_config()
    ev = E.Evaluator(cfg, torch.device("cpu"))
    task = T.load_task(data, "arith", {"max_new_tokens": 4}, ev.tokenizer, cfg)
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


@pytest.mark.parametrize("task_name, rows_per_batch", [("arith", 64), ("mcq", 64), ("arith", 5)])
def test_per_row_decoding_and_scoring_equal_each_cell_alone(setup, task_name, rows_per_batch):
    """Greedy outputs, reference losses and option choices of all cells in shared batches (one
    prompt prefill each) equal each cell evaluated alone: its adapter loaded into PEFT, HF-backend
    generation with the LoRA merged, `example_losses`, option log-likelihoods. rows_per_batch=5 puts
    one question of each of the 4 cells in a batch."""
    _, data, models = setup
    cfg = tiny_config()
    ev = E.Evaluator(cfg, torch.device("cpu"))
    task = T.load_task(data, task_name, {"max_new_tokens": 12}, ev.tokenizer, cfg)
    lora, scorer = _scorer_and_lora(ev, task, models, rows_per_batch)
    together = scorer.score(lora)
    for c in range(len(CELLS)):
        load_adapter_state(ev.peft, lora.cell_state(c))
        with ev.merged():
            outputs = ev.backend.generate(task.prompts, task.max_new_tokens)
            with eval_mode(ev.peft):
                losses = ev.model.example_losses(task.examples, micro=2)
            choices = E._choice_by_loglikelihood(ev.backend, task)
        assert together[c].outputs == outputs
        assert any(len(ev.tokenizer(o)["input_ids"]) >= 3 for o in outputs)  # real decoding, not empty strings
        assert [n for _, n in together[c].losses] == [n for _, n in losses]
        assert [s for s, _ in together[c].losses] == pytest.approx([s for s, _ in losses], rel=1e-5)
        assert together[c].ll_choice == choices
    assert len({round(t.losses[0][0], 4) for t in together}) == len(CELLS)  # the cells differ


def test_rows_finishing_early_leave_the_batch_and_outputs_still_match(setup):
    """With a stop token that the tiny model emits in some rows only, rows finish at different steps
    and leave the batch (unequal rows per cell, some cells empty); outputs still equal each cell alone."""
    from metasft.eval.generate import HFBackend
    _, data, models = setup
    cfg = tiny_config()
    ev = E.Evaluator(cfg, torch.device("cpu"))
    task = T.load_task(data, "arith", {"max_new_tokens": 12}, ev.tokenizer, cfg)
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
            assert together[c].outputs == backend.generate(task.prompts, task.max_new_tokens)
    rows = [(a, b) for t, f in zip(together, first) for a, b in zip(t.outputs, f.outputs)]
    assert any(a == b for a, b in rows) and any(a != b for a, b in rows)  # some rows stopped early, some not
