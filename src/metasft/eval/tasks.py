"""An eval task as the evaluator uses it: its test records, chat prompts, reference examples for the
loss, and the tokenized pool of shots, read once per process from a built data directory."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from metasft.config import Config
from metasft.data.formats import chat_text
from metasft.data.records import Record
from metasft.data.store import read_sft
from metasft.rundir import eval_task_file
from metasft.train.batching import Example, tokenize


@dataclass
class TaskData:
    """An eval task read and tokenized once per process."""
    name: str
    records: list[Record]
    prompts: list[str]                 # chat-formatted, generation starts right after
    examples: list[Example]            # prompt + reference response, for the loss
    shots: list[Example]               # the pool of shots, tokenized
    shot_ids: list[str]
    max_new_tokens: int                # the task's, capped by eval.max_new_tokens


def load_task(data_dir: Path, name: str, task_max_new_tokens: int, tokenizer, cfg: Config) -> TaskData:
    """Eval task `name` of a built data directory, tokenized; `task_max_new_tokens`: its data manifest's."""
    d = cfg.data
    test_file, shots_file = data_dir / eval_task_file(name, "test"), data_dir / eval_task_file(name, "shots")
    test_rows, shot_rows = read_sft(test_file), read_sft(shots_file)
    records = [Record.from_row({k: v for k, v in r.items() if k not in ("prompt", "response")}, str(test_file))
               for r in test_rows]
    prompts = [chat_text(tokenizer, r["prompt"], None, d.use_chat_template)[0] for r in test_rows]
    kw = dict(max_length=d.max_length, truncation=d.truncation, use_chat_template=d.use_chat_template)
    return TaskData(name=name, records=records, prompts=prompts,
                    examples=tokenize(test_rows, tokenizer, where=str(test_file), **kw),
                    shots=tokenize(shot_rows, tokenizer, where=str(shots_file), **kw),
                    shot_ids=[r["id"] for r in shot_rows],
                    max_new_tokens=min(task_max_new_tokens, cfg.eval.max_new_tokens))
