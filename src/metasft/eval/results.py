"""The results store: one SQLite file per evaluation worker, safe for several writing processes.

Tables
    cells        one row per (model, task, n_shots, seed, step): the aggregates of that evaluation
    predictions  one row per question per cell: prompt, output, extracted answer, verdicts (strict,
                 flexible, and the primary one in `correct`), cut-off and looping flags, shot ids
    done         (model, task, n_shots, seed) whose rows are complete, written in the same
                 transaction as those rows: a killed evaluation leaves either a whole group or nothing
    meta         settings the stored numbers depend on: recorded with the first group written,
                 checked when an evaluation is resumed

Every aggregate in `cells` is computed from the `predictions` rows of that cell (`loss`, the
token mean over all reference solutions, from their `loss` x `loss_tokens`; `acc_at_k`, the mean of
`correct_at_k`). Concurrent writers
of one store are serialised by SQLite: WAL journal, `BEGIN IMMEDIATE` per group and a busy timeout.

Shards (issue 14): a lone evaluation writes `results.sqlite`; worker k of several (a torchrun rank,
a `metasft launch` array task) writes its own `results.shard-<k>.sqlite` (`store_file`), so no two
machines write one SQLite file. Readers take the union of an evaluation directory's stores
(`store_paths`, `ResultsUnion`, `read_results`), and refuse a group stored twice or stores recorded
with different settings: the union is one evaluation only if every group has one source.
"""
from __future__ import annotations

import contextlib
import json
import math
import re
import sqlite3
import time
from pathlib import Path

import pandas as pd

from metasft.errors import MetasftError
from metasft.rundir import EVAL_DIR, RESULTS_FILE


_SHARD_FILE = re.compile(r"results\.shard-(\d+)\.sqlite")


def store_file(index: int, count: int) -> str:
    """The store worker `index` of `count` writes: RESULTS_FILE alone, `results.shard-<index>.sqlite` of several."""
    return RESULTS_FILE if count == 1 else f"results.shard-{index}.sqlite"


def store_paths(eval_dir: str | Path) -> list[Path]:
    """Every store of an evaluation directory: RESULTS_FILE first, then the shards by index."""
    eval_dir = Path(eval_dir)
    shards = sorted((int(m.group(1)), p) for p in eval_dir.glob("results.shard-*.sqlite")
                    if (m := _SHARD_FILE.fullmatch(p.name)))
    return [p for p in [eval_dir / RESULTS_FILE] if p.is_file()] + [p for _, p in shards]


def readable_store(path: Path) -> bool:
    """SQLite's quick_check passes on the store file at `path` (a file cut short or overwritten fails).
    Opened immutable: a plain read-only open of a WAL database creates or touches its -shm and -wal
    files, and a rerun that checks its stores must change nothing (frames still in a -wal are the
    reader's to check)."""
    try:
        db = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro&immutable=1", uri=True)
        try:
            return db.execute("pragma quick_check").fetchone()[0] == "ok"
        finally:
            db.close()
    except sqlite3.Error:
        return False


def store_files(eval_dir: str | Path) -> list[Path]:
    """The stores of `store_paths` with their SQLite journals (-wal, -shm): what a redone evaluation removes."""
    return sorted(p for p in Path(eval_dir).glob("results*.sqlite*")
                  if _SHARD_FILE.fullmatch(p.name.removesuffix("-wal").removesuffix("-shm"))
                  or p.name.startswith(RESULTS_FILE))

# The contract between evaluation and statistics / report: every other module imports these.
GROUP_KEYS = ("model", "task", "n_shots", "seed")
CELL_KEYS = GROUP_KEYS + ("step",)
SCORES = ("accuracy", "loss")                     # a cell's outcomes, what the statistics read
QUALITY = ("reasoning_steps", "step_correctness", "accuracy_ll", "acc_at_k")  # the design's other metrics
# Both gradings of every cell and prediction (issue 19); `accuracy` / `correct` hold the primary one
# (eval.grading, recorded in the store's settings).
GRADING = ("accuracy_strict", "accuracy_flexible", "n_truncated", "n_repeating")
CELL_COLUMNS = CELL_KEYS + SCORES + ("n", "n_correct", "n_timed_out") + QUALITY + GRADING
QUESTION_SCORES = ("correct", "loss")             # a question's outcomes, what the clustered tests resample
VERDICT_FLAGS = ("correct", "correct_strict", "correct_flexible", "truncated", "repeating", "timed_out",
                 "correct_at_k")
