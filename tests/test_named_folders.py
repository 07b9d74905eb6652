"""Datasets under their own names (issue 12.3): ``cifar10[path=FOLDER_OR_ARCHIVE]`` is cifar10.

Tiny folders and archives built here (never the real data): 10 CIFAR-10 class folders of
8x8 PNGs, in ``train/`` and ``test/``.
"""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
from PIL import Image

from clusterbench import ConfigError, DataError
from clusterbench.cli import main
from clusterbench.datasets import _named
from clusterbench.datasets.torchvision_sets import CIFAR10_CLASSES, Cifar10, Cifar100Superclasses, Mnist
from helpers import error_lines, table_rows


def make_tree(root, classes, per_split=(3, 2), mode="RGB"):
    """split/class/i.png; image k of class c is filled with value 10*c + k (to check labels)."""
    for split, n in zip(("train", "test"), per_split):
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True)
            for k in range(n):
                shape = (8, 8) if mode == "L" else (8, 8, 3)
                Image.fromarray(np.full(shape, 20 * c + k, np.uint8), mode).save(d / f"{k}.png")
    return root


def archive(tree, path):
    with tarfile.open(path, "w:gz") as tf:
        tf.add(tree, arcname="cifar10")
    return path


@pytest.fixture
def cifar_tree(tmp_path, monkeypatch):
    monkeypatch.setenv("CLUSTERBENCH_CACHE", str(tmp_path / "cache"))
    return make_tree(tmp_path / "tree", CIFAR10_CLASSES)


def test_folder_and_archive_read_as_cifar10_in_its_label_order(cifar_tree, tmp_path):
    tar = archive(cifar_tree, tmp_path / "c10.tar.gz")
    for path in (cifar_tree, tar):
        data = Cifar10(path=str(path)).load()
        assert data.name == "cifar10" and data.n_classes == 10 and data.class_names == CIFAR10_CLASSES
        assert len(data) == 50 and data.train_mask.sum() == 30
        assert np.array_equal(data.x[:, 0, 0, 0] // 20, data.y)  # truck's folder -> label 9, as in the files
        assert data.variant == "image files, unverified"  # not known to be the original files
    assert Cifar10(path=str(tar), variant="PNG copy").load().variant == "PNG copy"
    assert Cifar10(path=str(tar), split="test").load().y.shape == (20,)


def test_known_archive_and_data_digests_name_the_variant(cifar_tree, tmp_path, monkeypatch):
    tar = archive(cifar_tree, tmp_path / "c10.tar.gz")
    monkeypatch.setitem(_named.KNOWN_VARIANTS, _named._sha256(tar), "JPEG re-encode")
    data = Cifar10(path=str(tar)).load()
    assert data.variant == "JPEG re-encode"
    monkeypatch.setitem(_named.KNOWN_VARIANTS, data.digest(), "JPEG re-encode (extracted)")
    assert Cifar10(path=str(cifar_tree)).load().variant == "JPEG re-encode (extracted)"  # same data, a folder
    # the shared archive's digest is listed, so the real file is recognised without an option
    assert _named.KNOWN_VARIANTS["b8064bfae058ced272f37ae0d7bb675ed74e5b6071c06dfd0e4e8ff12d1cf1de"] == \
        "JPEG re-encode"


def test_wrong_classes_and_unsupported_benchmarks_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("CLUSTERBENCH_CACHE", str(tmp_path / "cache"))
    tree = make_tree(tmp_path / "t", [*CIFAR10_CLASSES[:9], "lorry"], per_split=(1, 1))
    with pytest.raises(DataError, match=r"has 10 class folder\(s\), but cifar10 has the 10 classes airplane, .*; "
                                        r"unexpected: lorry; missing: truck$"):
        Cifar10(path=str(tree)).load()
    with pytest.raises(ConfigError, match="cannot be read from an image folder"):
        Cifar100Superclasses(path=str(tree))
    assert "path" not in Cifar100Superclasses.option_names() and "path" in Cifar10.option_names()
    grey = make_tree(tmp_path / "m", [str(i) for i in range(10)], per_split=(1, 1), mode="L")
    mn = Mnist(path=str(grey)).load()
    assert mn.name == "mnist" and mn.x.shape == (20, 8, 8, 1) and np.array_equal(mn.x[:, 0, 0, 0] // 20, mn.y)


def test_cli_table_is_titled_cifar10_with_the_variant_and_paper_rows(cifar_tree, tmp_path, capsys):
    tar = archive(cifar_tree, tmp_path / "c10.tar.gz")
    plugin = tmp_path / "paper.py"
    plugin.write_text("from clusterbench import hookimpl\n@hookimpl\ndef clusterbench_reported_results():\n"
                      "    return [{'method': 'kmeans', 'dataset': 'cifar10', 'protocol': 'head', "
                      "'citation': 'a k-means paper', 'metrics': {'acc': 0.2}}]\n")
    res = tmp_path / "res"
    assert main(["run", "--methods", "kmeans[nredo=1]", "--datasets", f"cifar10[path={tar},variant=PNG copy]",
                 "--seeds", "0", "--results", str(res), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["--plugin", str(plugin), "report", "--results", str(res), "--paper"]) == 0
    out = capsys.readouterr().out
    assert "### cifar10\n" in out and "Data: cifar10 (PNG copy), not the original files." in out
    rows = table_rows(out, "cifar10")
    assert rows["*kmeans (reported)*"]["ACC"].startswith("0.200 (Δ ")  # k-means is paper-text: a Δ


def test_cli_missing_folder_is_one_line(tmp_path, capsys):
    rc = main(["run", "--methods", "kmeans", "--datasets", f"cifar10[path={tmp_path / 'nope.tar.gz'}]",
               "--results", str(tmp_path / "r"), "--quiet"])
    assert rc == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "image folder" in line and "nope.tar.gz not found" in line
