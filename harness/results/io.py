"""Atomic file writes: readers see the old file or the new one, whole, never half.

Used by the results store, the engine's checkpoints and the dataset cache.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean(obj: Any) -> Any:
    """Replace NaN/inf by None so records stay strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


TEMP_SUFFIX = ".tmp"


def is_temp_file(path: Path) -> bool:
    """Whether ``path`` is named like an :func:`atomic_write_bytes` temp file (``.NAME.XXXX.tmp``)."""
    return path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file beside ``path`` and ``os.replace``: readers see the old or the new file, whole.

    A process killed mid-write leaves the temp file (``.NAME.XXXX.tmp``, see :func:`is_temp_file`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            if hasattr(os, "fchmod"):  # mkstemp makes 0600; give the mode a plain open() would (umask)
                os.fchmod(f.fileno(), 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    text = json.dumps(_clean(obj), indent=2, sort_keys=True, default=_jsonable, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())


def atomic_save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # uncompressed: loading is a plain read
    atomic_write_bytes(path, buf.getvalue())
