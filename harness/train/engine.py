"""The budgeted training loop every deep method shares, and its checkpoints.

The dataset lives on the device as uint8; each step makes two augmented views per image
there and runs the method's loss (see :class:`~clusterbench.train.step.TrainStep`).  The
budget is checked every step, the loss is checked for NaN once per epoch (no host sync per
step), the learning curve (loss terms, throughput, cheap ACC/NMI) is logged, and a
checkpoint every epoch lets an interrupted run resume where it stopped.  The data order
comes from one generator (checkpointed), the augmentations from another, reseeded from
(seed, epoch, rank) at every epoch, so that under torchrun every rank cuts the same global
batch and draws its own views (see :mod:`clusterbench.train.distributed`).

The training clock (``train_seconds``, what a ``minutes=`` budget counts) starts after the
one-off work: building the model, moving the data, and the warm-up steps in which
``torch.compile`` compiles, cuDNN autotunes and the CUDA graph is captured (see
:attr:`TrainStep.last_was_setup`).  Those warm-up steps are ordinary training steps (they
count towards ``steps=``/``epochs=``, so a run is step for step the one it was before the
clock was split), but their time is booked as ``setup_seconds``: under ``minutes=`` every
method trains for the same time whatever its compile cost, at the price of at most a
handful of untimed steps (one on the CPU, four with CUDA graphs).  ``train`` returns
what it did: the :class:`~clusterbench.train.inference.Trained` model and the run's
:class:`~clusterbench.api.TrainStats`.

Unlabelled images (``ImageData.unlabelled``, STL-10's 100,000) are trained on when the
method defines ``unlabelled_loss``: each epoch is then one shuffled pass over them with that
loss, then one over the labelled images with ``training_loss``, with one optimiser, as CC's
official ``train_STL10.py:11-40`` does.  The budget counts both passes: ``steps=`` every
optimiser step, ``images=`` every image trained on, ``minutes=`` the time of both;
``epochs=`` counts epochs, i.e. passes over the labelled set (each after its unlabelled
pass).  Learning curves and evaluation see the labelled images only.
"""

from __future__ import annotations

import io
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from clusterbench.api import ImageData, TrainStats
from clusterbench.context import RunContext
from clusterbench.errors import TrainingDiverged
from clusterbench.results.io import atomic_write_bytes
from clusterbench.train.augment import GPUAugment
from clusterbench.train.deep import DeepMethod, augment_policy
from clusterbench.train.device import sync
from clusterbench.train.distributed import Distributed, current
from clusterbench.train.inference import Trained
from clusterbench.train.step import TrainStep

__all__ = ["Engine", "EngineDetails"]


@dataclass(frozen=True)
class EngineDetails:
    """What the engine chose and how the step ran: ``TrainStats.details``, as recorded."""

    evaluated_step: int
    batch_size: int
    views_per_image: int
    steps_per_epoch: int
    input_size: int
    n_clusters: int
    cuda_graphs: str          # "on" or "off: <why>"
    compiled_model: str       # "on" or "off: <why>"
    augment_compiled: bool
    augmentation: dict[str, Any] | None = None  # each view's AugmentSpec and the blur kernel, as trained
    world_size: int = 1  # ranks training the cell (torchrun); batch_size is the global batch
    unlabelled_pass: str | None = None          # present when the data has unlabelled images: "on: ..." / "off: why"
    unlabelled_steps_per_epoch: int | None = None
    unlabelled_steps: int | None = None         # of ``steps``: those of the unlabelled passes
    unlabelled_images_seen: int | None = None   # of ``images_seen``: those of the unlabelled passes
    graph_warmup_seconds: float | None = None   # present only when a graph was captured
    graph_capture_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class _State:
    """The counters a checkpoint saves and a resumed run continues from."""

    epoch: int = 0
    step: int = 0
    images: int = 0
    seconds: float = 0.0        # the training clock
    setup_seconds: float = 0.0  # one-off work, off the clock (of every attempt, when resumed)
    setup_images: int = 0       # images of the warm-up steps (trained, timed as setup)
    unlabelled_steps: int = 0   # of ``step``: those of the unlabelled passes


@dataclass
class _Run:
    """What one training run holds while it loops."""

    model: nn.Module
    opt: torch.optim.Optimizer
    stepper: TrainStep
    aug: GPUAugment
    gen: torch.Generator      # the data order: the same on every rank
    aug_gen: torch.Generator  # this rank's augmentations, reseeded every epoch
    x_dev: torch.Tensor
    trained: Trained
    x_unlabelled: torch.Tensor | None = None  # on the device when the unlabelled pass runs


