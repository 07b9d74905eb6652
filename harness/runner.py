"""The grid runner: every (method, dataset, seed) cell, seeded, budgeted, recorded.

:func:`plan_grid` checks every name and option before anything is written;
:meth:`Grid.run` loads each dataset once and runs its cells (:class:`~clusterbench.cell.Cell`).
A cell whose record is already finished is skipped (resume after a crash or Ctrl-C);
``force`` reruns it.  A cell that raises (an exception, out of memory, divergence) is
recorded as failed with the reason and the grid goes on.

Under torchrun a deep cell is trained by every rank (:mod:`clusterbench.train.distributed`):
rank 0 decides whether it runs (finished, busy), tells the others, and alone writes the
record; the other ranks train with it (:func:`_follow_cell`) and write nothing.  An error
every rank raises alike (a batch that does not split, divergence) is recorded as usual; any
other exception stops the process, and torchrun stops the other ranks (the epoch checkpoint
stays for the rerun).
"""

from __future__ import annotations

import gc
import resource
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from clusterbench.api import Dataset, ImageData, Method, TrainStats
from clusterbench.attempts import AttemptClock
from clusterbench.budget import Budget
from clusterbench.cell import Cell
from clusterbench.context import RunContext
from clusterbench.errors import ClusterbenchError, ConfigError, DataError, DataUnavailable, TrainingDiverged
from clusterbench.evaluate.linear import LINEAR_PROTOCOLS, LinearProbe, check_test_split
from clusterbench.evaluate.metrics import evaluate
from clusterbench.evaluate.protocols import check_protocols, run_protocols
from clusterbench.plugins import PluginRef, Registry
from clusterbench.results.envinfo import environment
from clusterbench.results.store import ResultsStore
from clusterbench.seeding import seed_everything
from clusterbench.settings import EngineSettings

if TYPE_CHECKING:  # pragma: no cover
    from clusterbench.train.distributed import Distributed


@dataclass
class CellOutcome:
    method: str  # the method's registered name (``cc``), as in ``--methods``; not its class name
    dataset: str
    seed: int
    run_id: str
    status: str  # done | partial (some protocols failed) | skipped | failed | busy | follower (a rank > 0
                 # of a torchrun run: rank 0 records the cell)
    record: dict[str, Any] | None = None
    reason: str | None = None


