"""Synthetic images with known clusters: for tests and smoke runs, any size, no files.

Each class is a random smooth colour pattern; samples are that pattern under a random
shift plus noise, so the classes are separable but not trivially by one pixel.
"""

from __future__ import annotations

import numpy as np

from clusterbench import ConfigError, Dataset, ImageData, hookimpl


class Synthetic(Dataset):
    name = "synthetic"
    description = "synthetic coloured patterns with known clusters (options: n, classes, size, channels, noise, seed)"

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return ("n", "classes", "size", "channels", "noise", "seed")

    def load(self) -> ImageData:
        try:
            n = int(self.options.get("n", 600))
            k = int(self.options.get("classes", 6))
            size = int(self.options.get("size", 16))
            ch = int(self.options.get("channels", 3))
            noise = float(self.options.get("noise", 0.15))
            seed = int(self.options.get("seed", 0))
        except ValueError as exc:
            raise ConfigError(f"dataset 'synthetic': bad option value ({exc})") from None
        if n < 1 or k < 1 or size < 4 or ch not in (1, 3):
            raise ConfigError("dataset 'synthetic': need n>=1, classes>=1, size>=4, channels in {1,3}")
        return make_synthetic(n, k, size, ch, noise, seed, self.name)


def make_synthetic(n: int, k: int, size: int, channels: int, noise: float, seed: int,
                   name: str = "synthetic") -> ImageData:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    protos = []
    for _ in range(k):
        freq = rng.uniform(1, 3, size=(channels, 2))
        phase = rng.uniform(0, 2 * np.pi, size=(channels,))
        pat = 0.5 + 0.5 * np.sin(2 * np.pi * (freq[:, :1, None] * xx + freq[:, 1:, None] * yy) + phase[:, None, None])
        protos.append(pat.transpose(1, 2, 0))
    protos = np.stack(protos)
    y = np.arange(n) % k
    rng.shuffle(y)
    shifts = rng.integers(-size // 8, size // 8 + 1, size=(n, 2))
    x = np.empty((n, size, size, channels), dtype=np.float64)
    for i in range(n):
        x[i] = np.roll(protos[y[i]], tuple(shifts[i]), axis=(0, 1))
    x += rng.normal(0, noise, size=x.shape)
    x = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
    train = np.zeros(n, dtype=bool)
    train[: int(0.8 * n)] = True
    return ImageData(x=x, y=y.astype(np.int64), n_classes=k, name=name,
                     class_names=tuple(f"c{i}" for i in range(k)), train_mask=train)


@hookimpl
def clusterbench_datasets():
    return [Synthetic]
