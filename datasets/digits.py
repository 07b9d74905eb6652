"""scikit-learn's digits: the embedded default, shipped with a dependency, no download.

1,797 grey 8x8 images of handwritten digits (UCI ML hand-written digits, Alpaydin &
Kaynak 1998).  Pixel values 0..16 are scaled to uint8 0..255.
"""

from __future__ import annotations

import numpy as np

from clusterbench import Dataset, ImageData, hookimpl


class Digits(Dataset):
    name = "digits"
    description = "scikit-learn digits, 1,797 8x8 grey images, 10 classes (embedded, no download)"
    n_classes = 10

    def load(self) -> ImageData:
        from sklearn.datasets import load_digits

        d = load_digits()
        x = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[..., None]
        return ImageData(x=x, y=d.target.astype(np.int64), n_classes=10, name=self.name,
                         class_names=tuple(str(i) for i in range(10)))


@hookimpl
def clusterbench_datasets():
    return [Digits]
