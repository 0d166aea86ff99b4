"""One end-to-end smoke run of the whole pipeline on the tiny config (`metasft run`)."""
import json
import sqlite3

from conftest import CONFIGS
from metasft.cli import main


def test_tiny_experiment_runs_every_stage_and_reruns_nothing(tmp_path):
    out = tmp_path / "exp"
    assert main(["run", str(CONFIGS / "tiny" / "experiment.yaml"), "--out", str(out)]) == 0
    report = out / "report" / "report.md"
    text = report.read_text()
    assert (out / "report" / "report.html").is_file()
    assert list((out / "report").rglob("curve_*.png"))
    assert "tiny" in text.lower() and "H1" in text and "C5" in text
    manifest = json.loads((out / "manifest.json").read_text())
    stages = manifest["stages"]
    for stage in ("data", "train/fomaml", "train/sft_mixed", "train/base", "eval", "similarity", "report"):
        assert stages[stage]["status"] == "finished", stage
    budgets = [json.loads((out / "runs" / arm / "manifest.json").read_text())["budget"]["examples"]
               for arm in ("fomaml", "sft_mixed")]
    assert budgets[0] == budgets[1]
    with sqlite3.connect(out / "eval" / "results.sqlite") as db:
        models = {m for (m,) in db.execute("select distinct model from cells")}
        n_cells = db.execute("select count(*) from cells").fetchone()[0]
    assert models == {"base", "fomaml", "sft_mixed"}
    # a rerun finds every stage finished and redoes none of them
    assert main(["run", str(CONFIGS / "tiny" / "experiment.yaml"), "--out", str(out)]) == 0
    assert json.loads((out / "manifest.json").read_text())["stages"] == stages
    with sqlite3.connect(out / "eval" / "results.sqlite") as db:
        assert db.execute("select count(*) from cells").fetchone()[0] == n_cells
