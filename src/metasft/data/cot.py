"""Chain-of-thought augmentation: a step-by-step solution for records that state only their answer.

Some sources have no worked solution (the AIME CSV, MMLU, Geometry3K, most of TheoremQA). Their
loaders write a one-sentence placeholder (`placeholder_solution`) so every record still has a
non-empty `solution`. The design's `augment_with_cot(problem, solution)` replaces those placeholders
with a solution written by a teacher model behind any OpenAI-compatible chat-completions endpoint.
Every response is cached on disk under a hash of (model, prompt), so a rerun makes no calls. The data
build (data.cot) applies it to the meta-training tasks and, with data.cot.eval_shots, to each eval
task's pool of shots, which few-shot adaptation and Baseline 2 (sft_task) train on; test items keep
their sources' solutions.

`shows_working` tells a worked solution from an answer-only one, so the data manifest can say per eval
task whether its shots reason (`worked_share`, `WORKED_SHARE`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from metasft.data.records import OPTION_LETTERS, Record

logger = logging.getLogger(__name__)

# The design's prompt, verbatim; `{solution}` receives the known final answer.
PROMPT_ZH = (
    "为以下数学问题生成详细的解题步骤：\n\n问题: {problem}\n答案: {solution}\n\n要求:\n1. 逐步分解问题\n"
    "2. 解释每一步的推理\n3. 最后给出明确的答案\n\n格式:\n让我们一步步解决这个问题：\n\n步骤1: ...\n"
    "步骤2: ...\n...\n\n因此，答案是 {solution}。"
)
PROMPT_EN = (
    "Write a detailed step-by-step solution to the following problem.\n\nProblem: {problem}\n"
    "Answer: {solution}\n\nRequirements:\n1. Break the problem down step by step\n"
    "2. Explain the reasoning behind each step\n3. End with a clear final answer\n\nFormat:\n"
    "Let's solve this problem step by step:\n\nStep 1: ...\nStep 2: ...\n...\n\n"
    "Therefore, the answer is {solution}."
)
PROMPTS = {"zh": PROMPT_ZH, "en": PROMPT_EN}

# Request settings. The endpoint itself comes from `metasft.config.CotArgs` (data.cot in a config).
TEMPERATURE = 0.0
MAX_TOKENS = 1024
TIMEOUT_S = 120.0
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "metasft" / "cot"


def placeholder_solution(stated: str, theorem: str = "") -> str:
    """The one sentence a loader writes as `solution` when its source has none.

    `stated` is `answer_text(answer, choices)`; `theorem` (TheoremQA) must also be the record's `topic`,
    so that `lacks_worked_solution` recognises the sentence.
    """
    lead = f"Using {theorem}, t" if theorem else "T"
    return f"{lead}he answer is {stated}."


def lacks_worked_solution(record: Record) -> bool:
    """True when the record's solution is exactly its `placeholder_solution`: it states the answer only."""
    stated = answer_text(record.answer, record.choices)
    return record.solution.strip() in (placeholder_solution(stated), placeholder_solution(stated, record.topic))


# A solution shows working when it is not its record's answer-only placeholder and, with the answer and
# the words of an answer statement removed, at least MIN_WORK_WORDS words are left. "The answer is 5."
# and a bare "5" leave none; MATH's shortest solutions ("Since $\sin 0 = 0,$ $\arcsin 0 = \boxed{0}.$")
# leave 4. On ../shared/data: MATH, GSM8K and AIME 2024 solutions 100 % show working, ScienceQA's 82-96 %
# (the rest have no solution text), TheoremQA, MMLU, the AIME CSV and Geometry3K 0 %.
MIN_WORK_WORDS = 3
# a pool of shots "reasons" when at least this share shows working: a 5-shot prompt then holds on average
# under half an answer-only shot
WORKED_SHARE = 0.9
_ANSWER_WORDS = frozenset({"the", "final", "answer", "is", "so", "thus", "therefore", "hence", "boxed"})
_WORD = re.compile(r"[^\W_]+")


def shows_working(record: Record) -> bool:
    """Whether `record.solution` is a worked solution, not only a statement of the answer (see MIN_WORK_WORDS)."""
    if lacks_worked_solution(record):
        return False
    text = record.solution.replace(answer_text(record.answer, record.choices), " ")
    if not record.choices:  # a choice's bare letter would cut words
        text = text.replace(record.answer, " ")
    return sum(w.lower() not in _ANSWER_WORDS for w in _WORD.findall(text)) >= MIN_WORK_WORDS


