"""`metasft run`: the whole study in one directory, stage by stage; a finished stage is not redone
unless its settings changed (stage fingerprints, metasft.fingerprint; `--force` redoes what changed).

    <exp>/config.yaml  manifest.json (per stage: fingerprint, status, wall time; versions)
    <exp>/dataset/     data build                <exp>/runs/<run>/   one training run per arm and
                                                                     matrix variant (metasft.matrix)
    <exp>/eval/        results.sqlite, task_similarity.json
    <exp>/report/      report.md, report.html, plots
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path

from metasft.config import Config, ConfigError, save_config
from metasft.data.records import DataError
from metasft.eval.results import RESULTS_FILE
from metasft.fingerprint import changes, digest, plan
from metasft.matrix import Run, pairs, plan_runs
from metasft.manifests import (Budget, BudgetCheck, DataManifest, ExperimentManifest, Fingerprint, Provenance,
                               StageRecord, TrainManifest, has_record, manifest_path, read_manifest, write_manifest)
from metasft.rundir import OutputDir

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
        return out

    def outputs(self, name: str) -> list[Path]:
        """What stage `name` writes under the experiment directory (see the module docstring)."""
        if name == "data":
            return [self.out / "dataset"]
        if name.startswith("train/"):
            return [self.out / "runs" / name.removeprefix("train/")]
        if name == "eval":
            # eval/manifest.json stays: it marks eval/ as an evaluation's (rundir.OutputDir) and is rewritten
            return [*sorted((self.out / "eval").glob(f"{RESULTS_FILE}*")), self.out / "eval" / "eval_config.yaml"]
        if name == "similarity":
            return [self.out / "eval" / "task_similarity.json"]
        if name == "report":
            return [self.out / "report"]
        raise ConfigError(f"{self.path}: unknown stage {name!r} in stages")

    def check(self, force: bool) -> None:
        """Raise StaleStage on the first stale stage; with `force`, forget every stale stage and its outputs.

        Fingerprints chain (after.<stage>), so the stale set is the changed stages and all downstream
        of them, and nothing else. The manifests of finished stages that later ones read must be
        readable (ManifestError otherwise), so an older layout is refused before anything is written.
        """
        for name, record in self.manifest.stages.items():
            if record.status == "finished" and name == "data":
                read_manifest(self.out / "dataset", DataManifest)
            elif record.status == "finished" and name.startswith("train/"):
                read_manifest(self.out / "runs" / name.removeprefix("train/"), TrainManifest)
        stale = self.stale()
        if stale and not force:
            name, why = stale[0]
            todo = "redo it and what depends on it" if name in self.plan else "remove it and redo what depended on it"
            raise StaleStage(f"{self.out}: stage {name} {why}; rerun with --force to {todo}, or use a new --out")
        for name, why in stale:
            log.info("stage %s %s: redoing it (--force)", name, why)
            for path in self.outputs(name):
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
            del self.manifest.stages[name]

    def save(self) -> None:
        self.manifest.code = Provenance.now()
        write_manifest(self.out, self.manifest)

    def run(self, name: str, fn) -> None:
        record = self.manifest.stages.get(name)
        if record is not None and record.status == "finished":  # fingerprint matched in check()
            log.info("stage %s: finished before with the same settings, skipped", name)
            return
        log.info("stage %s%s", name, " (continuing a killed run)" if record is not None else "")
        self.manifest.stages[name] = StageRecord("running", self._fingerprint(name))
        self.save()
        t0 = time.time()
        fn()
        self.manifest.stages[name] = StageRecord("finished", self._fingerprint(name), round(time.time() - t0, 1))
        self.save()
        self.claim.commit()  # a finished stage is worth keeping whatever happens next


def run_experiment(cfg: Config, out: Path, force: bool = False, overwrite: bool = False) -> Path:
    """Data build, every arm's training, both evaluation protocols, task similarity, report.

    Before any work (config.yaml included) every stage's settings are checked (config ranges when
    loaded; here what needs the file system), and every stage recorded in `out` against this run's
    fingerprints: a stale one is a StaleStage error, or with `force` is redone with all that depends
    on it. `out` must be new, empty or an experiment directory, unless `overwrite` (rundir.OutputDir).
    """
    from metasft.data.build import build_data
    from metasft.eval.protocols import run_eval
    from metasft.eval.specs import parse_model_specs
    from metasft.eval.similarity import run_similarity
    from metasft.models import check_model_source
    from metasft.report import write_report
    from metasft.train.run import train

    out = Path(out)
    check_model_source(cfg.model.partial_pretrain)
    if not cfg.data.dir and not cfg.data.tasks:
        raise ConfigError("data.tasks is empty: a data build needs at least one meta-training task")
    data_dir = Path(cfg.data.dir) if cfg.data.dir else out / "dataset"
    if cfg.data.dir:
        if not manifest_path(data_dir).is_file():
            raise DataError(f"data.dir={data_dir}: no manifest.json; build it with `metasft data build`")
        eval_tasks = list(read_manifest(data_dir, DataManifest).eval_tasks)
    else:
        eval_tasks = [t.name for t in cfg.data.eval_tasks]  # what build_data writes, in order
    runs = plan_runs(cfg, eval_tasks)
    with OutputDir(out, "run", overwrite=overwrite) as claim:
        stages = _Stages(out, plan(cfg, [(r.name, r.arm, r.paired, r.cfg) for r in runs],
                                   data_dir if cfg.data.dir else None), claim)
        stages.check(force)

        claim.start()
        save_config(cfg, out / "config.yaml")
        stages.save()
        if not cfg.data.dir:
            stages.run("data", lambda: build_data(cfg, data_dir))
        for run in runs:
            arm_cfg = _arm_config(run, data_dir, out / "runs" / run.paired if run.paired else None)
            stages.run(f"train/{run.name}", lambda c=arm_cfg, n=run.name: train(c, out / "runs" / n, resume=True))

        names = {run.name for run in runs}
        checks = {}
        for p in pairs(cfg):  # every compared pair, each at the budget it was meant to have
            if {p.meta, p.sft} <= names:
                sft_cfg = next(r.cfg for r in runs if r.name == p.sft)
                checks[f"{p.meta} vs {p.sft}"] = check_budgets(out / "runs" / p.meta, out / "runs" / p.sft,
                                                               sft_cfg.data.train_batch_size,
                                                               cfg.eval.allow_budget_mismatch, p.scale)
                if p.primary:
                    stages.manifest.budget_check = checks[f"{p.meta} vs {p.sft}"]
        if cfg.variants:
            stages.manifest.budget_checks = checks
        models = parse_model_specs([f"{run.model}={out / 'runs' / run.name}" for run in runs])
        stages.run("eval", lambda: run_eval(cfg, data_dir, models, out / "eval"))
        # the design's first debugging step: cosine similarity of the tasks' gradients at the base model
        stages.run("similarity", lambda: run_similarity(cfg, data_dir, out / "eval"))
        stages.run("report", lambda: write_report(out))
    return out
