"""What the harness hands a method while it runs one cell."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from clusterbench.budget import Budget
from clusterbench.seeding import derived_seed


@dataclass
class EngineSettings:
    """Run-level engine switches (identical for every method of a run, part of the run id)."""

    device: str = "cpu"
    precision: str = "bf16"  # bf16 | fp32 (autocast dtype on the GPU; the CPU runs fp32)
    compile: bool = False
    channels_last: bool = True
    cuda_graphs: bool = True  # replay the training step as a CUDA graph on the GPU (recorded, not hashed)
    compile_augment: bool = True  # torch.compile the colour jitter on the GPU (same values to ~1e-6; not hashed)

    @property
    def augment_compiled(self) -> bool:
        return self.compile or self.compile_augment
    eval_every: int = 0  # epochs between cheap ACC/NMI points on the curve (0: auto)
    checkpoint_every: int = 1  # epochs between checkpoints

    def identity(self) -> dict[str, Any]:
        # device is recorded, not hashed: the same cell on another GPU is the same experiment
        return {"precision": self.precision if self.device.startswith("cuda") else "fp32", "compile": self.compile}


@dataclass
class RunContext:
    """Seed, budget, device and bookkeeping for one (method, dataset, seed) cell.

    ``evaluate`` scores predicted labels against the hidden ground truth for the learning
    curve; methods never see the labels themselves.
    """

    seed: int
    budget: Budget
    settings: EngineSettings
    run_dir: Path
    evaluate: Callable[[np.ndarray], dict[str, float]]
    progress: Callable[[float, str], None] = lambda frac, msg: None
    curve: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @property
    def device(self) -> str:
        return self.settings.device

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def derived_seed(self, *axes: str) -> int:
        return derived_seed(self.seed, *axes)

    def log_point(self, **values: Any) -> None:
        """Append a point (epoch, step, images, seconds, loss, acc, ...) to the learning curve."""
        self.curve.append(values)
