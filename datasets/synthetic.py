"""Synthetic images with known clusters: for tests and smoke runs, any size, no files.

Each class is a random smooth colour pattern; samples are that pattern under a random
shift plus noise, so the classes are separable but not trivially by one pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clusterbench import Dataset, ImageData, hookimpl, param


class Synthetic(Dataset):
    name = "synthetic"
    description = "synthetic coloured patterns with known clusters (options: n, classes, size, channels, noise, seed)"

    @dataclass(frozen=True)
    class Options:
        n: int = param(600, "number of images", minimum=1)
        classes: int = param(6, "number of classes", minimum=1)
        size: int = param(16, "image side in pixels", minimum=4)
        channels: int = param(3, "1 (grey) or 3 (colour)", choices=(1, 3))
        noise: float = param(0.15, "std of the Gaussian pixel noise (pixels in 0..1)")
        seed: int = param(0, "seed of the class patterns, shifts and noise")

    def load(self) -> ImageData:
        o = self.opts
        return make_synthetic(o.n, o.classes, o.size, o.channels, o.noise, o.seed, self.name)


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
