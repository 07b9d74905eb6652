"""The command-line side of scaling out: ``run``'s ``--grid/--workers/--gpus/--shard/--launcher``
flags, and the ``status`` and ``merge`` commands (added by :func:`add_launch_commands`)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

LAUNCH_DESTS = ("grid", "workers", "gpus", "shard", "launcher")


def add_launch_commands(sub: Any, run: argparse.ArgumentParser, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add the scale-out flags to ``run`` (which ``parents`` built), and the ``status`` and ``merge`` commands."""
    g = run.add_argument_group("scaling out")
    g.add_argument("--grid", metavar="FILE", help="the grid as a YAML or TOML file (keys: the flags above)")
    g.add_argument("--workers", type=int, metavar="N", help="cells at a time, each in its own process (default with "
                   "--gpus: one per GPU); with --launcher: that many jobs (slurm default: one per cell)")
    g.add_argument("--gpus", metavar="all|0,1,3", help="GPUs the workers use, one each (default: all)")
    g.add_argument("--shard", metavar="I/N", help="run only the I-th of N round-robin parts of the grid")
    g.add_argument("--launcher", choices=["local", "slurm"], help="submit the cells through submitit: slurm (a job "
                   "array), or local (submitit's local executor: same code path, no scheduler)")
    s = run.add_argument_group("slurm (with --launcher slurm)")
    s.add_argument("--slurm-partition")
    s.add_argument("--slurm-time", type=int, default=24 * 60, metavar="MINUTES", help="per task (default 1440)")
    s.add_argument("--slurm-gpus-per-task", type=int, default=1, metavar="N")
    s.add_argument("--slurm-tasks-per-node", type=int, default=1, metavar="N",
                   help="ranks per task that train each cell together with DDP (default 1; --launcher local too)")
    s.add_argument("--slurm-cpus-per-task", type=int, default=8, metavar="N")
    s.add_argument("--slurm-mem", metavar="SIZE", help="per task, e.g. 32G")
    s.add_argument("--slurm-array-parallelism", type=int, default=256, metavar="N", help="tasks running at once")
    s.add_argument("--slurm-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. account=abc or constraint=h100 (repeatable)")
    s.add_argument("--submitit-dir", metavar="DIR", help="submitit's job files and logs (default: RESULTS/.submitit)")
    defaults = {a.dest: a.default for a in run._actions}  # to tell a flag given from one left at its default
    run.set_defaults(func=partial(cmd_run, defaults))

    status = sub.add_parser("status", parents=list(parents), help="each cell of a grid: finished, running, failed, "
                            "pending")
    status.add_argument("--grid", metavar="FILE", help="the grid as a YAML or TOML file")
    status.add_argument("--shard", metavar="I/N", help="only this shard's cells")
    status.set_defaults(func=partial(cmd_status, {a.dest: a.default for a in status._actions}))

    merge = sub.add_parser("merge", help="join results directories (e.g. shards) into one")
    merge.add_argument("sources", nargs="+", metavar="DIR")
    merge.add_argument("--output", "-o", required=True, metavar="DIR", help="the merged results directory")
    merge.set_defaults(func=cmd_merge)


def scaled(args: argparse.Namespace) -> bool:
    """Whether ``run`` was asked for anything of this module's (else the plain sequential run)."""
    return any(getattr(args, d, None) is not None for d in LAUNCH_DESTS)


def grid_spec(args: argparse.Namespace, defaults: dict[str, Any], planning_only: bool = False,
              recorded_digest: Callable[[Any], str | None] | None = None):
    """The :class:`GridSpec` of ``run``/``status``'s flags (``--grid`` applied), planned and checked.

    ``planning_only`` (``status``): ``--device cuda`` plans the cells a GPU would run even where
    there is none (a login node, a laptop), since a GPU cell's run id differs from a CPU cell's;
    ``recorded_digest`` (``status``): see :meth:`PlannedGrid.cells`.
    """
    from clusterbench.launch.cells import PlannedGrid
    from clusterbench.launch.spec import GridSpec, apply_grid_file

    source = apply_grid_file(args, defaults) if args.grid else None
    target = _task_device(args, planning_only)  # before the spec: it sets the GPU's --compile default
    spec = GridSpec.from_args(args, source)
    if target is None:
        planned = PlannedGrid(spec)
    else:  # plan here, on a login node without GPUs, the cells the tasks will run on theirs
        planned = PlannedGrid(replace(spec, values={**spec.values, "device": "cpu"}))
        planned.settings.device = target
    cells = planned.cells(recorded_digest=recorded_digest)
    spec = replace(spec, values={**spec.values, "device": planned.settings.device})  # "auto" resolved once, here
    if args.shard:
        from clusterbench.launch.shard import parse_shard, shard

        cells = shard(cells, *parse_shard(args.shard))
    return spec, planned, cells


def _task_device(args: argparse.Namespace, planning_only: bool = False) -> str | None:
    """The device the cells will run on when it is not this machine's, with run's GPU defaults:
    SLURM tasks with GPUs, or ``status --device cuda[:N]``; None: this machine's."""
    gpu_tasks = getattr(args, "launcher", None) == "slurm" and args.slurm_gpus_per_task \
        and args.device in ("auto", "cuda")
    if not (gpu_tasks or (planning_only and args.device.startswith("cuda"))):
        return None
    if args.compile is None:
        args.compile = True  # what --compile defaults to on a GPU
    return "cuda"


def cmd_run(defaults: dict[str, Any], args: argparse.Namespace) -> int:
    from clusterbench import cli

    if not scaled(args):
        return cli.cmd_run(args)
    from clusterbench.launch.run import launch
    from clusterbench.progress import Reporter

    spec, planned, cells = grid_spec(args, defaults)
    result, store = launch(spec, planned, cells, args, Reporter(quiet=args.quiet))
    if result is None:  # submitted to SLURM: nothing to show yet
        return 0
    return cli.report_run(result, store)


def cmd_status(defaults: dict[str, Any], args: argparse.Namespace) -> int:
    from clusterbench.launch.status import CellState, cell_states, render_states
    from clusterbench.results.store import ResultsStore

    store = ResultsStore(args.results, create=False) if Path(args.results).exists() else None
    _, _, cells = grid_spec(args, defaults, planning_only=True,
                            recorded_digest=recorded_digests(store) if store is not None else None)
    if store is not None:
        states = cell_states(store, cells)
    else:  # nothing has run yet (e.g. right after a submission): every cell is pending
        states = [CellState(c, "pending") for c in cells]
    print(render_states(states))
    return 0


def recorded_digests(store: Any) -> Callable[[Any], str | None]:
    """``digest(dataset)``: the data digest the store's records give for that dataset (its name
    and data-choosing options), so ``status`` plans run ids where the data is not readable; None
    where they give none, or several (the files changed, or another data root): no guessing."""
    seen: dict[str, set[str]] = {}
    for rec in store.iter_records(strict=False):
        ds = rec.get("dataset") if isinstance(rec.get("dataset"), dict) else {}
        if ds.get("digest"):
            key = json.dumps({"name": ds.get("name"), "options": ds.get("options", {})}, sort_keys=True)
            seen.setdefault(key, set()).add(ds["digest"])

    def digest(dataset: Any) -> str | None:
        found = seen.get(json.dumps(dataset.identity(), sort_keys=True), set())
        return next(iter(found)) if len(found) == 1 else None
    return digest


def cmd_merge(args: argparse.Namespace) -> int:
    from clusterbench.launch.merge import merge_results

    summary = merge_results(args.sources, args.output)
    print(summary, file=sys.stderr)
    return 0
