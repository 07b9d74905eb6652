"""Learning-rate schedules shared by methods (``DeepMethod.lr_factor`` returns these factors)."""

from __future__ import annotations

import math

__all__ = ["warmup_cosine"]


def warmup_cosine(progress: float, warmup: float) -> float:
    """Linear warmup over the first ``warmup`` fraction of the budget, then cosine decay to 0
    (SimCLR/MoCo v3/DeiT/solo-learn's ``warmup_cosine``)."""
    p = min(1.0, max(0.0, float(progress)))
    if warmup > 0 and p < warmup:
        return p / warmup
    span = max(1e-12, 1.0 - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * (p - warmup) / span))
