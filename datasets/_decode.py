"""Decoding many images into one uint8 array, in worker processes when there is enough work.

Pillow parses JPEG headers in Python, so decoding is GIL-bound: threads would queue on the
GIL, processes do not.  Work goes out in chunks as it is added (an archive's images are
decoded while the rest of it is still being read); 60,000 32x32 JPEGs take about 10 s on
2 cores.  Shared by the class-folder readers (``_imagefolder``, the ImageNet subsets).
"""

from __future__ import annotations

import io
import multiprocessing
import sys
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from clusterbench import DataError, available_cpus

CHUNK = 256  # images per decode task: large enough to amortise the pool's overhead
PROCESS_MIN_IMAGES = 2048  # fewer images decode faster in this process than a pool starts

__all__ = ["CHUNK", "Decoder", "Item", "PROCESS_MIN_IMAGES", "decode_items"]


@dataclass(frozen=True)
class Item:
    """One image to decode: ``name`` is what errors show, ``source`` a file or an archive member's bytes."""

    name: str
    source: str | Path | bytes


def _decode_one(item: Item, size: int | None, mode: str) -> np.ndarray:
    """One image as uint8 (H, W, C); resized to ``size`` x ``size`` when given."""
    from PIL import Image

    try:
        src = io.BytesIO(item.source) if isinstance(item.source, bytes) else item.source
        with Image.open(src) as im:
            if size:
                im.draft(mode, (size, size))  # JPEG: let libjpeg downscale by 1/2, 1/4, 1/8 (never below size)
            if im.mode != mode:
                im = im.convert(mode)
            if size and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, struct.error... on bad files
        raise DataError(f"cannot decode image {item.name}: {type(exc).__name__}: {exc}") from None
    return arr[..., None] if arr.ndim == 2 else arr


def _decode_chunk(items: Sequence[Item], size: int | None, mode: str) -> np.ndarray | tuple[int, tuple, tuple]:
    """The chunk's images stacked, or (index, its shape, the chunk's first shape) of the first misfit."""
    arrays = [_decode_one(it, size, mode) for it in items]
    for j, a in enumerate(arrays):
        if a.shape != arrays[0].shape:
            return j, a.shape, arrays[0].shape
    return np.stack(arrays)


def _workers() -> int:
    return min(16, available_cpus())


def _process_pool() -> ProcessPoolExecutor | None:
    """Worker processes, where they can be forked (Linux); None elsewhere (decode in this process).

    Pillow parses JPEG headers in Python, so decoding is GIL-bound: threads do not help,
    processes do.  ``fork``, as torch's DataLoader does on Linux: ``spawn`` and
    ``forkserver`` re-import the caller's ``__main__``, which breaks scripts without an
    ``if __name__ == "__main__"`` guard.
    """
    if sys.platform != "linux" or "fork" not in multiprocessing.get_all_start_methods():
        return None
    return ProcessPoolExecutor(max_workers=_workers(), mp_context=multiprocessing.get_context("fork"))


class Decoder:
    """Decodes chunks of images as they are added (in worker processes when there is enough work)."""

    def __init__(self, size: int | None, mode: str, expected: int) -> None:
        self.size, self.mode = size, mode
        parallel = expected >= PROCESS_MIN_IMAGES and _workers() > 1
        self.pool = _process_pool() if parallel else None
        self.chunks: list[tuple[list[str], Any]] = []

    def __enter__(self) -> "Decoder":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def add(self, items: list[Item]) -> None:
        if not items:
            return
        if self.pool is not None:
            with warnings.catch_warnings():  # Python >= 3.12 warns on every fork of a threaded process
                warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks",
                                        category=DeprecationWarning)
                res: Any = self.pool.submit(_decode_chunk, items, self.size, self.mode)
        else:
            res = _decode_chunk(items, self.size, self.mode)
        self.chunks.append(([it.name for it in items], res))  # names only: the bytes can go once sent

    def result(self) -> np.ndarray:
        """All images in the order added; the first one whose size differs from the first image's is named."""
        if not self.chunks:
            raise DataError("no images to decode")
        first, ref, out, at = self.chunks[0][0][0], None, None, 0
        total = sum(len(names) for names, _ in self.chunks)
        for k, (names, res) in enumerate(self.chunks):
            res = res.result() if isinstance(res, Future) else res
            self.chunks[k] = (names, None)  # release each chunk once copied
            shape0 = res.shape[1:] if isinstance(res, np.ndarray) else res[2]
            if ref is None:
                ref, out = shape0, np.empty((total,) + tuple(shape0), dtype=np.uint8)
            if shape0 != ref:
                raise _size_error(names[0], shape0, first, ref)
            if not isinstance(res, np.ndarray):
                raise _size_error(names[res[0]], res[1], first, ref)
            out[at:at + len(res)] = res
            at += len(res)
        return out


def _size_error(name: str, shape: tuple, first: str, ref: tuple) -> DataError:
    return DataError(f"image {name} is {shape[1]}x{shape[0]} but {first} is {ref[1]}x{ref[0]}; all "
                     f"images must share one size: pass size=N to resize every image to NxN")


def decode_items(items: Sequence[Item], size: int | None = None, mode: str = "RGB") -> np.ndarray:
    """Decode every item into one uint8 (N, H, W, C) array, in order.

    Without ``size`` every image must have the first image's size; the error names the
    first image (in order) that does not.  ``mode`` is a Pillow mode: ``RGB`` or ``L``.
    """
    with Decoder(size, mode, len(items)) as dec:
        for s in range(0, len(items), CHUNK):
            dec.add(list(items[s:s + CHUNK]))
        return dec.result()
