"""The representation-learning benchmarks CueCo reports on: ``cifar100`` (100 fine classes) and
``imagenet100`` (CMC's 100 ImageNet classes), read from tiny fake layouts built here."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import utils as tv_utils

from clusterbench import DataError
from clusterbench.datasets.imagenet_sets import IMAGENET100_WNIDS, ImageNet100
from clusterbench.datasets.torchvision_sets import CIFAR100_CLASSES, Cifar100, Cifar100Superclasses
from test_datasets_real_layouts import write_cifar100, write_subset


def make_tree(root, classes, per_split=(1, 1)):
    """split/class/k.png, every pixel of class folder c's images = c (c < 256: labels checkable)."""
    for split, n in zip(("train", "test"), per_split):
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True)
            for k in range(n):
                Image.fromarray(np.full((4, 4, 3), c, np.uint8)).save(d / f"{k}.png")
    return root


@pytest.fixture(autouse=True)
def _cache_and_md5(tmp_path, monkeypatch):
    monkeypatch.setenv("CLUSTERBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tv_utils, "check_md5", lambda *args, **kwargs: True)  # fake files, not the originals


def test_cifar100_class_list_is_the_files_fine_label_order():
    assert len(CIFAR100_CLASSES) == len(set(CIFAR100_CLASSES)) == 100
    assert list(CIFAR100_CLASSES) == sorted(CIFAR100_CLASSES)  # fine_label_names are alphabetical
    assert (CIFAR100_CLASSES[0], CIFAR100_CLASSES[4], CIFAR100_CLASSES[55], CIFAR100_CLASSES[99]) == \
        ("apple", "beaver", "otter", "worm")


def test_cifar100_keeps_the_fine_labels_of_the_same_files_as_cifar100_20(tmp_path):
    write_cifar100(tmp_path, fine_train=(0, 4, 99, 72), fine_test=(1, 55))
    fine = Cifar100(root=tmp_path).load()
    assert fine.name == "cifar100" and fine.n_classes == 100 and fine.x.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(fine.y, [0, 4, 99, 72, 1, 55])
    np.testing.assert_array_equal(fine.train_mask, [True] * 4 + [False] * 2)
    coarse = Cifar100Superclasses(root=tmp_path).load()
    np.testing.assert_array_equal(coarse.x, fine.x)
    assert coarse.n_classes == 20


def test_cifar100_from_an_image_folder_of_the_fine_classes(tmp_path):
    tree = make_tree(tmp_path / "tree", CIFAR100_CLASSES[::-1], per_split=(1, 1))  # any order on disk
    data = Cifar100(path=str(tree)).load()
    assert data.n_classes == 100 and len(data) == 200 and data.class_names == CIFAR100_CLASSES
    # folder c (reversed order) holds pixel value c: label 99 - c in the benchmark's order
    np.testing.assert_array_equal(data.x[:, 0, 0, 0], 99 - data.y)
    with pytest.raises(DataError, match=r"cifar100 has the 100 classes .*missing: worm"):
        bad = make_tree(tmp_path / "bad", CIFAR100_CLASSES[:-1], per_split=(1, 0))
        Cifar100(path=str(bad)).load()


def test_imagenet100_class_list():
    assert len(IMAGENET100_WNIDS) == len(set(IMAGENET100_WNIDS)) == 100
    assert all(w.startswith("n") and len(w) == 9 and w[1:].isdigit() for w in IMAGENET100_WNIDS)
    # CMC's imagenet100.txt: first, a few in between, last
    assert IMAGENET100_WNIDS[:3] == ("n02869837", "n01749939", "n02488291")
    assert "n02123045" in IMAGENET100_WNIDS and IMAGENET100_WNIDS[-1] == "n02090622"


def test_imagenet100_reads_train_and_val_of_a_full_imagenet_folder(tmp_path):
    full = tmp_path / "imagenet"
    write_subset(full / "train", IMAGENET100_WNIDS, sizes=((12, 12),))  # + a class not in the list, ignored
    write_subset(full / "val", IMAGENET100_WNIDS, sizes=((12, 12),), extra=False)
    data = ImageNet100(root=tmp_path, size=8).load()  # found as <data-root>/imagenet
    assert data.name == "imagenet100" and data.n_classes == 100 and data.x.shape == (200, 8, 8, 3)
    np.testing.assert_array_equal(data.train_mask, [True] * 100 + [False] * 100)
    assert data.class_names == tuple(sorted(IMAGENET100_WNIDS))
    np.testing.assert_array_equal(np.bincount(data.y), np.full(100, 2))
    assert ImageNet100(path=str(full), size=8, split="train").load().train_mask.all()


def test_imagenet100_names_a_missing_class(tmp_path):
    write_subset(tmp_path / "imagenet100", IMAGENET100_WNIDS[1:], sizes=((12, 12),), extra=False)
    with pytest.raises(DataError, match=IMAGENET100_WNIDS[0]):
        ImageNet100(root=tmp_path, size=8).load()
