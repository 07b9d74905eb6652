"""``--launcher slurm|local``: the grid's cells as one submitit job array.

Each task runs a round-robin part of the cells (one cell per task by default on SLURM; the
``--workers`` count of tasks otherwise) in one process, through the same
:class:`~clusterbench.launch.cells.PlannedGrid` a local worker uses.  A task is a
:class:`submitit.helpers.Checkpointable`: preempted or timed out, it is requeued and runs its
cells again, where finished ones are skipped and an interrupted deep run resumes from its
epoch checkpoint (``--force`` applies only to a cell's first start).  ``local`` is submitit's
:class:`~submitit.LocalExecutor` (one process per task, one GPU each), waited for here;
``slurm`` submits and returns: ``clusterbench status`` follows the cells.  With
``--slurm-tasks-per-node N`` a task is N processes that train each of its cells together with
DDP (:func:`join_job_ranks`; the same code path as ``torchrun``, rank 0 writes).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import submitit

from clusterbench.errors import ConfigError
from clusterbench.launch.cells import GridStore, PlannedCell, PlannedGrid
from clusterbench.launch.progress import GridProgress
from clusterbench.launch.shard import shard
from clusterbench.launch.spec import GridSpec
from clusterbench.runner import CellOutcome, GridObserver


class CellsTask(submitit.helpers.Checkpointable):
    """One array task: its cells one after another; requeued by submitit on preemption or timeout."""

    def __init__(self) -> None:
        self.started: set[int] = set()  # cells begun by an earlier attempt of this task: never forced again

    def __call__(self, spec: GridSpec, results: str, cells: Sequence[PlannedCell], force: bool) -> list[CellOutcome]:
        join_job_ranks()
        grid = PlannedGrid(spec, results)
        out = []
        for c in cells:
            again = c.index in self.started
            self.started.add(c.index)
            out.append(grid.run(c.key, force=force and not again))
        return out


def join_job_ranks() -> None:
    """Several tasks in one job (``--slurm-tasks-per-node N``): export torch's rendezvous variables
    (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) from the job's environment through submitit,
    so each task joins one DDP process group exactly as under torchrun (every GPU of the node
    stays visible: rank r trains on ``cuda:LOCAL_RANK``)."""
    if submitit.JobEnvironment().num_tasks > 1 and "RANK" not in os.environ:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def slurm_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters from the ``--slurm-*`` flags."""
    extra = {}
    for item in args.slurm_opt or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--slurm-opt {item}: expected KEY=VALUE, e.g. --slurm-opt account=abc")
        extra[key.strip().replace("-", "_")] = value.strip()
    ranks = tasks_per_node(args)
    # one rank: its GPU(s) bound to the task; several: the node's GPUs visible to every rank (cuda:LOCAL_RANK)
    gpus = {"gpus_per_task": args.slurm_gpus_per_task or None} if ranks == 1 else \
        {"gpus_per_node": ranks * args.slurm_gpus_per_task if args.slurm_gpus_per_task else None}
    params = {"time": args.slurm_time, **gpus,
              "cpus_per_task": args.slurm_cpus_per_task, "array_parallelism": args.slurm_array_parallelism,
              "ntasks_per_node": ranks, "partition": args.slurm_partition, "mem": args.slurm_mem,
              "job_name": "clusterbench", "additional_parameters": extra}
    return {k: v for k, v in params.items() if v not in (None, {}, "")}


def tasks_per_node(args: argparse.Namespace) -> int:
    """``--slurm-tasks-per-node``: the ranks that train each cell together (DDP); 1 = no DDP."""
    n = getattr(args, "slurm_tasks_per_node", 1) or 1
    if n < 1:
        raise ConfigError(f"--slurm-tasks-per-node {n}: must be >= 1")
    return n


def submit(spec: GridSpec, store: GridStore, cells: Sequence[PlannedCell], args: argparse.Namespace,
           reporter: GridObserver, *, skipped: int = 0) -> dict[int, CellOutcome] | None:
    """Submit ``cells``; with ``local``, wait and return their outcomes by cell index (None: submitted)."""
    folder = Path(args.submitit_dir or store.root / ".submitit")
    if not cells:
        return {}
    device = spec.values["device"] or "cpu"
    gpus = device.startswith("cuda")
    n_tasks = args.workers or (len(cells) if args.launcher == "slurm" else 1)
    groups = [g for g in (shard(cells, i, n_tasks) for i in range(1, n_tasks + 1)) if g]
    if args.launcher == "slurm":
        ex = submitit.SlurmExecutor(folder)
        ex.update_parameters(**slurm_parameters(args))
        jobs = ex.map_array(CellsTask(), [spec] * len(groups), [str(store.root)] * len(groups), groups,
                            [args.force] * len(groups))
        print(f"submitted {len(cells)} cell(s) as SLURM job array {jobs[0].job_id.split('_')[0]} "
              f"({len(groups)} task(s); {skipped} finished earlier); follow it with: clusterbench status "
              f"--results {store.root} (and the same grid flags)", file=sys.stderr)
        return None
    ex = submitit.LocalExecutor(folder)
    jobs = []
    for i, group in enumerate(groups):
        ranks = tasks_per_node(args)
        ex.update_parameters(timeout_min=args.slurm_time, tasks_per_node=ranks,
                             **({"gpus_per_node": ranks, "visible_gpus": tuple((i * ranks + r) % _gpu_count()
                                                                              for r in range(ranks))}
                                if gpus else {}))
        jobs.append(ex.submit(CellsTask(), spec, str(store.root), group, args.force))
    return _wait(jobs, groups, GridProgress(reporter, len(cells) + skipped))


def _gpu_count() -> int:
    import torch

    return max(1, torch.cuda.device_count())


def _wait(jobs: list[Any], groups: list[list[PlannedCell]], progress: GridProgress) -> dict[int, CellOutcome]:
    """Wait for the local jobs; Ctrl-C cancels every one (finished records stay)."""
    outcomes: dict[int, CellOutcome] = {}
    waiting = dict(enumerate(jobs))
    try:
        while waiting:
            for i, job in list(waiting.items()):
                if not job.done():
                    continue
                del waiting[i]
                try:
                    results = job.result()
                except Exception as exc:  # the task process itself died; the cells' own errors are recorded
                    reason = f"submitit job {job.job_id} failed: {str(exc).strip().splitlines()[-1][:300]}"
                    results = [c.outcome("failed", reason=reason) for c in groups[i]]
                for c, o in zip(groups[i], results):
                    outcomes[c.index] = o
                    progress.finished(c.index, c.label, o)
            time.sleep(0.2 if waiting else 0)
    except BaseException:
        for job in waiting.values():
            job.cancel(check=False)
        raise
    finally:
        progress.close()
    return outcomes
