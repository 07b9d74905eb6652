"""``clusterbench.run_grid`` and ``clusterbench.load_results``: the grid and its records from a notebook."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from clusterbench.errors import ConfigError


def run_grid(methods: Sequence[str] | None = None, datasets: Sequence[str] | None = None, *,
             seeds: Sequence[int] | None = None, budget: str | Sequence[str] | None = None,
             results: str | Path = "clusterbench-results", grid: str | Path | None = None,
             workers: int | None = None, gpus: str | None = None, shard: str | None = None,
             launcher: str | None = None, quiet: bool = True, **flags: Any):
    """Run a grid exactly as ``clusterbench run`` would with the same flags; the :class:`GridResult`.

    ``flags`` are any other ``run`` flags by their Python names (``protocols=["head"]``,
    ``data_root="~/data"``, ``device="cpu"``, ``force=True``, ``slurm_partition="gpu"`` ...).
    Submitted to SLURM, nothing has run yet: None.
    """
    from clusterbench.cli import build_parser
    from clusterbench.launch.cli import grid_spec
    from clusterbench.launch.run import launch
    from clusterbench.progress import Reporter

    parser = build_parser()
    args = parser.parse_args(["run"])
    defaults = dict(vars(args))
    given = {"methods": methods, "datasets": datasets, "seeds": seeds, "grid": grid, "workers": workers,
             "gpus": gpus, "shard": shard, "launcher": launcher, "results": str(results), "quiet": quiet, **flags,
             "budget": [budget] if isinstance(budget, str) else budget}
    for key, value in given.items():
        if key not in defaults:
            raise ConfigError(f"run_grid: unknown option {key!r} (the flags of clusterbench run, as Python names)")
        if value is not None:
            setattr(args, key, list(value) if key in ("methods", "datasets", "seeds") else value)
    spec, planned, cells = grid_spec(args, defaults)
    result, _ = launch(spec, planned, cells, args, Reporter(quiet=quiet))
    return result


#: the columns of an empty results directory's frame (a store with records has these and each metric)
_COLUMNS = ("run_id", "status", "method", "method_spec", "dataset", "seed", "budget", "train_split",
            "train_images_per_s", "eval_images_per_s", "wall_seconds", "reason", "protocol", "primary",
            "acc", "nmi", "ari")


def load_results(results: str | Path = "clusterbench-results"):
    """Every record of a results directory as a pandas DataFrame: one row per record and protocol.

    Columns: run_id, status, method, method_spec, dataset, seed, budget, protocol, its metrics
    (acc, nmi, ari, accuracy ...), primary (whether it is the record's primary protocol),
    train/eval throughput, wall seconds and the failure reason; a failed run has one row with
    no protocol.
    """
    import pandas as pd

    from clusterbench.results.store import ResultsStore

    rows = []
    for rec in ResultsStore(results, create=False).iter_records(strict=True):
        cost = rec.get("cost") or {}
        base = {"run_id": rec["run_id"], "status": rec["status"], "method": rec["method"],
                "method_spec": rec.get("method_spec", rec["method"]), "dataset": rec["dataset"]["name"],
                "seed": rec["seed"], "budget": ",".join(f"{k}={v:g}" for k, v in rec["budget"].items()) or "-",
                "train_split": rec.get("train_split", "all"), "train_images_per_s": cost.get("train_images_per_s"),
                "eval_images_per_s": cost.get("eval_images_per_s"), "wall_seconds": cost.get("wall_seconds"),
                "reason": (rec.get("error") or {}).get("reason")}
        protocols = rec.get("protocols") or {}
        if not protocols:
            rows.append({**base, "protocol": None})
        for name, metrics in protocols.items():
            rows.append({**base, "protocol": name, "primary": name == rec.get("primary_protocol"), **metrics})
    return pd.DataFrame(rows, columns=None if rows else [*_COLUMNS])
