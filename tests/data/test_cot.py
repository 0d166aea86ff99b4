"""CoT augmentation against a tiny OpenAI-compatible server on 127.0.0.1 that counts its calls."""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from metasft.data.cot import (
    PROMPT_ZH, answer_text, augment_with_cot, build_prompt, lacks_worked_solution, placeholder_solution,
)
from metasft.data.records import Record
from metasft.rundir import MANIFEST, eval_task_file


def record(rid, solution=None, answer="12", choices=(), topic=""):
    kind = "choice" if choices else "math"
    stated = answer_text(answer, choices)
    return Record(id=rid, problem=f"Problem {rid}", solution=solution or placeholder_solution(stated, topic),
                  answer=answer, domain="algebra", subject="algebra", source="test", topic=topic,
                  answer_type=kind, choices=choices)


@pytest.fixture
def server():
    """(base_url, requests): each POST is recorded; the reply states the answer from the prompt."""
    requests = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
            prompt = body["messages"][0]["content"]
            stated = prompt.split("答案: ")[1].split("\n")[0] if "答案: " in prompt else "nothing"
            if "Problem never" in prompt:
                stated = "something else"
            content = f"让我们一步步解决这个问题：\n\n步骤1: think.\n\n因此，答案是 {stated}。"
            payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", requests
    httpd.shutdown()
    httpd.server_close()


def cot(base_url, tmp_path, **kw):
    return SimpleNamespace(**{"base_url": base_url, "model": "teacher", "api_key_env": "METASFT_TEST_KEY",
                              "cache_dir": str(tmp_path / "cache"), **kw})


def test_placeholder_predicate():
    assert lacks_worked_solution(record("a"))
    assert lacks_worked_solution(record("b", answer="B", choices=("1", "2")))
    assert lacks_worked_solution(record("c", topic="Fermat's little theorem"))
    assert not lacks_worked_solution(record("d", solution="2 * 6 = 12, so the answer is 12."))
    assert not lacks_worked_solution(record("e", solution="The answer is 13."))  # not this record's answer
    assert placeholder_solution("(B) 2") == "The answer is (B) 2."


def test_prompt_is_the_design_prompt():
    prompt = build_prompt("1+1?", "2", "zh")
    assert prompt == PROMPT_ZH.format(problem="1+1?", solution="2")
    assert prompt.startswith("为以下数学问题生成详细的解题步骤：\n\n问题: 1+1?\n答案: 2\n")
    assert prompt.endswith("因此，答案是 2。")
    assert "Problem: 1+1?\nAnswer: 2" in build_prompt("1+1?", "2", "en")


def test_no_endpoint_returns_records_unchanged(caplog):
    records = [record("a"), record("b", solution="worked: 12")]
    for base_url in (None, ""):
        assert augment_with_cot(records, SimpleNamespace(base_url=base_url, model=None, api_key_env="X",
                                                         cache_dir=None), "zh") == records
    assert "no CoT endpoint configured" in caplog.text and "1 of 2 records" in caplog.text


def test_calls_once_then_reads_the_cache(server, tmp_path, monkeypatch):
    base_url, requests = server
    monkeypatch.setenv("METASFT_TEST_KEY", "sk-test")
    worked = record("w", solution="Six twos are 12.")
    records = [record("a"), worked, record("b", answer="C", choices=("x", "y", "z"))]
    first = augment_with_cot(records, cot(base_url, tmp_path), "zh")
    assert len(requests) == 2  # only the two placeholders
    assert requests[0]["path"] == "/v1/chat/completions" and requests[0]["auth"] == "Bearer sk-test"
    assert requests[0]["body"]["model"] == "teacher"
    assert requests[0]["body"]["messages"][0]["content"] == build_prompt("Problem a", "12", "zh")
    assert first[1] is worked
    assert first[0].solution.endswith("因此，答案是 12。") and first[2].solution.endswith("答案是 (C) z。")
    assert not any(lacks_worked_solution(r) for r in first)
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2 and not list((tmp_path / "cache").glob("*.tmp"))

    second = augment_with_cot(records, cot(base_url, tmp_path), "zh")
    assert len(requests) == 2, "a rerun must be answered from the cache"
    assert second == first
    augment_with_cot(records, cot(base_url, tmp_path, model="other-teacher"), "zh")
    assert len(requests) == 4, "the cache key includes the model"


def test_response_without_the_answer_is_not_used(server, tmp_path, caplog):
    base_url, requests = server
    bad = Record(id="n", problem="Problem never answered", solution="The answer is 12.", answer="12",
                 domain="algebra", subject="algebra", source="test")
    out = augment_with_cot([bad], cot(base_url, tmp_path, api_key_env=None), "zh")
    assert out == [bad] and len(requests) == 1 and requests[0]["auth"] is None
    assert "did not state the known answer" in caplog.text


