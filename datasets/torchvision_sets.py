"""CIFAR-10, CIFAR-100 (100 fine classes, or its 20 superclasses), STL-10, MNIST and Fashion-MNIST, read with torchvision.

``torchvision.datasets`` reads the files (with its md5 integrity checks for CIFAR and
STL-10); this module finds them, checks the labels and turns train + test into one
:class:`ImageData`.  Each reader looks under ``--data-root`` for the folder torchvision's
``download=True`` creates (``--data-root`` may also be that folder itself):

- ``cifar10``: ``<root>/cifar-10-batches-py/``; ``cifar100`` and ``cifar100-20``: ``<root>/cifar-100-python/``
- ``stl10``: ``<root>/stl10_binary/`` (the labelled files; ``unlabeled_X.bin`` only with ``unlabelled=true``)
- ``mnist`` / ``fashion-mnist``: ``<root>/MNIST/raw/`` / ``<root>/FashionMNIST/raw/``; idx
  files found only as ``.gz`` are unpacked beside them first, as torchvision's downloader does

``path=DIR_OR_ARCHIVE`` reads the benchmark from an image folder or ``.tar(.gz)`` instead
(``train/<class>/``, ``test/<class>/``, the class folders named as the benchmark's classes;
see ``_named``): the dataset keeps its name, so its tables and paper rows are the
benchmark's, and ``variant=`` (or a known digest) says how the files differ from the
originals.  Not for ``cifar100-20`` (its folders would be 100 fine classes) or
``fashion-mnist`` (class names with ``/``).

Nothing is downloaded unless the option ``download=true`` is given.  Train images come
first, then test images; ``train_mask`` marks the training split.  The default
``split=all`` is what the clustering papers (DAC, CC, SCAN...) cluster: 60,000 CIFAR
images and 13,000 labelled STL-10 images.
"""

from __future__ import annotations

import dataclasses
import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from clusterbench import ConfigError, DataError, ImageData, atomic_write_bytes, hookimpl, param
from clusterbench.datasets._named import known_variant, read_named_folder
from clusterbench.datasets._split import SplitDataset

__all__ = ["TorchvisionSet", "Cifar10", "Cifar100", "Cifar100Superclasses", "Stl10", "Mnist", "FashionMnist",
           "CIFAR100_CLASSES", "CIFAR100_SUPERCLASSES", "FINE_TO_COARSE"]

# The 20 CIFAR-100 superclasses, each as its 5 fine classes (fine label ids): the grouping
# of the files' ``coarse_labels``, as CC lists it (``cluster.py``, ``super_label``) and SCAN
# (``_cifar100_to_cifar20``).  torchvision reads only the fine labels; this maps them.
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
# CIFAR-100's 100 fine classes, in label order (the files' ``fine_label_names``: alphabetical)
CIFAR100_CLASSES: tuple[str, ...] = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
    "bicycle", "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel",
    "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud",
    "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant",
    "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree",
    "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter",
    "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea",
    "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television",
    "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


def _labels(values: Any, n_images: int, n: int, where: Path, offset: int = 0) -> np.ndarray:
    """Labels as int64, one per image and in ``[0, n)`` (errors show them as stored: ``offset`` added)."""
    y = np.asarray(values, dtype=np.int64)
    if y.shape != (n_images,):
        raise DataError(f"{where}: {len(y)} labels for {n_images} images")
    if len(y) and (y.min() < 0 or y.max() >= n):
        raise DataError(f"{where}: labels out of range [{offset}, {n + offset}): found "
                        f"{int(y.min()) + offset}..{int(y.max()) + offset}")
    return y


def _failing_md5(reader: Any, d: Path) -> str | None:
    """The first file of torchvision's md5 lists (CIFAR, STL-10) that is there but fails its check."""
    from torchvision.datasets.utils import check_integrity

    listed = getattr(reader, "train_list", []) + getattr(reader, "test_list", [])
    return next((n for n, md5 in listed if (d / n).is_file() and not check_integrity(d / n, md5)), None)


