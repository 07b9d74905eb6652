"""Where a planned grid's cells run: in this process, on a pool of workers, or through submitit.

The cells already finished are skipped here, before anything is started or submitted, so a
rerun of the same grid (after a crash, a preemption, a shard that failed) runs only what is
missing.
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

from clusterbench.errors import ConfigError
from clusterbench.launch.cells import GridStore, PlannedCell, PlannedGrid
from clusterbench.launch.progress import GridProgress
from clusterbench.launch.spec import GridSpec
from clusterbench.runner import CellOutcome, GridObserver, GridResult


def launch(spec: GridSpec, planned: PlannedGrid, cells: Sequence[PlannedCell], args: argparse.Namespace,
           reporter: GridObserver) -> tuple[GridResult | None, GridStore]:
    """Run (or submit) ``cells``; the result (None once submitted to SLURM) and the store."""
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: expected at least 1")
    pool = None if args.launcher or not (args.workers or args.gpus) else workers_and_gpus(args, planned.settings.device)
    store = GridStore(args.results, spec.source)  # after every check: a typo writes nothing
    outcomes: dict[int, CellOutcome] = {}
    todo = []
    for c in cells:
        rec = None if args.force else store.finished(c.run_id)
        if rec is not None:
            outcomes[c.index] = c.outcome("skipped", record=rec)
        else:
            todo.append(c)
    if args.launcher:
        from clusterbench.launch.submit import submit

        done = submit(spec, store, todo, args, reporter, skipped=len(cells) - len(todo))
        if done is None:
            return None, store
        outcomes.update(done)
    else:
        progress = GridProgress(reporter, len(cells))
        for c in cells:
            if c.index in outcomes:
                progress.finished(c.index, c.label, outcomes[c.index])
        try:
            if pool is not None:
                from clusterbench.launch.local import run_pool

                workers, gpus = pool
                ran = run_pool(spec, store.root, todo, progress, workers=workers, gpus=gpus, force=args.force)
            else:
                ran = _run_here(planned, store, todo, progress, force=args.force)
        finally:
            progress.close()
        outcomes.update((c.index, o) for c, o in zip(todo, ran))
    return GridResult([outcomes[c.index] for c in cells if c.index in outcomes]), store


def _run_here(planned: PlannedGrid, store: GridStore, cells: Sequence[PlannedCell], progress: GridProgress, *,
              force: bool) -> list[CellOutcome]:
    """One cell after another in this process (a shard, a grid file): the sequential run."""
    planned.store = store
    out = []
    for c in cells:
        progress.started(c.index, c.label)
        out.append(planned.run(c.key, force=force, progress=lambda f, m, i=c.index: progress.progress(i, f, m)))
        progress.finished(c.index, c.label, out[-1])
    return out


def workers_and_gpus(args: Any, device: str) -> tuple[int, list[int]]:
    """How many workers, and the GPUs they take in turn (none on the CPU)."""
    if not device.startswith("cuda"):
        if args.gpus:
            raise ConfigError(f"--gpus {args.gpus}: the run is on the CPU (--device {device})")
        return args.workers or 1, []
    if device != "cuda":
        raise ConfigError(f"--device {device} with workers: choose GPUs with --gpus and use --device cuda (or auto)")
    import torch

    from clusterbench.launch.local import parse_gpus

    gpus = parse_gpus(args.gpus, torch.cuda.device_count())
    return args.workers or len(gpus), gpus
