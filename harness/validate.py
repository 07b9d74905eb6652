"""Every problem of a grid, found before anything is loaded, trained or written.

A grid that would fail in its first cell (``cc[batch_size=0]``), after training (the
``kmeans`` protocol without faiss) or on its first write (``--results`` under a file) is
refused up front: :func:`grid_problems` returns one line per problem, all of them at once,
and :func:`validate_grid` raises :class:`GridInvalid` carrying them (the CLI prints each
line and exits 2).  The launcher calls the same function on the grid it is about to
spread over workers.  What needs the data itself (K against the number of images, a test
split for the linear protocol) is checked when each dataset is loaded, before its first cell.
"""

from __future__ import annotations

import importlib.util
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from clusterbench.budget import Budget
from clusterbench.errors import ConfigError
from clusterbench.evaluate.linear import LINEAR_PROTOCOLS, LinearProbe
from clusterbench.evaluate.protocols import PROTOCOLS, check_protocols
from clusterbench.plugins import PluginRef, Registry

SEED_LIMIT = 2**32  # numpy's and torch's seed range; a seed is never wrapped silently
#: modules an evaluation protocol imports (a missing one would fail the cell after training)
PROTOCOL_PACKAGES = {"kmeans": "faiss", "linear-logreg": "sklearn"}
#: pip package of a module, for the message
PIP_NAMES = {"faiss": "faiss-cpu (or faiss-gpu)", "sklearn": "scikit-learn"}
_CUDA = re.compile(r"^cuda(?::(\d+))?$")


class GridInvalid(ConfigError):
    """A grid with problems; ``problems`` has one line each (``str()`` joins them with newlines)."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class GridRequest:
    """A grid as the user asked for it (``clusterbench run``'s options), nothing resolved yet."""

    methods: Sequence[str]
    datasets: Sequence[str]
    seeds: Sequence[int] = (0,)
    budget: Sequence[str] | str | None = None
    results: str | os.PathLike | None = None  # None: not checked (library use without a store)
    data_root: str | None = None
    protocols: Sequence[str] | None = None
    linear: Sequence[str] | None = None
    device: str = "auto"
    eval_every: int = 0


def grid_problems(registry: Registry, req: GridRequest) -> list[str]:
    """Every problem of ``req``, one line each; empty when the grid can start."""
    problems: list[str] = []
    _check(problems, lambda: Budget.parse(req.budget) if req.budget else None)
    _check(problems, lambda: LinearProbe.parse(req.linear))
    for p in req.protocols or ():
        if p not in PROTOCOLS:
            problems.append(f"unknown protocol {p!r}; protocols: {', '.join(PROTOCOLS)}")
    for text in req.methods:
        _check(problems, lambda text=text: problems.extend(_method_problems(registry, text, req.protocols)))
    for text in req.datasets:
        _check(problems, lambda text=text: registry.make_dataset(PluginRef.parse(text), req.data_root),
               f"dataset {text!r}")
    problems += [f"--seeds {s}: a seed must be an integer in [0, 2^32)" for s in req.seeds
                 if not 0 <= s < SEED_LIMIT]
    if req.eval_every < 0:
        problems.append(f"--eval-every {req.eval_every}: must be >= 0 (0: about ten points per run)")
    if (device := device_problem(req.device)) is not None:
        problems.append(device)
    if req.results is not None and (where := results_problem(req.results)) is not None:
        problems.append(where)
    return list(dict.fromkeys(problems))  # `cc[lr=-1] cc[lr=-1]`: said once


def validate_grid(registry: Registry, req: GridRequest) -> None:
    """Raise :class:`GridInvalid` listing every problem of ``req`` (nothing is loaded or written)."""
    problems = grid_problems(registry, req)
    if problems:
        raise GridInvalid(problems)


def _check(problems: list[str], fn: Callable[[], object], what: str | None = None) -> None:
    """Run one check; a ConfigError (or a plugin's own exception, named) becomes a line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the run itself warns once, when it plans the grid
            fn()
    except ConfigError as exc:
        problems.append(str(exc))
    except Exception as exc:  # noqa: BLE001 - a plugin's constructor may raise anything
        problems.append(f"{what or 'check'}: {type(exc).__name__}: {exc}")


def _method_problems(registry: Registry, text: str, protocols: Sequence[str] | None) -> list[str]:
    """Options, presets and ranges of one ``--methods`` entry, the protocols it is asked for and
    the packages they import.  A method named that can run none of ``protocols`` is a problem (one
    that can run some runs those, warned); ``all`` is every method, each running what it can."""
    out: list[str] = []
    for ref in registry.method_refs([text]):
        try:
            cls = type(registry.make_method(ref))
        except ConfigError as exc:
            out.append(str(exc))
            continue
        requested = [p for p in protocols or () if p in PROTOCOLS]
        supported = set(cls.protocols) | (set(LINEAR_PROTOCOLS) if "linear" in cls.protocols else set())
        if text != "all" and requested and not supported & set(requested):  # some of them: warned, skipped
            out.append(f"method {str(ref)!r} cannot run protocol(s) {', '.join(requested)} (it supports "
                       f"{', '.join(cls.protocols)})")
        chosen = check_protocols(cls, requested or None)
        for module in dict.fromkeys((*cls.requires, *(PROTOCOL_PACKAGES.get(p) for p in chosen))):
            if module and importlib.util.find_spec(module) is None:
                users = [f"protocol {p}" for p in chosen if PROTOCOL_PACKAGES.get(p) == module]
                users = users if module not in cls.requires else [f"method {cls.name!r}"] + users
                out.append(f"{' and '.join(users)} of {str(ref)!r} need(s) the {module!r} module, which is not "
                           f"installed (pip install {PIP_NAMES.get(module, module)})")
    return out


def device_problem(device: str) -> str | None:
    """What is wrong with ``--device`` here (None: it can be used)."""
    if device in ("auto", "cpu"):
        return None
    m = _CUDA.match(device)
    if m is None:
        return f"--device {device}: not a device; use auto, cpu, cuda or cuda:N"
    import torch

    if not torch.cuda.is_available():
        return f"--device {device}: no CUDA GPU is available"
    if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
        return f"--device {device}: there are only {torch.cuda.device_count()} CUDA GPU(s) (cuda:0 ...)"
    return None


def results_problem(path: str | os.PathLike) -> str | None:
    """Why the results directory could not be created or written (None: it can)."""
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            return f"--results {path}: exists and is not a directory"
        return None if os.access(p, os.W_OK | os.X_OK) else f"--results {path}: the directory is not writable"
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"--results {path}: cannot be created, {parent} is a file"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"--results {path}: cannot be created, {parent} is not writable"
    return None


def unique(items: Sequence) -> list:
    """``items`` in order without repeats (``--seeds 0 0``, ``--methods kmeans kmeans``)."""
    return list(dict.fromkeys(items))
