"""`metasft launch` (issue 14): the tiny experiment as local submitit jobs with two evaluation workers
gives the cells and predictions of `metasft run`; a worker killed mid-way is resubmitted once, and a
rerun of launch finishes without redoing a finished group. Slurm submissions are checked up to sbatch."""
import json
import os
import signal
import sqlite3

import pandas as pd
import pytest

from conftest import CONFIGS, killed_after_training
from metasft.cli import main
from metasft.config import Config, load_config
from metasft.eval.results import ResultsStore, ResultsUnion, store_paths
from metasft.launch import ClusterArgs, LaunchError, _submit, launch_experiment
from metasft.pipeline import Stage, Study
from metasft.rundir import DATASET_DIR, EVAL_DIR, MANIFEST, REPORT_DIR, REPORT_HTML, REPORT_MD, SIMILARITY_FILE

TINY = str(CONFIGS / "tiny" / "experiment.yaml")


def finished_at(eval_dir) -> dict:
    """{(model, task, n_shots, seed): (store name, finished_at)} of every stored group."""
    out = {}
    for path in store_paths(eval_dir):
        with sqlite3.connect(path) as db:
            for *key, at in db.execute("SELECT model, task, n_shots, seed, finished_at FROM done"):
                out[tuple(key)] = (path.name, at)
    return out


def test_launch_matches_run_and_resumes_after_a_killed_worker(tiny_experiment, tmp_path, capsys):
    """From a run killed after its first arms (the data build and those arms as jobs would add only
    process starts to what is checked): a training arm as a job, then the evaluation on two workers."""
    out = tmp_path / "launched"
    killed_after_training(tiny_experiment, out)
    victim = out / EVAL_DIR / "results.shard-1.sqlite"

    def kill_worker_1(group):
        """Runs in the evaluation workers: SIGKILL worker 1 right after it stored a group."""
        if victim.is_file():
            with ResultsStore(victim, readonly=True) as store:
                if (group.model, group.task, group.n_shots, group.seed) in store.done_groups():
                    os.kill(os.getpid(), signal.SIGKILL)

    cluster = ClusterArgs(backend="local", workers=2, poll_s=0.2)
    with pytest.raises(LaunchError, match=r"eval worker 1: job \d+ failed 2 times \(last: ended without a "
                                          r"result \(killed.*rerun `metasft launch` to resume"):
        launch_experiment(load_config(TINY), out, cluster, after_group=kill_worker_1)
    stages = json.loads((out / MANIFEST).read_text())["stages"]
    assert stages["eval"]["status"] == "running" and "report" not in stages
    before = finished_at(out / EVAL_DIR)
    in_shard_1 = [k for k, (store, _) in before.items() if store == victim.name]
    assert len(in_shard_1) == 2  # one group per attempt: the resubmitted worker went on where the first died

    capsys.readouterr()
    assert main(["launch", TINY, "--out", str(out), "--backend", "local", "--workers", "2"]) == 0
    assert capsys.readouterr().out.startswith(f"report: {out / REPORT_DIR / REPORT_HTML}\n")
    after = finished_at(out / EVAL_DIR)
    assert {k: after[k] for k in before} == before  # no finished group was redone
    assert [p.name for p in store_paths(out / EVAL_DIR)] == ["results.shard-0.sqlite", "results.shard-1.sqlite"]
    assert not list((out / EVAL_DIR / "claims").iterdir())
    stages = json.loads((out / MANIFEST).read_text())["stages"]
    assert {s["status"] for s in stages.values()} == {"finished"}
    ran = json.loads((tiny_experiment / MANIFEST).read_text())["stages"]
    assert {s: r["fingerprint"] for s, r in stages.items()} == {s: r["fingerprint"] for s, r in ran.items()}
    assert all(stages[s] == ran[s] for s in ("data", "train/base", "train/fomaml"))  # finished: not redone

    with (ResultsUnion(store_paths(out / EVAL_DIR)) as launched,
          ResultsUnion(store_paths(tiny_experiment / EVAL_DIR)) as ran):
        assert len(launched.done_groups()) == len(ran.done_groups()) == len(after)
        pd.testing.assert_frame_equal(launched.cells(), ran.cells(), check_exact=False, rtol=1e-5)
        pd.testing.assert_frame_equal(launched.predictions(), ran.predictions(), check_exact=False, rtol=1e-5)
    assert (out / REPORT_DIR / REPORT_MD).is_file() and (out / EVAL_DIR / SIMILARITY_FILE).is_file()


