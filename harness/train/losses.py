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


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """MoCo's InfoNCE: row i of ``q`` against its positive ``k[i]`` and the negatives.

    Negatives are the rows of ``queue`` (Q, D) when it is given and non-empty, otherwise
    the other rows of ``k`` (in-batch keys).  Rows are L2-normalised (cosines); ``k`` and
    ``queue`` get no gradient from here only if the caller detaches them.
    """
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.float(), dim=1)
    if queue is not None and queue.shape[0] > 0:
        pos = (q * k).sum(1, keepdim=True)
        neg = q @ F.normalize(queue.float(), dim=1).t()
        logits = torch.cat([pos, neg], dim=1) / temperature
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    else:
        logits = q @ k.t() / temperature
        target = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits, target)


def neg_entropy_of_mean(p: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """log K - H(mean assignment): 0 when clusters are used uniformly, log K when one takes all.

    Minimising it is the entropy term that keeps contrastive clustering from collapsing.
    """
    q = p.float().sum(0)
    q = q / q.sum()
    return math.log(p.shape[1]) + (q * torch.log(q + eps)).sum()
