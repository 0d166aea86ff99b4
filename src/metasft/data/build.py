"""`metasft data build`: sources -> tasks -> splits -> the design's file layout plus a manifest.

Layout under the output directory:
    data/meta_train/<task>_{support,query,val}.parquet
    data/meta_train/<task>_extra.parquet     only when an SFT-Mixed run asks for more than 1x data
                                             (data.budget_scale, Exp 5): (scale - 1) x support ∪ query more
                                             distinct examples, taken from the held-out remainder
    data/processed/<task>_all.parquet        support ∪ query: the pool both FOMAML and SFT draw from
    data/eval/<task>_{test,shots}.parquet    held-out few-shot tasks: test items and the pool of shots
    manifest.json                            counts per task, split and level; seed; sha256 per file
The shots file is the eval task's whole training pool: every item of its `shots_split` in the task's
slice, less its test items and anything meta-training saw. Few-shot evaluation draws its shots from
it, and task-specific SFT (Baseline 2, arm sft_task) trains total_epochs over all of it; with
`shots_split: train` that is the source's own train split, as the design's "完整训练集".
Each meta-training task's rest after support, query and val (the design's 50 % "Hold-out: 用于最终评估")
is counted in the manifest (split `held_out`) but not written: the design's protocols A and B evaluate
on the eval tasks only, so no stage would read it; it is the reserve Exp 5's extra examples come from.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from metasft.config import Config, ConfigError, EvalTask, TaskSource, save_config
from metasft.data import tasks as T
from metasft.data.cot import WORKED_SHARE, augment_with_cot, worked_share
from metasft.data.records import DataError, Record, dedup_key
from metasft.data.sources import describe_reads, load_source, recording_reads, source_root
from metasft.data.store import write_examples
from metasft.budget import extra_size, pool_scale
from metasft.manifests import (DataFile, DataManifest, EvalTaskEntry, ManifestError, MetaTaskEntry, Provenance,
                               Relation, SourceRead, SplitCounts, read_manifest, write_manifest)
from metasft.rundir import (CONFIG_FILE, MANIFEST, atomic_dir, dir_kind, eval_task_file, file_sha256, meta_train_file,
                            pooled_file, provenance, remove_stale_temps)

log = logging.getLogger(__name__)


class _Loader:
    """Loads each (source, split) once per build, each source under its own root (data.roots, else
    data_root), and notes what each source read for the manifest."""

    def __init__(self, data_root: str | None, seed: int, user=(), roots: dict | None = None):
        self.data_root, self.seed, self.user, self.roots, self._cache = data_root, seed, user, roots or {}, {}
        self.reads: dict[str, list] = {}

    def _own(self, source: str) -> bool:
        """A data.sources entry: it names its own file or hub id, and no root."""
        return any(spec.name == source for spec in self.user)

    def root(self, source: str) -> Path | None:
        return None if self._own(source) else source_root(source, self.data_root, self.roots)

    def __call__(self, source: str, split: str, size: int | None) -> list[Record]:
        key = (source.lower(), split, size)
        if key not in self._cache:
            with recording_reads() as reads:
                self._cache[key] = load_source(source, split, self.root(source), seed=self.seed, size=size,
                                               user=self.user)
            self.reads.setdefault(source if self._own(source) else source.lower(), []).extend(reads)
        return self._cache[key]

    def sources(self) -> dict[str, SourceRead]:
        """Per source loaded: where from (the manifest's `sources`)."""
        out = {}
        for name, reads in sorted(self.reads.items()):
            root = self.root(name)
            kinds = {kind for kind, _ in reads}
            out[name] = SourceRead(kind="hub" if "hub" in kinds else "files" if kinds else "package",
                                   root=str(root.resolve()) if root is not None and "file" in kinds else None,
                                   read=describe_reads(reads, root))
        return out


def _subjects(spec: TaskSource | EvalTask) -> list[str]:
    return [spec.subject] if spec.subject else list(spec.subjects)


def build_meta_tasks(cfg: Config, load: _Loader, dedup: T.Dedup) -> dict[str, dict[str, list[Record]]]:
    """Every data.tasks entry split into support / query / val / test."""
    d = cfg.data
    scale = pool_scale(cfg)
    out = {}
    for i, spec in enumerate(d.tasks):
        records = T.select(load(spec.source, spec.split, spec.size), task=spec.name, source=spec.source,
                           subjects=_subjects(spec), levels=spec.levels, exclude_levels=spec.exclude_levels)
        records = dedup.keep_new(records, "meta_train_duplicate")
        sizes = T.split_sizes(len(records), task=spec.name, support_ratio=d.support_ratio,
                              query_ratio=d.query_ratio, val_ratio=d.val_ratio, val_max=d.val_max_samples,
                              support_max=spec.support_max_samples, query_max=spec.query_max_samples)
        if scale > 1:  # carved from the held-out remainder, which no stage reads
            want = extra_size(sizes["support"] + sizes["query"], scale)
            extra = min(want, sizes[T.HELD_OUT])
            if extra < want:
                log.warning("task %r: %sx data asks for %d extra distinct examples, only %d are left; the SFT "
                            "run records the shortfall", spec.name, scale, want, extra)
            sizes = {"support": sizes["support"], "query": sizes["query"], "val": sizes["val"], "extra": extra,
                     T.HELD_OUT: sizes[T.HELD_OUT] - extra}
        out[spec.name] = T.stratified_split(records, sizes, seed=cfg.seed + i, shortest=d.shortest)
    return out


def build_eval_task(spec: EvalTask, cfg: Config, load: _Loader, dedup: T.Dedup, index: int) -> dict[str, list[Record]]:
    """Test items and a disjoint pool of shots, none of them reachable from meta-training data."""
    levels = spec.levels or ([spec.level] if spec.level else [])
    subjects = _subjects(spec)
    candidates = T.select(load(spec.source, spec.split, spec.size), task=spec.name, source=spec.source,
                          subjects=subjects, levels=levels)
    candidates = dedup.keep_new(candidates, f"eval_{spec.name}_test_seen_in_training", remember=False)
    if not candidates:
        raise DataError(f"eval task {spec.name!r}: no test items left after removing training problems")
    if spec.test_size > len(candidates):
        log.warning("eval task %r: test_size %d > %d available items; using all", spec.name,
                    spec.test_size, len(candidates))
    test = T.sample(candidates, min(spec.test_size, len(candidates)), seed=cfg.seed + 1000 + index,
                    shortest=cfg.data.shortest)
    test = dedup.keep_new(test, "unused")  # remembered so shots and later tasks avoid them
    pool = T.select(load(spec.source, spec.shots_split, spec.size), task=spec.name, source=spec.source,
                    subjects=subjects, levels=levels)
    pool = dedup.keep_new(pool, f"eval_{spec.name}_shot_seen_elsewhere")
    if spec.shots_max is not None and len(pool) > spec.shots_max:
        pool = T.sample(pool, spec.shots_max, seed=cfg.seed + 2000 + index, shortest=cfg.data.shortest)
    need = max(spec.n_shots, default=0)
    if need > len(pool):
        raise DataError(f"eval task {spec.name!r}: n_shots {need} is larger than the pool of {len(pool)} "
                        f"shots from {spec.source}/{spec.shots_split} (after removing test and training items)")
    return {"test": test, "shots": pool}


def _slice(spec: TaskSource | EvalTask) -> T.Slice:
    subjects = frozenset(_subjects(spec)) or None
    if isinstance(spec, TaskSource):
        levels = frozenset(spec.levels or T.ALL_LEVELS) - frozenset(spec.exclude_levels)
    else:
        levels = frozenset(spec.levels or ([spec.level] if spec.level else T.ALL_LEVELS))
    return T.Slice(spec.source.lower(), subjects, levels)


def held_out_relations(cfg: Config) -> dict[str, dict]:
    """Each eval task's relation to meta-training (see tasks.relation_to_meta_training); an eval task
    sharing a (source, subject, level) slice with a meta-training task without `allow_overlap: true` is
    a ConfigError naming both tasks and the slice (the design's eval tasks are "未在meta-training中见过")."""
    meta = {t.name: _slice(t) for t in cfg.data.tasks}
    out, refused = {}, []
    for spec in cfg.data.eval_tasks:
        out[spec.name] = T.relation_to_meta_training(spec.name, _slice(spec), spec.allow_overlap, meta)
        if out[spec.name]["kind"] == "overlap":
            refused.append(out[spec.name]["detail"])
    if refused:
        raise ConfigError(f"data.eval_tasks are not held out: {'; '.join(refused)}; exclude the levels from the "
                          f"meta-training task (data.tasks[].exclude_levels), drop the subject from it, or set "
                          f"allow_overlap: true on the eval task")
    return out


def build_data(cfg: Config, out: Path) -> DataManifest:
    """Build every task of `cfg.data` into `out` (replaced atomically); return the manifest."""
    if not cfg.data.tasks:
        raise ConfigError("data.tasks is empty: a data build needs at least one meta-training task")
    log.info("data build: reading %d meta-training and %d eval task(s) from their sources into %s",
             len(cfg.data.tasks), len(cfg.data.eval_tasks), out)
    relations = held_out_relations(cfg)
    load = _Loader(cfg.data_root, cfg.seed, cfg.data.sources, cfg.data.roots)
    dedup = T.Dedup()
    meta = build_meta_tasks(cfg, load, dedup)
    evals = {spec.name: build_eval_task(spec, cfg, load, dedup, i)
             for i, spec in enumerate(cfg.data.eval_tasks)}
    if cfg.data.cot.base_url:
        meta = {name: {s: augment_with_cot(rs, cfg.data.cot, cfg.data.template) for s, rs in parts.items()}
                for name, parts in meta.items()}
        if cfg.data.cot.eval_shots:  # the shots few-shot adaptation and sft_task train on; test items stay as given
            evals = {name: {**parts, "shots": augment_with_cot(parts["shots"], cfg.data.cot, cfg.data.template)}
                     for name, parts in evals.items()}
    else:
        log.info("data.cot.base_url not set: sources without worked solutions keep their own solution text")
    worked = {name: worked_share(parts["shots"]) for name, parts in evals.items()}

    files: dict[str, list[Record]] = {}
    for name, parts in meta.items():
        for split, records in parts.items():
            if split != T.HELD_OUT:  # counted in the manifest, not written
                files[meta_train_file(name, split)] = records
        files[pooled_file(name)] = sorted(parts["support"] + parts["query"], key=lambda r: r.id)
    for name, parts in evals.items():
        for split, records in parts.items():
            files[eval_task_file(name, split)] = records

    manifest = DataManifest(
        seed=cfg.seed, template=cfg.data.template, data_root=cfg.data_root,
        tasks={spec.name: MetaTaskEntry(spec.source, _split_counts(meta[spec.name])) for spec in cfg.data.tasks},
        eval_tasks={spec.name: EvalTaskEntry(spec.source, spec.n_shots, spec.unseen, Relation(**relations[spec.name]),
                                             spec.cross_domain, spec.max_new_tokens, _split_counts(evals[spec.name]),
                                             shots_worked=worked[spec.name],
                                             shots_reason=None if worked[spec.name] is None
                                             else worked[spec.name] >= WORKED_SHARE)
                    for spec in cfg.data.eval_tasks},
        dedup_removed={k: v for k, v in sorted(dedup.removed.items()) if k != "unused"},
        overlap_check="no normalized problem text appears in two files",
        code=Provenance(**{k: v for k, v in provenance().items() if k != "command"}), sources=load.sources())
    _check_disjoint(files)
    out = Path(out)
    remove_stale_temps(out.parent, re.escape(out.name))
    with atomic_dir(out, owned=written_before(out)) as tmp:
        for rel, records in files.items():
            write_examples(tmp / rel, records, cfg.data.template)
        manifest.files = {rel: DataFile(file_sha256(tmp / rel), len(files[rel])) for rel in sorted(files)}
        save_config(cfg, tmp / CONFIG_FILE)
        write_manifest(tmp, manifest)
    return manifest


def _split_counts(parts: dict[str, list[Record]]) -> dict[str, SplitCounts]:
    return {s: SplitCounts(len(rs), T.level_counts(rs)) for s, rs in parts.items()}


def written_before(out: Path) -> set[str]:
    """The files of an earlier build in `out` (a rebuild deletes those only; others are kept)."""
    if dir_kind(out) != "data":
        return set()
    try:
        files = read_manifest(out, DataManifest).files
    except ManifestError:  # an older build: its files are the data/ tree
        files = {p.relative_to(out).as_posix(): None for p in (out / "data").rglob("*") if p.is_file()}
    return {MANIFEST, CONFIG_FILE, *files}


def _check_disjoint(files: dict[str, list[Record]]) -> None:
    """Assert that no problem appears in two files (processed/*_all duplicate support ∪ query)."""
    owner: dict[str, str] = {}
    for rel, records in files.items():
        if rel.startswith("data/processed/"):
            continue
        for r in records:
            key = dedup_key(r)
            if key in owner and owner[key] != rel:
                raise AssertionError(f"problem {r.id!r} appears in {owner[key]} and {rel}")
            owner[key] = rel
