"""k-means and metrics timings for ``clusterbench bench``: faiss against scikit-learn on the
same features (synthetic, or a briefly trained method's), and the metrics at scale."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import numpy as np

from clusterbench.api import ImageData
from clusterbench.bench.timing import log, time_once
from clusterbench.settings import EngineSettings
from clusterbench.train.deep import DeepMethod


def synthetic_features(n: int = 60000, dim: int = 512, k: int = 10, noise: float = 1.0,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n x dim float32 features from k Gaussian clusters, and their labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centers = rng.normal(0, 1, (k, dim)).astype(np.float32)
    return (centers[y] + rng.normal(0, noise, (n, dim))).astype(np.float32), y


def bench_metrics(n: int = 60000, k: int = 10, seed: int = 0) -> float:
    """Seconds of ACC (Hungarian) + NMI + ARI at n samples, k clusters, 30% of labels wrong."""
    from clusterbench.evaluate.metrics import evaluate

    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n))
    return time_once(lambda: evaluate(y, pred))[1]


def bench_kmeans(feats: np.ndarray, y: np.ndarray, k: int, niter: int = 20, nredo: int = 3,
                 seed: int = 0) -> dict[str, Any]:
    """faiss against scikit-learn's ``KMeans`` on the same features, same k, same iterations.

    *Same work*: each of ``nredo`` restarts starts both from the same k random points and
    runs exactly ``niter`` Lloyd iterations on every point, so the seconds compare the
    implementations and the partitions must agree.  faiss is timed on both of its
    distance paths (BLAS matrix products, its default above 20 queries, and its direct
    SIMD loops, see :func:`clusterbench.evaluate.faiss_kmeans.faiss_distance_path`).  *Sampled*: faiss's
    own default of training on 256 points per centroid, then assigning every point.
    *As used*: the harness's ``kmeans`` (faiss, random init) against scikit-learn's
    default (k-means++ seeding, which costs extra passes), same iterations and restarts.
    """
    import faiss
    from sklearn.cluster import KMeans

    from clusterbench.evaluate.faiss_kmeans import cap_faiss_threads, faiss_distance_path, kmeans
    from clusterbench.evaluate.metrics import evaluate

    threads = cap_faiss_threads(faiss)
    n, dim = feats.shape
    rng = np.random.default_rng(seed)
    inits = [feats[rng.choice(n, k, replace=False)] for _ in range(nredo)]

    def faiss_run(init, per_centroid: int, path: str = "blas") -> np.ndarray:
        with faiss_distance_path(path):
            km = faiss.Kmeans(dim, k, niter=niter, max_points_per_centroid=per_centroid, verbose=False, seed=seed)
            km.train(feats, init_centroids=init)
            return km.index.search(feats, 1)[1].ravel()

    variants: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "sklearn": lambda init: KMeans(k, init=init, n_init=1, max_iter=niter, tol=0.0,
                                       algorithm="lloyd").fit_predict(feats),
        "faiss_blas": lambda init: faiss_run(init, n, "blas"),
        "faiss_direct": lambda init: faiss_run(init, n, "direct"),
        "faiss_sampled": lambda init: faiss_run(init, 256),
    }
    out: dict[str, Any] = {"n": n, "dim": dim, "k": k, "niter": niter, "restarts": nredo, "cpu_threads": threads}
    labels: dict[str, list[np.ndarray]] = {name: [] for name in variants}
    for name, fn in variants.items():
        labels[name], out[f"{name}_seconds"] = time_once(lambda: [fn(init) for init in inits])
        out[f"{name}_acc"] = float(np.mean([evaluate(y, lab)["acc"] for lab in labels[name]]))
        # 1.0: the same partition as scikit-learn's from the same start
        out[f"{name}_agreement"] = float(np.min([evaluate(s, lab)["acc"] for s, lab in zip(labels["sklearn"],
                                                                                          labels[name])]))
    for name in ("faiss_blas", "faiss_direct", "faiss_sampled"):
        out[f"{name}_speedup"] = out["sklearn_seconds"] / out[f"{name}_seconds"]

    lab_faiss, out["used_faiss_seconds"] = time_once(lambda: kmeans(feats, k, seed=seed, niter=niter, nredo=nredo))
    lab_sk, out["used_sklearn_seconds"] = time_once(lambda: KMeans(k, n_init=nredo, max_iter=niter, tol=0.0,
                                                                   random_state=seed,
                                                                   algorithm="lloyd").fit_predict(feats))
    out.update(used_speedup=out["used_sklearn_seconds"] / out["used_faiss_seconds"],
               used_faiss_acc=evaluate(y, lab_faiss)["acc"], used_sklearn_acc=evaluate(y, lab_sk)["acc"])
    return out


def kmeans_table(ev: dict[str, Any]) -> str:
    """The k-means comparison as a Markdown table."""
    from tabulate import tabulate

    rows = [["scikit-learn Lloyd", f"{ev['sklearn_seconds']:.2f}", "1.0x", f"{ev['sklearn_acc']:.3f}", "1.000"]]
    for name, label in (("faiss_blas", "faiss, BLAS distances (its default)"),
                        ("faiss_direct", "faiss, direct SIMD distances"),
                        ("faiss_sampled", "faiss, trained on 256 points/centroid")):
        rows.append([label, f"{ev[name + '_seconds']:.2f}", f"{ev[name + '_speedup']:.1f}x", f"{ev[name + '_acc']:.3f}",
                     f"{ev[name + '_agreement']:.3f}"])
    rows.append(["as used: harness kmeans (faiss) vs scikit-learn k-means++",
                 f"{ev['used_faiss_seconds']:.2f} vs {ev['used_sklearn_seconds']:.2f}", f"{ev['used_speedup']:.1f}x",
                 f"{ev['used_faiss_acc']:.3f} vs {ev['used_sklearn_acc']:.3f}", "-"])
    return tabulate(rows, headers=["same init, same iterations", "seconds", "speed-up", "ACC", "same labels"],
                    tablefmt="github")


def trained_features(method: DeepMethod, data: ImageData, settings: EngineSettings, *, steps: int = 300,
                     max_images: int = 60000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """Features of real images for the k-means comparison: ``method`` trained ``steps``
    steps on ``data`` by the engine (as ``clusterbench run`` trains it), then its
    ``features`` over the first ``max_images`` images; returns (features, true labels, a
    description)."""
    import tempfile
    from pathlib import Path

    from clusterbench.budget import Budget
    from clusterbench.context import RunContext
    from clusterbench.evaluate.metrics import evaluate

    log(f"k-means features: training {method.name} for {steps} steps")
    # uncompiled: these features need no speed, and compiling would add ~30 s to the bench
    with tempfile.TemporaryDirectory() as run_dir:
        ctx = RunContext(seed=seed, budget=Budget(steps=steps), settings=replace(settings, compile=False),
                         run_dir=Path(run_dir), evaluate=lambda labels: evaluate(data.y, labels))
        method.fit(data.without_labels(), ctx)
    sub = data.subset(np.arange(min(len(data), max_images)))
    feats = method.features(sub)
    note = (f"{sub.name} images ({len(sub)}), {feats.shape[1]}-d features of {method.name} trained "
            f"{steps} steps of batch {min(int(method.params.batch_size), len(data))}")
    return np.ascontiguousarray(feats, dtype=np.float32), np.asarray(sub.y), note
