"""pluggy hook specifications: the only way methods, datasets and observers reach the harness."""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "clusterbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def clusterbench_methods() -> list[type]:
    """Return the :class:`clusterbench.Method` subclasses this plugin provides."""


@hookspec
def clusterbench_datasets() -> list[type]:
    """Return the :class:`clusterbench.Dataset` subclasses this plugin provides."""


@hookspec
def clusterbench_reported_results() -> list[dict[str, Any]]:
    """Return numbers reported by papers, shown beside measured ones in reports.

    Each dict: ``method``, ``dataset``, ``metrics`` (e.g. ``{"acc": 0.790}``), ``protocol``
    and ``citation``.
    """


@hookspec
def clusterbench_run_finished(record: dict[str, Any]) -> None:
    """Called after each run's record (done or failed) is written: loggers, notifications."""
