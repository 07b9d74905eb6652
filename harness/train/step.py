"""One optimisation step on a batch of image indices: what the engine loops over.

Model in channels_last, bf16 autocast on the GPU, ``torch.compile`` when
``settings.compile`` (the CLI's default on a GPU: ~1.3x per step after ~30 s of compiling;
a method may opt out, a failed compile falls back to eager, and ``compile_status`` says
which), the method's lr schedule applied in place (no optimiser rebuild), no host sync.
On a GPU the whole step (batch gather, two-view augmentation, forward, backward,
optimiser) is replayed as one CUDA graph (see ``clusterbench.train.cudagraph``) unless
``settings.cuda_graphs`` is off or the method or its optimiser cannot be captured;
``graph_status`` says which, and the run records it.  Under torchrun the model is wrapped in
DistributedDataParallel and the loss receives every rank's outputs (the global batch, see
:mod:`clusterbench.train.distributed`); that step runs eagerly.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import nn

from clusterbench.errors import GraphUnavailable
from clusterbench.settings import EngineSettings
from clusterbench.train.augment import GPUAugment, two_views
from clusterbench.train.deep import DeepMethod
from clusterbench.train.device import autocast
from clusterbench.train.distributed import SINGLE, Distributed

Terms = dict[str, torch.Tensor]


def why_not_graphed(device: torch.device | str, settings: EngineSettings, method: DeepMethod,
                    opt: torch.optim.Optimizer, scheduled: bool) -> str | None:
    """Why a method's step cannot be replayed as a CUDA graph, or None when it can."""
    if torch.device(device).type != "cuda":
        return "no CUDA device"
    if not settings.cuda_graphs:
        return "disabled (--no-cuda-graphs)"
    if not method.cuda_graphs:
        return f"method {method.name!r} opts out"
    if scheduled and not all(g.get("fused") or "capturable" in g for g in opt.param_groups):
        # a schedule needs the lr as a device tensor, which only fused/capturable steps read in-graph
        return f"the lr schedule needs a fused or capturable optimiser, not {type(opt).__name__}"
    return None


