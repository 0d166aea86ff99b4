from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS
from metasft.config import ConfigError, load_config, meta_tasks, save_config
from metasft.rundir import CONFIG_FILE

SHIPPED = sorted(CONFIGS.rglob("*.yaml"))


def write(tmp_path: Path, text: str, name="c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(CONFIGS)) for p in SHIPPED])
def test_every_shipped_config_loads_and_names_its_command(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# metasft "), f"{path} must start with the command that runs it"
    load_config(path)


def test_design_keys_load_as_written(tmp_path):
    path = write(tmp_path, """
name: "fomaml_sft_math_science"
model:
  partial_pretrain: "meta-llama/Llama-3.2-1B"
  lora_rank: 16
  lora_alpha: 32
  target_modules: ["q_proj", "v_proj"]
  use_fsdp: true
meta:
  use_fomaml: true
  inner_lr: 5e-5
  num_inner_steps: 5
  inner_batch_size: 4
  outer_lr: 2e-5
  meta_batch_size: 3
  query_batch_size: 4
  tasks:
    - name: "algebra"
      support_files: ["data/meta_train/algebra_support.parquet"]
      query_files: ["data/meta_train/algebra_query.parquet"]
      support_max_samples: 300
      query_max_samples: 450
data:
  max_length: 2048
  truncation: "right"
optim:
  optimizer_type: "AdamW"
  weight_decay: 0.01
  clip_grad: 1.0
trainer:
  total_steps: 5000
  save_freq: 500
  test_freq: 100
""")
    cfg = load_config(path)
    assert cfg.meta.inner_lr == 5e-5 and isinstance(cfg.meta.inner_lr, float)  # YAML reads 5e-5 as a string
    assert cfg.meta.tasks[0].support_max_samples == 300
    assert cfg.model.use_fsdp is True and cfg.trainer.total_steps == 5000


def test_verl_aliases(tmp_path):
    path = write(tmp_path, "model: {strategy: fsdp2}\ntrainer: {total_training_steps: 7}\noptim: {optimizer: adamw}\n")
    cfg = load_config(path)
    assert cfg.model.use_fsdp is True and cfg.trainer.total_steps == 7 and cfg.optim.optimizer_type == "adamw"
    cfg = load_config(path, ["model.strategy=ddp", "trainer.total_training_steps=9"])
    assert cfg.model.use_fsdp is False and cfg.trainer.total_steps == 9


def test_alias_and_target_together_is_an_error(tmp_path):
    path = write(tmp_path, "trainer: {total_training_steps: 7, total_steps: 8}\n")
    with pytest.raises(ConfigError, match="total_training_steps"):
        load_config(path)


def test_overrides_types_and_list_indices(tmp_path):
    path = write(tmp_path, "data:\n  tasks:\n    - {name: a, source: embedded}\n")
    cfg = load_config(path, ["meta.inner_lr=1e-4", "eval.seeds=[0,1]", "data.tasks.0.size=12", "data_root=/x"])
    assert cfg.meta.inner_lr == 1e-4 and cfg.eval.seeds == [0, 1]
    assert cfg.data.tasks[0].size == 12 and cfg.data_root == "/x"


@pytest.mark.parametrize("text, overrides, match", [
    ("meta: {inner_lrr: 1}\n", [], r"meta\.inner_lrr"),
    ("meta: {num_inner_steps: five}\n", [], r"meta\.num_inner_steps must be an integer"),
    ("model: {use_fsdp: 3}\n", [], r"model\.use_fsdp must be true or false"),
    ("data:\n  tasks:\n    - {source: math}\n", [], r"required key 'data\.tasks\[0\]\.name'"),
    ("", ["meta.inner_lr=fast"], r"meta\.inner_lr must be a finite number"),
    ("", ["meta.inner_lr=nan"], r"meta\.inner_lr must be a finite number"),
    ("", ["optim.clip_grad=.inf"], r"optim\.clip_grad must be a finite number"),
    ("model: {target_modules: q_proj}\n", [], r"model\.target_modules must be a list"),
    ("model: {partial_pretrain: 123}\n", [], r"model\.partial_pretrain must be a string"),
    ("trainer: {total_steps: '5'}\n", [], r"trainer\.total_steps must be an integer"),
    ("meta: {use_fomaml: false}\n", [], r"second-order MAML.*meta\.algorithm"),
    ("optim: {optimizer_type: sgd}\n", [], r"optim\.optimizer_type must be AdamW or Adam"),
    ("", ["nosuch=1"], r"unknown key"),
    ("", ["data.truncation=middle"], r"data\.truncation"),
    ("", ["eval.cells_per_batch=0"], r"eval\.cells_per_batch must be >= 1"),
    ("", ["eval.dtype=float16"], r"eval\.dtype must be float32, bfloat16, auto or null"),
    ("- a\n- b\n", [], "mapping"),
    ("data:\n  eval_tasks:\n    - {name: s, source: embedded, level: 5, levels: [1]}\n", [],
     r"data\.eval_tasks\[s\]: give level or levels, not both"),
    ("data:\n  eval_tasks:\n    - {name: s, source: embedded, levels: [0, 6]}\n", [],
     r"data\.eval_tasks\[s\]\.levels must be within 1-5"),
    # issue 23's second corpus (benchmarks/adversarial.py): each of these was accepted, or a traceback
    ("arms: " + "[" * 3000 + "]" * 3000 + "\n", [], "nested too deeply"),
    ("a0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n"
     + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 6)) + "arms: *a5\n", [],
     "expand to more than 100,000 values"),
    ("", ["data.tasks=[{name: a"], r"override data\.tasks=.*not valid YAML"),
    ("", ["name=../../escaped"], "the experiment's name must be one file name"),
    ("", ["name=a/b"], "the experiment's name must be one file name"),
    ("", ["name=" + "x" * 101], "at most 100 printable characters"),
    ("name: \"a\\0b\"\n", [], "the experiment's name must be one file name"),
    ("", ["model.target_modules=[]"], "model.target_modules is empty"),
    ("", ["arms=[]"], "arms is empty"),
    ("", ["arms=[base,fomaml,base]"], r"arms: \['base'\] given twice"),
])
def test_errors_name_the_key_and_file(tmp_path, text, overrides, match):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as err:
        load_config(path, overrides)
    if not overrides:
        assert str(path) in str(err.value)


