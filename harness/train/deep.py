"""The ``DeepMethod`` contract: what a deep method says, and nothing the engine does.

A deep method says what is its own (its model, its loss, its optimiser, its augmentation
policy, its prediction rule); :class:`clusterbench.train.engine.Engine` trains it under the
run's budget and hands back a :class:`~clusterbench.train.inference.Trained` model, which
``predict`` and ``features`` run.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from clusterbench.api import ImageData, Method, TrainStats, param
from clusterbench.context import RunContext
from clusterbench.errors import PluginError
from clusterbench.train.augment import AugmentPolicy, AugmentSpec, view_specs
from clusterbench.train.inference import Trained

__all__ = ["DeepParams", "DeepMethod", "augment_policy"]


@dataclass(frozen=True)
class DeepParams:
    """The hyper-parameters the engine reads; a deep method's ``Params`` subclasses this
    (redefining a field to give its own default, doc and source)."""

    batch_size: int = param(256, "images per step (two views each)")
    lr: float = param(3e-4, "learning rate")
    weight_decay: float = param(0.0, "weight decay")
    image_size: int = param(0, "input size the images are resized to (0 = the dataset's own)")
    n_clusters: int = param(0, "K (0 = the dataset's number of classes)")


#: the fields of DeepParams, which every deep method's Params must have
ENGINE_FIELDS = tuple(f.name for f in dataclasses.fields(DeepParams))
#: what the engine needs of them, whatever a method's own ``param`` says (checked up front:
#: ``batch_size=0`` would otherwise be a bare ZeroDivisionError in the first step)
ENGINE_LIMITS: dict[str, dict[str, float]] = {"batch_size": {"minimum": 1}, "lr": {"above": 0},
                                              "weight_decay": {"minimum": 0}, "image_size": {"minimum": 0},
                                              "n_clusters": {"minimum": 0}}


class DeepMethod(Method):
    """Base for methods trained by the engine; ``Params`` subclasses :class:`DeepParams`."""

    deep = True
    transductive = False  # predict runs the trained network: its inference throughput is measured
    protocols = ("head", "kmeans", "linear")
    #: The step may be replayed as a CUDA graph: ``training_loss`` has fixed shapes, no
    #: host sync and no Python state that changes from step to step (it runs once, at
    #: capture).  Per-step Python logic belongs in ``after_step``, which always runs.
    cuda_graphs: ClassVar[bool] = True
    #: The model may be run through ``torch.compile`` (the default on a GPU).  A method whose
    #: forward cannot be compiled, or not to the same numbers, sets this False.
    compile_model: ClassVar[bool] = True
    eval_batch_size: ClassVar[int] = 1024
    #: Per-channel Normalize of the model's input, in training and at test time (None: none).
    input_mean: ClassVar[tuple[float, ...] | None] = None
    input_std: ClassVar[tuple[float, ...] | None] = None

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self.trained: Trained | None = None

    @classmethod
    def check_class(cls) -> None:
        """The method contract, and a ``Params`` with every field the engine reads."""
        super().check_class()
        names = {f.name for f in dataclasses.fields(cls.Params)}
        missing = [f for f in ENGINE_FIELDS if f not in names]
        if missing:
            raise PluginError(f"deep method {cls.name!r}: `Params` lacks {', '.join(missing)} "
                              "(subclass clusterbench.DeepParams)")

    @classmethod
    def param_limits(cls) -> dict[str, dict[str, float]]:
        return ENGINE_LIMITS

    # ---- what a method must say -----------------------------------------------------
    @abc.abstractmethod
    def build_model(self, in_chans: int, image_size: int, n_clusters: int) -> nn.Module:
        """The network, freshly initialised (the engine moves it to the device)."""

    @abc.abstractmethod
    def training_loss(self, model: nn.Module, v1: torch.Tensor, v2: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms for one batch of two views; must include ``"loss"`` (what is minimised).

        Scalar terms are logged on the learning curve; other tensors (e.g. keys to enqueue)
        only reach ``after_step``."""

    @abc.abstractmethod
    def cluster_logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """(B, K) scores whose argmax is the predicted cluster (the ``head`` protocol)."""

    @abc.abstractmethod
    def embed(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """(B, D) features for the ``kmeans`` and ``linear`` protocols."""

    def unlabelled_loss(self, model: nn.Module, v1: torch.Tensor, v2: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms for two views of a batch of the dataset's unlabelled images
        (``ImageData.unlabelled``, e.g. STL-10's 100,000); must include ``"loss"``.

        A method that defines it gets, every epoch, one pass over the unlabelled images with
        this loss before the pass over the labelled ones with ``training_loss`` (CC's official
        STL-10 run: its instance loss alone, ``train_STL10.py:11-40``).  Not defined (the
        default): the unlabelled images are not trained on, and the record says so."""
        raise NotImplementedError(f"{self.name} does not train on unlabelled images")

    @classmethod
    def trains_unlabelled(cls) -> bool:
        """The method defines :meth:`unlabelled_loss`."""
        return cls.unlabelled_loss is not DeepMethod.unlabelled_loss

    def augmentation(self, data: ImageData) -> AugmentPolicy:
        """The two-view augmentation policy (default: SimCLR-style, as CC uses on CIFAR): one
        ``AugmentSpec`` for both views, or a tuple of two, one per view (asymmetric recipes)."""
        return AugmentSpec()

    def configure_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """Adam with the method's lr and weight decay (fused kernels on the GPU); a method that
        lets its optimiser be chosen mixes in :class:`clusterbench.OptimizerChoice`."""
        from clusterbench.train.optim import build_optimizer  # optim builds on this module's DeepParams

        return build_optimizer(model.parameters(), "adam", self.params.lr, self.params.weight_decay)

    def lr_factor(self, progress: float) -> float:
        """Learning-rate multiplier at ``progress`` in [0, 1] of the budget (default: constant)."""
        return 1.0

    def lr_scheduled(self) -> bool:
        """Whether ``lr_factor`` may change the lr in this run: the step then rewrites it in
        place at every step (as a device tensor under CUDA graphs); otherwise the optimiser
        keeps its plain float lr.  Default: the class overrides ``lr_factor``; a method whose
        schedule is a parameter says so per run (:class:`clusterbench.OptimizerChoice`)."""
        return type(self).lr_factor is not DeepMethod.lr_factor

    def after_step(self, model: nn.Module, progress: float, outputs: dict[str, torch.Tensor]) -> None:
        """Hook after each optimiser step (e.g. a momentum encoder's EMA update), given the
        step's detached ``training_loss`` outputs."""

    def model_input_size(self, data: ImageData) -> int:
        return int(self.params.image_size or data.image_size)

    # ---- Method interface -------------------------------------------------------------
    def fit(self, data: ImageData, ctx: RunContext) -> TrainStats:
        from clusterbench.train.engine import Engine  # the engine imports this module

        self.trained, stats = Engine(self, data, ctx).train()
        return stats

    def _apply(self, data: ImageData, fn) -> np.ndarray:
        if self.trained is None:
            raise RuntimeError(f"{self.name}: predict/features before fit")
        return self.trained.apply(fn, data.x)

    def predict(self, data: ImageData) -> np.ndarray:
        return self._apply(data, lambda m, x: self.cluster_logits(m, x).argmax(1)).astype(np.int64)

    def features(self, data: ImageData) -> np.ndarray:
        return self._apply(data, lambda m, x: self.embed(m, x).float())


def augment_policy(method: DeepMethod, data: ImageData | None) -> AugmentPolicy:
    """The method's augmentation (one spec, or one per view) with its input normalisation
    (``input_mean``/``input_std``) in every view.

    The test-time transform normalises with the class attributes, so a policy that
    normalises differently would train and predict on different inputs: a PluginError.
    """
    policy = method.augmentation(data)
    specs = tuple(_normalised(method, spec) for spec in view_specs(policy))
    return specs[0] if isinstance(policy, AugmentSpec) else specs


def _normalised(method: DeepMethod, spec: AugmentSpec) -> AugmentSpec:
    mean, std = method.input_mean, method.input_std
    if spec.mean is None and spec.std is None:
        return dataclasses.replace(spec, mean=mean, std=std)
    if (_tuple(spec.mean), _tuple(spec.std)) != (_tuple(mean), _tuple(std)):
        raise PluginError(f"method {method.name!r}: its AugmentSpec normalises with mean={spec.mean}, "
                          f"std={spec.std} but input_mean/input_std say {mean}/{std}; set them on the class")
    return spec


def _tuple(v) -> tuple[float, ...] | None:
    return None if v is None else tuple(float(x) for x in v)
