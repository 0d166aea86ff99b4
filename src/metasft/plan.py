"""`metasft plan`: what a config will cost, stage by stage, before anything runs (issue 14).

Counts come from the config through the functions the stages use themselves (matrix.plan_runs and
meta_budget, train.run.sft_budget, eval.schedule.enumerate_groups and recorded_steps); token lengths
from per-source means (SOURCE_TOKENS); wall time from a throughput table per device kind
(THROUGHPUT, whose fields a YAML file may replace). Every figure is an estimate, printed with the
assumptions behind it.

FLOPs (Kaplan et al. 2020's 2 per parameter, token and pass): a forward pass costs 2 x body per token
(body: the decoder layers, every parameter but the embedding and the LM head) and 2 x head per position
scored through the LM head (metasft's loss scores only response tokens; a prompt's prefill only its last
position); attention's length-squared term is left out (under 5% at these lengths). LoRA training costs
twice that: the backward pass's input gradients; the frozen weights get no weight gradient (full
fine-tuning's third 2N), and the adapters' own products (rank << width) are left out. Gradient
checkpointing adds one more forward of the body. A decoded token costs 2 x (body + head), and every
decoding step reads all weights once: at small batches that read, not the arithmetic, sets the pace.
Matmuls run in bfloat16 where training autocasts (trainer.bf16) or the weights are bfloat16; evaluation
has no autocast, so float32 weights decode in float32 (Throughput.flops_fp32).
"""
from __future__ import annotations

import dataclasses
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from metasft import arms
from metasft.config import Config, ConfigError, ModelArgs, eval_dtype, load_fields, meta_tasks
from metasft.errors import MetasftError


class PlanError(MetasftError, ValueError):
    """A plan option is out of range (an unknown device kind, workers < 1)."""


# ------------------------------------------------------------------------------------ assumptions
@dataclass(frozen=True)
class Tokens:
    """Mean tokens of one source's examples as the data build writes them: the chat-formatted prompt and
    the response; `choice`: the share of multiple-choice questions (one log-likelihood forward each)."""
    prompt: float
    response: float
    choice: float = 0.0


# Measured 2026-11-29 over every record each loader returns (SmolLM2 tokenizer, chat template,
# data.formats.to_sft; local copies from ../shared/data): embedded size 400 (3,200), champ all (270),
# math train (7,498), gsm8k train (7,473), theoremqa test (747), mmlu_stem test (3,015), aime all (917),
# scienceqa the 150-problem subset's train split (28). Geometry3K (no local copy) is assumed: a short
# problem text with four options and an answer-only response; amps and user sources are taken as MATH.
# Llama 3's larger vocabulary gives about 15% fewer tokens for the same text.
SOURCE_TOKENS = {
    "embedded": Tokens(85.2, 71.6),
    "champ": Tokens(100.2, 234.7),
    "math": Tokens(135.5, 242.7),
    "gsm8k": Tokens(114.0, 102.0),
    "theoremqa": Tokens(117.0, 30.3, choice=0.02),
    "mmlu_stem": Tokens(139.1, 27.4, choice=1.0),
    "aime": Tokens(170.4, 22.3),
    "scienceqa": Tokens(114.4, 69.0, choice=1.0),
    "geometry3k": Tokens(90.0, 12.0, choice=1.0),
}
DEFAULT_TOKENS = SOURCE_TOKENS["math"]
# Items of a task slice whose size the config does not fix (a hub or file source without support /
# query counts; an eval task's pool of shots): used for sft_task's epochs and SFT-Mixed's unique budget
ASSUMED_ITEMS = 1000
# records a source's loader returns: counted for the sources metasft ships, else assumed (a hub or file source)
PACKAGED_RECORDS = {"champ": 270}
ASSUMED_SOURCE_RECORDS = 5000


@dataclass
class Overheads:
    """Fixed seconds of a stage beyond the model's work (starting the grader, writing the report, ...)."""
    data: float = 0.0
    train: float = 0.0
    eval: float = 0.0
    similarity: float = 0.0
    report: float = 0.0


@dataclass
class Throughput:
    """One process on one device kind; the plan prints every figure as an assumption."""
    device: str = ""
    flops: float = 1.0               # sustained FLOP/s of matmuls in bfloat16 (trainer.bf16 autocast, bf16 weights)
    flops_fp32: float = 1.0          # the same in float32 (float32 weights without autocast: evaluation too)
    memory_bandwidth: float = 1.0    # bytes/s of the weight read each decoding step makes
    decode_step_s: float = 0.0       # per decoding step beyond the weight read (Python, kernel launches)
    pass_s: float = 0.0              # per micro-batch pass (Python, optimizer step, kernel launches)
    token_s: float = 0.0             # per token through a pass beyond its FLOPs (elementwise layers, the
                                     # cross-entropy over the vocabulary, padding): what bounds a narrow model
    load_s: float = 0.0              # per model build, plus its weights at load_bandwidth
    load_bandwidth: float = 1.0      # bytes/s of weights read when a model is built
    record_s: float = 0.0            # per source record the data build reads (generating, splitting, writing)
    answer_s: float = 0.0            # per generated answer (grading, storing the prediction)
    memory_gib: float = 0.0          # memory of one device (host memory for cpu)
    stage_s: Overheads = field(default_factory=Overheads)
    basis: str = ""                  # where the figures come from