@dataclass
class _Epoch:
    """One (possibly partial) epoch's sums, kept on the device until its end."""

    t0: float
    loss_sum: torch.Tensor
    terms_sum: dict[str, torch.Tensor] = field(default_factory=dict)
    terms_steps: dict[str, int] = field(default_factory=dict)  # the steps each term was summed over
    steps: int = 0
    setup_steps: int = 0   # warm-up steps among them, timed as setup
    stopped: bool = False  # the budget ran out inside the epoch
    shown: float = 0.0  # host time the progress line was last updated inside the epoch


class Engine:
    """Trains one DeepMethod on one dataset under the run's budget."""

    def __init__(self, method: DeepMethod, data: ImageData, ctx: RunContext, dist: Distributed | None = None) -> None:
        self.method, self.data, self.ctx = method, data, ctx
        self.dist = dist or current()  # this process's rank; a single process outside torchrun
        self.device = torch.device(ctx.device)
        self.params = method.params
        n = len(data)
        if n < 2:
            raise ValueError("need at least 2 images to train")
        self.batch_size = min(int(self.params.batch_size), n)  # tiny datasets: one batch per epoch
        self.steps_per_epoch = n // self.batch_size  # drop_last, as the papers' loaders
        self.dist.local_batch(self.batch_size)  # the global batch must split over the ranks
        # the unlabelled pass before each labelled one (batches of the same size, drop_last too)
        trains = method.trains_unlabelled()
        self.unlabelled_steps = data.n_unlabelled // self.batch_size if trains else 0
        self.epoch_steps = self.steps_per_epoch + self.unlabelled_steps
        self.unlabelled_pass = None if not data.n_unlabelled else (
            f"on: {data.n_unlabelled} images, {self.unlabelled_steps} steps before each labelled pass"
            if self.unlabelled_steps else f"off: method {method.name!r} has no unlabelled_loss" if not trains
            else f"off: {data.n_unlabelled} unlabelled images, fewer than a batch ({self.batch_size})")
        self.n_clusters = self.params.n_clusters or data.n_classes
        self.input_size = method.model_input_size(data)

    def train(self) -> tuple[Trained, TrainStats]:
        """Train until the budget is spent (resuming from a checkpoint if there is one)."""
        if self.ctx.budget.empty:
            raise ValueError("a deep method needs a budget (epochs=, steps=, images= or minutes=)")
        t0 = time.perf_counter()
        run = self._setup()
        state = self._load(run) or _State()
        state.setup_seconds += time.perf_counter() - t0
        resumed_from = state.epoch if state.step else None
        done = self._exhausted(state)
        while not done:
            epoch = self._run_epoch(run, state)
            done = self._end_epoch(run, state, epoch)
        return run.trained, self._stats(run, state, resumed_from)

    # ---- setup ----------------------------------------------------------------------------
    def _setup(self) -> _Run:
        method, ctx, data, size = self.method, self.ctx, self.data, self.input_size
        model = self.dist.sync_batchnorm(method.build_model(data.channels, size, self.n_clusters)).to(self.device)
        opt = method.configure_optimizer(model)
        stepper = TrainStep(method, model, opt, ctx.settings, self.dist)
        spec = augment_policy(method, data)
        aug = GPUAugment(spec, size, compile=ctx.settings.augment_compiled).to(self.device)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(ctx.derived_seed("engine"))
        aug_gen = torch.Generator(device=self.device)
        x_dev = torch.from_numpy(data.x).to(self.device)  # uint8 on the device, once
        x_unl = torch.from_numpy(data.unlabelled).to(self.device) if self.unlabelled_steps else None
        trained = Trained(model, self.device, ctx.settings.precision, size, aug.spec.mean, aug.spec.std,
                          method.eval_batch_size)
        return _Run(model, opt, stepper, aug, gen, aug_gen, x_dev, trained, x_unl)

    # ---- the loop -----------------------------------------------------------------------
    def _exhausted(self, s: _State, seconds: float | None = None, epoch: float | None = None) -> bool:
        return self.ctx.budget.exhausted(epoch=s.epoch if epoch is None else epoch, step=s.step, images=s.images,
                                         seconds=s.seconds if seconds is None else seconds)

    def _progress(self, s: _State) -> float:
        return self.ctx.budget.fraction(epoch=s.step / self.epoch_steps, step=s.step, images=s.images,
                                        seconds=s.seconds)

    def _run_epoch(self, run: _Run, s: _State) -> _Epoch:
        """One epoch: the unlabelled pass (if any), then the labelled one; stops early when the budget runs out."""
        sync(self.device)
        ep = _Epoch(t0=time.perf_counter(), loss_sum=torch.zeros((), device=self.device))
        ep.shown = ep.t0
        run.aug_gen.manual_seed(self.dist.augment_seed(self.ctx.seed, s.epoch))
        if run.x_unlabelled is not None:
            self._run_pass(run, s, ep, run.x_unlabelled, self.unlabelled_steps, unlabelled=True)
        if not ep.stopped:
            self._run_pass(run, s, ep, run.x_dev, self.steps_per_epoch)
        return ep

    def _run_pass(self, run: _Run, s: _State, ep: _Epoch, x: torch.Tensor, n_steps: int,
                  unlabelled: bool = False) -> None:
        """Steps over one shuffled pass of ``x``; its unlabelled pass's terms go on the curve as ``<term>_unlabelled``."""
        perm = torch.randperm(len(x), generator=run.gen, device=self.device)  # the same on every rank
        bs, suffix = self.batch_size, "_unlabelled" if unlabelled else ""
        for i in range(n_steps):
            idx = self.dist.shard(perm[i * bs:(i + 1) * bs])  # this rank's slice of the global batch
            terms = run.stepper.step_on_indices(run.aug, x, idx, run.aug_gen, self._progress(s),
                                                unlabelled=unlabelled)
            ep.loss_sum += terms["loss"].float()
            for k, v in terms.items():
                if (k != "loss" or unlabelled) and v.ndim == 0:  # scalars go on the curve; others only to after_step
                    ep.terms_sum[k + suffix] = ep.terms_sum.get(k + suffix, 0) + v.float()
                    ep.terms_steps[k + suffix] = ep.terms_steps.get(k + suffix, 0) + 1
            s.step += 1
            s.unlabelled_steps += unlabelled
            s.images += bs
            ep.steps += 1
            if run.stepper.last_was_setup:
                ep.t0 = self._book_setup(s, ep, bs)
            # the wall-clock budget needs the host clock; everything else is sync-free
            now = time.perf_counter()
            if self._stop_now(s, seconds=s.seconds + (now - ep.t0), epoch=s.epoch + ep.steps / self.epoch_steps):
                ep.stopped = True
                return
            if now - ep.shown >= 1.0:  # a long epoch still moves the progress line (no device sync)
                ep.shown = now
                self.ctx.progress(self._progress(s), self._progress_text(s, ""))

    def _book_setup(self, s: _State, ep: _Epoch, images: int) -> float:
        """Book a warm-up step's time (since ``ep.t0``) as setup; the new start of the clock."""
        sync(self.device)  # once per warm-up step: the step's work is done before the clock restarts
        now = time.perf_counter()
        s.setup_seconds += now - ep.t0
        s.setup_images += images
        ep.setup_steps += 1
        return now

    def _end_epoch(self, run: _Run, s: _State, ep: _Epoch) -> bool:
        """Book the epoch, log its curve point and checkpoint; True when training is done."""
        sync(self.device)
        s.seconds = self.dist.broadcast(s.seconds + time.perf_counter() - ep.t0)  # rank 0's clock rules
        mean_loss = (ep.loss_sum / max(1, ep.steps)).item()  # one sync per epoch
        if not math.isfinite(mean_loss):
            raise TrainingDiverged(f"loss became {mean_loss} in epoch {s.epoch} (by step {s.step})",
                                   epoch=s.epoch, step=s.step)
        complete = ep.steps == self.epoch_steps
        if complete:
            s.epoch += 1
        done = ep.stopped or self._exhausted(s)
        self.ctx.log_point(**self._curve_point(run, s, ep, mean_loss, complete, done))
        ips = ep.steps * self.batch_size / max(1e-9, time.perf_counter() - ep.t0)
        self.ctx.progress(self._progress(s) if not done else 1.0, self._progress_text(s, f"loss {mean_loss:.3f} "
                                                                                     f"{ips:,.0f} img/s"))
        if complete or done:
            self._maybe_checkpoint(run, s, final=done)
        return done

    def _progress_text(self, s: _State, tail: str) -> str:
        """``epoch 3/100 step 120 loss 4.321 21,000 img/s``: where the run is in its budget."""
        b = self.ctx.budget
        epochs = f"epoch {s.epoch}" + (f"/{b.epochs:g}" if b.epochs else "")
        steps = f"step {s.step}" + (f"/{b.steps:g}" if b.steps else "")
        return f"{epochs} {steps} {tail}".rstrip()

    def _curve_point(self, run: _Run, s: _State, ep: _Epoch, mean_loss: float, complete: bool,
                     done: bool) -> dict[str, Any]:
        """The epoch's learning-curve point; with ACC/NMI/ARI at the end and every ``eval_every`` epochs."""
        point: dict[str, Any] = {
            "epoch": s.epoch if complete else s.epoch + ep.steps / self.epoch_steps,
            "step": s.step, "images": s.images, "train_seconds": round(s.seconds, 3), "loss": mean_loss,
            **{k: (v / ep.terms_steps[k]).item() for k, v in ep.terms_sum.items()},
            "images_per_s": (ep.steps - ep.setup_steps) * self.batch_size / max(1e-9, time.perf_counter() - ep.t0),
        }
        if done or (complete and s.epoch % self._eval_every() == 0):
            method = self.method
            labels = run.trained.apply(lambda m, x: method.cluster_logits(m, x).argmax(1), run.x_dev)
            m = self.ctx.evaluate(labels.astype(np.int64))
            point.update(acc=m["acc"], nmi=m["nmi"], ari=m["ari"], n_clusters=m["n_clusters"])
        return point

    def _stop_now(self, s: _State, seconds: float, epoch: float) -> bool:
        """The in-epoch budget check; with a wall-clock budget over several ranks, they agree
        (one small all-reduce per step) so that none steps alone into a collective."""
        stop = self._exhausted(s, seconds=seconds, epoch=epoch)
        return self.dist.any(stop) if self.dist.active and self.ctx.budget.minutes is not None else stop

    def _eval_every(self) -> int:
        """``--eval-every``, else about ten curve points over an epochs budget, else every 10 epochs."""
        epochs = self.ctx.budget.epochs
        return self.ctx.settings.eval_every or (max(1, int(epochs // 10)) if epochs else 10)

    def _stats(self, run: _Run, s: _State, resumed_from: int | None) -> TrainStats:
        st = run.stepper
        details = EngineDetails(
            evaluated_step=s.step, batch_size=self.batch_size, views_per_image=2,
            steps_per_epoch=self.steps_per_epoch, input_size=self.input_size, n_clusters=self.n_clusters,
            cuda_graphs=st.graph_status, compiled_model=st.compile_status,
            augment_compiled=run.aug.compiled, augmentation=run.aug.describe(),
            world_size=self.dist.world_size, **st.graph_timings(), **self._unlabelled_details(s))
        return TrainStats(train_seconds=s.seconds, images_seen=s.images, setup_seconds=round(s.setup_seconds, 3),
                          setup_images=s.setup_images, steps=s.step,
                          epochs=s.step / self.epoch_steps, resumed_from_epoch=resumed_from,
                          details=details.as_dict())

    def _unlabelled_details(self, s: _State) -> dict[str, Any]:
        """What the unlabelled pass did (nothing when the data has no unlabelled images)."""
        if self.unlabelled_pass is None:
            return {}
        return {"unlabelled_pass": self.unlabelled_pass, "unlabelled_steps_per_epoch": self.unlabelled_steps,
                "unlabelled_steps": s.unlabelled_steps, "unlabelled_images_seen": s.unlabelled_steps * self.batch_size}

    # ---- checkpoints ------------------------------------------------------------------
    def _maybe_checkpoint(self, run: _Run, s: _State, final: bool = False) -> None:
        """After every ``checkpoint_every`` complete epochs, and once training is done: if a
        protocol then fails (a ``partial`` record), a rerun evaluates from it without training
        again.  Rank 0 writes it.  The runner removes it when the record is ``done``."""
        if not self.dist.is_main or (not final and s.epoch % max(1, self.ctx.settings.checkpoint_every)):
            return
        buf = io.BytesIO()
        torch.save({"model": run.model.state_dict(), "optimizer": run.opt.state_dict(),
                    "generator": run.gen.get_state(), "state": asdict(s), "curve": self.ctx.curve}, buf)
        atomic_write_bytes(self.ctx.checkpoint_path, buf.getvalue())

    def _load(self, run: _Run) -> _State | None:
        path = self.ctx.checkpoint_path
        if not path.exists():
            return None
        try:
            ck = torch.load(path, map_location=self.device, weights_only=False)
            run.model.load_state_dict(ck["model"])
            run.opt.load_state_dict(ck["optimizer"])
            run.gen.set_state(ck["generator"].cpu())  # generator states are CPU byte tensors
            state = _State(**ck["state"])
        except Exception as exc:  # a damaged checkpoint: start over rather than fail
            warnings.warn(f"checkpoint {path} could not be loaded ({type(exc).__name__}: {exc}); restarting the run")
            return None
        self.ctx.curve[:] = ck.get("curve", [])
        return state
