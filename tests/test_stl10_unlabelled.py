"""CC's official STL-10 recipe: the instance loss also trains on the unlabelled images (their own
pass each epoch), the cluster loss and the evaluation see the 13,000 labelled ones only.

On a tiny STL-10 in its binary layout (``stl10_binary/*.bin``, 96x96): the reader, the engine's
unlabelled pass and the recipe, through the CLI where a user would go."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import utils as tv_utils

from clusterbench import AugmentSpec, ConfigError, DataError
from clusterbench.cli import main
from clusterbench.datasets.synthetic import make_synthetic
from clusterbench.datasets.torchvision_sets import Stl10
from clusterbench.train.engine import Engine
from helpers import records_in
from test_datasets_real_layouts import write_stl10
from test_engine import Tiny, make_ctx

N_UNLABELLED = 8


@pytest.fixture(autouse=True)
def written_files_pass_md5(monkeypatch):
    """The files written here are not the originals: torchvision's md5 check would reject them."""
    monkeypatch.setattr(tv_utils, "check_md5", lambda *args, **kwargs: True)


def write_stl10_with_unlabelled(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """12 labelled images (6 train, 6 test: one per cluster at least) and ``N_UNLABELLED`` unlabelled
    ones, as STL-10 ships them."""
    d, x = write_stl10(root, n_train=6, n_test=6)
    u = np.random.default_rng(1).integers(0, 256, (N_UNLABELLED, 96, 96, 3), dtype=np.uint8)
    (d / "unlabeled_X.bin").write_bytes(u.transpose(0, 3, 2, 1).tobytes())  # (N, C, W, H), as train_X.bin
    return x, u


def test_the_reader_returns_the_unlabelled_images_only_when_asked(tmp_path):
    x, u = write_stl10_with_unlabelled(tmp_path)
    plain, both = Stl10(root=tmp_path).load(), Stl10(root=tmp_path, unlabelled="true").load()
    assert plain.unlabelled is None and plain.n_unlabelled == 0
    np.testing.assert_array_equal(both.unlabelled, u)  # read back row-major, like the labelled files
    np.testing.assert_array_equal(both.x, x)
    assert len(both) == 12 and both.n_unlabelled == N_UNLABELLED  # len() and evaluation: the labelled ones
    assert both.digest() != plain.digest()  # they change what is trained, so the digest covers them
    assert dataclasses.replace(both, unlabelled=None).digest() == plain.digest()  # without them: as before
    fit_view = both.without_labels().subset(np.array([0, 1]))  # what a method's fit sees keeps them
    assert fit_view.y is None and fit_view.n_unlabelled == N_UNLABELLED


def test_unlabelled_true_needs_their_file_and_torchvisions_layout(tmp_path):
    write_stl10(tmp_path)
    assert len(Stl10(root=tmp_path).load()) == 5  # the labelled files alone are enough without the option
    with pytest.raises(DataError, match=r"stl10_binary/unlabeled_X\.bin not found"):
        Stl10(root=tmp_path, unlabelled=True).load()
    (tmp_path / "stl10_binary" / "unlabeled_X.bin").write_bytes(b"\0" * 100)
    with pytest.raises(DataError, match=r"torchvision cannot read .*stl10_binary \(ValueError: cannot reshape"):
        Stl10(root=tmp_path, unlabelled=True).load()
    with pytest.raises(ConfigError, match=r"unlabelled=true reads stl10_binary/unlabeled_X\.bin .* not an image"):
        Stl10(root=tmp_path, unlabelled=True, path="stl10.tar.gz").load()


class TinyWithUnlabelled(Tiny):
    """Tiny, with an unlabelled loss; both losses note which images their views came from."""

    name = "tiny-unlabelled"

    def augmentation(self, data):
        return AugmentSpec(jitter_p=0.0, grayscale_p=0.0)  # crops and flips: a white image stays white

    def training_loss(self, model, v1, v2):
        self.seen.append(("labelled", bool((v1 == 1).all())))
        return super().training_loss(model, v1, v2)

    def unlabelled_loss(self, model, v1, v2):
        self.seen.append(("unlabelled", bool((v1 == 1).all())))
        return {"loss": (model(v1) - model(v2)).pow(2).mean()}


def _tiny_data():
    data = make_synthetic(n=64, k=4, size=8, channels=3, noise=0.1, seed=0)
    return dataclasses.replace(data, unlabelled=np.full((40, 8, 8, 3), 255, np.uint8))  # 40 white images


def _train(method, data, tmp_path, budget):
    method.seen = []
    _, stats = Engine(method, data, make_ctx(tmp_path, budget, data)).train()
    return stats


def test_each_epoch_is_an_unlabelled_pass_then_a_labelled_one_and_the_budget_counts_both(tmp_path):
    data, ctx_curve = _tiny_data(), []
    method = TinyWithUnlabelled(TinyWithUnlabelled.Params())  # batch 16: 2 unlabelled + 4 labelled steps an epoch
    method.seen = []
    ctx = make_ctx(tmp_path, "epochs=2", data)
    _, stats = Engine(method, data, ctx).train()
    ctx_curve = ctx.curve
    epoch = [("unlabelled", True)] * 2 + [("labelled", False)] * 4  # the unlabelled pass sees the white images only
    assert method.seen == epoch * 2
    d = stats.to_dict()
    assert (stats.steps, stats.images_seen, stats.epochs) == (12, 192, 2.0)  # steps=/images= count both passes
    assert (d["unlabelled_steps_per_epoch"], d["unlabelled_steps"], d["unlabelled_images_seen"]) == (2, 4, 64)
    assert d["unlabelled_pass"].startswith("on: 40 images, 2 steps") and d["steps_per_epoch"] == 4
    assert [p["epoch"] for p in ctx_curve] == [1, 2] and all("loss_unlabelled" in p for p in ctx_curve)
    assert all("acc" in p for p in ctx_curve)  # evaluated on the 64 labelled images (ctx.evaluate: len(y) = 64)
    # steps= counts every optimiser step: 5 stops in the labelled pass of epoch 1
    stats = _train(method, data, tmp_path / "steps", "steps=5")
    assert [k for k, _ in method.seen] == ["unlabelled"] * 2 + ["labelled"] * 3 and stats.epochs == pytest.approx(5 / 6)


def test_a_method_without_an_unlabelled_loss_ignores_them_and_says_so(tmp_path):
    stats = _train(Tiny(Tiny.Params()), _tiny_data(), tmp_path, "epochs=1")
    d = stats.to_dict()
    assert stats.steps == 4 and d["unlabelled_pass"] == "off: method 'tiny' has no unlabelled_loss"
    assert d["unlabelled_steps"] == 0


SMALL = "backbone=resnet18,small_stem=true,image_size=16,batch_size=4,feature_dim=8"  # CPU, seconds


def test_cc_runs_its_official_stl10_recipe_through_the_cli(tmp_path):
    write_stl10_with_unlabelled(tmp_path / "data")
    assert main(["run", "--methods", f"cc[{SMALL}]", f"cc[preset=smoke,{SMALL}]", "--datasets", "stl10",
                 "--data-root", str(tmp_path / "data"), "--seeds", "0", "--budget", "epochs=1", "--device", "cpu",
                 "--protocols", "head", "--results", str(tmp_path / "res"), "--quiet"]) == 0
    recs = {r["method_spec"]: r for r in records_in(tmp_path / "res")}
    paper, smoke = recs[f"cc[{SMALL}]"], recs[f"cc[preset=smoke,{SMALL}]"]
    # the paper settings read the unlabelled images and record the recipe that asked for them
    assert paper["dataset"]["options"] == {"unlabelled": "true"} and paper["recipe"]["data"] == {"unlabelled": True}
    assert "train_STL10.py:11-40, 73-80" in paper["recipe"]["source"] and paper["params"]["jitter_strength"] == 1.0
    assert (paper["dataset"]["n"], paper["dataset"]["n_unlabelled"]) == (12, N_UNLABELLED)
    # one epoch = 2 steps of L_ins on the 8 unlabelled images, then 3 of L_ins + L_clu on the 12 labelled ones
    st = paper["stats"]
    assert (st["steps"], st["unlabelled_steps"], st["unlabelled_images_seen"], st["steps_per_epoch"]) == (5, 2, 8, 3)
    assert paper["cost"]["images_seen"] == 20 and st["epochs"] == 1.0
    (point,) = paper["curve"]
    assert {"loss_unlabelled", "loss_instance", "loss_cluster", "acc"} <= set(point)
    # evaluated on the 12 labelled images only
    assert len(np.load(tmp_path / "res" / "runs" / paper["run_id"] / "labels.npy")) == 12
    assert paper["status"] == "done" and 0 <= paper["protocols"]["head"]["acc"] <= 1
    # a preset is not the paper setting: the labelled images as given, no unlabelled pass
    assert smoke["dataset"]["options"] == {} and "n_unlabelled" not in smoke["dataset"]
    assert smoke["stats"]["steps"] == 3 and "unlabelled_steps" not in smoke["stats"]
    assert smoke["dataset"]["digest"] != paper["dataset"]["digest"]


def test_typing_the_option_is_the_recipes_cell(tmp_path):
    """``stl10[unlabelled=true]`` given by hand is the cell the recipe makes (same run id): not rerun."""
    write_stl10_with_unlabelled(tmp_path / "data")
    args = ["--data-root", str(tmp_path / "data"), "--seeds", "0", "--budget", "steps=1", "--device", "cpu",
            "--protocols", "head", "--results", str(tmp_path / "res"), "--quiet"]
    assert main(["run", "--methods", f"cc[{SMALL}]", "--datasets", "stl10", *args]) == 0
    assert main(["run", "--methods", f"cc[{SMALL}]", "--datasets", "stl10[unlabelled=true]", *args]) == 0
    assert len(records_in(tmp_path / "res")) == 1


def test_info_shows_the_stl10_recipe(capsys):
    assert main(["info", "cc"]) == 0
    out = capsys.readouterr().out.split("per-dataset recipes", 1)[1]
    (row,) = [ln for ln in out.splitlines() if ln.startswith("stl10")]
    assert "jitter_strength=1.0" in row and "unlabelled=True" in row and "train_STL10.py:11-40, 73-80" in row


def test_cc_unlabelled_loss_is_the_instance_loss_alone():
    from clusterbench import nt_xent
    from clusterbench.methods.cc import CC

    m = CC(CC.resolve_params({"backbone": "resnet18", "small_stem": True, "feature_dim": 8}))
    net = m.build_model(3, 16, 4)
    v1, v2 = torch.rand(6, 3, 16, 16), torch.rand(6, 3, 16, 16)
    z1, _ = net(v1)
    z2, _ = net(v2)
    loss = m.unlabelled_loss(net, v1, v2)["loss"]
    assert loss.item() == pytest.approx(nt_xent(z1, z2, 0.5).item(), rel=1e-6)
    loss.backward()  # the cluster head gets zero gradients (not none), as the official zero_grad left them
    assert all(p.grad is not None and not p.grad.any() for p in net.cluster_projector.parameters())
    assert net.instance_projector[0].weight.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_unlabelled_pass_is_its_own_cuda_graph_and_trains_like_eager():
    """Two captured steps (unlabelled, labelled) over one optimiser and one generator, passes
    interleaved as epochs are: the same losses and weights as the eager steps."""
    import copy

    from clusterbench import EngineSettings
    from clusterbench.methods.cc import CC
    from clusterbench.train.augment import GPUAugment
    from clusterbench.train.deep import augment_policy
    from clusterbench.train.step import TrainStep

    torch.backends.cudnn.deterministic = True
    rng = np.random.default_rng(0)
    x_l, x_u = (torch.from_numpy(rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)).cuda() for n in (64, 96))
    passes = [True] * 5 + [False] * 5 + [True] * 5 + [False] * 3  # warm-up + capture of each, then replays

    def train(graphs: bool, model):
        m = CC(CC.resolve_params({}, preset="smoke"))
        step = TrainStep(m, model, m.configure_optimizer(model),
                         EngineSettings(device="cuda", precision="fp32", cuda_graphs=graphs, compile=False))
        aug = GPUAugment(augment_policy(m, None), 16).cuda()
        gen = torch.Generator(device="cuda").manual_seed(0)
        losses = []
        for i, unl in enumerate(passes):
            x = x_u if unl else x_l
            idx = torch.randperm(len(x), generator=gen, device="cuda")[:16]
            losses.append(step.step_on_indices(aug, x, idx, gen, i / len(passes), unlabelled=unl)["loss"].item())
        return step, losses

    torch.manual_seed(0)
    model_e = CC(CC.resolve_params({}, preset="smoke")).build_model(3, 16, 4).cuda()
    model_g = copy.deepcopy(model_e)
    _, loss_e = train(False, model_e)
    step_g, loss_g = train(True, model_g)
    assert step_g.graph_status == "on" and all(step_g._graphs[k].graph is not None for k in ("batch", "unlabelled"))
    np.testing.assert_allclose(loss_g, loss_e, rtol=1e-3, atol=1e-3)
    for a, b in zip(model_e.state_dict().values(), model_g.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)
