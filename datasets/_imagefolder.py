"""Class-folder images (a directory or a tar archive) -> uint8 arrays, decoded once and cached.

Shared by the ``imagefolder`` dataset and the ImageNet subsets.  Accepted layouts, under
the folder or inside the archive (one wrapping folder, as ``tar czf x.tar.gz x/`` makes,
is looked through):

- ``split/class/**/image``: ``train/`` is the training split; ``test/``, ``val/``,
  ``valid/`` and ``validation/`` are held out (they all count as the test split);
- ``class/**/image``: no split level; every image counts as training data.

Images are ``.jpg``, ``.jpeg`` and ``.png`` (any case); other files, hidden files and
``__MACOSX`` folders are ignored.  Classes are the class-folder names sorted, so the label
order is torchvision's ``ImageFolder`` order, and every split must hold the same classes.

Archives are streamed member by member (``tarfile`` in stream mode), never extracted to
disk, and never seeked backwards: a ``.tar.gz`` is decompressed exactly once, and chunks of
images go to the decoders (``_decode``) while the rest of the archive is still being read.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from clusterbench import DataError
from clusterbench.datasets import _decode
from clusterbench.datasets._cache import cached, fingerprint
from clusterbench.datasets._decode import Item

# Bump when decoding changes (resampling, layout rules): old cache entries stop matching.
READER_VERSION = "1"
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
SPLIT_FOLDERS = {"train": True, "test": False, "val": False, "valid": False, "validation": False}
ARCHIVE_EXTS = (".tar", ".tar.gz", ".tgz")

__all__ = ["Item", "READER_VERSION", "read_class_folders", "is_image_name", "labelled_arrays"]


def is_image_name(name: str) -> bool:
    """True for a ``.jpg``/``.jpeg``/``.png`` file that is not hidden (``._x.jpg`` are macOS resource forks)."""
    parts = name.replace("\\", "/").split("/")
    if any(p.startswith(".") and p not in (".", "..") for p in parts) or "__MACOSX" in parts:
        return False
    return parts[-1].lower().endswith(IMAGE_EXTS)


def labelled_arrays(items: Sequence[Item], labels: Sequence[int], is_train: Sequence[bool],
                    class_names: Sequence[str], size: int | None, mode: str) -> dict[str, np.ndarray]:
    """The arrays a class-folder reader caches: ``x``, ``y``, ``is_train``, ``class_names``."""
    return _arrays(_decode.decode_items(items, size, mode), labels, is_train, class_names)


def _arrays(x: np.ndarray, labels: Sequence[int], is_train: Sequence[bool],
            class_names: Sequence[str]) -> dict[str, np.ndarray]:
    return {
        "x": x,
        "y": np.asarray(labels, dtype=np.int64),
        "is_train": np.asarray(is_train, dtype=bool),
        "class_names": np.asarray(list(class_names), dtype=str),
    }


# ---- listing -----------------------------------------------------------------------------
def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_EXTS)


def _scan_dir(root: Path, classes: frozenset[str] | None) -> list[tuple[str, str]]:
    """(relative posix name, file) for every image under ``root``, in sorted order.

    With ``classes`` (an ImageNet subset read from a full ImageNet folder), only the listed
    class folders (at the top or under a split folder) are walked, not 1,000 of them.
    """
    out: list[tuple[str, str]] = []
    top = os.path.abspath(root)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        rel = os.path.relpath(dirpath, top)
        rel_parts = [] if rel == "." else rel.split(os.sep)
        dirnames[:] = sorted(d for d in dirnames if _walk_into(rel_parts, d, classes))
        prefix = "".join(p + "/" for p in rel_parts)
        for fn in sorted(filenames):  # hidden folders are pruned above: only the file name needs a look
            if not fn.startswith(".") and fn.lower().endswith(IMAGE_EXTS):
                out.append((prefix + fn, os.path.join(dirpath, fn)))  # str, not Path: 100k Paths cost seconds
    return out


def _walk_into(rel_parts: list[str], d: str, classes: frozenset[str] | None) -> bool:
    if d.startswith(".") or d == "__MACOSX":
        return False
    if classes is None:
        return True
    if not rel_parts:
        return d in classes or d.lower() in SPLIT_FOLDERS
    if len(rel_parts) == 1 and rel_parts[0].lower() in SPLIT_FOLDERS:
        return d in classes
    return True


def _member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _archive_member(m: tarfile.TarInfo, classes: frozenset[str] | None) -> str | None:
    """The member's name if it is an image to read (of a wanted class, when ``classes`` is given)."""
    name = _member_name(m.name)
    if not m.isfile() or not is_image_name(name):
        return None
    if classes is not None and classes.isdisjoint(name.split("/")[:-1]):
        return None
    return name


def _decode_archive(path: Path, size: int | None, mode: str,
                    classes: frozenset[str] | None) -> tuple[list[str], np.ndarray]:
    """Member names and their decoded images, in archive order, streamed in one pass."""
    names: list[str] = []
    chunk: list[Item] = []
    expected = _decode.PROCESS_MIN_IMAGES if path.stat().st_size > 4 * 2**20 else 0  # only the size is known up front
    with _decode.Decoder(size, mode, expected) as dec:
        try:
            with tarfile.open(path, mode="r|*") as tf:
                for m in tf:
                    name = _archive_member(m, classes)
                    if name is None:
                        continue
                    f = tf.extractfile(m)
                    names.append(name)
                    chunk.append(Item(f"{path}:{name}", f.read() if f is not None else b""))
                    if len(chunk) == _decode.CHUNK:
                        dec.add(chunk)
                        chunk = []
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise DataError(f"cannot read archive {path}: {type(exc).__name__}: {exc} "
                            f"(truncated, or not a .tar/.tar.gz archive)") from None
        dec.add(chunk)
        if not names:
            _layout(names, str(path))  # raises: no images
        return names, dec.result()


