"""`metasft run`: the whole study in one directory, stage by stage; a finished stage is not redone
unless its settings changed (stage fingerprints, metasft.fingerprint; `--force` redoes what changed).

    <exp>/config.yaml  manifest.json (per stage: fingerprint, status, wall time; versions)
    <exp>/dataset/     data build                <exp>/runs/<run>/   one training run per arm and
                                                                     matrix variant (metasft.matrix)
    <exp>/eval/        results.sqlite (or one results.shard-<k>.sqlite per worker), task_similarity.json
    <exp>/report/      report.md, report.html, plots

The stages are defined once (`plan_study`: what each does, which stages it reads, as picklable
work); `run_experiment` runs them one after the other in this process, `metasft launch`
(metasft.launch) submits the same stages as cluster jobs, and both record them in the same manifest.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from metasft.config import Config, ConfigError, save_config
from metasft.data.records import DataError
from metasft.eval.claims import CLAIMS_DIR
from metasft.eval.results import readable_store, store_files, store_paths
from metasft.eval.schedule import Shard, count_groups
from metasft.fingerprint import changes, data_files_digest, digest, plan
from metasft.heap import release_freed
from metasft.manifests import (Budget, BudgetCheck, DataManifest, ExperimentManifest, Fingerprint, Provenance,
                               StageRecord, TrainManifest, has_record, manifest_path, read_manifest, started_record,
                               write_manifest)
from metasft.matrix import Run, pairs, plan_runs
from metasft.rundir import (CONFIG_FILE, DATASET_DIR, EVAL_CONFIG, EVAL_DIR, REPORT_DIR, REPORT_MD, RUNS_DIR,
                            SIMILARITY_FILE, TRAIN_OUTPUTS, OutputDir, remove_owned, write_json)

log = logging.getLogger(__name__)

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_CONFIG = REPO_CONFIGS / "experiment.yaml"


def _arm_config(run: Run, data_dir: Path, paired: Path | None) -> Config:
    cfg = run.cfg
    data = dataclasses.replace(cfg.data, dir=str(data_dir), sft_task=run.sft_task)
    trainer = dataclasses.replace(cfg.trainer, paired_run=str(paired) if paired else cfg.trainer.paired_run)
    return dataclasses.replace(cfg, arm=run.arm, data=data, trainer=trainer)


def check_budgets(run_a: Path, run_b: Path, batch: int, allow: bool, scale: float = 1.0) -> BudgetCheck:
    """Refuse a paired comparison whose example budgets differ by more than one batch (`scale`: the
    budget run_b was meant to have over run_a's, data.budget_scale)."""
    a, b = (_finished_budget(r) for r in (run_a, run_b))
    diff = abs(round(a.examples * scale) - b.examples)
    if diff > batch and not allow:
        meant = f" (meant: {scale:g} x)" if scale != 1 else ""
        raise ConfigError(f"budgets differ: {run_a.name} processed {a.examples} examples, {run_b.name} "
                          f"{b.examples}{meant} (more than one batch of {batch} off); set "
                          f"eval.allow_budget_mismatch=true to compare them anyway")
    return BudgetCheck(a, b, diff, scale)


def _finished_budget(run: Path) -> Budget:
    budget = read_manifest(run, TrainManifest).budget
    if budget is None:
        raise ConfigError(f"{run}: the run has not finished (its manifest records no budget)")
    return budget


class StaleStage(ConfigError):
    """A stage recorded in the experiment directory ran with other settings than this run's."""


class _Stages:
    """The experiment manifest's stage records: fingerprint, status, wall time (see metasft.fingerprint).

    A stage is skipped when it is recorded finished with this run's fingerprint, continued when it is
    recorded running with it (a killed run), and stale when recorded with another one.
    """

    def __init__(self, out: Path, plan: dict[str, dict], claim: OutputDir):
        self.out, self.plan, self.claim = out, plan, claim
        self.path = manifest_path(out)
        self.manifest = read_manifest(out, ExperimentManifest) if has_record(out) else ExperimentManifest(Provenance.now())

    def _fingerprint(self, name: str) -> Fingerprint:
        return Fingerprint(digest(self.plan[name]), self.plan[name])

    def stale(self) -> list[tuple[str, str]]:
        """(stage, why) for every recorded stage this run may not reuse, the cause first."""
        recorded = self.manifest.stages
        # a stage no longer planned (an arm dropped from `arms`) is the cause of its downstream's change
        out = [(name, "is recorded here but is not part of this config") for name in recorded if name not in self.plan]
        for name, keys in self.plan.items():
            record = recorded.get(name)
            if record is None:
                continue
            if record.fingerprint.sha256 != digest(keys):
                out.append((name, f"was run with {changes(record.fingerprint.keys, keys)}"))
            elif record.status == "finished" and self._lost(name):
                out.append((name, f"is recorded finished but {self._lost(name)} is missing"))
        return out

    def _lost(self, name: str) -> str | None:
        """The output of finished stage `name` that later stages or the user read and that is gone or
        replaced (a data build into dataset/ by hand): a rerun would otherwise skip the stage and go on
        from what it did not write. The manifests later stages read are checked in `check`."""
        record = self.manifest.stages[name]
        if name == "data" and record.wrote and record.wrote != data_files_digest(self.out / DATASET_DIR):
            return "the build it wrote (dataset/ holds another one now)"
        if name == "eval" and not store_paths(self.out / EVAL_DIR):
            return "eval/results.sqlite"
        if name == "eval":
            damaged = next((p for p in store_paths(self.out / EVAL_DIR) if not readable_store(p)), None)
            if damaged is not None:
                return f"a readable {EVAL_DIR}/{damaged.name} (it is damaged: SQLite's check fails)"
        if name == "report" and not (self.out / REPORT_DIR / REPORT_MD).is_file():
            return "report/report.md"
        return None

    def outputs(self, name: str) -> tuple[Path, set[str]]:
        """Where stage `name` writes under the experiment directory (see the module docstring) and the
        paths there, relative to it, that it wrote: all that a redo may remove."""
        if name == "data":
            from metasft.data.build import written_before
            return self.out / DATASET_DIR, written_before(self.out / DATASET_DIR)
        if name.startswith("train/"):
            return self.out / RUNS_DIR / name.removeprefix("train/"), set(TRAIN_OUTPUTS)
        eval_dir = self.out / EVAL_DIR
        if name == "eval":
            # eval/manifest.json stays: it marks eval/ as an evaluation's (rundir.OutputDir) and is rewritten
            return eval_dir, {p.name for p in store_files(eval_dir)} | {CLAIMS_DIR, EVAL_CONFIG}
        if name == "similarity":
            return eval_dir, {SIMILARITY_FILE}
        if name == "report":
            from metasft.report.report import written_before
            return self.out / REPORT_DIR, written_before(self.out / REPORT_DIR)
        raise ConfigError(f"{self.path}: unknown stage {name!r} in stages")

    def check(self, force: bool) -> None:
        """Raise StaleStage on the first stale stage; with `force`, forget every stale stage and its outputs.

        Fingerprints chain (after.<stage>), so the stale set is the changed stages and all downstream
        of them, and nothing else. The manifests of finished stages that later ones read must be
        readable (ManifestError otherwise), so an older layout is refused before anything is written.
        """
        for name, record in self.manifest.stages.items():
            if record.status == "finished" and name == "data":
                read_manifest(self.out / DATASET_DIR, DataManifest)
            elif record.status == "finished" and name.startswith("train/"):
                read_manifest(self.out / RUNS_DIR / name.removeprefix("train/"), TrainManifest)
        stale = self.stale()
        if stale and not force:
            name, why = stale[0]
            todo = "redo it and what depends on it" if name in self.plan else "remove it and redo what depended on it"
            raise StaleStage(f"{self.out}: stage {name} {why}; rerun with --force to {todo}, or use a new --out")
        for name, why in stale:
            log.info("stage %s %s: redoing it (--force)", name, why)
            where, written = self.outputs(name)
            left = remove_owned(where, written)
            if left and where != self.out / EVAL_DIR:  # eval/ is shared by two stages: the rest is the other's
                log.warning("stage %s: kept %d file(s) metasft did not write in %s: %s", name, len(left), where,
                            ", ".join(left[:5]) + (" ..." if len(left) > 5 else ""))
                if name.startswith("train/"):  # still the run's directory to its redo (rundir.OutputDir)
                    write_json(manifest_path(where), started_record("train"))
            del self.manifest.stages[name]

    def save(self) -> None:
        self.manifest.code = Provenance.now()
        write_manifest(self.out, self.manifest)

    def finished(self, name: str) -> bool:
        """Recorded finished (with this run's fingerprint: `check` forgot every other record)."""
        record = self.manifest.stages.get(name)
        return record is not None and record.status == "finished"

    def begin(self, name: str) -> None:
        record = self.manifest.stages.get(name)
        log.info("stage %s%s", name, " (continuing a killed run)" if record is not None else "")
        self.manifest.stages[name] = StageRecord("running", self._fingerprint(name))
        self.save()

    def finish(self, name: str, seconds: float) -> None:
        wrote = data_files_digest(self.out / DATASET_DIR) if name == "data" else None
        self.manifest.stages[name] = StageRecord("finished", self._fingerprint(name), round(seconds, 1), wrote)
        self.save()
        self.claim.commit()  # a finished stage is worth keeping whatever happens next


@dataclass(frozen=True)
class Stage:
    """One stage of the study. `work` is picklable (`metasft launch` runs it in a job); a `sharded`
    stage's work takes `shard=` (metasft.eval.schedule.Shard) and may run as several workers at once.
    `before(manifest)` runs in the driving process once the stages of `after` are finished, whether
    or not this one is (it may record in the manifest); `check()` runs there after all the work."""
    name: str
    after: tuple[str, ...]
    work: Callable[..., object]
    sharded: bool = False
    before: Callable[[ExperimentManifest], None] | None = None
    check: Callable[[], None] | None = None


@dataclass(frozen=True)
class Study:
    """The stages of one experiment directory in run order (each after those it reads) and their fingerprints."""
    cfg: Config
    out: Path
    stages: list[Stage]
    fingerprints: dict[str, dict]
    eval_groups: int | None = None  # the evaluation's (model, task, n_shots, seed) groups; None: not counted

    @property
    def eval_dir(self) -> Path:
        return self.out / EVAL_DIR


def plan_study(cfg: Config, out: Path) -> Study:
    """Data build, every arm's training, both evaluation protocols, task similarity, report.

    Every stage's settings are checked here (config ranges when loaded; here what needs the file
    system), before any work."""
    from metasft.data.build import build_data
    from metasft.eval.similarity import run_similarity
    from metasft.models import check_model
    from metasft.report import write_report
    from metasft.train.run import train

    out = Path(out)
    check_model(cfg.model)
    if not cfg.data.dir and not cfg.data.tasks:
        raise ConfigError("data.tasks is empty: a data build needs at least one meta-training task")
    data_dir = Path(cfg.data.dir) if cfg.data.dir else out / DATASET_DIR
    if cfg.data.dir:
        if not manifest_path(data_dir).is_file():
            raise DataError(f"data.dir={data_dir}: no manifest.json; build it with `metasft data build`")
        shots = {t: info.n_shots for t, info in read_manifest(data_dir, DataManifest).eval_tasks.items()}
    else:
        shots = {t.name: t.n_shots for t in cfg.data.eval_tasks}  # what build_data writes, in order
    runs = plan_runs(cfg, list(shots))
    built = () if cfg.data.dir else ("data",)
    stages = [] if cfg.data.dir else [Stage("data", (), functools.partial(build_data, cfg, data_dir))]
    for run in runs:
        arm_cfg = _arm_config(run, data_dir, out / RUNS_DIR / run.paired if run.paired else None)
        stages.append(Stage(f"train/{run.name}", built + ((f"train/{run.paired}",) if run.paired else ()),
                            functools.partial(train, arm_cfg, out / RUNS_DIR / run.name, resume=True)))
    trained = tuple(f"train/{run.name}" for run in runs)
    models = [f"{run.model}={out / RUNS_DIR / run.name}" for run in runs]
    stages += [
        Stage("eval", built + trained, functools.partial(_evaluate, cfg, data_dir, models, out / EVAL_DIR),
              sharded=True,
              before=functools.partial(_record_budget_checks, cfg, runs, out),
              check=functools.partial(_check_evaluated, cfg, data_dir, models, out / EVAL_DIR)),
        # the design's first debugging step: cosine similarity of the tasks' gradients at the base model
        # (after eval: it writes into eval/, which the evaluation claims first)
        Stage("similarity", ("eval",), functools.partial(run_similarity, cfg, data_dir, out / EVAL_DIR)),
        Stage("report", built + trained + ("eval", "similarity"), functools.partial(write_report, out)),
    ]
    fingerprints = plan(cfg, [(r.name, r.arm, r.paired, r.cfg) for r in runs], data_dir if cfg.data.dir else None)
    return Study(cfg, out, stages, fingerprints, count_groups(cfg, shots))


def _evaluate(cfg: Config, data_dir: Path, models: list[str], out: Path, shard: Shard | None = None,
              after_group=None) -> None:
    """The eval stage's work: `models` (eval.models entries) parsed once their runs are trained."""
    from metasft.eval.protocols import run_eval
    from metasft.eval.specs import parse_model_specs
    run_eval(cfg, data_dir, parse_model_specs(models), out, shard=shard, after_group=after_group)


def _check_evaluated(cfg: Config, data_dir: Path, models: list[str], out: Path) -> None:
    """Every group stored: a group left to a worker that holds its claim is not a finished evaluation."""
    from metasft.eval.protocols import unfinished_groups
    from metasft.eval.specs import EvalError, parse_model_specs
    left = unfinished_groups(cfg, data_dir, parse_model_specs(models), out)
    if left:
        raise EvalError(f"{out}: {len(left)} group(s) are not stored (first: {left[0]}); another worker holds "
                        f"their claims in {out / CLAIMS_DIR} or stopped; rerun to finish them")


def _record_budget_checks(cfg: Config, runs: list[Run], out: Path, manifest: ExperimentManifest) -> None:
    """Before the evaluation: every compared pair's example budgets, each at the budget it was meant to have."""
    names = {run.name for run in runs}
    checks = {}
    for p in pairs(cfg):
        if {p.meta, p.sft} <= names:
            sft_cfg = next(r.cfg for r in runs if r.name == p.sft)
            checks[f"{p.meta} vs {p.sft}"] = check_budgets(out / RUNS_DIR / p.meta, out / RUNS_DIR / p.sft,
                                                           sft_cfg.data.train_batch_size,
                                                           cfg.eval.allow_budget_mismatch, p.scale)
            if p.primary:
                manifest.budget_check = checks[f"{p.meta} vs {p.sft}"]
    if cfg.variants:
        manifest.budget_checks = checks


@contextlib.contextmanager
def open_study(study: Study, force: bool = False, overwrite: bool = False) -> Iterator[_Stages]:
    """The experiment directory, checked against every recorded stage before anything is written
    (config.yaml included): a stale stage is a StaleStage error, or with `force` is forgotten with all
    that depends on it. `out` must be new, empty or an experiment directory, unless `overwrite`
    (rundir.OutputDir). Yields the stage records."""
    with OutputDir(study.out, "run", overwrite=overwrite) as claim:
        records = _Stages(study.out, study.fingerprints, claim)
        records.check(force)
        claim.start(started_record("run"))
        save_config(study.cfg, study.out / CONFIG_FILE)
        records.save()
        yield records


def run_experiment(cfg: Config, out: Path, force: bool = False, overwrite: bool = False) -> Path:
    """Every stage of `plan_study` in this process, one after the other (see `open_study` for `force`
    and `overwrite`); a stage finished before with the same settings is skipped. Returns `out`."""
    study = plan_study(cfg, out)
    with open_study(study, force, overwrite) as records:
        release_freed(settle=True)
        for stage in study.stages:
            if stage.before is not None:
                stage.before(records.manifest)
            if records.finished(stage.name):
                log.info("stage %s: finished before with the same settings, skipped", stage.name)
                continue
            records.begin(stage.name)
            t0 = time.time()
            stage.work()  # the evaluation as one shard (or torchrun's rank of its world)
            if stage.check is not None:
                stage.check()
            records.finish(stage.name, time.time() - t0)
            release_freed(settle=True)  # the stage's freed memory, not under the next stage's peak (one process)
    return study.out