class TorchvisionSet(SplitDataset):
    """A dataset in a torchvision folder under ``--data-root``, read by ``torchvision.datasets.<tv_name>``."""

    tv_name: ClassVar[str]  # the torchvision.datasets class
    folder: ClassVar[str]  # its folder under the root, e.g. "cifar-10-batches-py"
    required: ClassVar[tuple[str, ...]]  # the files torchvision reads there
    gz: ClassVar[bool] = False  # True: a required file may be there as NAME.gz only (unpacked before reading)
    label_files: ClassVar[tuple[str, str]] = ("", "")  # where errors say the train / test labels are
    class_names: ClassVar[tuple[str, ...]]  # used unless torchvision found n_classes names in the files
    names_in_files: ClassVar[bool] = True
    from_folder: ClassVar[bool] = True  # path= may give an image folder / archive of class_names folders
    folder_mode: ClassVar[str] = "RGB"
    io_options = ("download", "variant")

    @dataclass(frozen=True)
    class Options(SplitDataset.Options):
        download: bool = param(False, "fetch missing files with torchvision's downloader (needs network)")
        path: str = param("", "read an image folder or .tar(.gz) (train/<class>/, test/<class>/) instead of "
                          "torchvision's files: as given, else under --data-root")
        variant: str = param("", "how the files differ from the originals (e.g. 'JPEG re-encode'), shown in "
                             "captions; default: from a known archive or data digest")

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """``path`` only where an image folder can hold the benchmark (``from_folder``)."""
        return tuple(n for n in super().option_names() if cls.from_folder or n != "path")

    @classmethod
    def resolve_options(cls, given: Any) -> Any:
        if "path" in given and not cls.from_folder:
            raise ConfigError(f"dataset {cls.name!r} cannot be read from an image folder (path=); "
                              f"use torchvision's files under --data-root, or imagefolder[path=...]")
        return super().resolve_options(given)

    def tv_root(self) -> Path:
        """The root torchvision is given: ``--data-root``, or its parent when it is the dataset folder itself."""
        if self.root is None:
            raise ConfigError(f"dataset {self.name!r} reads torchvision's files under --data-root DIR "
                              f"(DIR/{self.folder}/); pass --data-root, and {self.name}[download=true] to fetch them")
        parts = Path(self.folder).parts
        if not (self.root / self.folder).is_dir() and self.root.is_dir() and self.root.parts[-len(parts):] == parts:
            return Path(*self.root.parts[:-len(parts)])
        return self.root

    def data_dir(self) -> Path:
        return self.tv_root() / self.folder

    def missing_file(self) -> str | None:
        """The first required file that is not there."""
        d = self.data_dir()
        for name in self.required:
            if not ((d / name).is_file() or (self.gz and (d / f"{name}.gz").is_file())):
                return name
        return None

    def check_files(self) -> None:
        """The DataError that names the missing folder or file and says how to get it."""
        d, name = self.data_dir(), self.missing_file()
        if not d.is_dir():
            raise DataError(f"dataset {self.name!r}: folder {d} not found (looked under --data-root {self.root}); "
                            f"pass {self.name}[download=true] to fetch it (needs network), or put torchvision's "
                            f"{self.folder}/ there")
        if name is not None:
            raise DataError(f"dataset {self.name!r}: {d / name}{'[.gz]' if self.gz else ''} not found; the folder is "
                            f"incomplete: pass {self.name}[download=true] to fetch it again (needs network)")

    def reader(self) -> Any:
        """The torchvision class that reads (and downloads) the files; a subclass where its defaults do not fit."""
        import torchvision.datasets

        return getattr(torchvision.datasets, self.tv_name)

    def tv_split(self, train: bool) -> dict[str, Any]:
        return {"train": train}

    def arrays(self, tv: Any, where: Path) -> tuple[np.ndarray, np.ndarray]:
        """(x uint8 NHWC, y int64) of one torchvision split."""
        x = np.asarray(tv.data)
        return x, _labels(tv.targets, len(x), int(self.n_classes), where)

    def download(self) -> None:
        root = self.tv_root()
        try:
            root.mkdir(parents=True, exist_ok=True)
            self.reader()(str(root), download=True, **self.tv_split(True))
        except Exception as exc:  # no network, a proxy, a checksum: all reported as one line
            raise DataError(f"dataset {self.name!r}: download into {root} failed ({type(exc).__name__}: "
                            f"{exc}); it needs network access, or copy torchvision's {self.folder}/ there "
                            f"by hand") from None

    def open(self, reader: Any, **split: Any) -> Any:
        """``reader(root, **split)``: torchvision's dataset object, or one DataError line naming the bad file."""
        d = self.data_dir()
        try:
            return reader(str(self.tv_root()), **split)
        except Exception as exc:  # torchvision's RuntimeError (md5), pickle, reshape, assert...: one line
            bad = _failing_md5(reader, d)
            what = f"{d / bad} fails torchvision's md5 check" if bad else \
                f"torchvision cannot read {d} ({type(exc).__name__}: {' '.join(str(exc).split())})"
            raise DataError(f"dataset {self.name!r}: {what}; a file is truncated, corrupted or not the original: "
                            f"delete the folder and pass {self.name}[download=true] to fetch it again "
                            f"(needs network)") from None

    def read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, Sequence[str]]:
        """(x, y, is_train, class_names) of train + test."""
        d, reader = self.data_dir(), self.reader()
        splits = [self.open(reader, **self.tv_split(train)) for train in (True, False)]
        parts = [self.arrays(tv, d / name if name else d) for tv, name in zip(splits, self.label_files)]
        is_train = np.repeat([True, False], [len(parts[0][1]), len(parts[1][1])])
        found = tuple(getattr(splits[0], "classes", None) or ())
        names = found if self.names_in_files and len(found) == self.n_classes else self.class_names
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), is_train, names

    def load_folder(self) -> ImageData:
        """The benchmark from ``path=``: its class folders checked, labelled in its own order."""
        path = self.opt_path("path", f"{self.name}.tar.gz")
        if not path.exists():
            raise self.missing(path, "image folder", "pass a directory or .tar.gz of train/<class>/ and "
                               "test/<class>/ images")
        x, y, is_train = read_named_folder(self.name, path, self.class_names, self.folder_mode)
        data = self.finish(x, y, int(self.n_classes), is_train, self.class_names, str(path))
        variant = self.opts.variant or known_variant(path, data.digest()) or "image files, unverified"
        return dataclasses.replace(data, variant=variant)

    def load(self) -> ImageData:
        if self.opts.path:
            return self.load_folder()
        if self.opts.download and self.missing_file() is not None:
            self.download()
        self.check_files()
        x, y, is_train, names = self.read()
        data = self.finish(x, y, int(self.n_classes), is_train, names, str(self.data_dir()))
        return dataclasses.replace(data, variant=self.opts.variant) if self.opts.variant else data


