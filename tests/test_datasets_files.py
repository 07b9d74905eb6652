"""The decode-once cache, typed dataset options and the npz and image-folder readers, on tiny files written here."""

from __future__ import annotations

import io
import os
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clusterbench import ConfigError, DataError, Dataset, PluginError, param
from clusterbench.datasets import _cache, _decode
from clusterbench.datasets.files import ImageFolderDataset, NpzDataset
from clusterbench.datasets.synthetic import Synthetic
from clusterbench.datasets.torchvision_sets import Cifar10


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("CLUSTERBENCH_CACHE", str(d))
    return d / "datasets"


def cache_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("*")) if cache.exists() else []


# ---- _cache ---------------------------------------------------------------------------------
def test_cached_builds_once_and_writes_atomically(cache):
    calls = []

    def build():
        calls.append(1)
        return {"x": np.arange(6, dtype=np.uint8).reshape(2, 3), "names": np.array(["a", "b"])}

    a = _cache.cached(["k", 1], build, label="t")
    b = _cache.cached(["k", 1], build, label="t")
    assert len(calls) == 1
    np.testing.assert_array_equal(a["x"], b["x"])
    assert list(b["names"]) == ["a", "b"]
    files = cache_files(cache)
    assert len(files) == 1 and files[0].name.startswith("t-") and files[0].suffix == ".npz"  # no temp file left
    _cache.cached(["k", 2], build, label="t")  # another key: built again
    assert len(calls) == 2


def test_corrupt_cache_file_is_ignored_and_rebuilt(cache):
    build = lambda: {"x": np.ones(4, dtype=np.uint8)}  # noqa: E731
    _cache.cached("key", build)
    path = _cache.cache_path("key")
    path.write_bytes(path.read_bytes()[:20])  # truncated, as a crash of a non-atomic writer would leave it
    with pytest.warns(RuntimeWarning, match="unreadable cache"):
        out = _cache.cached("key", build)
    np.testing.assert_array_equal(out["x"], np.ones(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _cache.cached("key", build)  # rewritten: reads cleanly now


def test_unwritable_cache_still_returns_data(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CLUSTERBENCH_CACHE", str(blocker))
    with pytest.warns(RuntimeWarning, match="could not write"):
        out = _cache.cached("k", lambda: {"x": np.zeros(2)})
    assert out["x"].shape == (2,)


def test_fingerprint_changes_with_the_file(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"1234")
    before = _cache.fingerprint([f])
    f.write_bytes(b"12345")
    assert _cache.fingerprint([f]) != before


# ---- npz ------------------------------------------------------------------------------------
def test_npz_reads_images_labels_mask_and_names(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    mask = np.array([1, 1, 1, 1, 0, 0], dtype=bool)
    np.savez(tmp_path / "d.npz", x=x, y=y, train_mask=mask, class_names=np.array(["a", "b", "c"]))
    data = NpzDataset(path=str(tmp_path / "d.npz")).load()
    assert data.x.dtype == np.uint8 and data.x.shape == (6, 8, 8, 3) and data.y.dtype == np.int64
    np.testing.assert_array_equal(data.x, x)
    assert data.n_classes == 3 and data.class_names == ("a", "b", "c")
    np.testing.assert_array_equal(data.train_mask, mask)
    test = NpzDataset(path=str(tmp_path / "d.npz"), split="test").load()
    assert len(test) == 2 and not test.train_mask.any()


def test_npz_grey_images_and_n_classes_option(tmp_path):
    np.savez(tmp_path / "g.npz", x=np.zeros((3, 5, 5), np.uint8), y=np.array([0, 1, 1]))
    data = NpzDataset(path=str(tmp_path / "g.npz"), n_classes="4").load()
    assert data.x.shape == (3, 5, 5, 1) and data.n_classes == 4 and data.train_mask is None


def test_npz_relative_path_is_found_under_the_data_root(tmp_path):
    np.savez(tmp_path / "r.npz", x=np.zeros((2, 4, 4, 1), np.uint8), y=np.array([0, 1]))
    assert len(NpzDataset(root=tmp_path, path="r.npz").load()) == 2


def test_npz_needs_a_path():
    with pytest.raises(ConfigError, match=r"needs option path="):
        NpzDataset().load()


def test_npz_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataError, match=r"nope\.npz.*not found"):
        NpzDataset(path=str(tmp_path / "nope.npz")).load()


def test_npz_truncated_or_foreign_file(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((50, 8, 8, 3), np.uint8), y=np.zeros(50, int))
    raw = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cannot read .*t\.npz: truncated or not an \.npz file"):
        NpzDataset(path=str(tmp_path / "t.npz")).load()
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DataError, match=r"text\.npz: truncated or not an \.npz file"):
        NpzDataset(path=str(tmp_path / "text.npz")).load()
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(DataError, match=r"one\.npy: truncated or not an \.npz file"):
        NpzDataset(path=str(tmp_path / "one.npy")).load()


@pytest.mark.parametrize("arrays, message", [
    ({"images": np.zeros((2, 4, 4, 3), np.uint8), "y": np.zeros(2, int)}, r"has no 'x' array \(its keys: images, y\)"),
    ({"x": np.zeros((2, 4, 4, 3), np.float32), "y": np.zeros(2, int)}, r"x must be uint8.*float32"),
    ({"x": np.zeros((2, 3, 4, 4), np.uint8), "y": np.zeros(2, int)}, r"channels first"),
    ({"x": np.zeros((2, 4, 4, 5), np.uint8), "y": np.zeros(2, int)}, r"x must have shape"),
    ({"x": np.zeros((2, 4, 4, 3), np.uint8), "y": np.zeros(3, int)}, r"one label per image"),
    ({"x": np.zeros((2, 4, 4, 3), np.uint8), "y": np.array([0.0, 1.0])}, r"integer labels"),
    ({"x": np.zeros((2, 4, 4, 3), np.uint8), "y": np.array([0, -1])}, r"labels must be >= 0, found -1"),
    ({"x": np.zeros((2, 4, 4, 3), np.uint8), "y": np.array([0, 1]), "train_mask": np.array([2, 0])}, r"train_mask"),
])
def test_npz_malformed_contents(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message) as err:
        NpzDataset(path=str(tmp_path / "bad.npz")).load()
    assert "bad.npz" in str(err.value)


def test_npz_labels_out_of_range_for_n_classes(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 4, 4, 3), np.uint8), y=np.array([0, 1, 5]))
    with pytest.raises(DataError, match=r"d\.npz: labels out of range \[0, 3\).*max label 5"):
        NpzDataset(path=str(tmp_path / "d.npz"), n_classes=3).load()


