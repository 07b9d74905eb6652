"""The linear protocol never sees the test split (issue 12.6).

A ``linear`` request is a cell of its own, pretrained on the training split only; the
clustering cell keeps train+test and its run id; the probe trains on training features and
scores the test split; a dataset without a test split is refused with one line.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from clusterbench import ConfigError
from clusterbench.cli import main
from clusterbench.datasets.synthetic import Synthetic
from clusterbench.evaluate.linear import LinearProbe, logreg_probe, sgd_probe
from helpers import error_lines

PLUGIN = '''
from dataclasses import dataclass
import numpy as np
from clusterbench import Method, hookimpl


class Pixels(Method):
    """Fits nothing; its features are the pixels: what it saw in fit is len(data)."""
    name = "pixels"
    description = "test: pixel features"
    protocols = ("head", "linear")

    @dataclass(frozen=True)
    class Params:
        pass

    def fit(self, data, ctx):
        self.seen = len(data)

    def predict(self, data):
        return np.arange(len(data)) % data.n_classes

    def features(self, data):
        return data.x.reshape(len(data), -1).astype(np.float32) / 255


@hookimpl
def clusterbench_methods():
    return [Pixels]
'''
DATA = "synthetic[n=80,classes=4,size=8]"


def run(tmp_path, *args):
    plugin = tmp_path / "pix.py"
    plugin.write_text(PLUGIN)
    return main(["--plugin", str(plugin), "run", "--methods", "pixels", "--seeds", "0", "--quiet",
                 "--results", str(tmp_path / "res"), *args])


def records(tmp_path):
    return {r["train_split"]: r for r in (json.loads(p.read_text()) for p in tmp_path.glob("res/runs/*/record.json"))}


def test_one_command_makes_a_clustering_cell_and_a_train_only_linear_cell(tmp_path):
    assert run(tmp_path, "--datasets", DATA, "--protocols", "head", "linear", "linear-logreg",
               "--linear", "epochs=3") == 0
    recs = records(tmp_path)
    n_train = int(Synthetic(n=80, classes=4, size=8).load().train_mask.sum())
    clu, lin = recs["all"], recs["train"]
    assert set(clu["protocols"]) == {"head"} and clu["cost"]["images_seen"] == 80  # the papers' train+test
    assert set(lin["protocols"]) == {"linear", "linear-logreg"}
    assert lin["cost"]["images_seen"] == n_train < 80  # pretraining never saw a test image
    for proto in ("linear", "linear-logreg"):
        m = lin["protocols"][proto]
        assert m["trained_on"] == "train" and m["n_train"] == n_train and m["n_test"] == 80 - n_train
        assert 0 <= m["accuracy"] <= 1
    assert lin["protocols"]["linear"]["probe"] == "sgd" and lin["linear_probe"]["epochs"] == 3
    assert lin["run_id"] != clu["run_id"]
    # the clustering cell's id is what it was before linear cells existed: asking for it alone reuses it
    assert run(tmp_path, "--datasets", DATA, "--protocols", "head") == 0
    assert records(tmp_path)["all"]["run_id"] == clu["run_id"] and len(list(tmp_path.glob("res/runs/*"))) == 2


def test_linear_is_not_run_unless_asked(tmp_path):
    assert run(tmp_path, "--datasets", DATA) == 0
    assert set(records(tmp_path)) == {"all"} and set(records(tmp_path)["all"]["protocols"]) == {"head"}


def test_a_dataset_without_a_test_split_is_refused_in_one_line(tmp_path, capsys):
    npz = tmp_path / "d.npz"
    d = Synthetic(n=40, classes=4, size=8).load()
    np.savez(npz, x=d.x, y=d.y)  # no train_mask
    assert run(tmp_path, "--datasets", f"npz[path={npz}]", "--protocols", "head", "linear") == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "has no train/test split, so protocol linear of pixels cannot run" in line
    assert not list(tmp_path.glob("res/runs/*"))  # refused before any cell ran


def test_bad_probe_settings_are_one_line(tmp_path, capsys):
    assert run(tmp_path, "--datasets", DATA, "--protocols", "linear", "--linear", "epoch=3") == 2
    assert "expected KEY=VALUE with KEY one of epochs, lr" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="is not a valid int"):
        LinearProbe.parse(["epochs=many"])


class _Feats:
    """A method stand-in whose features are the class, one-hot, plus noise: a linear probe must learn it."""

    name = "feats"

    def features(self, data):
        rng = np.random.default_rng(0)
        return np.eye(data.n_classes, dtype=np.float32)[data.y] + 0.1 * rng.standard_normal(
            (len(data), data.n_classes)).astype(np.float32)


def test_both_probes_learn_a_separable_problem_and_score_the_test_split():
    data = Synthetic(n=200, classes=4, size=8).load()
    got = sgd_probe(_Feats(), data, LinearProbe(epochs=20, batch_size=32), seed=0)
    assert got["accuracy"] > 0.95 and got["augmented"] is False and got["n_test"] == int((~data.train_mask).sum())
    assert logreg_probe(_Feats().features(data), data, seed=0)["accuracy"] > 0.95


def test_deep_method_probe_runs_on_augmented_views(tmp_path):
    assert main(["run", "--methods", "cc[preset=smoke]", "--datasets", "synthetic[n=48,classes=4,size=16]",
                 "--seeds", "0", "--budget", "steps=2", "--device", "cpu", "--results", str(tmp_path / "res"),
                 "--quiet", "--protocols", "linear", "--linear", "epochs=2"]) == 0
    (lin,) = records(tmp_path).values()
    assert lin["train_split"] == "train" and lin["protocols"]["linear"]["augmented"] is True