class Cifar10(TorchvisionSet):
    name = "cifar10"
    description = ("CIFAR-10 (Krizhevsky 2009): 60,000 32x32 colour images, 10 classes, train+test as the "
                   "clustering papers use; torchvision layout under --data-root")
    n_classes = 10
    tv_name, folder = "CIFAR10", "cifar-10-batches-py"
    required = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
    class_names = CIFAR10_CLASSES


class Cifar100(TorchvisionSet):
    """CIFAR-100 with its 100 fine classes: the representation-learning benchmark (linear
    evaluation, e.g. CueCo's 68.56%), not the clustering one (``cifar100-20``).  The same
    files as ``cifar100-20``; ``path=`` reads an image folder of the 100 fine-class folders."""

    name = "cifar100"
    description = ("CIFAR-100 (Krizhevsky 2009): 60,000 32x32 colour images, 100 fine classes, train+test; "
                   "torchvision layout under --data-root, or path= an image folder/archive")
    n_classes = 100
    tv_name, folder = "CIFAR100", "cifar-100-python"
    required = ("train", "test", "meta")
    label_files = ("train", "test")
    class_names = CIFAR100_CLASSES

    def arrays(self, tv: Any, where: Path) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(tv.data)
        return x, _labels(tv.targets, len(x), 100, where)


class Cifar100Superclasses(Cifar100):
    """CIFAR-100 labelled with its 20 superclasses, as every clustering paper evaluates it.

    torchvision reads the fine labels; :data:`FINE_TO_COARSE` (CC's and SCAN's mapping)
    turns them into the superclasses, named from the files' ``coarse_label_names``.
    """

    name = "cifar100-20"
    description = ("CIFAR-100 with its 20 superclasses (Krizhevsky 2009): 60,000 32x32 colour images, train+test, "
                   "coarse labels as in DAC/CC/SCAN; torchvision layout under --data-root")
    n_classes = 20  # the files, folder and label files are CIFAR-100's
    class_names = tuple(str(i) for i in range(20))
    from_folder = False  # an image folder of CIFAR-100 holds the 100 fine classes, which are not mapped here

    def reader(self) -> Any:
        base = super().reader()  # the same files, with the meta file's superclass names as `classes`
        return type("CIFAR100Coarse", (base,), {"meta": {**base.meta, "key": "coarse_label_names"}})

    def arrays(self, tv: Any, where: Path) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(tv.data)
        return x, FINE_TO_COARSE[_labels(tv.targets, len(x), 100, where)]


