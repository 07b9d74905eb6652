"""k-means baselines: the floor every deep clustering method must clearly beat.

``kmeans`` clusters raw pixels (scaled to [0, 1]); ``kmeans-pca`` first projects them
onto their leading principal components, which removes pixel noise and is the usual
"shallow" baseline in the deep-clustering papers' tables (e.g. CC Table 2 lists K-means
at ACC 0.229 on CIFAR-10).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clusterbench import ImageData, Method, hookimpl, param
from clusterbench.evaluate.faiss_kmeans import kmeans


def _pixels(data: ImageData) -> np.ndarray:
    return data.x.reshape(len(data), -1).astype(np.float32) / 255.0


class KMeansPixels(Method):
    name = "kmeans"
    description = "k-means (faiss, seeded restarts) on raw pixels"
    paper = "MacQueen 1967; Johnson et al., faiss, 2019"
    provenance = "paper-text"
    provenance_note = "the textbook k-means (Lloyd iterations from random starts, best of nredo) as faiss implements it"
    quick = True
    transductive = True
    protocols = ("head",)
    requires = ("faiss",)
    presets = {"smoke": {"niter": 20, "nredo": 1}}  # for the contract tests over the registry

    @dataclass(frozen=True)
    class Params:
        n_clusters: int = param(0, "clusters to make; 0 = the dataset's number of classes", minimum=0)
        niter: int = param(100, "Lloyd iterations per restart", minimum=1)
        nredo: int = param(10, "restarts; the lowest-inertia one is kept", minimum=1)

    def fit(self, data: ImageData, ctx) -> None:
        k = self.params.n_clusters or data.n_classes
        self._labels = kmeans(self.transform(data, ctx.seed), k, seed=ctx.seed,
                              niter=self.params.niter, nredo=self.params.nredo)
        self._n = len(data)

    def transform(self, data: ImageData, seed: int) -> np.ndarray:
        return _pixels(data)

    def predict(self, data: ImageData) -> np.ndarray:
        if len(data) != self._n:
            raise ValueError("k-means baselines predict the data they were fitted on")
        return self._labels


class KMeansPCA(KMeansPixels):
    name = "kmeans-pca"
    description = "k-means (faiss) on PCA-reduced pixels"
    paper = "Ding & He, 'K-means clustering via principal component analysis', ICML 2004"
    provenance_note = "k-means on a PCA projection of the pixels, as the paper's method describes"

    @dataclass(frozen=True)
    class Params(KMeansPixels.Params):
        n_components: int = param(50, "principal components kept (capped by the pixel count)", minimum=1)
        whiten: bool = param(False, "scale components to unit variance")

    def transform(self, data: ImageData, seed: int) -> np.ndarray:
        from sklearn.decomposition import PCA

        x = _pixels(data)
        n = min(self.params.n_components, x.shape[1], len(x))
        return PCA(n_components=n, whiten=self.params.whiten, random_state=seed).fit_transform(x)


@hookimpl
def clusterbench_methods():
    return [KMeansPixels, KMeansPCA]
