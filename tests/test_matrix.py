"""The experiment matrix (metasft.matrix; issue 9): the design's Exp 1-5 and Baseline 2 in one `metasft run`.

Config-level tests plan without training; one module-scoped run of configs/tiny/matrix.yaml checks the
matched pairs from the run manifests, Exp 5's distinct 2x pool, Baseline 2's epochs and the report."""
import json

import matplotlib
import pandas as pd
import pytest

from conftest import CONFIGS
from metasft.cli import main
from metasft.config import ConfigError, load_config
from metasft.data.store import read_sft
from metasft.fingerprint import digest, plan
from metasft.matrix import pairs, plan_runs
from metasft.train.run import sft_budget
from metasft.rundir import (BEST_ADAPTER_DIR, CONFIG_FILE, DATASET_DIR, EVAL_DIR, FIGURES_DIR, MANIFEST, REPORT_DIR,
                            REPORT_MD, RESULTS_FILE, RUNS_DIR)

TINY = CONFIGS / "tiny" / "matrix.yaml"
EVAL = ["statistics", "chemistry"]
EXP3, EXP4, EXP5 = "exp3_lr2e-3_k1", "exp4_k4", "exp5_sft_mixed_2x"


def write(tmp_path, text: str):
    path = tmp_path / "m.yaml"
    path.write_text(f"include: {TINY}\n{text}")
    return path


def test_every_meta_variant_gets_an_sft_partner_matched_to_its_own_budget():
    cfg = load_config(TINY)
    runs = {r.name: r for r in plan_runs(cfg, EVAL)}
    assert list(runs) == ["fomaml", EXP3, EXP4, "sft_mixed", EXP5, f"{EXP3}_sft_mixed", f"{EXP4}_sft_mixed",
                          "sft_task_statistics", "sft_task_chemistry", "base"]
    assert runs[EXP3].cfg.meta.inner_lr == 2e-3 and runs[EXP3].cfg.meta.num_inner_steps == 1
    assert runs[EXP4].cfg.meta.num_inner_steps == 4 and runs[EXP4].cfg.meta.inner_lr == 1e-3
    assert runs[f"{EXP4}_sft_mixed"].paired == EXP4 and runs[f"{EXP4}_sft_mixed"].cfg.meta.num_inner_steps == 2
    assert runs[EXP5].paired == "fomaml" and runs[EXP5].cfg.data.budget_scale == 2.0
    assert runs["sft_task_chemistry"].paired is None and runs["sft_task_chemistry"].model == "sft_task"
    assert [(p.meta, p.sft, p.scale, p.primary) for p in pairs(cfg)] == [
        ("fomaml", "sft_mixed", 1.0, True), (EXP3, f"{EXP3}_sft_mixed", 1.0, False),
        (EXP4, f"{EXP4}_sft_mixed", 1.0, False), ("fomaml", EXP5, 2.0, False)]


def test_a_variant_with_the_primary_budget_is_compared_with_sft_mixed_itself(tmp_path):
    cfg = load_config(write(tmp_path, "variants:\n  - {name: lr_only, arm: fomaml, overrides: {meta.inner_lr: 5e-3}}\n"))
    assert [r.name for r in plan_runs(cfg, [])] == ["fomaml", "lr_only", "sft_mixed", "base"]  # no lr_only_sft_mixed
    assert [(p.meta, p.sft) for p in pairs(cfg)][1] == ("lr_only", "sft_mixed")


@pytest.mark.parametrize("variant, message", [
    ("{name: x, arm: fomaml, overrides: {meta.inner_rate: 1e-4}}", r"unknown key\(s\) \['meta.inner_rate'\]"),
    ("{name: x, arm: fomaml, overrides: {meta.num_inner_steps: many}}", "meta.num_inner_steps must be an integer"),
    ("{name: x, arm: fomaml, overrides: {model.lora_rank: 2}}", r"variants\[x\].overrides: model.lora_rank cannot differ"),
    ("{name: x, arm: fomaml, overrides: {meta.tasks: []}}", "meta.tasks cannot differ"),
    ("{name: x, arm: sft_task}", "arm must be one of"),
    ("{name: sft_mixed, arm: fomaml}", "already a run of this experiment"),
    ("{name: x, arm: sft_mixed, paired: nowhere}", r"paired: 'nowhere' is not a meta run"),
    ("{name: x, arm: fomaml, overrides: {meta.num_inner_steps: 3}, partner: sft_mixed}",
     "partner: sft_mixed matches the budget of fomaml, not of x"),
    ("{name: x, arm: fomaml, colour: red}", r"unknown key\(s\) \['variants\[0\].colour'\]"),
])
def test_variants_are_strict(tmp_path, variant, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, f"variants:\n  - {variant}\n"))


