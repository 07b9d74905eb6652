"""The shared training engine on the CPU: budgets, curves, resume, divergence, determinism."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from clusterbench import (Budget, DeepMethod, DeepParams, EngineSettings, PluginError, RunContext, TrainingDiverged,
                          cc_loss, hookimpl, param)
from clusterbench.datasets.synthetic import make_synthetic
from clusterbench.evaluate.metrics import evaluate


class Tiny(DeepMethod):
    """A minimal deep method: a small conv net with a cluster head, CC-like loss."""

    name = "tiny"
    description = "tiny test method"

    @dataclass(frozen=True)
    class Params(DeepParams):
        batch_size: int = param(16, "batch")
        lr: float = param(1e-3, "lr")
        poison_at_step: int = param(-1, "make the loss NaN from this step on")

    def build_model(self, in_chans, image_size, n_clusters):
        self.steps = 0
        return nn.Sequential(nn.Conv2d(in_chans, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(8, n_clusters))

    def training_loss(self, model, v1, v2):
        l1, l2 = model(v1), model(v2)
        terms = cc_loss(l1, l2, l1.softmax(1), l2.softmax(1), 0.5, 1.0)
        self.steps += 1
        if 0 <= self.params.poison_at_step <= self.steps:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    def cluster_logits(self, model, x):
        return model(x)

    def embed(self, model, x):
        return model[:4](x)


def make_ctx(tmp_path: Path, budget: str, data, seed: int = 0) -> RunContext:
    return RunContext(seed=seed, budget=Budget.parse(budget), settings=EngineSettings(device="cpu", eval_every=1),
                      run_dir=tmp_path, evaluate=lambda labels: evaluate(data.y, labels))


@pytest.fixture
def data():
    return make_synthetic(n=64, k=4, size=8, channels=3, noise=0.1, seed=0)


def test_steps_budget_and_curve(tmp_path, data):
    m = Tiny(Tiny.resolve_params())
    ctx = make_ctx(tmp_path, "steps=6", data)
    stats = m.fit(data, ctx)
    assert stats.steps == 6 and stats.images_seen == 6 * 16
    assert stats.epochs == pytest.approx(1.5)
    assert [p["step"] for p in ctx.curve] == [4, 6]
    assert all(np.isfinite(p["loss"]) for p in ctx.curve)
    assert "acc" in ctx.curve[-1] and "loss_instance" in ctx.curve[-1]
    labels = m.predict(data)
    assert labels.shape == (64,) and labels.min() >= 0 and labels.max() < 4
    assert m.features(data).shape == (64, 8)


def test_epochs_budget(tmp_path, data):
    ctx = make_ctx(tmp_path, "epochs=2", data)
    stats = Tiny(Tiny.resolve_params()).fit(data, ctx)
    assert stats.epochs == 2 and stats.steps == 8
    # checkpointed after the final epoch too: the trained model, which a rerun evaluates without training
    # if a protocol fails (a partial record); the runner deletes it when the record is done
    assert torch.load(ctx.checkpoint_path, weights_only=False)["state"]["epoch"] == 2


def test_same_seed_same_model_different_seed_differs(tmp_path, data):
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        m = Tiny(Tiny.resolve_params())
        m.fit(data, make_ctx(tmp_path / f"r{len(outs)}", "steps=3", data, seed=seed))
        outs.append(m.features(data))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.allclose(outs[0], outs[2])


def test_resume_from_checkpoint_continues_not_restarts(tmp_path, data):
    # run 2 epochs (checkpoint written after each), then ask for 3: it resumes at epoch 2
    first = make_ctx(tmp_path, "epochs=3", data)
    first.budget = Budget.parse("epochs=2")
    torch.manual_seed(0)
    Tiny(Tiny.resolve_params()).fit(data, first)
    assert first.checkpoint_path.exists()  # saved after each epoch, the final one included
    ck = torch.load(first.checkpoint_path, weights_only=False)
    assert ck["state"]["epoch"] == 2
    resumed = make_ctx(tmp_path, "epochs=3", data)
    torch.manual_seed(0)
    stats = Tiny(Tiny.resolve_params()).fit(data, resumed)
    assert stats.resumed_from_epoch == 2
    assert stats.steps == 12  # 8 steps from the checkpoint + 4 new
    assert [p["epoch"] for p in resumed.curve] == [1, 2, 3]


def test_damaged_checkpoint_restarts_cleanly(tmp_path, data):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    ctx = make_ctx(tmp_path, "steps=2", data)
    with pytest.warns(UserWarning, match="could not be loaded"):
        stats = Tiny(Tiny.resolve_params()).fit(data, ctx)
    assert stats.steps == 2


def test_nan_loss_stops_with_reason(tmp_path, data):
    ctx = make_ctx(tmp_path, "epochs=3", data)
    with pytest.raises(TrainingDiverged, match="loss became nan") as info:
        Tiny(Tiny.resolve_params({"poison_at_step": 2})).fit(data, ctx)
    assert info.value.epoch == 0 and info.value.step is not None


def test_engine_failure_recorded_and_grid_goes_on(tmp_path):
    """Through the runner: a diverging method is a failed record; the next cell still runs."""
    from clusterbench.plugins import load_registry
    from clusterbench.results.store import ResultsStore
    from clusterbench.progress import Reporter
    from clusterbench.runner import run_grid

    class Plugin:
        @staticmethod
        @hookimpl
        def clusterbench_methods():
            return [Tiny]

    reg = load_registry(extra_plugins=[("tiny-plugin", Plugin)])
    store = ResultsStore(tmp_path / "res")
    result = run_grid(reg, ["tiny[poison_at_step=1]", "tiny"], ["synthetic[n=64,size=8,classes=4]"], [0],
                      Budget.parse("steps=3"), store, EngineSettings(device="cpu"), reporter=Reporter(quiet=True))
    statuses = [o.status for o in result.outcomes]
    assert statuses == ["failed", "done"]
    failed = json.loads(store.record_path(result.outcomes[0].run_id).read_text())
    assert failed["status"] == "failed" and "loss became nan" in failed["error"]["reason"]
    done = json.loads(store.record_path(result.outcomes[1].run_id).read_text())
    assert set(done["protocols"]) == {"head", "kmeans"}  # linear only when asked for: it is a cell of its own
    assert done["cost"]["train_images_per_s"] > 0 and done["curve"]


class Recording(Tiny):
    """Tiny, returning a non-scalar output too, and recording what ``after_step`` receives."""

    name = "recording"

    def training_loss(self, model, v1, v2):
        terms = super().training_loss(model, v1, v2)
        return {**terms, "logits": model(v1)}

    def after_step(self, model, progress, outputs):
        self.seen.append((progress, {k: v.clone() for k, v in outputs.items()}))


def test_after_step_receives_the_steps_outputs_and_only_scalars_reach_the_curve(tmp_path, data):
    m = Recording(Recording.resolve_params())
    m.seen = []
    ctx = make_ctx(tmp_path, "steps=3", data)
    m.fit(data, ctx)
    assert len(m.seen) == 3
    progress = [p for p, _ in m.seen]
    assert progress == sorted(progress) and progress[0] == 0.0 and progress[-1] < 1.0
    for _, outputs in m.seen:
        assert set(outputs) == {"loss", "loss_instance", "loss_cluster", "logits"}
        assert outputs["logits"].shape == (16, 4) and not outputs["logits"].requires_grad
        assert torch.isclose(outputs["loss"], outputs["loss_instance"] + outputs["loss_cluster"])
    assert not torch.equal(m.seen[0][1]["logits"], m.seen[1][1]["logits"])  # each step's own outputs
    assert "logits" not in ctx.curve[-1] and "loss_cluster" in ctx.curve[-1]


def test_a_deep_method_whose_params_lack_an_engine_field_fails_check_class():
    class NoBatch(Tiny):
        name = "nobatch"

        @dataclass(frozen=True)
        class Params:
            lr: float = param(1e-3, "lr")
            weight_decay: float = param(0.0, "wd")
            image_size: int = param(0, "size")
            n_clusters: int = param(0, "K")

    Tiny.check_class()  # the well-formed one passes
    with pytest.raises(PluginError, match=r"'nobatch'.*lacks batch_size") as info:
        NoBatch.check_class()
    assert "\n" not in str(info.value)


def test_a_deep_params_subclass_keeps_its_own_defaults():
    p = Tiny.Params()
    assert (p.batch_size, p.lr, p.weight_decay, p.image_size, p.n_clusters) == (16, 1e-3, 0.0, 0, 0)
    assert isinstance(p, DeepParams)


def test_predict_uses_the_trained_model_on_its_device(tmp_path, data):
    m = Tiny(Tiny.resolve_params())
    with pytest.raises(RuntimeError, match="before fit"):
        m.predict(data)
    m.fit(data, make_ctx(tmp_path, "steps=2", data))
    assert m.trained.device == torch.device("cpu") and m.trained.input_size == 8
    with torch.no_grad():
        x = torch.from_numpy(data.x).permute(0, 3, 1, 2).float() / 255
        expected = m.trained.model.eval()(x).argmax(1).numpy()
    np.testing.assert_array_equal(m.predict(data), expected)
