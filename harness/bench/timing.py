"""The bench's timing: warm-up, then ``torch.utils.benchmark``'s blocked autorange
(``timed``); work too long to repeat is timed once (``time_once``).

``Timer`` synchronises the device around each block (its default timer does), so the
seconds are the device's, not the launch queue's; the median and the inter-quartile range
of the blocks go into the JSON.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch.utils.benchmark import Timer

from clusterbench.train.device import sync


@dataclass(frozen=True)
class Timing:
    """Seconds per call: the median over timed blocks, their IQR, and how many calls were timed."""

    median_s: float
    iqr_s: float
    calls: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def timed(fn: Callable[[], Any], steps: int, warmup: int, device: torch.device) -> Timing:
    """Time ``fn`` for about ``steps`` calls after ``warmup`` untimed ones (at least one,
    whose duration sets how long the timed blocks run)."""
    for _ in range(max(0, warmup - 1)):
        fn()
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    per_call = time.perf_counter() - t
    timer = Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=max(1, steps) * per_call)
    return Timing(median_s=float(m.median), iqr_s=float(m.iqr), calls=m.number_per_run * len(m.raw_times))


def time_once(fn: Callable[[], Any], device: torch.device | None = None) -> tuple[Any, float]:
    """``fn()``'s result and its seconds, for work too long to repeat (k-means, a whole pass)."""
    dev = device or torch.device("cpu")
    sync(dev)
    t = time.perf_counter()
    out = fn()
    sync(dev)
    return out, time.perf_counter() - t


def log(msg: str) -> None:
    """Where a long benchmark is, on stderr (the tables go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def profile_steps(step: Callable[[], Any], device: torch.device, title: str) -> None:
    """torch.profiler's top operators over 10 steps (GPU time on a GPU)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(10):
            step()
        sync(device)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(f"--- profile: {title} (10 steps) ---")
    print(prof.key_averages().table(sort_by=key, row_limit=20), flush=True)