@dataclass
class GridResult:
    outcomes: list[CellOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[CellOutcome]:
        """Cells that failed, and cells that kept some protocols but lost others (``partial``)."""
        return [o for o in self.outcomes if o.status in ("failed", "partial")]


class GridObserver(Protocol):
    """What a grid tells its user while it runs (the CLI's tqdm bar: :class:`clusterbench.progress.Reporter`)."""

    def start(self, total: int) -> None: ...
    def note(self, msg: str) -> None: ...
    def cell_progress(self, label: str) -> Callable[[float, str], None]: ...
    def cell_done(self, label: str, outcome: CellOutcome) -> None: ...
    def close(self) -> None: ...


class Silent:
    """A :class:`GridObserver` that says nothing (library use, tests)."""

    def start(self, total: int) -> None: ...
    def note(self, msg: str) -> None: ...
    def cell_progress(self, label: str) -> Callable[[float, str], None]:
        return _no_progress
    def cell_done(self, label: str, outcome: CellOutcome) -> None: ...
    def close(self) -> None: ...


def _no_progress(frac: float, msg: str) -> None:
    pass


# ---- one cell ----------------------------------------------------------------------------
def run_cell(registry: Registry, cell: Cell, data: ImageData, store: ResultsStore, *, force: bool = False,
             progress: Callable[[float, str], None] = _no_progress) -> CellOutcome:
    """Run (or skip) one cell and write its record: done, or failed with the reason."""
    rid = cell.run_id
    outcome = CellOutcome(type(cell.method).name, cell.dataset.name, cell.seed, rid, "done")
    ranks = _ranks(cell)
    if not ranks.is_main:
        return _follow_cell(cell, data, store, ranks, outcome)
    if not force and (rec := store.finished(rid)) is not None:
        return _not_run(ranks, replace(outcome, status="skipped", record=rec))
    with store.lock(rid) as got:
        if not got:
            return _not_run(ranks, replace(outcome, status="busy", reason="another process is running this cell"))
        if not force and (rec := store.finished(rid)) is not None:  # finished while we waited
            return _not_run(ranks, replace(outcome, status="skipped", record=rec))
        store.clean_run_dir(rid)  # a killed attempt's temp files and orphan labels; the checkpoint stays
        if force:
            _drop_finished_checkpoint(store, rid)
        record = cell.record_header(data, registry.provider("method", outcome.method))
        if cell.deep:
            record["engine"]["world_size"] = ranks.world_size  # recorded, not part of the run id
        ranks.broadcast_object(True)  # the other ranks start training this cell with us
        seed_everything(cell.seed)
        _reset_peak(cell.settings.device)
        seen = cell.fit_data(data)  # a linear cell's method never sees the test split
        clock = AttemptClock(store.run_dir(rid))

        def tick(frac: float, msg: str) -> None:
            clock.tick()
            progress(frac, msg)

        ctx = RunContext(seed=cell.seed, budget=cell.budget, settings=cell.settings, run_dir=store.run_dir(rid),
                         evaluate=lambda labels: evaluate(seen.y, labels), progress=tick)
        try:
            fields, labels = _fit_and_score(cell, data, ctx, clock)
        except KeyboardInterrupt:
            raise
        except (Exception, SystemExit) as exc:  # the grid goes on; the record says why (sys.exit() in a plugin too)
            if ranks.active and not isinstance(exc, ClusterbenchError):
                raise  # the other ranks may wait in a collective: stop, and torchrun stops them
            fields, labels = _failure(exc), None
        finally:
            gc.collect()
        record.update(fields, curve=ctx.curve)
        return _finish(registry, cell, store, record, labels, outcome)


def _ranks(cell: Cell) -> "Distributed":
    """The ranks that train this cell: every torchrun rank for a deep cell, rank 0 alone otherwise."""
    from clusterbench.train.distributed import SINGLE, current

    return current() if cell.deep else SINGLE


def _not_run(ranks: "Distributed", outcome: CellOutcome) -> CellOutcome:
    ranks.broadcast_object(False)  # the other ranks skip it too
    return outcome


def _follow_cell(cell: Cell, data: ImageData, store: ResultsStore, ranks: "Distributed",
                 outcome: CellOutcome) -> CellOutcome:
    """A rank > 0: train the cell with rank 0 when rank 0 runs it; write nothing, score nothing."""
    if ranks.broadcast_object(None):
        seed_everything(cell.seed)
        seen = cell.fit_data(data)
        ctx = RunContext(seed=cell.seed, budget=cell.budget, settings=cell.settings,
                         run_dir=store.run_dir(cell.run_id), evaluate=lambda labels: evaluate(seen.y, labels))
        try:
            cell.method.fit(seen.without_labels(), ctx)
        except ClusterbenchError:
            pass  # raised on every rank alike (a batch that does not split, divergence): rank 0 records it
        finally:
            gc.collect()
    return replace(outcome, status="follower")


def _drop_finished_checkpoint(store: ResultsStore, rid: str) -> None:
    """``--force``: start over, unless the checkpoint is newer than the record, i.e. a killed
    ``--force`` attempt left it (resume that one instead of training from epoch 0 again)."""
    ck, rec = store.run_dir(rid) / "checkpoint.pt", store.record_path(rid)
    if ck.exists() and rec.exists() and ck.stat().st_mtime_ns > rec.stat().st_mtime_ns:
        return
    ck.unlink(missing_ok=True)
    AttemptClock.reset(store.run_dir(rid))


def _fit_and_score(cell: Cell, data: ImageData, ctx: RunContext,
                   clock: AttemptClock | None = None) -> tuple[dict[str, Any], Any]:
    """Fit on the unlabelled images, score every protocol: the done record's fields and the labels.

    ``clock``: the cell's attempts so far; ``wall_seconds`` sums them (a resumed run's time too)."""
    wall = time.perf_counter()
    seen = cell.fit_data(data)
    stats = cell.method.fit(seen.without_labels(), ctx)
    fit_seconds = time.perf_counter() - wall
    errors: dict[str, BaseException] = {}
    results, labels, infer_ips = run_protocols(cell.method, data, list(cell.protocols), cell.seed, cell.probe,
                                               errors=errors)
    if not results:  # no protocol scored: the cell failed (a deep run's final checkpoint stays for the rerun)
        raise next(iter(errors.values()))
    stats = stats or TrainStats(train_seconds=fit_seconds, images_seen=len(seen))
    cost = {
        "train_seconds": stats.train_seconds,
        "setup_seconds": stats.setup_seconds,  # one-off work before the clock (compile, graph capture)
        "fit_seconds": fit_seconds,
        "wall_seconds": clock.seconds() if clock else time.perf_counter() - wall,
        "attempts": clock.attempts if clock else 1,
        "images_seen": stats.images_seen,
        "train_images_per_s": stats.train_images_per_s,
        "eval_images_per_s": infer_ips,
        **_peak_memory_mb(cell.device),
    }
    fields = {"status": "partial" if errors else "done", "protocols": results,
              "primary_protocol": next(p for p in cell.protocols if p in results), "cost": cost,
              "stats": stats.to_dict()}
    if errors:  # what training earned is kept; a rerun evaluates again from the final checkpoint
        fields["protocol_errors"] = {p: _reason(exc) for p, exc in errors.items()}
    return fields, labels


def _reason(exc: BaseException) -> str:
    return "out of memory" if _is_oom(exc) else f"{type(exc).__name__}: {exc}"


def _failure(exc: Exception) -> dict[str, Any]:
    """A failed record's fields; call it inside the ``except`` (it reads the traceback)."""
    reason = _reason(exc)
    where = ({"diverged_at_epoch": exc.epoch, "diverged_at_step": exc.step}
             if isinstance(exc, TrainingDiverged) else {})
    return {"status": "failed", "stats": where,
            "error": {"reason": reason, "type": type(exc).__name__, "traceback": traceback.format_exc(limit=20)}}


def _finish(registry: Registry, cell: Cell, store: ResultsStore, record: dict[str, Any], labels: Any,
            outcome: CellOutcome) -> CellOutcome:
    """The one tail of a cell, done or failed: stamp, write (labels first), tidy up, notify."""
    record.update(finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), env=environment(cell.device))
    store.write_record(cell.run_id, record, labels=labels)  # without labels (failed): stale ones are removed
    if record["status"] == "done":  # a failed or partial deep run keeps its checkpoint: a rerun resumes from it
        (store.run_dir(cell.run_id) / "checkpoint.pt").unlink(missing_ok=True)
        AttemptClock.reset(store.run_dir(cell.run_id))
    store.clean_run_dir(cell.run_id)
    registry.notify_run_finished(record)
    reason = (record["error"]["reason"] if record["status"] == "failed" else
              "; ".join(f"protocol {p} failed: {r}" for p, r in record.get("protocol_errors", {}).items()) or None)
    return replace(outcome, status=record["status"], record=record, reason=reason)


