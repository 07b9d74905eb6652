"""Helpers the CLI tests share: read what ``clusterbench`` printed and wrote.

Plain functions rather than fixtures, so parametrised tests and subprocess helpers can
call them directly (``from helpers import error_lines``).
"""

from __future__ import annotations

import json
import os
import shutil
from importlib.metadata import entry_points
from pathlib import Path


def table_rows(markdown: str, dataset: str) -> dict[str, dict[str, str]]:
    """The rows of one dataset's markdown leaderboard, keyed by method."""
    # the leaderboard only: up to the next dataset or the tables under it (#### ...)
    section = markdown.split(f"### {dataset}\n", 1)[1].split("\n### ", 1)[0].split("\n#### ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for ln in lines[2:]:
        row = dict(zip(header, (c.strip() for c in ln.strip("|").split("|"))))
        rows[row["Method"]] = row
    return rows


def mean_of(cell: str) -> float:
    """``**0.792 ± 0.003**`` -> 0.792."""
    return float(cell.strip("*").split("±")[0])


def error_lines(stderr: str) -> list[str]:
    """stderr without warnings (about unrelated plugins, say) and their continuation lines."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("clusterbench: warning:")
            and "Warning" not in ln and not ln.startswith("  ")]


def snapshot(results: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of every run: (mtime, bytes), to tell what a command changed."""
    return {str(p.relative_to(results)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(results.glob("runs/*/*")) if p.is_file()}


def records_in(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("runs/*/record.json"))]


def copy_results(src: Path, dst: Path) -> Path:
    """A copy of a results directory that a test may break, without the source's lock files."""
    shutil.copytree(src, dst)
    for lock in dst.glob("runs/*/.lock"):
        lock.unlink()
    return dst


def subprocess_env(keep: tuple[str, ...] = ("kmeans", "digits", "synthetic"), **extra: str) -> dict[str, str]:
    """The environment of a ``clusterbench`` subprocess: only the plugins in ``keep`` enabled (the
    others, deep methods among them, would import torch/timm for nothing), one OpenMP thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CB_TEST_")}
    env["OMP_NUM_THREADS"] = "1"
    env["CLUSTERBENCH_DISABLE_PLUGINS"] = ",".join(
        ep.name for ep in entry_points(group="clusterbench") if ep.name not in keep)
    env.update(extra)
    return env
