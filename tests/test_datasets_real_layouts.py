"""The torchvision and ImageNet readers on tiny files written here in each dataset's real on-disk layout."""

from __future__ import annotations

import gzip
import pickle
import struct
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import utils as tv_utils

from clusterbench import ConfigError, DataError, Dataset
from clusterbench.datasets import _decode
from clusterbench.datasets.imagenet_sets import (IMAGENET10_WNIDS, IMAGENET_DOGS_WNIDS, ImageNet10, ImageNetDogs,
                                                 TinyImageNet)
from clusterbench.datasets.torchvision_sets import (CIFAR100_SUPERCLASSES, FINE_TO_COARSE, Cifar10,
                                                    Cifar100Superclasses, FashionMnist, Mnist, Stl10)

RNG = np.random.default_rng(0)
REAL_CHECK_MD5 = tv_utils.check_md5


@pytest.fixture(autouse=True)
def written_files_pass_md5(monkeypatch):
    """The files written here are not the originals: torchvision's md5 check would reject them all
    (``test_torchvision_md5_check_is_kept`` turns it back on)."""
    monkeypatch.setattr(tv_utils, "check_md5", lambda *args, **kwargs: True)


# ---- writers: the files as torchvision / the dataset authors ship them ----------------------
def dump(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def cifar_rows(n: int) -> np.ndarray:
    return RNG.integers(0, 256, (n, 3072), dtype=np.uint8)  # per row: R plane, G plane, B plane


def write_cifar10(root: Path, per_batch: int = 2) -> Path:
    d = root / "cifar-10-batches-py"
    for i in range(1, 6):
        dump(d / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "data": cifar_rows(per_batch),
                                     "labels": [(i + k) % 10 for k in range(per_batch)],
                                     "filenames": [f"f{k}.png" for k in range(per_batch)]})
    dump(d / "test_batch", {"batch_label": "testing batch 1 of 1", "data": cifar_rows(3), "labels": [9, 0, 1],
                            "filenames": ["a", "b", "c"]})
    dump(d / "batches.meta", {"num_cases_per_batch": per_batch, "num_vis": 3072,
                              "label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                              "horse", "ship", "truck"]})
    return d


def write_cifar100(root: Path, fine_train=(0, 4, 99, 72), fine_test=(1, 55)) -> Path:
    d = root / "cifar-100-python"
    for name, fine in (("train", fine_train), ("test", fine_test)):
        dump(d / name, {"filenames": [f"{k}.png" for k in range(len(fine))], "batch_label": name,
                        "fine_labels": list(fine), "coarse_labels": [int(FINE_TO_COARSE[f]) for f in fine],
                        "data": cifar_rows(len(fine))})
    dump(d / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                      "coarse_label_names": [f"super{i}" for i in range(20)]})
    return d


def write_stl10(root: Path, n_train: int = 3, n_test: int = 2) -> tuple[Path, np.ndarray]:
    d = root / "stl10_binary"
    d.mkdir(parents=True)
    x = RNG.integers(0, 256, (n_train + n_test, 96, 96, 3), dtype=np.uint8)
    y = np.arange(n_train + n_test) % 10 + 1  # stored 1..10
    for name, sl in (("train", slice(0, n_train)), ("test", slice(n_train, None))):
        (d / f"{name}_X.bin").write_bytes(x[sl].transpose(0, 3, 2, 1).tobytes())  # (N, C, W, H): column-major
        (d / f"{name}_y.bin").write_bytes(y[sl].astype(np.uint8).tobytes())
    (d / "class_names.txt").write_text("\n".join(["airplane", "bird", "car", "cat", "deer", "dog", "horse",
                                                  "monkey", "ship", "truck"]) + "\n")
    return d, x


def idx_bytes(a: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def write_mnist(root: Path, folder: str = "MNIST", gz: bool = False) -> np.ndarray:
    d = root / folder / "raw"
    d.mkdir(parents=True)
    x = RNG.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    y = np.array([3, 1, 4, 1, 5, 9, 2], dtype=np.uint8)
    for prefix, sl in (("train", slice(0, 4)), ("t10k", slice(4, None))):
        for kind, a in (("images-idx3", x[sl]), ("labels-idx1", y[sl])):
            data = idx_bytes(np.ascontiguousarray(a))
            if gz:
                (d / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(data))
            else:
                (d / f"{prefix}-{kind}-ubyte").write_bytes(data)
    return x


def save_jpeg(path: Path, size: tuple[int, int], rgb: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path, "JPEG")


TINY_WNIDS = ("n01443537", "n01629819", "n01641577")


def write_tiny(root: Path) -> Path:
    d = root / "tiny-imagenet-200"
    for k, w in enumerate(reversed(TINY_WNIDS)):
        for j in range(2):
            save_jpeg(d / "train" / w / "images" / f"{w}_{j}.JPEG", (64, 64), (80 * k, 10 * j, 50))
        (d / "train" / w / f"{w}_boxes.txt").write_text("")
    lines = []
    for k, w in enumerate(TINY_WNIDS):
        save_jpeg(d / "val" / "images" / f"val_{k}.JPEG", (64, 64), (5, 5, 5))
        lines.append(f"val_{k}.JPEG\t{w}\t0\t5\t60\t61")
    (d / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (d / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (d / "test" / "images").mkdir(parents=True)
    return d


# ---- CIFAR ----------------------------------------------------------------------------------
def test_cifar10_reads_batches_in_order(tmp_path):
    d = write_cifar10(tmp_path)
    data = Cifar10(root=tmp_path).load()
    assert data.x.shape == (13, 32, 32, 3) and data.x.dtype == np.uint8 and data.y.dtype == np.int64
    assert data.n_classes == 10 and data.class_names[1] == "automobile"
    first = pickle.loads((d / "data_batch_1").read_bytes(), encoding="latin1")
    row = first["data"][1]
    assert data.x[1, 2, 5, 0] == row[2 * 32 + 5] and data.x[1, 2, 5, 2] == row[2048 + 2 * 32 + 5]
    np.testing.assert_array_equal(data.y[:2], [1, 2])
    np.testing.assert_array_equal(data.y[-3:], [9, 0, 1])
    np.testing.assert_array_equal(data.train_mask, [True] * 10 + [False] * 3)
    test = Cifar10(root=tmp_path, split="test").load()
    assert len(test) == 3 and not test.train_mask.any()
    assert len(Cifar10(root=d).load()) == 13  # --data-root may be the dataset folder itself


def test_cifar10_matches_torchvision(tmp_path, monkeypatch):
    import torchvision

    write_cifar10(tmp_path)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    tv = [torchvision.datasets.CIFAR10(str(tmp_path), train=t) for t in (True, False)]
    data = Cifar10(root=tmp_path).load()
    np.testing.assert_array_equal(data.x, np.concatenate([t.data for t in tv]))
    np.testing.assert_array_equal(data.y, sum((list(t.targets) for t in tv), []))


def test_cifar100_uses_the_20_superclasses(tmp_path):
    write_cifar100(tmp_path)
    data = Cifar100Superclasses(root=tmp_path).load()
    assert data.n_classes == 20 and data.x.shape == (6, 32, 32, 3)
    # fine (0, 4, 99, 72 | 1, 55) -> CC's super_label rows 4, 0, 13, 0 | 1, 0
    np.testing.assert_array_equal(data.y, [4, 0, 13, 0, 1, 0])
    assert data.class_names[0] == "super0" and len(data.class_names) == 20
    assert sorted(f for group in CIFAR100_SUPERCLASSES for f in group) == list(range(100))
    np.testing.assert_array_equal(data.train_mask, [True] * 4 + [False] * 2)


def test_torchvision_md5_check_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(tv_utils, "check_md5", REAL_CHECK_MD5)
    d = write_cifar100(tmp_path)
    batch = pickle.loads((d / "train").read_bytes(), encoding="latin1")
    batch["coarse_labels"][2] = 3  # fine 99 belongs to superclass 13: a file that is not the original
    dump(d / "train", batch)
    with pytest.raises(DataError, match=r"cifar-100-python/train fails torchvision's md5 check; .*download=true"):
        Cifar100Superclasses(root=tmp_path).load()


def test_cifar_missing_and_broken_files(tmp_path):
    with pytest.raises(DataError, match=r"folder .*cifar-10-batches-py not found.*download=true"):
        Cifar10(root=tmp_path).load()
    d = write_cifar10(tmp_path)
    (d / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"cifar-10-batches-py/data_batch_3 not found; the folder is incomplete"):
        Cifar10(root=tmp_path).load()
    raw = (d / "data_batch_2").read_bytes()
    dump(d / "data_batch_3", {"data": cifar_rows(2), "labels": [0, 10]})
    with pytest.raises(DataError, match=r"labels out of range \[0, 10\)"):
        Cifar10(root=tmp_path).load()
    (d / "data_batch_3").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"torchvision cannot read .*cifar-10-batches-py \(UnpicklingError: pickle "
                                        r"data was truncated\); a file is truncated"):
        Cifar10(root=tmp_path).load()
    dump(d / "data_batch_3", {"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]})
    with pytest.raises(DataError, match=r"torchvision cannot read .*cifar-10-batches-py \(ValueError: .*dimensions"):
        Cifar10(root=tmp_path).load()


def test_torchvision_sets_need_a_data_root():
    with pytest.raises(ConfigError, match=r"--data-root DIR \(DIR/cifar-10-batches-py/\)"):
        Cifar10().load()


def test_download_failure_says_it_needs_network(tmp_path, monkeypatch):
    import urllib.error

    import torchvision

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError, match=r"download into .* failed \(URLError.*needs network access"):
        Cifar10(root=tmp_path / "data", download="true").load()


def test_download_fetches_missing_files_only(tmp_path, monkeypatch):
    import torchvision

    calls = []

    def fake_download(self):  # torchvision's own download step, offline: writes the files
        calls.append(self.root)
        write_cifar100(Path(self.root))

    monkeypatch.setattr(torchvision.datasets.CIFAR100, "download", fake_download)
    assert len(Cifar100Superclasses(root=tmp_path, download="yes").load()) == 6
    assert len(Cifar100Superclasses(root=tmp_path, download=True).load()) == 6  # files there: no second fetch
    assert calls == [str(tmp_path)]


# ---- STL-10 ---------------------------------------------------------------------------------
def test_stl10_train_and_test_labelled_images(tmp_path):
    _, x = write_stl10(tmp_path)
    data = Stl10(root=tmp_path).load()
    assert data.x.shape == (5, 96, 96, 3) and data.x.dtype == np.uint8
    np.testing.assert_array_equal(data.x, x)  # written column-major, read back row-major
    np.testing.assert_array_equal(data.y, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(data.train_mask, [True, True, True, False, False])
    assert data.class_names[7] == "monkey"


def test_stl10_matches_torchvision(tmp_path):
    from torchvision.datasets import STL10

    write_stl10(tmp_path)
    tv = object.__new__(STL10)
    tv.root, tv.base_folder = str(tmp_path), "stl10_binary"
    images, labels = tv._STL10__loadfile("train_X.bin", "train_y.bin")  # (N, C, H, W) as torchvision returns it
    data = Stl10(root=tmp_path, split="train").load()
    np.testing.assert_array_equal(data.x, images.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(data.y, labels)


def test_stl10_broken_files(tmp_path):
    d, _ = write_stl10(tmp_path)
    raw = (d / "test_X.bin").read_bytes()
    (d / "test_X.bin").write_bytes(raw[:-100])
    with pytest.raises(DataError, match=r"torchvision cannot read .*stl10_binary \(ValueError: cannot reshape array"):
        Stl10(root=tmp_path).load()
    (d / "test_X.bin").write_bytes(raw)
    (d / "test_y.bin").write_bytes(bytes([1, 11]))
    with pytest.raises(DataError, match=r"test_y\.bin: labels out of range \[1, 11\): found 1\.\.11"):
        Stl10(root=tmp_path).load()
    (d / "train_y.bin").unlink()
    with pytest.raises(DataError, match=r"stl10_binary/train_y\.bin not found"):
        Stl10(root=tmp_path).load()


# ---- MNIST ----------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files_plain_and_gzipped(tmp_path, gz):
    x = write_mnist(tmp_path, gz=gz)
    data = Mnist(root=tmp_path).load()
    assert data.x.shape == (7, 28, 28, 1) and data.channels == 1
    np.testing.assert_array_equal(data.x[..., 0], x)
    np.testing.assert_array_equal(data.y, [3, 1, 4, 1, 5, 9, 2])
    assert data.train_mask.sum() == 4
    assert (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()  # unpacked for torchvision
    assert len(Mnist(root=tmp_path / "MNIST" / "raw").load()) == 7  # --data-root may be the dataset folder itself


def test_mnist_matches_torchvision(tmp_path):
    from torchvision.datasets.mnist import read_image_file, read_label_file

    write_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    data = Mnist(root=tmp_path, split="test").load()
    np.testing.assert_array_equal(data.x[..., 0], read_image_file(str(raw / "t10k-images-idx3-ubyte")).numpy())
    np.testing.assert_array_equal(data.y, read_label_file(str(raw / "t10k-labels-idx1-ubyte")).numpy())


def test_fashion_mnist_folder_and_names(tmp_path):
    write_mnist(tmp_path, folder="FashionMNIST", gz=True)
    data = FashionMnist(root=tmp_path).load()
    assert len(data) == 7 and data.class_names[9] == "Ankle boot"
    with pytest.raises(DataError, match=r"MNIST/raw not found"):
        Mnist(root=tmp_path).load()


def test_mnist_broken_files(tmp_path):
    write_mnist(tmp_path, gz=True)
    raw = tmp_path / "MNIST" / "raw"
    good = (raw / "train-images-idx3-ubyte.gz").read_bytes()
    (raw / "train-images-idx3-ubyte.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"cannot read .*train-images-idx3-ubyte\.gz.*truncated"):
        Mnist(root=tmp_path).load()
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + bytes(12)))
    with pytest.raises(DataError, match=r"torchvision cannot read .*MNIST/raw \(ValueError: "):
        Mnist(root=tmp_path).load()
    (raw / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"MNIST/raw/train-images-idx3-ubyte\[\.gz\] not found"):
        Mnist(root=tmp_path).load()


# ---- Tiny-ImageNet --------------------------------------------------------------------------
def test_tiny_imagenet_official_layout(tmp_path):
    write_tiny(tmp_path)
    data = TinyImageNet(root=tmp_path).load()  # default: the train split, as the papers
    assert data.x.shape == (6, 64, 64, 3) and data.x.dtype == np.uint8
    assert data.class_names == TINY_WNIDS  # sorted wnids, ImageFolder's order
    np.testing.assert_array_equal(data.y, [0, 0, 1, 1, 2, 2])
    assert data.train_mask.all()
    both = TinyImageNet(root=tmp_path, split="all").load()
    assert len(both) == 9
    np.testing.assert_array_equal(both.y[6:], [0, 1, 2])  # from val_annotations.txt
    np.testing.assert_array_equal(both.train_mask, [True] * 6 + [False] * 3)


def test_tiny_imagenet_errors(tmp_path):
    with pytest.raises(DataError, match=r"tiny-imagenet-200 .*not found.*tiny-imagenet-200\.zip"):
        TinyImageNet(root=tmp_path).load()
    d = write_tiny(tmp_path)
    (d / "val" / "images" / "val_1.JPEG").unlink()
    with pytest.raises(DataError, match=r"val/images/val_1\.JPEG \(listed in .*val_annotations\.txt:2\) not found"):
        TinyImageNet(root=tmp_path, split="test").load()
    (d / "train" / TINY_WNIDS[0] / "images" / f"{TINY_WNIDS[0]}_1.JPEG").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(DataError, match=rf"cannot decode image .*{TINY_WNIDS[0]}_1\.JPEG"):
        TinyImageNet(root=tmp_path).load()


def test_tiny_imagenet_cache_is_used(tmp_path, monkeypatch):
    write_tiny(tmp_path)
    first = TinyImageNet(root=tmp_path).load()
    monkeypatch.setattr(_decode, "_decode_one", lambda *a: (_ for _ in ()).throw(AssertionError("decoded")))
    np.testing.assert_array_equal(TinyImageNet(root=tmp_path).load().x, first.x)


# ---- ImageNet-10 / ImageNet-Dogs ------------------------------------------------------------
def write_subset(folder: Path, wnids, sizes=((40, 30), (23, 50)), extra: bool = True) -> None:
    for k, w in enumerate(wnids):
        for j, size in enumerate(sizes):
            save_jpeg(folder / w / f"{w}_{j}.JPEG", size, (20 * k % 256, 100, 30 * j))
    if extra:
        save_jpeg(folder / "n00000001" / "x.JPEG", (30, 30), (0, 0, 0))  # not an ImageNet-10 class: ignored


def test_imagenet10_folder_resized_and_ordered(tmp_path):
    write_subset(tmp_path / "imagenet10", IMAGENET10_WNIDS)
    data = ImageNet10(root=tmp_path, size="16").load()
    assert data.x.shape == (20, 16, 16, 3) and data.n_classes == 10
    assert data.class_names == tuple(sorted(IMAGENET10_WNIDS))
    np.testing.assert_array_equal(data.y, np.repeat(np.arange(10), 2))
    assert data.train_mask.all()
    assert ImageNet10(root=tmp_path).load().x.shape == (20, 96, 96, 3)  # the documented default size


def test_imagenet10_missing_class_or_folder(tmp_path):
    with pytest.raises(DataError, match=r"image folder not found \(looked for .*imagenet10, .*imagenet-10\)"):
        ImageNet10(root=tmp_path).load()
    write_subset(tmp_path / "imagenet-10", IMAGENET10_WNIDS[:-1], extra=False)
    with pytest.raises(DataError, match=rf"has no class folder\(s\) {IMAGENET10_WNIDS[-1]}"):
        ImageNet10(root=tmp_path, size=8).load()
    with pytest.raises(ConfigError, match=r"--data-root"):
        ImageNet10().load()


def test_imagenet_dogs_from_a_full_imagenet_folder(tmp_path):
    full = tmp_path / "imagenet"
    write_subset(full / "train", IMAGENET_DOGS_WNIDS, sizes=((20, 20),))
    write_subset(full / "val", IMAGENET_DOGS_WNIDS, sizes=((20, 20),))
    data = ImageNetDogs(path=str(full), size=8, split="train").load()
    assert data.x.shape == (15, 8, 8, 3) and data.n_classes == 15 and data.train_mask.all()
    both = ImageNetDogs(path=str(full), size=8).load()
    np.testing.assert_array_equal(both.train_mask, [True] * 15 + [False] * 15)


def test_imagenet_dogs_from_a_tar_gz(tmp_path):
    import tarfile

    src = tmp_path / "src" / "imagenet-dogs"
    write_subset(src, IMAGENET_DOGS_WNIDS, sizes=((20, 20),))
    archive = tmp_path / "dogs.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src, arcname="imagenet-dogs")
    data = ImageNetDogs(path=str(archive), size=8).load()
    assert data.x.shape == (15, 8, 8, 3) and data.class_names == IMAGENET_DOGS_WNIDS


# ---- registration -----------------------------------------------------------------------------
def test_plugins_register_every_dataset():
    names = {}
    for ep in entry_points(group="clusterbench"):
        if ep.name in ("files", "torchvision_sets", "imagenet_sets"):
            for cls in ep.load().clusterbench_datasets():
                assert issubclass(cls, Dataset) and cls.description and "split" in cls.option_names()
                names[cls.name] = cls
    assert set(names) == {"npz", "imagefolder", "cifar10", "cifar100", "cifar100-20", "stl10", "mnist",
                          "fashion-mnist", "imagenet10", "imagenet-dogs", "imagenet100", "tiny-imagenet"}
    assert {n: names[n].n_classes for n in ("cifar10", "cifar100-20", "stl10", "mnist", "tiny-imagenet")} == \
        {"cifar10": 10, "cifar100-20": 20, "stl10": 10, "mnist": 10, "tiny-imagenet": 200}
    assert {n for n, c in names.items() if "download" in c.option_names()} == \
        {"cifar10", "cifar100", "cifar100-20", "stl10", "mnist", "fashion-mnist"}
