"""``--workers N [--gpus ...]``: up to N cells at a time, each in its own reused worker process.

A :class:`concurrent.futures.ProcessPoolExecutor` (spawn: CUDA and fork do not mix) of N
processes, each planning the grid once (:class:`~clusterbench.launch.cells.PlannedGrid`) and
then taking the next unfinished cell from the pool's queue.  With GPUs each worker owns one
(``CUDA_VISIBLE_DEVICES``, round robin over ``--gpus`` if there are more workers than GPUs);
each worker gets CPUs/N threads.  A failed cell is recorded by the worker as in a
sequential run and the grid goes on; Ctrl-C terminates every worker (finished records are
atomic, a deep run keeps its epoch checkpoint) and is re-raised.  Workers that die before
running a cell (their start-up raised, or a script without a ``__main__`` guard re-ran the
grid in them) stop the grid with :class:`~clusterbench.errors.WorkersDidNotStart` saying why.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Sequence

from clusterbench.errors import ClusterbenchError, ConfigError, WorkersDidNotStart
from clusterbench.launch.cells import PlannedCell, PlannedGrid
from clusterbench.launch.progress import GridProgress
from clusterbench.launch.spec import GridSpec
from clusterbench.runner import CellOutcome

_WORKER: dict[str, Any] = {}  # this worker process's PlannedGrid and event queue


def parse_gpus(text: str | None, available: int) -> list[int]:
    """``all`` (or None) -> every GPU; ``0,1,3`` -> those, each checked against what is there."""
    if text in (None, "all"):
        return list(range(available))
    try:
        gpus = [int(g) for g in str(text).split(",") if g.strip()]
    except ValueError:
        raise ConfigError(f"--gpus {text}: expected 'all' or GPU indices such as 0,1,3") from None
    if not gpus or len(set(gpus)) != len(gpus):
        raise ConfigError(f"--gpus {text}: expected distinct GPU indices such as 0,1,3")
    missing = [g for g in gpus if not 0 <= g < available]
    if missing:
        raise ConfigError(f"--gpus {text}: no GPU {missing[0]} (this machine has {available})")
    return gpus


def worker_threads(workers: int) -> int:
    """Intra-op threads of one worker (CPU or GPU): ``OMP_NUM_THREADS`` if set (as torch would), else the CPUs shared out."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, workers))


def _init_worker(spec: GridSpec, results: str, gpus: Any, events: Any, threads: int) -> None:
    """Set this worker up; if that fails, tell the parent why (one line) and exit without a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends the workers
    try:
        _set_up_worker(spec, results, gpus, events, threads)
    except BaseException as exc:  # noqa: BLE001 - whatever it is, the parent reports it
        events.put(("start failed", -1, 0.0, f"{type(exc).__name__}: {exc}"))
        events.close()
        events.join_thread()  # the message reaches the parent before this process goes
        os._exit(1)
    events.put(("ready", -1, 0.0, ""))


def _set_up_worker(spec: GridSpec, results: str, gpus: Any, events: Any, threads: int) -> None:
    gpu = gpus.get()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    # a GPU worker's CPU work (k-means, decoding, the host side of the step) shares the CPUs too
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    import torch

    torch.set_num_threads(threads)
    _WORKER.update(grid=PlannedGrid(spec, results), events=events)


def _run_in_worker(cell: PlannedCell, force: bool) -> CellOutcome:
    events = _WORKER["events"]
    events.put(("started", cell.index, 0.0, ""))
    progress = lambda frac, msg: events.put(("progress", cell.index, frac, msg))  # noqa: E731
    return _WORKER["grid"].run(cell.key, force=force, progress=progress)


def run_pool(spec: GridSpec, results: str | Path, cells: Sequence[PlannedCell], progress: GridProgress, *,
             workers: int, gpus: Sequence[int] = (), force: bool = False) -> list[CellOutcome]:
    """Run ``cells`` on ``workers`` processes; outcomes in the order of ``cells``."""
    ctx = mp.get_context("spawn")
    gpu_queue, events = ctx.Queue(), ctx.Queue()
    for i in range(workers):
        gpu_queue.put(gpus[i % len(gpus)] if gpus else None)
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(spec, str(results), gpu_queue, events, worker_threads(workers)))
    futures: dict[Future, PlannedCell] = {pool.submit(_run_in_worker, c, force): c for c in cells}
    outcomes: dict[int, CellOutcome] = {}
    pending = set(futures)
    starts = _Starts()
    try:
        while pending:
            finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            _drain(events, progress, {c.index: c for c in cells}, starts)
            for fut in finished:
                if isinstance(fut.exception(), BrokenProcessPool):
                    starts.check(ctx.get_start_method())
                cell = futures[fut]
                outcomes[cell.index] = _outcome(fut, cell)
                progress.finished(cell.index, cell.label, outcomes[cell.index])
    except BaseException:  # Ctrl-C, or a ClusterbenchError a worker raised (as a sequential run would stop)
        _terminate(pool)
        raise
    pool.shutdown(wait=True)
    return [outcomes[c.index] for c in cells]


def _outcome(fut: Future, cell: PlannedCell) -> CellOutcome:
    """A worker's outcome; a worker that died (killed, out of host memory) fails its cell, unrecorded."""
    try:
        return fut.result()
    except ClusterbenchError:
        raise
    except Exception as exc:  # BrokenProcessPool and the like: the cell's own errors are recorded in run_cell
        return cell.outcome("failed", reason=f"worker process failed: {type(exc).__name__}: {exc}")


class _Starts:
    """What the workers said of their start-up: how many are ready, why any could not start."""

    def __init__(self) -> None:
        self.ready = 0
        self.failures: list[str] = []

    def check(self, start_method: str) -> None:
        """The pool broke: raise WorkersDidNotStart if that was a worker's start-up (else a cell's death)."""
        if self.ready and not self.failures:
            return
        why = self.failures[0] if self.failures else "they exited before setting up (their error is printed above)"
        hint = ("; if run_grid(..., workers=N) is called from a script, put the call under "
                "`if __name__ == \"__main__\":` (workers are started with spawn, which imports the script)"
                if start_method == "spawn" and not self.failures else "")
        raise WorkersDidNotStart(f"the worker processes could not start: {why}{hint}; finished runs are kept")


def _drain(events: Any, progress: GridProgress, cells: dict[int, PlannedCell], starts: _Starts) -> None:
    while True:
        try:
            kind, index, frac, msg = events.get_nowait()
        except queue.Empty:
            return
        if kind == "ready":
            starts.ready += 1
        elif kind == "start failed":
            starts.failures.append(msg)
        elif kind == "started":
            progress.started(index, cells[index].label)
        else:
            progress.progress(index, frac, msg)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """End every worker now: nothing finished is lost (atomic records, epoch checkpoints, flock)."""
    procs = list(getattr(pool, "_processes", {}).values())  # Python 3.14 has pool.terminate_workers()
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=10)
