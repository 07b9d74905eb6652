"""The grid runner: every (method, dataset, seed) cell, seeded, budgeted, recorded.

A cell whose record is already finished is skipped (resume after a crash or Ctrl-C);
``force`` reruns it.  A cell that raises (an exception, out of memory, divergence) is
recorded as failed with the reason and the grid goes on.
"""

from __future__ import annotations

import gc
import re
import resource
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable


from clusterbench.api import Dataset, ImageData, Method, TrainStats
from clusterbench.errors import ConfigError, DataError, TrainingDiverged
from clusterbench.budget import Budget
from clusterbench.context import RunContext
from clusterbench.settings import EngineSettings
from clusterbench.results.envinfo import environment
from clusterbench.evaluate.metrics import evaluate
from clusterbench.plugins import Registry
from clusterbench.evaluate.protocols import check_protocols, run_protocols
from clusterbench.results.store import SCHEMA_VERSION, ResultsStore, make_run_id
from clusterbench.seeding import seed_everything

_SPEC = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:\[(.*)\])?\s*$")


@dataclass(frozen=True)
class Spec:
    """``name[key=value,...]`` as typed on the command line."""

    name: str
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> "Spec":
        m = _SPEC.match(text)
        if not m:
            raise ConfigError(f"cannot parse {text!r}: expected NAME or NAME[key=value,...]")
        options = []
        for part in (m.group(2) or "").split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"cannot parse option {part!r} in {text!r}: expected key=value")
            options.append((key.strip(), value.strip()))
        return cls(m.group(1), tuple(options))

    @property
    def opts(self) -> dict[str, str]:
        return dict(self.options)

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return f"{self.name}[{','.join(f'{k}={v}' for k, v in self.options)}]"


@dataclass
class CellOutcome:
    method: str  # the method's registered name (``cc``), as in ``--methods``; not its class name
    dataset: str
    seed: int
    run_id: str
    status: str  # done | skipped | failed | busy
    record: dict[str, Any] | None = None
    reason: str | None = None


