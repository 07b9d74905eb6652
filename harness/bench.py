"""``clusterbench bench``: where the training time goes, measured side by side in one process.

For a deep method at a given input size and batch it times, on the same model:

1. **model-only ceiling**: forward + backward + optimiser step on pre-made tensors;
2. **harness step**: GPU two-view augmentation of uint8 images + the same step
   (exactly the engine's ``TrainStep``);
3. **PIL pipeline**: the papers' code path, torchvision transforms on PIL images in a
   ``DataLoader`` with worker processes, feeding the same step;

and prints images/s (one image = two views) with the ratios 2/1 (pipeline efficiency) and
2/3 (speed-up over the usual pipeline).  It also times feature extraction, the metrics
with the Hungarian matching at the dataset's size, and faiss k-means against
scikit-learn's ``KMeans`` on the same features, same k, same iterations.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from clusterbench.augment import GPUAugment
from clusterbench.context import EngineSettings
from clusterbench.engine import DeepMethod, TrainStep


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call: median of three timed blocks after warm-up (host clock around syncs)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    blocks = []
    per_block = max(1, steps // 3)
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(per_block):
            fn()
        _sync(device)
        blocks.append((time.perf_counter() - t) / per_block)
    return float(np.median(blocks))


@dataclass
class StepBench:
    method: str
    image_size: int
    batch_size: int
    model_only: float  # images/s
    harness: float
    pil: float | None
    pil_workers: int

    @property
    def efficiency(self) -> float:
        return self.harness / self.model_only

    @property
    def speedup(self) -> float | None:
        return self.harness / self.pil if self.pil else None


class _PILTwoViews(torch.utils.data.Dataset):
    """The papers' data path: PIL image -> torchvision transforms, twice."""

    def __init__(self, x: np.ndarray, transform) -> None:
        self.x, self.transform = x, transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.fromarray(self.x[i].squeeze(-1) if self.x.shape[-1] == 1 else self.x[i])
        return self.transform(img), self.transform(img)


