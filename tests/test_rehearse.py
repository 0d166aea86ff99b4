"""`metasft run CONFIG --rehearse` (issue 20): the design's own configs run as shipped, cut to the tiny
model, on ../shared/data, and say what would fail or mislead at full size."""
from __future__ import annotations

import dataclasses

import pytest

from conftest import CONFIGS
from metasft.cli import main
from metasft.config import Variant, load_config, variant_config
from metasft.matrix import pairs, plan_runs
from metasft.rehearse import check, rehearsal_config
from metasft.rundir import CONFIG_FILE, REPORT_DIR, REPORT_MD, RUNS_DIR, VERDICTS_FILE

DESIGN = CONFIGS / "full" / "design.yaml"
MATRIX = CONFIGS / "experiments" / "matrix.yaml"
ANSWER_ONLY = ("theorem_proving", "mmlu_stem", "applied_physics", "aime")  # TheoremQA, MMLU, AIME CSV: answers only


def rehearse(config, tmp_path, shared_data, capsys):
    out = tmp_path / "rehearsal"
    assert main(["run", str(config), "--rehearse", "--out", str(out), f"data_root={shared_data}"]) == 0
    printed = capsys.readouterr().out
    return out, [line.strip() for line in printed.splitlines() if line.strip().startswith("[")]


def findings_of(lines, kind):
    return [line for line in lines if line.startswith(f"[{kind}]")]


@pytest.mark.slow
@pytest.mark.parametrize("config", [DESIGN, MATRIX], ids=["design", "matrix"])
def test_the_design_configs_rehearse_to_a_report(config, tmp_path, shared_data, capsys):
    """Every arm, variant, task, shot level and record step of the shipped config, on the tiny model:
    a report with verdicts; Geometry3K (not in ../shared/data) named with how to get it; the answer-only
    shot pools named; the MATH tasks, whose solutions are worked and fit their caps, not."""
    out, lines = rehearse(config, tmp_path, shared_data, capsys)
    assert (out / REPORT_DIR / REPORT_MD).is_file() and (out / REPORT_DIR / VERDICTS_FILE).is_file()
    [source] = findings_of(lines, "source")
    assert "geometry3k" in source and "data.roots.geometry3k=DIR" in source
    shots = findings_of(lines, "shots")
    assert sorted(t for t in ANSWER_ONLY if any(f"[{t}]" in line for line in shots)) == sorted(ANSWER_ONLY)
    assert not findings_of(lines, "generation"), findings_of(lines, "generation")
    cfg = load_config(config)
    runs = sorted(p.name for p in (out / RUNS_DIR).iterdir())
    expected = {"fomaml", "sft_mixed", "base", *(f"sft_task_{t.name}" for t in cfg.data.eval_tasks),
                *(v.name for v in cfg.variants)}
    assert expected <= set(runs)
    # one training seed, and the structure kept: every eval task that loads with its shot levels
    rehearsed = load_config(out / CONFIG_FILE)
    assert rehearsed.trainer.seeds == cfg.trainer.seeds[:1] and rehearsed.model.partial_pretrain == "tiny-llama"
    assert {t.name: t.n_shots for t in rehearsed.data.eval_tasks} == {t.name: t.n_shots for t in cfg.data.eval_tasks}
    assert [t.name for t in rehearsed.data.tasks] == [t.name for t in cfg.data.tasks if t.source != "geometry3k"]


def test_short_caps_and_answer_only_shots_warn(shared_data):
    """A generation cap below the references' lengths and a source without worked solutions are named;
    a CoT endpoint silences the second."""
    cfg = load_config(CONFIGS / "tiny" / "full" / "design.yaml", [f"data_root={shared_data}"])
    short = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, max_new_tokens=64))
    _, findings = check(short, "h100")
    generation = [f for f in findings if f.kind == "generation"]
    assert "data.eval_tasks[hard_algebra]" in {f.where for f in generation}  # MATH Level 5: hundreds of tokens
    assert any(f.kind == "shots" and "theorem_proving" in f.where for f in findings)
    cot = dataclasses.replace(cfg.data, cot=dataclasses.replace(cfg.data.cot, base_url="http://127.0.0.1:9"))
    _, findings = check(dataclasses.replace(cfg, data=cot), "h100")
    assert not any(f.kind == "shots" and "answer-only" in f.message for f in findings)


