"""The whole grid's progress while several processes run it: done / running / failed, ETA.

It drives the same :class:`~clusterbench.runner.GridObserver` the sequential run uses (the
CLI's tqdm bar, whose ETA is the cells' rate), adding the counts to the line it shows.
"""

from __future__ import annotations

from clusterbench.runner import CellOutcome, GridObserver


class GridProgress:
    """Counts of a grid being run by several workers, shown through ``observer``."""

    def __init__(self, observer: GridObserver, total: int) -> None:
        self.observer = observer
        self.running: dict[int, str] = {}
        self.done = self.failed = 0
        observer.start(total)

    def counts(self) -> str:
        return f"[{self.done} done, {len(self.running)} running, {self.failed} failed]"

    def started(self, index: int, label: str) -> None:
        self.running[index] = label
        self.observer.cell_progress(f"{self.counts()} {label}")(0.0, "started")

    def progress(self, index: int, frac: float, msg: str) -> None:
        label = self.running.get(index, "")
        self.observer.cell_progress(f"{self.counts()} {label}")(frac, msg)

    def finished(self, index: int, label: str, outcome: CellOutcome) -> None:
        self.running.pop(index, None)
        self.done += outcome.status in ("done", "partial", "skipped")
        self.failed += outcome.status == "failed"
        self.observer.cell_done(label, outcome)

    def note(self, msg: str) -> None:
        self.observer.note(msg)

    def close(self) -> None:
        self.observer.close()