class TrainStep:
    """The step of one method on one model and optimiser (see the module docstring)."""

    def __init__(self, method: DeepMethod, model: nn.Module, opt: torch.optim.Optimizer,
                 settings: EngineSettings, dist: Distributed = SINGLE) -> None:
        self.method, self.model, self.opt, self.settings, self.dist = method, model, opt, settings, dist
        self.device = next(model.parameters()).device
        self.channels_last = self.device.type == "cuda" and settings.channels_last
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.base_lrs = [float(g["lr"]) for g in opt.param_groups]
        self.scheduled = method.lr_scheduled()
        self.train_model = dist.data_parallel(model)  # the model itself in a single process
        if not settings.compile:
            self.step_model, self.compile_status = self.train_model, "off"
        elif not method.compile_model:
            self.step_model, self.compile_status = self.train_model, f"off: method {method.name!r} opts out"
        else:
            self.step_model, self.compile_status = torch.compile(self.train_model), "on"
        model.train()
        reason = ("distributed run (DDP steps run eagerly)" if dist.active
                  else why_not_graphed(self.device, settings, method, opt, self.scheduled))
        self.use_graphs = reason is None
        self.graph_status = "on" if reason is None else f"off: {reason}"
        if self.use_graphs:
            self._make_optimizer_capturable()
        self._graphs: dict = {}
        self._idx: dict[str, torch.Tensor] = {}  # each graph's fixed index buffer
        self._calls = 0
        #: The last step was one-off work (the first call: compilation, cuDNN autotuning, lazy
        #: initialisation; with CUDA graphs, every call until the graph replays: its eager
        #: warm-up and the capture).  The engine books such steps as setup, off the clock.
        self.last_was_setup = False

    # ---- CUDA graphs --------------------------------------------------------------------
    def _make_optimizer_capturable(self) -> None:
        """Optimiser state on the device (``capturable``) and, under an lr schedule, the lr
        as a device tensor the step updates in place, so replays see the new value."""
        for g in self.opt.param_groups:
            if "capturable" in g:
                g["capturable"] = True
            if self.scheduled:
                g["lr"] = torch.tensor(float(g["lr"]), device=self.device)

    def _graphed(self, key: str, body: Callable[[], Terms], generators: tuple[torch.Generator, ...]) -> Terms | None:
        """Run ``body`` through its CapturedStep; None (and graphs off) if it cannot be captured."""
        from clusterbench.train.cudagraph import CapturedStep

        if key not in self._graphs:
            self._graphs[key] = CapturedStep(body, self.device, generators=generators)
        try:
            return self._graphs[key]()
        except GraphUnavailable as exc:
            warnings.warn(f"CUDA graph capture of the {self.method.name} step failed, running eagerly: {exc}")
            self.use_graphs, self.graph_status = False, f"off: capture failed ({exc})"
            return None

    def _replaying(self, key: str) -> bool:
        """The graph ``key`` has been captured: its next call is a plain replay."""
        captured = self._graphs.get(key)
        return captured is not None and captured.graph is not None

    def graph_timings(self) -> dict[str, float]:
        """Seconds spent warming up and capturing the graphs (part of the run's setup, off the clock)."""
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

    def _loss(self, v1: torch.Tensor, v2: torch.Tensor, cache: bool, loss_fn: Callable[..., Terms] | None = None
              ) -> Terms:
        """The method's loss terms (``loss_fn``, default ``training_loss``); if compiling the model fails (no compiler, an op it cannot
        trace), warn once and go on with the eager model, as the record then says."""
        from torch._dynamo.exc import TorchDynamoException

        fn = loss_fn or self.method.training_loss

        def loss(model: nn.Module) -> Terms:
            with autocast(self.device, self.settings.precision, cache):  # distributed: the global batch's outputs
                return fn(self.dist.for_loss(model, self.model), v1, v2)

        try:
            return loss(self.step_model)
        except TorchDynamoException as exc:
            if self.step_model is self.train_model:
                raise
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            warnings.warn(f"torch.compile of the {self.method.name} model failed, running it eagerly: {reason}")
            self.step_model, self.compile_status = self.train_model, f"off: compile failed ({reason})"
            return loss(self.train_model)

    def _optimise(self, v1: torch.Tensor, v2: torch.Tensor, cache: bool = True,
                  loss_fn: Callable[..., Terms] | None = None) -> Terms:
        terms = self._loss(v1, v2, cache, loss_fn)
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

    def _step(self, progress: float, eager: Callable[[], Terms], graph_key: str | None = None,
              graph_body: Callable[[], Terms] | None = None, generators: tuple[torch.Generator, ...] = ()) -> Terms:
        """lr schedule, then the step (replayed as graph ``graph_key`` when graphs are on and it
        captures, else ``eager()``), then the method's ``after_step`` with the step's outputs."""
        self.set_progress(progress)
        graphed = graph_key is not None and self.use_graphs
        self.last_was_setup = self._calls == 0 or (graphed and not self._replaying(graph_key))
        self._calls += 1
        terms = None
        if graphed:
            terms = self._graphed(graph_key, graph_body, generators)
        if terms is None:
            terms = eager()
        self.method.after_step(self.model, progress, terms)
        return terms

    def step_on_indices(self, aug: GPUAugment, x_all: torch.Tensor, idx: torch.Tensor,
                        gen: torch.Generator | None, progress: float, unlabelled: bool = False) -> Terms:
        """Gather ``x_all[idx]`` (uint8 on the device), make two views, optimise.  Graphed:
        ``idx`` is copied into a fixed buffer and the graph replayed.

        ``unlabelled``: a batch of the unlabelled images, trained with the method's
        ``unlabelled_loss``.  It is a second captured graph (its own index buffer and memory
        pool, the same optimiser state): the unlabelled pass is most of an STL-10 epoch
        (390 of 440 steps), so running it eagerly would lose the graphs' speed-up where it
        matters most; ``x_all`` must be one fixed tensor per kind of batch."""
        key = "unlabelled" if unlabelled else "batch"
        loss_fn = self.method.unlabelled_loss if unlabelled else self.method.training_loss
        if self.use_graphs:
            if key not in self._idx:
                self._idx[key] = idx.clone()
            else:
                self._idx[key].copy_(idx)
        return self._step(progress, lambda: self._optimise(*self.views(aug, x_all[idx], gen), loss_fn=loss_fn), key,
                          lambda: self._optimise(*self.views(aug, x_all[self._idx[key]], gen), cache=False,
                                                 loss_fn=loss_fn),
                          (gen,) if gen is not None else ())
