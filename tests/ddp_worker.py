"""What each process of ``test_distributed`` runs: every deep method trained 2 steps by the engine,
over W gloo ranks, and by one process on the same global batches (each rank runs some of these).

Equality holds only where the random draws are the same, and by design the augmentations are
not: each rank draws its own.  So they are fixed here: two deterministic views per image
(distinct, so a swap of views or of rows would show).  A loss's own draws (TCC's Gumbel and
queue noise) need nothing: they are made on the gathered batch from the global generator,
seeded alike on every rank, so they are one process's draws.  What remains is what DDP must make equal: the data each step sees, the gathered loss,
the synced BatchNorm, the averaged gradients, the optimiser's update and the buffers a
method updates after the step (CueCo's queue and momentum encoder).  In float64: a tiny
BatchNorm'd ResNet amplifies float32 rounding so much that merely another BatchNorm formula,
in one process, moves some convolutions' gradients by 10%.  A method whose forward
draws per image (dropout) makes this test fail: fix that draw here.
"""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

from clusterbench.train.augment import GPUAugment
from clusterbench.train.augment import eval_transform as inference_eval_transform

BATCH = 16  # every smoke preset's batch: the global batch, 8 per rank
STEPS = 2   # CueCo's warmup gives lr 0 at the first step; the second one moves its weights
SIZE = 8    # images of 8x8: the smallest every smoke model takes


class FixedViews(GPUAugment):
    """The engine's GPUAugment with its draws fixed: view 1 = the image, view 2 = its mirror, dimmed."""

    def views(self, x: torch.Tensor, n_views: int, generator=None) -> torch.Tensor:
        y = x.permute(0, 3, 1, 2).float() / 255
        if y.shape[-1] != self.out_size:
            y = F.interpolate(y, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)
        views = [y, 0.1 + 0.8 * y.flip(3)]
        return torch.cat(views[:n_views]).to(torch.get_default_dtype())


def eval_in_default_dtype(x, *args, **kwargs):
    """The engine's test-time transform, in the model's (float64) dtype."""
    return inference_eval_transform(x, *args, **kwargs).to(torch.get_default_dtype())


def train_two_steps(ref: str, dist, run_dir: Path) -> dict:
    """Train the method ``ref`` (a smoke preset, maybe with switches) for STEPS steps with the
    engine under ``dist``, made this process's ``current()`` as torchrun would (a forward that
    exchanges rows itself, shuffle-BN, reads it); its loss (curve), initial and final state, and
    the last step's gradients."""
    from clusterbench.train import distributed

    distributed.use(dist)
    try:
        return _train_two_steps(ref, dist, run_dir)
    finally:
        distributed.use(distributed.SINGLE)


def _train_two_steps(ref: str, dist, run_dir: Path) -> dict:
    from clusterbench.budget import Budget
    from clusterbench.context import RunContext
    from clusterbench.datasets.synthetic import make_synthetic
    from clusterbench.evaluate.metrics import evaluate
    from clusterbench.plugins import PluginRef, load_registry
    from clusterbench.settings import EngineSettings
    from clusterbench.train import engine, inference

    method = load_registry().make_method(PluginRef.parse(ref))
    assert method.params.batch_size == BATCH, f"{ref}: the smoke presets train batches of {BATCH}"
    data = make_synthetic(STEPS * BATCH, 4, SIZE, 3, 0.15, 0)
    torch.manual_seed(0)
    init = {k: v.clone() for k, v in method.build_model(3, method.model_input_size(data), 4).state_dict().items()}
    torch.manual_seed(0)  # the engine builds the same initial model
    ctx = RunContext(seed=0, budget=Budget(steps=STEPS), settings=EngineSettings(device="cpu"), run_dir=run_dir,
                     evaluate=lambda labels: evaluate(data.y, labels))
    with mock.patch.object(engine, "GPUAugment", FixedViews), \
            mock.patch.object(inference, "eval_transform", eval_in_default_dtype), \
            mock.patch.object(engine.Engine, "_maybe_checkpoint", lambda *a, **k: None):  # ~200 MB float64 each
        trained, stats = engine.Engine(method, data.without_labels(), ctx, dist).train()
    model = trained.model
    return {"loss": ctx.curve[-1]["loss"], "init": init, "world_size": stats.details["world_size"],
            "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "grads": {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}}


def worker(rank: int, world: int, tmp: str, methods: dict[str, str]) -> None:
    """One rank: join the gloo group, train every method (name -> ref), save what it saw to ``tmp/rank{rank}.pt``."""
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)  # tiny BatchNorm'd ResNets amplify float32 rounding ~1e4-fold
    import torch.distributed as tdist

    from clusterbench.train.distributed import SINGLE, Distributed

    tdist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world)
    ranks = Distributed(rank, world, rank, "gloo")
    out = {name: train_two_steps(ref, ranks, Path(tmp) / f"run{rank}") for name, ref in methods.items()}
    for name in list(methods)[rank::world]:  # the one-process references, shared out over the ranks
        out[name + "/single"] = train_two_steps(methods[name], SINGLE, Path(tmp) / f"single{rank}")
    torch.save(out, Path(tmp) / f"rank{rank}.pt")
    tdist.destroy_process_group()