def test_endpoint_failure_names_url_and_record(tmp_path):
    with pytest.raises(RuntimeError, match=r"127\.0\.0\.1:9/v1/chat/completions for record 'a'"):
        augment_with_cot([record("a")], cot("http://127.0.0.1:9/v1", tmp_path), "en")
    with pytest.raises(ValueError, match="model"):
        augment_with_cot([record("a")], cot("http://127.0.0.1:9/v1", tmp_path, model=None), "en")


def test_accepts_the_config_dataclass(tmp_path, caplog):
    from metasft.config import CotArgs

    caplog.set_level(logging.WARNING)
    assert augment_with_cot([record("a")], CotArgs(), "en") == [record("a")]


# ------------------------------------------------------------------ shots that reason (issue 20)
def test_shows_working_tells_worked_solutions_from_answers():
    from metasft.data.cot import shows_working

    assert not shows_working(record("a"))  # the placeholder
    assert not shows_working(record("b", answer="B", choices=("1", "2")))
    assert not shows_working(record("c", topic="Fermat's little theorem"))
    assert not shows_working(record("d", solution="12"))
    assert not shows_working(record("e", solution="So the final answer is $\\boxed{12}$."))
    assert shows_working(record("f", answer="0", solution="Since $\\sin 0 = 0,$ $\\arcsin 0 = \\boxed{0}.$"))
    assert shows_working(record("g", solution="Six twos are 12.\nSo the answer is 12."))


def test_worked_share_of_the_real_sources(shared_data):
    from metasft.data.cot import worked_share
    from metasft.data.sources import load_source

    assert worked_share(load_source("gsm8k", "test", shared_data)) == 1.0
    assert worked_share(load_source("math", "math500", shared_data)) == 1.0
    assert worked_share(load_source("aime", "aime24", shared_data)) == 1.0
    for name, split in (("theoremqa", "test"), ("mmlu_stem", "dev"), ("aime", "all")):
        assert worked_share(load_source(name, split, shared_data)) == 0.0, name
    assert worked_share([]) is None


SHOTS_CONFIG = """
data:
  template: zh
  val_max_samples: 2
  tasks:
    - {name: algebra, source: math, subject: algebra, exclude_levels: [5], support: 4, query: 4}
  eval_tasks:
    - {name: hard_algebra, source: math, subject: algebra, level: 5, split: test, shots_split: train,
       n_shots: [0, 2], test_size: 3}
    - {name: theorem_proving, source: theoremqa, subject: particle, split: test, shots_split: test,
       n_shots: [0, 2], test_size: 2, unseen: true}
    - {name: mmlu_stem, source: mmlu_stem, subjects: [college_physics], split: test, shots_split: dev,
       n_shots: [0, 2], test_size: 3, cross_domain: true}
"""


def test_cot_covers_the_eval_tasks_shots_and_the_manifest_says_which_reason(server, tmp_path, shared_data):
    """TheoremQA's and MMLU's shots are answer-only as loaded; with an endpoint they get worked solutions
    (the files few-shot adaptation and sft_task read), their test items keep theirs, and the manifest
    records per eval task whether its shots show working."""
    from metasft.config import load_config
    from metasft.data.build import build_data
    from metasft.data.store import read_records

    base_url, requests = server
    path = tmp_path / "c.yaml"
    path.write_text(SHOTS_CONFIG)
    plain = build_data(load_config(path, [f"data_root={shared_data}"]), tmp_path / "plain")
    reason = {name: (t.shots_reason, t.shots_worked) for name, t in plain.eval_tasks.items()}
    assert reason == {"hard_algebra": (True, 1.0), "theorem_proving": (False, 0.0), "mmlu_stem": (False, 0.0)}
    assert not requests

    overrides = [f"data_root={shared_data}", f"data.cot.base_url={base_url}", "data.cot.model=teacher",
                 f"data.cot.cache_dir={tmp_path / 'cache'}"]
    cot = build_data(load_config(path, overrides), tmp_path / "cot")
    assert {name: t.shots_reason for name, t in cot.eval_tasks.items()} == dict.fromkeys(reason, True)
    n_shots = cot.eval_tasks["theorem_proving"].splits["shots"].n + cot.eval_tasks["mmlu_stem"].splits["shots"].n
    assert len(requests) == n_shots >= 2 + 2  # the answer-only shots only; MATH's are worked already
    for task in ("theorem_proving", "mmlu_stem"):
        shots = read_records(tmp_path / "cot" / eval_task_file(task, "shots"))
        assert all("步骤1" in r.solution and not lacks_worked_solution(r) for r in shots)
        test = read_records(tmp_path / "cot" / eval_task_file(task, "test"))
        assert test and all(lacks_worked_solution(r) for r in test)  # scored items keep their references
    manifest = json.loads((tmp_path / "cot" / MANIFEST).read_text())
    assert manifest["eval_tasks"]["mmlu_stem"]["shots_reason"] is True

    # data.cot.eval_shots=false: meta-training only, as before issue 20
    off = build_data(load_config(path, overrides + ["data.cot.eval_shots=false"]), tmp_path / "off")
    assert off.eval_tasks["theorem_proving"].shots_reason is False
