"""ImageNet-10, ImageNet-Dogs, Tiny-ImageNet and ImageNet-100: the ImageNet-derived benchmarks.

ImageNet-10 and ImageNet-Dogs were introduced with DAC (Chang et al., "Deep Adaptive Image
Clustering", ICCV 2017) and used since by CC, PICA, SCAN and others: the 1,300 ImageNet
(ILSVRC-2012) training images of each of 10 (13,000 images) and 15 dog classes (19,500).
The WordNet IDs below are the lists the CC authors publish
(github.com/Yunfan-Li/Contrastive-Clustering, ``datasets/ImageNet-10.txt`` and
``datasets/ImageNet-dogs.txt``); other clustering code bases (e.g. the ImageNet filters
of later CC follow-ups) carry the same lists.

Both read an image folder, decode it once at ``size`` x ``size`` (default 96, so that a
CPU run is practical; the papers resize to 224: pass ``size=224`` to match them) and
cache the arrays.  Tiny-ImageNet (Le & Yang 2015; 200 classes, 64x64) is read from the
official ``tiny-imagenet-200`` layout; see :class:`TinyImageNet` for its split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from clusterbench import ConfigError, DataError, ImageData, hookimpl, param
from clusterbench.datasets._cache import cached, fingerprint
from clusterbench.datasets._imagefolder import READER_VERSION, Item, is_image_name, labelled_arrays, read_class_folders
from clusterbench.datasets._split import SPLITS, SplitDataset

__all__ = ["IMAGENET10_WNIDS", "IMAGENET100_WNIDS", "IMAGENET_DOGS_WNIDS", "ImageNet10", "ImageNet100", "ImageNetDogs",
           "TinyImageNet"]

# DAC's ImageNet-10, as listed by CC (datasets/ImageNet-10.txt).
IMAGENET10_WNIDS: tuple[str, ...] = (
    "n02056570",  # king penguin
    "n02085936",  # Maltese dog
    "n02128757",  # snow leopard
    "n02690373",  # airliner
    "n02692877",  # airship
    "n03095699",  # container ship
    "n04254680",  # soccer ball
    "n04285008",  # sports car
    "n04467665",  # trailer truck
    "n07747607",  # orange
)

# DAC's ImageNet-Dogs (15 breeds), as listed by CC (datasets/ImageNet-dogs.txt).
IMAGENET_DOGS_WNIDS: tuple[str, ...] = (
    "n02085936",  # Maltese dog
    "n02086646",  # Blenheim spaniel
    "n02088238",  # basset
    "n02091467",  # Norwegian elkhound
    "n02097130",  # giant schnauzer
    "n02099601",  # golden retriever
    "n02101388",  # Brittany spaniel
    "n02101556",  # clumber
    "n02102177",  # Welsh springer spaniel
    "n02105056",  # groenendael
    "n02105412",  # kelpie
    "n02105855",  # Shetland sheepdog
    "n02107142",  # Doberman
    "n02110958",  # pug
    "n02112137",  # chow
)

# ImageNet-100 (Tian, Krishnan & Isola, "Contrastive Multiview Coding", ECCV 2020): the 100
# classes of CMC's imagenet100.txt (github.com/HobbitLong/CMC), in that file's order: the
# list solo-learn and the MoCo/SimCLR ImageNet-100 results (CueCo's comparison) use.
IMAGENET100_WNIDS: tuple[str, ...] = (
    "n02869837", "n01749939", "n02488291", "n02107142", "n13037406", "n02091831",
    "n04517823", "n04589890", "n03062245", "n01773797", "n01735189", "n07831146",
    "n07753275", "n03085013", "n04485082", "n02105505", "n01983481", "n02788148",
    "n03530642", "n04435653", "n02086910", "n02859443", "n13040303", "n03594734",
    "n02085620", "n02099849", "n01558993", "n04493381", "n02109047", "n04111531",
    "n02877765", "n04429376", "n02009229", "n01978455", "n02106550", "n01820546",
    "n01692333", "n07714571", "n02974003", "n02114855", "n03785016", "n03764736",
    "n03775546", "n02087046", "n07836838", "n04099969", "n04592741", "n03891251",
    "n02701002", "n03379051", "n02259212", "n07715103", "n03947888", "n04026417",
    "n02326432", "n03637318", "n01980166", "n02113799", "n02086240", "n03903868",
    "n02483362", "n04127249", "n02089973", "n03017168", "n02093428", "n02804414",
    "n02396427", "n04418357", "n02172182", "n01729322", "n02113978", "n03787032",
    "n02089867", "n02119022", "n03777754", "n04238763", "n02231487", "n03032252",
    "n02138441", "n02104029", "n03837869", "n03494278", "n04136333", "n03794056",
    "n03492542", "n02018207", "n04067472", "n03930630", "n03584829", "n02123045",
    "n04229816", "n02100583", "n03642806", "n04336792", "n03259280", "n02116738",
    "n02108089", "n03424325", "n01855672", "n02090622",
)

DEFAULT_SIZE = 96


class ImageNetSubset(SplitDataset):
    """A fixed set of ImageNet classes read from an image folder of ``<wnid>/`` folders.

    The folder is option ``path`` or the first of ``folders`` under ``--data-root``; it
    holds ``<wnid>/*.JPEG`` or ``train/<wnid>/*.JPEG`` (with ``val/<wnid>/`` as the test
    split), or is a ``.tar.gz`` of either.  Only the listed WordNet IDs are read, so a
    full ImageNet ``train/`` folder works too.  The papers' data is the 1,300 training
    images per class: ``split=all`` on a folder of those, or ``split=train`` when the
    folder also has ``val/``.
    """

    wnids: ClassVar[tuple[str, ...]]
    folders: ClassVar[tuple[str, ...]]  # where to look under --data-root, first is the documented one

    @dataclass(frozen=True)
    class Options(SplitDataset.Options):
        path: str = param("", "the image folder or .tar.gz (default: the first of `folders` under --data-root)")
        size: int = param(DEFAULT_SIZE, "images are resized to size x size (the papers use 224)", minimum=1)

    def source(self) -> Path:
        if self.opts.path:
            path = self.opt_path("path")
            if not path.exists():
                raise self.missing(path, "image folder", f"point path= at a folder of {self.name} class folders")
            return path
        if self.root is None:
            raise ConfigError(f"dataset {self.name!r} reads <data-root>/{self.folders[0]}/<wnid>/*.JPEG: pass "
                              f"--data-root DIR, or {self.name}[path=FOLDER]")
        for name in self.folders:
            if (self.root / name).exists():
                return self.root / name
        tried = ", ".join(str(self.root / n) for n in self.folders)
        raise DataError(f"dataset {self.name!r}: image folder not found (looked for {tried}); put its "
                        f"{len(self.wnids)} ImageNet class folders <wnid>/*.JPEG there (WordNet IDs "
                        f"{', '.join(self.wnids[:3])}, ...: see {__name__}), or pass {self.name}[path=FOLDER] "
                        f"(a full ImageNet train/ works)")

    def load(self) -> ImageData:
        src = self.source()
        arrays = read_class_folders(src, size=self.opts.size, mode="RGB", classes=self.wnids, label=self.name)
        names = [str(c) for c in arrays["class_names"]]
        return self.finish(arrays["x"], arrays["y"], len(names), arrays["is_train"], names, str(src))


class ImageNet10(ImageNetSubset):
    name = "imagenet10"
    description = ("ImageNet-10 (Chang et al. 2017, DAC): 13,000 ImageNet train images of 10 classes, resized to "
                   "size (default 96; papers 224); <data-root>/imagenet10/<wnid>/ (options: path, size, split)")
    n_classes = 10
    wnids = IMAGENET10_WNIDS
    folders = ("imagenet10", "imagenet-10")


class ImageNetDogs(ImageNetSubset):
    name = "imagenet-dogs"
    description = ("ImageNet-Dogs (Chang et al. 2017, DAC): 19,500 ImageNet train images of 15 dog breeds, resized "
                   "to size (default 96; papers 224); <data-root>/imagenet-dogs/<wnid>/ (options: path, size, split)")
    n_classes = 15
    wnids = IMAGENET_DOGS_WNIDS
    folders = ("imagenet-dogs", "imagenet_dogs", "imagenetdogs")


class ImageNet100(ImageNetSubset):
    """ImageNet-100: a user's ImageNet folder, read for CMC's 100 classes.

    The representation-learning benchmark (CMC, solo-learn, CueCo): pre-train on the
    ~126,700 ILSVRC-2012 training images of the 100 classes, evaluate a linear probe on
    their 5,000 validation images.  Point ``path=`` at a full ImageNet folder with
    ``train/<wnid>/`` and ``val/<wnid>/`` (val sorted into class folders), or at a folder of
    just the 100 classes; ``split=all`` (the default) reads both splits with ``train_mask``
    marking train, as the ``linear`` protocol needs.  ``size`` defaults to 96 like the other
    ImageNet subsets; the papers use 224 (``size=224``: ~19 GB of uint8 for the train split).
    """

    name = "imagenet100"
    description = ("ImageNet-100 (Tian et al. 2020, CMC's class list): ILSVRC-2012 train (+val) images of 100 "
                   "classes, resized to size (default 96; papers 224); <data-root>/imagenet100/ or path= "
                   "(train/<wnid>/, val/<wnid>/; options: path, size, split)")
    n_classes = 100
    wnids = IMAGENET100_WNIDS
    folders = ("imagenet100", "imagenet-100", "imagenet")


# ---- Tiny-ImageNet -------------------------------------------------------------------------
def _tiny_train(d: Path) -> tuple[list[str], list[tuple[Path, str]]]:
    """The class list (sorted wnids: ImageFolder's order) and (file, wnid) of train/<wnid>/images/*."""
    train = d / "train"
    if not train.is_dir():
        raise DataError(f"tiny-imagenet: {train} not found (the official layout has tiny-imagenet-200/train/"
                        f"<wnid>/images/*.JPEG)")
    wnids = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not wnids:
        raise DataError(f"tiny-imagenet: {train} holds no class folders")
    files = []
    for w in wnids:
        images = train / w / "images"
        if not images.is_dir():
            raise DataError(f"tiny-imagenet: {images} not found (expected train/<wnid>/images/*.JPEG)")
        files += [(p, w) for p in sorted(images.iterdir()) if is_image_name(p.name)]
    return wnids, files


def _tiny_val(d: Path, wnids: list[str]) -> list[tuple[Path, str]]:
    """(file, wnid) of val/images/*, labelled by val/val_annotations.txt."""
    ann = d / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise DataError(f"tiny-imagenet: {ann} not found (the official layout has val/images/ and "
                        f"val/val_annotations.txt); use split=train to read the training images only")
    known = set(wnids)
    out = []
    for lineno, line in enumerate(ann.read_text().splitlines(), 1):
        fields = line.split("\t")
        if not line.strip():
            continue
        if len(fields) < 2 or fields[1] not in known:
            raise DataError(f"tiny-imagenet: {ann}:{lineno}: expected 'file<TAB>wnid...' with a wnid of "
                            f"train/, got {line[:60]!r}")
        path = d / "val" / "images" / fields[0]
        if not path.is_file():
            raise DataError(f"tiny-imagenet: {path} (listed in {ann}:{lineno}) not found")
        out.append((path, fields[1]))
    return sorted(out)


class TinyImageNet(SplitDataset):
    """Tiny-ImageNet (Le & Yang 2015): 200 ImageNet classes at 64x64.

    Reads ``<data-root>/tiny-imagenet-200/`` (or option ``path``) as distributed at
    http://cs231n.stanford.edu/tiny-imagenet-200.zip: ``train/<wnid>/images/*.JPEG``
    (500 per class) and ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``
    (50 per class); the unlabelled ``test/`` is ignored.  Classes are the sorted wnids.

    The clustering papers use the **training split only** (CC: 100,000 images, its
    ``train.py`` reads ``tiny-imagenet-200/train`` alone; PICA and DCCM report the same
    100,000), so the default here is ``split=train``; ``split=all`` adds the 10,000
    validation images as the test split (110,000 images), ``split=test`` gives those alone.
    """

    name = "tiny-imagenet"
    description = ("Tiny-ImageNet (Le & Yang 2015): 200 classes, 64x64; train split (100,000) by default as in CC, "
                   "split=all adds val; <data-root>/tiny-imagenet-200/ (options: path, split)")
    n_classes = 200
    folder = "tiny-imagenet-200"

    @dataclass(frozen=True)
    class Options(SplitDataset.Options):
        split: str = param("train", "train (the papers' 100,000 images), all (adds val as test) or test",
                           choices=SPLITS)
        path: str = param("", "the tiny-imagenet-200 folder (default: under --data-root)")

    def source(self) -> Path:
        if self.opts.path:
            d = self.opt_path("path")
        elif self.root is None:
            raise ConfigError(f"dataset {self.name!r} reads <data-root>/{self.folder}/: pass --data-root DIR, "
                              f"or {self.name}[path=FOLDER]")
        elif self.root.name == self.folder:
            d = self.root
        else:
            d = self.root / self.folder
        if not d.is_dir():
            raise self.missing(d, "folder", "download http://cs231n.stanford.edu/tiny-imagenet-200.zip and "
                                            "unzip it under --data-root")
        return d

    def load(self) -> ImageData:
        split = self.split
        d = self.source()
        wnids, train = _tiny_train(d)
        files = ([(p, w, True) for p, w in train] if split in ("all", "train") else []) + \
                ([(p, w, False) for p, w in _tiny_val(d, wnids)] if split in ("all", "test") else [])
        if not files:
            raise DataError(f"tiny-imagenet: no images found under {d}")
        index = {w: k for k, w in enumerate(wnids)}
        key = {"reader": "tiny-imagenet", "version": READER_VERSION, "path": str(d.resolve()), "split": split,
               "files": fingerprint([p for p, _, _ in files])}

        def build() -> dict[str, np.ndarray]:
            items = [Item(str(p), p) for p, _, _ in files]
            return labelled_arrays(items, [index[w] for _, w, _ in files], [t for _, _, t in files], wnids,
                                   None, "RGB")

        arrays = cached(key, build, label=self.name)
        return self.finish(arrays["x"], arrays["y"], len(wnids), arrays["is_train"], wnids, str(d))


@hookimpl
def clusterbench_datasets():
    return [ImageNet10, ImageNetDogs, ImageNet100, TinyImageNet]
