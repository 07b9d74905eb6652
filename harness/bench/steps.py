"""``clusterbench bench``: where a deep method's training time goes, measured side by side.

For a deep method at a given input size and batch it times, on the same model:

1. **model-only ceiling**: forward + backward + optimiser step on pre-made tensors;
2. **harness step**: GPU two-view augmentation of uint8 images + the same step
   (exactly the engine's ``TrainStep``);
3. **PIL pipeline**: the papers' code path, torchvision transforms on PIL images in a
   ``DataLoader`` with worker processes (``clusterbench.bench.pil``), feeding a copy of the
   network in fp32 -- strict IEEE fp32, as the papers' code specifies, and again with TF32
   convolutions, which PyTorch turns on by default on Ampere and newer GPUs -- and feeding
   the harness's own eager step (same precision as 2: what the data path alone costs);

and reports images/s (one image = two views) with the ratios 2/1 (pipeline efficiency) and
2/3 (speed-up over the usual pipeline, against each of the three), plus the median and IQR
of every timing.  It also times feature extraction (``bench_inference``).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch

from clusterbench.api import ImageData
from clusterbench.bench.pil import float32_mode, pil_loader
from clusterbench.bench.steppers import BenchStep
from clusterbench.bench.timing import Timing, log, profile_steps, timed
from clusterbench.settings import EngineSettings
from clusterbench.train.augment import AugmentPolicy, GPUAugment, view_specs
from clusterbench.train.deep import DeepMethod, augment_policy
from clusterbench.train.inference import Trained


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
    timings: dict[str, dict[str, float]] = field(default_factory=dict)  # path -> median_s, iqr_s, calls

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


@dataclass
class _Rig:
    """One model, its optimiser and the steppers and inputs every timed path shares."""

    method: DeepMethod
    data: ImageData
    settings: EngineSettings
    device: torch.device
    spec: AugmentPolicy
    size: int
    bs: int
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    eager: BenchStep
    graphed: BenchStep
    steps: int
    warmup: int
    x_dev: torch.Tensor = field(init=False)       # the images, uint8 on the device (path 2)
    gen: torch.Generator = field(init=False)
    aug: GPUAugment = field(init=False)
    views: tuple[torch.Tensor, torch.Tensor] = field(init=False)  # the fixed views of path 1

    def __post_init__(self) -> None:
        self.x_dev = torch.from_numpy(self.data.x).to(self.device)
        self.gen = torch.Generator(device=self.device).manual_seed(0)
        self.aug = GPUAugment(self.spec, self.size, compile=self.settings.augment_compiled).to(self.device)
        fmt = torch.channels_last if self.eager.channels_last else torch.contiguous_format
        shape = (self.bs, self.data.channels, self.size, self.size)
        self.views = tuple(torch.rand(shape, device=self.device).contiguous(memory_format=fmt) for _ in range(2))

    def time(self, what: str, fn: Callable[[], Any], steps: int | None = None, warmup: int | None = None) -> Timing:
        log(f"{self.method.name} {self.size}px batch {self.bs}: {what}")
        return timed(fn, steps or self.steps, self.warmup if warmup is None else warmup, self.device)

    def model_only(self, stepper: BenchStep) -> Callable[[], Any]:
        """1: pre-made views, nothing else."""
        return lambda: stepper.step_on_static_views(*self.views, 0.5)

    def harness(self, stepper: BenchStep) -> Callable[[], Any]:
        """2: uint8 images on the device, GPU augmentation, the same model."""
        def step():
            idx = torch.randint(0, len(self.x_dev), (self.bs,), device=self.device, generator=self.gen)
            stepper.step_on_indices(self.aug, self.x_dev, idx, self.gen, 0.5)
        return step


def _rig(method: DeepMethod, data: ImageData, settings: EngineSettings, steps: int, warmup: int) -> _Rig:
    device = torch.device(settings.device)
    size = method.model_input_size(data)
    torch.manual_seed(0)
    model = method.build_model(data.channels, size, method.params.n_clusters or data.n_classes).to(device)
    opt = method.configure_optimizer(model)
    eager = BenchStep(method, model, opt, replace(settings, cuda_graphs=False))
    graphed = BenchStep(method, model, opt, settings) if settings.cuda_graphs else eager
    return _Rig(method, data, settings, device, augment_policy(method, data), size, int(method.params.batch_size),
                model, opt, eager, graphed, steps, warmup)


def _model_and_harness(rig: _Rig, stepper: BenchStep, what: str, suffix: str) -> dict[str, Timing]:
    return {f"model_only{suffix}": rig.time(f"model-only, {what}", rig.model_only(stepper)),
            f"harness{suffix}": rig.time(f"harness, {what}", rig.harness(stepper))}


def _pil_paths(rig: _Rig, workers: int, pil_steps: int | None) -> dict[str, Timing]:
    """3: the PIL + DataLoader pipeline, as the papers' code runs it (its own eager, uncompiled
    copy of the network in fp32, NCHW; strict and with TF32) and feeding the harness's eager step."""
    papers_model = copy.deepcopy(rig.model).to(memory_format=torch.contiguous_format)
    papers = BenchStep(rig.method, papers_model, rig.method.configure_optimizer(papers_model),
                       replace(rig.settings, precision="fp32", cuda_graphs=False, channels_last=False, compile=False))
    loader = pil_loader(rig.data.x, rig.spec, rig.size, rig.bs, workers, pin_memory=rig.device.type == "cuda")
    it = iter(loader)
    # warm-up drains what the workers prefetch while they start (prefetch_factor 2 each),
    # so the timed steps see the pipeline's steady rate, not a full queue
    warmup = max(3, rig.warmup // 2) + 2 * workers

    def pil(stepper: BenchStep, fmt: torch.memory_format) -> Callable[[], None]:
        def step():
            nonlocal it
            try:
                a, b = next(it)
            except StopIteration:
                it = iter(loader)
                a, b = next(it)
            stepper.step_on_views(a.to(rig.device, non_blocking=True).contiguous(memory_format=fmt),
                                  b.to(rig.device, non_blocking=True).contiguous(memory_format=fmt), 0.5)
        return step

    n = pil_steps or rig.steps
    out = {}
    with float32_mode(tf32=False):
        out["pil"] = rig.time(f"PIL + DataLoader, {workers} workers, fp32", pil(papers, torch.contiguous_format), n,
                              warmup)
    if rig.device.type == "cuda":
        with float32_mode(tf32=True):
            out["pil_tf32"] = rig.time("PIL + DataLoader, TF32", pil(papers, torch.contiguous_format), n, warmup)
        if rig.settings.precision != "fp32":
            fmt = torch.channels_last if rig.eager.channels_last else torch.contiguous_format
            out["pil_same_precision"] = rig.time("PIL + DataLoader, harness eager step", pil(rig.eager, fmt), n,
                                                 warmup)
    return out


def bench_step(method: DeepMethod, data: ImageData, settings: EngineSettings, *, steps: int = 30,
               warmup: int = 10, pil_workers: int | None = None, pil_steps: int | None = None,
               profile: bool = False) -> StepBench:
    """Images/s of the paths for one method, batch and input size, side by side on one model.

    ``pil_steps=0`` skips the PIL path; ``None`` times it for ``steps`` steps.
    """
    rig = _rig(method, data, settings, steps, warmup)
    t = _model_and_harness(rig, rig.eager, "eager", "_eager")
    if rig.graphed.use_graphs:
        t.update(_model_and_harness(rig, rig.graphed, "CUDA graphs", ""))
        log(f"  graph warm-up and capture {rig.graphed.graph_timings()}")
    else:  # no graphs (CPU, turned off, opted out): the same step
        t.update(model_only=t["model_only_eager"], harness=t["harness_eager"])
    if rig.graphed.compile_status == "on":
        plain = BenchStep(method, rig.model, rig.opt, replace(settings, compile=False))
        t.update(_model_and_harness(rig, plain, "without torch.compile", "_uncompiled"))
    if profile:
        profile_steps(rig.harness(rig.eager), rig.device, "eager harness step")
        if rig.graphed.use_graphs:
            profile_steps(rig.harness(rig.graphed), rig.device, "graphed harness step")
    workers = pil_workers if pil_workers is not None else min(16, os.cpu_count() or 1)
    if pil_steps != 0:
        t.update(_pil_paths(rig, workers, pil_steps))
    ips = {k: rig.bs / v.median_s for k, v in t.items()}
    return StepBench(method.name, rig.size, rig.bs, ips["model_only"], ips["harness"], ips.get("pil"), workers,
                     model_only_eager=ips["model_only_eager"], harness_eager=ips["harness_eager"],
                     pil_tf32=ips.get("pil_tf32"), pil_same_precision=ips.get("pil_same_precision"),
                     cuda_graphs=rig.graphed.graph_status, compiled=rig.graphed.compile_status,
                     model_only_uncompiled=ips.get("model_only_uncompiled"),
                     harness_uncompiled=ips.get("harness_uncompiled"), timings={k: v.as_dict() for k, v in t.items()})


def bench_inference(method: DeepMethod, model: torch.nn.Module, data: ImageData, settings: EngineSettings) -> float:
    """Images/s of feature extraction over the whole array (the ``kmeans``/``linear`` protocols' cost)."""
    device = torch.device(settings.device)
    spec = augment_policy(method, data)
    first = view_specs(spec)[0]  # every view normalises alike
    trained = Trained(model.to(device), device, settings.precision, method.model_input_size(data), first.mean,
                      first.std, method.eval_batch_size)
    x_dev = torch.from_numpy(data.x).to(device)
    trained.apply(method.embed, x_dev[:2048])  # warm-up: cuDNN algorithms, allocator
    t = timed(lambda: trained.apply(method.embed, x_dev), 1, 1, device)
    return len(data) / t.median_s
