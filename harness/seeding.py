"""Seeding: one seed per cell drives python, numpy and torch, so a rerun reproduces it."""

from __future__ import annotations

import hashlib
import random

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (CPU and every GPU)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)  # also seeds every CUDA device


def derived_seed(seed: int, *axes: str) -> int:
    """A 31-bit seed for one component of a cell (e.g. the k-means of the eval protocol),
    independent of the others yet fixed by the cell's seed."""
    h = hashlib.sha256(("/".join([str(seed), *axes])).encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF
