"""Loss building blocks shared by contrastive methods (pure functions, fp32 inside)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised-temperature cross entropy (SimCLR) between paired rows of ``a`` and ``b``.

    Each of the 2n rows is classified among the other 2n-1 rows, its partner in the other
    view being the positive; rows are L2-normalised so similarities are cosines.  Equal to
    the official CC ``InstanceLoss``/``ClusterLoss`` (cross entropy summed, divided by 2n).
    """
    n = a.shape[0]
    z = F.normalize(torch.cat([a, b]).float(), dim=1)
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.arange(2 * n, device=z.device).roll(n)  # made on the device: no host copy per step
    return F.cross_entropy(sim, target)


def neg_entropy_of_mean(p: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """log K - H(mean assignment): 0 when clusters are used uniformly, log K when one takes all.

    Minimising it is the entropy term that keeps contrastive clustering from collapsing.
    """
    q = p.float().sum(0)
    q = q / q.sum()
    return math.log(p.shape[1]) + (q * torch.log(q + eps)).sum()
