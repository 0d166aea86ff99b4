"""The SFT record format of the design (`convert_to_sft_format`): prompt / response / metadata.

Two prompt templates: the design's Chinese one and an English one. The response is the record's chain
of thought ending in a final-answer line with `\\boxed{answer}` (kept as is when the solution already
boxes its answer), so one answer extractor reads every source's responses.
"""
from __future__ import annotations

from metasft.data.records import Record

TEMPLATES = {
    "zh": {
        "prompt": "请解决以下数学问题：\n\n问题：{problem}\n\n请提供详细的解题步骤和最终答案。",
        "choices": "\n\n选项：\n{options}",
        "final": "因此，答案是 $\\boxed{{{answer}}}$。",
    },
    "en": {
        "prompt": "Solve the following problem.\n\nProblem: {problem}\n\nShow your reasoning step by step and give the final answer.",
        "choices": "\n\nOptions:\n{options}",
        "final": "The answer is $\\boxed{{{answer}}}$.",
    },
}


def build_prompt(record: Record, template: str = "en") -> str:
    """The problem in the template, with lettered options for multiple choice."""
    t = TEMPLATES[template]
    problem = record.problem
    if record.choices:
        options = "\n".join(f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(record.choices))
        problem += t["choices"].format(options=options)
    return t["prompt"].format(problem=problem)


def build_response(record: Record, template: str = "en") -> str:
    solution = record.solution.strip()
    if "\\boxed" in solution:
        return solution
    return f"{solution}\n\n{TEMPLATES[template]['final'].format(answer=record.answer)}"


def to_sft(record: Record, template: str = "en") -> dict:
    """The design's SFT record: {'prompt', 'response', 'metadata'}."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; expected one of {sorted(TEMPLATES)}")
    return {
        "prompt": build_prompt(record, template),
        "response": build_response(record, template),
        "metadata": {"id": record.id, "level": record.level, "type": record.subject,
                     "domain": record.domain, "source": record.source, "answer": record.answer,
                     "answer_type": record.answer_type},
    }


def chat_text(tokenizer, prompt: str, response: str | None = None, use_chat_template: bool = True) -> tuple[str, str]:
    """(prompt_text, response_text) ready to tokenize: the model's chat template when it has one.

    The prompt part ends where generation starts, so masking it leaves exactly the response tokens
    (and the end-of-turn token) in the loss.
    """
    eos = tokenizer.eos_token or ""
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return prompt_text, ("" if response is None else response + eos)
    prompt_text = f"{prompt}\n\n"
    return prompt_text, ("" if response is None else response + eos)