# This 2-core x86 machine (AVX2, torch 2.13 CPU), float32 (bfloat16 not measured: taken as float32). The
# FLOP rates count as `flops` does: 4 x body per trained token + 4 x head per scored position, 477 MFLOP per
# token of the embedded data on SmolLM2-135M (157 tokens, 72 scored). 2 threads (torch's default here), from
# BENCHMARKS.md: 174 tokens/s trained (bench_train.py: SFT 177, FOMAML 171); memory_bandwidth = 538 MB of
# weights / 0.090 s, a decoding step's cost beyond its arithmetic (bench_generate.py, backend_merged: batch 16
# 35.6 s, batch 32 27.0 s for the same 3,060 tokens). 1 thread: 151 tokens/s trained (bench_plan.py), and
# 538 MB / 0.047 s from bench_generate.py's 1-thread figures (79.9 and 90.4 tokens/s). Both: the per-pass,
# per-step, per-build, per-answer costs and the grader's start (the eval stage's fixed cost) from
# bench_plan.py on the tiny model, less the arithmetic in them; the train stage's fixed cost is the tiny
# train/base stage less its model build (0.5 - 0.2 s). Fit to the stage times of the runs FIT_RUNS
# names: token_s, 0.12-0.18 ms per token over the tiny experiment's train, eval and similarity stages
# (the tiny model's narrow layers leave its 49k-wide cross-entropy and elementwise work the larger part;
# 2% of SmolLM2's time per token); record_s and the report stage, from the data and report stages of
# the default and the tiny experiment (0.21-0.42 ms per record over the three runs; 3.2-3.5 s).
# FIT_RUNS: `metasft run`s whose stage times (each run's manifest.json) the figures above were fitted
# to, named as tests/test_plan.py's MEASURED names them: the default at commit 24e3f3e, the tiny
# experiment at b77e8c5 (one few-shot group at a time) and at 85cb5cd (stacked). The test checks the
# estimates against the measured runs not among them too (held out: the default re-sized at d6f0cb0,
# with three seeds at e54d86f).
FIT_RUNS = ("default@24e3f3e", "tiny, one group at a time@b77e8c5", "tiny, stacked@85cb5cd")
_CPU = dict(decode_step_s=0.0005, pass_s=0.008, token_s=0.00013, load_s=0.2, load_bandwidth=1.9e9,
            record_s=0.0003, answer_s=0.0003, memory_gib=23, stage_s=Overheads(train=0.3, eval=1.0, report=3.4))
CPU = {
    1: Throughput(device="cpu (this 2-core machine, 1 thread)", flops=72e9, flops_fp32=72e9,
                  memory_bandwidth=11.5e9, basis="SmolLM2-135M on 1 thread: bench_plan.py, BENCHMARKS.md", **_CPU),
    2: Throughput(device="cpu (this 2-core machine, 2 threads)", flops=83e9, flops_fp32=83e9,
                  memory_bandwidth=6.0e9, basis="SmolLM2-135M on 2 threads: BENCHMARKS.md", **_CPU),
}
# GPU figures are stated, not measured: 30% of the peak dense tensor FLOP/s (small LoRA micro-batches in
# one process, eager PyTorch) in bf16, and of the plain FP32 peak in float32 (PyTorch leaves TF32 off for
# matmuls); 70% of HBM bandwidth; 20 ms of eager PyTorch per decoding step (about 1 ms per decoder layer
# of a 16-layer 1B model, Python and kernel launches) and 30 ms per training pass; a model build 10 s
# (CUDA context, LoRA) plus its weights from local disk at 1 GB/s.
_GPU = dict(decode_step_s=0.020, pass_s=0.030, load_s=10.0, load_bandwidth=1e9, record_s=0.0004, answer_s=0.001,
            memory_gib=80, stage_s=Overheads(data=5.0, train=5.0, eval=5.0, similarity=5.0, report=5.0))
THROUGHPUT = {
    "cpu": CPU[2],
    "h100": Throughput(device="h100 (one NVIDIA H100 SXM 80 GB)", flops=0.30 * 989e12, flops_fp32=0.30 * 67e12,
                       memory_bandwidth=0.70 * 3.35e12,
                       basis="assumed: 30% of 989 TFLOP/s bf16 and 67 TFLOP/s fp32, 70% of 3.35 TB/s", **_GPU),
    "a100": Throughput(device="a100 (one NVIDIA A100 SXM 80 GB)", flops=0.30 * 312e12, flops_fp32=0.30 * 19.5e12,
                       memory_bandwidth=0.70 * 2.04e12,
                       basis="assumed: 30% of 312 TFLOP/s bf16 and 19.5 TFLOP/s fp32, 70% of 2.04 TB/s", **_GPU),
}


