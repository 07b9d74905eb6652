"""CIFAR-10, CIFAR-100 (20 superclasses), STL-10, MNIST and Fashion-MNIST in torchvision's layouts.

The files are read directly (pickle, raw binaries, idx files) with numpy: torchvision's
dataset classes would give the same arrays, but per-image PIL objects are slow and their
missing-file errors do not say where they looked.  Every reader looks under
``--data-root`` for the folder torchvision's ``download=True`` creates:

- ``cifar10``: ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``
- ``cifar100-20``: ``<root>/cifar-100-python/{train, test, meta}``
- ``stl10``: ``<root>/stl10_binary/{train_X.bin, train_y.bin, test_X.bin, test_y.bin}``
- ``mnist``: ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``
- ``fashion-mnist``: the same names under ``<root>/FashionMNIST/raw/``

(``--data-root`` may also be that folder itself.)  Nothing is downloaded unless the option
``download=true`` is given; then torchvision's downloader fetches the missing files.

Train images come first, then test images; ``train_mask`` marks the training split.  The
default ``split=all`` is what the clustering papers (DAC, CC, SCAN...) cluster: 60,000
CIFAR images and 13,000 labelled STL-10 images.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from clusterbench import ConfigError, DataError, ImageData, hookimpl
from clusterbench.datasets.files import SPLITS, SplitDataset

__all__ = ["TorchvisionSet", "Cifar10", "Cifar100Superclasses", "Stl10", "Mnist", "FashionMnist",
           "CIFAR100_SUPERCLASSES"]

# The 20 CIFAR-100 superclasses, each as its 5 fine classes (fine label ids).  This is
# the grouping of the coarse labels shipped in the CIFAR-100 files (``coarse_labels``), as
# CC lists it in its ``cluster.py`` (``super_label``) and SCAN in ``_cifar100_to_cifar20``.
# The reader uses the files' coarse labels; this table checks them and stands in when a
# repackaged file has only fine labels.
CIFAR100_SUPERCLASSES: tuple[tuple[int, ...], ...] = (
    (72, 4, 95, 30, 55), (73, 32, 67, 91, 1), (92, 70, 82, 54, 62), (16, 61, 9, 10, 28),
    (51, 0, 53, 57, 83), (40, 39, 22, 87, 86), (20, 25, 94, 84, 5), (14, 24, 6, 7, 18),
    (43, 97, 42, 3, 88), (37, 17, 76, 12, 68), (49, 33, 71, 23, 60), (15, 21, 19, 31, 38),
    (75, 63, 66, 64, 34), (77, 26, 45, 99, 79), (11, 2, 35, 46, 98), (29, 93, 27, 78, 44),
    (65, 50, 74, 36, 80), (56, 52, 47, 59, 96), (8, 58, 90, 13, 48), (81, 69, 41, 89, 85),
)
FINE_TO_COARSE = np.empty(100, dtype=np.int64)
for _coarse, _fines in enumerate(CIFAR100_SUPERCLASSES):
    FINE_TO_COARSE[list(_fines)] = _coarse

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


class TorchvisionSet(SplitDataset):
    """A dataset in a torchvision folder under ``--data-root``; subclasses read the files."""

    folder: ClassVar[str]  # relative to the root, e.g. "cifar-10-batches-py"
    required: ClassVar[tuple[str, ...]]  # file names in it (idx files: without .gz)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return ("split", "download")

    # ---- where the files are --------------------------------------------------------------
    def data_dir(self) -> Path:
        if self.root is None:
            raise ConfigError(f"dataset {self.name!r} reads torchvision's files under --data-root DIR "
                              f"(DIR/{self.folder}/); pass --data-root, and {self.name}[download=true] to fetch them")
        if not (self.root / self.folder).is_dir() and self.root.is_dir() \
                and self.root.as_posix().rstrip("/").endswith(self.folder):
            return self.root  # --data-root is the dataset folder itself
        return self.root / self.folder

    def file(self, name: str) -> Path:
        """A required file, or the DataError that names it and says how to get it."""
        d = self.data_dir()
        path = self.find(d, name)
        if path is not None:
            return path
        if not d.is_dir():
            raise DataError(f"dataset {self.name!r}: folder {d} not found (looked under --data-root {self.root}); "
                            f"pass {self.name}[download=true] to fetch it (needs network), or put torchvision's "
                            f"{self.folder}/ there")
        raise DataError(f"dataset {self.name!r}: {d / self.shown(name)} not found; the folder is incomplete: "
                        f"pass {self.name}[download=true] to fetch it again (needs network)")

    @staticmethod
    def find(d: Path, name: str) -> Path | None:
        path = d / name
        return path if path.is_file() else None

    @staticmethod
    def shown(name: str) -> str:
        """How a required file is named in errors."""
        return name

    def complete(self) -> bool:
        d = self.data_dir()
        return all(self.find(d, n) is not None for n in self.required)

    # ---- download ------------------------------------------------------------------------
    def fetch(self, root: str) -> None:
        """Download the files into ``root`` with torchvision (subclasses)."""
        raise NotImplementedError

    def download(self) -> None:
        self.data_dir()  # a missing root is a ConfigError, before any network
        assert self.root is not None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.fetch(str(self.root))
        except Exception as exc:  # no network, a proxy, a checksum: all reported as one line
            raise DataError(f"dataset {self.name!r}: download into {self.root} failed ({type(exc).__name__}: "
                            f"{exc}); it needs network access, or copy torchvision's {self.folder}/ there "
                            f"by hand") from None

    # ---- load ------------------------------------------------------------------------------
    def read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, Sequence[str]]:
        """(x, y, is_train, class_names) of train + test (subclasses)."""
        raise NotImplementedError

    def load(self) -> ImageData:
        self.opt_choice("split", SPLITS, self.default_split)  # a bad value fails before any reading
        if self.opt_bool("download") and not self.complete():
            self.download()
        x, y, is_train, names = self.read()
        return self.finish(x, y, int(self.n_classes), is_train, names, str(self.data_dir()))


def _train_test(train: list[np.ndarray], test: list[np.ndarray]) -> np.ndarray:
    n_train = sum(len(a) for a in train)
    mask = np.zeros(n_train + sum(len(a) for a in test), dtype=bool)
    mask[:n_train] = True
    return mask


def _check_range(y: np.ndarray, n: int, path: Path, offset: int = 0) -> None:
    if len(y) and (y.min() < 0 or y.max() >= n):
        raise DataError(f"{path}: labels out of range [{offset}, {n + offset}): found "
                        f"{int(y.min()) + offset}..{int(y.max()) + offset}")


# ---- CIFAR ---------------------------------------------------------------------------------
def _unpickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="latin1")
    except Exception as exc:  # UnpicklingError, EOFError, ValueError...: a broken or foreign file
        raise DataError(f"cannot read {path}: truncated or not a CIFAR python pickle "
                        f"({type(exc).__name__}: {exc})") from None
    if not isinstance(d, dict):
        raise DataError(f"cannot read {path}: not a CIFAR python pickle (holds a {type(d).__name__})")
    return d


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    d = _unpickle(path)
    missing = [k for k in ("data", label_key) if k not in d]
    if missing:
        raise DataError(f"{path} has no {', '.join(missing)} (keys: {', '.join(map(str, d))}); not a CIFAR batch")
    data = np.asarray(d["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: data must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    y = np.asarray(d[label_key], dtype=np.int64)
    if y.shape != (len(data),):
        raise DataError(f"{path}: {len(data)} images but {y.shape} {label_key}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y, d


def _meta_names(path: Path, key: str, fallback: Sequence[str]) -> Sequence[str]:
    if not path.is_file():
        return fallback
    names = _unpickle(path).get(key)
    return names if isinstance(names, list) and len(names) == len(fallback) else fallback


class Cifar10(TorchvisionSet):
    name = "cifar10"
    description = ("CIFAR-10 (Krizhevsky 2009): 60,000 32x32 colour images, 10 classes, train+test as the "
                   "clustering papers use; torchvision layout under --data-root")
    n_classes = 10
    image_size = 32
    channels = 3
    paper_benchmark = True
    folder = "cifar-10-batches-py"
    required = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)

    def read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, Sequence[str]]:
        train = [_cifar_batch(self.file(f"data_batch_{i}"), "labels")[:2] for i in range(1, 6)]
        test = [_cifar_batch(self.file("test_batch"), "labels")[:2]]
        x = np.concatenate([b[0] for b in train + test])
        y = np.concatenate([b[1] for b in train + test])
        _check_range(y, 10, self.data_dir())
        names = _meta_names(self.data_dir() / "batches.meta", "label_names", CIFAR10_CLASSES)
        return x, y, _train_test([b[1] for b in train], [b[1] for b in test]), names

    def fetch(self, root: str) -> None:
        import torchvision

        torchvision.datasets.CIFAR10(root, train=True, download=True)


class Cifar100Superclasses(TorchvisionSet):
    """CIFAR-100 labelled with its 20 superclasses, as every clustering paper evaluates it.

    Labels are the ``coarse_labels`` stored in the CIFAR-100 files; the mapping from the
    100 fine classes to them is the one CC (``cluster.py``) and SCAN (``CIFAR20``) use,
    kept in :data:`CIFAR100_SUPERCLASSES` and checked against the files.
    """

    name = "cifar100-20"
    description = ("CIFAR-100 with its 20 superclasses (Krizhevsky 2009): 60,000 32x32 colour images, train+test, "
                   "coarse labels as in DAC/CC/SCAN; torchvision layout under --data-root")
    n_classes = 20
    image_size = 32
    channels = 3
    paper_benchmark = True
    folder = "cifar-100-python"
    required = ("train", "test")

    def read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, Sequence[str]]:
        parts = [self._part(self.file(n)) for n in ("train", "test")]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        names = _meta_names(self.data_dir() / "meta", "coarse_label_names", [str(i) for i in range(20)])
        return x, y, _train_test([parts[0][1]], [parts[1][1]]), names

    @staticmethod
    def _part(path: Path) -> tuple[np.ndarray, np.ndarray]:
        x, fine, d = _cifar_batch(path, "fine_labels")
        _check_range(fine, 100, path)
        if "coarse_labels" not in d:  # a repackaged file with fine labels only
            return x, FINE_TO_COARSE[fine]
        coarse = np.asarray(d["coarse_labels"], dtype=np.int64)
        if coarse.shape != fine.shape:
            raise DataError(f"{path}: {len(fine)} fine labels but {coarse.shape} coarse_labels")
        _check_range(coarse, 20, path)
        bad = np.flatnonzero(FINE_TO_COARSE[fine] != coarse)
        if len(bad):
            i = int(bad[0])
            raise DataError(f"{path}: image {i} has fine label {int(fine[i])} and coarse label {int(coarse[i])}, "
                            f"but the CIFAR-100 superclass of {int(fine[i])} is {int(FINE_TO_COARSE[fine[i]])}")
        return x, coarse

    def fetch(self, root: str) -> None:
        import torchvision

        torchvision.datasets.CIFAR100(root, train=True, download=True)


# ---- STL-10 --------------------------------------------------------------------------------
def _stl_images(path: Path) -> np.ndarray:
    raw = np.fromfile(path, dtype=np.uint8)
    per = 3 * 96 * 96
    if raw.size == 0 or raw.size % per:
        raise DataError(f"{path}: {raw.size} bytes is not a whole number of 96x96x3 images (truncated?)")
    # stored per image as channel, then column-major pixels (MATLAB order): (N, C, W, H)
    return np.ascontiguousarray(raw.reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1))


def _stl_labels(path: Path, n: int) -> np.ndarray:
    y = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1  # stored 1..10
    if len(y) != n:
        raise DataError(f"{path}: {len(y)} labels for {n} images")
    _check_range(y, 10, path, offset=1)
    return y


class Stl10(TorchvisionSet):
    """STL-10's labelled images: 5,000 train + 8,000 test, 96x96.

    The 100,000 unlabelled images are not read: the clustering papers (DAC, CC, SCAN)
    report on the 13,000 labelled ones (some pre-train on the unlabelled split, which a
    method can read itself).
    """

    name = "stl10"
    description = ("STL-10 (Coates et al. 2011): 13,000 labelled 96x96 colour images (train+test), 10 classes, "
                   "as the clustering papers use; torchvision layout under --data-root")
    n_classes = 10
    image_size = 96
    channels = 3
    paper_benchmark = True
    folder = "stl10_binary"
    required = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")

    def read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, Sequence[str]]:
        xs, ys = [], []
        for split in ("train", "test"):
            x = _stl_images(self.file(f"{split}_X.bin"))
            xs.append(x)
            ys.append(_stl_labels(self.file(f"{split}_y.bin"), len(x)))
        names = self._names()
        return np.concatenate(xs), np.concatenate(ys), _train_test(ys[:1], ys[1:]), names

    def _names(self) -> Sequence[str]:
        path = self.data_dir() / "class_names.txt"
        if path.is_file():
            names = [s.strip() for s in path.read_text().splitlines() if s.strip()]
            if len(names) == 10:
                return names
        return STL10_CLASSES

    def fetch(self, root: str) -> None:
        import torchvision

        torchvision.datasets.STL10(root, split="train", download=True)


# ---- MNIST ---------------------------------------------------------------------------------
def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes (LeCun's format), plain or gzipped."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            buf = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc} (truncated or not gzip)") from None
    if len(buf) < 4 + 4 * ndim or buf[:3] != b"\x00\x00\x08" or buf[3] != ndim:
        raise DataError(f"{path} is not an idx file of {ndim}-D unsigned bytes (header {buf[:4].hex() or 'empty'})")
    dims = struct.unpack(f">{ndim}I", buf[4:4 + 4 * ndim])
    body = len(buf) - 4 - 4 * ndim
    if body != int(np.prod(dims)):
        raise DataError(f"{path}: header says shape {dims} but the file holds {body} bytes of data (truncated?)")
    return np.frombuffer(buf, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class Mnist(TorchvisionSet):
    name = "mnist"
    description = ("MNIST (LeCun et al. 1998): 70,000 28x28 grey handwritten digits (train+test); "
                   "torchvision layout under --data-root")
    n_classes = 10
    image_size = 28
    channels = 1
    paper_benchmark = False
    folder = "MNIST/raw"
    required = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte")
    class_names: ClassVar[tuple[str, ...]] = tuple(str(i) for i in range(10))

    @staticmethod
    def find(d: Path, name: str) -> Path | None:
        for candidate in (d / name, d / f"{name}.gz"):  # torchvision keeps both; the plain file reads faster
            if candidate.is_file():
                return candidate
        return None

    @staticmethod
    def shown(name: str) -> str:
        return f"{name}[.gz]"

    def read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, Sequence[str]]:
        xs, ys = [], []
        for prefix in ("train", "t10k"):
            x = _read_idx(self.file(f"{prefix}-images-idx3-ubyte"), 3)
            ypath = self.file(f"{prefix}-labels-idx1-ubyte")
            y = _read_idx(ypath, 1).astype(np.int64)
            if len(y) != len(x):
                raise DataError(f"{ypath}: {len(y)} labels for {len(x)} images")
            _check_range(y, 10, ypath)
            xs.append(x[..., None])
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys), _train_test(ys[:1], ys[1:]), self.class_names

    def fetch(self, root: str) -> None:
        import torchvision

        torchvision.datasets.MNIST(root, train=True, download=True)


class FashionMnist(Mnist):
    name = "fashion-mnist"
    description = ("Fashion-MNIST (Xiao et al. 2017): 70,000 28x28 grey images of clothing, 10 classes "
                   "(train+test); torchvision layout under --data-root")
    folder = "FashionMNIST/raw"
    class_names = FASHION_CLASSES

    def fetch(self, root: str) -> None:
        import torchvision

        torchvision.datasets.FashionMNIST(root, train=True, download=True)


@hookimpl
def clusterbench_datasets():
    return [Cifar10, Cifar100Superclasses, Stl10, Mnist, FashionMnist]
