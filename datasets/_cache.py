"""Decode-once cache for slow dataset sources (image folders, archives).

Decoding 60,000 JPEGs takes seconds to minutes; reading the same pixels back from an
uncompressed ``.npz`` takes a fraction of a second.  So a reader computes its arrays once
and stores them under ``$CLUSTERBENCH_CACHE/datasets`` (default
``~/.cache/clusterbench/datasets``), keyed by a hash of everything the arrays depend on:
the source's absolute path, size and mtime, the reader's version and its options.  When
the source changes, the key changes, and the old entry is simply never read again.

Writes are the core's atomic writes (a temporary file moved in place with ``os.replace``),
so a crash or a concurrent reader never sees half a cache; a cache file that cannot be
read anyway (disk trouble, a hand edit) is ignored and rebuilt.  The cache is an
optimisation only: when it cannot be written (a read-only home, a full disk) the data is
still returned, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from clusterbench import atomic_save_npz

CACHE_ENV = "CLUSTERBENCH_CACHE"
DEFAULT_CACHE = "~/.cache/clusterbench"

__all__ = ["CACHE_ENV", "cache_dir", "cache_path", "cached", "fingerprint"]


def cache_dir() -> Path:
    """The folder dataset caches live in (read from the environment on every call, so tests can redirect it)."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser() / "datasets"


def fingerprint(paths: Iterable[str | os.PathLike]) -> str:
    """A hash of the absolute path, size and mtime of every given file.

    A folder's own mtime does not change when a file inside one of its sub-folders is
    replaced, so readers of image folders pass every image file, not the folder.
    """
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        p = os.fspath(p)
        h.update(f"{p if os.path.isabs(p) else os.path.abspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_path(key_parts: Any, label: str = "data") -> Path:
    """Where the entry for ``key_parts`` (any JSON-able value) is stored."""
    text = json.dumps(key_parts, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:32]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)[:40]
    return cache_dir() / f"{safe}-{digest}.npz"


def cached(key_parts: Any, build_fn: Callable[[], Mapping[str, np.ndarray]],
           label: str = "data") -> dict[str, np.ndarray]:
    """The arrays ``build_fn()`` returns, computed once per distinct ``key_parts``.

    ``key_parts`` must contain everything the arrays depend on (a source
    :func:`fingerprint`, the reader's version, its options); ``label`` only makes the
    file name readable.  Arrays must not be object arrays (they are stored without pickle).
    """
    path = cache_path(key_parts, label)
    hit = _read(path)
    if hit is not None:
        return hit
    arrays = {k: np.asarray(v) for k, v in build_fn().items()}
    _write(path, arrays)
    return arrays


def _read(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:  # our handle: closed on failure too
            return {k: z[k] for k in z.files}
    except Exception as exc:  # any unreadable entry is a miss, never an error
        warnings.warn(f"ignoring unreadable cache file {path} ({type(exc).__name__}: {exc}); rebuilding it",
                      RuntimeWarning, stacklevel=3)
        return None


def _write(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    try:
        atomic_save_npz(path, dict(arrays))
    except OSError as exc:
        warnings.warn(f"could not write dataset cache {path} ({exc}); the data will be decoded again next time",
                      RuntimeWarning, stacklevel=3)
