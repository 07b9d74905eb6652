"""What each number cost, and what each method reaches for the same GPU time.

Two tables under each leaderboard, both read from the records alone:

- **Equal GPU time**: a method's head ACC when it had trained for 1, 2, 4 GPU-minutes, read
  from its learning curve (the last curve point evaluated at or before that time; no
  interpolation, no best-epoch picking).  A run that stopped training before a mark has no
  number there (``–``): its budget ran out first.  Per epoch, a slow method may win; per
  GPU-hour, the reader sees which is best.
- **Cost per cell**: the device, minutes (wall time × GPUs), setup seconds (compile, graph capture,
  warm-up: outside the training clock), training images/s and peak GPU memory.

GPU time is the record's training clock (``train_seconds``) times its ``world_size``
(1 unless the run was distributed).  Only clustering cells (train+test) have an
equal-time row; the linear protocol's train-split cells appear in the cost table only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from clusterbench.errors import ConfigError
from clusterbench.report.fmt import budget_text, cost, mean_std

__all__ = ["Extra", "DEFAULT_MINUTES", "acc_at", "check_marks", "equal_time_table", "cost_table", "extras_for"]

#: the GPU-minute marks of the equal-time table
DEFAULT_MINUTES: tuple[float, ...] = (1.0, 2.0, 4.0)
_LINEAR = ("linear", "linear-logreg")


@dataclass(frozen=True)
class Extra:
    """A table under a leaderboard: a title, the display frame, and one sentence of what it shows."""

    title: str
    frame: pd.DataFrame
    note: str


def _world(rec: dict[str, Any]) -> int:
    """Ranks that trained the cell: the record keeps it as ``engine.world_size`` (and ``stats.world_size``)."""
    for where in (rec.get("engine"), rec.get("stats")):
        if isinstance(where, dict) and where.get("world_size"):
            return int(where["world_size"])
    return 1


def _is_linear_cell(rec: dict[str, Any]) -> bool:
    protos = rec.get("protocols") or {}
    return bool(protos) and all(p in _LINEAR for p in protos)


def acc_at(rec: dict[str, Any], gpu_seconds: float) -> float | None:
    """Head ACC of the last curve point evaluated by ``gpu_seconds`` of training; None if not reached."""
    world = _world(rec)
    curve = [p for p in rec.get("curve") or [] if isinstance(p, dict) and "train_seconds" in p]
    if not curve or curve[-1]["train_seconds"] * world < gpu_seconds:
        return None
    best = None
    for p in curve:
        if p["train_seconds"] * world > gpu_seconds:
            break
        if p.get("acc") is not None:
            best = float(p["acc"])
    return best


def _mean_std(values: Sequence[float | None]) -> str:
    v = [x for x in values if x is not None]
    if not v or len(v) < len(values):  # a mark some seeds did not reach is not averaged over the others
        return "–"
    return mean_std(float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else None)


def _groups(records: Sequence[dict[str, Any]], method_of: dict[str, str]
            ) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in records:
        out.setdefault((method_of[rec["run_id"]], budget_text(rec.get("budget", {}))), []).append(rec)
    return out


def check_marks(minutes: Sequence[float]) -> None:
    """The equal-time marks must be positive, finite GPU-minutes (one line otherwise)."""
    if not minutes or any(not (math.isfinite(m) and m > 0) for m in minutes):
        raise ConfigError(f"bad --equal-time {' '.join(f'{m:g}' for m in minutes)}: give positive GPU-minutes")


def equal_time_table(records: Sequence[dict[str, Any]], method_of: dict[str, str],
                     minutes: Sequence[float] = DEFAULT_MINUTES) -> pd.DataFrame | None:
    """One row per (method, budget) of clustering cells with a learning curve; None if there are none."""
    check_marks(minutes)
    deep = [r for r in records if r.get("curve") and not _is_linear_cell(r)]
    if not deep:
        return None
    rows = []
    for (method, budget), recs in sorted(_groups(deep, method_of).items()):
        row = {"Method": method, "Budget": budget}
        for m in minutes:
            row[f"ACC @ {m:g} GPU-min"] = _mean_std([acc_at(r, m * 60) for r in recs])
        finals = [next((p["acc"] for p in reversed(r["curve"]) if p.get("acc") is not None), None) for r in recs]
        row["Curve ACC at end"] = _mean_std(finals)
        row["GPU-min trained"] = cost(float(np.mean([r["curve"][-1]["train_seconds"] * _world(r) / 60
                                                     for r in recs])))
        row["Seeds"] = str(len({r["seed"] for r in recs}))
        rows.append(row)
    return pd.DataFrame(rows)


_COST_COLUMNS = (("setup_seconds", "Setup s"), ("train_seconds", "Train s"),
                 ("train_images_per_s", "Train img/s"), ("eval_images_per_s", "Eval img/s"),
                 ("gpu_peak_mb", "Peak GPU MB"))


def _minutes(rec: dict[str, Any]) -> float | None:
    wall = (rec.get("cost") or {}).get("wall_seconds")
    return None if wall is None else wall * _world(rec) / 60


def _cost_mean(recs: Sequence[dict[str, Any]], value: Callable[[dict[str, Any]], float | None]) -> str:
    v = [x for x in (value(r) for r in recs) if x is not None]
    return cost(float(np.mean(v))) if v else "–"


def cost_table(records: Sequence[dict[str, Any]], method_of: dict[str, str]) -> pd.DataFrame | None:
    """One row per (method, budget, cell kind) of finished cells; None if there are none.

    Shallow baselines (no training loop) get a row too, with – for the training columns.
    """
    trained = [r for r in records if (r.get("cost") or {}).get("wall_seconds") is not None]
    if not trained:
        return None
    rows = []
    for (method, budget), recs in sorted(_groups(trained, method_of).items()):
        for cell, sub in (("train+test", [r for r in recs if not _is_linear_cell(r)]),
                          ("train (linear)", [r for r in recs if _is_linear_cell(r)])):
            if sub:
                env = sub[0].get("env") or {}
                rows.append({"Method": method, "Budget": budget, "Cell": cell,
                             "Device": str(env.get("gpu") or env.get("device") or "?") if sub[0].get("budget")
                             else "cpu",
                             "Minutes": _cost_mean(sub, _minutes),
                             **{title: _cost_mean(sub, lambda r, k=key: (r.get("cost") or {}).get(k))
                                if sub[0].get("budget") or key == "eval_images_per_s" else "–"
                                for key, title in _COST_COLUMNS},
                             "Seeds": str(len({r["seed"] for r in sub}))})
    return pd.DataFrame(rows)


def extras_for(records: Sequence[dict[str, Any]], method_of: dict[str, str],
               minutes: Sequence[float] = DEFAULT_MINUTES) -> list[Extra]:
    """The tables under one dataset's leaderboard: equal GPU time (deep methods only) and cost per cell."""
    out = []
    eq = equal_time_table(records, method_of, minutes)
    if eq is not None:
        out.append(Extra("Equal GPU time", eq,
                         "Head ACC reached after the same GPU time (training clock × GPUs), from the learning "
                         "curves: the last point evaluated by then; – where some seed had no evaluated point by then or "
                         "stopped training earlier. Curve ACC at end: the curve's last point, the head as trained; the "
                         "leaderboard's head row can differ where a method re-fits its head after training. "
                         "mean ± std over seeds."))
    ct = cost_table(records, method_of)
    if ct is not None:
        out.append(Extra("Cost per cell", ct,
                         "Means over seeds. Minutes: wall time × GPUs (setup, training, evaluation; a CPU cell's "
                         "wall time); Setup s: compile, graph capture and warm-up, outside the training clock; "
                         "Eval img/s: inference throughput; Peak GPU MB: torch's peak allocation; – where a "
                         "cell has no such phase (shallow baselines have no training loop)."))
    return out
