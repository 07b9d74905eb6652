"""``clusterbench bench``: where the training time goes, measured side by side in one process.

For a deep method at a given input size and batch it times, on the same model:

1. **model-only ceiling**: forward + backward + optimiser step on pre-made tensors;
2. **harness step**: GPU two-view augmentation of uint8 images + the same step
   (exactly the engine's ``TrainStep``);
3. **PIL pipeline**: the papers' code path, torchvision transforms on PIL images in a
   ``DataLoader`` with worker processes, feeding a copy of the network in fp32 -- strict
   IEEE fp32, as the papers' code specifies, and again with TF32 convolutions, which
   PyTorch turns on by default on Ampere and newer GPUs -- and feeding the harness's own
   eager step (same precision as 2: what the data path alone costs);

and prints images/s (one image = two views) with the ratios 2/1 (pipeline efficiency) and
2/3 (speed-up over the usual pipeline, against each of the three).  It also times feature extraction, the metrics
with the Hungarian matching at the dataset's size, and faiss k-means against
scikit-learn's ``KMeans`` on the same features, same k, same iterations.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch

from clusterbench.train.augment import GPUAugment
from clusterbench.settings import EngineSettings
from clusterbench.train.engine import DeepMethod, TrainStep


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
    pil: float | None           # 3: PIL + DataLoader feeding the model in strict fp32 (the papers' code path)
    pil_workers: int
    model_only_eager: float     # 1 and 2 without CUDA graphs (the before of the graphs' before/after)
    harness_eager: float
    pil_tf32: float | None = None            # 3 with TF32 convolutions/matmuls (PyTorch's GPU default for convs)
    pil_same_precision: float | None = None  # 3 feeding the harness's own eager step (bf16, channels_last)
    cuda_graphs: str = "off"
    compiled: str = "off"                       # torch.compile of the model in 1 and 2
    model_only_uncompiled: float | None = None  # 1 and 2 as above without torch.compile, when it is on
    harness_uncompiled: float | None = None

    @property
    def compile_gain(self) -> float | None:
        """Harness step with / without torch.compile (same graphs setting, same run)."""
        return self.harness / self.harness_uncompiled if self.harness_uncompiled else None

    @property
    def efficiency(self) -> float:
        return self.harness / self.model_only

    @property
    def speedup(self) -> float | None:
        """2/3 against the papers' path (strict fp32)."""
        return self.harness / self.pil if self.pil else None

    @property
    def speedup_tf32(self) -> float | None:
        return self.harness / self.pil_tf32 if self.pil_tf32 else None

    @property
    def speedup_same_precision(self) -> float | None:
        return self.harness / self.pil_same_precision if self.pil_same_precision else None


