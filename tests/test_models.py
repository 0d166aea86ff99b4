"""metasft.models: the embedded model's tokenizer converted on its own (all `tiny-llama` needs) is the
tokenizer of the converted model."""
from transformers import AutoTokenizer

from metasft.models import embedded_model_dir, embedded_tokenizer_dir

NAME = "smollm2-135m-instruct"


def test_the_tokenizer_converted_alone_is_the_converted_models(tmp_path):
    alone = embedded_tokenizer_dir(NAME, tmp_path)
    assert alone.parent == tmp_path and not list(tmp_path.rglob("*.safetensors"))  # no weights converted
    full = embedded_model_dir(NAME)  # the shared cache's conversion (tokenizer and weights)
    a, b = AutoTokenizer.from_pretrained(alone), AutoTokenizer.from_pretrained(full)
    assert a.get_vocab() == b.get_vocab() and len(a) == len(b) == 49152
    assert (a.bos_token, a.eos_token, a.pad_token) == (b.bos_token, b.eos_token, b.pad_token) == \
           ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert a.chat_template == b.chat_template
    chat = [{"role": "user", "content": "What is 12 × 7? Think step by step."}]
    assert a.apply_chat_template(chat, add_generation_prompt=True) == b.apply_chat_template(chat, add_generation_prompt=True)
    text = "Let $x^2 = 49$, so $x = \\pm 7$.\n\nThe answer is 7."
    assert a(text)["input_ids"] == b(text)["input_ids"]
    assert embedded_tokenizer_dir(NAME) == full  # where the model is converted, its directory serves