def _pil_transform(spec, size: int):
    import torchvision.transforms as T

    ops = [T.RandomResizedCrop(size, scale=spec.crop_scale, ratio=spec.crop_ratio),
           T.RandomHorizontalFlip(spec.flip_p),
           T.RandomApply([T.ColorJitter(spec.brightness, spec.contrast, spec.saturation, spec.hue)], p=spec.jitter_p),
           T.RandomGrayscale(spec.grayscale_p)]
    if spec.blur_p > 0:
        k = max(3, int(0.1 * size) // 2 * 2 + 1)
        ops.append(T.RandomApply([T.GaussianBlur(k, spec.blur_sigma)], p=spec.blur_p))
    ops.append(T.ToTensor())
    if spec.mean is not None:
        ops.append(T.Normalize(spec.mean, spec.std))
    return T.Compose(ops)


def bench_step(method: DeepMethod, x: np.ndarray, n_classes: int, settings: EngineSettings, *, steps: int = 30,
               warmup: int = 10, pil_workers: int | None = None, pil_steps: int | None = None,
               profile: bool = False) -> StepBench:
    """Images/s of the three paths for one method, batch and input size."""
    device = torch.device(settings.device)
    bs = int(method.params.batch_size)
    size = int(getattr(method.params, "image_size", 0) or x.shape[1])
    chans = x.shape[-1]
    torch.manual_seed(0)
    model = method.build_model(chans, size, n_classes).to(device)
    stepper = TrainStep(method, model, method.configure_optimizer(model), settings)
    gen = torch.Generator(device=device).manual_seed(0)

    # 1. model-only ceiling: pre-made views, nothing else
    fmt = torch.channels_last if stepper.channels_last else torch.contiguous_format
    pre = [torch.rand(bs, chans, size, size, device=device).contiguous(memory_format=fmt) for _ in range(4)]
    k = iter(range(10**9))

    def model_only():
        i = next(k)
        stepper(pre[i % 4], pre[(i + 1) % 4], 0.5)

    t_model = timed(model_only, steps, warmup, device)

    # 2. the harness step: uint8 images on the device, GPU augmentation, same step
    x_dev = torch.from_numpy(x).to(device)
    aug = GPUAugment(method.augmentation(None), size, compile=settings.compile).to(device)

    def harness():
        idx = torch.randint(0, len(x_dev), (bs,), device=device, generator=gen)
        v1, v2 = stepper.views(aug, x_dev[idx], gen)
        stepper(v1, v2, 0.5)

    t_harness = timed(harness, steps, warmup, device)
    if profile:
        from torch.profiler import ProfilerActivity, profile as torch_profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch_profile(activities=acts) as prof:
            for _ in range(10):
                harness()
            _sync(device)
        key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=25), flush=True)

    # 3. the usual PIL + DataLoader pipeline feeding the same step
    workers = pil_workers if pil_workers is not None else min(16, os.cpu_count() or 1)
    t_pil = None
    if pil_steps != 0:
        loader = torch.utils.data.DataLoader(
            _PILTwoViews(x, _pil_transform(method.augmentation(None), size)), batch_size=bs, shuffle=True,
            drop_last=True, num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
        it = iter(loader)

        def pil():
            nonlocal it
            try:
                v1, v2 = next(it)
            except StopIteration:
                it = iter(loader)
                v1, v2 = next(it)
            v1 = v1.to(device, non_blocking=True).contiguous(memory_format=fmt)
            v2 = v2.to(device, non_blocking=True).contiguous(memory_format=fmt)
            stepper(v1, v2, 0.5)

        t_pil = timed(pil, pil_steps or steps, max(3, warmup // 2), device)
        del it, loader
    return StepBench(method.name, size, bs, bs / t_model, bs / t_harness, bs / t_pil if t_pil else None, workers)


def bench_eval(n: int = 60000, dim: int = 512, k: int = 10, niter: int = 20, nredo: int = 3, seed: int = 0) -> dict[str, float]:
    """Metrics + Hungarian at n samples, and faiss vs scikit-learn k-means on n x dim features."""
    from sklearn.cluster import KMeans

    from clusterbench.kmeans import kmeans
    from clusterbench.metrics import evaluate

    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centers = rng.normal(0, 1, (k, dim)).astype(np.float32)
    feats = (centers[y] + rng.normal(0, 1.0, (n, dim))).astype(np.float32)
    pred = np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n))
    t = time.perf_counter()
    evaluate(y, pred)
    t_metrics = time.perf_counter() - t
    t = time.perf_counter()
    lab_faiss = kmeans(feats, k, seed=seed, niter=niter, nredo=nredo)
    t_faiss = time.perf_counter() - t
    t = time.perf_counter()
    lab_sk = KMeans(k, n_init=nredo, max_iter=niter, tol=0.0, random_state=seed,
                    algorithm="lloyd").fit_predict(feats)
    t_sk = time.perf_counter() - t
    return {"n": n, "dim": dim, "k": k, "niter": niter, "restarts": nredo, "metrics_seconds": t_metrics,
            "faiss_seconds": t_faiss, "sklearn_seconds": t_sk, "faiss_speedup": t_sk / t_faiss,
            "faiss_acc": evaluate(y, lab_faiss)["acc"], "sklearn_acc": evaluate(y, lab_sk)["acc"]}


def bench_inference(method: DeepMethod, model: torch.nn.Module, x: np.ndarray, settings: EngineSettings) -> float:
    """Images/s of feature extraction over the whole array (the ``kmeans``/``linear`` protocols' cost)."""
    from clusterbench.api import ImageData
    from clusterbench.engine import run_inference

    data = ImageData(x=x, y=np.zeros(len(x), dtype=np.int64), n_classes=1, name="bench")
    x_dev = torch.from_numpy(x).to(settings.device)
    run_inference(method, model, data.subset(np.arange(min(len(x), 2048))), settings.device,
                  settings.precision, lambda m, b: method.embed(m, b))
    _sync(torch.device(settings.device))
    t = time.perf_counter()
    run_inference(method, model, data, settings.device, settings.precision, lambda m, b: method.embed(m, b),
                  x_dev=x_dev)
    return len(x) / (time.perf_counter() - t)
