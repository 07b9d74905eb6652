"""Shuffle-BN on one GPU: BatchNorm over groups of the batch, and a forward on a shuffled batch.

MoCo (He et al., CVPR 2020, §3.3) found that BatchNorm lets a momentum-contrast model "cheat":
the query and its positive key are normalised with statistics of the same images, so the
positive is recognisable among the queue's negatives (keys of *other* batches) by that shared
signature, and the loss falls without the features learning much.  MoCo trains on 8 GPUs with
BatchNorm per GPU and shuffles the key batch across the GPUs (``moco/builder.py``,
``_batch_shuffle_ddp`` / ``_batch_unshuffle_ddp``), so a query's BatchNorm group and its key's
share few images.  Its authors' one-GPU CIFAR-10 demo (``colab/moco_cifar10_demo.ipynb``,
``--bn-splits 8``) simulates that: every BatchNorm of both encoders normalises over 8 groups of
the batch (``SplitBatchNorm``), and the key encoder sees the batch shuffled.  The pieces here:

- :class:`SplitBatchNorm2d` / :func:`split_batchnorm`: BatchNorm2d whose training statistics
  are those of ``splits`` equal groups of the *global* batch, contiguous blocks of rows (the
  demo interleaves its groups through a reshape; which rows go together makes no difference
  once the batch order is random, and blocks keep each group on one rank: under torchrun each
  rank holds ``splits / world_size`` whole groups, normalised locally, so W ranks give the
  single-process numbers).  Running statistics: the mean over the groups of what BatchNorm2d
  would keep for each (the demo's ``running_mean_split.view(S, C).mean(0)``), over every rank's
  groups under torchrun (one small gather per layer and step), so the ranks keep the same.  It is not a
  ``_BatchNorm`` subclass on purpose: ``SyncBatchNorm.convert_sync_batchnorm`` (what the
  engine applies under torchrun) leaves it alone.
- :func:`shuffled_forward`: ``fn`` applied to a random permutation of the global batch, its
  outputs put back in the original order (MoCo's shuffle; under torchrun across the ranks,
  like ``_batch_shuffle_ddp``: the inputs are gathered, each rank runs its slice of the
  permutation).  The permutation is ``argsort`` of uniform draws from the default generator,
  seeded alike on every rank (see :mod:`clusterbench.train.distributed`), so every rank and a
  single process draw the same one; ``argsort(rand)`` rather than ``randperm`` because it is
  plainly capturable in a CUDA graph.

Both are shape-static and sync-free: they work in a CUDA-graphed step and under torch.compile.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from clusterbench.errors import ConfigError
from clusterbench.train.distributed import Distributed, current

__all__ = ["SplitBatchNorm2d", "split_batchnorm", "shuffled_forward"]


class SplitBatchNorm2d(nn.Module):
    """BatchNorm2d whose training statistics come from ``splits`` groups of the global batch.

    Parameters and buffers are BatchNorm2d's, in its order (``weight``, ``bias``,
    ``running_mean``, ``running_var``, ``num_batches_tracked``), so state dicts and an EMA
    twin pair up with a plain BatchNorm2d's.  In eval mode it is BatchNorm2d.
    """

    def __init__(self, num_features: int, splits: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        if splits < 1:
            raise ValueError(f"splits must be >= 1, got {splits}")
        self.num_features, self.splits, self.eps, self.momentum = num_features, splits, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return f"{self.num_features}, splits={self.splits}, eps={self.eps}, momentum={self.momentum}"

    def local_groups(self, rows: int, dist: Distributed | None = None) -> int:
        """Groups in this rank's ``rows``: ``splits / world_size`` (each rank holds whole groups)."""
        world = (dist or current()).world_size
        if self.splits % world or rows % (self.splits // world):
            raise ConfigError(f"BatchNorm in {self.splits} groups: the number of groups must be a multiple of "
                              f"the {world} rank(s) and split each rank's {rows} rows evenly")
        return self.splits // world

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                            False, 0.0, self.eps)
        n, c = x.shape[:2]
        g = self.local_groups(n)
        dtype = torch.promote_types(x.dtype, torch.float32)  # statistics in float32 at least (bf16 autocast)
        xg = x.to(dtype).reshape(g, n // g, c, -1)  # (group, member, channel, pixel)
        mean = xg.mean(dim=(1, 3), keepdim=True)
        var = xg.var(dim=(1, 3), unbiased=False, keepdim=True)
        y = ((xg - mean) * torch.rsqrt(var + self.eps)).reshape(x.shape)
        y = y * self.weight.to(dtype).view(1, c, 1, 1) + self.bias.to(dtype).view(1, c, 1, 1)
        with torch.no_grad():
            m = xg.shape[1] * xg.shape[3]  # values per channel and group
            stats = torch.cat([mean.reshape(g, c).mean(0), var.reshape(g, c).mean(0) * (m / max(1, m - 1))])
            stats = current().gather(stats.unsqueeze(0)).mean(0)  # over every rank's groups (equal counts)
            self.running_mean.lerp_(stats[:c].to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_(stats[c:].to(self.running_var.dtype), self.momentum)
            self.num_batches_tracked.add_(1)
        return y.to(x.dtype)


def split_batchnorm(module: nn.Module, splits: int) -> nn.Module:
    """``module`` with every ``nn.BatchNorm2d`` replaced, in place, by a :class:`SplitBatchNorm2d`
    of ``splits`` groups carrying its weights, statistics, eps and momentum."""
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm2d:
            if child.momentum is None or not (child.affine and child.track_running_stats):
                raise ValueError(f"{name}: only affine BatchNorm2d with running statistics and a momentum")
            split = SplitBatchNorm2d(child.num_features, splits, child.eps, child.momentum)
            split.load_state_dict(child.state_dict())
            setattr(module, name, split.to(child.weight.device))
        else:
            split_batchnorm(child, splits)
    return module


def shuffled_forward(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, dist: Distributed | None = None) -> Any:
    """``fn(x)`` computed on a random permutation of the global batch, its per-row outputs (a
    tensor, or a tuple/list of them) returned in ``x``'s row order (see the module docstring)."""
    dist = dist or current()
    rows = x.shape[0]
    x_all = dist.gather(x)
    perm = torch.rand(x_all.shape[0], device=x.device).argsort()
    mine = slice(dist.rank * rows, (dist.rank + 1) * rows)
    out = fn(x_all[perm[mine]])
    inverse = perm.argsort()

    def restore(t: torch.Tensor) -> torch.Tensor:
        return dist.gather(t)[inverse][mine]

    if isinstance(out, torch.Tensor):
        return restore(out)
    return type(out)(restore(t) for t in out)
