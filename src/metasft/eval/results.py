"""The results store: one SQLite file per evaluation, safe for several writing processes.

Tables
    cells        one row per (model, task, n_shots, seed, step): the aggregates of that evaluation
    predictions  one row per question per cell: prompt, output, extracted answer, verdict, shot ids
    done         (model, task, n_shots, seed) whose rows are complete, written in the same
                 transaction as those rows: a killed evaluation leaves either a whole group or nothing
    meta         settings the stored numbers depend on: recorded with the first group written,
                 checked when an evaluation is resumed

Every aggregate in `cells` is computed from the `predictions` rows of that cell (`loss`, the
token mean over all reference solutions, from their `loss` x `loss_tokens`; except `acc_at_k`). Concurrent writers (torchrun ranks)
are serialised by SQLite: WAL journal, `BEGIN IMMEDIATE` per group and a busy timeout.
"""
from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import time
from pathlib import Path

import pandas as pd

from metasft.errors import MetasftError


RESULTS_FILE = "results.sqlite"  # in the evaluation's output directory

# The contract between evaluation and statistics / report: every other module imports these.
GROUP_KEYS = ("model", "task", "n_shots", "seed")
CELL_KEYS = GROUP_KEYS + ("step",)
SCORES = ("accuracy", "loss")                     # a cell's outcomes, what the statistics read
QUALITY = ("reasoning_steps", "step_correctness", "accuracy_ll", "acc_at_k")  # the design's other metrics
CELL_COLUMNS = CELL_KEYS + SCORES + ("n", "n_correct", "n_timed_out") + QUALITY
QUESTION_SCORES = ("correct", "loss")             # a question's outcomes, what the clustered tests resample
PREDICTION_COLUMNS = CELL_KEYS + ("question_id", "prompt", "output", "extracted", "gold", "correct",
                                  "timed_out", "shot_ids", "reasoning_steps", "step_correctness", "ll_choice",
                                  "loss", "loss_tokens")
SCORE_PREDICTION_COLUMNS = CELL_KEYS + ("question_id",) + QUESTION_SCORES  # predictions without their texts

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
    """`results.sqlite`: write whole cell groups atomically; read cells and predictions as DataFrames."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 600.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        with self._transaction():  # executescript would commit on its own
            for statement in _SCHEMA.split(";\n"):
                if statement.strip():
                    self._db.execute(statement)
            have = {r[1] for r in self._db.execute("PRAGMA table_info(predictions)")}
            for column, kind in (("loss", "REAL"), ("loss_tokens", "INTEGER")):  # stores written before them
                if column not in have:
                    self._db.execute(f"ALTER TABLE predictions ADD COLUMN {column} {kind}")

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
        return {tuple(r) for r in self._db.execute("SELECT model, task, n_shots, seed FROM done")}

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
        if column in ("correct", "timed_out"):
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
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM meta")}

    # ------------------------------------------------------------------------------ reading
    def _frame(self, table: str, columns: tuple, order: tuple, filters: dict) -> pd.DataFrame:
        unknown = set(filters) - set(CELL_KEYS)
        if unknown:
            raise ValueError(f"filters must be among {CELL_KEYS}, got {sorted(unknown)}")
        where = " AND ".join(f"{k}=?" for k in filters)
        sql = f"SELECT {', '.join(columns)} FROM {table}" + (f" WHERE {where}" if where else "")
        sql += f" ORDER BY {', '.join(order)}"
        return pd.read_sql_query(sql, self._db, params=tuple(filters.values()))

    def cells(self, **filters) -> pd.DataFrame:
        """Cell rows (columns CELL_COLUMNS), optionally filtered by key columns (`task="x"`)."""
        frame = self._frame("cells", CELL_COLUMNS, CELL_KEYS, filters)
        for c in SCORES + QUALITY:
            frame[c] = frame[c].astype(float)
        return frame

    def predictions(self, **filters) -> pd.DataFrame:
        """Prediction rows (columns PREDICTION_COLUMNS); `shot_ids` as lists, verdicts as bools."""
        frame = self._frame("predictions", PREDICTION_COLUMNS, CELL_KEYS + ("question_id",), filters)
        frame["correct"] = frame["correct"].astype(bool)
        frame["timed_out"] = frame["timed_out"].astype(bool)
        frame["shot_ids"] = frame["shot_ids"].map(json.loads)
        frame["step_correctness"] = frame["step_correctness"].astype(float)
        frame["loss"] = frame["loss"].astype(float)
        for c in ("extracted", "ll_choice"):  # missing text stays None (not NaN)
            frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
        return frame

    def done(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM done ORDER BY model, task, n_shots, seed", self._db)


def read_results(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells, predictions without their texts: SCORE_PREDICTION_COLUMNS) of a store, opened read-only.

    Cells hold the CELL_COLUMNS the store has (a missing one is the caller's to report); a store
    written before per-question losses reads them as NULL (NaN). Raises sqlite3.Error (or pandas'
    DatabaseError) for a file that is not a results store.
    """
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as con:
        def have(table: str) -> set[str]:
            return {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
        present = [c for c in CELL_COLUMNS if c in have("cells")]
        cells = pd.read_sql_query(f"SELECT {', '.join(present)} FROM cells", con)
        added_later = {"loss"}
        wanted = [c if c in have("predictions") or c not in added_later else f"NULL AS {c}"
                  for c in SCORE_PREDICTION_COLUMNS]
        preds = pd.read_sql_query(f"SELECT {', '.join(wanted)} FROM predictions", con)
    for c in set(SCORES + QUALITY) & set(cells.columns):
        cells[c] = cells[c].astype(float)
    preds["correct"] = preds["correct"].astype(bool)
    preds["loss"] = preds["loss"].astype(float)
    return cells, preds


# ----------------------------------------------------------------------------------------- export
EXPORT_FORMATS = (".jsonl", ".csv")


def find_results(path: str | Path) -> Path:
    """The results.sqlite of `path`: the file itself, an evaluation directory or an experiment directory."""
    path = Path(path)
    for candidate in (path, path / RESULTS_FILE, path / "eval" / RESULTS_FILE):
        if candidate.is_file():
            return candidate
    raise ResultsError(f"{path}: no {RESULTS_FILE} here or in {path / 'eval'}; expected an experiment "
                       f"directory (`metasft run --out`), an evaluation directory (`metasft eval --out`) or the file")


def export_predictions(store: ResultsStore, out: str | Path) -> int:
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