def throughput(kind: str, override: str | Path | None = None, threads: int | None = None) -> Throughput:
    """The table of device `kind` (cpu: at `threads`, default torch's, which OMP_NUM_THREADS sets), with the
    keys of YAML file `override` replaced (strict: an unknown key is an error)."""
    if kind not in THROUGHPUT:
        raise PlanError(f"--gpu: unknown device kind {kind!r}; expected one of {', '.join(THROUGHPUT)}")
    base = THROUGHPUT[kind]
    if kind == "cpu":
        import torch
        base = CPU[1 if (threads or torch.get_num_threads()) == 1 else 2]
    if override is None:
        return base
    tp = load_fields(base, override)
    rates = ("flops", "flops_fp32", "memory_bandwidth", "load_bandwidth")  # divided by: must be > 0
    for key, value in [(k, getattr(tp, k)) for k in rates + ("decode_step_s", "pass_s", "token_s", "load_s",
                                                              "record_s", "answer_s", "memory_gib")] + \
            [(f"stage_s.{k}", v) for k, v in dataclasses.asdict(tp.stage_s).items()]:
        if not (math.isfinite(value) and (value > 0 if key in rates else value >= 0)):
            raise PlanError(f"{override}: {key} must be {'> 0' if key in rates else '>= 0'}, got {value}")
    return tp


# ------------------------------------------------------------------------------------ the model
@dataclass(frozen=True)
class ModelShape:
    """What the cost of a model depends on; widths are per layer."""
    name: str
    params: int          # every base parameter, a tied embedding once
    body: int            # the decoder layers' and norms' (every parameter but the embedding and the LM head)
    head: int            # the LM head's (vocab x hidden): its product runs only on scored positions
    lora: int            # LoRA parameters over model.target_modules
    layers: int
    hidden: int
    kv: int              # key/value width (kv heads x head dim)
    intermediate: int
    vocab: int
    weight_bytes: int    # bytes of one base weight (model.dtype)

    def activation_values(self) -> int:
        """Values one token keeps per layer for the backward pass: the norms' and projections' inputs
        (6 x hidden), keys and values (2 x kv), the MLP's gate, up, activation and product (4 x intermediate)."""
        return 6 * self.hidden + 2 * self.kv + 4 * self.intermediate


def model_shape(m: ModelArgs) -> ModelShape:
    """Count the parameters of model.partial_pretrain on the meta device: no weights are read."""
    import torch

    from metasft.models import meta_model

    config, model = meta_model(m)
    lora = sum(m.lora_rank * (module.in_features + module.out_features) for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in m.target_modules)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    embedding, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    params = sum(p.numel() for p in model.parameters())
    return ModelShape(name=m.partial_pretrain, params=params, lora=lora,
                      body=params - embedding.numel() - (0 if head is embedding else head.numel()), head=head.numel(),
                      layers=config.num_hidden_layers, hidden=config.hidden_size,
                      kv=config.num_key_value_heads * head_dim, intermediate=config.intermediate_size,
                      vocab=config.vocab_size, weight_bytes=4 if m.dtype == "float32" else 2)


# ------------------------------------------------------------------------------------ work per stage
@dataclass
class Work:
    """What a stage computes, totals over the stage."""
    records: int = 0            # source records the data build reads
    examples: int = 0           # examples trained on (the run's budget; eval: adaptation)
    train_tokens: float = 0.0   # tokens through forward + backward passes
    train_rows: float = 0.0     # of them, positions scored through the LM head (response tokens)
    forward_tokens: float = 0.0  # tokens through forward-only passes (losses, prompts)
    forward_rows: float = 0.0   # of them, positions scored (a prompt's prefill: its last)
    generated: float = 0.0      # tokens decoded: every answer runs to its max_new_tokens (an upper bound)
    decode_steps: int = 0       # batched decoding steps
    answers: int = 0            # generated answers graded and stored
    passes: int = 0             # micro-batch passes
    loads: int = 0              # model builds

    def train(self, examples: int, size: Size, passes: int, budget: bool = True) -> None:
        """`examples` of `size` each through forward + backward in `passes` passes; `budget`: they count
        among the examples trained on (validation's adaptation does not)."""
        self.examples += examples if budget else 0
        self.train_tokens += examples * size.tokens
        self.train_rows += examples * size.rows
        self.passes += passes

    def forward(self, examples: int, size: Size, micro: int) -> None:
        self.forward_tokens += examples * size.tokens
        self.forward_rows += examples * size.rows
        self.passes += math.ceil(examples / micro)


# Resident bytes of a metasft process before its model's tensors: the interpreter, torch, transformers,
# peft, the tokenizer (VmRSS after those imports and load_base on this machine, torch 2.13 CPU: 0.39 GB;
# on a GPU the CUDA context takes about as much device memory)
RUNTIME_BYTES = 0.4e9


@dataclass(frozen=True)
class Memory:
    """Bytes one process of a stage holds."""
    weights: float              # the base model's
    adapter: float              # LoRA with its gradients and optimizer states (every stacked cell's)
    activations: float = 0.0    # while adapting or training: one pass's, kept for its backward pass
    kv_cache: float = 0.0       # while generating: the decoding batch's KV cache and whatever else it holds
    runtime: float = RUNTIME_BYTES

    @property
    def peak(self) -> float:
        """Adapting and generating alternate: the larger of the two on top of the process and the model."""
        return self.runtime + self.weights + self.adapter + max(self.activations, self.kv_cache)


@dataclass
class Stage:
    name: str
    work: Work
    memory: Memory | None       # None: no model
    parallel: bool = False      # split across --workers processes
    half: bool = False          # matmuls in bfloat16 (else float32)


@dataclass(frozen=True)
class Size:
    """One sequence: its tokens and the positions of them scored through the LM head."""
    tokens: float
    rows: float


def _example(t: Tokens, max_length: int) -> Size:
    """A training example: prompt + response, cut at max_length (data.truncation right); its response scored."""
    tokens = min(t.prompt + t.response, max_length)
    return Size(tokens, max(1.0, tokens - t.prompt))


