"""A third-party plugin package, built and pip-installed here, is found like the built-ins.

The package is installed with ``pip install --target`` into a temporary directory that
only the subprocesses see (PYTHONPATH), so nothing is left in the environment.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import subprocess_env

PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "cb-myplug"
version = "0.3.1"
description = "a third-party clusterbench plugin (test fixture)"
requires-python = ">=3.10"

[project.entry-points.clusterbench]
myplug = "cb_myplug"

[tool.setuptools]
py-modules = ["cb_myplug"]
"""

MODULE = '''\
"""A toy clustering method: buckets of mean image brightness."""
from dataclasses import dataclass

import numpy as np

from clusterbench import ImageData, Method, hookimpl, param


class Toy(Method):
    name = "toy"
    description = "toy: quantiles of mean brightness (third-party test plugin)"
    paper = "nobody, 2024"
    quick = False
    transductive = False

    @dataclass(frozen=True)
    class Params:
        n_clusters: int = param(0, "clusters; 0 = the number of classes")

    def fit(self, data: ImageData, ctx) -> None:
        self.k = self.params.n_clusters or data.n_classes
        b = data.x.reshape(len(data), -1).mean(1)
        self.edges = np.quantile(b, np.linspace(0, 1, self.k + 1)[1:-1])

    def predict(self, data: ImageData) -> np.ndarray:
        b = data.x.reshape(len(data), -1).mean(1)
        return np.searchsorted(self.edges, b).astype(np.int64)


@hookimpl
def clusterbench_methods():
    return [Toy]
'''


def _env(site: Path | None) -> dict[str, str]:
    env = subprocess_env()
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONWARNINGS"] = "ignore::DeprecationWarning"
    return env


def _cli(args: list[str], site: Path | None, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clusterbench.cli", *args], cwd=cwd, env=_env(site),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """Build the plugin from its pyproject.toml and pip-install it into a private directory."""
    root = tmp_path_factory.mktemp("thirdparty")
    src = root / "cb-myplug"
    src.mkdir()
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "cb_myplug.py").write_text(MODULE)
    site = root / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--no-cache-dir", "--quiet", "--target", str(site), str(src)],
        capture_output=True, text=True, timeout=300, env=_env(None), cwd=root,
    )
    if proc.returncode != 0:
        pytest.fail(f"pip install of the test plugin failed:\n{proc.stdout}\n{proc.stderr}")
    dist_info = list(site.glob("cb_myplug-0.3.1.dist-info"))
    assert dist_info, sorted(p.name for p in site.iterdir())
    assert "myplug = cb_myplug" in (dist_info[0] / "entry_points.txt").read_text()
    return site


def test_installed_plugin_is_listed_with_its_provider(plugin_site, tmp_path):
    proc = _cli(["list", "methods"], plugin_site, tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("toy ")), None)
    assert line is not None, proc.stdout
    assert "third-party test plugin" in line
    assert re.search(r"cb[-_]myplug 0\.3\.1 \(cb_myplug\)", line), line
    assert re.search(r"^kmeans\s", proc.stdout, re.M)  # built-ins still there


def test_the_plugin_is_not_visible_outside_the_subprocess():
    """The install went to a private directory: this process does not see the plugin."""
    import warnings

    from clusterbench.plugins import load_registry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reg = load_registry()
    assert "toy" not in reg.methods and "myplug" not in reg.pm.list_name_plugin()


def test_installed_plugin_runs_and_is_recorded(plugin_site, tmp_path, capsys):
    results = tmp_path / "res"
    proc = _cli(["run", "--methods", "toy", "--datasets", "synthetic[n=60]", "--seeds", "0",
                 "--results", str(results), "--quiet"], plugin_site, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "| toy " in proc.stdout
    records = sorted(results.glob("runs/*/record.json"))
    assert [p.parent.name.split("--")[:3] for p in records] == [["toy", "synthetic", "s0"]]
    rec = json.loads(records[0].read_text())
    assert rec["status"] == "done"
    assert rec["method"] == "toy" and rec["seed"] == 0
    assert rec["dataset"]["name"] == "synthetic" and rec["dataset"]["options"] == {"n": "60"}
    assert re.fullmatch(r"cb[-_]myplug 0\.3\.1 \(cb_myplug\)", rec["method_provider"])
    assert rec["paper"] == "nobody, 2024"
    head = rec["protocols"]["head"]
    assert 0 <= head["acc"] <= 1 and head["n_clusters"] <= 6
    assert (records[0].parent / "labels.npy").is_file()
    # the report reads it back through the normal path
    from clusterbench.cli import main

    assert main(["report", "--results", str(results), "--format", "csv"]) == 0
    assert "synthetic,toy,head" in capsys.readouterr().out


def test_handwritten_dist_info_is_discovered_too(tmp_path):
    """What pip wrote is all discovery needs: a dist-info with entry_points.txt on the path."""
    site = tmp_path / "site"
    dist = site / "cb_handmade-2.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cb-handmade\nVersion: 2.0\n")
    (dist / "entry_points.txt").write_text("[clusterbench]\nhandmade = cb_handmade\n")
    (site / "cb_handmade.py").write_text(MODULE.replace('name = "toy"', 'name = "handmade-toy"'))
    proc = _cli(["info", "handmade-toy"], site, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "provider: cb-handmade 2.0 (cb_handmade)" in proc.stdout
    assert "n_clusters" in proc.stdout