def test_unknown_and_bad_options():
    with pytest.raises(ConfigError, match=r"takes no option\(s\) \['colour'\]"):
        NpzDataset(path="x.npz", colour="red")
    with pytest.raises(ConfigError, match=r"split='dev'; choose one of all, train, test"):
        ImageFolderDataset(path="x", split="dev").load()
    with pytest.raises(ConfigError, match=r"size='big' is not an integer"):
        ImageFolderDataset(path="x", size="big").load()
    with pytest.raises(ConfigError, match=r"mode='CMYK'"):
        ImageFolderDataset(path="x", mode="CMYK").load()


# ---- typed options ----------------------------------------------------------------------
@pytest.mark.parametrize("options, message", [
    ({"n": "abc"}, r"^dataset 'synthetic': bad option value: n='abc' is not an integer$"),
    ({"noise": "loud"}, r"^dataset 'synthetic': bad option value: noise='loud' is not a number$"),
    ({"n": 2.5}, r"^dataset 'synthetic': bad option value: n=2.5 is not an integer$"),
    ({"size": "2"}, r"^dataset 'synthetic': bad option value: size=2 must be >= 4$"),
    ({"channels": "2"}, r"^dataset 'synthetic': bad option value: channels='2'; choose one of 1, 3$"),
    ({"colour": "red"}, r"^dataset 'synthetic' takes no option\(s\) \['colour'\]; it takes \['channels', "),
])
def test_bad_options_are_one_line_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        Synthetic(**options)


def test_options_are_typed_and_the_identity_keeps_them_as_given(tmp_path):
    ds = Synthetic(n="12", noise="0.5")
    assert (ds.opts.n, ds.opts.classes, ds.opts.noise) == (12, 6, 0.5)  # parsed, defaults filled in
    assert ds.identity() == {"name": "synthetic", "options": {"n": "12", "noise": "0.5"}}  # no defaults added
    assert Synthetic(n=12, noise=0.5).identity() == ds.identity()
    assert Synthetic.option_names() == ("n", "classes", "size", "channels", "noise", "seed")
    cifar = Cifar10(root=tmp_path, download="Yes", split="TEST")
    assert cifar.opts.download is True and cifar.opts.split == "test"
    assert cifar.identity()["options"] == {"split": "TEST"} and cifar.io_identity() == {"download": "Yes"}
    with pytest.raises(ConfigError, match=r"^dataset 'cifar10': bad option value: download='maybe' is not true/false$"):
        Cifar10(download="maybe")
    assert NpzDataset(path=tmp_path / "d.npz").opts.path == str(tmp_path / "d.npz")  # a Path for a str option
    assert ImageFolderDataset(mode="l").opts.mode == "L" and ImageFolderDataset().opts.size is None