def _prompt(t: Tokens) -> Size:
    """A prompt's prefill: its last position scored (the first token generated, or the option letter)."""
    return Size(t.prompt, 1.0)


def _tokens(source: str) -> Tokens:
    return SOURCE_TOKENS.get(source.lower(), DEFAULT_TOKENS)


def _level_share(levels: list[int], excluded: list[int] = ()) -> float:
    """The embedded generator spreads a domain's problems evenly over levels 1-5."""
    kept = set(levels or range(1, 6)) - set(excluded)
    return len(kept) / 5


def _meta_splits(cfg: Config) -> dict[str, dict[str, int]]:
    """Support / query / val counts per data.tasks entry: data.tasks.split_sizes on the slice's items
    where the config fixes them (the embedded generator's size), else the counts it gives, else assumed."""
    from metasft.data.tasks import split_sizes

    d, out = cfg.data, {}
    for t in d.tasks:
        items = (round(t.size * _level_share(t.levels, t.exclude_levels)) if t.size and t.source == "embedded"
                 else None)
        if items is None and t.support_max_samples is not None and t.query_max_samples is not None:
            held_out = d.val_max_samples if d.val_ratio > 0 else 0
            out[t.name] = {"support": t.support_max_samples, "query": t.query_max_samples, "val": held_out}
            continue
        out[t.name] = split_sizes(items or ASSUMED_ITEMS, task=t.name, support_ratio=d.support_ratio,
                                  query_ratio=d.query_ratio, val_ratio=d.val_ratio, val_max=d.val_max_samples,
                                  support_max=t.support_max_samples, query_max=t.query_max_samples)
    return out


def _shots_pool(t) -> int:
    """An eval task's pool of shots: the embedded generator's size in its levels, else assumed."""
    levels = t.levels or ([t.level] if t.level else [])
    return round(t.size * _level_share(levels)) if t.size and t.source == "embedded" else ASSUMED_ITEMS


def _source_records(cfg: Config) -> int:
    """Records the data build's loaders return: once per (source, split, size)."""
    from metasft.data.sources.embedded import DEFAULT_SIZE, DOMAINS

    loads = {(t.source.lower(), t.split, t.size) for t in cfg.data.tasks}
    for t in cfg.data.eval_tasks:
        loads |= {(t.source.lower(), t.split, t.size), (t.source.lower(), t.shots_split, t.size)}
    return sum((size or DEFAULT_SIZE) * len(DOMAINS) if source == "embedded"
               else PACKAGED_RECORDS.get(source, ASSUMED_SOURCE_RECORDS) for source, _, size in loads)


def _validations(test_freq: int, total_steps: int) -> int:
    """Validations of a run: step 0, every test_freq steps and the last (train.session.Session)."""
    if not test_freq:
        return 0
    return 1 + len(set(range(test_freq, total_steps + 1, test_freq)) | {total_steps})


