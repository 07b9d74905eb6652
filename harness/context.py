"""What the harness hands a method while it runs one cell."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from clusterbench.budget import Budget
from clusterbench.settings import EngineSettings
from clusterbench.seeding import derived_seed


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
