"""The training engine every deep method shares, and the ``DeepMethod`` base class.

A deep method says what is its own (its model, its loss, its optimiser, its augmentation
policy, its prediction rule); the engine does the rest once for all: the dataset lives on
the device as uint8, two augmented views per image are made there with per-sample
parameters, the step runs under bf16 autocast with channels_last (and, on a GPU, is
replayed as one CUDA graph: see ``TrainStep``), the budget is checked
every step, the loss is checked for NaN without a host sync per step, learning curves
(loss, throughput, cheap ACC/NMI) are logged, and a checkpoint every epoch lets an
interrupted run resume where it stopped.
"""

from __future__ import annotations

import abc
import contextlib
import io
import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from clusterbench.api import ImageData, Method, TrainStats
from clusterbench.errors import GraphUnavailable, TrainingDiverged
from clusterbench.train.augment import AugmentSpec, GPUAugment, eval_transform, two_views
from clusterbench.context import RunContext
from clusterbench.results.io import atomic_write_bytes


class DeepMethod(Method):
    """Base for methods trained by the engine.

    ``Params`` must define ``batch_size``, ``lr``, ``weight_decay``, ``image_size``
    (0 = the dataset's own size) and ``n_clusters`` (0 = the dataset's number of classes).
    """

    deep = True
    protocols = ("head", "kmeans", "linear")
    #: The step may be replayed as a CUDA graph: ``training_loss`` has fixed shapes, no
    #: host sync and no Python state that changes from step to step (it runs once, at
    #: capture).  Per-step Python logic belongs in ``after_step``, which always runs.
    cuda_graphs: bool = True
    #: The model may be run through ``torch.compile`` (the default on a GPU).  A method whose
    #: forward cannot be compiled, or not to the same numbers, sets this False.
    compile_model: bool = True
    eval_batch_size: int = 1024

    # ---- what a method must say -----------------------------------------------------
    @abc.abstractmethod
    def build_model(self, in_chans: int, image_size: int, n_clusters: int) -> nn.Module:
        """The network, freshly initialised (the engine moves it to the device)."""

    @abc.abstractmethod
    def training_loss(self, model: nn.Module, v1: torch.Tensor, v2: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms for one batch of two views; must include ``"loss"`` (what is minimised)."""

    @abc.abstractmethod
    def cluster_logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """(B, K) scores whose argmax is the predicted cluster (the ``head`` protocol)."""

    @abc.abstractmethod
    def embed(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """(B, D) features for the ``kmeans`` and ``linear`` protocols."""

    def augmentation(self, data: ImageData) -> AugmentSpec:
        """The two-view augmentation policy (default: SimCLR-style, as CC uses on CIFAR)."""
        return AugmentSpec()

    def configure_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """Adam with the method's lr and weight decay (fused kernels on the GPU)."""
        fused = next(model.parameters()).is_cuda
        return torch.optim.Adam(model.parameters(), lr=self.params.lr, weight_decay=self.params.weight_decay,
                                fused=fused or None)

    def lr_factor(self, progress: float) -> float:
        """Learning-rate multiplier at ``progress`` in [0, 1] of the budget (default: constant)."""
        return 1.0

    def after_step(self, model: nn.Module, progress: float) -> None:
        """Hook after each optimiser step (e.g. a momentum encoder's EMA update)."""

    def model_input_size(self, data: ImageData) -> int:
        return int(getattr(self.params, "image_size", 0) or data.image_size)

    # ---- Method interface -------------------------------------------------------------
    def fit(self, data: ImageData, ctx: RunContext) -> TrainStats:
        self.model, stats = Engine(self, data, ctx).train()
        self._device = ctx.device
        self._precision = ctx.settings.precision
        return stats

    def _batched(self, data: ImageData, fn) -> np.ndarray:
        return run_inference(self, self.model, data, self._device, self._precision, fn)

    def predict(self, data: ImageData) -> np.ndarray:
        return self._batched(data, lambda m, x: self.cluster_logits(m, x).argmax(1)).astype(np.int64)

    def features(self, data: ImageData) -> np.ndarray:
        return self._batched(data, lambda m, x: self.embed(m, x).float())


def _autocast(device: str, precision: str, cache: bool = True):
    """bf16 autocast on the GPU; ``cache=False`` inside CUDA graphs (the cast cache would
    hold tensors from the capture's memory pool across replays)."""
    if device.startswith("cuda") and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()


@torch.no_grad()
def run_inference(method: DeepMethod, model: nn.Module, data: ImageData, device: str, precision: str,
                  fn, x_dev: torch.Tensor | None = None) -> np.ndarray:
    """Apply ``fn(model, batch)`` over the data in eval mode with the test-time transform."""
    was_training = model.training
    model.eval()
    size = method.model_input_size(data)
    spec = method.augmentation(data)
    outs = []
    x_all = x_dev if x_dev is not None else torch.from_numpy(data.x)
    bs = method.eval_batch_size
    for i in range(0, len(data), bs):
        xb = x_all[i:i + bs].to(device, non_blocking=True)
        xb = eval_transform(xb, size, spec.mean, spec.std)
        if device.startswith("cuda"):
            xb = xb.contiguous(memory_format=torch.channels_last)
        with _autocast(device, precision):
            outs.append(fn(model, xb))
    model.train(was_training)
    out = torch.cat(outs)
    return (out.float() if out.is_floating_point() else out).cpu().numpy()  # numpy has no bf16


def graph_blocker(device_type: str, settings, method: DeepMethod, opt: torch.optim.Optimizer,
                  scheduled: bool) -> str | None:
    """Why a method's step cannot be replayed as a CUDA graph, or None when it can."""
    if device_type != "cuda":
        return "no CUDA device"
    if not getattr(settings, "cuda_graphs", True):
        return "disabled (--no-cuda-graphs)"
    if not getattr(method, "cuda_graphs", True):
        return f"method {method.name!r} opts out"
    if scheduled and not all(g.get("fused") or "capturable" in g for g in opt.param_groups):
        # a schedule needs the lr as a device tensor, which only fused/capturable steps read in-graph
        return f"the lr schedule needs a fused or capturable optimiser, not {type(opt).__name__}"
    return None


class TrainStep:
    """One optimisation step on two views: what the engine loops over and ``bench`` times.

    Model in channels_last, bf16 autocast on the GPU, ``torch.compile`` when
    ``settings.compile`` (the CLI's default on a GPU: ~1.3x per step after ~30 s of
    compiling; a method may opt out, a failed compile falls back to eager, and
    ``compile_status`` says which), the method's lr schedule applied in place (no
    optimiser rebuild), no host sync.  On a
    GPU the whole step (batch gather, two-view augmentation, forward, backward,
    optimiser) is replayed as one CUDA graph (see ``clusterbench.train.cudagraph``) unless
    ``settings.cuda_graphs`` is off or the method or its optimiser cannot be captured;
    ``graph_status`` says which, and the run records it.
    """

    def __init__(self, method: DeepMethod, model: nn.Module, opt: torch.optim.Optimizer, settings) -> None:
        self.method, self.model, self.opt, self.settings = method, model, opt, settings
        self.device = next(model.parameters()).device
        self.channels_last = self.device.type == "cuda" and settings.channels_last
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.base_lrs = [float(g["lr"]) for g in opt.param_groups]
        self.scheduled = type(method).lr_factor is not DeepMethod.lr_factor
        if not settings.compile:
            self.step_model, self.compile_status = model, "off"
        elif not getattr(method, "compile_model", True):
            self.step_model, self.compile_status = model, f"off: method {method.name!r} opts out"
        else:
            self.step_model, self.compile_status = torch.compile(model), "on"
        model.train()
        blocker = graph_blocker(self.device.type, settings, method, opt, self.scheduled)
        self.use_graphs = blocker is None
        self.graph_status = "on" if blocker is None else f"off: {blocker}"
        if self.use_graphs:
            self._make_optimizer_capturable()
        self._graphs: dict[str, Any] = {}
        self._idx: torch.Tensor | None = None

    # ---- CUDA graphs --------------------------------------------------------------------
    def _make_optimizer_capturable(self) -> None:
        """Optimiser state on the device (``capturable``) and, under an lr schedule, the lr
        as a device tensor the step updates in place, so replays see the new value."""
        for g in self.opt.param_groups:
            if "capturable" in g:
                g["capturable"] = True
            if self.scheduled:
                g["lr"] = torch.tensor(float(g["lr"]), device=self.device)

    def _graphed(self, key: str, body, generators: tuple[torch.Generator, ...]) -> dict[str, torch.Tensor] | None:
        """Run ``body`` through its CapturedStep; None (and graphs off) if it cannot be captured."""
        from clusterbench.train.cudagraph import CapturedStep

        if key not in self._graphs:
            self._graphs[key] = CapturedStep(body, self.device, generators=generators)
        try:
            return self._graphs[key]()
        except GraphUnavailable as exc:
            import warnings

            warnings.warn(f"CUDA graph capture of the {self.method.name} step failed, running eagerly: {exc}")
            self.use_graphs, self.graph_status = False, f"off: capture failed ({exc})"
            return None

    def graph_timings(self) -> dict[str, float]:
        """Seconds spent warming up and capturing the graphs (one-off costs inside the budget)."""
        g = self._graphs.values()
        return {"graph_warmup_seconds": round(sum(c.warmup_seconds for c in g), 3),
                "graph_capture_seconds": round(sum(c.capture_seconds for c in g), 3)} if g else {}

    # ---- the step ---------------------------------------------------------------------
    def set_progress(self, progress: float) -> None:
        """Apply the method's lr schedule at ``progress`` (in place: graphs read the tensor)."""
        if not self.scheduled:
            return
        factor = self.method.lr_factor(progress)
        for g, lr0 in zip(self.opt.param_groups, self.base_lrs):
            if isinstance(g["lr"], torch.Tensor):
                g["lr"].fill_(lr0 * factor)
            else:
                g["lr"] = lr0 * factor

    def _loss(self, v1: torch.Tensor, v2: torch.Tensor, cache: bool) -> dict[str, torch.Tensor]:
        """The method's loss terms; if compiling the model fails (no compiler, an op it cannot
        trace), warn once and go on with the eager model, as the record then says."""
        from torch._dynamo.exc import TorchDynamoException

        def loss(model: nn.Module) -> dict[str, torch.Tensor]:
            with _autocast(self.device.type, self.settings.precision, cache):
                return self.method.training_loss(model, v1, v2)

        try:
            return loss(self.step_model)
        except TorchDynamoException as exc:
            if self.step_model is self.model:
                raise
            import warnings

            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            warnings.warn(f"torch.compile of the {self.method.name} model failed, running it eagerly: {reason}")
            self.step_model, self.compile_status = self.model, f"off: compile failed ({reason})"
            return loss(self.model)

    def _optimise(self, v1: torch.Tensor, v2: torch.Tensor, cache: bool = True) -> dict[str, torch.Tensor]:
        terms = self._loss(v1, v2, cache)
        self.opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        self.opt.step()
        # detached: a caller holding the loss must not keep the step's autograd graph alive
        return {k: v.detach() for k, v in terms.items()}

    def views(self, aug: GPUAugment, x: torch.Tensor, gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        v1, v2 = two_views(aug, x, gen)
        if self.channels_last:
            v1 = v1.contiguous(memory_format=torch.channels_last)
            v2 = v2.contiguous(memory_format=torch.channels_last)
        return v1, v2

    def _step(self, progress: float, eager, graph_key: str | None = None, graph_body=None,
              generators: tuple[torch.Generator, ...] = ()) -> dict[str, torch.Tensor]:
        """lr schedule, then the step (replayed as graph ``graph_key`` when graphs are on and it
        captures, else ``eager()``), then the method's ``after_step``."""
        self.set_progress(progress)
        terms = None
        if graph_key is not None and self.use_graphs:
            terms = self._graphed(graph_key, graph_body, generators)
        if terms is None:
            terms = eager()
        self.method.after_step(self.model, progress)
        return terms

    def __call__(self, v1: torch.Tensor, v2: torch.Tensor, progress: float) -> dict[str, torch.Tensor]:
        """An eager step on ready-made views (the PIL pipeline, tests)."""
        return self._step(progress, lambda: self._optimise(v1, v2))

    def on_batch(self, aug: GPUAugment, x_all: torch.Tensor, idx: torch.Tensor, gen: torch.Generator | None,
                 progress: float) -> dict[str, torch.Tensor]:
        """The harness step: gather ``x_all[idx]`` (uint8 on the device), make two views,
        optimise.  Graphed: ``idx`` is copied into a fixed buffer and the graph replayed."""
        if self.use_graphs:
            if self._idx is None:
                self._idx = idx.clone()
            else:
                self._idx.copy_(idx)
        return self._step(progress, lambda: self._optimise(*self.views(aug, x_all[idx], gen)), "batch",
                          lambda: self._optimise(*self.views(aug, x_all[self._idx], gen), cache=False),
                          (gen,) if gen is not None else ())

    def on_fixed(self, v1: torch.Tensor, v2: torch.Tensor, progress: float) -> dict[str, torch.Tensor]:
        """A step on the same view tensors every call (the bench's model-only ceiling),
        graphed when graphs are on."""
        return self._step(progress, lambda: self._optimise(v1, v2), "fixed",
                          lambda: self._optimise(v1, v2, cache=False))


class Engine:
    """Trains one DeepMethod on one dataset under the run's budget."""

    def __init__(self, method: DeepMethod, data: ImageData, ctx: RunContext) -> None:
        self.method, self.data, self.ctx = method, data, ctx
        self.device = torch.device(ctx.device)
        self.cuda = self.device.type == "cuda"
        self.params = method.params
        self.batch_size = int(self.params.batch_size)
        n = len(data)
        if n < 2:
            raise ValueError("need at least 2 images to train")
        self.batch_size = min(self.batch_size, n)  # tiny datasets: one batch per epoch
        self.steps_per_epoch = n // self.batch_size  # drop_last, as the papers' loaders
        self.n_clusters = getattr(self.params, "n_clusters", 0) or data.n_classes

    # ---- checkpoints ------------------------------------------------------------------
    def _save(self, model, opt, gen, state: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                    "state": state, "curve": self.ctx.curve}, buf)
        atomic_write_bytes(self.ctx.checkpoint_path, buf.getvalue())

    def _load(self, model, opt, gen) -> dict[str, Any] | None:
        path = self.ctx.checkpoint_path
        if not path.exists():
            return None
        try:
            ck = torch.load(path, map_location=self.device, weights_only=False)
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            gen.set_state(ck["generator"].cpu())  # generator states are CPU byte tensors
        except Exception as exc:  # a damaged checkpoint: start over rather than fail
            import warnings

            warnings.warn(f"checkpoint {path} could not be loaded ({type(exc).__name__}: {exc}); restarting the run")
            return None
        self.ctx.curve[:] = ck.get("curve", [])
        return ck["state"]

    # ---- the loop -----------------------------------------------------------------------
    def train(self) -> tuple[nn.Module, TrainStats]:
        method, ctx, data = self.method, self.ctx, self.data
        budget = ctx.budget
        if budget.empty:
            raise ValueError("a deep method needs a budget (epochs=, steps=, images= or minutes=)")
        size = method.model_input_size(data)
        model = method.build_model(data.channels, size, self.n_clusters).to(self.device)
        opt = method.configure_optimizer(model)
        stepper = TrainStep(method, model, opt, ctx.settings)
        aug = GPUAugment(method.augmentation(data), size, compile=ctx.settings.augment_compiled).to(self.device)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(ctx.derived_seed("engine"))

        x_dev = torch.from_numpy(data.x).to(self.device)  # uint8 on the device, once
        state = self._load(model, opt, gen) or {"epoch": 0, "step": 0, "images": 0, "seconds": 0.0}
        resumed_from = state["epoch"] if state["step"] else None
        eval_every = ctx.settings.eval_every or self._auto_eval_every()
        n = len(data)
        bs = self.batch_size

        spe = self.steps_per_epoch

        def progress() -> float:
            return budget.fraction(epoch=state["step"] / spe, step=state["step"], images=state["images"],
                                   seconds=state["seconds"])

        done = budget.exhausted(epoch=state["epoch"], step=state["step"], images=state["images"],
                                seconds=state["seconds"])
        while not done:
            self._sync()
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=gen, device=self.device)
            loss_sum = torch.zeros((), device=self.device)
            terms_sum: dict[str, torch.Tensor] = {}
            steps_this_epoch = 0
            for i in range(self.steps_per_epoch):
                frac = progress()
                terms = stepper.on_batch(aug, x_dev, perm[i * bs:(i + 1) * bs], gen, frac)
                loss = terms["loss"]
                loss_sum += loss.detach().float()
                for k, v in terms.items():
                    if k != "loss":
                        terms_sum[k] = terms_sum.get(k, 0) + v.detach().float()
                state["step"] += 1
                state["images"] += bs
                steps_this_epoch += 1
                # the wall-clock budget needs the host clock; everything else is sync-free
                seconds = state["seconds"] + (time.perf_counter() - t0)
                if budget.exhausted(epoch=state["epoch"] + (i + 1) / self.steps_per_epoch, step=state["step"],
                                    images=state["images"], seconds=seconds):
                    done = True
                    break
            self._sync()
            state["seconds"] += time.perf_counter() - t0
            mean_loss = (loss_sum / max(1, steps_this_epoch)).item()  # one sync per epoch
            if not math.isfinite(mean_loss):
                raise TrainingDiverged(f"loss became {mean_loss} in epoch {state['epoch']} (by step {state['step']})",
                                       epoch=state["epoch"], step=state["step"])
            complete = steps_this_epoch == self.steps_per_epoch
            if complete:
                state["epoch"] += 1
            done = done or budget.exhausted(epoch=state["epoch"], step=state["step"], images=state["images"],
                                            seconds=state["seconds"])
            point: dict[str, Any] = {
                "epoch": state["epoch"] if complete else state["epoch"] + steps_this_epoch / self.steps_per_epoch,
                "step": state["step"], "images": state["images"], "train_seconds": round(state["seconds"], 3),
                "loss": mean_loss,
                **{k: (v / max(1, steps_this_epoch)).item() for k, v in terms_sum.items()},
                "images_per_s": steps_this_epoch * bs / max(1e-9, time.perf_counter() - t0),
            }
            if done or (complete and state["epoch"] % eval_every == 0):
                labels = run_inference(method, model, data, ctx.device, ctx.settings.precision,
                                       lambda m, x: method.cluster_logits(m, x).argmax(1), x_dev=x_dev)
                m = ctx.evaluate(labels.astype(np.int64))
                point.update(acc=m["acc"], nmi=m["nmi"], ari=m["ari"], n_clusters=m["n_clusters"])
            ctx.log_point(**point)
            ctx.progress(progress() if not done else 1.0, f"epoch {state['epoch']} loss {mean_loss:.3f}")
            if not done and complete and state["epoch"] % max(1, ctx.settings.checkpoint_every) == 0:
                self._save(model, opt, gen, state)
        stats = TrainStats(
            train_seconds=state["seconds"], images_seen=state["images"], steps=state["step"],
            epochs=state["step"] / self.steps_per_epoch, resumed_from_epoch=resumed_from,
            details=dict(evaluated_step=state["step"], batch_size=bs, views_per_image=2,
                         steps_per_epoch=self.steps_per_epoch, input_size=size, n_clusters=self.n_clusters,
                         cuda_graphs=stepper.graph_status, compiled_model=stepper.compile_status,
                         augment_compiled=ctx.settings.augment_compiled, **stepper.graph_timings()))
        return model, stats

    def _auto_eval_every(self) -> int:
        """About ten curve points with ACC/NMI over an epochs budget; every 10 epochs otherwise."""
        epochs = self.ctx.budget.epochs
        return max(1, int(epochs // 10)) if epochs else 10

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
