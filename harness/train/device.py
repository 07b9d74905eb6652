"""The few places where running on a GPU changes what a step does: autocast, sync, layout."""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch


def autocast(device: torch.device, precision: str, cache: bool = True) -> ContextManager:
    """bf16 autocast on the GPU, nothing elsewhere; ``cache=False`` inside CUDA graphs (the
    cast cache would hold tensors from the capture's memory pool across replays)."""
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU): host clocks are read after it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_channels_last(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """channels_last on the GPU (what cuDNN's fast convolutions want), unchanged elsewhere."""
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x