def test_malformed_options_class_fails_at_registration():
    class NoDefault(Dataset):
        name, description = "nodefault", "an option without a default"

        @dataclass(frozen=True)
        class Options:
            size: int

        def load(self):
            raise NotImplementedError

    class ListOption(NoDefault):
        name = "listoption"

        @dataclass(frozen=True)
        class Options:
            sizes: tuple = param((), "not a bool, int, float or str")

    for cls in (NoDefault, ListOption):
        with pytest.raises(PluginError, match=rf"dataset '{cls.name}': every field of `Options` needs a default"):
            cls.check_class()
    Synthetic.check_class()


# ---- image folders --------------------------------------------------------------------------
CLASSES = ("cat", "ant", "bee")  # written unsorted: labels must follow the sorted names


def colour(cls: str, k: int) -> tuple[int, int, int]:
    return (40 * CLASSES.index(cls) + 10, 7 * k, 200)


def png_bytes(rgb: tuple[int, int, int], size: tuple[int, int] = (8, 8), fmt: str = "PNG") -> bytes:
    b = io.BytesIO()
    Image.new("RGB", size, rgb).save(b, fmt)
    return b.getvalue()


def folder_files(per_split: dict[str, int] | None = None, flat: int = 0) -> dict[str, bytes]:
    """Relative path -> bytes for a split/class/img tree (or class/img when ``flat``)."""
    files = {}
    if flat:
        for c in CLASSES:
            for k in range(flat):
                files[f"{c}/{k}.png"] = png_bytes(colour(c, k))
        return files
    for split, n in (per_split or {"train": 3, "test": 2}).items():
        for c in CLASSES:
            for k in range(n):
                files[f"{split}/{c}/{k}.png"] = png_bytes(colour(c, k))
    return files


