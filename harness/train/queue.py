"""A FIFO queue of past feature vectors on the device: MoCo's negatives, and TCC's past
cluster representations.

    queue = FeatureQueue(16384, 128)      # a module: its buffers travel with the model
    logits_neg = q @ queue.features.t()   # the queue's rows, L2-normalised at init and push
    queue.push(keys)                      # after the step, no host sync

``push`` writes the newest rows over the oldest through a device-side pointer, so it has no
``.item()`` and can follow a CUDA-graphed step.  When the queue's length is a multiple of
the rows pushed per step, row ``j`` of the queue always holds row ``j mod rows`` of some
past batch: TCC relies on this to know which past entry belongs to which cluster.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FeatureQueue"]


class FeatureQueue(nn.Module):
    """``size`` rows of width ``dim``, initialised to random unit vectors (as MoCo's queue)."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("features", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return self.features.shape[0]

    @torch.no_grad()
    def push(self, rows: torch.Tensor, normalize: bool = True) -> None:
        """FIFO: ``rows`` (B, dim) overwrite the oldest entries (the last ``size`` if B > size)."""
        size = len(self)
        if size == 0:
            return
        rows = rows.detach().float()
        if normalize:
            rows = F.normalize(rows, dim=1)
        rows = rows[-size:]
        idx = (self.ptr + torch.arange(rows.shape[0], device=rows.device)) % size
        self.features[idx] = rows.to(self.features.dtype)
        self.ptr.add_(rows.shape[0]).remainder_(size)
