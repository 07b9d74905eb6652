"""A grid's cells as plain data, and running them by key in any process.

:meth:`PlannedGrid.cells` is what the launching process does once (through
:func:`clusterbench.launch.cli.grid_spec`): plan the grid from its
:class:`~clusterbench.launch.spec.GridSpec` (every check), load each dataset for its digest,
and list every cell with its run id.  A worker (a pool process, a submitit task) re-plans the
same grid from the same spec into a :class:`PlannedGrid` and runs cells by their
:class:`~clusterbench.runner.CellKey` through :func:`clusterbench.runner.run_cell`, the same
function the sequential runner uses, so records do not depend on where a cell ran.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from clusterbench.errors import DataUnavailable
from clusterbench.launch.heartbeat import beating
from clusterbench.launch.spec import GridSpec
from clusterbench.results.store import ResultsStore
from clusterbench.runner import CellKey, CellOutcome, GridObserver, run_cell


@dataclass(frozen=True)
class PlannedCell:
    """One cell of a planned grid: its position (grid order), key, label and run id."""

    index: int
    key: CellKey
    label: str
    run_id: str
    method: str
    dataset: str

    def outcome(self, status: str, **fields: Any) -> CellOutcome:
        return CellOutcome(self.method, self.dataset, self.key.seed, self.run_id, status, **fields)


class GridStore(ResultsStore):
    """A results store that stamps each record it writes with the grid file the grid came from."""

    def __init__(self, root: str | Path, grid_source: dict[str, Any] | None = None) -> None:
        super().__init__(root)
        self.grid_source = grid_source

    def write_record(self, run_id: str, record: dict[str, Any], labels: Any = None) -> Path:
        if self.grid_source is not None:
            record["grid"] = self.grid_source
        return super().write_record(run_id, record, labels=labels)


class PlannedGrid:
    """One process's grid: planned once from the spec, each dataset loaded once, cells run by key."""

    def __init__(self, spec: GridSpec, results: str | Path | None = None) -> None:
        from clusterbench.cli import plan_run  # the one place run's flags become a grid

        from clusterbench.train.distributed import init_from_env

        self.spec = spec
        self.registry, self.grid, self.budget, self.settings = plan_run(spec.namespace())
        # one of several ranks of a job (--slurm-tasks-per-node): join the group, train on cuda:LOCAL_RANK
        self.settings = dataclasses.replace(self.settings, device=init_from_env(self.settings.device)[1])
        self.store = GridStore(results, spec.source) if results is not None else None
        self._data: dict[int, tuple[Any, str]] = {}
        self._recorded: dict[int, str] = {}  # dataset index -> digest read from records (see cells)

    def dataset(self, index: int, reporter: GridObserver | None = None) -> tuple[Any, str]:
        """The ``index``-th dataset's images and digest; one dataset is held at a time."""
        if index not in self._data:
            self._data = {index: self.grid.load(index, reporter)}
        return self._data[index]

    def cells(self, reporter: GridObserver | None = None,
              recorded_digest: Callable[[Any], str | None] | None = None) -> list[PlannedCell]:
        """Every cell in grid order with its run id (each dataset is loaded for its digest).

        ``recorded_digest(dataset)``: where the data cannot be read here (``status`` on a login
        node), the digest its records give, or None; without one the load's error stands.
        """
        out, seen = [], set()
        for i, key in enumerate(self.grid.keys(self.spec.values["seeds"])):
            digest = self._digest(key.dataset, reporter, recorded_digest)
            label, cell = self.grid.cell(key, digest, self.budget, self.settings)
            if cell.run_id in seen:  # two spellings of one cell (`cc cc[lr=0.0003]`): run once
                continue
            seen.add(cell.run_id)
            out.append(PlannedCell(i, key, label, cell.run_id, type(cell.method).name, cell.dataset.name))
        return out

    def _digest(self, index: int, reporter: GridObserver | None,
                recorded: Callable[[Any], str | None] | None) -> str:
        if index in self._recorded:
            return self._recorded[index]
        try:
            return self.dataset(index, reporter)[1]
        except DataUnavailable as e:
            ref, ds = self.grid.datasets[index]
            if recorded is None or (digest := recorded(ds)) is None:
                raise
            print(f"clusterbench: {ref}: not readable here ({e}); run ids from the digest its records give",
                  file=sys.stderr)
            self._recorded[index] = digest
            return digest

    def run(self, key: CellKey, *, force: bool = False,
            progress: Callable[[float, str], None] = lambda frac, msg: None) -> CellOutcome:
        """Run (or skip) the cell at ``key`` into this process's store, writing its heartbeat."""
        assert self.store is not None, "a PlannedGrid without a results store only plans"
        data, digest = self.dataset(key.dataset)
        _, cell = self.grid.cell(key, digest, self.budget, self.settings)
        return run_cell(self.registry, cell, data, self.store, force=force,
                        progress=beating(self.store.run_dir(cell.run_id), progress))
