"""``--shard I/N``: a deterministic part of a grid, for machines that share no scheduler.

Cells are dealt round robin in grid order (cell ``k`` goes to shard ``k % N + 1``), so the N
shards of one grid are disjoint, cover it, and differ in size by at most one cell; the same
grid always splits the same way.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

from clusterbench.errors import ConfigError

T = TypeVar("T")


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> (2, 4); shards are numbered from 1."""
    i, sep, n = str(text).partition("/")
    try:
        index, count = int(i), int(n)
    except ValueError:
        index = count = 0
    if not sep or count < 1 or not 1 <= index <= count:
        raise ConfigError(f"--shard {text}: expected I/N with 1 <= I <= N, e.g. --shard 1/4")
    return index, count


def shard(items: Sequence[T], index: int, count: int) -> list[T]:
    """The ``index``-th of ``count`` round-robin parts of ``items`` (1-based)."""
    return list(items[index - 1::count])
