"""Shared fixtures: keep every test away from the user's caches and displays.

Plain helpers the CLI tests share (reading tables, error lines, records) are in ``helpers.py``.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")  # before anything imports matplotlib


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """A private CLUSTERBENCH_CACHE per test, a headless matplotlib backend."""
    monkeypatch.setenv("CLUSTERBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("CLUSTERBENCH_DISABLE_PLUGINS", raising=False)


@pytest.fixture(scope="module")
def one_faiss_thread():
    """faiss's OpenMP threads spin-wait: on a busy 2-core machine k-means gets 10x slower.

    Modules that run k-means many times use it: ``pytestmark = pytest.mark.usefixtures("one_faiss_thread")``.
    """
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture
def fit_through_cli(tmp_path):
    """Run one deep method for 4 steps on tiny synthetic data through ``clusterbench run``;
    check its record (done, every protocol scored) and return it."""
    import json
    import math

    from clusterbench.cli import main

    def fit(spec: str, method: str) -> dict:
        rc = main(["run", "--methods", spec, "--datasets", "synthetic[n=96,size=16]", "--seeds", "0",
                   "--budget", "steps=4", "--device", "cpu", "--results", str(tmp_path)])
        assert rc == 0
        records = [json.loads(p.read_text()) for p in tmp_path.rglob("record.json")]
        records = [r for r in records if isinstance(r, dict) and r.get("method") == method]
        assert len(records) == 1, f"expected one {method} run record"
        rec = records[0]
        assert rec["status"] == "done"
        protos = rec["protocols"]
        assert {"head", "kmeans", "linear"} <= set(protos)
        for name in ("head", "kmeans"):
            assert all(math.isfinite(protos[name][k]) for k in ("acc", "nmi", "ari"))
        assert 0.0 <= protos["linear"]["accuracy"] <= 1.0
        return rec

    return fit
