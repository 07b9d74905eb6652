"""What ``clusterbench run`` shows while a grid runs (on stderr).

On a terminal: one status line, redrawn in place, saying where the grid is (cells done,
running, failed, pending) and what the running cell is doing (method, dataset, seed, the
engine's epoch/step of the budget, loss and images/s, the cell's ETA), with one line per
finished cell printed above it.  Not on a terminal (a log file, a pipe, CI): only the
lines, one per finished cell (and one per dataset loaded).  ``quiet``: nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO

from clusterbench.runner import CellOutcome


class Reporter:
    """A :class:`clusterbench.runner.GridObserver` for a terminal; ``quiet`` says nothing."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.bar: Any = None
        self.total = 0
        self.counts = {"done": 0, "failed": 0, "other": 0}  # other: skipped, busy
        self.running: str | None = None

    def start(self, total: int) -> None:
        self.total = total
        if self.quiet or not _is_tty(self.stream):
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, file=self.stream, dynamic_ncols=True, leave=False,
                        bar_format="|{bar:12}| {desc}")
        self._redraw(0.0, "")

    def note(self, msg: str) -> None:
        if not self.quiet:
            if self.bar is not None:
                self.bar.write(msg, file=self.stream)
            else:
                print(msg, file=self.stream, flush=True)

    def cell_progress(self, label: str) -> Callable[[float, str], None]:
        self.running, started = label, time.monotonic()
        self._redraw(0.0, f"{label}: starting")

        def update(frac: float, msg: str) -> None:
            elapsed = time.monotonic() - started
            eta = f" ETA {_clock(elapsed * (1 - frac) / frac)}" if 0 < frac < 1 else ""
            self._redraw(frac, f"{label}: {frac:4.0%} {msg}{eta}".rstrip())
        return update

    def cell_done(self, label: str, outcome: CellOutcome) -> None:
        self.running = None
        self.counts[{"done": "done", "partial": "done", "failed": "failed"}.get(outcome.status, "other")] += 1
        self.note(outcome_line(label, outcome))
        self._redraw(0.0, "")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def grid_text(self) -> str:
        """``cells 2/6: 1 done, 1 skipped, 0 failed, 1 running, 3 pending``."""
        finished = sum(self.counts.values())
        running = 1 if self.running else 0
        return (f"cells {finished}/{self.total}: {self.counts['done']} done, {self.counts['other']} skipped, "
                f"{self.counts['failed']} failed, {running} running, {self.total - finished - running} pending")

    def _redraw(self, frac: float, cell_text: str) -> None:
        if self.bar is None:
            return
        self.bar.n = sum(self.counts.values()) + frac  # a long cell moves the bar, not only its end
        self.bar.set_description_str(self.grid_text() + (f" | {cell_text}" if cell_text else ""), refresh=False)
        self.bar.refresh()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or a fake stream
        return False


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def outcome_line(label: str, outcome: CellOutcome) -> str:
    """``done    kmeans on digits seed 0: ACC 0.789 ...``: one cell's result in one line."""
    if outcome.status in ("done", "partial"):
        rec = outcome.record or {}
        m = rec.get("protocols", {}).get(rec.get("primary_protocol", "head"), {})
        nan = float("nan")
        extra = f"; {outcome.reason}" if outcome.status == "partial" and outcome.reason else ""
        return (f"{outcome.status:<7} {label}: ACC {m.get('acc', nan):.3f} NMI {m.get('nmi', nan):.3f} "
                f"ARI {m.get('ari', nan):.3f} ({rec.get('cost', {}).get('wall_seconds', 0):.1f}s){extra}")
    if outcome.status == "skipped" and outcome.reason:
        return f"skipped {label}: {outcome.reason}"
    if outcome.status == "skipped":
        return f"skipped {label}: finished earlier ({outcome.run_id}; --force reruns it)"
    if outcome.status == "busy":
        return f"busy    {label}: {outcome.reason}"
    return f"FAILED  {label}: {outcome.reason}"
