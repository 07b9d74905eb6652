"""k-means with faiss: the baselines' algorithm and the ``kmeans`` evaluation protocol."""

from __future__ import annotations

import numpy as np

from clusterbench.api import DataError


def kmeans(features: np.ndarray, k: int, *, seed: int, niter: int = 100, nredo: int = 5) -> np.ndarray:
    """Cluster rows of ``features`` into ``k`` groups; the best of ``nredo`` seeded restarts.

    faiss's Lloyd iterations are exact (same objective as scikit-learn's ``KMeans`` with
    random init) and several times faster; the seed fixes initialisation so a rerun
    reproduces the labels.
    """
    import faiss

    x = np.ascontiguousarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"k-means needs a 2-D feature matrix, got shape {x.shape}")
    if k > len(x):
        raise DataError(f"cannot make k={k} clusters from {len(x)} samples")
    if not np.isfinite(x).all():
        raise DataError("k-means features contain NaN or infinite values")
    km = faiss.Kmeans(
        x.shape[1], k, niter=niter, nredo=nredo, seed=int(seed) & 0x7FFFFFFF, verbose=False,
        max_points_per_centroid=max(256, (len(x) + k - 1) // k),  # use every point, no subsampling
    )
    km.train(x)
    _, labels = km.index.search(x, 1)
    return labels.ravel().astype(np.int64)