def test_a_variant_change_reaches_its_run_its_partner_and_what_follows_only():
    cfg = load_config(TINY)
    changed = load_config(TINY, ["variants.1.overrides={meta.num_inner_steps: 3}"])

    def stages(c):
        return plan(c, [(r.name, r.arm, r.paired, r.cfg) for r in plan_runs(c, EVAL)], None)

    old, new = stages(cfg), stages(changed)
    assert [s for s in old if digest(old[s]) != digest(new[s])] == [
        f"train/{EXP4}", f"train/{EXP4}_sft_mixed", "eval", "report"]
    assert old["data"]["pool_scale"] == 2.0  # Exp 5: the build sets extra examples aside
    assert "pool_scale" not in stages(load_config(CONFIGS / "tiny" / "experiment.yaml"))["data"]


def test_sft_task_budget_is_its_epochs_over_its_pool_whatever_the_pairing():
    cfg = load_config(TINY, ["arm=sft_task", "trainer.paired_run=/nowhere", "data.budget_scale=3.0"])
    assert sft_budget(cfg, 11, 4) == (33, "11 distinct x 3 epochs")


def test_the_upper_reference_is_a_line_not_a_curve(tmp_path):
    from metasft.report import plots
    rows = [("fomaml", 0, 0.2), ("fomaml", 2, 0.3), ("sft_task", 0, 0.8), ("sft_task", 2, 0.9)]
    acc = pd.DataFrame([{"model": m, "n_shots": n, "mean": a, "lo": a - 0.1, "hi": a + 0.1, "n_questions": 3,
                         "n_seeds": 1} for m, n, a in rows])
    loss = acc.assign(mean=1 - acc["mean"], lo=float("nan"), hi=float("nan"))
    fig = plots.learning_curve(acc, loss, "t", tmp_path / "c.png", None, "")
    acc_ax = fig.axes[0]
    labels = [line.get_label() for line in acc_ax.lines]
    reference = [line for line in acc_ax.lines if line.get_label().startswith("SFT-Task upper reference")]
    assert len(reference) == 1 and list(reference[0].get_ydata()) == [0.8, 0.8]  # its 0-shot accuracy
    assert not any(lbl.startswith("SFT-Task (") for lbl in labels)  # and no SFT-Task curve
    assert any(lbl.startswith("FOMAML-SFT") for lbl in labels)
    matplotlib.pyplot.close(fig)


# ------------------------------------------------------------------ one tiny matrix run, end to end
@pytest.fixture(scope="module")
def matrix_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("matrix") / "exp"
    assert main(["run", str(TINY), "--out", str(out)]) == 0
    return out


def manifest(path):
    return json.loads(path.read_text())


def test_tiny_matrix_runs_exp1_to_5_with_matched_pairs(matrix_run):
    out, cfg = matrix_run, load_config(TINY)
    stages = manifest(out / MANIFEST)["stages"]
    runs = plan_runs(cfg, EVAL)
    assert all(stages[f"train/{r.name}"]["status"] == "finished" for r in runs)
    batch = cfg.data.train_batch_size
    checked = 0
    for p in pairs(cfg):
        a, b = (manifest(out / RUNS_DIR / name / MANIFEST)["budget"]["examples"] for name in (p.meta, p.sft))
        assert abs(a * p.scale - b) <= batch, (p, a, b)
        checked += 1
    assert checked == 4
    examples = {r.name: manifest(out / RUNS_DIR / r.name / MANIFEST)["budget"]["examples"] for r in runs}
    assert examples[EXP3] < examples["fomaml"] < examples[EXP4]  # K 1 < 2 < 4: three different budgets
    assert examples[EXP5] == 2 * examples["sft_mixed"]
    recorded = manifest(out / MANIFEST)["budget_checks"]
    assert set(recorded) == {f"{p.meta} vs {p.sft}" for p in pairs(cfg)}
    import sqlite3
    with sqlite3.connect(out / EVAL_DIR / RESULTS_FILE) as db:
        models = {m for (m,) in db.execute("select distinct model from cells")}
        upper = {n for (n,) in db.execute("select distinct n_shots from cells where model = 'sft_task'")}
    assert models == {r.model for r in runs}
    assert upper == {0}  # Baseline 2: only the 0-shot cells the report reads are evaluated


