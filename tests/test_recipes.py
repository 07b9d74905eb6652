"""Per-dataset recipes: a method's official code changes its recipe per dataset, and so does the plugin
(CC on ImageNet-10: s = 1.0 and blur, images read at 224 px under the paper settings)."""

from __future__ import annotations

from PIL import Image

from clusterbench.budget import Budget
from clusterbench.cli import main
from clusterbench.datasets.imagenet_sets import IMAGENET10_WNIDS
from clusterbench.plugins import load_registry
from clusterbench.runner import plan_grid
from clusterbench.settings import EngineSettings
from helpers import records_in


def _imagenet10(root):
    for k, w in enumerate(IMAGENET10_WNIDS):
        for j in range(2):
            (root / "imagenet10" / w).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40 + j, 30), (20 * k, 100, 30 * j)).save(root / "imagenet10" / w / f"{w}_{j}.JPEG")
    return root


def test_info_prints_the_per_dataset_recipes_with_their_sources(capsys):
    assert main(["info", "cc"]) == 0
    out = capsys.readouterr().out.split("per-dataset recipes", 1)[1]
    rows = {ln.split()[0]: ln for ln in out.splitlines()[3:] if ln.strip()}
    assert "jitter_strength=1.0, blur=True" in rows["imagenet10"] and "size=224" in rows["imagenet10"]
    assert "train.py:78,84" in rows["imagenet10"] and "train.py:78,84" in rows["imagenet-dogs"]
    assert "jitter_strength=0.5" in rows["cifar10"] and "train.py:50,56" in rows["cifar10"]
    assert "jitter_strength=1.0" in rows["stl10"] and "train_STL10.py:65,71,77" in rows["stl10"]


def test_cc_on_imagenet10_runs_the_official_recipe_and_records_it(tmp_path):
    root = _imagenet10(tmp_path / "data")
    small = "backbone=resnet18,batch_size=4,feature_dim=8,image_size=32"  # the model at 32 px: fast
    assert main(["run", "--methods", f"cc[{small}]", f"cc[preset=smoke,{small}]", "--datasets", "imagenet10",
                 "--data-root", str(root), "--seeds", "0", "--budget", "steps=1", "--device", "cpu",
                 "--results", str(tmp_path / "res"), "--quiet"]) == 0
    recs = {r["method_spec"]: r for r in records_in(tmp_path / "res")}
    paper, smoke = recs[f"cc[{small}]"], recs[f"cc[preset=smoke,{small}]"]
    for rec in (paper, smoke):  # the recipe's parameters, whatever the preset (it sets neither)
        assert rec["params"]["jitter_strength"] == 1.0 and rec["params"]["blur"] is True
        assert rec["recipe"]["dataset"] == "imagenet10" and "train.py:78,84" in rec["recipe"]["source"]
        (view,) = rec["stats"]["augmentation"]["views"]
        assert (view["brightness"], view["hue"], view["blur_p"]) == (0.8, 0.2, 0.5)
    # the paper settings read the folder at 224 px (not pre-shrunk to 96)
    assert paper["dataset"]["options"] == {"size": "224"} and paper["dataset"]["image_size"] == 224
    # a preset is not the paper setting: the dataset as given (96 px, the reader's default)
    assert smoke["dataset"]["options"] == {} and smoke["dataset"]["image_size"] == 96


def test_options_the_user_gives_win_over_the_recipe(tmp_path):
    reg = load_registry()
    grid = plan_grid(reg, ["cc[jitter_strength=0.3]"], ["imagenet10[size=64]"], str(tmp_path))
    (key,) = grid.keys([0])
    _, cell = grid.cell(key, "digest", Budget.parse("steps=1"), EngineSettings(device="cpu"))
    assert cell.method.params.jitter_strength == 0.3 and cell.method.params.blur is True
    assert len(grid.datasets) == 1 and cell.dataset.opts.size == 64
    # the paper settings add the recipe's data options as a variant of the dataset, read once
    grid = plan_grid(reg, ["cc", "cc[preset=fast]"], ["imagenet10"], str(tmp_path))
    assert [str(ref) for ref, _ in grid.datasets] == ["imagenet10", "imagenet10[size=224]"]
    assert [(k.dataset, k.method) for k in grid.keys([0])] == [(1, 0), (0, 1)]
    # a dataset without a recipe: the defaults
    grid = plan_grid(reg, ["cc"], ["synthetic"])
    _, cell = grid.cell(grid.keys([0])[0], "digest", Budget.parse("steps=1"), EngineSettings(device="cpu"))
    assert cell.method.recipe is None and len(grid.datasets) == 1
