"""Replay a whole training step as one CUDA graph.

At small inputs (32x32 images, ResNet-18) an eager step is bound by the host: the GPU
finishes each of the ~1,000 kernels of augmentation, two forward passes, backward and
the optimiser faster than Python and the CUDA driver can launch the next one (measured
on an H100: the GPU was busy ~11 ms of a ~31 ms step).  A CUDA graph records the step's
kernels once and replays them with one launch, so the step costs what the GPU needs.

``CapturedStep(body)`` calls ``body()`` eagerly for ``warmup`` calls (on a side stream,
as PyTorch's whole-network capture recipe asks: cuDNN picks its algorithms, the
optimiser creates its state, ``torch.compile`` compiles), captures the next call and
from then on replays it.  ``body`` must be capturable: fixed shapes, inputs read from
tensors whose storage does not change (copy new data into them before each call), no
host-device sync, no Python state that changes between calls.  Random numbers come
from the generators registered here, whose offsets advance on every replay, so each
replay draws fresh numbers and a seed still reproduces the whole run.

If the capture fails (an op that syncs, an unsupported optimiser), ``__call__`` raises
``GraphUnavailable`` with the reason before anything of that step ran, so the caller
can go on eagerly.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch

from clusterbench.errors import GraphUnavailable


class CapturedStep:
    """``body()`` run eagerly ``warmup`` times, then captured once and replayed."""

    def __init__(self, body: Callable[[], dict[str, torch.Tensor]], device: torch.device,
                 generators: Sequence[torch.Generator] = (), warmup: int = 3) -> None:
        self.body, self.device, self.generators, self.warmup = body, device, list(generators), warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: dict[str, torch.Tensor] | None = None
        self.calls = 0
        self.warmup_seconds = 0.0   # host time of the eager warm-up calls (compilation, autotuning)
        self.capture_seconds = 0.0  # host time of the capture itself
        self._side = torch.cuda.Stream(device=device)

    def __call__(self) -> dict[str, torch.Tensor]:
        self.calls += 1
        if self.graph is not None:
            self.graph.replay()
            return self.outputs
        if self.calls <= self.warmup:
            t = time.perf_counter()
            out = self._eager_on_side_stream()
            self.warmup_seconds += time.perf_counter() - t
            return out
        t = time.perf_counter()
        self._capture()
        self.capture_seconds = time.perf_counter() - t
        self.graph.replay()  # capturing records the kernels, it does not run them
        return self.outputs

    def _eager_on_side_stream(self) -> dict[str, torch.Tensor]:
        main = torch.cuda.current_stream(self.device)
        self._side.wait_stream(main)
        with torch.cuda.stream(self._side):
            out = self.body()
        main.wait_stream(self._side)
        return out

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        for gen in self.generators:
            if gen.device.type == "cuda":
                graph.register_generator_state(gen)
        torch.cuda.synchronize(self.device)
        try:
            with torch.cuda.graph(graph):
                outputs = self.body()
        except Exception as exc:
            torch.cuda.synchronize(self.device)
            raise GraphUnavailable(f"{type(exc).__name__}: {exc}".splitlines()[0][:300]) from exc
        self.graph, self.outputs = graph, outputs
