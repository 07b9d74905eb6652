"""Optimiser and learning-rate schedule as parameters a deep method can expose.

A method whose paper fixes one optimiser (CC: constant Adam) can still be trained with
another recipe, chosen by measurement, without writing its own optimiser code: its ``Params``
subclass :class:`OptimizerParams` (redefining the four fields to cite its paper's values),
and the class mixes in :class:`OptimizerChoice` before :class:`~clusterbench.DeepMethod`.
The method then only *chooses* (``optimizer=sgd, schedule=cosine``); building the optimiser
and the schedule is here, once.

- ``optimizer``: ``adam`` (``torch.optim.Adam``, PyTorch's default betas and eps, L2 weight
  decay as Adam's own ``weight_decay``) or ``sgd`` (``torch.optim.SGD`` with ``momentum``,
  no Nesterov, L2 weight decay on every parameter, as SimCLR's and SCAN's CIFAR recipes and
  the issue-17 measurement); fused kernels on the GPU, so a scheduled step can be a CUDA graph.
- ``schedule``: ``constant`` (factor 1) or ``cosine`` (half a cosine from 1 to 0 over the
  budget, :func:`~clusterbench.warmup_cosine`); either after a linear warm-up over the
  first ``warmup`` fraction of the budget (0: none).  Progress is the engine's fraction of the
  budget at each step, so the lr reaches 0 exactly where the budget ends.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Iterable

import torch
from torch import nn

from clusterbench.api import param
from clusterbench.errors import PluginError
from clusterbench.train.deep import DeepParams
from clusterbench.train.schedule import warmup_cosine

__all__ = ["OPTIMIZERS", "SCHEDULES", "OptimizerParams", "OptimizerChoice", "build_optimizer", "lr_schedule"]

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine")


def build_optimizer(params: Iterable[torch.Tensor] | Iterable[dict], name: str, lr: float, weight_decay: float,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    """``adam`` or ``sgd`` (with ``momentum``) over ``params``; fused kernels when they are on a GPU."""
    params = list(params)
    first = params[0]["params"][0] if isinstance(params[0], dict) else params[0]
    fused = first.is_cuda or None
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def lr_schedule(name: str, progress: float, warmup: float = 0.0) -> float:
    """The lr factor at ``progress`` in [0, 1] of the budget: linear warm-up over the first
    ``warmup`` of it, then 1 (``constant``) or a cosine down to 0 at the end (``cosine``)."""
    if name == "cosine":
        return warmup_cosine(progress, warmup)
    if name == "constant":
        p = min(1.0, max(0.0, float(progress)))
        return p / warmup if warmup > 0 and p < warmup else 1.0
    raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


@dataclass(frozen=True)
class OptimizerParams(DeepParams):
    """:class:`~clusterbench.DeepParams` plus the optimiser and schedule a method may choose.

    The defaults are the plain Adam at a constant lr (what :class:`~clusterbench.DeepMethod`
    does); a method redefines them to cite its paper.  They are ``unhashed_default``: a method
    that adopts them with its old behaviour as the default keeps its finished runs."""

    optimizer: str = param("adam", "optimiser: adam | sgd", choices=OPTIMIZERS, unhashed_default=True)
    momentum: float = param(0.9, "SGD momentum (optimizer=sgd only)", minimum=0.0, below=1.0,
                            unhashed_default=True)
    schedule: str = param("constant", "lr schedule over the budget: constant | cosine (to 0)", choices=SCHEDULES,
                          unhashed_default=True)
    warmup: float = param(0.0, "fraction of the budget with a linear lr warm-up first (0 = none)", minimum=0.0,
                          below=1.0, unhashed_default=True)


OPTIMIZER_FIELDS = tuple(f.name for f in fields(OptimizerParams) if f.name not in {g.name for g in fields(DeepParams)})


class OptimizerChoice:
    """Mixin (before ``DeepMethod``): ``configure_optimizer`` and ``lr_factor`` from the
    :class:`OptimizerParams` fields, over every parameter that has a gradient."""

    @classmethod
    def check_class(cls) -> None:
        super().check_class()  # type: ignore[misc]
        have = {f.name for f in fields(cls.Params)}  # type: ignore[attr-defined]
        missing = [f for f in OPTIMIZER_FIELDS if f not in have]
        if missing:
            raise PluginError(f"method {cls.name!r}: OptimizerChoice needs `Params` fields "  # type: ignore[attr-defined]
                              f"{', '.join(missing)} (subclass clusterbench.OptimizerParams)")

    def configure_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        p = self.params  # type: ignore[attr-defined]
        trainable = [w for w in model.parameters() if w.requires_grad]
        return build_optimizer(trainable, p.optimizer, p.lr, p.weight_decay, p.momentum)

    def lr_factor(self, progress: float) -> float:
        p = self.params  # type: ignore[attr-defined]
        return lr_schedule(p.schedule, progress, p.warmup)

    def lr_scheduled(self) -> bool:
        """A constant lr without warm-up stays the optimiser's plain float (as without this mixin)."""
        p = self.params  # type: ignore[attr-defined]
        return p.schedule != "constant" or p.warmup > 0
