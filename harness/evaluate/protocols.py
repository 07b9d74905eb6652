"""Evaluation protocols: how a trained method's output becomes numbers.

- ``head``: the method's own cluster assignment (argmax of a cluster head, or k-means
  labels for the baselines), scored with ACC/NMI/ARI.
- ``kmeans``: k-means (faiss) on the method's features, with K = the number of classes.
- ``linear`` / ``linear-logreg``: linear evaluation (:mod:`clusterbench.evaluate.linear`):
  classification accuracy of a linear classifier trained on the training split's frozen
  features and scored on the test split, in a cell whose pretraining saw the training split
  only.  It uses labels, so it is never a clustering metric; a method that supports
  ``linear`` supports both variants.  They run only when asked for (``--protocols``): each
  is an extra cell, trained again.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from clusterbench.api import ConfigError, ImageData, Method
from clusterbench.evaluate.faiss_kmeans import kmeans
from clusterbench.evaluate.linear import LINEAR_PROTOCOLS, LinearProbe, logreg_probe, sgd_probe
from clusterbench.evaluate.metrics import evaluate
from clusterbench.seeding import derived_seed

PROTOCOLS = ("head", "kmeans") + LINEAR_PROTOCOLS


def check_protocols(method: type[Method], requested: list[str] | None) -> list[str]:
    """The protocols to run for a method: its own list (less the linear ones, which are an
    extra cell each: asked for, never by default), or the requested subset of it.

    A requested protocol the method does not support is skipped with a warning; if none is
    supported, the method's first protocol runs instead (so every cell is scored), also warned.
    """
    if not requested:
        return [p for p in method.protocols if p not in LINEAR_PROTOCOLS] or list(method.protocols[:1])
    for p in requested:
        if p not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {p!r}; protocols: {', '.join(PROTOCOLS)}")
    supported = set(method.protocols) | (set(LINEAR_PROTOCOLS) if "linear" in method.protocols else set())
    chosen = [p for p in requested if p in supported]
    dropped = [p for p in requested if p not in supported]
    if dropped:
        instead = "" if chosen else f"; running its {method.protocols[0]!r} protocol instead"
        warnings.warn(f"method {method.name!r} does not support protocol(s) {', '.join(dropped)} (it supports "
                      f"{', '.join(method.protocols)}){instead}", UserWarning, stacklevel=2)
    return chosen or list(method.protocols[:1])


def run_protocols(method: Method, data: ImageData, protocols: list[str], seed: int,
                  probe: LinearProbe | None = None, errors: dict[str, BaseException] | None = None,
                  ) -> tuple[dict[str, dict[str, Any]], np.ndarray, float]:
    """Score a fitted method.  Returns per-protocol metrics, the primary labels (None when
    only linear protocols ran) and the inference throughput (images/s of the method's own
    predict/features calls).  ``probe``: the SGD linear probe's settings.

    ``errors``: when given, a protocol that raises (a missing package, out of memory in
    feature extraction, a degenerate probe) is put there and the others still run, so what
    training earned is kept; without it the first error propagates."""
    results: dict[str, dict[str, Any]] = {}
    state: dict[str, Any] = {"labels": None, "feats": None, "seconds": 0.0, "images": 0}
    for proto in protocols:
        try:
            _run_protocol(method, data, proto, seed, probe, results, state)
        except Exception as exc:
            if errors is None:
                raise
            errors[proto] = exc
    seconds, images = state["seconds"], state["images"]
    infer_ips = images / seconds if seconds > 0 and not method.transductive else None
    return results, state["labels"], infer_ips


def _run_protocol(method: Method, data: ImageData, proto: str, seed: int, probe: LinearProbe | None,
                  results: dict[str, dict[str, Any]], state: dict[str, Any]) -> None:
    """One protocol into ``results``; ``state`` carries the features, the primary labels and the
    inference clock from one protocol to the next."""
    if proto == "linear":
        results["linear"] = sgd_probe(method, data, probe or LinearProbe(), derived_seed(seed, "linear"))
        return
    if proto == "head":
        t = time.perf_counter()
        labels = np.asarray(method.predict(data))
        state["seconds"] += time.perf_counter() - t
        state["images"] += len(data)
        _check_labels(labels, len(data), method.name)
        results["head"] = evaluate(data.y, labels)
    else:
        if state["feats"] is None:
            t = time.perf_counter()
            feats = method.features(data)
            state["seconds"] += time.perf_counter() - t
            state["images"] += len(data)
            if feats is None:
                raise ConfigError(f"method {method.name!r} provides no features for the {proto!r} protocol")
            state["feats"] = np.asarray(feats, dtype=np.float32)
        if proto == "kmeans":
            labels = kmeans(state["feats"], data.n_classes, seed=derived_seed(seed, "protocol-kmeans"))
            results["kmeans"] = evaluate(data.y, labels)
        elif proto == "linear-logreg":
            results[proto] = logreg_probe(state["feats"], data, derived_seed(seed, "linear"))
            return
    if state["labels"] is None:
        state["labels"] = labels


def _check_labels(labels: np.ndarray, n: int, method: str) -> None:
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"method {method!r} returned labels of shape {labels.shape} and dtype {labels.dtype}; "
                         f"expected {n} integers")