class _Planner:
    """Work and memory of every stage of `metasft run` on one config."""

    def __init__(self, cfg: Config, shape: ModelShape):
        self.cfg, self.shape = cfg, shape
        self.splits = _meta_splits(cfg)
        self.sources = {t.name: t.source for t in cfg.data.tasks}
        self.n_tasks = len(meta_tasks(cfg))
        self.meta_examples: dict[str, int] = {}

    # -------------------------------------------------------------------- memory
    def _activations(self, examples: int, cfg: Config, half: bool) -> float:
        """Bytes one micro-batch keeps for its backward pass at data.max_length tokens per example, logits
        and their gradient (float32) included."""
        s, tokens = self.shape, examples * cfg.data.max_length
        per_layer = s.activation_values() if not cfg.model.gradient_checkpointing else s.hidden
        return tokens * (s.layers * per_layer * (2 if half else 4) + 2 * s.vocab * 4)

    def _memory(self, adapter_copies: int, activations: float = 0.0, kv_cache: float = 0.0) -> Memory:
        """The model, `adapter_copies` float32 LoRA-sized tensors, activations, KV cache."""
        s = self.shape
        return Memory(s.params * s.weight_bytes, 4 * s.lora * adapter_copies, activations, kv_cache)

    def _kv_cache(self, batch: int, length: int, value_bytes: int | None = None) -> float:
        """Keys and values of `batch` rows of `length` slots, in the base weights' dtype (or `value_bytes`)."""
        s = self.shape
        return 2 * s.layers * s.kv * length * batch * (value_bytes or s.weight_bytes)

    # -------------------------------------------------------------------- stages
    def data(self) -> Stage:
        return Stage("data", Work(records=_source_records(self.cfg)), None)

    def train(self, run) -> Stage:
        from metasft.budget import meta_budget
        from metasft.train.run import sft_budget

        cfg, w, m = run.cfg, Work(loads=1), run.cfg.meta
        half = cfg.trainer.bf16 or cfg.model.dtype == "bfloat16"  # TrainModel's autocast, or bf16 weights
        if arms.ARMS[run.arm].kind == "none":
            return Stage(f"train/{run.name}", w, self._memory(1), half=half)
        sizes = [_example(_tokens(self.sources.get(t.name, "")), cfg.data.max_length) for t in meta_tasks(cfg)]
        size = Size(sum(x.tokens for x in sizes) / len(sizes), sum(x.rows for x in sizes) / len(sizes))
        val_examples = sum(s["val"] for s in self.splits.values())
        val_tasks = sum(s["val"] > 0 for s in self.splits.values())
        if arms.ARMS[run.arm].kind == "meta":
            self.meta_examples[run.name] = examples = meta_budget(cfg, self.n_tasks)
            task_steps = cfg.trainer.total_steps * min(m.meta_batch_size, self.n_tasks)
            query = arms.setting(run.arm, "meta.algorithm", m.algorithm) == "fomaml"
            micro = max(m.inner_batch_size, m.query_batch_size)
            w.train(examples, size, task_steps * (m.num_inner_steps + query))
            w.forward(task_steps * m.inner_batch_size, size, micro)  # support_loss_post on the first batch
            for _ in range(_validations(cfg.trainer.test_freq, cfg.trainer.total_steps)):
                w.forward(val_examples, size, cfg.trainer.val_batch_size)  # val_loss
                w.train(val_tasks * m.num_inner_steps * m.inner_batch_size, size,
                        val_tasks * m.num_inner_steps, budget=False)  # val_loss_adapted: adapt, then score
                w.forward(val_examples, size, cfg.trainer.val_batch_size)
            # LoRA, its gradient and AdamW's two moments; θ, the meta-gradient, a task's gradient; the inner Adam
            return Stage(f"train/{run.name}", w, self._memory(4 + 3 + 2, self._activations(micro, cfg, half)),
                         half=half)
        if run.arm == "sft_task":  # Baseline 2: epochs over its eval task's pool, no validation
            spec = next(t for t in cfg.data.eval_tasks if t.name == run.sft_task)
            examples, _ = sft_budget(cfg, _shots_pool(spec), self.n_tasks)
            size, val_examples = _example(_tokens(spec.source), cfg.data.max_length), 0
        elif run.paired is not None:  # the paired meta run's examples x data.budget_scale, as sft_budget reads them
            examples = round(self.meta_examples[run.paired] * cfg.data.budget_scale)
        else:
            pool = cfg.data.total_samples or sum(s["support"] + s["query"] for s in self.splits.values())
            examples, _ = sft_budget(cfg, round(pool * cfg.data.budget_scale), self.n_tasks)
        steps = math.ceil(examples / cfg.data.train_batch_size)
        micro = cfg.trainer.micro_batch_size
        w.train(examples, size, steps * math.ceil(min(cfg.data.train_batch_size, examples) / micro))
        for _ in range(_validations(cfg.trainer.test_freq, steps) if val_examples else 0):
            w.forward(val_examples, size, cfg.trainer.val_batch_size)
        # LoRA, its gradient, AdamW's two moments
        return Stage(f"train/{run.name}", w, self._memory(4, self._activations(micro, cfg, half)), half=half)

    def _evaluation(self, w: Work, tasks: list, batch: int) -> None:
        """One evaluate_steps over `tasks`' test questions: generation sharing batches, reference losses,
        option log-likelihoods (evaluator.evaluate_steps)."""
        e = self.cfg.eval
        limits = [min(t.max_new_tokens, e.max_new_tokens) for t in tasks]
        questions = sum(t.test_size for t in tasks)
        samples = 1 + e.acc_k
        w.decode_steps += samples * math.ceil(questions / batch) * max(limits)
        w.generated += samples * sum(t.test_size * limit for t, limit in zip(tasks, limits))
        w.answers += samples * questions
        for t in tasks:
            tok = _tokens(t.source)
            w.forward(t.test_size, _prompt(tok), batch)  # the prompt's prefill
            w.forward(t.test_size, _example(tok, self.cfg.data.max_length), batch)  # reference loss
            w.forward(round(t.test_size * tok.choice), _prompt(tok), batch)  # the options' letters

    def _stack_evaluation(self, w: Work, t, cells: int) -> None:
        """One evaluation of a stack of `cells` groups of task `t` (grid_eval.GridScorer): batches of
        eval.batch_size rows, each question once per cell; one prompt forward per row serves the
        reference loss (continued from its cache), the option letters and the decoding (again for each
        acc@k sample)."""
        e = self.cfg.eval
        limit = min(t.max_new_tokens, e.max_new_tokens)
        tok = _tokens(t.source)
        samples = 1 + e.acc_k
        batches = math.ceil(t.test_size / max(1, e.batch_size // cells))
        w.decode_steps += samples * batches * limit
        w.generated += samples * cells * t.test_size * limit
        w.answers += samples * cells * t.test_size
        rows = cells * t.test_size
        w.forward_tokens += rows * _example(tok, self.cfg.data.max_length).tokens
        w.forward_rows += rows * (1 + _example(tok, self.cfg.data.max_length).rows + tok.choice)
        w.passes += 2 * batches  # the prompts, then the reference solutions continued

    def eval(self, runs) -> Stage:
        from metasft.eval.schedule import enumerate_groups, recorded_steps, run_specs, stacks

        cfg, e = self.cfg, self.cfg.eval
        tasks = {t.name: t for t in cfg.data.eval_tasks}
        specs = run_specs(runs)
        w = Work(loads=1)
        groups = enumerate_groups(specs, {t.name: t.n_shots for t in cfg.data.eval_tasks}, e.seeds)
        if e.cells_per_batch == 1:
            for spec in specs:  # step 0 of each (model, task): the 0-shot evaluation, a model's tasks in one generation
                mine = [t for name, t in tasks.items() if spec.tasks is None or name in spec.tasks]
                if zero := [t for t in mine if 0 in t.n_shots]:
                    self._evaluation(w, zero, e.batch_size)
                for t in mine:
                    if 0 not in t.n_shots:
                        self._evaluation(w, [t], e.batch_size)
        else:  # a task's 0-shot groups in stacks, a cell per model
            for unit in stacks([g for g in groups if g.n_shots == 0], e.cells_per_batch):
                self._stack_evaluation(w, tasks[unit[0].task], len(unit))
        later = [s for s in recorded_steps(e.record_steps, e.adaptation_steps) if s > 0]
        zero_done = {(g.model, g.task) for g in groups if g.n_shots == 0}
        for unit in stacks([g for g in groups if g.n_shots > 0], e.cells_per_batch):
            t = tasks[unit[0].task]
            missing = {(g.model, g.task) for g in unit} - zero_done   # step 0 of a task without 0-shot groups
            if missing and e.cells_per_batch > 1:
                self._stack_evaluation(w, t, len(missing))
            zero_done |= missing
            for g in unit:  # AdamW on min(adaptation_batch_size, n) shots per step; a stack's cells in one pass
                w.train(e.adaptation_steps * min(e.adaptation_batch_size, g.n_shots),
                        _example(_tokens(t.source), cfg.data.max_length), 0)
            w.passes += e.adaptation_steps
            for _ in later:
                if e.cells_per_batch == 1:
                    self._evaluation(w, [t], e.batch_size)
                else:
                    self._stack_evaluation(w, t, len(unit))
        return Stage("eval", w, self._eval_memory(specs, tasks, groups), parallel=True,
                     half=eval_dtype(cfg) == "bfloat16")  # the evaluator has no autocast (trainer.bf16)

    def _eval_memory(self, specs, tasks: dict, groups) -> Memory:
        """The evaluator's peak, phase by phase as the engines run (protocols, grid, grid_eval): a stack's
        adaptation (passes of at most grid.PASS_TOKENS padded tokens), a stack's evaluation, 0-shot or
        few-shot (one decoding batch of eval.batch_size rows continued from their prompts' cache,
        reference logits grid_eval.LOGIT_CHUNK positions at a time); with eval.cells_per_batch 1, a
        model's 0-shot evaluation (one generation over its tasks' questions with the adapter merged,
        then each task's reference losses), and one group's adaptation and evaluation as that."""
        from metasft.eval.grid import PASS_TOKENS
        from metasft.eval.grid_eval import LOGIT_CHUNK
        from metasft.eval.schedule import stacks

        cfg, e, s = self.cfg, self.cfg.eval, self.shape
        half = eval_dtype(cfg) == "bfloat16"                 # the evaluator's base weights (eval.dtype)
        value_bytes = 2 if half else 4
        logit = 4 * s.vocab                                  # one position's float32 logits
        merged = 0 if half else s.body * value_bytes         # LoraMerger's copy of the adapted projections

        def length(t) -> float:                              # a prompt and its answer, in cache slots
            return _tokens(t.source).prompt + min(t.max_new_tokens, e.max_new_tokens)

        def one_cell(ts: list) -> float:
            """HFBackend's generation (DynamicCache grows by concatenation: two copies at a step) and the
            reference losses of a micro-batch (logits and the cross-entropy's log-softmax)."""
            rows = min(e.batch_size, sum(t.test_size for t in ts))
            kv = 2 * self._kv_cache(rows, round(max(length(t) for t in ts)), value_bytes)
            ref = max(min(e.batch_size, t.test_size) * _tokens(t.source).response for t in ts) * 2 * logit
            return merged + max(kv, ref)

        def stack(t, cells: int) -> float:
            """A stack's decoding batch: its KV cache and last logits, and the reference logits' chunks."""
            decoding = min(e.batch_size // cells * cells, cells * t.test_size)
            return self._kv_cache(decoding, round(length(t)), value_bytes) + decoding * logit + 2 * LOGIT_CHUNK * logit

        copies = 4 * 4 * s.lora                              # LoRA, its gradient, AdamW's two moments (float32)
        adapter, adapting, generating = copies, 0.0, 0.0
        if e.cells_per_batch == 1:
            zero = [[t for t in tasks.values() if 0 in t.n_shots and (sp.tasks is None or t.name in sp.tasks)]
                    for sp in specs]
            generating = max([one_cell(ts) for ts in zero if ts], default=0.0)
        else:
            for unit in stacks([g for g in groups if g.n_shots == 0], e.cells_per_batch):
                adapter = max(adapter, 4 * s.lora * len(unit))  # the stack's LoRA tensors, no optimizer
                generating = max(generating, stack(tasks[unit[0].task], len(unit)))
        for unit in stacks([g for g in groups if g.n_shots > 0], e.cells_per_batch):
            t, cells = tasks[unit[0].task], len(unit)
            ex = _example(_tokens(t.source), cfg.data.max_length)
            rows = cells * min(e.adaptation_batch_size, unit[0].n_shots)
            if e.cells_per_batch == 1:
                adapting = max(adapting, self._pass(rows * ex.tokens, ex, half))
                generating = max(generating, one_cell([t]))
                continue
            adapter = max(adapter, copies * cells)
            adapting = max(adapting, self._pass(min(PASS_TOKENS, rows * ex.tokens), ex, half))
            generating = max(generating, stack(t, cells))
        return Memory(s.params * value_bytes, adapter, adapting, generating)

    def _pass(self, tokens: float, ex: Size, half: bool) -> float:
        """Bytes a forward keeps for its backward over `tokens` tokens of examples like `ex`, its scored
        share of them through the LM head (logits, log-softmax and their gradient in float32)."""
        s = self.shape
        return tokens * (s.layers * s.activation_values() * (2 if half else 4) + ex.rows / ex.tokens * 3 * 4 * s.vocab)

    def similarity(self) -> Stage:
        """Adapter gradients of every task on similarity_batches batches of adaptation_batch_size."""
        cfg, e = self.cfg, self.cfg.eval
        per_task = e.similarity_batches * e.adaptation_batch_size
        w = Work(loads=1)
        sized = [(min(per_task, self.splits[t.name]["support"]), t.source) for t in cfg.data.tasks]
        sized += [(min(per_task, _shots_pool(t)), t.source) for t in cfg.data.eval_tasks]
        for n, source in sized:
            w.train(n, _example(_tokens(source), cfg.data.max_length), math.ceil(n / e.adaptation_batch_size))
        half = cfg.model.dtype == "bfloat16"  # the evaluator's model, no autocast
        return Stage("similarity", w, self._memory(2, self._activations(e.adaptation_batch_size, cfg, half)),
                     half=half)


def stages(cfg: Config, shape: ModelShape) -> list[Stage]:
    """Every stage of `metasft run` on `cfg`, in the order it runs them."""
    from metasft.matrix import plan_runs

    runs = plan_runs(cfg, [t.name for t in cfg.data.eval_tasks])
    planner = _Planner(cfg, shape)
    out = [] if cfg.data.dir else [planner.data()]
    out += [planner.train(r) for r in runs]
    return out + [planner.eval(runs), planner.similarity(), Stage("report", Work(), None)]


# ------------------------------------------------------------------------------------ FLOPs and time
def flops(work: Work, shape: ModelShape, gradient_checkpointing: bool = False) -> float:
    """Per token the decoder layers cost 2 x body forward, 4 x body trained (6 x with gradient checkpointing);
    per scored position the LM head 2 x head forward, 4 x head trained; a generated token both, forward."""
    s = shape
    train = (6 if gradient_checkpointing else 4) * s.body * work.train_tokens + 4 * s.head * work.train_rows
    forward = 2 * s.body * work.forward_tokens + 2 * s.head * work.forward_rows
    return train + forward + 2 * (s.body + s.head) * work.generated


def seconds(stage: Stage, shape: ModelShape, tp: Throughput, workers: int = 1,
            gradient_checkpointing: bool = False) -> float:
    """Estimated wall time of `stage`: its fixed cost, model builds, arithmetic at tp.flops, one weight
    read per decoding step, per-token, per-pass and per-answer costs; a parallel stage's work split over
    `workers`."""
    w = stage.work
    load = tp.load_s + shape.params * shape.weight_bytes / tp.load_bandwidth
    fixed = getattr(tp.stage_s, stage.name.split("/")[0]) + w.loads * load + w.records * tp.record_s
    work = (flops(w, shape, gradient_checkpointing) / (tp.flops if stage.half else tp.flops_fp32)
            + w.decode_steps * (shape.params * shape.weight_bytes / tp.memory_bandwidth + tp.decode_step_s)
            + (w.train_tokens + w.forward_tokens) * tp.token_s + w.passes * tp.pass_s + w.answers * tp.answer_s)
    return fixed + work / (workers if stage.parallel else 1)


# ------------------------------------------------------------------------------------ the table
def _count(x: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= size:
            return f"{x / size:.1f}{unit}"
    return f"{x:.0f}"


def _bytes(x: float | None) -> str:
    if not x:
        return "-"
    return f"{x / 2**30:.1f} GiB" if x >= 2**30 else f"{x / 2**20:.0f} MiB"


def _duration(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def render(cfg: Config, origin: str, shape: ModelShape, tp: Throughput, workers: int,
           planned: list[Stage]) -> str:
    """The plan as text: a row per stage and a total, memory per process by part, then the assumptions."""
    from metasft.catalog import table

    gc = cfg.model.gradient_checkpointing
    rows, total = [], 0.0
    for st in planned:
        wall = seconds(st, shape, tp, workers, gc)
        total += wall
        w = st.work
        rows.append([st.name, _count(w.examples or w.records), _count(w.train_tokens), _count(w.generated),
                     f"{flops(w, shape, gc):.2e}", _bytes(st.memory.peak if st.memory else None), _duration(wall)
                     + (f" ({workers} workers)" if st.parallel and workers > 1 else "")])
    with_model = [s for s in planned if s.memory is not None]
    peak = max(s.memory.peak for s in with_model)
    rows.append(["total", "", "", "", f"{sum(flops(s.work, shape, gc) for s in planned):.2e}", _bytes(peak),
                 _duration(total)])
    memory_rows = [[s.name, _bytes(s.memory.runtime), _bytes(s.memory.weights), _bytes(s.memory.adapter),
                    _bytes(s.memory.activations), _bytes(s.memory.kv_cache)] for s in with_model]
    e = cfg.eval
    assumptions = [
        f"throughput ({tp.basis}): {tp.flops:.3g} FLOP/s in bf16, {tp.flops_fp32:.3g} in fp32; a decoding step "
        f"reads the weights at {tp.memory_bandwidth:.3g} B/s + {tp.decode_step_s * 1e3:g} ms; {tp.pass_s * 1e3:g} ms "
        f"per micro-batch pass and {tp.token_s * 1e3:g} ms per token in it beyond the FLOPs; a model build "
        f"{tp.load_s:g} s + weights at {tp.load_bandwidth:.3g} B/s; "
        f"{tp.answer_s * 1e3:g} ms per graded answer, {tp.record_s * 1e3:g} ms per source record; fixed seconds per "
        f"stage {dataclasses.asdict(tp.stage_s)}. --throughput FILE.yaml replaces any of these keys "
        "(metasft.plan.Throughput)",
        "precision: " + ", ".join(f"{name} {'bf16' if half else 'fp32'}" for name, half in
                                  dict.fromkeys((s.name.split("/")[0], s.half) for s in with_model))
        + " (training autocasts with trainer.bf16; evaluation computes in eval.dtype, similarity in model.dtype)",
        f"FLOPs: per token 2 x the decoder layers' {shape.body:,} parameters forward, 4x trained (forward + input "
        "gradients; the frozen weights get no weight gradient" + ("; 6x with gradient checkpointing" if gc else "")
        + f"); per scored position (response tokens, a prompt's last) 2x or 4x the LM head's {shape.head:,}; "
        "attention's length-squared term left out",
        "tokens: per-source means of prompt + response (SmolLM2 tokenizer, chat template; metasft.plan.SOURCE_TOKENS), "
        f"capped at data.max_length={cfg.data.max_length}",
        f"generation: every answer runs to its task's max_new_tokens (capped at eval.max_new_tokens="
        f"{e.max_new_tokens}),"
        " an upper bound: answers that stop early cost less; batches of eval.batch_size="
        f"{e.batch_size}" + (f"; 1 + eval.acc_k={e.acc_k} samples each" if e.acc_k else ""),
        f"sizes the config leaves open: {ASSUMED_ITEMS} items in a task slice (a hub source's task without "
        f"support/query counts; an eval task's pool of shots, which sft_task trains its epochs over); "
        f"{ASSUMED_SOURCE_RECORDS} records in a hub or file source's split (downloads not counted)",
        f"memory: the process itself ({RUNTIME_BYTES / 1e9:g} GB: interpreter and libraries), the weights, LoRA "
        "copies, then the larger of adapting (training: one micro-batch at data.max_length tokens per example; "
        "evaluation: one adaptation pass, a stack's capped at grid.PASS_TOKENS padded tokens; float32 logits and "
        "their gradient included) and generating (the KV cache of one decoding batch at the mean prompt + "
        "max_new_tokens, the merged adapter's copy of the weights, the reference solutions' logits)",
        ("eval: one group at a time (eval.cells_per_batch=1)" if e.cells_per_batch == 1 else
         f"eval: a task's groups in stacks of eval.cells_per_batch={e.cells_per_batch} (the grid engine: its 0-shot "
         "groups a cell per model, its few-shot groups one adaptation pass per step; shared decoding batches per "
         "stack, one prompt forward per question and cell)")
        + (f"; --workers {workers} split the groups evenly, each process building its own model" if workers > 1
           else "; one process (--workers N splits its groups over N processes)"),
    ]
    over = [s.name for s in with_model if s.memory.peak > tp.memory_gib * 2**30]
    if over:
        assumptions.append(f"WARNING: {', '.join(over)} need more than the {tp.memory_gib:g} GiB of one device")
    return "\n".join([
        f"metasft plan: {origin} on {tp.device} -- estimates, not measurements",
        f"model {shape.name}: {shape.params:,} parameters ({cfg.model.dtype}), LoRA rank {cfg.model.lora_rank} "
        f"on {len(cfg.model.target_modules)} projections: {shape.lora:,} parameters",
        "",
        table(["stage", "examples", "tokens trained", "tokens generated", "FLOPs", "memory/process", "est. wall"],
              rows),
        "",
        "memory per process by part:",
        table(["stage", "process", "weights", "LoRA + optimizer", "adapting", "generating"], memory_rows),
        "",
        "assumptions:",
        *(textwrap.fill(a, width=110, initial_indent="  - ", subsequent_indent="    ") for a in assumptions),
    ])


def plan(cfg: Config, origin: str, kind: str = "cpu", workers: int = 1, override: str | Path | None = None,
         threads: int | None = None) -> str:
    """The cost plan of `metasft run` on `cfg` as printed text."""
    if workers < 1:
        raise PlanError(f"--workers must be >= 1, got {workers}")
    if threads is not None and (threads < 1 or kind != "cpu"):
        raise PlanError(f"--threads must be >= 1 and goes with --gpu cpu, got {threads} with --gpu {kind}")
    if not cfg.data.dir and not (cfg.data.tasks and cfg.data.eval_tasks):
        empty = "data.tasks" if not cfg.data.tasks else "data.eval_tasks"
        raise PlanError(f"{empty} is empty: `metasft run` needs meta-training and eval tasks; nothing to plan")
    tp = throughput(kind, override, threads)
    shape = model_shape(cfg.model)
    return render(cfg, origin, shape, tp, workers, stages(cfg, shape))
