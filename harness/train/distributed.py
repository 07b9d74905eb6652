"""One cell trained over several processes: ``torchrun --nproc-per-node N -m clusterbench run ...``.

Each process (rank) holds the whole model and the whole dataset on its device and trains on
its share of every step's batch; DistributedDataParallel averages the gradients.  The rule
that keeps the numbers independent of the number of ranks: the method's ``batch_size`` is the
*global* batch, and the loss is computed on the global batch on every rank.

* The data: every rank draws the same permutation; step i's global batch ``perm[i*B:(i+1)*B]``
  is cut into W contiguous slices, rank r taking slice r (:meth:`Distributed.shard`), so the
  union of the ranks' micro-batches is exactly the single-process batch, in its order.
* The loss: the model a method's ``training_loss`` receives (:class:`GatheredModel`) runs the
  DDP model on this rank's images and returns *every rank's* outputs concatenated in global
  batch order, gathered with gradients (``torch.distributed.nn.functional.all_gather``).  The
  unchanged loss code therefore sees what a single process sees: NT-Xent over all 2B rows,
  CC's cluster contrast over full-batch assignment columns, Sinkhorn over the global batch,
  the global keys for a MoCo queue.  Each rank computes the same loss; the gather's backward
  sums the W identical gradients and DDP's average divides by W: the single-process gradient.
* BatchNorm normalises with the global batch's statistics (``SyncBatchNorm``; on the CPU,
  where torch's needs a GPU, ``AllReduceBatchNorm``), so running statistics are the
  same on every rank and buffers need no broadcast (``broadcast_buffers=False``: a momentum
  queue is kept identical by enqueueing the gathered keys, not by copying rank 0's).
* Randomness: each rank draws its own augmentations from the stream (seed, epoch, rank): other
  draws from the same distributions than one process makes, so a W-rank run equals a single
  run in distribution, and step for step only when the views are fixed (as
  ``tests/test_distributed.py`` does).  The global generator is seeded alike on every rank,
  and stays so: a loss's own draws (TCC's Gumbel noise and queue noise) are made on the
  gathered global batch, so every rank draws what one process would, and the ranks' losses
  stay identical.  (A forward that drew per image -- dropout -- would repeat one rank's
  pattern on every rank; no built-in method does.)
* Only rank 0 writes the record, labels and checkpoints (:mod:`clusterbench.runner`); the
  others train with it and wait.

A method stays correct under DDP as long as everything its loss needs that depends on the
batch comes out of ``model(...)`` (the forward), per image and batch first; a loss that
calls submodules itself (``model.backbone(x)``) would see this rank's rows only.

torch is imported inside the functions: ``clusterbench list`` does not pay for it.
"""

from __future__ import annotations

import atexit
import datetime
import functools
import inspect
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clusterbench.errors import ConfigError, PluginError
from clusterbench.seeding import derived_seed

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = ["Distributed", "SINGLE", "current", "init_from_env", "torchrun_env", "GatheredModel"]

