"""The training clock: one-off setup (compile, graph capture, a slow first step) is not training.

Driven through the CLI with a local plugin file holding two tiny deep methods that differ only
in that one of them sleeps in its first step, as a method whose first step compiles does.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import records_in, table_rows

from clusterbench.cli import main

SLEEP = 3.0  # seconds the slow method's first step takes on top of its work

PLUGIN = f'''
import time
from torch import nn
from clusterbench import DeepMethod, DeepParams, cc_loss, hookimpl


class Steady(DeepMethod):
    name = "steady"
    description = "tiny deep method"
    Params = DeepParams

    def build_model(self, in_chans, image_size, n_clusters):
        self.calls = 0
        return nn.Sequential(nn.Conv2d(in_chans, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(4, n_clusters))

    def first_call(self):
        pass

    def training_loss(self, model, v1, v2):
        self.calls += 1
        if self.calls == 1:
            self.first_call()
        l1, l2 = model(v1), model(v2)
        return cc_loss(l1, l2, l1.softmax(1), l2.softmax(1), 0.5, 1.0)

    def cluster_logits(self, model, x):
        return model(x)

    def embed(self, model, x):
        return model[:4](x)


class SlowStart(Steady):
    """Steady, whose first step also waits (as a first step that compiles would)."""

    name = "slowstart"

    def first_call(self):
        time.sleep({SLEEP})


@hookimpl
def clusterbench_methods():
    return [Steady, SlowStart]
'''

DATA = "synthetic[n=64,classes=4,size=8]"


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "clock_plugin.py"
    path.write_text(PLUGIN)
    return path


def _run(plugin, results, budget: str) -> dict[str, dict]:
    assert main(["--plugin", str(plugin), "run", "--methods", "steady[batch_size=16]", "slowstart[batch_size=16]",
                 "--datasets", DATA, "--seeds", "0", "--budget", budget, "--device", "cpu",
                 "--results", str(results), "--quiet"]) == 0
    return {r["method"]: r for r in records_in(results)}


def test_a_slow_first_step_is_setup_and_both_methods_train_for_the_same_time(plugin, tmp_path, capsys):
    budget_s = 0.9
    recs = _run(plugin, tmp_path / "res", f"minutes={budget_s / 60}")
    steady, slow = recs["steady"]["cost"], recs["slowstart"]["cost"]
    # the sleep is booked as setup, never as training
    assert slow["setup_seconds"] >= SLEEP and steady["setup_seconds"] >= 0
    assert recs["slowstart"]["stats"]["setup_seconds"] == slow["setup_seconds"]
    assert slow["wall_seconds"] >= slow["setup_seconds"] + slow["train_seconds"]
    # both trained for the budget (not the slow one for one step of SLEEP s), to within a step or two
    for c in (steady, slow):
        assert budget_s <= c["train_seconds"] < budget_s + 1.0 < SLEEP
    assert recs["slowstart"]["stats"]["steps"] > 10
    # the rate counts only the clocked images: the warm-up step's are off the clock too
    st = recs["slowstart"]["stats"]
    assert slow["train_images_per_s"] == pytest.approx((st["images_seen"] - st["setup_images"]) / st["train_seconds"])
    assert st["setup_images"] == 16  # one warm-up step on the CPU (no compile, no CUDA graph)

    # the cost-per-cell table shows both clocks
    assert main(["report", "--results", str(tmp_path / "res")]) == 0
    rows = table_rows(capsys.readouterr().out, "synthetic: cost per cell")
    slow_row = next(r for m, r in rows.items() if m.startswith("slowstart"))
    assert float(slow_row["Setup s"]) >= SLEEP and float(slow_row["Train s"]) < budget_s + 1.0


def test_warm_up_steps_are_training_steps_so_a_steps_budget_trains_the_same_model(plugin, tmp_path):
    recs = _run(plugin, tmp_path / "res", "steps=6")
    runs = {m: tmp_path / "res" / "runs" / r["run_id"] / "labels.npy" for m, r in recs.items()}
    assert recs["steady"]["stats"]["steps"] == recs["slowstart"]["stats"]["steps"] == 6
    assert np.array_equal(np.load(runs["steady"]), np.load(runs["slowstart"]))
    assert recs["slowstart"]["cost"]["setup_seconds"] >= SLEEP
    assert recs["slowstart"]["cost"]["train_seconds"] < SLEEP