class Stl10(TorchvisionSet):
    """STL-10's labelled images: 5,000 train + 8,000 test, 96x96.

    The clustering papers (DAC, CC, SCAN) cluster and report on the 13,000 labelled ones.
    ``unlabelled=true`` also reads the 100,000 unlabelled images (``unlabeled_X.bin``, then
    required) into ``ImageData.unlabelled``: extra training images without labels, never
    evaluated, which CC's official STL-10 run trains its instance loss on
    (``train_STL10.py:73-80``).  Without it they are neither read nor required.
    """

    @dataclass(frozen=True)
    class Options(TorchvisionSet.Options):
        unlabelled: bool = param(False, "also read the 100,000 unlabelled images (unlabeled_X.bin) as extra "
                                 "training images without labels (never evaluated): CC's official STL-10 "
                                 "recipe trains its instance loss on them")

    name = "stl10"
    description = ("STL-10 (Coates et al. 2011): 13,000 labelled 96x96 colour images (train+test), 10 classes, "
                   "as the clustering papers use; torchvision layout under --data-root")
    n_classes = 10
    tv_name, folder = "STL10", "stl10_binary"
    required = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")
    label_files = ("train_y.bin", "test_y.bin")
    class_names = STL10_CLASSES

    def reader(self) -> Any:
        base = super().reader()  # its integrity check without unlabeled_X.bin
        return type("STL10Labelled", (base,), {"train_list": base.train_list[:2]})

    def tv_split(self, train: bool) -> dict[str, Any]:
        return {"split": "train" if train else "test"}

    def missing_file(self) -> str | None:
        unlabelled = self.opts.unlabelled and not (self.data_dir() / "unlabeled_X.bin").is_file()
        return super().missing_file() or ("unlabeled_X.bin" if unlabelled else None)

    def read_unlabelled(self) -> np.ndarray:
        """The unlabelled images, uint8 NHWC (their md5 checked alone: not on every labelled read)."""
        from torchvision.datasets.utils import check_integrity

        base = super().reader()
        (name, md5), = (f for f in base.train_list if f[0] == "unlabeled_X.bin")
        reader = type("STL10Unlabelled", (base,), {
            "_check_integrity": lambda tv: check_integrity(Path(tv.root, tv.base_folder, name), md5)})
        return np.ascontiguousarray(np.asarray(self.open(reader, split="unlabeled").data).transpose(0, 2, 3, 1))

    def load(self) -> ImageData:
        if self.opts.unlabelled and self.opts.path:
            raise ConfigError(f"dataset {self.name!r}: unlabelled=true reads stl10_binary/unlabeled_X.bin under "
                              f"--data-root, not an image folder (path=); drop one of the two")
        data = super().load()
        return dataclasses.replace(data, unlabelled=self.read_unlabelled()) if self.opts.unlabelled else data

    def arrays(self, tv: Any, where: Path) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(tv.data).transpose(0, 2, 3, 1)  # torchvision gives N, C, H, W
        stored = (np.asarray(tv.labels).astype(np.int64) + 1) % 256  # torchvision subtracts 1 in uint8
        return x, _labels(stored - 1, len(x), 10, where, offset=1)


class Mnist(TorchvisionSet):
    name = "mnist"
    description = ("MNIST (LeCun et al. 1998): 70,000 28x28 grey handwritten digits (train+test); "
                   "torchvision layout under --data-root")
    n_classes = 10
    tv_name, folder = "MNIST", "MNIST/raw"
    required = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte")
    label_files = ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte")
    class_names = tuple(str(i) for i in range(10))
    names_in_files = False  # torchvision's are "0 - zero", ...
    gz = True
    folder_mode = "L"

    def arrays(self, tv: Any, where: Path) -> tuple[np.ndarray, np.ndarray]:
        x = tv.data.numpy()[..., None]
        return x, _labels(tv.targets.numpy(), len(x), 10, where)

    def read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, Sequence[str]]:
        made: list[Path] = []  # torchvision reads the unpacked idx files: unpack those there as .gz only
        try:
            for path in (self.data_dir() / name for name in self.required):
                if not path.is_file():
                    _gunzip(path.with_name(f"{path.name}.gz"), path)
                    made.append(path)
            return super().read()
        except BaseException:
            for path in made:  # nothing torchvision could not read is left behind
                path.unlink(missing_ok=True)
            raise


def _gunzip(gz: Path, path: Path) -> None:
    try:
        with gzip.open(gz, "rb") as f:
            atomic_write_bytes(path, f.read())
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {gz} or unpack it beside it: {type(exc).__name__}: {exc} "
                        f"(truncated, not gzip, or a read-only folder: gunzip -k it there)") from None


class FashionMnist(Mnist):
    name = "fashion-mnist"
    description = ("Fashion-MNIST (Xiao et al. 2017): 70,000 28x28 grey images of clothing, 10 classes "
                   "(train+test); torchvision layout under --data-root")
    tv_name, folder = "FashionMNIST", "FashionMNIST/raw"
    class_names = FASHION_CLASSES
    from_folder = False  # "T-shirt/top" cannot be a folder name


@hookimpl
def clusterbench_datasets():
    return [Cifar10, Cifar100, Cifar100Superclasses, Stl10, Mnist, FashionMnist]