#: How long a rank waits in a collective (the others evaluate or write meanwhile).
TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in a distributed run; ``Distributed()`` is a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # "nccl" | "gloo" once the process group is up

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes records, labels and checkpoints."""
        return self.rank == 0

    # ---- the batch ----------------------------------------------------------------------------
    def local_batch(self, global_batch: int) -> int:
        """Images per rank and step; the global batch must split evenly (else one-line ConfigError)."""
        if global_batch % self.world_size:
            raise ConfigError(f"batch size {global_batch} does not split over {self.world_size} ranks: "
                              f"use a batch_size divisible by {self.world_size} (it is the global batch)")
        return global_batch // self.world_size

    def shard(self, batch: "torch.Tensor") -> "torch.Tensor":
        """This rank's contiguous slice of one step's global batch of indices."""
        if not self.active:
            return batch
        b = self.local_batch(len(batch))
        return batch[self.rank * b:(self.rank + 1) * b]

    def augment_seed(self, seed: int, epoch: int) -> int:
        """The seed of this rank's augmentation stream in ``epoch`` (nothing to checkpoint)."""
        return derived_seed(seed, "augment", f"epoch{epoch}", f"rank{self.rank}")

    # ---- the model ------------------------------------------------------------------------------
    def sync_batchnorm(self, model: "nn.Module") -> "nn.Module":
        """BatchNorm over the global batch: SyncBatchNorm on GPUs, ``AllReduceBatchNorm`` on the CPU."""
        if not self.active:
            return model
        import torch.nn as nn

        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if self.backend == "gloo":
            for m in model.modules():
                if type(m) is nn.SyncBatchNorm:
                    m.__class__ = _autograd().AllReduceBatchNorm
        return model

    def data_parallel(self, model: "nn.Module") -> "nn.Module":
        """``model`` in DistributedDataParallel (rank 0's weights broadcast once), or itself."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        # buffers synced once at init, not before every forward (2.14 renamed broadcast_buffers)
        no_forward_sync = ({"forward_sync_buffers": False}
                           if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                           else {"broadcast_buffers": False})
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                       **no_forward_sync)

    def for_loss(self, step_model: Any, model: "nn.Module") -> Any:
        """What ``training_loss`` receives: the model itself, or a :class:`GatheredModel`."""
        return GatheredModel(step_model, model, self) if self.active else step_model

    # ---- collectives ----------------------------------------------------------------------------
    def gather(self, t: "torch.Tensor") -> "torch.Tensor":
        """Every rank's ``t`` concatenated along dim 0 in rank order, with gradients when ``t`` has them."""
        if not self.active:
            return t
        import torch
        import torch.distributed as dist

        if t.requires_grad:
            return _autograd().GatherRows.apply(t)
        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts, 0)

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on one (decisions that read a rank's own clock)."""
        if not self.active:
            return flag
        import torch.distributed as dist

        t = self._scalar(float(flag))
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast(self, value: float) -> float:
        """Rank 0's ``value`` on every rank."""
        if not self.active:
            return value
        import torch.distributed as dist

        t = self._scalar(value)
        dist.broadcast(t, 0)
        return float(t.item())

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's (picklable) ``obj`` on every rank."""
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, 0)
        return box[0]

    def _scalar(self, value: float) -> "torch.Tensor":
        import torch

        device = f"cuda:{self.local_rank}" if self.backend == "nccl" else "cpu"
        return torch.tensor([value], dtype=torch.float64, device=device)


SINGLE = Distributed()
_current = SINGLE


def current() -> Distributed:
    """This process's place in the run (a single process unless :func:`init_from_env` set one up)."""
    return _current


def torchrun_env() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from torchrun's environment, or None outside torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None


def init_from_env(device: str) -> tuple[Distributed, str]:
    """Under torchrun with WORLD_SIZE > 1: join the process group (nccl on CUDA, gloo on the CPU) and
    return this process's :class:`Distributed` and device (``cuda:LOCAL_RANK`` for ``cuda``/``auto``).
    Elsewhere (or with one process): ``(SINGLE, device)`` unchanged."""
    global _current
    env = torchrun_env()
    if env is None or env[1] <= 1:
        return SINGLE, device
    rank, world, local = env
    import torch
    import torch.distributed as dist

    if device.startswith("cuda"):
        if device not in ("cuda", f"cuda:{local}"):
            raise ConfigError(f"--device {device}: under torchrun each rank uses cuda:LOCAL_RANK; pass --device "
                              "cuda (or auto)")
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) are visible")
        torch.cuda.set_device(local)
        device, backend = f"cuda:{local}", "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT)
        atexit.register(dist.destroy_process_group)
    _current = Distributed(rank, world, local, backend)
    return _current, device


def use(d: Distributed) -> None:
    """Make ``d`` this process's :func:`current` (tests that set up the process group themselves)."""
    global _current
    _current = d