def worked_share(records: list[Record]) -> float | None:
    """The share of `records` whose solutions show working; None for no records."""
    return sum(map(shows_working, records)) / len(records) if records else None


def answer_text(answer: str, choices: tuple[str, ...] = ()) -> str:
    """The final answer as a reader would state it: '(B) 42' for a choice letter, else `answer`."""
    if choices:
        return f"({answer}) {choices[ord(answer) - ord('A')]}"
    return answer


def build_prompt(problem: str, solution: str, language: str = "zh") -> str:
    """The design's prompt for one problem; `solution` is the known final answer."""
    return PROMPTS[language].format(problem=problem, solution=solution)


def augment_with_cot(records: list[Record], cot, language: str = "zh") -> list[Record]:
    """Return `records` with each placeholder solution replaced by a teacher model's solution.

    `cot` has `base_url` (None or "": augmentation off), `model`, `api_key_env` (an unset variable
    sends no Authorization header) and `cache_dir` (None: ~/.cache/metasft/cot), as
    `metasft.config.CotArgs`; `language` picks the prompt ("zh": the design's, "en"). Records that
    already have a worked solution are returned unchanged. A response that never mentions the known
    answer is not used (the record keeps its placeholder) and is counted in a warning.
    """
    if language not in PROMPTS:
        raise ValueError(f"CoT language must be one of {sorted(PROMPTS)}, got {language!r}")
    if cot.base_url and not cot.model:
        raise ValueError("data.cot.model must be set when data.cot.base_url is set")
    todo = [i for i, r in enumerate(records) if lacks_worked_solution(r)]
    if not cot.base_url:
        if todo:
            logger.warning("no CoT endpoint configured: using the sources' own solutions "
                           "(%d of %d records have only a one-line answer)", len(todo), len(records))
        return list(records)
    api_key = os.environ.get(cot.api_key_env, "") if cot.api_key_env else ""
    cache = Path(cot.cache_dir) if cot.cache_dir else DEFAULT_CACHE
    out = list(records)
    calls = rejected = 0
    for i in todo:
        record = records[i]
        stated = answer_text(record.answer, record.choices)
        prompt = build_prompt(record.problem, stated, language)
        path = cache / f"{_cache_key(cot.model, prompt)}.json"
        if path.is_file():
            text = json.loads(path.read_text(encoding="utf-8"))["response"]
        else:
            text = chat_completion(cot.base_url, cot.model, prompt, api_key, record.id)
            _write_atomic(path, {"model": cot.model, "prompt": prompt, "response": text})
            calls += 1
        text = text.strip()
        if _states_answer(text, record):
            out[i] = dataclasses.replace(record, solution=text)
        else:
            rejected += 1
    logger.info("CoT: %d records lacked a solution, %d endpoint calls, %d cached", len(todo), calls, len(todo) - calls)
    if rejected:
        logger.warning("CoT: %d responses did not state the known answer; those records keep their placeholder", rejected)
    return out


def chat_completion(base_url: str, model: str, prompt: str, api_key: str = "", record_id: str = "") -> str:
    """One POST to `{base_url}/chat/completions`; the first choice's message text."""
    url = base_url.rstrip("/") + "/chat/completions"
    body = {"model": model, "messages": [{"role": "user", "content": prompt}],
            "temperature": TEMPERATURE, "max_tokens": MAX_TOKENS}
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            reply = json.loads(response.read())
        return reply["choices"][0]["message"]["content"]
    except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise RuntimeError(f"CoT request to {url} for record {record_id!r} failed: {e}") from e


def _states_answer(text: str, record: Record) -> bool:
    """Whether a generated solution mentions the known answer: '(B)' or the option's text for a
    choice (a bare letter appears in any English text), else the answer string."""
    if record.choices:
        return f"({record.answer})" in text or record.choices[OPTION_LETTERS.index(record.answer)] in text
    return record.answer in text


def _cache_key(model: str, prompt: str) -> str:
    return hashlib.sha256(json.dumps([model, prompt], ensure_ascii=False).encode()).hexdigest()


def _write_atomic(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
