"""Progress bars a person can read, on stderr: every long loop of metasft (training steps, the
evaluation's work) shows one `Bar`, named by its stage and arm ("train fomaml", "eval").

On a terminal (stderr a TTY) a Bar is a tqdm bar, and log lines written while it is open are printed
above it (tqdm.contrib.logging) instead of breaking it. Elsewhere (a CI log, a file) no carriage-return
updates are written: one plain line each time the bar passes another tenth of its total, and one at
its end, each with the elapsed time and the time left.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from typing import Callable

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

PLAIN_STEP = 0.1  # off a terminal, a line each time the bar passes another tenth of its total


def clock(seconds: float) -> str:
    """`1:05` (m:ss) or `1:02:03` (h:mm:ss), as tqdm writes durations."""
    return tqdm.format_interval(max(0.0, seconds))


def spoken(seconds: float) -> str:
    """`42 s`, `15 min 46 s`, `1 h 2 min`: a duration for a person."""
    s = round(max(0.0, seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


class Bar:
    """A named progress bar over `total` units (`unit`: their name, e.g. "steps"; None: the bar shows a
    percentage only, as when the units are weights). `remaining()`, when given, says the seconds left
    (None: not known yet) instead of tqdm's rate estimate. `enabled=False` (ranks > 0): silent."""

    def __init__(self, desc: str, total: float, *, initial: float = 0, unit: str | None = "steps",
                 enabled: bool = True, remaining: Callable[[], float | None] | None = None):
        self.desc, self.total, self.n, self.unit = desc, total, initial, unit
        self.enabled, self._remaining, self.note = enabled, remaining, ""
        self._t0 = time.monotonic()
        self._n0 = initial
        self._closed = not enabled
        self._tty = enabled and sys.stderr.isatty()
        self._stack = contextlib.ExitStack()
        self._bar = None
        self._next_plain = (math.floor(self._fraction() / PLAIN_STEP) + 1) * PLAIN_STEP
        if self._tty:
            counts = "{n_fmt}/{total_fmt} " + unit + " " if unit else ""
            left = "<{remaining}" if remaining is None else ""
            self._bar = tqdm(total=total, initial=initial, desc=desc, file=sys.stderr, dynamic_ncols=True,
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| " + counts + "[{elapsed}" + left
                                        + "{postfix}]")
            self._stack.enter_context(logging_redirect_tqdm())

    # ------------------------------------------------------------------------ updates
    def update(self, n: float = 1, note: str | None = None) -> None:
        """`n` more units done; `note`: what is going on now (shown after the times)."""
        if self._closed:
            return
        self.n += n
        if note is not None:
            self.note = note
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=False)
            self._bar.update(n)
        elif self._fraction() >= self._next_plain - 1e-9 and not self._at_total():
            self._plain()
            self._next_plain = (math.floor(self._fraction() / PLAIN_STEP + 1e-9) + 1) * PLAIN_STEP

    def set_note(self, note: str) -> None:
        """What is going on now, without progress (a terminal shows it at once)."""
        if self._closed:
            return
        self.note = note
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix())

    def close(self) -> None:
        """The bar's end: off a terminal, one last line if the bar got to its total."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.total > 0 and self._at_total():
            self._plain()
        self._stack.close()

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------ text
    def _fraction(self) -> float:
        return self.n / self.total if self.total else 1.0

    def _at_total(self) -> bool:
        """At the total, up to floating-point rounding (ten updates of 0.1 sum to just under 1.0)."""
        return self.n >= self.total * (1 - 1e-9)

    def left(self) -> float | None:
        """Seconds left: `remaining()`, or the mean rate since the bar opened (None before any progress)."""
        if self._remaining is not None:
            return self._remaining()
        done = self.n - self._n0
        if done <= 0:
            return None
        return (self.total - self.n) * (time.monotonic() - self._t0) / done

    def _postfix(self) -> str:
        parts = []
        if self._remaining is not None:
            left = self.left()
            parts.append(f"about {clock(left)} left" if left is not None else "time left not known yet")
        if self.note:
            parts.append(self.note)
        return ", ".join(parts)

    def _plain(self) -> None:
        elapsed = time.monotonic() - self._t0
        counts = f" ({_count(self.n)}/{_count(self.total)} {self.unit})" if self.unit else ""
        if self._at_total():
            when = f"done in {clock(elapsed)}"
        else:
            left = self.left()
            when = f"{clock(elapsed)} elapsed, " + (f"about {clock(left)} left" if left is not None
                                                     else "time left not known yet")
        note = f"; {self.note}" if self.note else ""
        print(f"{self.desc}: {100 * self._fraction():.0f}%{counts}, {when}{note}", file=sys.stderr, flush=True)


def _count(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) and not x.is_integer() else str(int(x))
