"""Shared fixtures: keep every test away from the user's caches and displays."""

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