def test_exp5_doubles_the_distinct_examples_not_the_repeats(matrix_run):
    out = matrix_run
    pool = manifest(out / RUNS_DIR / EXP5 / MANIFEST)["pool"]
    plain = manifest(out / RUNS_DIR / "sft_mixed" / MANIFEST)["pool"]
    assert pool["distinct"] == 2 * plain["distinct"] and pool["distinct_scale"] == 2.0 and pool["short"] is None
    data = out / DATASET_DIR / "data"
    for task in pool["per_task"]:
        seen = {r["id"] for r in read_sft(data / "processed" / f"{task}_all.parquet")}
        extra = {r["id"] for r in read_sft(data / "meta_train" / f"{task}_extra.parquet")}
        held_out = {r["id"] for r in read_sft(data / "meta_train" / f"{task}_val.parquet")}
        assert len(extra) >= len(seen) and not extra & seen and not extra & held_out


def test_sft_task_trains_three_epochs_on_its_task_pool(matrix_run):
    out = matrix_run
    files = manifest(out / DATASET_DIR / MANIFEST)["files"]
    for task in EVAL:
        run = out / RUNS_DIR / f"sft_task_{task}"
        m = manifest(run / MANIFEST)
        pool_file = f"data/eval/{task}_shots.parquet"
        assert m["pool"]["file"] == pool_file and m["pool"]["distinct"] == files[pool_file]["n"]
        assert m["pool"]["epochs"] == 3
        batch = load_config(run / CONFIG_FILE).data.train_batch_size
        assert abs(m["budget"]["examples"] - 3 * m["pool"]["distinct"]) < batch
        assert m["budget"]["distinct_examples"] == m["pool"]["distinct"]  # every item seen (3 epochs)
        assert m["budget"]["examples_per_task"] == {task: m["budget"]["examples"]}
        assert not (run / BEST_ADAPTER_DIR).exists()  # evaluated as trained: no selection on other tasks' loss


def test_the_report_shows_the_matrix_table_the_sweep_and_the_upper_reference(matrix_run):
    report = (matrix_run / REPORT_DIR / REPORT_MD).read_text()
    assert "## 7. Experiment matrix" in report and "could not be built" not in report
    assert "*Experiment matrix: accuracy at the final adaptation step" in report
    for run in (EXP3, f"{EXP3}_sft_mixed", EXP4, f"{EXP4}_sft_mixed", EXP5):
        assert f"| statistics | {run} |" in report
    assert "figures/matrix_sweep.png" in report
    assert (matrix_run / REPORT_DIR / FIGURES_DIR / "matrix_sweep.png").is_file()
    assert "Upper reference: task-specific SFT (Baseline 2)" in report
    judged = json.loads((matrix_run / REPORT_DIR / "verdicts_matrix.json").read_text())
    assert set(judged) == {f"{p.meta} vs {p.sft}" for p in pairs(load_config(TINY))}
    assert all({v["name"] for v in vs} >= {"H1", "H2", "C5"} for vs in judged.values())


def test_training_seeds_train_every_arm_once_per_seed_matched_by_seed():
    """trainer.seeds [0, 1, 2]: each trained run three times (the first keeps its name), SFT runs paired
    with the meta run of their own seed, sft_task and base once; the verdicts get the replicates."""
    from metasft.matrix import replicates
    cfg = load_config(CONFIGS / "tiny" / "experiment.yaml", ["trainer.seeds=[0, 1, 2]"])
    runs = {r.name: r for r in plan_runs(cfg, ["calculus"])}
    assert [n for n in runs if n.startswith(("fomaml", "sft_mixed"))] == [
        "fomaml", "fomaml_seed1", "fomaml_seed2", "sft_mixed", "sft_mixed_seed1", "sft_mixed_seed2"]
    assert [runs[n].cfg.seed for n in ("fomaml", "fomaml_seed1", "fomaml_seed2")] == [0, 1, 2]
    assert runs["sft_mixed_seed2"].paired == "fomaml_seed2" and runs["sft_mixed"].paired == "fomaml"
    assert all(r.cfg.trainer.seeds == [] for r in runs.values() if r.arm != "base")
    assert sum(r.arm == "base" for r in runs.values()) == 1
    assert replicates(cfg) == {"fomaml": ["fomaml", "fomaml_seed1", "fomaml_seed2"],
                               "sft_mixed": ["sft_mixed", "sft_mixed_seed1", "sft_mixed_seed2"]}
    # adding seeds leaves the first run's training fingerprint as it was: it is not retrained
    one = load_config(CONFIGS / "tiny" / "experiment.yaml")
    before = plan(one, [(r.name, r.arm, r.paired, r.cfg) for r in plan_runs(one, [])], None)
    after = plan(cfg, [(r.name, r.arm, r.paired, r.cfg) for r in plan_runs(cfg, [])], None)
    assert digest(before["train/fomaml"]) == digest(after["train/fomaml"])
    assert digest(before["report"]) != digest(after["report"])
    with pytest.raises(ConfigError, match="trainer.seeds must be distinct"):
        load_config(CONFIGS / "tiny" / "experiment.yaml", ["trainer.seeds=[1, 1]"])
