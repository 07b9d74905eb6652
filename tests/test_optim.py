"""The harness's optimiser/schedule choice (``clusterbench.OptimizerChoice``): what it builds,
the lr factors it gives (against values worked out by hand), the checks on its parameters, and
``unhashed_default`` (a parameter added with the old behaviour as its default keeps run ids)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from clusterbench import (ConfigError, DeepMethod, EngineSettings, OptimizerChoice, OptimizerParams, PluginError,
                          build_optimizer, lr_schedule, param)
from clusterbench.train.step import TrainStep


class _Toy(OptimizerChoice, DeepMethod):
    """The smallest deep method that lets its optimiser be chosen."""

    name, description = "toy-optim", "test: a linear layer"

    @dataclass(frozen=True)
    class Params(OptimizerParams):
        lr: float = param(0.5, "learning rate")

    def build_model(self, in_chans, image_size, n_clusters):
        return nn.Linear(2, 2)

    def training_loss(self, model, v1, v2):
        return {"loss": model(v1).sum()}

    def cluster_logits(self, model, x):
        return model(x)

    def embed(self, model, x):
        return x


def _step(m: DeepMethod) -> TrainStep:
    model = m.build_model(3, 4, 2)
    return TrainStep(m, model, m.configure_optimizer(model), EngineSettings(device="cpu"))


def test_cosine_factors_by_hand():
    # 0.5 * (1 + cos(pi p)): p = 1/4 -> (1 + sqrt(2)/2) / 2, p = 3/4 -> (1 - sqrt(2)/2) / 2
    got = [lr_schedule("cosine", p) for p in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert got == pytest.approx([1.0, 0.8535533906, 0.5, 0.1464466094, 0.0], abs=1e-9)
    # 20% warm-up: linear to 1 at p = 0.2, then the cosine over the remaining 80%
    got = [lr_schedule("cosine", p, 0.2) for p in (0.0, 0.1, 0.2, 0.6, 1.0)]
    assert got == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0], abs=1e-9)
    assert [lr_schedule("constant", p) for p in (0.0, 0.5, 1.0)] == [1.0, 1.0, 1.0]
    assert [lr_schedule("constant", p, 0.5) for p in (0.0, 0.25, 0.5, 0.9)] == [0.0, 0.5, 1.0, 1.0]
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        lr_schedule("step", 0.5)


def test_build_optimizer_gives_what_it_is_asked():
    w = [nn.Parameter(torch.zeros(3))]
    sgd = build_optimizer(w, "sgd", 0.2, 5e-4, momentum=0.9)
    g = sgd.param_groups[0]
    assert type(sgd) is torch.optim.SGD
    assert (g["lr"], g["momentum"], g["weight_decay"], g["nesterov"], g["dampening"]) == (0.2, 0.9, 5e-4, False, 0)
    adam = build_optimizer(w, "adam", 3e-4, 0.0)
    g = adam.param_groups[0]
    assert type(adam) is torch.optim.Adam and (g["lr"], g["weight_decay"], g["betas"]) == (3e-4, 0.0, (0.9, 0.999))
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        build_optimizer(w, "lamb", 0.1, 0.0)


def test_the_default_choice_is_the_constant_adam_of_deep_method():
    m = _Toy()
    step = _step(m)
    assert type(step.opt) is torch.optim.Adam and not m.lr_scheduled() and not step.scheduled
    step.set_progress(0.7)
    assert step.opt.param_groups[0]["lr"] == 0.5  # a plain float, never rewritten


def test_a_scheduled_choice_is_applied_by_the_step():
    m = _Toy(_Toy.resolve_params({"optimizer": "sgd", "schedule": "cosine", "lr": "0.4", "momentum": "0.8"}))
    step = _step(m)
    assert type(step.opt) is torch.optim.SGD and step.opt.param_groups[0]["momentum"] == 0.8
    assert m.lr_scheduled() and step.scheduled
    for p, lr in ((0.0, 0.4), (0.5, 0.2), (0.25, 0.2 * (1 + math.sqrt(0.5))), (1.0, 0.0)):
        step.set_progress(p)
        assert step.opt.param_groups[0]["lr"] == pytest.approx(lr, abs=1e-12)
    # a warm-up alone schedules a constant lr too
    assert _Toy(_Toy.resolve_params({"warmup": "0.1"})).lr_scheduled()


def test_choices_and_ranges_are_checked_before_anything_runs():
    with pytest.raises(ConfigError, match="optimizer='rmsprop' is not one of adam, sgd"):
        _Toy.resolve_params({"optimizer": "rmsprop"})
    with pytest.raises(ConfigError, match="warmup=1.0 must be < 1.0"):
        _Toy.resolve_params({"warmup": "1.0"})
    with pytest.raises(ConfigError, match="momentum=-0.1 must be >= 0.0"):
        _Toy.resolve_params({"momentum": "-0.1"})


def test_the_mixin_needs_its_params():
    class Bare(_Toy):
        name = "toy-bare"

        @dataclass(frozen=True)
        class Params:  # DeepParams' fields, not OptimizerParams'
            batch_size: int = 2
            lr: float = 0.1
            weight_decay: float = 0.0
            image_size: int = 0
            n_clusters: int = 0

    _Toy.check_class()
    with pytest.raises(PluginError, match="OptimizerChoice needs `Params` fields optimizer, momentum, schedule, "
                                          "warmup"):
        Bare.check_class()


def test_unhashed_defaults_leave_the_run_id_until_they_change():
    m = _Toy()
    assert m.identity_params() == {"batch_size": 256, "lr": 0.5, "weight_decay": 0.0, "image_size": 0,
                                   "n_clusters": 0}
    assert set(m.params_dict()) == set(m.identity_params()) | {"optimizer", "momentum", "schedule", "warmup"}
    sgd = _Toy(_Toy.resolve_params({"optimizer": "sgd"}))
    assert sgd.identity_params()["optimizer"] == "sgd" and "momentum" not in sgd.identity_params()
