"""Training budgets: the one quantity every method in a run shares.

A budget is one or more limits, ``epochs=100``, ``steps=5000``, ``images=1e6`` (images
seen, counting each image once per step, not once per view) or ``minutes=30`` (training
wall-clock, evaluation excluded); training stops at the first limit reached.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from clusterbench.errors import ConfigError

KEYS = ("epochs", "steps", "images", "minutes")


@dataclass(frozen=True)
class Budget:
    epochs: float | None = None
    steps: int | None = None
    images: int | None = None
    minutes: float | None = None

    @classmethod
    def parse(cls, text: str | list[str] | None) -> "Budget":
        """Parse ``"epochs=100"`` or ``"epochs=100,minutes=30"`` (or a list of such items)."""
        if text is None or text == [] or text == "":
            return cls()
        items = text if isinstance(text, list) else [text]
        values: dict[str, float] = {}
        for item in items:
            for part in str(item).split(","):
                part = part.strip()
                if not part:
                    continue
                key, sep, raw = part.partition("=")
                key = key.strip()
                if not sep or key not in KEYS:
                    raise ConfigError(
                        f"bad budget {part!r}: expected KEY=VALUE with KEY one of {', '.join(KEYS)} "
                        "(e.g. --budget epochs=100 or --budget steps=2000,minutes=30)"
                    )
                try:
                    value = float(raw)
                except ValueError:
                    raise ConfigError(f"bad budget {part!r}: {raw!r} is not a number") from None
                if not (value > 0 and math.isfinite(value)):
                    raise ConfigError(f"bad budget {part!r}: must be positive and finite")
                if key in ("steps", "images") and value < 1:
                    raise ConfigError(f"bad budget {part!r}: {key} must be at least 1")
                values[key] = value
        for key in ("steps", "images"):
            if key in values:
                values[key] = int(values[key])
        return cls(**values)

    @property
    def empty(self) -> bool:
        return all(v is None for v in asdict(self).values())

    def to_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def __str__(self) -> str:
        return ",".join(f"{k}={v:g}" for k, v in self.to_dict().items()) or "method default"

    def exhausted(self, *, epoch: float, step: int, images: int, seconds: float) -> bool:
        """True once any limit is reached."""
        return (
            (self.epochs is not None and epoch >= self.epochs)
            or (self.steps is not None and step >= self.steps)
            or (self.images is not None and images >= self.images)
            or (self.minutes is not None and seconds >= self.minutes * 60.0)
        )

    def fraction(self, *, epoch: float, step: int, images: int, seconds: float) -> float:
        """How much of the budget is spent (0..1): drives progress bars and schedules."""
        parts = []
        if self.epochs is not None:
            parts.append(epoch / self.epochs)
        if self.steps is not None:
            parts.append(step / self.steps)
        if self.images is not None:
            parts.append(images / self.images)
        if self.minutes is not None:
            parts.append(seconds / (self.minutes * 60.0))
        return min(1.0, max(parts)) if parts else 0.0
