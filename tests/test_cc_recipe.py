"""CC's ``cifar32`` recipe (issue 17): the paper preset's optimiser is untouched, ``cifar32``
builds SGD with its hyper-parameters and a cosine to 0, and every record of a ``cifar32`` cell
says that its optimiser and schedule are the harness's, not the paper's."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from clusterbench import Budget, EngineSettings
from clusterbench.cell import Cell
from clusterbench.cli import main
import clusterbench.methods.cc as cc_module
from clusterbench.methods.cc import CC, CIFAR32_PROVENANCE
from clusterbench.plugins import PluginRef, load_registry
from clusterbench.train.step import TrainStep
from helpers import records_in

PROVENANCE = "objective from official code; optimiser and schedule chosen by the harness, see results/recipes/"
REFERENCE_CC = Path(__file__).resolve().parents[1] / "results" / "runs" / "cc--cifar10--s0--5433a009e7a1"


def _stepper(params) -> tuple[CC, TrainStep]:
    m = CC(params)
    model = m.build_model(3, 16, 4)
    return m, TrainStep(m, model, m.configure_optimizer(model), EngineSettings(device="cpu"))


def test_the_paper_preset_keeps_a_constant_adam_3e4():
    for params in (CC.Params(), CC.resolve_params(preset="paper"), CC.resolve_params(preset="fast")):
        m, step = _stepper(params)
        (g,) = step.opt.param_groups
        assert type(step.opt) is torch.optim.Adam
        assert (g["lr"], g["weight_decay"], g["betas"], g["eps"], g["amsgrad"]) == (3e-4, 0.0, (0.9, 0.999), 1e-8,
                                                                                     False)
        assert len(g["params"]) == len(list(step.model.parameters()))  # every parameter, one group
        assert not m.lr_scheduled() and not step.scheduled
        for p in (0.0, 0.5, 0.99):
            step.set_progress(p)
            assert g["lr"] == 3e-4 and isinstance(g["lr"], float)


def test_cifar32_is_sgd_with_cosine_to_zero():
    p = CC.resolve_params(preset="cifar32", dataset="cifar10")
    assert (p.backbone, p.small_stem, p.image_size, p.batch_size) == ("resnet18", True, 0, 256)
    assert (p.tau_instance, p.tau_cluster, p.feature_dim, p.jitter_strength, p.blur) == (0.5, 1.0, 128, 0.5, False)
    m, step = _stepper(p)
    (g,) = step.opt.param_groups
    assert type(step.opt) is torch.optim.SGD
    assert (g["lr"], g["momentum"], g["weight_decay"], g["nesterov"], g["dampening"]) == (0.2, 0.9, 5e-4, False, 0)
    assert len(g["params"]) == len(list(step.model.parameters()))  # weight decay on every parameter
    assert m.lr_scheduled() and step.scheduled
    # lr = 0.2 * (1 + cos(pi p)) / 2, worked out: 0.2, 0.2 (2 + sqrt 2) / 4, 0.1, 0.2 (2 - sqrt 2) / 4, 0
    want = {0.0: 0.2, 0.25: 0.2 * (2 + math.sqrt(2)) / 4, 0.5: 0.1, 0.75: 0.2 * (2 - math.sqrt(2)) / 4, 1.0: 0.0}
    assert want[0.25] == pytest.approx(0.1707107, abs=1e-7) and want[0.75] == pytest.approx(0.0292893, abs=1e-7)
    for progress, lr in want.items():
        step.set_progress(progress)
        assert g["lr"] == pytest.approx(lr, abs=1e-12)


def test_cifar32_says_where_it_comes_from():
    assert CIFAR32_PROVENANCE == PROVENANCE and CC.presets["cifar32"].provenance == PROVENANCE
    assert PROVENANCE in cc_module.__doc__  # the module docstring says it in so many words
    assert getattr(CC.presets["paper"], "provenance", "") == ""


def test_info_shows_the_preset_and_its_provenance(capsys):
    assert main(["info", "cc"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("preset cifar32:"))
    for item in ("backbone=resnet18", "small_stem=True", "image_size=0", "optimizer=sgd", "momentum=0.9", "lr=0.2",
                 "weight_decay=0.0005", "schedule=cosine", "warmup=0.0", "batch_size=256"):
        assert item in line.split(": ", 1)[1].split(", ")
    after = out.split(line, 1)[1].splitlines()
    assert after[1] == f"  provenance: {PROVENANCE}"
    rows = {ln.split()[0]: ln for ln in out.splitlines() if ln.split() and ln.split()[0] in ("optimizer", "schedule")}
    assert "adam" in rows["optimizer"] and "train.py:107" in rows["optimizer"]
    assert "constant" in rows["schedule"] and "train.py:118-124" in rows["schedule"]


def test_a_cifar32_record_does_not_claim_the_papers_setting(tmp_path):
    tiny = "batch_size=8,feature_dim=8"
    assert main(["run", "--methods", f"cc[preset=cifar32,{tiny}]", f"cc[preset=smoke,{tiny}]", "kmeans",
                 "--datasets", "synthetic[n=32,size=16,classes=4]", "--seeds", "0", "--budget", "steps=2",
                 "--device", "cpu", "--protocols", "head", "--results", str(tmp_path), "--quiet"]) == 0
    recs = {r["method_spec"]: r for r in records_in(tmp_path)}
    s = recs[f"cc[preset=cifar32,{tiny}]"]["setting"]
    assert s["preset"] == "cifar32" and s["paper"] is False and s["provenance"] == PROVENANCE
    assert s["changed"]["optimizer"] == {"paper": "adam", "run": "sgd"}
    assert s["changed"]["schedule"] == {"paper": "constant", "run": "cosine"}
    assert s["changed"]["lr"] == {"paper": 3e-4, "run": 0.2} and s["changed"]["weight_decay"]["run"] == 5e-4
    assert s["changed"]["backbone"] == {"paper": "resnet34", "run": "resnet18"}
    assert "tau_instance" not in s["changed"] and "momentum" not in s["changed"]  # the paper's objective
    # the plugin-level provenance is about the code, the setting about this run
    assert recs[f"cc[preset=cifar32,{tiny}]"]["method_provenance"] == "official-code"
    smoke = recs[f"cc[preset=smoke,{tiny}]"]["setting"]
    assert smoke["paper"] is False and smoke["provenance"] == "" and "optimizer" not in smoke["changed"]
    assert recs["kmeans"]["setting"] == {"preset": None, "paper": True, "changed": {}, "provenance": ""}


def test_the_setting_is_read_from_the_parameters_however_they_were_set():
    same = CC.resolve_params({"optimizer": "sgd", "lr": 0.2, "weight_decay": 5e-4, "schedule": "cosine"},
                             preset="fast", dataset="cifar10")
    assert same == CC.resolve_params(preset="cifar32", dataset="cifar10")
    s = CC.describe_setting(same, "fast", "cifar10")
    assert s["paper"] is False and s["changed"]["optimizer"]["run"] == "sgd"
    assert CC.describe_setting(CC.resolve_params(dataset="cifar10"), None, "cifar10")["paper"] is True
    # ImageNet-10's recipe (s = 1.0, blur) is the paper's setting there, not a change
    assert CC.describe_setting(CC.resolve_params(preset="paper", dataset="imagenet10"), "paper",
                               "imagenet10") == {"preset": "paper", "paper": True, "changed": {}, "provenance": ""}


def test_the_reference_records_parameters_are_the_methods_less_the_unhashed_new_ones():
    """The committed ``cc[preset=fast]`` record predates the optimiser parameters: they are the
    method's parameters it lacks, and their defaults are the code it ran (its run id is pinned in
    tests/test_committed_results.py)."""
    rec = json.loads((REFERENCE_CC / "record.json").read_text())
    method = load_registry().make_method(PluginRef.parse(rec["method_spec"]), dataset=rec["dataset"]["name"])
    assert set(rec["params"]) | {"optimizer", "momentum", "schedule", "warmup"} == set(method.params_dict())


RECIPES = Path(__file__).resolve().parents[1] / "results" / "recipes"


def test_the_committed_search_files_are_grids_of_the_cifar32_recipe():
    from clusterbench.launch.spec import read_grid_file

    reg = load_registry()
    one, _ = read_grid_file(RECIPES / "cc-cifar10-stage1.yaml")
    assert one["seeds"] == [0] and one["budget"] == ["epochs=100"] and one["protocols"] == ["head", "kmeans"]
    assert one["datasets"] == ["cifar10[path=.data/cifar10_jpeg_imagefolder.tar.gz]"]
    assert 1 < len(one["methods"]) <= 8
    methods = [reg.make_method(m, dataset="cifar10") for m in one["methods"]]
    assert all(PluginRef.parse(m).opts["preset"] == "cifar32" for m in one["methods"])
    params = [m.params for m in methods]
    assert len(set(params)) == len(params)  # no two candidates are the same cell
    assert params[0] == CC.resolve_params(preset="cifar32", dataset="cifar10")  # the starting point first
    assert all((p.optimizer, p.schedule, p.backbone) == ("sgd", "cosine", "resnet18") for p in params)
    two, _ = read_grid_file(RECIPES / "cc-cifar10-stage2.yaml")
    assert two["methods"] == ["cc[preset=cifar32]"] and two["seeds"] == [0, 1, 2]
    assert two["datasets"] == one["datasets"] and two["budget"] == ["epochs=500"]
