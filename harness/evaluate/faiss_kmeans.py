"""k-means with faiss: the baselines' algorithm and the ``kmeans`` evaluation protocol."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import numpy as np

from clusterbench.api import DataError


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: taskset, a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def cap_faiss_threads(faiss) -> int:
    """Cap faiss's OpenMP threads at :func:`available_cpus`; returns the thread count in use.

    faiss's threads spin-wait: more of them than the CPUs we may use makes k-means many
    times slower on a small or busy machine.  A lower setting (``OMP_NUM_THREADS``, an
    earlier ``faiss.omp_set_num_threads``) is kept, never raised.
    """
    n = min(faiss.omp_get_max_threads(), available_cpus())
    faiss.omp_set_num_threads(n)
    return n


@contextlib.contextmanager
def faiss_distance_path(path: str) -> Iterator[None]:
    """Which of faiss's two exact distance paths its searches take, restored afterwards.

    ``"blas"``: matrix products (faiss's default from 20 queries on); ``"direct"``: its SIMD
    loops over the queries, in parallel.  Both compute the same distances (up to float
    rounding); which is faster depends on k, the dimension and the machine.
    """
    import faiss

    if path not in ("blas", "direct"):
        raise ValueError(f"faiss distance path must be 'blas' or 'direct', not {path!r}")
    old = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = 20 if path == "blas" else 2**30
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = old


def kmeans(features: np.ndarray, k: int, *, seed: int, niter: int = 100, nredo: int = 5) -> np.ndarray:
    """Cluster rows of ``features`` into ``k`` groups; the best of ``nredo`` seeded restarts.

    faiss's Lloyd iterations are exact (same objective as scikit-learn's ``KMeans`` with
    random init) and several times faster; the seed fixes initialisation so a rerun
    reproduces the labels.
    """
    import faiss

    cap_faiss_threads(faiss)
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
