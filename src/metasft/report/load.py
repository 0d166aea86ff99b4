"""Read an experiment directory (what `metasft run` wrote) into one object, noting what is missing.

Nothing here raises for a missing or unreadable piece: the piece is None (or empty) and `missing`
says which file and why, so the report can say so in the section that needed it. A manifest from an
older layout or a malformed one is the exception (metasft.manifests.ManifestError): the report would
misread it.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from metasft.config import Config, ConfigError, load_config
from metasft.eval.results import RESULTS_FILE, ResultsError, read_meta, read_results, store_paths
from metasft.manifests import DataManifest, ExperimentManifest, TrainManifest, has_record, manifest_path, read_manifest
from metasft.rundir import CONFIG_FILE, DATASET_DIR, EVAL_DIR, METRICS_FILE, RUNS_DIR, SIMILARITY_FILE



@dataclass
class Similarity:
    """Cosine similarities of the tasks' mean adapter gradients (`eval/task_similarity.json`).

    `meta_train`: the names that are meta-training tasks (from the file, else the data manifest);
    `adapter`: the adapter state the gradients were taken at, as the file records it.
    """
    names: list[str]
    matrix: np.ndarray
    meta_train: list[str]
    adapter: str | None = None


@dataclass
class Experiment:
    root: Path
    config: Config | None = None
    manifest: ExperimentManifest | None = None            # manifest.json
    data: DataManifest | None = None                      # dataset/manifest.json
    runs: dict[str, TrainManifest] = field(default_factory=dict)  # run dir name -> runs/<name>/manifest.json
    run_configs: dict[str, Config] = field(default_factory=dict)
    metrics: dict[str, pd.DataFrame] = field(default_factory=dict)  # run dir name -> metrics.jsonl
    cells: pd.DataFrame | None = None
    predictions: pd.DataFrame | None = None               # SCORE_PREDICTION_COLUMNS; None when empty
    results_meta: dict = field(default_factory=dict)      # the settings recorded with the results (read_meta)
    similarity: Similarity | None = None
    missing: list[str] = field(default_factory=list)      # "relpath: why", in reading order

    @property
    def results_paths(self) -> list[Path]:
        """The evaluation's stores: eval/results.sqlite, or one per worker (eval.results.store_file)."""
        return store_paths(self.root / EVAL_DIR)

    @property
    def results_name(self) -> str:
        """How the report names the results: the one store, or the shards' names."""
        paths = self.results_paths
        return self.rel(paths[0]) if len(paths) == 1 else (f"eval/results.shard-*.sqlite ({len(paths)} stores)"
                                                           if paths else f"eval/{RESULTS_FILE}")

    def rel(self, path: Path) -> str:
        return str(Path(path).relative_to(self.root))


def load_experiment(root: Path) -> Experiment:
    root = Path(root)
    exp = Experiment(root=root)
    exp.config = _config(exp, root / CONFIG_FILE, damaged_is_an_error=True)
    exp.manifest = _manifest(exp, root, ExperimentManifest)
    exp.data = _manifest(exp, root / DATASET_DIR, DataManifest)
    runs_dir = root / RUNS_DIR
    if runs_dir.is_dir():
        for run in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
            manifest = _manifest(exp, run, TrainManifest)
            if manifest is not None:
                exp.runs[run.name] = manifest
            if (run / CONFIG_FILE).is_file():
                cfg = _config(exp, run / CONFIG_FILE)
                if cfg is not None:
                    exp.run_configs[run.name] = cfg
            if (run / METRICS_FILE).is_file():
                exp.metrics[run.name] = _jsonl(exp, run / METRICS_FILE)
            elif manifest is None or manifest.arm != "base":  # the base arm trains nothing, logs nothing
                exp.missing.append(f"{exp.rel(run / METRICS_FILE)}: not found")
    else:
        exp.missing.append("runs/: not found")
    exp.cells, exp.predictions = _results(exp)
    exp.similarity = _similarity(exp, root / EVAL_DIR / SIMILARITY_FILE)
    return exp


def evaluation_progress(exp: Experiment) -> tuple[int, int | None, bool]:
    """(groups stored, groups the experiment's evaluation has in all or None when its config or data
    manifest is missing, whether the evaluation is finished). Not finished: the experiment manifest
    records the eval stage as running (it runs, or it was interrupted). Without a stage record
    (a directory put together by hand) a group missing is the report's to name, not a partial run."""
    from metasft.eval.results import GROUP_KEYS
    from metasft.eval.schedule import count_groups
    stored = 0 if exp.cells is None else len(exp.cells[list(GROUP_KEYS)].drop_duplicates())
    total = None
    if exp.config is not None and exp.data is not None:
        total = count_groups(exp.config, {task: info.n_shots for task, info in exp.data.eval_tasks.items()})
    stage = exp.manifest.stages.get("eval") if exp.manifest is not None else None
    return stored, total, stage is None or stage.status == "finished"


