"""`metasft launch`: the stages of `metasft run` (metasft.pipeline.plan_study) as cluster jobs through
submitit (issue 14): the data build and each training arm as a job, the evaluation as a job array
whose tasks are shards (each writes its own results store, metasft.eval.results), task similarity
and the report after them.

This process drives: it submits a stage once the stages it reads are finished, polls its jobs,
resubmits a failed job once (a training arm resumes from its checkpoint, a shard skips the groups
found in any store), and records every stage in the experiment's manifest as `metasft run` does, so
`run` and `launch` continue each other's directories; a rerun skips finished stages and finished
groups. Ctrl-C cancels the jobs it submitted; a launch killed otherwise leaves them running, and a
rerun must wait for them (or `scancel` them) first: two evaluation workers never store one group
(metasft.eval.claims), but two jobs of one training arm would write one run directory. Backend
`local` runs the same jobs as processes on this machine (submitit's LocalExecutor).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from metasft.config import Config, ConfigError
from metasft.errors import MetasftError
from metasft.eval.results import ResultsUnion, store_paths
from metasft.heap import release_freed
from metasft.pipeline import Stage, Study, open_study, plan_study
from metasft.manifests import started_record
from metasft.rundir import JOBS_DIR, OutputDir

log = logging.getLogger(__name__)

BACKENDS = ("local", "slurm")
ATTEMPTS = 2  # a failed job is resubmitted once


class LaunchError(MetasftError):
    """A job failed on its last attempt, or the cluster options cannot be used."""


@dataclass(frozen=True)
class ClusterArgs:
    """Where and with what each job runs: the options of `metasft launch`."""
    backend: str = "local"
    workers: int = 1              # evaluation workers: the array's tasks
    gpus_per_worker: int = 0      # GPUs of each training and evaluation job; G > 1 runs G processes in it
    partition: str | None = None  # slurm only, as are account and qos
    time_min: int = 240           # each job's time limit, minutes
    cpus_per_worker: int | None = None
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    poll_s: float | None = None   # how often job states are read; default 1 s local, 30 s slurm

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend {self.backend!r}: expected one of {BACKENDS}")
        for flag, value, least in (("--workers", self.workers, 1), ("--gpus-per-worker", self.gpus_per_worker, 0),
                                   ("--time", self.time_min, 1), ("--cpus-per-worker", self.cpus_per_worker, 1)):
            if value is not None and value < least:
                raise ConfigError(f"{flag} {value}: expected an integer >= {least}")
        if self.mem_gb is not None and not (math.isfinite(self.mem_gb) and self.mem_gb > 0):
            raise ConfigError(f"--mem-gb {self.mem_gb:g}: expected a number of gigabytes > 0")
        slurm_only = {"--partition": self.partition, "--account": self.account, "--qos": self.qos}
        given = [flag for flag, value in slurm_only.items() if value is not None]
        if given and self.backend != "slurm":
            raise ConfigError(f"{', '.join(given)}: only for --backend slurm (this launch is {self.backend})")
        if self.backend == "slurm" and shutil.which("srun") is None:
            raise LaunchError("--backend slurm: no srun on PATH; launch from a machine of the Slurm cluster")

    @property
    def processes_per_worker(self) -> int:
        """One process per GPU (torchrun's layout), one on CPU."""
        return max(self.gpus_per_worker, 1)


def _submitit():
    try:
        import submitit
    except ImportError:
        raise LaunchError("metasft launch needs submitit: pip install 'metasft[cluster]' (or submitit)") from None
    return submitit


def build_executor(cluster: ClusterArgs, folder: Path, stage: Stage):
    """A submitit executor for `stage`'s jobs on `cluster`, writing scripts, pickles and logs into
    `folder`: the data build and the report on CPU, task similarity on one GPU, training and
    evaluation jobs on `gpus_per_worker` (a process per GPU)."""
    if stage.name in ("data", "report"):
        gpus, tasks = 0, 1
    elif stage.name == "similarity":
        gpus, tasks = min(cluster.gpus_per_worker, 1), 1
    else:
        gpus, tasks = cluster.gpus_per_worker, cluster.processes_per_worker
    executor = _submitit().AutoExecutor(folder=folder, cluster=cluster.backend)
    executor.update_parameters(name=f"metasft-{stage.name.replace('/', '-')}", timeout_min=cluster.time_min,
                               gpus_per_node=gpus or None, tasks_per_node=tasks, cpus_per_task=cluster.cpus_per_worker,
                               mem_gb=cluster.mem_gb, slurm_partition=cluster.partition, slurm_account=cluster.account,
                               slurm_qos=cluster.qos,
                               slurm_array_parallelism=cluster.workers if stage.sharded else None)
    return executor


# ----------------------------------------------------------------------------------------- in the job
def _job(work: Callable[[], object], label: str, distributed: bool = False) -> None:
    """A job's entry point: log to the job's output, then the stage's work. `distributed`: the job's
    processes join one torch process group (a training arm on several GPUs), as under torchrun."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    submitit = _submitit()
    if distributed and submitit.JobEnvironment().num_tasks > 1:
        # the device comes from LOCAL_RANK (train.distributed.init_world): every GPU stays visible
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    log.info("%s: starting in job %s", label, submitit.JobEnvironment().job_id)
    release_freed(settle=True)
    work()


def _shard_job(work: Callable[..., object], label: str, worker: int, workers: int, per_worker: int,
               after_group=None) -> None:
    """An evaluation worker's entry point: each of its processes is one shard with its own GPU."""
    from metasft.eval.schedule import Shard
    local = _submitit().JobEnvironment().local_rank
    os.environ["LOCAL_RANK"] = str(local)  # eval.evaluator.device_for: this process's GPU
    shard = Shard(worker * per_worker + local, workers * per_worker)
    _job(functools.partial(work, shard=shard, after_group=after_group), f"{label} shard {shard.index} of {shard.count}")


# ----------------------------------------------------------------------------------------- driving
class _Task:
    """One job of a stage and its resubmission: `poll()` is "running", "finished" or "failed"."""

    def __init__(self, label: str, executor, fn: Callable[[], None], job):
        self.label, self.executor, self.fn, self.job = label, executor, fn, job
        self.attempts, self.state, self.error = 1, "running", ""

    def poll(self) -> str:
        if self.state != "running" or not self.job.done():
            return self.state
        why = self._failure()
        if why is None:
            self.state = "finished"
        elif self.attempts < ATTEMPTS:
            log.warning("%s: job %s %s; resubmitting it once", self.label, self.job.job_id, why)
            self.job = self.executor.submit(self.fn)
            self.attempts += 1
        else:
            self.state = "failed"
            self.error = (f"{self.label}: job {self.job.job_id} failed {self.attempts} times (last: {why}); "
                          f"its log: {self.job.paths.stderr}")
        return self.state

    def _failure(self) -> str | None:
        """None if the job did its work, else why not in one line: the exception it raised, or none."""
        no_result = f"ended without a result (killed, out of time or memory; state {self.job.state})"
        if self.executor.cluster == "local" and not self.job.paths.result_pickle.exists():
            return no_result  # a local file is there or not: no wait for a slow shared file system
        error = self.job.exception()
        if error is None:
            return None
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        return lines[-1][:300] if type(error).__name__ == "FailedJobError" and lines else no_result


def _submit(study: Study, stage: Stage, cluster: ClusterArgs, after_group) -> list[_Task]:
    if stage.sharded:
        cluster = dataclasses.replace(cluster, workers=_workers(study, cluster.workers))
    executor = build_executor(cluster, study.out / JOBS_DIR, stage)
    if not stage.sharded:
        fn = functools.partial(_job, stage.work, stage.name, distributed=stage.name.startswith("train/"))
        return [_Task(stage.name, executor, fn, executor.submit(fn))]
    # every shard's store goes into one evaluation directory: mark it an evaluation's before they start
    # (its lock is the lead worker's, shard 0; the others keep their per-group claims beneath it)
    OutputDir(study.eval_dir, "eval", lock=False).start(started_record("eval"))
    fns = [functools.partial(_shard_job, stage.work, stage.name, w, cluster.workers, cluster.processes_per_worker,
                             after_group) for w in range(cluster.workers)]
    with executor.batch():  # one job array on slurm
        jobs = [executor.submit(fn) for fn in fns]
    return [_Task(f"{stage.name} worker {w}", executor, fn, job) for w, (fn, job) in enumerate(zip(fns, jobs))]


def _workers(study: Study, asked: int) -> int:
    """--workers, at most one per group left to evaluate (a worker more would only start and stop)."""
    if study.eval_groups is None:
        return asked
    paths = store_paths(study.eval_dir)
    done = 0
    if paths:
        with ResultsUnion(paths) as stored:
            done = len(stored.done_groups())
    todo = max(study.eval_groups - done, 1)
    if asked > todo:
        log.warning("--workers %d: %d group(s) left to evaluate; starting %d worker(s)", asked, todo, todo)
    return min(asked, todo)


def launch_experiment(cfg: Config, out: Path, cluster: ClusterArgs, *, force: bool = False, overwrite: bool = False,
                      after_group: Callable | None = None) -> Path:
    """Every stage of `plan_study` as jobs on `cluster` (see the module docstring; `force`, `overwrite`
    as for `metasft run`); `after_group(group)` runs in an evaluation worker after each group it
    stores. Returns `out` once the report is written; LaunchError if a job failed twice."""
    cluster.validate()
    _submitit()
    study = plan_study(cfg, out)
    with open_study(study, force, overwrite) as records:
        _drive(study, records, cluster, after_group)
    return study.out


def _drive(study: Study, records, cluster: ClusterArgs, after_group) -> None:
    """Submit each stage once the stages of its `after` are finished, poll its jobs, record it in
    `records` (pipeline.open_study). Ctrl-C cancels the jobs still running, so a rerun starts none twice."""
    poll_s = cluster.poll_s if cluster.poll_s is not None else (1.0 if cluster.backend == "local" else 30.0)
    finished: set[str] = set()
    waiting = list(study.stages)
    running: dict[str, tuple[Stage, list[_Task], float]] = {}
    failures: list[str] = []
    try:
        while True:
            ready = [s for s in waiting if set(s.after) <= finished]
            while ready and not failures:
                stage = ready[0]
                waiting.remove(stage)
                if stage.before is not None:
                    stage.before(records.manifest)
                if records.finished(stage.name):
                    log.info("stage %s: finished before with the same settings, skipped", stage.name)
                    finished.add(stage.name)
                else:
                    records.begin(stage.name)
                    running[stage.name] = (stage, _submit(study, stage, cluster, after_group), time.time())
                    log.info("stage %s: submitted %s", stage.name,
                             ", ".join(f"job {t.job.job_id}" for t in running[stage.name][1]))
                ready = [s for s in waiting if set(s.after) <= finished]
            if not running:
                break
            time.sleep(poll_s)
            for name, (stage, tasks, t0) in list(running.items()):
                states = [task.poll() for task in tasks]
                if "running" in states:
                    continue
                del running[name]
                if "failed" in states:
                    failures += [task.error for task in tasks if task.state == "failed"]
                    continue
                if stage.check is not None:
                    stage.check()
                records.finish(name, time.time() - t0)
                finished.add(name)
    except KeyboardInterrupt:
        for _, tasks, _ in running.values():
            for task in tasks:
                if task.state == "running":
                    task.job.cancel(check=False)
        log.warning("interrupted: cancelled the jobs still running; rerun `metasft launch` to resume")
        raise
    if failures:  # every job still running then has ended: what they stored is kept
        more = f" (and {len(failures) - 1} more failed job(s))" if len(failures) > 1 else ""
        raise LaunchError(f"{failures[0]}{more}; rerun `metasft launch` to resume from what is finished")