PREDICTION_COLUMNS = CELL_KEYS + ("question_id", "prompt", "output", "extracted", "gold", "correct",
                                  "timed_out", "shot_ids", "reasoning_steps", "step_correctness", "ll_choice",
                                  "loss", "loss_tokens", "correct_strict", "correct_flexible", "truncated",
                                  "repeating", "correct_at_k")
# The meta key (`write_group(meta=)`) recording eval.grading, which of the two `correct` and `accuracy` hold.
GRADING_KEY = "grading"
# Columns a store written before them lacks: added (NULL) when it is opened for writing, read as NULL.
_ADDED_LATER = {"cells": (("accuracy_strict", "REAL"), ("accuracy_flexible", "REAL"), ("n_truncated", "INTEGER"),
                          ("n_repeating", "INTEGER")),
                "predictions": (("loss", "REAL"), ("loss_tokens", "INTEGER"), ("correct_strict", "INTEGER"),
                                ("correct_flexible", "INTEGER"), ("truncated", "INTEGER"), ("repeating", "INTEGER"),
                                ("correct_at_k", "INTEGER"))}
# predictions without their texts: the outcomes, and the per-question values of the design's other measures
SCORE_PREDICTION_COLUMNS = CELL_KEYS + ("question_id",) + QUESTION_SCORES + ("step_correctness", "correct_at_k")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    model TEXT NOT NULL, task TEXT NOT NULL, n_shots INTEGER NOT NULL, seed INTEGER NOT NULL,
    step INTEGER NOT NULL,
    accuracy REAL NOT NULL,        -- n_correct / n
    loss REAL,                     -- token-mean response cross-entropy on the reference solutions
    n INTEGER NOT NULL, n_correct INTEGER NOT NULL, n_timed_out INTEGER NOT NULL,
    reasoning_steps REAL,          -- mean over questions
    step_correctness REAL,         -- mean over questions whose record lists steps, NULL if none does
    accuracy_ll REAL,              -- option log-likelihood accuracy over choice questions, NULL if none
    acc_at_k REAL,                 -- NULL unless sampled
    accuracy_strict REAL,          -- share correct under strict grading (an explicit final answer)
    accuracy_flexible REAL,        -- under flexible grading (also the last number); accuracy is one of the two
    n_truncated INTEGER,           -- outputs cut off at max_new_tokens (no stop token)
    n_repeating INTEGER,           -- outputs caught looping (scoring.repeating)
    PRIMARY KEY (model, task, n_shots, seed, step)
);
CREATE TABLE IF NOT EXISTS predictions (
    model TEXT NOT NULL, task TEXT NOT NULL, n_shots INTEGER NOT NULL, seed INTEGER NOT NULL,
    step INTEGER NOT NULL, question_id TEXT NOT NULL,
    prompt TEXT NOT NULL, output TEXT NOT NULL, extracted TEXT, gold TEXT NOT NULL,
    correct INTEGER NOT NULL, timed_out INTEGER NOT NULL,
    shot_ids TEXT NOT NULL,        -- JSON list of the shots' record ids ([] for 0-shot)
    reasoning_steps INTEGER, step_correctness REAL,
    ll_choice TEXT,                -- the option letter of highest log-likelihood (choice questions)
    loss REAL,                     -- token-mean CE of this question's reference solution (NULL: older store)
    loss_tokens INTEGER,           -- its response tokens
    correct_strict INTEGER,        -- the verdict under strict grading; `correct` is the primary grading's
    correct_flexible INTEGER,      -- under flexible grading
    truncated INTEGER,             -- cut off at max_new_tokens (credited by neither grading)
    repeating INTEGER,             -- caught looping (credited by neither grading)
    correct_at_k INTEGER,          -- any of the question's k sampled answers right (acc@k); NULL unless sampled
    PRIMARY KEY (model, task, n_shots, seed, step, question_id)
);
CREATE TABLE IF NOT EXISTS done (
    model TEXT NOT NULL, task TEXT NOT NULL, n_shots INTEGER NOT NULL, seed INTEGER NOT NULL,
    finished_at REAL NOT NULL,     -- unix time
    PRIMARY KEY (model, task, n_shots, seed)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class ResultsError(MetasftError, RuntimeError):
    """Rows that do not fit their group, a group written twice, or settings that changed on resume."""


def _nullable(x):
    """SQLite's value for x: None for missing or NaN, Python scalars for numpy ones."""
    if hasattr(x, "item") and not isinstance(x, (list, tuple, str)):
        x = x.item()  # numpy scalar (from a DataFrame row)
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


class ResultsStore:
    """One store: write whole cell groups atomically; read cells and predictions as DataFrames.
    `readonly`: opened for reading only (another worker's store, or any store a reader opens)."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 600.0, readonly: bool = False):
        self.path = Path(path)
        if readonly:
            self._db = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True, timeout=busy_timeout_s,
                                       isolation_level=None)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        with self._transaction():  # executescript would commit on its own
            for statement in _SCHEMA.split(";\n"):
                if statement.strip():
                    self._db.execute(statement)
            for table, added in _ADDED_LATER.items():  # stores written before these columns
                have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
                for column, kind in added:
                    if column not in have:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self):
        self._db.execute("BEGIN IMMEDIATE")  # take the write lock now: no read-to-write upgrade deadlock
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ------------------------------------------------------------------------------ groups
    def is_done(self, model: str, task: str, n_shots: int, seed: int) -> bool:
        row = self._db.execute("SELECT 1 FROM done WHERE model=? AND task=? AND n_shots=? AND seed=?",
                               (model, task, n_shots, seed)).fetchone()
        return row is not None

    def done_groups(self) -> set[tuple[str, str, int, int]]:
        if not self._has("done"):
            return set()
        return {tuple(r) for r in self._db.execute("SELECT model, task, n_shots, seed FROM done")}

    def _has(self, table: str) -> bool:
        """False only in a read-only store its worker is creating right now (no tables yet)."""
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone() is not None

    def write_group(self, model: str, task: str, n_shots: int, seed: int, cells: list[dict],
                    predictions: list[dict], meta: dict | None = None) -> None:
        """Store one group's cell rows (one per step) and prediction rows, and mark it done, atomically.

        Rows must carry this group's key (and a `step` present among the cells); extra keys are an error.
        `meta`: the settings the rows depend on, checked and recorded in the same transaction.
        """
        key = {"model": model, "task": task, "n_shots": n_shots, "seed": seed}
        steps = set()
        for row in cells:
            self._check_row(row, key, CELL_COLUMNS, "cell")
            steps.add(row["step"])
        if len(steps) != len(cells):
            raise ResultsError(f"group {key}: two cell rows share a step")
        for row in predictions:
            self._check_row(row, key, PREDICTION_COLUMNS, "prediction")
            if row["step"] not in steps:
                raise ResultsError(f"group {key}: prediction at step {row['step']} has no cell row")
        cell_rows = [tuple(_nullable(row.get(c)) for c in CELL_COLUMNS) for row in cells]
        pred_rows = [tuple(_nullable(self._encode(c, row.get(c))) for c in PREDICTION_COLUMNS) for row in predictions]
        with self._transaction():
            self._check_meta(meta or {}, record=True)
            if self._db.execute("SELECT 1 FROM done WHERE model=? AND task=? AND n_shots=? AND seed=?",
                                tuple(key.values())).fetchone():
                raise ResultsError(f"group {key} is already done in {self.path}")
            for table in ("cells", "predictions"):  # leftovers cannot exist (no done row), but be exact
                self._db.execute(f"DELETE FROM {table} WHERE model=? AND task=? AND n_shots=? AND seed=?",
                                 tuple(key.values()))
            self._db.executemany(f"INSERT INTO cells ({', '.join(CELL_COLUMNS)}) VALUES "
                                 f"({', '.join('?' * len(CELL_COLUMNS))})", cell_rows)
            self._db.executemany(f"INSERT INTO predictions ({', '.join(PREDICTION_COLUMNS)}) VALUES "
                                 f"({', '.join('?' * len(PREDICTION_COLUMNS))})", pred_rows)
            self._db.execute("INSERT INTO done VALUES (?, ?, ?, ?, ?)", (*key.values(), time.time()))

    @staticmethod
    def _check_row(row: dict, key: dict, columns: tuple, what: str) -> None:
        unknown = set(row) - set(columns)
        if unknown:
            raise ResultsError(f"{what} row has unknown column(s) {sorted(unknown)}; expected {columns}")
        wrong = {k: row.get(k) for k, v in key.items() if row.get(k) != v}
        if wrong:
            raise ResultsError(f"{what} row {wrong} does not belong to group {key}")

    @staticmethod
    def _encode(column: str, value):
        if column == "shot_ids":
            return json.dumps(list(value or []))
        if column in VERDICT_FLAGS and value is not None:
            return int(bool(value))
        return value

    # ------------------------------------------------------------------------------ meta
    def check_meta(self, key: str, value) -> None:
        """Record `value` under `key`, or raise ResultsError if a different value is recorded."""
        with self._transaction():
            self._check_meta({key: value}, record=True)

    def check_settings(self, meta: dict) -> None:
        """Raise ResultsError if a value of `meta` differs from the one recorded; record nothing
        (`write_group(..., meta=)` records them with the first group, so a failed start leaves none)."""
        if self._has("meta"):
            self._check_meta(meta, record=False)

    def _check_meta(self, meta: dict, record: bool) -> None:
        for key, value in meta.items():
            text = json.dumps(value, sort_keys=True, default=str)
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
            if row is None and record:
                self._db.execute("INSERT INTO meta VALUES (?, ?)", (key, text))
            elif row is not None and row[0] != text:
                raise ResultsError(f"{self.path}: {key} was {row[0]} when these results were written, now {text}; "
                                   f"evaluate into a new output directory (or pass --overwrite) to change it")

    def meta(self) -> dict:
        if not self._has("meta"):
            return {}
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM meta")}

    # ------------------------------------------------------------------------------ reading
    def _frame(self, table: str, columns: tuple, order: tuple, filters: dict) -> pd.DataFrame:
        unknown = set(filters) - set(CELL_KEYS)
        if unknown:
            raise ValueError(f"filters must be among {CELL_KEYS}, got {sorted(unknown)}")
        if not self._has(table):
            return pd.DataFrame(columns=list(columns))
        where = " AND ".join(f"{k}=?" for k in filters)
        have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
        wanted = [c if c in have else f"NULL AS {c}" for c in columns]  # a read-only store from before `_ADDED_LATER`
        sql = f"SELECT {', '.join(wanted)} FROM {table}" + (f" WHERE {where}" if where else "")
        sql += f" ORDER BY {', '.join(order)}"
        return pd.read_sql_query(sql, self._db, params=tuple(filters.values()))

    def cells(self, **filters) -> pd.DataFrame:
        """Cell rows (columns CELL_COLUMNS), optionally filtered by key columns (`task="x"`)."""
        frame = self._frame("cells", CELL_COLUMNS, CELL_KEYS, filters)
        for c in SCORES + QUALITY + GRADING[:2]:
            frame[c] = frame[c].astype(float)
        return frame

    def predictions(self, **filters) -> pd.DataFrame:
        """Prediction rows (columns PREDICTION_COLUMNS); `shot_ids` as lists, verdicts and flags as bools
        (None where a store written before them has none)."""
        frame = self._frame("predictions", PREDICTION_COLUMNS, CELL_KEYS + ("question_id",), filters)
        for c in VERDICT_FLAGS:
            frame[c] = _flags(frame[c])
        frame["shot_ids"] = frame["shot_ids"].map(json.loads)
        frame["step_correctness"] = frame["step_correctness"].astype(float)
        frame["loss"] = frame["loss"].astype(float)
        for c in ("extracted", "ll_choice"):  # missing text stays None (not NaN)
            frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
        return frame

    def done(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM done ORDER BY model, task, n_shots, seed", self._db)


def _flags(column: pd.Series) -> pd.Series:
    """0/1 as bools; NULL (a column added later, `_ADDED_LATER`) stays None."""
    if column.notna().all():
        return column.astype(bool)
    return column.astype(object).map(lambda v: None if v is None or v != v else bool(v))


class ResultsUnion:
    """The stores of one evaluation read as one, read-only: cells, predictions and done groups of all
    of them. Opening refuses (ResultsError) a group stored twice and stores recorded with different settings."""

    def __init__(self, paths: list[Path]):
        self.stores: list[ResultsStore] = []
        try:
            found = []
            for path in paths:
                self.stores.append(ResultsStore(path, readonly=True))
                try:
                    found.append((Path(path), self.stores[-1].done_groups(), self.stores[-1].meta()))
                except sqlite3.DatabaseError as e:
                    raise ResultsError(f"{path}: not a results store ({e})") from None
            _check_union(found)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for store in self.stores:
            store.close()

    def __enter__(self) -> "ResultsUnion":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def done_groups(self) -> set[tuple[str, str, int, int]]:
        return set().union(*(s.done_groups() for s in self.stores))

    def is_done(self, model: str, task: str, n_shots: int, seed: int) -> bool:
        return any((model, task, n_shots, seed) in s.done_groups() for s in self.stores)

    def check_settings(self, meta: dict) -> None:
        """ResultsError if a store recorded other values of `meta` (see ResultsStore.check_settings)."""
        for store in self.stores:
            store.check_settings(meta)

    def cells(self, **filters) -> pd.DataFrame:
        return _concat([s.cells(**filters) for s in self.stores], CELL_KEYS, CELL_COLUMNS)

    def predictions(self, **filters) -> pd.DataFrame:
        return _concat([s.predictions(**filters) for s in self.stores], CELL_KEYS + ("question_id",),
                       PREDICTION_COLUMNS)


def _concat(frames: list[pd.DataFrame], order: tuple, columns: tuple) -> pd.DataFrame:
    """The rows of every store in one frame, in the order one store gives them (`order`)."""
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=list(columns))
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, ignore_index=True).sort_values(list(order), kind="stable", ignore_index=True)


def _check_union(stores: list[tuple[Path, set, dict]]) -> None:
    """ResultsError for a group in two stores or a setting recorded differently, naming both files."""
    seen: dict[tuple, Path] = {}
    recorded: dict[str, tuple[Path, object]] = {}
    for path, groups, meta in stores:
        for group in sorted(groups):
            if group in seen:
                key = ", ".join(f"{k}={v}" for k, v in zip(GROUP_KEYS, group))
                raise ResultsError(f"group {key} is stored twice, in {seen[group]} and {path}; keep one "
                                   f"evaluation per directory (move the other store away)")
            seen[group] = path
        for key, value in meta.items():
            if key in recorded and recorded[key][1] != value:
                raise ResultsError(f"{recorded[key][0]} and {path} were written with different {key}: they are "
                                   f"not one evaluation; keep one per directory (move the other store away)")
            recorded.setdefault(key, (path, value))


def read_results(paths: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells, predictions without their texts: SCORE_PREDICTION_COLUMNS) of the union of `paths`
    (an evaluation's stores, `store_paths`), each opened read-only.

    Cells hold the CELL_COLUMNS every store has (a missing one is the caller's to report); a store
    written before per-question losses reads them as NULL (NaN). Raises ResultsError for a group in
    two stores, sqlite3.Error (or pandas' DatabaseError) for a file that is not a results store.
    """
    parts = [_read_store(Path(p)) for p in paths]
    _check_union([(Path(p), set(cells[list(GROUP_KEYS)].itertuples(index=False, name=None)), meta)
                  for p, (cells, _, meta) in zip(paths, parts)])
    if len(parts) == 1:
        return parts[0][:2]
    common = [c for c in CELL_COLUMNS if all(c in cells.columns for cells, _, _ in parts)]
    cells = pd.concat([c[common] for c, _, _ in parts], ignore_index=True)
    preds = pd.concat([p for _, p, _ in parts], ignore_index=True)
    return (cells.sort_values(list(CELL_KEYS), kind="stable", ignore_index=True),
            preds.sort_values(list(CELL_KEYS) + ["question_id"], kind="stable", ignore_index=True))


def read_meta(paths: list[Path]) -> dict:
    """The settings recorded with the stores `paths` (one evaluation: `read_results` refuses stores that
    differ), e.g. `GRADING_KEY`; {} when none is recorded."""
    meta: dict = {}
    for path in paths:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as con:
            if con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone():
                meta.update({k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")})
    return meta


_MEASURES_OR_NULL = ("loss", "step_correctness", "correct_at_k")  # per-question measures a store may lack


def _read_store(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    uri = path.resolve().as_uri() + "?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as con:
        def have(table: str) -> set[str]:
            return {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
        present = [c for c in CELL_COLUMNS if c in have("cells")]
        cells = pd.read_sql_query(f"SELECT {', '.join(present)} FROM cells", con)
        may_lack = {c for c, _ in _ADDED_LATER["predictions"]} | set(_MEASURES_OR_NULL)
        wanted = [c if c in have("predictions") or c not in may_lack else f"NULL AS {c}"
                  for c in SCORE_PREDICTION_COLUMNS]
        preds = pd.read_sql_query(f"SELECT {', '.join(wanted)} FROM predictions", con)
        meta = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")} if have("meta") else {}
    _check_counts(path, cells, preds)
    for c in set(SCORES + QUALITY + GRADING[:2]) & set(cells.columns):
        cells[c] = cells[c].astype(float)
    preds["correct"] = preds["correct"].astype(bool)
    for c in _MEASURES_OR_NULL:  # NULL (none, or a store from before) as NaN
        preds[c] = preds[c].astype(float)
    return cells, preds, meta


def _check_counts(path: Path, cells: pd.DataFrame, preds: pd.DataFrame) -> None:
    """ResultsError unless every cell has its n predictions and every prediction its cell: write_group
    stores a group whole, so a difference is a store edited or damaged since, and a report from it
    would change verdicts without a word (issue 23's corpus)."""
    keys = list(CELL_KEYS)
    if cells.empty and preds.empty:
        return  # an empty store is the reader's to report
    counted = (preds.groupby(keys).size().rename("stored").reset_index() if len(preds)
               else cells[keys].head(0).assign(stored=0))
    both = cells[keys + ["n"]].merge(counted, on=keys, how="outer")
    bad = both[both["n"].isna() | both["stored"].isna() | (both["n"] != both["stored"])]
    if len(bad):
        row = bad.iloc[0]
        cell = ", ".join(f"{k}={row[k]}" for k in keys)
        found = ("no cell" if pd.isna(row["n"]) else f"n={int(row['n'])}") + " and " + \
                ("no predictions" if pd.isna(row["stored"]) else f"{int(row['stored'])} predictions")
        raise ResultsError(f"{path}: cell {cell} has {found} ({len(bad)} cell(s) differ): the store was edited or "
                           f"damaged after it was written; rerun its evaluation (metasft run --force, or a new --out)")


# ----------------------------------------------------------------------------------------- export
EXPORT_FORMATS = (".jsonl", ".csv")


def find_results(path: str | Path) -> list[Path]:
    """The stores of `path`: the file itself, or every store of an evaluation or experiment directory."""
    path = Path(path)
    if path.is_file():
        return [path]
    for directory in (path, path / EVAL_DIR):
        if store_paths(directory):
            return store_paths(directory)
    raise ResultsError(f"{path}: no {RESULTS_FILE} (or results.shard-*.sqlite) here or in {path / EVAL_DIR}; "
                       f"expected an experiment directory (`metasft run --out`), an evaluation directory "
                       f"(`metasft eval --out`) or a store")


def export_predictions(store: ResultsStore | ResultsUnion, out: str | Path) -> int:
    """Write every stored prediction (columns PREDICTION_COLUMNS; `correct` is the verdict) to `out`,
    JSON lines or CSV by its suffix, atomically; return the number of rows. In CSV `shot_ids` is a JSON list."""
    from metasft.rundir import atomic_write_text, strict_json

    out = Path(out)
    if out.suffix.lower() not in EXPORT_FORMATS:
        raise ResultsError(f"{out}: unknown format {out.suffix!r}; expected one of {EXPORT_FORMATS}")
    frame = store.predictions()
    if out.suffix.lower() == ".jsonl":
        text = "".join(json.dumps(strict_json(r), ensure_ascii=False, allow_nan=False) + "\n"
                       for r in frame.to_dict("records"))
    else:
        frame = frame.assign(shot_ids=frame["shot_ids"].map(json.dumps))
        text = frame.to_csv(index=False)
    atomic_write_text(out, text)
    return len(frame)