@pytest.fixture
def sigint_handled():
    """SIGINT handled as in a terminal. A process started in the background of a non-interactive shell
    (`cmd &`) ignores SIGINT, and its children inherit that: a local job, which submitit cancels with
    SIGINT, would then run on. A handler, unlike an ignored signal, is not inherited."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_cancels_the_submitted_jobs(tmp_path, monkeypatch, sigint_handled):
    from metasft import launch
    submitted = []
    real_submit = launch._submit
    monkeypatch.setattr(launch, "_submit", lambda *a: submitted.extend(real_submit(*a)) or submitted)

    def interrupt(task):
        raise KeyboardInterrupt

    monkeypatch.setattr(launch._Task, "poll", interrupt)  # Ctrl-C as soon as the data job is submitted
    with pytest.raises(KeyboardInterrupt):
        launch_experiment(load_config(TINY), tmp_path / "exp", ClusterArgs(backend="local", poll_s=0))
    [task] = submitted
    monkeypatch.undo()
    task.job.wait()
    assert not task.job.paths.result_pickle.exists()  # the job was ended before it did its work
    assert not (tmp_path / "exp" / DATASET_DIR / MANIFEST).exists()
    stages = json.loads((tmp_path / "exp" / MANIFEST).read_text())["stages"]
    assert stages == {"data": {**stages["data"], "status": "running"}}


def test_cluster_options_are_checked_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "exp"
    for argv, message in ((["--backend", "local", "--partition", "gpu"], "--partition: only for --backend slurm"),
                          (["--backend", "local", "--workers", "0"], "--workers 0: expected an integer >= 1"),
                          (["--backend", "local", "--mem-gb", "-5"], "--mem-gb -5: expected a number of gigabytes > 0"),
                          (["--backend", "local", "--mem-gb", "0"], "--mem-gb 0: expected a number of gigabytes > 0"),
                          (["--backend", "local", "--cpus-per-worker", "-1"], "--cpus-per-worker -1: expected an integer >= 1"),
                          (["--backend", "slurm"], "--backend slurm: no srun on PATH")):
        capsys.readouterr()
        assert main(["launch", TINY, "--out", str(out), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
        assert not out.exists()


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """srun and sbatch on PATH; sbatch keeps each script it is given in `scripts/` and answers a job id."""
    bin_dir, scripts = tmp_path / "bin", tmp_path / "scripts"
    bin_dir.mkdir()
    scripts.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\nn=$(ls {scripts} | wc -l)\ncp "$1" {scripts}/$n.sh\n'
                                    'echo "Submitted batch job 4242"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return scripts


def test_slurm_evaluation_is_one_array_of_workers_with_their_gpus(tmp_path, fake_slurm):
    cluster = ClusterArgs(backend="slurm", workers=3, gpus_per_worker=2, partition="gpu", time_min=90, account="lab")
    study = Study(Config(), tmp_path / "exp", [], {})
    tasks = _submit(study, Stage("eval", (), print, sharded=True), cluster, None)
    assert [t.label for t in tasks] == ["eval worker 0", "eval worker 1", "eval worker 2"]
    assert [t.job.job_id for t in tasks] == ["4242_0", "4242_1", "4242_2"]
    script = (fake_slurm / "0.sh").read_text()
    for line in ("#SBATCH --array=0-2%3", "#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --time=90",
                 "#SBATCH --gpus-per-node=2", "#SBATCH --ntasks-per-node=2", "#SBATCH --job-name=metasft-eval"):
        assert line in script.splitlines(), line
    assert json.loads((tmp_path / "exp" / EVAL_DIR / MANIFEST).read_text())["kind"] == "eval"
    _submit(study, Stage("report", (), print), cluster, None)  # on CPU, one process
    script = (fake_slurm / "1.sh").read_text()
    assert "--array" not in script and "#SBATCH --ntasks-per-node=1" in script.splitlines() and "gpus" not in script


def test_evaluation_workers_are_capped_at_the_groups_to_do(tmp_path, fake_slurm):
    """Issue 23: --workers 100 for 18 groups started 100 workers (202 processes)."""
    cluster = ClusterArgs(backend="slurm", workers=100, partition="gpu")
    study = Study(Config(), tmp_path / "exp", [], {}, eval_groups=3)
    tasks = _submit(study, Stage("eval", (), print, sharded=True), cluster, None)
    assert [t.label for t in tasks] == ["eval worker 0", "eval worker 1", "eval worker 2"]
    assert "#SBATCH --array=0-2%3" in (fake_slurm / "0.sh").read_text().splitlines()


def test_the_study_counts_the_groups_its_evaluation_has():
    from metasft.pipeline import plan_study
    cfg = load_config(TINY)
    n_tasks, shots = len(cfg.data.eval_tasks), cfg.data.eval_tasks[0].n_shots
    assert all(t.n_shots == shots for t in cfg.data.eval_tasks)
    per_task = (0 in shots) + sum(n > 0 for n in shots) * len(cfg.eval.seeds)
    assert plan_study(cfg, "unused").eval_groups == len(cfg.arms) * n_tasks * per_task