def test_the_cut_keeps_the_structure(shared_data):
    """The rehearsal config: tiny model, a few examples, two steps, one seed; arms, variants, tasks, shot
    levels, templates and selection as configured; a task whose source cannot load is left out."""
    cfg = load_config(MATRIX, [f"data_root={shared_data}"])
    meta = {t.name: 100 for t in cfg.data.tasks if t.source != "geometry3k"}
    pools = {t.name: 500 for t in cfg.data.eval_tasks}
    tests = {t.name: [object()] * 10 for t in cfg.data.eval_tasks}
    r = rehearsal_config(cfg, meta, pools, tests)
    assert r.arms == cfg.arms and [v.name for v in r.variants] == [v.name for v in cfg.variants]
    assert r.data.template == cfg.data.template and r.trainer.select_by == cfg.trainer.select_by
    assert r.trainer.total_steps == 2 and r.eval.seeds == cfg.eval.seeds[:1] and r.eval.adaptation_steps == 2
    assert [t.name for t in r.data.tasks] == list(meta)
    assert all(t.support_max_samples == 2 and t.query_max_samples == 2 for t in r.data.tasks)
    assert [m.name for m in r.meta.tasks] == list(meta)
    assert not any("geometry_proof" in f for f in r.data.train_files)
    assert all(t.test_size == 2 and t.shots_max >= max(t.n_shots) for t in r.data.eval_tasks)
    assert r.data.shortest and not cfg.data.shortest


def test_the_cut_keeps_each_variants_k_and_the_matrix_runs(shared_data):
    """The inner loop is cut to two steps; Exp 3's and Exp 4's own K stay; the runs the matrix trains
    and the pairs it compares are the full config's (by name, one seed), also when a variant's K is
    the cut's own."""
    cfg = load_config(MATRIX, [f"data_root={shared_data}"])
    meta = {t.name: 100 for t in cfg.data.tasks if t.source != "geometry3k"}
    pools = {t.name: 500 for t in cfg.data.eval_tasks}
    tests = {t.name: [object()] * 10 for t in cfg.data.eval_tasks}
    k2 = Variant(name="k2", arm="fomaml", overrides={"meta.num_inner_steps": 2})
    for full in (cfg, dataclasses.replace(cfg, variants=[*cfg.variants, k2])):
        r = rehearsal_config(full, meta, pools, tests)
        own = {v.name: v.overrides.get("meta.num_inner_steps") for v in full.variants}
        assert r.meta.num_inner_steps == (4 if "k2" in own else 2) and full.meta.num_inner_steps == 5  # Exp 3 has 3
        for v in r.variants:
            assert variant_config(r, v).meta.num_inner_steps == (own[v.name] or r.meta.num_inner_steps)
        one_seed = dataclasses.replace(full, trainer=dataclasses.replace(full.trainer, seeds=full.trainer.seeds[:1]))
        names = [t.name for t in cfg.data.eval_tasks]
        assert [(x.name, x.paired) for x in plan_runs(r, names)] == [(x.name, x.paired) for x in plan_runs(one_seed, names)]
        assert pairs(r) == pairs(one_seed)


@pytest.mark.parametrize("config", sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml")))
def test_every_shipped_config_is_checked_or_says_why_not(config, shared_data):
    """Every shipped config: its full-size findings computed and its rehearsal config built (the design
    and the matrix also run to a report above; the tiny twins run in the pipeline tests)."""
    path = CONFIGS / config
    if config.startswith("data/"):
        pytest.skip("a data-only config (tasks for `metasft data build`), included by the configs checked here")
    cfg = load_config(path, [f"data_root={shared_data}"])
    rehearsed, findings = check(cfg, "h100")
    assert rehearsed.model.partial_pretrain == "tiny-llama" and rehearsed.trainer.total_steps == 2
    for f in findings:
        assert f.kind in ("source", "shots", "generation", "memory") and f.message, f
    if any(t.source == "geometry3k" for t in cfg.data.tasks):
        assert any(f.kind == "source" and "geometry3k" in f.where for f in findings)