# ---- layout ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    index: int  # into the listing
    split: str  # the split folder's name, "" for the flat layout
    cls: str


def _strip_wrappers(parts: list[list[str]]) -> list[list[str]]:
    """Drop leading folders that every image shares (``cifar10/train/cat/x.png`` -> ``train/cat/x.png``)."""
    while (parts and all(len(p) >= 3 for p in parts) and len({p[0] for p in parts}) == 1
           and parts[0][0].lower() not in SPLIT_FOLDERS):
        parts = [p[1:] for p in parts]
    return parts


def _layout(names: Sequence[str], where: str) -> list[_Entry]:
    """Split and class of every image name; DataError when the layout is neither accepted one."""
    if not names:
        raise DataError(f"no {'/'.join(IMAGE_EXTS)} images found in {where} "
                        f"(expected split/class/image or class/image)")
    parts = _strip_wrappers([n.split("/") for n in names])
    tops = {p[0] for p in parts if len(p) > 1}
    splits = {t for t in tops if t.lower() in SPLIT_FOLDERS}
    if splits and tops - splits:
        raise DataError(f"{where} mixes split folders ({', '.join(sorted(splits))}) with other folders "
                        f"({', '.join(sorted(tops - splits)[:5])}); use split/class/image or class/image")
    depth = 3 if splits else 2
    entries = []
    for i, p in enumerate(parts):
        if len(p) < depth:
            expected = "split/class/image" if splits else "class/image"
            raise DataError(f"image {names[i]!r} in {where} is not inside a class folder (expected {expected})")
        entries.append(_Entry(i, p[0] if splits else "", p[1] if splits else p[0]))
    return entries


def _check_classes(entries: list[_Entry], where: str, wanted: Sequence[str] | None) -> tuple[list[_Entry], list[str]]:
    """Keep the wanted classes (all by default), sorted; every split must hold the same ones."""
    found = sorted({e.cls for e in entries})
    if wanted is not None:
        missing = sorted(set(wanted) - set(found))
        if missing:
            raise DataError(f"{where} has no class folder(s) {', '.join(missing)} (found {len(found)} class "
                            f"folder(s): {', '.join(found[:8])}{', ...' if len(found) > 8 else ''})")
        keep = set(wanted)
        entries = [e for e in entries if e.cls in keep]
        found = sorted(keep)
    by_split: dict[str, set[str]] = {}
    for e in entries:
        by_split.setdefault(e.split, set()).add(e.cls)
    for split, got in sorted(by_split.items()):
        lacking = sorted(set(found) - got)
        if lacking:
            raise DataError(f"split folder {split!r} of {where} lacks class folder(s) {', '.join(lacking[:8])} "
                            f"that other splits have; every split must hold the same classes")
    return entries, found


def _is_train(split: str) -> bool:
    return SPLIT_FOLDERS.get(split.lower(), True)


def _ordered(names: Sequence[str], where: str, classes: Sequence[str] | None) -> tuple[list[_Entry], list[str]]:
    """Entries in reading order (training split first, then held-out splits; class, then name) and the classes."""
    entries, class_names = _check_classes(_layout(names, where), where, classes)
    entries.sort(key=lambda e: (not _is_train(e.split), e.split, e.cls, names[e.index]))
    return entries, class_names


def _labels(entries: list[_Entry], class_names: list[str]) -> tuple[list[int], list[bool]]:
    index = {c: k for k, c in enumerate(class_names)}
    return [index[e.cls] for e in entries], [_is_train(e.split) for e in entries]


def read_class_folders(path: Path, *, size: int | None = None, mode: str = "RGB",
                       classes: Sequence[str] | None = None, label: str = "imagefolder") -> dict[str, np.ndarray]:
    """``x`` (uint8 NHWC), ``y``, ``is_train`` and ``class_names`` of a class-folder tree, cached.

    ``path`` is a directory or a ``.tar``/``.tar.gz``/``.tgz`` archive.  ``classes``
    restricts (and requires) the class folders to read; ``label`` names the cache file.
    """
    path = Path(path)
    wanted = frozenset(classes) if classes is not None else None
    key = {"reader": "class-folders", "version": READER_VERSION, "path": str(path.resolve()),
           "size": size, "mode": mode, "classes": sorted(wanted) if wanted is not None else None}
    if path.is_dir():
        listing = _scan_dir(path, wanted)
        names = [n for n, _ in listing]
        entries, class_names = _ordered(names, str(path), classes)  # layout errors before any decoding
        key["files"] = fingerprint(listing[e.index][1] for e in entries)

        def build_dir() -> dict[str, np.ndarray]:
            items = [Item(listing[e.index][1], listing[e.index][1]) for e in entries]
            return labelled_arrays(items, *_labels(entries, class_names), class_names, size, mode)

        return cached(key, build_dir, label=label)
    if path.is_file() and is_archive(path):
        key["files"] = fingerprint([path])

        def build_archive() -> dict[str, np.ndarray]:
            names, x = _decode_archive(path, size, mode, wanted)
            entries, class_names = _ordered(names, str(path), classes)
            return _arrays(x[[e.index for e in entries]], *_labels(entries, class_names), class_names)

        return cached(key, build_archive, label=label)
    if path.exists():
        raise DataError(f"{path} is neither a folder nor a .tar/.tar.gz/.tgz archive of class folders")
    raise DataError(f"image folder {path} not found")