class GatheredModel:
    """The model as ``training_loss`` sees it in a distributed run.

    Calling it runs the (DDP, maybe compiled) model on this rank's images and returns every
    rank's outputs, batch first, concatenated in global batch order (gathered with gradients);
    any other attribute (``model.queue``, ``model.enqueue``) is the underlying module's.
    """

    def __init__(self, step_model: Any, module: "nn.Module", dist: Distributed) -> None:
        self._step_model, self._module, self._dist = step_model, module, dist

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch

        local = next((a.shape[0] for a in args if isinstance(a, torch.Tensor)), None)
        return self._gather(self._step_model(*args, **kwargs), local)

    def _gather(self, out: Any, local: int | None) -> Any:
        import torch

        if isinstance(out, torch.Tensor):
            if out.ndim == 0 or (local is not None and out.shape[0] != local):
                raise PluginError(f"in a distributed run every tensor the model returns must be per image, batch "
                                  f"first (batch {local}); got shape {tuple(out.shape)}")
            return self._dist.gather(out)
        if isinstance(out, (tuple, list)):
            return type(out)(self._gather(o, local) for o in out)
        if isinstance(out, dict):
            return {k: self._gather(v, local) for k, v in out.items()}
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


@functools.cache
def _autograd() -> Any:
    """The autograd-aware collectives and the CPU SyncBatchNorm, built on first use (they need torch).

    Own Functions rather than ``torch.distributed.nn.functional`` (deprecated in torch 2.14,
    its successor not in 2.4): gather rows / sum over ranks, each backward being the adjoint
    of its forward, which is what makes "every rank computes the same global loss" exact.
    """
    import types

    import torch
    import torch.distributed as dist
    from torch.nn.modules.batchnorm import _BatchNorm

    class GatherRows(torch.autograd.Function):
        """Every rank's rows, concatenated in rank order; backward: the sum over ranks of the
        gradient of this rank's rows (the adjoint of the gather)."""

        @staticmethod
        def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
            parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, t.contiguous())
            ctx.rows = t.shape[0]
            return torch.cat(parts, 0)

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            grad = grad.contiguous().clone()
            dist.all_reduce(grad)
            r = dist.get_rank()
            return grad[r * ctx.rows:(r + 1) * ctx.rows]

    class SumOverRanks(torch.autograd.Function):
        """The sum of every rank's ``t`` on every rank; backward: the same sum of the gradients."""

        @staticmethod
        def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
            t = t.clone()
            dist.all_reduce(t)
            return t

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            grad = grad.contiguous().clone()
            dist.all_reduce(grad)
            return grad

    class AllReduceBatchNorm(_BatchNorm):
        """SyncBatchNorm for CPU tensors (torch's needs a GPU, and DDP refuses it on CPU modules):
        the global batch's mean, then its (biased) variance, from two sums over ranks; running
        statistics as BatchNorm's.  Made from a converted SyncBatchNorm by swapping its class."""

        def _check_input_dim(self, x: torch.Tensor) -> None:
            if x.dim() < 2:
                raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
                return super().forward(x)
            self._check_input_dim(x)
            dims = [0, *range(2, x.dim())]
            shape = [1, -1] + [1] * (x.dim() - 2)
            count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype)
            total = SumOverRanks.apply(torch.cat([x.sum(dims), count]))
            n = total[-1]
            mean = total[:-1] / n
            xc = x - mean.view(shape)
            var = SumOverRanks.apply((xc * xc).sum(dims)) / n
            if self.track_running_stats:
                with torch.no_grad():
                    self.num_batches_tracked.add_(1)
                    f = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                    self.running_mean.lerp_(mean.detach(), f)
                    self.running_var.lerp_(var.detach() * n / (n - 1), f)
            y = xc * torch.rsqrt(var + self.eps).view(shape)
            if self.affine:
                y = y * self.weight.view(shape) + self.bias.view(shape)
            return y

    return types.SimpleNamespace(GatherRows=GatherRows, SumOverRanks=SumOverRanks,
                                 AllReduceBatchNorm=AllReduceBatchNorm)
