"""Datasets from the user's own files: an ``.npz`` of arrays, or a folder of class folders.

``npz[path=my.npz]`` is the escape hatch for any data the harness has no reader for: save
``x`` (uint8 images) and ``y`` (integer labels) with ``numpy.savez`` and every method runs
on it.  ``imagefolder[path=...]`` reads ``split/class/*.jpg`` trees (a directory or a
``.tar.gz``), decodes them once and caches the arrays (see ``_imagefolder`` and ``_cache``).
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clusterbench import DataError, ImageData, hookimpl, param
from clusterbench.datasets._imagefolder import read_class_folders
from clusterbench.datasets._split import SplitDataset

MODES = ("RGB", "L")

__all__ = ["NpzDataset", "ImageFolderDataset"]


# ---- npz -----------------------------------------------------------------------------------
def _open_npz(f: Any, path: Path) -> Any:
    try:
        z = np.load(f, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: truncated or not an .npz file ({type(exc).__name__}: {exc})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError(f"cannot read {path}: truncated or not an .npz file (it holds one .npy array; "
                        f"save with numpy.savez(path, x=images, y=labels))")
    return z


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """x, y and the optional train_mask / class_names of an .npz file, read fully."""
    with open(path, "rb") as f, _open_npz(f, path) as z:  # our own handle: closed even when numpy fails
        keys = list(z.files)
        missing = [k for k in ("x", "y") if k not in keys]
        if missing:
            raise DataError(f"{path} has no {' and '.join(repr(k) for k in missing)} array (its keys: "
                            f"{', '.join(keys) or 'none'}); it needs x (uint8 images N,H,W,C or N,H,W) "
                            f"and y (integer labels)")
        return {k: _npz_member(z, k, path) for k in ("x", "y", "train_mask", "class_names") if k in keys}


def _npz_member(z: Any, key: str, path: Path) -> np.ndarray:
    try:
        return z[key]
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: truncated or not an .npz file "
                        f"({type(exc).__name__} in {key!r}: {exc})") from None
    except ValueError as exc:  # an object array saved with pickle
        raise DataError(f"cannot read array {key!r} of {path}: {exc}") from None


def _npz_images(x: np.ndarray, path: Path) -> np.ndarray:
    if x.dtype != np.uint8:
        raise DataError(f"{path}: x must be uint8 (pixel values 0..255), got {x.dtype}")
    if x.ndim == 3:  # N, H, W grey images
        return x[..., None]
    if x.ndim == 4 and x.shape[-1] in (1, 3):
        return x
    if x.ndim == 4 and x.shape[1] in (1, 3):
        raise DataError(f"{path}: x has shape {x.shape}, channels first; store N,H,W,C "
                        f"(x.transpose(0, 2, 3, 1))")
    raise DataError(f"{path}: x must have shape (N, H, W, C) with C 1 or 3, or (N, H, W); got {x.shape}")


def _npz_labels(y: np.ndarray, n: int, path: Path) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{path}: y must hold one label per image ({n} images), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: y must hold integer labels, got {y.dtype}")
    if n and y.min() < 0:
        raise DataError(f"{path}: labels must be >= 0, found {int(y.min())}")
    return y.astype(np.int64)


def _npz_mask(mask: np.ndarray | None, n: int, path: Path) -> np.ndarray | None:
    if mask is None:
        return None
    if mask.shape != (n,) or not (mask.dtype == bool or (np.issubdtype(mask.dtype, np.integer)
                                                        and np.isin(mask, (0, 1)).all())):
        raise DataError(f"{path}: train_mask must be bool (or 0/1) with one entry per image ({n}), "
                        f"got {mask.dtype} {mask.shape}")
    return mask.astype(bool)


class NpzDataset(SplitDataset):
    """Images and labels from one ``.npz`` file.

    Keys: ``x`` uint8 (N, H, W, C) or (N, H, W) for grey images; ``y`` integer labels;
    optionally ``train_mask`` (bool, the training split) and ``class_names`` (strings).
    The number of classes is ``max(y) + 1`` unless the ``n_classes`` option says more
    (a class with no samples in the file still counts for the metrics).
    """

    name = "npz"
    description = ("images and labels from an .npz file: x uint8 (N,H,W[,C]), y int, optional train_mask "
                   "(options: path, n_classes, split)")

    @dataclass(frozen=True)
    class Options(SplitDataset.Options):
        path: str = param("", "the .npz file: as given, else under --data-root")
        n_classes: int | None = param(None, "number of classes (default max(y) + 1)", minimum=1)

    def load(self) -> ImageData:
        path = self.opt_path("path", "data.npz")
        if not path.is_file():
            raise self.missing(path, ".npz file", "create it with numpy.savez(path, x=images, y=labels)")
        arrays = _npz_arrays(path)
        x = _npz_images(arrays["x"], path)
        y = _npz_labels(arrays["y"], len(x), path)
        if len(y) == 0:
            raise DataError(f"{path} holds no images")
        n_classes = int(y.max()) + 1 if self.opts.n_classes is None else self.opts.n_classes
        if y.max() >= n_classes:
            raise DataError(f"{path}: labels out of range [0, {n_classes}) (n_classes={n_classes}): "
                            f"max label {int(y.max())}")
        names = self._class_names(arrays.get("class_names"), n_classes, path)
        return self.finish(x, y, n_classes, _npz_mask(arrays.get("train_mask"), len(y), path), names, str(path))

    @staticmethod
    def _class_names(names: np.ndarray | None, n_classes: int, path: Path) -> tuple[str, ...]:
        if names is None:
            return ()
        if names.ndim != 1 or len(names) != n_classes:
            raise DataError(f"{path}: class_names must list {n_classes} names, got shape {names.shape}")
        return tuple(str(c) for c in names)


# ---- image folder --------------------------------------------------------------------------
class ImageFolderDataset(SplitDataset):
    """A folder (or ``.tar``/``.tar.gz``/``.tgz``) of ``split/class/*.jpg|jpeg|png`` images.

    Splits are ``train/`` and ``test/`` (``val/`` counts as test); without a split level
    (``class/*.jpg``) every image is training data.  Classes are the folder names, sorted.
    All images must share one size unless ``size=N`` resizes each to NxN on decode;
    ``mode=L`` decodes grey, ``mode=RGB`` (default) colour.  Decoded once, then cached
    under ``$CLUSTERBENCH_CACHE``.
    """

    name = "imagefolder"
    description = ("class folders of .jpg/.png images, as a directory or .tar(.gz): split/class/img or "
                   "class/img (options: path, split, size, mode); decoded once, then cached")

    @dataclass(frozen=True)
    class Options(SplitDataset.Options):
        path: str = param("", "the folder or .tar(.gz) archive: as given, else under --data-root")
        size: int | None = param(None, "resize every image to size x size on decode (default: keep)", minimum=1)
        mode: str = param("RGB", "decode as colour (RGB) or grey (L)", choices=MODES)

    def load(self) -> ImageData:
        path = self.opt_path("path", "images.tar.gz")
        size, mode = self.opts.size, self.opts.mode
        if not path.exists():
            raise self.missing(path, "image folder", "pass a directory or .tar.gz of split/class/image files")
        arrays = read_class_folders(path, size=size, mode=mode, label=f"imagefolder-{path.name}")
        names = [str(c) for c in arrays["class_names"]]
        return self.finish(arrays["x"], arrays["y"], len(names), arrays["is_train"], names, str(path))


@hookimpl
def clusterbench_datasets():
    return [NpzDataset, ImageFolderDataset]
