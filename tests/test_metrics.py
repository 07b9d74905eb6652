"""Clustering metrics: ACC against a brute-force matching, NMI/ARI sanity, bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from clusterbench.evaluate.metrics import cluster_acc, contingency, evaluate, hungarian_match


def brute_force_acc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Best one-to-one agreement over every injective map between clusters and classes."""
    classes = list(np.unique(y_true))
    clusters = list(np.unique(y_pred))
    best = 0
    if len(clusters) <= len(classes):
        for image in itertools.permutations(classes, len(clusters)):
            mapping = dict(zip(clusters, image))
            best = max(best, sum(mapping[p] == t for p, t in zip(y_pred, y_true)))
    else:
        for image in itertools.permutations(clusters, len(classes)):
            mapping = dict(zip(image, classes))  # unmatched clusters map to nothing
            best = max(best, sum(mapping.get(p) == t for p, t in zip(y_pred, y_true)))
    return best / len(y_true)


@pytest.mark.parametrize(
    "n_true,n_pred",
    [(3, 3), (4, 4), (5, 5), (3, 5), (2, 6), (5, 3), (6, 2), (1, 4), (4, 1)],
)
def test_acc_matches_brute_force(n_true, n_pred):
    rng = np.random.default_rng(1000 * n_true + n_pred)
    for _ in range(15):
        n = int(rng.integers(5, 40))
        y_true = rng.integers(0, n_true, size=n)
        # correlated with the truth some of the time so the optimum is not trivial
        y_pred = np.where(rng.random(n) < 0.5, (y_true * 7 + 1) % n_pred, rng.integers(0, n_pred, size=n))
        assert cluster_acc(y_true, y_pred) == pytest.approx(brute_force_acc(y_true, y_pred), abs=1e-12)


def test_acc_with_arbitrary_label_values():
    # cluster ids need not be 0..K-1 (e.g. -1 for noise, sparse ids)
    y_true = np.array([0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([-1, -1, 40, 40, 7, 7, 40])
    assert cluster_acc(y_true, y_pred) == pytest.approx(brute_force_acc(y_true, y_pred))
    assert cluster_acc(y_true, y_pred) == pytest.approx(6 / 7)


def test_more_clusters_than_classes_count_unmatched_as_errors():
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    y_pred = np.array([0, 0, 1, 1, 2, 2, 3, 3])  # every class split in two
    assert cluster_acc(y_true, y_pred) == pytest.approx(0.5)


def test_fewer_clusters_than_classes():
    y_true = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    y_pred = np.zeros(8, dtype=int)
    assert cluster_acc(y_true, y_pred) == pytest.approx(0.25)


@pytest.mark.parametrize("k", [1, 2, 10])
def test_perfect_and_permuted_labels_score_one(k):
    rng = np.random.default_rng(k)
    y = rng.integers(0, k, size=200)
    perm = rng.permutation(k) + 5  # relabelled and shifted
    for pred in (y, perm[y]):
        m = evaluate(y, pred)
        assert m["acc"] == pytest.approx(1.0)
        assert m["nmi"] == pytest.approx(1.0)
        assert m["ari"] == pytest.approx(1.0)
        assert m["n_clusters"] == len(np.unique(y))


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def test_nmi_is_arithmetic_normalisation():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 4, size=300)
    pred = np.where(rng.random(300) < 0.6, y, rng.integers(0, 6, size=300))
    m = contingency(y, pred).astype(float)
    n = m.sum()
    pij = m / n
    pi, pj = pij.sum(1, keepdims=True), pij.sum(0, keepdims=True)
    nz = pij > 0
    mi = float((pij[nz] * np.log(pij[nz] / (pi @ pj)[nz])).sum())
    expected = mi / ((_entropy(m.sum(1)) + _entropy(m.sum(0))) / 2)
    assert evaluate(y, pred)["nmi"] == pytest.approx(expected, rel=1e-9)


def test_independent_labels_score_near_chance():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, size=5000)
    pred = rng.integers(0, 5, size=5000)
    m = evaluate(y, pred)
    assert abs(m["ari"]) < 0.01
    assert m["nmi"] < 0.01
    assert 0.2 <= m["acc"] < 0.25  # 1/K plus a little from the best matching


def test_single_cluster():
    y = np.array([0, 1, 2, 0, 1, 2])
    m = evaluate(y, np.zeros(6, dtype=int))
    assert m["acc"] == pytest.approx(2 / 6)
    assert m["nmi"] == pytest.approx(0.0, abs=1e-12)
    assert m["ari"] == pytest.approx(0.0, abs=1e-12)
    assert m["n_clusters"] == 1


def test_contingency_and_matching():
    y = np.array([0, 0, 1, 1, 1])
    pred = np.array([1, 1, 0, 0, 1])
    m, rows, cols = hungarian_match(y, pred)
    assert m.tolist() == [[0, 2], [2, 1]]  # rows: predicted clusters, cols: classes
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0)]


@pytest.mark.parametrize(
    "y_true,y_pred",
    [
        (np.zeros(5, int), np.zeros(4, int)),
        (np.zeros((2, 3), int), np.zeros((2, 3), int)),
        (np.zeros(3, int), np.zeros((3, 1), int)),
    ],
)
def test_shape_mismatch_raises(y_true, y_pred):
    with pytest.raises(ValueError, match="1-D arrays of equal length"):
        cluster_acc(y_true, y_pred)
    with pytest.raises(ValueError):
        evaluate(y_true, y_pred)


def test_metrics_are_plain_floats():
    m = evaluate(np.array([0, 1, 1]), np.array([1, 0, 0]))
    for key in ("acc", "nmi", "ari"):
        assert type(m[key]) is float and math.isfinite(m[key])
    assert type(m["n_clusters"]) is int
