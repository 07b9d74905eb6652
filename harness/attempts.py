"""The wall time of a cell over every attempt at it, so a resumed run's record tells the truth.

A killed cell resumes from its checkpoint; its record's ``wall_seconds`` must cover the time
spent before the kill too (and say how many attempts there were), not only the last one.
The running total is kept in ``attempts.json`` beside the checkpoint, rewritten at the start
of an attempt and at most every few seconds while it runs (a kill loses at most that much).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from clusterbench.results.io import atomic_write_bytes

FILE = "attempts.json"
SAVE_EVERY_S = 5.0


class AttemptClock:
    """Counts this attempt and the wall seconds of the earlier ones (read from ``run_dir``)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / FILE
        before = _read(self.path)
        self.attempts = int(before.get("attempts", 0)) + 1
        self.earlier_seconds = float(before.get("seconds", 0.0))
        self.t0 = time.perf_counter()
        self._saved = 0.0
        self.save()

    def seconds(self) -> float:
        """Wall seconds of every attempt so far, this one included."""
        return self.earlier_seconds + time.perf_counter() - self.t0

    def tick(self) -> None:
        """Called from the cell's progress updates: save now and then."""
        if time.perf_counter() - self._saved >= SAVE_EVERY_S:
            self.save()

    def save(self) -> None:
        self._saved = time.perf_counter()
        atomic_write_bytes(self.path, json.dumps({"attempts": self.attempts, "seconds": self.seconds()}).encode())

    @staticmethod
    def reset(run_dir: Path) -> None:
        """The cell starts from scratch (``--force``, or it finished): earlier attempts no longer count."""
        (Path(run_dir) / FILE).unlink(missing_ok=True)


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
