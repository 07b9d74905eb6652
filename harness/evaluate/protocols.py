"""Evaluation protocols: how a trained method's output becomes numbers.

- ``head``: the method's own cluster assignment (argmax of a cluster head, or k-means
  labels for the baselines), scored with ACC/NMI/ARI.
- ``kmeans``: k-means (faiss) on the method's features, with K = the number of classes.
- ``linear``: a linear probe (multinomial logistic regression) trained on the features of
  the training split and scored on the test split: classification accuracy, reported in
  its own column (CueCo's protocol).  It uses labels, so it is never a clustering metric.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from clusterbench.api import ConfigError, ImageData, Method
from clusterbench.evaluate.faiss_kmeans import kmeans
from clusterbench.evaluate.metrics import evaluate
from clusterbench.seeding import derived_seed

PROTOCOLS = ("head", "kmeans", "linear")


def check_protocols(method: type[Method], requested: list[str] | None) -> list[str]:
    """The protocols to run for a method: its own list, or the requested subset of it.

    A requested protocol the method does not support is skipped with a warning; if none is
    supported, the method's first protocol runs instead (so every cell is scored), also warned.
    """
    if not requested:
        return list(method.protocols)
    for p in requested:
        if p not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {p!r}; protocols: {', '.join(PROTOCOLS)}")
    chosen = [p for p in requested if p in method.protocols]
    dropped = [p for p in requested if p not in method.protocols]
    if dropped:
        instead = "" if chosen else f"; running its {method.protocols[0]!r} protocol instead"
        warnings.warn(f"method {method.name!r} does not support protocol(s) {', '.join(dropped)} (it supports "
                      f"{', '.join(method.protocols)}){instead}", UserWarning, stacklevel=2)
    return chosen or list(method.protocols[:1])


def linear_probe(features: np.ndarray, data: ImageData, seed: int) -> float:
    """Accuracy of a logistic-regression probe on frozen, standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if data.train_mask is not None and data.train_mask.any() and (~data.train_mask).any():
        train, test = data.train_mask, ~data.train_mask
    else:  # no official split: a seeded 80/20 split
        rng = np.random.default_rng(seed)
        train = np.zeros(len(data), dtype=bool)
        train[rng.permutation(len(data))[: int(0.8 * len(data))]] = True
        test = ~train
    scaler = StandardScaler().fit(features[train])
    clf = LogisticRegression(max_iter=1000, random_state=seed)
    clf.fit(scaler.transform(features[train]), data.y[train])
    return float((clf.predict(scaler.transform(features[test])) == data.y[test]).mean())


def run_protocols(method: Method, data: ImageData, protocols: list[str], seed: int) -> tuple[dict[str, dict[str, Any]], np.ndarray, float]:
    """Score a fitted method.  Returns per-protocol metrics, the primary labels and the
    inference throughput (images/s of the method's own predict/features calls)."""
    results: dict[str, dict[str, Any]] = {}
    primary_labels: np.ndarray | None = None
    infer_seconds, infer_images = 0.0, 0
    feats: np.ndarray | None = None
    for proto in protocols:
        if proto == "head":
            t = time.perf_counter()
            labels = np.asarray(method.predict(data))
            infer_seconds += time.perf_counter() - t
            infer_images += len(data)
            _check_labels(labels, len(data), method.name)
            results["head"] = evaluate(data.y, labels)
        else:
            if feats is None:
                t = time.perf_counter()
                feats = method.features(data)
                infer_seconds += time.perf_counter() - t
                infer_images += len(data)
                if feats is None:
                    raise ConfigError(f"method {method.name!r} provides no features for the {proto!r} protocol")
                feats = np.asarray(feats, dtype=np.float32)
            if proto == "kmeans":
                labels = kmeans(feats, data.n_classes, seed=derived_seed(seed, "protocol-kmeans"))
                results["kmeans"] = evaluate(data.y, labels)
            elif proto == "linear":
                results["linear"] = {"accuracy": linear_probe(feats, data, derived_seed(seed, "linear"))}
                continue
        if primary_labels is None:
            primary_labels = labels
    infer_ips = infer_images / infer_seconds if infer_seconds > 0 and not method.transductive else None
    return results, primary_labels, infer_ips


def _check_labels(labels: np.ndarray, n: int, method: str) -> None:
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"method {method!r} returned labels of shape {labels.shape} and dtype {labels.dtype}; "
                         f"expected {n} integers")
