"""pytest-benchmark benchmarks of the training step and the evaluation, run on demand, not in CI:

    python3 -m pytest tests/benchmarks -o addopts="" [--benchmark-json out.json]

(The suite's ``addopts`` has ``--benchmark-skip``, so a plain ``pytest`` collects and skips them.)

On a GPU they time the standard small-image configuration (CC's fast preset, ResNet-18 at
32x32, batch 256); on the CPU a tiny one, so they also run anywhere as a smoke check.
``clusterbench bench`` is the full side-by-side comparison with ratios; these give
pytest-benchmark's statistics (min, mean, stddev, rounds) and its comparison across runs
(``--benchmark-compare``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clusterbench import EngineSettings
from clusterbench.bench.kmeans_bench import synthetic_features
from clusterbench.bench.pil import float32_mode, pil_loader
from clusterbench.bench.steppers import BenchStep
from clusterbench.methods.cc import CC
from clusterbench.train.augment import GPUAugment
from clusterbench.train.deep import augment_policy
from clusterbench.train.device import sync

GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if GPU else "cpu")
SIZE, BATCH, N_IMAGES = (32, 256, 60000) if GPU else (16, 16, 512)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (N_IMAGES, 32, 32, 3), dtype=np.uint8)


def _stepper(compile: bool = GPU, graphs: bool = True, precision: str = "bf16", channels_last: bool = True):
    m = CC(CC.resolve_params({"batch_size": BATCH}, preset="fast"))
    torch.manual_seed(0)
    model = m.build_model(3, SIZE, 10).to(DEVICE)
    settings = EngineSettings(device=str(DEVICE), precision=precision, compile=compile, cuda_graphs=graphs,
                              channels_last=channels_last)
    return m, BenchStep(m, model, m.configure_optimizer(model), settings)


def _run(benchmark, fn, rounds: int = 20) -> None:
    def call():
        fn()
        sync(DEVICE)
    call(), call(), call(), call()  # warm-up: compilation, graph capture, cuDNN autotuning
    benchmark.pedantic(call, rounds=rounds, iterations=1)
    benchmark.extra_info.update(device=torch.cuda.get_device_name() if GPU else "cpu", image_size=SIZE,
                                batch_size=BATCH, images_per_s=BATCH / benchmark.stats.stats.mean)


def test_model_only_step(benchmark):
    """1: forward + backward + optimiser on pre-made views (the ceiling)."""
    _, step = _stepper()
    fmt = torch.channels_last if step.channels_last else torch.contiguous_format
    v1, v2 = (torch.rand(BATCH, 3, SIZE, SIZE, device=DEVICE).contiguous(memory_format=fmt) for _ in range(2))
    _run(benchmark, lambda: step.step_on_static_views(v1, v2, 0.5))


def test_harness_step(benchmark, images):
    """2: batch gather + two-view augmentation on the device + the same step."""
    m, step = _stepper()
    x = torch.from_numpy(images).to(DEVICE)
    aug = GPUAugment(augment_policy(m, None), SIZE, compile=GPU).to(DEVICE)
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    _run(benchmark, lambda: step.step_on_indices(aug, x, torch.randint(0, len(x), (BATCH,), device=DEVICE,
                                                                       generator=gen), gen, 0.5))


def test_pil_pipeline_step(benchmark, images):
    """3: the papers' path, torchvision on PIL images in a DataLoader, strict fp32 model."""
    m, step = _stepper(compile=False, graphs=False, precision="fp32", channels_last=False)
    workers = 8 if GPU else 0
    it = iter(pil_loader(images, augment_policy(m, None), SIZE, BATCH, workers, pin_memory=GPU))

    def one():
        a, b = next(it)
        step.step_on_views(a.to(DEVICE, non_blocking=True), b.to(DEVICE, non_blocking=True), 0.5)
    with float32_mode(tf32=False):
        for _ in range(2 * workers):  # drain what the workers prefetched while starting
            one()
        _run(benchmark, one, rounds=10)


@pytest.fixture(scope="module")
def features():
    return synthetic_features(n=60000 if GPU else 6000, dim=512, k=10)


@pytest.mark.parametrize("library", ["faiss", "sklearn"])
def test_kmeans_same_start_same_iterations(benchmark, features, library):
    """faiss against scikit-learn's Lloyd: 60,000 x 512 (6,000 on the CPU), k = 10, 20 iterations."""
    import faiss
    from sklearn.cluster import KMeans

    from clusterbench.evaluate.faiss_kmeans import cap_faiss_threads

    feats, _ = features
    init = feats[np.random.default_rng(0).choice(len(feats), 10, replace=False)]
    cap_faiss_threads(faiss)

    def fit():
        if library == "faiss":
            km = faiss.Kmeans(feats.shape[1], 10, niter=20, max_points_per_centroid=len(feats), verbose=False)
            km.train(feats, init_centroids=init)
        else:
            KMeans(10, init=init, n_init=1, max_iter=20, tol=0.0, algorithm="lloyd").fit(feats)
    benchmark.pedantic(fit, rounds=3, iterations=1)


def test_metrics_at_60000(benchmark):
    """ACC (Hungarian) + NMI + ARI at 60,000 samples."""
    from clusterbench.evaluate.metrics import evaluate

    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 60000)
    pred = np.where(rng.random(60000) < 0.7, y, rng.integers(0, 10, 60000))
    result = benchmark(evaluate, y, pred)
    assert 0.6 < result["acc"] < 0.8