@dataclass
class GridResult:
    outcomes: list[CellOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[CellOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def expand_methods(registry: Registry, names: list[str]) -> list[Spec]:
    specs: list[Spec] = []
    for text in names:
        if text == "all":
            specs.extend(Spec(n) for n in sorted(registry.methods))
        else:
            spec = Spec.parse(text)
            registry.method(spec.name)  # unknown name -> ConfigError with suggestions
            specs.append(spec)
    return specs


def instantiate_method(registry: Registry, spec: Spec) -> Method:
    cls = registry.method(spec.name)
    opts = spec.opts
    preset = opts.pop("preset", None)
    return cls(cls.resolve_params(opts, preset=preset))


def instantiate_dataset(registry: Registry, spec: Spec, data_root: str | None) -> Dataset:
    cls = registry.dataset(spec.name)
    return cls(root=data_root, **spec.opts)


def load_dataset(ds: Dataset) -> ImageData:
    data = ds.load()
    if not isinstance(data, ImageData):
        raise DataError(f"dataset {ds.name!r} returned {type(data).__name__}, not ImageData")
    return data


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


def run_cell(
    registry: Registry,
    method: Method,
    method_spec: Spec,
    ds: Dataset,
    data: ImageData,
    digest: str,
    seed: int,
    budget: Budget,
    settings: EngineSettings,
    store: ResultsStore,
    protocols: list[str] | None = None,
    force: bool = False,
    progress: Callable[[float, str], None] = lambda f, m: None,
) -> CellOutcome:
    """Run (or skip) one cell and write its record."""
    cls = type(method)
    chosen = check_protocols(cls, protocols)
    identity = {
        "schema": SCHEMA_VERSION,
        "method": cls.name,
        "method_version": cls.version,
        "params": method.params_dict(),
        "dataset": ds.identity(),
        "dataset_digest": digest,
        "seed": seed,
        "budget": budget.to_dict() if cls.deep else {},
        "protocols": chosen,
        "engine": settings.identity() if cls.deep else {},
    }
    run_id = make_run_id(identity)
    base = CellOutcome(cls.name, ds.name, seed, run_id, "done")
    if not force and (rec := store.finished(run_id)) is not None:
        base.status, base.record = "skipped", rec
        return base
    with store.lock(run_id) as got:
        if not got:
            base.status, base.reason = "busy", "another process is running this cell"
            return base
        if not force and (rec := store.finished(run_id)) is not None:  # finished while we waited
            base.status, base.record = "skipped", rec
            return base
        run_dir = store.run_dir(run_id)
        store.clean_run_dir(run_id)  # a killed attempt's temp files and orphan labels; the checkpoint stays
        if force:
            (run_dir / "checkpoint.pt").unlink(missing_ok=True)
        record: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "run_id": run_id,
            "method": cls.name,
            "method_version": cls.version,
            "method_provider": registry.provider("method", cls.name),
            "method_spec": str(method_spec),
            "paper": cls.paper,
            "params": method.params_dict(),
            "dataset": {**ds.identity(), "io_options": ds.io_identity(), "digest": digest, "n": len(data),
                        "n_classes": data.n_classes, "image_size": data.image_size, "channels": data.channels},
            "seed": seed,
            "budget": budget.to_dict() if cls.deep else {},
            "protocols_requested": chosen,
            "engine": {**settings.__dict__} if cls.deep else {"device": "cpu"},
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        seed_everything(seed)
        _reset_peak(settings.device)
        ctx = RunContext(seed=seed, budget=budget, settings=settings, run_dir=run_dir,
                         evaluate=lambda labels: evaluate(data.y, labels), progress=progress)
        wall = time.perf_counter()
        try:
            t = time.perf_counter()
            fitted = method.fit(data.without_labels(), ctx)
            fit_seconds = time.perf_counter() - t
            results, labels, infer_ips = run_protocols(method, data, chosen, seed)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # the grid goes on; the record says why
            reason = "out of memory" if _is_oom(exc) else f"{type(exc).__name__}: {exc}"
            where = ({"diverged_at_epoch": exc.epoch, "diverged_at_step": exc.step}
                     if isinstance(exc, TrainingDiverged) else {})
            record.update(status="failed", error={"reason": reason, "type": type(exc).__name__,
                                                  "traceback": traceback.format_exc(limit=20)},
                          curve=ctx.curve, stats=where,
                          finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                          env=environment(settings.device if cls.deep else "cpu"))
            store.write_record(run_id, record)  # removes labels of an earlier run
            store.clean_run_dir(run_id)
            registry.notify_run_finished(record)
            base.status, base.reason, base.record = "failed", reason, record
            return base
        finally:
            gc.collect()
        fitted = fitted or TrainStats(train_seconds=fit_seconds, images_seen=len(data))
        train_seconds, images_seen = fitted.train_seconds, fitted.images_seen
        record.update(
            status="done",
            protocols=results,
            primary_protocol=chosen[0],
            cost={
                "train_seconds": train_seconds,
                "fit_seconds": fit_seconds,
                "wall_seconds": time.perf_counter() - wall,
                "images_seen": images_seen,
                "train_images_per_s": images_seen / train_seconds if train_seconds > 0 else None,
                "eval_images_per_s": infer_ips,
                **_peak_memory_mb(settings.device if cls.deep else "cpu"),
            },
            stats=fitted.to_dict(),
            curve=ctx.curve,
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            env=environment(settings.device if cls.deep else "cpu"),
        )
        store.write_record(run_id, record, labels=labels)  # labels first, then the record (see write_record)
        ctx.checkpoint_path.unlink(missing_ok=True)
        store.clean_run_dir(run_id)
        registry.notify_run_finished(record)
        base.record = record
        return base


def validate_grid(registry: Registry, method_names: list[str], dataset_names: list[str],
                  data_root: str | None) -> tuple[list[Spec], list[Dataset]]:
    """Check every name and option before anything is written or the first long job starts."""
    method_specs = expand_methods(registry, method_names)
    datasets = [instantiate_dataset(registry, Spec.parse(d), data_root) for d in dataset_names]
    for s in method_specs:
        instantiate_method(registry, s)
    return method_specs, datasets


def run_grid(
    registry: Registry,
    method_names: list[str],
    dataset_names: list[str],
    seeds: list[int],
    budget: Budget,
    store: ResultsStore,
    settings: EngineSettings,
    *,
    data_root: str | None = None,
    protocols: list[str] | None = None,
    force: bool = False,
    reporter: "Reporter | None" = None,
) -> GridResult:
    """Run every cell; datasets are loaded once each, methods built fresh for every cell."""
    method_specs, datasets = validate_grid(registry, method_names, dataset_names, data_root)
    reporter = reporter or Reporter()
    result = GridResult()
    total = len(method_specs) * len(datasets) * len(seeds)
    reporter.start(total)
    for dname, ds in zip(dataset_names, datasets):
        t = time.perf_counter()
        data = load_dataset(ds)
        reporter.note(f"loaded {ds.name}: {len(data)} images {data.x.shape[1:]} , {data.n_classes} classes "
                      f"({time.perf_counter() - t:.1f}s)")
        digest = data.digest()
        for mspec in method_specs:  # before the first cell of this dataset runs
            k = getattr(instantiate_method(registry, mspec).params, "n_clusters", 0) or data.n_classes
            if k > len(data):
                raise DataError(f"dataset {dname.strip()!r} has {len(data)} images, fewer than K={k} clusters "
                                f"(the clusters {mspec} is asked to make)")
        for mspec in method_specs:
            for seed in seeds:
                method = instantiate_method(registry, mspec)
                label = f"{mspec} on {ds.name} seed {seed}"
                outcome = run_cell(registry, method, mspec, ds, data, digest, seed, budget, settings, store,
                                   protocols, force, progress=reporter.cell_progress(label))
                reporter.cell_done(label, outcome)
                result.outcomes.append(outcome)
    reporter.close()
    return result


class Reporter:
    """Progress output: a tqdm bar over cells, one line per finished cell (stderr)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.bar = None

    def start(self, total: int) -> None:
        if self.quiet:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="run", file=sys.stderr, dynamic_ncols=True,
                        disable=None, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} runs [{elapsed}<{remaining}]")

    def note(self, msg: str) -> None:
        if not self.quiet:
            (self.bar.write if self.bar else print)(msg, file=sys.stderr)

    def cell_progress(self, label: str) -> Callable[[float, str], None]:
        def update(frac: float, msg: str) -> None:
            if self.bar is not None:
                self.bar.set_postfix_str(f"{label}: {frac:4.0%} {msg}", refresh=True)
        return update

    def cell_done(self, label: str, outcome: CellOutcome) -> None:
        if self.quiet:
            return
        if outcome.status == "done":
            rec = outcome.record or {}
            proto = rec.get("primary_protocol", "head")
            m = rec.get("protocols", {}).get(proto, {})
            cost = rec.get("cost", {})
            msg = (f"done    {label}: ACC {m.get('acc', float('nan')):.3f} NMI {m.get('nmi', float('nan')):.3f} "
                   f"ARI {m.get('ari', float('nan')):.3f} ({cost.get('wall_seconds', 0):.1f}s)")
        elif outcome.status == "skipped":
            msg = f"skipped {label}: finished earlier ({outcome.run_id}; --force reruns it)"
        elif outcome.status == "busy":
            msg = f"busy    {label}: {outcome.reason}"
        else:
            msg = f"FAILED  {label}: {outcome.reason}"
        self.note(msg)
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
