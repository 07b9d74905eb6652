"""A trained network and how to run it: what ``predict`` and ``features`` need after ``fit``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from clusterbench.train.augment import eval_transform
from clusterbench.train.device import autocast, to_channels_last

BatchFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Trained:
    """The model the engine trained, with everything its test-time transform needs.

    One object instead of a model, a device and a precision stashed on the method: the
    inputs are resized to ``input_size`` and normalised with ``mean``/``std`` (None: not
    normalised), as during training.
    """

    model: nn.Module
    device: torch.device
    precision: str
    input_size: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    batch_size: int = 1024

    @torch.no_grad()
    def apply(self, fn: BatchFn, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """``fn(model, batch)`` over uint8 NHWC images ``x`` (numpy, or a tensor already on the
        device) in eval mode, concatenated; float outputs come back as float32."""
        model = self.model
        was_training = model.training
        model.eval()
        x_all = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
        outs = []
        try:
            for i in range(0, len(x_all), self.batch_size):
                xb = x_all[i:i + self.batch_size].to(self.device, non_blocking=True)
                xb = to_channels_last(eval_transform(xb, self.input_size, self.mean, self.std), self.device)
                with autocast(self.device, self.precision):
                    outs.append(fn(model, xb))
        finally:
            model.train(was_training)
        out = torch.cat(outs)
        return (out.float() if out.is_floating_point() else out).cpu().numpy()  # numpy has no bf16
