"""Every exception the harness raises on purpose, in one tree.

    ClusterbenchError               caught by the CLI: one line on stderr, exit code 2
    ├── ConfigError (ValueError)    bad user input: names, options, budgets, seeds, paths
    │   └── PluginError             a plugin that breaks the contract (duplicate name, not a class, ...)
    ├── DataError (ValueError)      missing, unreadable or malformed data; the message names the file
    │   └── DataUnavailable         the dataset's load failed here (a grid's ``status`` can plan without it)
    ├── RecordError (ValueError)    a record on disk that is not valid (old format, hand edit, truncated)
    ├── TrainingDiverged (RuntimeError)   the loss became NaN/inf: the cell is recorded as failed
    ├── GraphUnavailable (RuntimeError)   a training step could not be captured as a CUDA graph
    └── WorkersDidNotStart (RuntimeError) ``--workers``: the worker processes died before running a cell

Inside a grid, an exception from one cell fails that cell only (see ``clusterbench.runner``).
"""

from __future__ import annotations


class ClusterbenchError(Exception):
    """Base of every error the harness raises on purpose."""


class ConfigError(ClusterbenchError, ValueError):
    """Bad user input (names, budgets, parameters): reported as one line, exit code 2."""


class PluginError(ConfigError):
    """A plugin that breaks the contract: two plugins provide one name, a hook returns a
    non-class, a class lacks ``description``/``Params``/``predict``."""


class DataError(ClusterbenchError, ValueError):
    """Missing, unreadable or malformed data: reported as one line naming the file."""


class DataUnavailable(DataError):
    """A grid's dataset could not be loaded on this machine (files missing, no data root, unreadable):
    the load's own message; unlike the checks made after a load, ``status`` can plan without it."""


class RecordError(ClusterbenchError, ValueError):
    """A record on disk that is not valid (old format, edited by hand, truncated)."""


class TrainingDiverged(ClusterbenchError, RuntimeError):
    """The loss became NaN or infinite: the run stops and is recorded as failed.

    ``epoch`` and ``step`` say where (None when unknown)."""

    def __init__(self, message: str, epoch: int | None = None, step: int | None = None) -> None:
        super().__init__(message)
        self.epoch, self.step = epoch, step


class GraphUnavailable(ClusterbenchError, RuntimeError):
    """A training step could not be captured as a CUDA graph; the message says why."""


class WorkersDidNotStart(ClusterbenchError, RuntimeError):
    """The worker processes of ``--workers N`` / ``run_grid(workers=N)`` died before running a cell
    (an error in their start-up, a script without a ``__main__`` guard): the grid stops with why,
    instead of failing every cell with ``BrokenProcessPool``."""
