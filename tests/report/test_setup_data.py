"""Appendix A's data tables: whether each eval task's shots carry worked solutions (issue 20)."""
from __future__ import annotations

from metasft.manifests import DataManifest, read_manifest, write_manifest
from metasft.report import write_report
from metasft.rundir import DATASET_DIR
from test_report import make_experiment


def _row(md: str, task: str) -> str:
    (line,) = [line for line in md.splitlines() if line.startswith(f"| {task} |") and "shots" in line]
    return line


def test_report_says_whether_each_eval_tasks_shots_reason(tmp_path):
    root = tmp_path / "exp"
    make_experiment(root, seeds=(0, 1))
    data = read_manifest(root / DATASET_DIR, DataManifest)
    data.eval_tasks["prob_eval"].shots_worked, data.eval_tasks["prob_eval"].shots_reason = 0.96, True
    data.eval_tasks["theorem_eval"].shots_worked, data.eval_tasks["theorem_eval"].shots_reason = 0.0, False
    write_manifest(root / DATASET_DIR, data)  # physics_eval: a build from before the field, not recorded
    md = write_report(root, n_boot=50).read_text()
    assert "shots show working" in md
    assert _row(md, "prob_eval").endswith("| yes (96%) |")
    assert _row(md, "theorem_eval").endswith("| no (0%) |")
    assert _row(md, "physics_eval").endswith("| not recorded |")
    assert "The shots of theorem_eval are answer-only (under 90% show working)" in md
