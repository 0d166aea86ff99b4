import pytest

from metasft.data.formats import build_prompt, chat_text, to_sft
from metasft.data.records import Record

REC = Record(id="x", problem="Solve for x: 2x + 3 = 7.", solution="2x = 4\nx = 2", answer="2",
             domain="algebra", subject="algebra", source="embedded", level=2)


def test_design_chinese_template():
    sft = to_sft(REC, "zh")
    assert sft["prompt"] == "请解决以下数学问题：\n\n问题：Solve for x: 2x + 3 = 7.\n\n请提供详细的解题步骤和最终答案。"
    assert sft["response"].endswith("因此，答案是 $\\boxed{2}$。")
    assert sft["metadata"]["level"] == 2 and sft["metadata"]["type"] == "algebra"


def test_english_template_and_boxed_solutions_kept():
    assert to_sft(REC, "en")["response"] == "2x = 4\nx = 2\n\nThe answer is $\\boxed{2}$."
    boxed = Record(**{**REC.__dict__, "solution": "So $x = \\boxed{2}$."})
    assert to_sft(boxed, "en")["response"] == "So $x = \\boxed{2}$."


def test_choices_are_lettered_in_the_prompt():
    mc = Record(**{**REC.__dict__, "answer": "B", "answer_type": "choice", "choices": ("1", "2")})
    assert "(A) 1\n(B) 2" in build_prompt(mc, "en")


@pytest.mark.floors
def test_chat_template_applied_and_prompt_is_a_prefix(tiny):
    _, tok = tiny
    prompt, response = chat_text(tok, "What is 1+1?", "It is 2.")
    assert "<|im_start|>user\nWhat is 1+1?<|im_end|>" in prompt and prompt.endswith("<|im_start|>assistant\n")
    assert response == "It is 2.<|im_end|>"  # ends with the end-of-turn token, where generation stops
    assert tok.pad_token == "<|im_end|>"
    plain, _ = chat_text(tok, "What is 1+1?", "It is 2.", use_chat_template=False)
    assert plain == "What is 1+1?\n\n"
