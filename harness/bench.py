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

import copy
import os
import time
from dataclasses import dataclass, replace
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
    """Images/s (one image = two views) of each path, measured one after the other on one model."""

    method: str
    image_size: int
    batch_size: int
    model_only: float           # 1: the ceiling, as a CUDA graph when graphs are on
    harness: float              # 2: the engine's step, as a CUDA graph when graphs are on
    pil: float | None           # 3: PIL + DataLoader feeding the model in fp32 (the papers' code path)
    pil_workers: int
    model_only_eager: float     # 1 and 2 without CUDA graphs (the before of the graphs' before/after)
    harness_eager: float
    pil_same_precision: float | None = None  # 3 feeding the harness's own eager step (bf16, channels_last)
    cuda_graphs: str = "off"

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
    """Images/s of the paths for one method, batch and input size, side by side on one model."""
    device = torch.device(settings.device)
    bs = int(method.params.batch_size)
    size = int(getattr(method.params, "image_size", 0) or x.shape[1])
    chans = x.shape[-1]
    torch.manual_seed(0)
    model = method.build_model(chans, size, n_classes).to(device)
    opt = method.configure_optimizer(model)
    eager = TrainStep(method, model, opt, replace(settings, cuda_graphs=False))
    graphed = TrainStep(method, model, opt, settings) if settings.cuda_graphs else eager
    gen = torch.Generator(device=device).manual_seed(0)
    x_dev = torch.from_numpy(x).to(device)
    aug = GPUAugment(method.augmentation(None), size, compile=settings.augment_compiled).to(device)

    # 1. model-only ceiling: pre-made views, nothing else
    fmt = torch.channels_last if eager.channels_last else torch.contiguous_format
    v1, v2 = (torch.rand(bs, chans, size, size, device=device).contiguous(memory_format=fmt) for _ in range(2))

    def model_only(stepper: TrainStep):
        return lambda: stepper.on_fixed(v1, v2, 0.5)

    # 2. the harness step: uint8 images on the device, GPU augmentation, same model
    def harness(stepper: TrainStep):
        def step():
            idx = torch.randint(0, len(x_dev), (bs,), device=device, generator=gen)
            stepper.on_batch(aug, x_dev, idx, gen, 0.5)
        return step

    _log(f"{method.name} {size}px batch {bs}: model-only and harness, eager")
    t_model_eager = timed(model_only(eager), steps, warmup, device)
    t_harness_eager = timed(harness(eager), steps, warmup, device)
    t_model, t_harness = t_model_eager, t_harness_eager  # no graphs (CPU, turned off, opted out): the same step
    if graphed.use_graphs:
        _log(f"{method.name} {size}px batch {bs}: model-only and harness, CUDA graphs")
        t_model = timed(model_only(graphed), steps, warmup, device)
        _log(f"  graphed model-only done {graphed.graph_timings()}")
        t_harness = timed(harness(graphed), steps, warmup, device)
        _log(f"  graphed harness done {graphed.graph_timings()}")
    if profile:
        _profile(harness(eager), device, "eager harness step")
        if graphed.use_graphs:
            _profile(harness(graphed), device, "graphed harness step")

    # 3. the usual PIL + DataLoader pipeline feeding the same network: as the papers' code
    # runs it (its own copy in fp32, NCHW), and feeding the harness's own eager step
    workers = pil_workers if pil_workers is not None else min(16, os.cpu_count() or 1)
    t_pil = t_pil_same = None
    if pil_steps != 0:
        papers_model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
        papers = TrainStep(method, papers_model, method.configure_optimizer(papers_model),
                           replace(settings, precision="fp32", cuda_graphs=False, channels_last=False))
        # spawned, not forked: a fork of a process holding CUDA graphs crashes when it frees them
        # (the cost: each worker unpickles the image array at start, ~80 s for 16 workers x 60,000
        # CIFAR images on the H100 box; untimed)
        loader = torch.utils.data.DataLoader(
            _PILTwoViews(x, _pil_transform(method.augmentation(None), size)), batch_size=bs, shuffle=True,
            drop_last=True, num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
            multiprocessing_context="spawn" if workers > 0 else None)
        it = iter(loader)
        # warm-up drains what the workers prefetch while they start (prefetch_factor 2 each),
        # so the timed steps see the pipeline's steady rate, not a full queue
        pil_warmup = max(3, warmup // 2) + 2 * workers

        def pil(stepper: TrainStep, fmt_in):
            def step():
                nonlocal it
                try:
                    a, b = next(it)
                except StopIteration:
                    it = iter(loader)
                    a, b = next(it)
                stepper(a.to(device, non_blocking=True).contiguous(memory_format=fmt_in),
                        b.to(device, non_blocking=True).contiguous(memory_format=fmt_in), 0.5)
            return step

        _log(f"{method.name} {size}px batch {bs}: PIL + DataLoader, {workers} workers")
        t_pil = timed(pil(papers, torch.contiguous_format), pil_steps or steps, pil_warmup, device)
        if settings.precision != "fp32" and device.type == "cuda":
            t_pil_same = timed(pil(eager, fmt), pil_steps or steps, pil_warmup, device)
        del it, loader, papers, papers_model
    return StepBench(method.name, size, bs, bs / t_model, bs / t_harness, bs / t_pil if t_pil else None, workers,
                     model_only_eager=bs / t_model_eager, harness_eager=bs / t_harness_eager,
                     pil_same_precision=bs / t_pil_same if t_pil_same else None, cuda_graphs=graphed.graph_status)


def _log(msg: str) -> None:
    """Where a long benchmark is, on stderr (the table goes to stdout)."""
    import sys

    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _profile(step: Callable[[], Any], device: torch.device, title: str) -> None:
    """torch.profiler's top operators over 10 steps (GPU time on a GPU)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=acts) as prof:
        for _ in range(10):
            step()
        _sync(device)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(f"--- profile: {title} (10 steps) ---")
    print(prof.key_averages().table(sort_by=key, row_limit=20), flush=True)


def bench_eval(n: int = 60000, dim: int = 512, k: int = 10, niter: int = 20, nredo: int = 3,
               seed: int = 0) -> dict[str, float]:
    """Metrics + Hungarian at n samples, and faiss vs scikit-learn k-means on n x dim features.

    k-means is compared twice.  Same work: both start each of ``nredo`` restarts from the
    same k random points and run exactly ``niter`` Lloyd iterations, so the seconds compare
    the implementations and the labels must agree.  As used: the harness's ``kmeans``
    (faiss, random init) against scikit-learn's default (k-means++ init, which costs extra
    passes), same k, iterations and restarts.
    """
    import faiss
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

    inits = [feats[rng.choice(n, k, replace=False)] for _ in range(nredo)]
    t_f = t_s = 0.0
    agree, acc_f, acc_s = [], [], []
    for init in inits:
        t = time.perf_counter()
        km = faiss.Kmeans(dim, k, niter=niter, max_points_per_centroid=n, verbose=False)
        km.train(feats, init_centroids=init)
        lab_f = km.index.search(feats, 1)[1].ravel()
        t_f += time.perf_counter() - t
        t = time.perf_counter()
        lab_s = KMeans(k, init=init, n_init=1, max_iter=niter, tol=0.0, algorithm="lloyd").fit_predict(feats)
        t_s += time.perf_counter() - t
        agree.append(evaluate(lab_s, lab_f)["acc"])  # 1.0: the same partition
        acc_f.append(evaluate(y, lab_f)["acc"])
        acc_s.append(evaluate(y, lab_s)["acc"])

    t = time.perf_counter()
    lab_faiss = kmeans(feats, k, seed=seed, niter=niter, nredo=nredo)
    t_faiss = time.perf_counter() - t
    t = time.perf_counter()
    lab_sk = KMeans(k, n_init=nredo, max_iter=niter, tol=0.0, random_state=seed, algorithm="lloyd").fit_predict(feats)
    t_sk = time.perf_counter() - t
    return {"n": n, "dim": dim, "k": k, "niter": niter, "restarts": nredo, "metrics_seconds": t_metrics,
            "same_init_faiss_seconds": t_f, "same_init_sklearn_seconds": t_s, "same_init_speedup": t_s / t_f,
            "same_init_label_agreement": float(np.min(agree)), "same_init_faiss_acc": float(np.mean(acc_f)),
            "same_init_sklearn_acc": float(np.mean(acc_s)),
            "faiss_seconds": t_faiss, "sklearn_seconds": t_sk, "faiss_speedup": t_sk / t_faiss,
            "faiss_acc": evaluate(y, lab_faiss)["acc"], "sklearn_acc": evaluate(y, lab_sk)["acc"],
            "cpu_threads": faiss.omp_get_max_threads()}


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
