"""Thread pools sized to the CPUs a process may use, shared among the workers on them.

torch, OpenMP and BLAS each start one thread per core they see; two processes on two cores
then run four busy threads and take ~4x longer in total than one after the other (measured).
:func:`size_threads` gives each pool ``CPUs available / workers`` threads (at least one);
an explicit ``OMP_NUM_THREADS`` is the user's choice and is left alone.  The launcher passes
how many workers share the machine (``CLUSTERBENCH_WORKERS`` for processes it starts).
"""

from __future__ import annotations

import os

from clusterbench.evaluate.faiss_kmeans import available_cpus

WORKERS_ENV = "CLUSTERBENCH_WORKERS"


def threads_per_worker(workers: int | None = None) -> int:
    """CPUs available to this process divided among ``workers`` (default: ``$CLUSTERBENCH_WORKERS`` or 1)."""
    if workers is None:
        try:
            workers = int(os.environ.get(WORKERS_ENV, "1"))
        except ValueError:
            workers = 1
    return max(1, available_cpus() // max(1, workers))


def size_threads(workers: int | None = None) -> int | None:
    """Set torch's and the BLAS/OpenMP pools' sizes; returns the count, or None if ``OMP_NUM_THREADS`` decides."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    n = threads_per_worker(workers)
    import torch

    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - comes with scikit-learn
        return n
    threadpool_limits(limits=n)
    return n