def test_include_merges_and_file_wins(tmp_path):
    write(tmp_path, "seed: 3\nmeta: {inner_lr: 0.1, outer_lr: 0.2}\n", "base.yaml")
    path = write(tmp_path, "include: base.yaml\nmeta: {inner_lr: 0.5}\n")
    cfg = load_config(path)
    assert (cfg.seed, cfg.meta.inner_lr, cfg.meta.outer_lr) == (3, 0.5, 0.2)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_meta_tasks_default_to_data_tasks_layout(tmp_path):
    cfg = load_config(write(tmp_path, "data:\n  tasks:\n    - {name: algebra, source: embedded, support: 3, query: 4}\n"))
    (task,) = meta_tasks(cfg)
    assert task.support_files == ["data/meta_train/algebra_support.parquet"]
    assert cfg.data.tasks[0].support_max_samples == 3  # the design's scheme-B shorthand


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["meta.inner_lr=0.001", "data.template=zh"])
    save_config(cfg, tmp_path / CONFIG_FILE)
    assert load_config(tmp_path / CONFIG_FILE) == cfg
    assert yaml.safe_load((tmp_path / CONFIG_FILE).read_text())["meta"]["inner_lr"] == 0.001


def test_optimizer_type_selects_the_optimizer():
    """optim.optimizer_type was accepted and ignored (AdamW always); now it builds what it names."""
    import torch

    from metasft.train.common import outer_optimizer
    params = [torch.nn.Parameter(torch.ones(2))]
    for name, cls in (("AdamW", torch.optim.AdamW), ("adam", torch.optim.Adam)):
        cfg = load_config(None, [f"optim.optimizer_type={name}"])
        opt = outer_optimizer(params, cfg.optim.optimizer_type, 1e-3, cfg.optim.weight_decay, cfg.optim.betas)
        assert type(opt) is cls and opt.defaults["weight_decay"] == cfg.optim.weight_decay


def test_a_hash_in_an_override_value_is_kept_unless_quoted_yaml_says_otherwise():
    """Issue 23: data_root=/data/run #2/math was cut at the # (YAML read a comment)."""
    from metasft.config import load_config
    assert load_config(None, ["data_root=/data/run #2/math"]).data_root == "/data/run #2/math"
    assert load_config(None, ["data_root='/data/run #2'"]).data_root == "/data/run #2"
    assert load_config(None, ["eval.seeds=[0, 1]"]).eval.seeds == [0, 1]


def test_a_unicode_name_with_spaces_is_a_name():
    assert load_config(None, ["name=数学 实验 #2"]).name == "数学 实验 #2"


@pytest.mark.parametrize("amx, avx512_bf16, want", [(True, False, "bfloat16"), (False, True, "bfloat16"),
                                                    (False, False, "float32")])
def test_eval_dtype_auto_resolves_to_what_the_cpu_multiplies_natively(monkeypatch, tmp_path, amx, avx512_bf16, want):
    """eval.dtype auto is resolved when the config loads (so the eval stage's fingerprint and the saved
    config hold the dtype the run used): bfloat16 only on a CPU with bf16 matmul units."""
    import torch

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    cfg = load_config(None, ["eval.dtype=auto", "trainer.device=cpu"])
    assert cfg.eval.dtype == want
    save_config(cfg, tmp_path / CONFIG_FILE)
    assert load_config(tmp_path / CONFIG_FILE).eval.dtype == want