def write_dir(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def write_tar(path: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    with tarfile.open(path, "w:gz" if path.name.endswith("gz") else "w") as tf:
        for rel, data in reversed(list(files.items())):  # archive order must not matter
            info = tarfile.TarInfo(prefix + rel)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def check_tree(data, n_train=3, n_test=2) -> None:
    assert data.x.dtype == np.uint8 and data.x.shape == (3 * (n_train + n_test), 8, 8, 3)
    assert data.class_names == ("ant", "bee", "cat") and data.n_classes == 3
    y = [0] * n_train + [1] * n_train + [2] * n_train + [0] * n_test + [1] * n_test + [2] * n_test
    np.testing.assert_array_equal(data.y, y)
    np.testing.assert_array_equal(data.train_mask, [True] * 3 * n_train + [False] * 3 * n_test)
    assert tuple(data.x[0, 0, 0]) == colour("ant", 0) and tuple(data.x[n_train, 0, 0]) == colour("bee", 0)
    assert tuple(data.x[3 * n_train + 1, 4, 4]) == colour("ant", 1)


def test_imagefolder_directory(tmp_path, cache):
    root = write_dir(tmp_path / "imgs", folder_files())
    check_tree(ImageFolderDataset(path=str(root)).load())
    train = ImageFolderDataset(path=str(root), split="train").load()
    assert len(train) == 9 and train.train_mask.all()


@pytest.mark.parametrize("name, prefix", [("imgs.tar.gz", ""), ("imgs.tgz", "wrapped/"), ("imgs.tar", "./")])
def test_imagefolder_archive_matches_directory(tmp_path, cache, name, prefix):
    files = folder_files()
    files["README.txt"] = b"ignored"
    files["train/cat/._0.png"] = b"macOS resource fork, ignored"
    archive = write_tar(tmp_path / name, files, prefix)
    data = ImageFolderDataset(path=str(archive)).load()
    check_tree(data)
    ref = ImageFolderDataset(path=str(write_dir(tmp_path / "d", folder_files()))).load()
    np.testing.assert_array_equal(data.x, ref.x)


def test_imagefolder_flat_layout_is_all_train(tmp_path, cache):
    data = ImageFolderDataset(path=str(write_dir(tmp_path / "flat", folder_files(flat=2)))).load()
    assert data.x.shape == (6, 8, 8, 3) and data.train_mask.all()
    np.testing.assert_array_equal(data.y, [0, 0, 1, 1, 2, 2])
    with pytest.raises(DataError, match=r"has no test images"):
        ImageFolderDataset(path=str(tmp_path / "flat"), split="test").load()


def test_imagefolder_val_counts_as_test_and_jpeg_grey_mode(tmp_path, cache):
    files = {f"{s}/{c}/{k}.jpeg": png_bytes(colour(c, k), fmt="JPEG")
             for s, n in (("train", 2), ("val", 1)) for c in CLASSES for k in range(n)}
    data = ImageFolderDataset(path=str(write_dir(tmp_path / "j", files)), mode="L").load()
    assert data.x.shape == (9, 8, 8, 1) and data.train_mask.sum() == 6


def test_imagefolder_resizes_mixed_sizes_with_size_option(tmp_path, cache):
    files = folder_files()
    files["train/ant/big.png"] = png_bytes((1, 2, 3), (20, 12))
    root = write_dir(tmp_path / "m", files)
    data = ImageFolderDataset(path=str(root), size="6").load()
    assert data.x.shape == (16, 6, 6, 3)


def test_imagefolder_mixed_sizes_name_the_first_offender(tmp_path, cache):
    files = folder_files()
    files["train/bee/zz.png"] = png_bytes((1, 2, 3), (20, 12))
    files["train/cat/zz.png"] = png_bytes((1, 2, 3), (5, 5))
    root = write_dir(tmp_path / "m", files)
    with pytest.raises(DataError, match=r"train/bee/zz\.png is 20x12 but .*train/ant/0\.png is 8x8.*size=N"):
        ImageFolderDataset(path=str(root)).load()


def test_imagefolder_unreadable_image_is_named(tmp_path, cache):
    files = folder_files()
    files["test/bee/1.png"] = png_bytes((1, 2, 3))[:30]  # truncated
    with pytest.raises(DataError, match=r"cannot decode image .*test/bee/1\.png"):
        ImageFolderDataset(path=str(write_dir(tmp_path / "u", files))).load()
    archive = write_tar(tmp_path / "u.tar.gz", files)
    with pytest.raises(DataError, match=r"cannot decode image .*u\.tar\.gz:test/bee/1\.png"):
        ImageFolderDataset(path=str(archive)).load()


def test_imagefolder_layout_errors(tmp_path, cache):
    files = folder_files()
    del files["test/cat/0.png"], files["test/cat/1.png"]
    with pytest.raises(DataError, match=r"split folder 'test' of .* lacks class folder\(s\) cat"):
        ImageFolderDataset(path=str(write_dir(tmp_path / "a", files))).load()
    mixed = folder_files()
    mixed["extra/x.png"] = png_bytes((0, 0, 0))
    with pytest.raises(DataError, match=r"mixes split folders \(test, train\) with other folders \(extra\)"):
        ImageFolderDataset(path=str(write_dir(tmp_path / "b", mixed))).load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no .*images found in .*empty"):
        ImageFolderDataset(path=str(tmp_path / "empty")).load()


def test_imagefolder_missing_or_broken_source(tmp_path, cache):
    with pytest.raises(DataError, match=r"image folder .*nothere\.tar\.gz not found"):
        ImageFolderDataset(path=str(tmp_path / "nothere.tar.gz")).load()
    archive = write_tar(tmp_path / "t.tar.gz", folder_files())
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cannot read archive .*t\.tar\.gz.*truncated"):
        ImageFolderDataset(path=str(archive)).load()
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match=r"neither a folder nor a \.tar"):
        ImageFolderDataset(path=str(tmp_path / "x.txt")).load()


def test_imagefolder_second_load_comes_from_the_cache(tmp_path, cache, monkeypatch):
    root = write_dir(tmp_path / "c", folder_files())
    archive = write_tar(tmp_path / "c.tar.gz", folder_files())
    first = [ImageFolderDataset(path=str(p)).load() for p in (root, archive)]
    assert len(cache_files(cache)) == 2

    def fail(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(_decode, "_decode_one", fail)
    for p, ref in zip((root, archive), first):
        again = ImageFolderDataset(path=str(p)).load()
        np.testing.assert_array_equal(again.x, ref.x)
        np.testing.assert_array_equal(again.y, ref.y)
        assert again.class_names == ref.class_names
    # a changed file changes the key: decoded again
    (root / "train/ant/0.png").write_bytes(png_bytes((9, 9, 9)))
    os.utime(root / "train/ant/0.png", ns=(1, 1))
    with pytest.raises(AssertionError, match="decoded again"):
        ImageFolderDataset(path=str(root)).load()


def test_imagefolder_process_pool_matches_serial(tmp_path, cache, monkeypatch):
    files = {f"train/{c}/{k}.png": png_bytes(colour(c, k)) for c in CLASSES for k in range(6)}
    files["train/bee/odd.png"] = png_bytes((1, 2, 3), (9, 8))
    root = write_dir(tmp_path / "p", files)
    serial = ImageFolderDataset(path=str(root), size=8).load()
    monkeypatch.setattr(_decode, "PROCESS_MIN_IMAGES", 0)
    monkeypatch.setattr(_decode, "CHUNK", 4)
    monkeypatch.setattr(_decode, "_workers", lambda: 2)
    monkeypatch.setenv("CLUSTERBENCH_CACHE", str(tmp_path / "other-cache"))
    parallel = ImageFolderDataset(path=str(root), size=8).load()
    np.testing.assert_array_equal(parallel.x, serial.x)
    with pytest.raises(DataError, match=r"train/bee/odd\.png is 9x8 but"):
        ImageFolderDataset(path=str(root)).load()
