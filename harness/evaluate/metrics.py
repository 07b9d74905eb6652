"""Clustering metrics: ACC with the Hungarian matching, NMI and ARI.

ACC matches predicted clusters to classes one-to-one on the (rectangular) contingency
matrix, so it stays correct when the number of predicted clusters differs from the number
of classes: unmatched clusters count as errors (torch_clustering returns 0 and SCAN
asserts in that case; both are traps).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def contingency(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Counts of (predicted cluster, true class) pairs, shape (n_pred, n_true)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"labels must be 1-D arrays of equal length, got {y_true.shape} and {y_pred.shape}")
    _, t = np.unique(y_true, return_inverse=True)
    _, p = np.unique(y_pred, return_inverse=True)
    m = np.zeros((p.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(m, (p, t), 1)
    return m


def hungarian_match(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The matching that maximises agreement: (contingency, matched rows, matched cols).

    Rows index ``np.unique(y_pred)``, columns ``np.unique(y_true)``.  The one Hungarian
    matching of the harness: ACC here and the confusion figures of the report both use it.
    """
    m = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(m, maximize=True)
    return m, rows, cols


def cluster_acc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    m, rows, cols = hungarian_match(y_true, y_pred)
    return float(m[rows, cols].sum() / len(y_true))


def evaluate(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """ACC, NMI (arithmetic normalisation, as the clustering papers) and ARI."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    return {
        "acc": cluster_acc(y_true, y_pred),
        "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
        "ari": float(adjusted_rand_score(y_true, y_pred)),
        "n_clusters": int(len(np.unique(y_pred))),
    }
