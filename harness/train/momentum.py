"""Momentum (EMA) encoders, shared by every method with a slow "key"/"target" network.

MoCo, BYOL, DINO, CueCo and their kin keep a second copy of (part of) the network whose
weights are an exponential moving average of the trained one and receive no gradient:

    key = momentum_copy(query)            # frozen deep copy, same initial weights
    ...after each optimiser step...
    ema_update(key, query, cosine_momentum(progress, 0.99))

``ema_update`` is one fused ``torch._foreach_lerp_`` over all parameters (a handful of
kernels, not one per parameter), so it costs next to nothing next to the step itself.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["momentum_copy", "ema_update", "cosine_momentum"]


def momentum_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with every parameter frozen (``requires_grad=False``).

    The copy starts from the same weights, as MoCo's key encoder and BYOL's target do.
    """
    twin = copy.deepcopy(module)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float, buffers: str = "keep") -> None:
    """``target <- momentum * target + (1 - momentum) * source``, parameter by parameter.

    ``momentum`` = 1 leaves the target unchanged, 0 copies the source.  ``buffers`` says
    what happens to buffers (BatchNorm running statistics): ``"keep"`` (the target keeps
    its own, computed by its own forward passes: MoCo, BYOL), ``"copy"`` (take the
    source's) or ``"ema"`` (average the floating-point ones like the parameters).
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    t_params = list(target.parameters())
    s_params = list(source.parameters())
    _check_pairs(t_params, s_params, "parameters")
    if t_params and momentum < 1.0:
        # lerp_(t, s, w) = t + w (s - t) = (1 - w) t + w s, with w = 1 - momentum
        torch._foreach_lerp_(t_params, s_params, 1.0 - momentum)
    if buffers == "keep":
        return
    t_bufs = list(target.buffers())
    s_bufs = list(source.buffers())
    _check_pairs(t_bufs, s_bufs, "buffers")
    if buffers == "copy":
        if t_bufs:
            torch._foreach_copy_(t_bufs, s_bufs)
    elif buffers == "ema":
        floats = [(t, s) for t, s in zip(t_bufs, s_bufs) if t.is_floating_point()]
        others = [(t, s) for t, s in zip(t_bufs, s_bufs) if not t.is_floating_point()]
        if floats and momentum < 1.0:
            torch._foreach_lerp_([t for t, _ in floats], [s for _, s in floats], 1.0 - momentum)
        for t, s in others:  # integer counters (num_batches_tracked): take the source's
            t.copy_(s)
    else:
        raise ValueError(f"buffers must be 'keep', 'copy' or 'ema', got {buffers!r}")


def cosine_momentum(progress: float, base: float, final: float = 1.0) -> float:
    """BYOL's schedule: ``final - (final - base) * (cos(pi * progress) + 1) / 2``.

    ``base`` at progress 0, ``final`` at progress 1 (1.0: the target freezes at the end).
    """
    p = min(1.0, max(0.0, float(progress)))
    return final - (final - base) * (math.cos(math.pi * p) + 1.0) / 2.0


def _check_pairs(targets: list[torch.Tensor], sources: list[torch.Tensor], what: str) -> None:
    if len(targets) != len(sources):
        raise ValueError(f"target and source have different numbers of {what}: {len(targets)} vs {len(sources)}")
    for t, s in zip(targets, sources):
        if t.shape != s.shape:
            raise ValueError(f"target and source {what} differ in shape: {tuple(t.shape)} vs {tuple(s.shape)}")
