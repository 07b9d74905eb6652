"""A grid as plain data: ``run``'s grid and engine flags, from the command line or from a file.

A :class:`GridSpec` is what every process that runs part of a grid plans it from (a worker, a
submitit task), so it is picklable and holds only flag values; the grid is re-planned from it
with :func:`clusterbench.cli.plan_run`, so a file and the equivalent command line are the same
grid by construction.  A grid file (YAML or TOML) has the flags' names as keys::

    methods:                       # NAME, NAME[key=value], or {NAME: {key: value}}
      - kmeans
      - cc: {preset: fast}
    datasets: [digits]
    seeds: [0, 1, 2]
    budget: epochs=100             # or {epochs: 100, minutes: 30}
    protocols: [head, kmeans]
    engine: {precision: bf16, compile: true}
"""

from __future__ import annotations

import argparse
import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterbench.errors import ConfigError
from clusterbench.plugins import format_ref

#: the grid keys of a file: flag destinations of ``run`` (``data_root`` is ``--data-root``)
GRID_KEYS = ("methods", "datasets", "seeds", "budget", "data_root", "protocols", "linear", "eval_every")
#: engine keys (top level or under ``engine:``); ``cuda_graphs``/``compile_augment`` are the ``--no-*`` flags negated
ENGINE_KEYS = ("device", "precision", "compile", "cuda_graphs", "compile_augment")
#: everything a worker needs to re-plan the grid: the grid and engine flags, and ``--plugin`` files
SPEC_DESTS = GRID_KEYS + ("device", "precision", "compile", "no_cuda_graphs", "no_compile_augment", "plugin", "results")


@dataclass(frozen=True)
class GridSpec:
    """The flag values that define a grid (``values``: ``run``'s destinations), and the file it came from."""

    values: dict[str, Any]
    source: dict[str, Any] | None = field(default=None)  # {"file", "sha256", "content"} of a --grid file

    @classmethod
    def from_args(cls, args: argparse.Namespace, source: dict[str, Any] | None = None) -> "GridSpec":
        return cls({k: getattr(args, k, None) for k in SPEC_DESTS}, source)

    def namespace(self, **overrides: Any) -> argparse.Namespace:
        """A namespace :func:`clusterbench.cli.plan_run` reads."""
        return argparse.Namespace(**{**self.values, **overrides})


def read_grid_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The flag values a grid file sets (destination -> value) and its ``source`` for the records."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"--grid {path}: cannot read it ({exc.strerror or exc})") from None
    data = _parse(p, raw.decode("utf-8", errors="replace"))
    if not isinstance(data, dict):
        raise ConfigError(f"--grid {path}: expected a mapping of keys such as methods, datasets, seeds")
    engine = data.pop("engine", {}) or {}
    if not isinstance(engine, dict):
        raise ConfigError(f"--grid {path}: 'engine' must be a mapping of {', '.join(ENGINE_KEYS)}")
    values: dict[str, Any] = {}
    for key, value in [*data.items(), *engine.items()]:
        dest = str(key).replace("-", "_")
        if dest not in GRID_KEYS + ENGINE_KEYS:
            raise ConfigError(f"--grid {path}: unknown key {key!r} (known: {', '.join(GRID_KEYS + ENGINE_KEYS)})")
        values.update(_flag_values(dest, value, path))
    source = {"file": str(p), "sha256": hashlib.sha256(raw).hexdigest(), "content": raw.decode("utf-8", "replace")}
    return values, source


def _parse(path: Path, text: str) -> Any:
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
    except Exception as exc:  # the parsers' own errors say where
        raise ConfigError(f"--grid {path}: {type(exc).__name__}: {exc}".replace("\n", " ")) from None
    raise ConfigError(f"--grid {path}: expected a .yaml, .yml or .toml file")


def _flag_values(dest: str, value: Any, path: str | Path) -> dict[str, Any]:
    """One file key as the flag destination(s) and value(s) the command line would give."""
    if dest in ("cuda_graphs", "compile_augment"):
        return {f"no_{dest}": not _boolean(dest, value, path)}
    if dest == "compile":
        return {dest: _boolean(dest, value, path)}
    if dest in ("methods", "datasets"):
        return {dest: [_ref_text(v, dest, path) for v in _as_list(value)]}
    if dest == "seeds":
        try:
            return {dest: [int(v) for v in _as_list(value)]}
        except (TypeError, ValueError):
            raise ConfigError(f"--grid {path}: seeds must be integers, got {value!r}") from None
    if dest in ("budget", "linear"):
        items = [f"{k}={v}" for k, v in value.items()] if isinstance(value, dict) else _as_list(value)
        return {dest: [str(v) for v in items]}
    if dest == "protocols":
        return {dest: [str(v) for v in _as_list(value)]}
    if dest == "eval_every":
        return {dest: int(value)}
    return {dest: str(value)}


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _boolean(key: str, value: Any, path: str | Path) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"--grid {path}: {key} must be true or false, got {value!r}")
    return value


def _ref_text(entry: Any, key: str, path: str | Path) -> str:
    """``cc``, ``cc[preset=fast]`` or ``{cc: {preset: fast}}`` -> the ``--methods`` text."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and len(entry) == 1:
        (name, options), = entry.items()
        if isinstance(options, dict):
            text = lambda v: str(v).lower() if isinstance(v, bool) else str(v)  # noqa: E731 - YAML true -> "true"
            return format_ref(str(name), tuple((str(k), text(v)) for k, v in options.items()))
    raise ConfigError(f"--grid {path}: each of {key} is NAME, NAME[key=value] or {{NAME: {{key: value}}}}, "
                      f"got {entry!r}")


def apply_grid_file(args: argparse.Namespace, defaults: dict[str, Any]) -> dict[str, Any]:
    """Set the flags ``args.grid`` names on ``args``; a flag given both ways is refused. Returns the source."""
    values, source = read_grid_file(args.grid)
    for dest, value in values.items():
        if getattr(args, dest, None) != defaults.get(dest):
            flag = "--" + dest.replace("_", "-")
            raise ConfigError(f"{flag} is given both on the command line and in --grid {args.grid}; keep one")
        setattr(args, dest, value)
    return source