def _config(exp: Experiment, path: Path, damaged_is_an_error: bool = False) -> Config | None:
    """`path` loaded; None (noted) when missing or, unless `damaged_is_an_error`, unreadable. The
    experiment's own config sets the verdicts' margins and target: a damaged one is an error, not the
    design's defaults in its place (issue 23's corpus: the verdicts changed with exit 0)."""
    if not path.is_file():
        exp.missing.append(f"{exp.rel(path)}: not found")
        return None
    try:
        return load_config(path)
    except ConfigError as e:
        if damaged_is_an_error:
            raise ConfigError(f"{exp.rel(path)} is not readable as a metasft config ({e}); the verdicts' settings "
                              f"(stats, eval.target_acc) come from it: restore it, or remove it to report with the "
                              f"design's defaults") from None
        exp.missing.append(f"{exp.rel(path)}: not readable as a metasft config ({e})")
        return None


def _manifest(exp: Experiment, directory: Path, cls):
    """`directory`'s manifest as `cls`; None (noted) when missing or claimed with nothing recorded."""
    path = manifest_path(directory)
    if not path.is_file():
        exp.missing.append(f"{exp.rel(path)}: not found")
        return None
    if not has_record(directory):
        exp.missing.append(f"{exp.rel(path)}: its command recorded nothing yet (killed at the start?)")
        return None
    return read_manifest(directory, cls)


def _json(exp: Experiment, path: Path):
    if not path.is_file():
        exp.missing.append(f"{exp.rel(path)}: not found")
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        exp.missing.append(f"{exp.rel(path)}: not valid JSON ({e})")
        return None


def _jsonl(exp: Experiment, path: Path) -> pd.DataFrame:
    rows, bad = [], 0
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                bad += 1  # a line cut by a killed run
    if bad:
        exp.missing.append(f"{exp.rel(path)}: {bad} unreadable line(s) skipped")
    return pd.DataFrame(rows)


def _results(exp: Experiment) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    name = exp.results_name
    if not exp.results_paths:
        exp.missing.append(f"{name}: not found")
        return None, None
    try:
        # the statistics need the verdicts, not the texts (error cases fetch their few texts with
        # `error_rows`); a store from before per-question losses reads them as NULL
        cells, preds = read_results(exp.results_paths)
        exp.results_meta = read_meta(exp.results_paths)
    except (sqlite3.Error, pd.errors.DatabaseError, ResultsError) as e:
        exp.missing.append(f"{name}: not readable ({e})")
        return None, None
    if cells.empty:
        exp.missing.append(f"{name}: table cells is empty")
        cells = None
    if preds.empty:
        exp.missing.append(f"{name}: table predictions is empty (no per-question tests, no error cases)")
        preds = None
    return cells, preds


def _similarity(exp: Experiment, path: Path) -> Similarity | None:
    raw = _json(exp, path)
    if raw is None:
        return None
    # eval/similarity.py writes "tasks"/"similarity"; the documented layout says "names"/"matrix"
    names = raw.get("tasks", raw.get("names"))
    matrix = raw.get("similarity", raw.get("matrix"))
    if names is None or matrix is None:
        exp.missing.append(f"{exp.rel(path)}: no task names or matrix (keys: {sorted(raw)})")
        return None
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape != (len(names), len(names)):
        exp.missing.append(f"{exp.rel(path)}: matrix shape {matrix.shape} does not fit {len(names)} tasks")
        return None
    meta_train = raw.get("meta_train_tasks") or [n for n in names if exp.data is not None and n in exp.data.tasks]
    return Similarity(list(names), matrix, list(meta_train), raw.get("adapter"))


def error_rows(paths: list[Path], model: str, task: str, n_shots: int, keys: list[tuple[int, int, str]]) -> pd.DataFrame:
    """The stored texts of predictions (seed, step, question_id) of one (model, task, n_shots), from
    whichever of the stores `paths` holds each; `truncated` and `repeating` NULL in a store from before them."""
    if not keys:
        return pd.DataFrame()
    frames = []
    for path in paths:
        with contextlib.closing(sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)) as con:
            have = {r[1] for r in con.execute("PRAGMA table_info(predictions)")}
            flags = ", ".join(c if c in have else f"NULL AS {c}" for c in ("truncated", "repeating"))
            frames += [pd.read_sql_query(
                f"SELECT seed, step, question_id, gold, extracted, output, timed_out, {flags} FROM predictions "
                "WHERE model = ? AND task = ? AND n_shots = ? AND seed = ? AND step = ? AND question_id = ?",
                con, params=(model, task, int(n_shots), int(seed), int(step), str(qid))) for seed, step, qid in keys]
    return pd.concat(frames, ignore_index=True).sort_values(["seed", "step", "question_id"], ignore_index=True)