@contextlib.contextmanager
def float32_mode(tf32: bool):
    """Strict IEEE fp32 (``tf32=False``) or TF32 tensor cores for fp32 convolutions and
    matmuls, restored afterwards.  PyTorch's defaults differ by op (cuDNN convolutions
    TF32, matmuls strict), so a plain "fp32" figure on a new GPU is neither."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


class PILTwoViews(torch.utils.data.Dataset):
    """The papers' data path: PIL image -> torchvision transforms, twice.

    The images are held in a shared-memory tensor, so a spawned worker receives a handle,
    not a pickled copy of the whole array (which took ~80 s for 16 workers x 60,000 CIFAR
    images); the papers' loaders read an in-memory array the same way.
    """

    def __init__(self, x: np.ndarray, transform) -> None:
        self.x, self.transform = torch.from_numpy(np.ascontiguousarray(x)).share_memory_(), transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        from PIL import Image

        a = self.x[i].numpy()
        img = Image.fromarray(a.squeeze(-1) if a.shape[-1] == 1 else a)
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


def pil_loader(x: np.ndarray, spec, size: int, batch_size: int, workers: int,
               pin_memory: bool) -> torch.utils.data.DataLoader:
    """The papers' loader: PIL two views in ``workers`` spawned processes, shuffled, last
    batch dropped.  Spawned, not forked: a fork of a process holding CUDA graphs crashes
    when it frees them."""
    return torch.utils.data.DataLoader(
        PILTwoViews(x, _pil_transform(spec, size)), batch_size=batch_size, shuffle=True, drop_last=True,
        num_workers=workers, pin_memory=pin_memory, persistent_workers=workers > 0,
        multiprocessing_context="spawn" if workers > 0 else None)


def bench_step(method: DeepMethod, x: np.ndarray, n_classes: int, settings: EngineSettings, *, steps: int = 30,
               warmup: int = 10, pil_workers: int | None = None, pil_steps: int | None = None,
               profile: bool = False) -> StepBench:
    """Images/s of the paths for one method, batch and input size, side by side on one model.

    ``pil_steps=0`` skips the PIL path; ``None`` times it for ``steps`` steps.
    """
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

    def both(stepper: TrainStep, what: str) -> tuple[float, float]:
        """Seconds per step of 1 and 2 through ``stepper``."""
        _log(f"{method.name} {size}px batch {bs}: model-only and harness, {what}")
        return timed(model_only(stepper), steps, warmup, device), timed(harness(stepper), steps, warmup, device)

    t_model_eager, t_harness_eager = both(eager, "eager")
    t_model, t_harness = t_model_eager, t_harness_eager  # no graphs (CPU, turned off, opted out): the same step
    if graphed.use_graphs:
        t_model, t_harness = both(graphed, "CUDA graphs")
        _log(f"  graph warm-up and capture {graphed.graph_timings()}")
    t_model_plain = t_harness_plain = None
    if graphed.compile_status == "on":
        t_model_plain, t_harness_plain = both(TrainStep(method, model, opt, replace(settings, compile=False)),
                                              "without torch.compile")
    if profile:
        _profile(harness(eager), device, "eager harness step")
        if graphed.use_graphs:
            _profile(harness(graphed), device, "graphed harness step")

    # 3. the usual PIL + DataLoader pipeline feeding the same network: as the papers' code
    # runs it (its own eager, uncompiled copy in fp32, NCHW; strict and with TF32), and
    # feeding the harness's own eager step
    workers = pil_workers if pil_workers is not None else min(16, os.cpu_count() or 1)
    t_pil = t_tf32 = t_same = None
    if pil_steps != 0:
        papers_model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
        papers = TrainStep(method, papers_model, method.configure_optimizer(papers_model),
                           replace(settings, precision="fp32", cuda_graphs=False, channels_last=False, compile=False))
        loader = pil_loader(x, method.augmentation(None), size, bs, workers, pin_memory=device.type == "cuda")
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

        n_pil = pil_steps or steps
        _log(f"{method.name} {size}px batch {bs}: PIL + DataLoader, {workers} workers, fp32")
        with float32_mode(tf32=False):
            t_pil = timed(pil(papers, torch.contiguous_format), n_pil, pil_warmup, device)
        if device.type == "cuda":
            _log(f"{method.name} {size}px batch {bs}: PIL + DataLoader, TF32")
            with float32_mode(tf32=True):
                t_tf32 = timed(pil(papers, torch.contiguous_format), n_pil, pil_warmup, device)
            if settings.precision != "fp32":
                _log(f"{method.name} {size}px batch {bs}: PIL + DataLoader, harness eager step")
                t_same = timed(pil(eager, fmt), n_pil, pil_warmup, device)
        del it, loader, papers, papers_model

    def ips(t: float | None) -> float | None:
        return bs / t if t else None

    return StepBench(method.name, size, bs, bs / t_model, bs / t_harness, ips(t_pil), workers,
                     model_only_eager=bs / t_model_eager, harness_eager=bs / t_harness_eager, pil_tf32=ips(t_tf32),
                     pil_same_precision=ips(t_same), cuda_graphs=graphed.graph_status,
                     compiled=graphed.compile_status, model_only_uncompiled=ips(t_model_plain),
                     harness_uncompiled=ips(t_harness_plain))


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
    t = time.perf_counter()
    evaluate(y, pred)
    return time.perf_counter() - t


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
        t = time.perf_counter()
        for init in inits:
            labels[name].append(fn(init))
        out[f"{name}_seconds"] = time.perf_counter() - t
        out[f"{name}_acc"] = float(np.mean([evaluate(y, lab)["acc"] for lab in labels[name]]))
        # 1.0: the same partition as scikit-learn's from the same start
        out[f"{name}_agreement"] = float(np.min([evaluate(s, lab)["acc"] for s, lab in zip(labels["sklearn"],
                                                                                          labels[name])]))
    for name in ("faiss_blas", "faiss_direct", "faiss_sampled"):
        out[f"{name}_speedup"] = out["sklearn_seconds"] / out[f"{name}_seconds"]

    t = time.perf_counter()
    lab_faiss = kmeans(feats, k, seed=seed, niter=niter, nredo=nredo)
    out["used_faiss_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    lab_sk = KMeans(k, n_init=nredo, max_iter=niter, tol=0.0, random_state=seed, algorithm="lloyd").fit_predict(feats)
    out["used_sklearn_seconds"] = time.perf_counter() - t
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


def bench_inference(method: DeepMethod, model: torch.nn.Module, x: np.ndarray, settings: EngineSettings) -> float:
    """Images/s of feature extraction over the whole array (the ``kmeans``/``linear`` protocols' cost)."""
    from clusterbench.api import ImageData
    from clusterbench.train.engine import run_inference

    data = ImageData(x=x, y=np.zeros(len(x), dtype=np.int64), n_classes=1, name="bench")
    x_dev = torch.from_numpy(x).to(settings.device)
    run_inference(method, model, data.subset(np.arange(min(len(x), 2048))), settings.device,
                  settings.precision, lambda m, b: method.embed(m, b))
    _sync(torch.device(settings.device))
    t = time.perf_counter()
    run_inference(method, model, data, settings.device, settings.precision, lambda m, b: method.embed(m, b),
                  x_dev=x_dev)
    return len(x) / (time.perf_counter() - t)


def trained_features(method: DeepMethod, data, settings: EngineSettings, *, steps: int = 300,
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

    _log(f"k-means features: training {method.name} for {steps} steps")
    # uncompiled: these features need no speed, and compiling would add ~30 s to the bench
    with tempfile.TemporaryDirectory() as run_dir:
        ctx = RunContext(seed=seed, budget=Budget(steps=steps), settings=replace(settings, compile=False),
                         run_dir=Path(run_dir), evaluate=lambda labels: evaluate(data.y, labels))
        method.fit(data, ctx)
    sub = data.subset(np.arange(min(len(data), max_images)))
    feats = method.features(sub)
    note = (f"{sub.name} images ({len(sub)}), {feats.shape[1]}-d features of {method.name} trained "
            f"{steps} steps of batch {min(int(method.params.batch_size), len(data))}")
    return np.ascontiguousarray(feats, dtype=np.float32), np.asarray(sub.y), note
