"""The small base the file, torchvision and ImageNet readers share: the ``split`` option and the result.

``split`` is ``all``, ``train`` or ``test``; the default is ``all`` because the clustering
papers cluster train and test images together, while ``train_mask`` keeps the official
split for the linear probe.  A private helper module, not a plugin: plugins may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from clusterbench import ConfigError, DataError, Dataset, ImageData, param

SPLITS = ("all", "train", "test")

__all__ = ["SPLITS", "SplitDataset"]


class SplitDataset(Dataset):
    """Base for readers with a ``split`` option; turns arrays into :class:`ImageData`."""

    @dataclass(frozen=True)
    class Options:
        split: str = param("all", "which images: all (train then test, as the papers cluster), train or test",
                           choices=SPLITS)

    @property
    def split(self) -> str:
        return self.opts.split

    def opt_path(self, key: str = "path", example: str = "") -> Path:
        """The file named by option ``key``: as given (relative to the working directory), else under the data root."""
        value = getattr(self.opts, key)
        if value in (None, ""):
            raise ConfigError(f"dataset {self.name!r} needs option {key}=..., e.g. --datasets "
                              f"\"{self.name}[{key}={example or 'FILE'}]\"")
        path = Path(value).expanduser()
        if path.exists() or path.is_absolute() or self.root is None or not (self.root / path).exists():
            return path
        return self.root / path

    def missing(self, path: Path, what: str, how: str) -> DataError:
        """The one-line error for a file or folder that is not there: what, where looked, how to get it."""
        looked = ""
        if not path.is_absolute():
            looked = f" (looked in {Path.cwd()}" + (f" and under --data-root {self.root})" if self.root else ")")
        return DataError(f"dataset {self.name!r}: {what} {path} not found{looked}; {how}")

    def finish(self, x: np.ndarray, y: np.ndarray, n_classes: int, is_train: np.ndarray | None,
               class_names: Sequence[str] = (), source: str = "") -> ImageData:
        """Apply the ``split`` option and build the :class:`ImageData`."""
        split = self.split
        if split != "all":
            if is_train is None:
                raise DataError(f"dataset {self.name!r}: {source or 'the data'} has no train/test split, "
                                f"so split={split} cannot be chosen; use split=all")
            keep = is_train if split == "train" else ~is_train
            if not keep.any():
                raise DataError(f"dataset {self.name!r}: {source or 'the data'} has no {split} images")
            x, y, is_train = x[keep], y[keep], is_train[keep]
        return ImageData(x=x, y=y.astype(np.int64, copy=False), n_classes=int(n_classes), name=self.name,
                         class_names=tuple(str(c) for c in class_names),
                         train_mask=None if is_train is None else np.asarray(is_train, dtype=bool))
