"""How far an evaluation has got and how long it has left: the eval stage's progress bar.

`protocols._run_groups` works in units (a stack of a task's 0-shot groups or of its few-shot
groups; one group alone, or a model's 0-shot evaluation of its tasks in one generation) made of
pieces the engines report as they finish them: adaptation steps and evaluations (a stack's
evaluation reports each decoding batch as its share of one). Each piece is sized before anything runs, from its token counts, in the seconds it
would take at the prior rates below; the bar advances by those sizes, so it moves with every
adaptation step and decoding batch rather than with every stored group.

The time left is honest in the sense that it is measured: each kind of work (stacked adaptation, a
stack's evaluation, one-cell evaluation through the backend) has its own ratio of observed seconds to
prior seconds, taken from the pieces of that kind done so far (the time since the previous piece is
charged to the piece just finished), and the remaining prior seconds of each kind are scaled by it;
a kind not yet seen is scaled by the ratio over all pieces done. After one piece of each kind the
estimate follows this machine, whatever the priors say.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from metasft.eval.tasks import TaskData
from metasft.progress import Bar

# Prior seconds per size unit (`adaptation_size`, `evaluation_size`) by kind, from BENCHMARKS.md's
# SmolLM2 figures on the 2-core CPU: stacked adaptation at about 197 trained tokens/s; a 6-cell
# stack's evaluation of 24 statistics questions in about 65 s (grid table, be73383); a model's 0-shot
# evaluation of 64 questions in about 67 s (the demo's 9 zero-shot groups in about 200 s). Only their
# ratios matter before the first piece of each kind has run.
PRIOR_S = {"adapt": 1 / 197, "grid": 1.8e-3, "one": 2.9e-3}
# A decoding step costs about as much as this many tokens' arithmetic beyond the rows' own: it reads
# every weight once (plan.py: 538 MB at 6 GB/s against 83 GFLOP/s for 2 x params FLOPs per token).
DECODE_STEP_TOKENS = 28


def adaptation_size(task: TaskData, shots_per_cell: list[int], batch_size: int) -> float:
    """Prior seconds of one adaptation step of cells that adapt on `shots_per_cell` shots of `task`:
    each trains on min(batch_size, n) shots (a mean shot's tokens, forward and backward)."""
    mean = sum(len(e.input_ids) for e in task.shots) / max(1, len(task.shots))
    return PRIOR_S["adapt"] * mean * sum(min(batch_size, n) for n in shots_per_cell)


def evaluation_size(tasks: list[TaskData], cells: int, rows_per_batch: int, acc_k: int | None, *,
                    stacked: bool) -> float:
    """Prior seconds of one evaluation of `cells` cells on `tasks` (together: a 0-shot generation):
    every question's prompt and reference (the one-cell path runs the prompt twice: generation, then
    the loss), its decoded tokens up to max_new_tokens and each decoding step's weight read, once
    more per acc@k sample."""
    rows = cells * sum(len(t.examples) for t in tasks)
    prefill = cells * sum(e.n_prompt * (1 if stacked else 2) + len(e.input_ids) - e.n_prompt
                          for t in tasks for e in t.examples)
    limit = max(t.max_new_tokens for t in tasks)
    decoded = cells * sum(len(t.examples) * t.max_new_tokens for t in tasks)
    per_batch = max(1, rows_per_batch // cells) * cells if stacked else max(1, rows_per_batch)
    steps = math.ceil(rows / per_batch) * limit
    tokens = prefill + (1 + (acc_k or 0)) * (decoded + steps * DECODE_STEP_TOKENS)
    return PRIOR_S["grid" if stacked else "one"] * tokens


@dataclass
class _Unit:
    note: str
    per: dict[str, tuple[str, float]]        # piece ("adaptation step", "evaluation") -> (kind, prior s of one)
    planned: dict[str, float]                # kind -> prior seconds
    count: dict[str, float]                  # piece -> how many
    done: dict[str, float] = field(default_factory=dict)
    pieces: dict[str, float] = field(default_factory=dict)  # piece -> how many done


class EvalProgress:
    """The eval bar: `add` every unit before `open`; then per unit `begin`, `piece` as pieces finish, `end`."""

    def __init__(self, desc: str, groups: int, enabled: bool = True):
        self.desc, self.groups, self.enabled = desc, groups, enabled
        self.units: list[_Unit] = []
        self.stored = 0
        self.bar: Bar | None = None
        self.current: _Unit | None = None
        self.prior_done: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.last_kind: str | None = None

    def add(self, note: str, pieces: dict[str, tuple[str, float, float]]) -> int:
        """A unit of work: piece -> (kind, prior seconds of one, how many); returns its index."""
        planned: dict[str, float] = {}
        for kind, size, count in pieces.values():
            planned[kind] = planned.get(kind, 0.0) + size * count
        self.units.append(_Unit(note, {p: (k, s) for p, (k, s, _) in pieces.items()}, planned,
                                {p: n for p, (_, _, n) in pieces.items()}))
        return len(self.units) - 1

    def open(self) -> "EvalProgress":
        total = sum(sum(u.planned.values()) for u in self.units)
        self.bar = Bar(self.desc, total, unit=None, enabled=self.enabled, remaining=self.left)
        self._t = time.monotonic()
        return self

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "EvalProgress":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------ as work is done
    def begin(self, index: int) -> None:
        self.current = self.units[index]
        self._note()

    def piece(self, what: str, amount: float = 1.0) -> None:
        """`amount` of piece `what` ("adaptation step", "evaluation") of the current unit is done."""
        unit = self.current
        if unit is None or what not in unit.per:
            return
        kind, size = unit.per[what]
        unit.pieces[what] = unit.pieces.get(what, 0.0) + amount
        self._advance(unit, kind, size * amount, charge=True)

    def end(self) -> None:
        """The current unit is finished: what it did not report (groups stored by another worker) counts done."""
        unit, self.current = self.current, None
        if unit is None:
            return
        for kind, planned in unit.planned.items():
            self._advance(unit, kind, planned - unit.done.get(kind, 0.0), charge=False)
        if self.last_kind is not None:  # grading and storing after its last piece
            self.seconds[self.last_kind] = self.seconds.get(self.last_kind, 0.0) + self._lap()
        self._note()

    def group_stored(self, n: int = 1) -> None:
        self.stored += n
        self._note()

    # ------------------------------------------------------------------------ estimate
    def left(self) -> float | None:
        """Seconds left: each kind's remaining prior seconds times its observed / prior ratio."""
        done = sum(self.prior_done.values())
        if done <= 0:
            return None
        overall = sum(self.seconds.values()) / done
        left = 0.0
        for kind in {k for u in self.units for k in u.planned}:
            remaining = sum(u.planned.get(kind, 0.0) for u in self.units) - self.prior_done.get(kind, 0.0)
            seen = self.prior_done.get(kind, 0.0)
            left += max(0.0, remaining) * (self.seconds.get(kind, 0.0) / seen if seen > 0 else overall)
        return left

    def _advance(self, unit: _Unit, kind: str, prior: float, charge: bool) -> None:
        prior = min(prior, unit.planned.get(kind, 0.0) - unit.done.get(kind, 0.0))
        if prior <= 0:
            return
        unit.done[kind] = unit.done.get(kind, 0.0) + prior
        self.prior_done[kind] = self.prior_done.get(kind, 0.0) + prior
        if charge:
            self.seconds[kind] = self.seconds.get(kind, 0.0) + self._lap()
            self.last_kind = kind
        if self.bar is not None:
            self.bar.update(prior, note=self._text())

    def _lap(self) -> float:
        now = time.monotonic()
        dt, self._t = now - self._t, now
        return dt

    def _text(self) -> str:
        unit, now = self.current, ""
        if unit is not None:
            now = f"; now {unit.note}"
            steps, evals = (unit.count.get(p, 0) for p in ("adaptation step", "evaluation"))
            stepped, evaluated = (unit.pieces.get(p, 0.0) for p in ("adaptation step", "evaluation"))
            if steps and stepped < steps:
                now += f": adaptation step {int(stepped) + 1}/{int(steps)}"
            elif evals:
                now += f": evaluating, {100 * min(1.0, evaluated / evals):.0f}% done"
        return f"{self.stored}/{self.groups} groups stored{now}"

    def _note(self) -> None:
        if self.bar is not None:
            self.bar.set_note(self._text())
