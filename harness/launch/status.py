"""``clusterbench status``: where each cell of a grid stands in a results directory.

finished (its record is done), failed (its record says why), running (another process holds
its lock: job id and progress from its heartbeat), pending (nothing yet, or an interrupted
attempt that resumes from its checkpoint).  ``clusterbench run`` on the same grid runs or
submits exactly the cells that are not finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tabulate import tabulate

from clusterbench.errors import RecordError
from clusterbench.launch.cells import PlannedCell
from clusterbench.launch.heartbeat import read_heartbeat
from clusterbench.results.schema import load_record
from clusterbench.results.store import ResultsStore

STATES = ("finished", "running", "failed", "pending")


@dataclass(frozen=True)
class CellState:
    cell: PlannedCell
    state: str  # one of STATES
    detail: str = ""


def cell_state(store: ResultsStore, cell: PlannedCell) -> CellState:
    run_dir = store.run_dir(cell.run_id)
    if store.finished(cell.run_id) is not None:
        rec = load_record(store.record_path(cell.run_id))
        m = rec["protocols"].get(rec.get("primary_protocol", ""), {})
        return CellState(cell, "finished", f"ACC {m['acc']:.3f}" if isinstance(m.get("acc"), float) else "")
    beat = read_heartbeat(run_dir)
    where = f"{beat.get('progress', 0):.0%} {beat.get('message', '')}".strip() if beat else ""
    if _locked(run_dir):
        return CellState(cell, "running", f"job {beat['job']}: {where}" if beat else "started")
    if store.record_path(cell.run_id).exists():
        try:
            rec = load_record(store.record_path(cell.run_id))
        except RecordError as exc:
            return CellState(cell, "failed", f"unreadable record: {exc}")
        if rec["status"] == "failed":
            return CellState(cell, "failed", str((rec.get("error") or {}).get("reason", "no reason recorded")))
        return CellState(cell, "pending", "its labels are missing or changed: it runs again")
    if (run_dir / "checkpoint.pt").exists():
        return CellState(cell, "pending", f"interrupted at {where or 'an epoch'}; resumes from its checkpoint")
    return CellState(cell, "pending")


def _locked(run_dir: Path) -> bool:
    """Whether a process holds the cell's lock (probed without taking it for longer than an instant)."""
    lock = run_dir / ".lock"
    if not lock.exists():
        return False
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        return False
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return False


def cell_states(store: ResultsStore, cells: Sequence[PlannedCell]) -> list[CellState]:
    return [cell_state(store, c) for c in cells]


def render_states(states: Sequence[CellState]) -> str:
    """A table of every cell, then one line of counts."""
    rows = [(s.state, s.cell.label, s.detail, s.cell.run_id) for s in states]
    counts = ", ".join(f"{sum(s.state == k for s in states)} {k}" for k in STATES)
    return tabulate(rows, headers=["state", "cell", "detail", "run id"]) + f"\n\n{len(states)} cells: {counts}"
