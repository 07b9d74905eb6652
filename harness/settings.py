"""Run-level engine switches: the same for every method of one invocation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class EngineSettings:
    """Run-level engine switches (identical for every method of a run, part of the run id)."""

    device: str = "cpu"
    precision: str = "bf16"  # bf16 | fp32 (autocast dtype on the GPU; the CPU runs fp32)
    compile: bool = False
    channels_last: bool = True
    cuda_graphs: bool = True  # replay the training step as a CUDA graph on the GPU (recorded, not hashed)
    compile_augment: bool = True  # torch.compile the colour jitter on the GPU (same values to ~1e-6; not hashed)

    eval_every: int = 0  # epochs between cheap ACC/NMI points on the curve (0: auto)
    checkpoint_every: int = 1  # epochs between checkpoints

    @property
    def augment_compiled(self) -> bool:
        """Whether the colour jitter is to be compiled: only ever on the GPU (the CPU runs it eagerly)."""
        return (self.compile or self.compile_augment) and self.device.startswith("cuda")

    def identity(self) -> dict[str, Any]:
        # device is recorded, not hashed: the same cell on another GPU is the same experiment
        return {"precision": self.precision if self.device.startswith("cuda") else "fp32", "compile": self.compile}
