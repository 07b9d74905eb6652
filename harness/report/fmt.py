"""How the report side writes numbers, budgets, dataset options and file names.

Each is written once here so that every format (and the figures) says a number the same
way; a change of style is one edit.
"""

from __future__ import annotations

import math
from typing import Any


def missing(v: Any) -> bool:
    """No number to show: ``None`` or NaN (pandas fills absent values with NaN)."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def finite(v: Any) -> float | None:
    """``v`` as a float when it is a finite number, else ``None`` (what a plot can draw)."""
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def mean_std(mean: float | None, std: float | None, scale: float = 1.0, digits: int = 3) -> str:
    """``0.812 ± 0.004``; a bare mean when there is no spread (one seed), ``–`` when no mean."""
    if missing(mean):
        return "–"
    s = f"{mean * scale:.{digits}f}"
    if not missing(std):
        s += f" ± {std * scale:.{digits}f}"
    return s


def cost(v: float | None) -> str:
    """A throughput or a duration in a table: ``12,345`` from 100 on, ``4.2`` below, ``–`` when absent."""
    if missing(v):
        return "–"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def human(v: float) -> str:
    """A bar label, short: 1234 -> 1,234; 45678 -> 45.7k; 7.1e8 -> 710.0M."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if v >= div:
            return f"{v / (1e3 if unit == 'k' else div):,.1f}{unit}"
    return f"{v:,.0f}"


def budget_text(budget: dict[str, Any]) -> str:
    """``epochs=4,seconds=60``, sorted; ``-`` for a shallow baseline (no budget)."""
    return ",".join(f"{k}={v:g}" for k, v in sorted(budget.items())) or "-"


def options_text(ds: dict[str, Any]) -> str:
    """A record's dataset options as ``[k=v,...]`` (sorted), ``""`` when there are none."""
    opts = ds.get("options") or {}
    if not isinstance(opts, dict) or not opts:
        return ""
    return "[" + ",".join(f"{k}={v}" for k, v in sorted(opts.items())) + "]"


def safe_name(s: str) -> str:
    """``cc[preset=fast]`` -> ``cc_preset_fast_``: usable as a file name and an HTML id."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(s))
