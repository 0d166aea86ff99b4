"""Task similarity: cosine of adapter gradients, against hand cases and on the tiny model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metasft.eval.similarity import similarity_matrix, task_gradients, write_similarity


def test_cosine_by_hand():
    names, m = similarity_matrix({"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([0.0, 2.0]),
                                  "c": torch.tensor([-3.0, 0.0]), "d": torch.tensor([1.0, 1.0])})
    assert names == ["a", "b", "c", "d"]
    expected = np.array([[1, 0, -1, 2 ** -0.5], [0, 1, 0, 2 ** -0.5], [-1, 0, 1, -(2 ** -0.5)],
                         [2 ** -0.5, 2 ** -0.5, -(2 ** -0.5), 1]])
    np.testing.assert_allclose(m, expected, atol=1e-12)
    with pytest.raises(ValueError, match="zero gradient"):
        similarity_matrix({"a": torch.tensor([1.0]), "z": torch.tensor([0.0])})


def test_identical_tasks_have_similarity_one(tmp_path):
    from tiny_eval import LORA, _arith, _mcq  # the tiny setup (tests/eval)

    from metasft.models import adapter_parameters, add_lora, tiny_llama
    from metasft.train.batching import tokenize
    from metasft.data.formats import to_sft
    from metasft.train.common import TrainModel
    from metasft.train.distributed import World
    from metasft.train.loss import ResponseLoss

    model, tokenizer = tiny_llama()
    torch.manual_seed(0)
    peft = add_lora(model, **LORA)

    def examples(records):
        rows = [{"id": r.id, **to_sft(r)} for r in records]
        return tokenize(rows, tokenizer, max_length=512, truncation="right")

    arith = examples([_arith(i, "a") for i in range(4)])
    tasks = {"arith": arith, "arith_copy": list(arith), "mcq": examples([_mcq(i, "m") for i in range(4)]),
             "arith_other": examples([_arith(i, "b") for i in range(10, 14)])}
    tm = TrainModel(ResponseLoss(peft), adapter_parameters(peft), World(), tokenizer.pad_token_id)
    before = [p.detach().clone() for p in tm.params]
    grads = task_gradients(tm, tasks, micro=2)
    assert all(torch.equal(a, p) for a, p in zip(before, tm.params))  # the adapter is untouched
    assert all(p.grad is None for p in tm.params)
    names, m = similarity_matrix(grads)
    i = {n: k for k, n in enumerate(names)}
    assert m[i["arith"], i["arith_copy"]] == pytest.approx(1.0, abs=1e-6)
    assert np.array_equal(m, m.T) and np.all(np.diag(m) == 1.0)
    assert m[i["arith"], i["mcq"]] < 0.99
    assert m[i["arith"], i["arith_other"]] > m[i["arith"], i["mcq"]]  # same kind of task is closer

    path = write_similarity(tmp_path, names, m, {"adapter": "fresh LoRA"})
    saved = json.loads(path.read_text())
    assert saved["tasks"] == names and saved["adapter"] == "fresh LoRA"
    np.testing.assert_allclose(np.array(saved["distance"]), 1 - m)


def test_run_similarity_writes_every_task(tmp_path):
    from tiny_eval import tiny_config, write_data_dir

    from metasft.eval.similarity import run_similarity

    data = write_data_dir(tmp_path / "data")
    path = run_similarity(tiny_config(similarity_batches=2), data, tmp_path / "out")
    saved = json.loads(path.read_text())
    assert saved["tasks"] == ["alg", "arith", "mcq"]
    m = np.array(saved["similarity"])
    assert m.shape == (3, 3) and np.array_equal(m, m.T) and np.all(np.abs(m) <= 1)
    assert saved["meta_train_tasks"] == ["alg"] and saved["examples_per_task"] == 4