def _peak_memory_mb(device: str) -> dict[str, float]:
    out = {"process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if device.startswith("cuda"):
        import torch

        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _is_oom(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


# ---- the grid ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CellKey:
    """Where a cell sits in its grid, as plain data: the same in every process that plans the same grid."""

    dataset: int  # index into :attr:`Grid.datasets` (the data the cell reads: as given, or a recipe's variant)
    method: int  # index into :attr:`Grid.methods`
    split: str  # "all", or "train" for a linear cell
    seed: int


@dataclass(frozen=True)
class GridMethod:
    """One ``--methods`` entry, resolved once: its parameters and the protocols it will run."""

    ref: PluginRef
    template: Method  # parameters resolved; each cell fits its own copy (see :meth:`fresh`)
    protocols: tuple[str, ...]  # the clustering cell's (none: no clustering cell)
    linear: tuple[str, ...] = ()  # the linear cell's, pretrained on the training split (none: no such cell)

    def cells(self) -> list[tuple[tuple[str, ...], str]]:
        """(protocols, train_split) of each cell this entry makes per dataset and seed."""
        return [(p, split) for p, split in ((self.protocols, "all"), (self.linear, "train")) if p]

    def fresh(self) -> Method:
        """A new instance for one cell: ``fit`` keeps its model on the instance."""
        return type(self.template)(self.template.params).with_recipe(self.template.recipe)

    def on(self, registry: Registry, dataset: PluginRef) -> "GridMethod":
        """This entry on ``dataset``: resolved again with the method's recipe for it, if it has one."""
        if dataset.name not in type(self.template).recipes:
            return self
        return replace(self, template=registry.make_method(self.ref, dataset=dataset.name))


@dataclass(frozen=True)
class Grid:
    """A validated grid: every name, option and protocol checked, nothing run or written yet."""

    registry: Registry
    methods: tuple[GridMethod, ...]
    datasets: tuple[tuple[PluginRef, Dataset], ...]  # as given, then the variants recipes read (see ``reads``)
    probe: LinearProbe = LinearProbe()
    #: per dataset as given, per method: the index in ``datasets`` of the data that method reads
    #: there (the dataset itself, or it with the options of the method's recipe); empty: itself
    reads: tuple[tuple[int, ...], ...] = ()

    def run(self, seeds: Sequence[int], budget: Budget, store: ResultsStore, settings: EngineSettings, *,
            force: bool = False, reporter: GridObserver | None = None) -> GridResult:
        """Every cell; each dataset is loaded once, each cell fits a fresh method instance."""
        reporter = reporter or Silent()
        result = GridResult()
        keys = self.keys(seeds)
        reporter.start(len(keys))
        loaded: dict[int, tuple[ImageData, str]] = {}
        ran: set[str] = set()
        for key in keys:
            if key.dataset not in loaded:  # keys come dataset by dataset: hold one dataset at a time
                loaded = {key.dataset: self.load(key.dataset, reporter)}
            data, digest = loaded[key.dataset]
            label, cell = self.cell(key, digest, budget, settings)
            if cell.run_id in ran:  # `cc cc[lr=0.0003]`: two spellings of one cell
                reporter.cell_done(label, CellOutcome(type(cell.method).name, cell.dataset.name, key.seed,
                                                      cell.run_id, "skipped", reason="the same cell as an earlier one"))
                continue
            ran.add(cell.run_id)
            outcome = run_cell(self.registry, cell, data, store, force=force, progress=reporter.cell_progress(label))
            reporter.cell_done(label, outcome)
            result.outcomes.append(outcome)
        reporter.close()
        return result

    def keys(self, seeds: Sequence[int]) -> list[CellKey]:
        """Every cell's key in grid order: dataset, method, split, seed (`--seeds 0 0`: one cell)."""
        seeds = list(dict.fromkeys(seeds))
        reads = self.reads or tuple((d,) * len(self.methods) for d in range(len(self.datasets)))
        keys = []
        for per_method in reads:  # a dataset's variants one after the other: one held at a time
            for v in dict.fromkeys(per_method):
                keys += [CellKey(v, i, split, seed) for i, m in enumerate(self.methods) if per_method[i] == v
                         for _, split in m.cells() for seed in seeds]
        return keys

    def cell(self, key: CellKey, digest: str, budget: Budget, settings: EngineSettings) -> tuple[str, Cell]:
        """The cell at ``key`` (a fresh method instance) and its label, once its dataset's digest is known."""
        ref, ds = self.datasets[key.dataset]
        m = self.methods[key.method].on(self.registry, ref)
        protocols = m.linear if key.split == "train" else m.protocols
        cell = Cell(m.fresh(), m.ref, ds, digest, key.seed, budget, settings, protocols, key.split,
                    self.probe if key.split == "train" else None)
        label = f"{m.ref} on {ds.name} seed {key.seed}" + (" (linear, train split)" if key.split == "train" else "")
        return label, cell

    def load(self, dataset: int, reporter: GridObserver | None = None) -> tuple[ImageData, str]:
        """The images and digest of the grid's ``dataset``-th dataset (see :meth:`_load`)."""
        return self._load(*self.datasets[dataset], reporter or Silent())

    def _load(self, ref: PluginRef, ds: Dataset, reporter: GridObserver) -> tuple[ImageData, str]:
        """The dataset's images and digest, checked against every method's K before its first cell runs."""
        t = time.perf_counter()
        try:
            data = self.registry.load_data(ds)
        except (DataError, ConfigError) as e:  # the load itself, not the checks below
            raise DataUnavailable(str(e)) from e
        extra = f" (+{data.n_unlabelled} unlabelled)" if data.n_unlabelled else ""
        reporter.note(f"loaded {ds.name}: {len(data)} images{extra} {data.x.shape[1:]} , {data.n_classes} classes "
                      f"({time.perf_counter() - t:.1f}s)")
        for m in self.methods:
            k = getattr(m.template.params, "n_clusters", 0) or data.n_classes
            if k > len(data):
                raise DataError(f"dataset {str(ref)!r} has {len(data)} images, fewer than K={k} clusters "
                                f"(the clusters {m.ref} is asked to make)")
            if m.linear:
                check_test_split(data, f"protocol {m.linear[0]} of {m.ref}")
        return data, data.digest()


def plan_grid(registry: Registry, method_names: Sequence[str], dataset_names: Sequence[str],
              data_root: str | None = None, protocols: Sequence[str] | None = None,
              probe: LinearProbe | Sequence[str] | None = None) -> Grid:
    """Check every name and option before anything is written or the first long job starts.

    A method asked for a linear protocol gets a second cell for it (see :class:`GridMethod`);
    ``probe``: its settings, or ``--linear``'s ``KEY=VALUE`` items."""
    probe = probe if isinstance(probe, LinearProbe) else LinearProbe.parse(probe)
    methods = []
    for ref in dict.fromkeys(registry.method_refs(method_names)):  # `kmeans kmeans`: one entry
        template = registry.make_method(ref)
        chosen = check_protocols(type(template), list(protocols) if protocols else None)
        methods.append(GridMethod(ref, template, tuple(p for p in chosen if p not in LINEAR_PROTOCOLS),
                                  tuple(p for p in chosen if p in LINEAR_PROTOCOLS)))
    refs = list(dict.fromkeys(PluginRef.parse(text) for text in dataset_names))
    reads = []
    for ref in list(refs):  # a recipe's dataset options make a variant of the data, read (and checked) once
        per_method = []
        for m in methods:
            variant = registry.recipe_dataset(m.ref, ref)
            if variant not in refs:
                refs.append(variant)
            per_method.append(refs.index(variant))
        reads.append(tuple(per_method))
    datasets = [(ref, registry.make_dataset(ref, data_root)) for ref in refs]
    return Grid(registry, tuple(methods), tuple(datasets), probe, tuple(reads))


def run_grid(registry: Registry, method_names: Sequence[str], dataset_names: Sequence[str], seeds: Sequence[int],
             budget: Budget, store: ResultsStore, settings: EngineSettings, *, data_root: str | None = None,
             protocols: Sequence[str] | None = None, force: bool = False,
             reporter: GridObserver | None = None, probe: LinearProbe | Sequence[str] | None = None) -> GridResult:
    """:func:`plan_grid` then :meth:`Grid.run`, in one call."""
    grid = plan_grid(registry, method_names, dataset_names, data_root, protocols, probe)
    return grid.run(seeds, budget, store, settings, force=force, reporter=reporter)
