"""The results store: one directory per run, one JSON record per finished run.

Layout of a results directory::

    <results>/.clusterbench-results      marker: says this directory is a results store
    <results>/runs/<run_id>/record.json  the record (written last, atomically)
    <results>/runs/<run_id>/labels.npy   predicted cluster labels (recompute any metric later)
    <results>/runs/<run_id>/checkpoint.pt  resume state of a deep run (removed once done)
    <results>/runs/<run_id>/.lock        held while a process runs the cell
    <results>/runs/<run_id>/.NAME.*.tmp  an atomic write in progress (a leftover after a kill)

The run id is a hash of everything that determines the result (method, its version and
resolved parameters, dataset and its digest, seed, budget, engine settings), so a rerun
finds finished cells and skips them, and a changed parameter is a new cell.  Records are
written with a temp file + ``os.replace``: a crash never leaves half a record.

``record.json`` is what marks a run finished.  Labels are written before it and the
record carries their checksum, so a finished record never stands beside missing or
other labels (see :meth:`ResultsStore.write_record`); leftovers of a killed process
(temp files, orphan labels) are removed when the cell runs again
(:meth:`ResultsStore.clean_run_dir`).  What a record holds is checked by
:mod:`clusterbench.results.schema`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from clusterbench.errors import ConfigError, RecordError
from clusterbench.results.io import atomic_save_npy, atomic_write_json, canonical_json, is_temp_file
from clusterbench.results.schema import SCHEMA_VERSION, load_record

__all__ = ["LABELS", "MARKER", "SCHEMA_VERSION", "RecordError", "ResultsStore", "load_record", "make_run_id"]

MARKER = ".clusterbench-results"
LABELS = "labels.npy"


def make_run_id(identity: dict[str, Any]) -> str:
    """``<method>--<dataset>--s<seed>--<hash>``: readable, and unique per configuration."""
    digest = hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:12]
    safe = lambda s: "".join(c if c.isalnum() or c in "-_." else "_" for c in str(s))  # noqa: E731
    return f"{safe(identity['method'])}--{safe(identity['dataset']['name'])}--s{identity['seed']}--{digest}"


def _compact(labels: np.ndarray) -> np.ndarray:
    """The narrowest signed integer type that holds the labels: the committed records are data
    a repository carries (60,000 CIFAR-10 labels: 60 kB as int8, not 240 kB as int32)."""
    if labels.size == 0:
        return labels
    lo, hi = int(labels.min()), int(labels.max())
    for dtype in (np.int8, np.int16):
        if np.iinfo(dtype).min <= lo and hi <= np.iinfo(dtype).max:
            return labels.astype(dtype)
    return labels


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ResultsStore:
    """A results directory: where runs are found, locked, written and read back."""

    def __init__(self, root: str | Path, *, create: bool = True) -> None:
        self.root = Path(root)
        marker = self.root / MARKER
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"results path {str(self.root)!r} is a file, not a results directory")
        if self.root.is_dir() and not marker.exists():
            if any(not self._being_created(p) for p in self.root.iterdir()):
                raise ConfigError(
                    f"{str(self.root)!r} is not a clusterbench results directory (no {MARKER} file) and is "
                    "not empty; choose another --results directory"
                )
            if not create:
                raise ConfigError(f"{str(self.root)!r} is not a clusterbench results directory (no {MARKER})")
        if not self.root.exists():
            if not create:
                raise ConfigError(f"results directory {str(self.root)!r} does not exist")
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
            if not marker.exists():  # marker first: another process creating the same store sees it soon
                atomic_write_json(marker, {"schema_version": SCHEMA_VERSION, "created": time.time()})
            (self.root / "runs").mkdir(exist_ok=True)

    @staticmethod
    def _being_created(path: Path) -> bool:
        """What another process creating this store leaves before its marker lands."""
        return (path.name == "runs" and path.is_dir() and not any(path.iterdir())) or (
            path.name.startswith(f".{MARKER}.") and is_temp_file(path))

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def record_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "record.json"

    def finished(self, run_id: str, statuses: tuple[str, ...] = ("done",)) -> dict[str, Any] | None:
        """The record of a successfully finished run, or None (absent, failed, invalid, or its labels lost).

        A finished record that declares labels (``labels.sha256``) counts only while
        ``labels.npy`` holds exactly those labels; otherwise the cell runs again.
        """
        path = self.record_path(run_id)
        if not path.exists():
            return None
        try:
            rec = load_record(path)
        except RecordError:
            return None
        if rec["status"] not in statuses or not self._labels_match(run_id, rec):
            return None
        return rec

    def _labels_match(self, run_id: str, rec: dict[str, Any]) -> bool:
        want = (rec.get("labels") or {}).get("sha256")
        if want is None:  # a record that declares no labels (older records, runs without labels)
            return True
        try:
            return _sha256(self.run_dir(run_id) / LABELS) == want
        except OSError:
            return False

    def load_labels(self, rec: dict[str, Any], n: int | None = None) -> np.ndarray:
        """The predicted labels a record vouches for, the one place labels are verified.

        Read once and checked against the record's sha256 (and against ``n`` labels when
        given); raises :class:`RecordError` saying what is wrong otherwise.
        """
        path = self.run_dir(rec["run_id"]) / LABELS
        want = (rec.get("labels") or {}).get("sha256") if isinstance(rec.get("labels"), dict) else None
        if want is None:
            raise RecordError(f"{self.record_path(rec['run_id'])}: the record declares no labels")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise RecordError(f"cannot read {path} ({type(exc).__name__}: {exc})") from None
        if hashlib.sha256(raw).hexdigest() != want:
            raise RecordError(f"{path} is not the labels this record was written with "
                              "(an interrupted rerun? run it again)")
        try:
            labels = np.load(io.BytesIO(raw), allow_pickle=False)
        except (ValueError, EOFError) as exc:
            raise RecordError(f"cannot read {path} ({type(exc).__name__}: {exc})") from None
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or (n is not None and len(labels) != n):
            raise RecordError(f"{path} holds {labels.dtype} {labels.shape}, expected "
                              f"{n if n is not None else 'N'} integer labels")
        return labels.astype(np.int32, copy=False)

    def write_record(self, run_id: str, record: dict[str, Any], labels: np.ndarray | None = None) -> Path:
        """Write a run's record atomically, labels first; a finished record being replaced (--force) is kept aside.

        Order, and why it is safe to be killed anywhere: (1) a finished record about to be
        replaced is copied aside; (2) ``labels.npy`` is written atomically and its sha256
        put in ``record["labels"]`` (the caller's dict is updated); (3) ``record.json`` is
        written atomically -- it is what marks the run finished.  Killed after (2), a fresh
        cell has labels but no record (not finished; :meth:`clean_run_dir` removes them on
        the next attempt), and a replaced cell has its old record beside labels it does not
        match, which :meth:`finished` rejects, so the cell runs again.  A record written
        without labels (a failed run) removes ``labels.npy`` once it has landed, so no
        stale labels sit beside it.
        """
        path = self.record_path(run_id)
        labels_path = self.run_dir(run_id) / LABELS
        if path.exists() and self.finished(run_id) is not None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            aside, n = path.with_name(f"record.replaced-{stamp}.json"), 1
            while aside.exists():  # never overwrite a record kept aside within the same second
                aside, n = path.with_name(f"record.replaced-{stamp}-{n}.json"), n + 1
            shutil.copy2(path, aside)  # copy, not move: the old record stays until the new one lands
        if labels is not None:
            arr = _compact(np.asarray(labels, dtype=np.int32))
            atomic_save_npy(labels_path, arr)
            record["labels"] = {"file": LABELS, "sha256": _sha256(labels_path), "n": int(arr.shape[0])}
        else:
            record.pop("labels", None)
        atomic_write_json(path, record)
        if labels is None:
            labels_path.unlink(missing_ok=True)
        return path

    def clean_run_dir(self, run_id: str) -> list[Path]:
        """Remove what a killed process left in a run's directory; returns the paths removed.

        Temp files of interrupted atomic writes (a checkpoint, a record, labels) always go;
        ``labels.npy`` goes unless a finished record vouches for it.  Call it only while
        holding the cell's :meth:`lock` (no other process writes there then): the runner
        does, when a cell starts or resumes and when it ends.
        """
        d = self.run_dir(run_id)
        if not d.is_dir():
            return []
        stale = [p for p in d.iterdir() if is_temp_file(p) and p.is_file()]
        if (d / LABELS).exists() and self.finished(run_id, ("done", "partial")) is None:
            stale.append(d / LABELS)
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    @contextlib.contextmanager
    def lock(self, run_id: str) -> Iterator[bool]:
        """Hold the cell's lock; yields False if another process holds it (then skip the cell)."""
        d = self.run_dir(run_id)
        d.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX: no cross-process lock
            yield True
            return
        with open(d / ".lock", "a+") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def iter_records(self, *, strict: bool = True) -> Iterator[dict[str, Any]]:
        """Every record in the store; an invalid one raises RecordError unless ``strict`` is False."""
        for path in sorted((self.root / "runs").glob("*/record.json")):
            try:
                yield load_record(path)
            except RecordError:
                if strict:
                    raise
