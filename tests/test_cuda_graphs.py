"""The training step as a CUDA graph: when it is used, and (on a GPU) that it trains like the eager step."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from clusterbench.train.augment import GPUAugment
from clusterbench.settings import EngineSettings
from clusterbench.train.engine import TrainStep, graph_blocker
from clusterbench.methods.cc import CC
from clusterbench.methods.cueco import CueCo
from clusterbench.methods.tcc import TCC

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _cc(**kw):
    return CC(CC.resolve_params({"backbone": "resnet18", "small_stem": True, "image_size": 0, "batch_size": 8, **kw}))


def _cueco(**kw):
    return CueCo(CueCo.resolve_params({"backbone": "resnet18", "small_stem": True, "image_size": 0, "batch_size": 8,
                                       "queue_size": 32, **kw}))


def _tcc(**kw):
    return TCC(TCC.resolve_params({"backbone": "resnet18", "small_stem": True, "image_size": 0, "batch_size": 8,
                                   **kw}))


def test_graphs_are_off_on_the_cpu_and_say_why():
    m = _cc()
    model = m.build_model(3, 16, 4)
    step = TrainStep(m, model, m.configure_optimizer(model), EngineSettings(device="cpu"))
    assert not step.use_graphs and step.graph_status == "off: no CUDA device"


def test_graph_blocker_reasons():
    m = _cc()
    opt_plain = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    opt_adam = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    on = EngineSettings(device="cuda")
    assert graph_blocker("cuda", on, m, opt_adam, scheduled=False) is None
    assert graph_blocker("cuda", on, m, opt_plain, scheduled=False) is None  # constant lr: baked in
    assert "fused or capturable" in graph_blocker("cuda", on, m, opt_plain, scheduled=True)
    assert graph_blocker("cuda", on, m, opt_adam, scheduled=True) is None  # Adam has `capturable`
    assert "disabled" in graph_blocker("cuda", EngineSettings(device="cuda", cuda_graphs=False), m, opt_adam, False)
    m.cuda_graphs = False
    assert "opts out" in graph_blocker("cuda", on, m, opt_adam, scheduled=False)


def test_scheduled_lr_is_applied_in_place_to_a_tensor_lr():
    m = _cueco(queue_size=0)
    model = m.build_model(3, 16, 4)
    step = TrainStep(m, model, m.configure_optimizer(model), EngineSettings(device="cpu"))
    g = step.opt.param_groups[0]
    g["lr"] = torch.tensor(1.0)  # what graph mode installs; the same tensor must be updated
    lr_t = g["lr"]
    step.set_progress(0.5)
    assert step.opt.param_groups[0]["lr"] is lr_t
    assert float(lr_t) == pytest.approx(step.base_lrs[0] * m.lr_factor(0.5))


def _train(method, model, graphs: bool, steps: int, x, compile: bool = False):
    settings = EngineSettings(device="cuda", precision="fp32", cuda_graphs=graphs, compile=compile)
    torch.manual_seed(1)  # draws inside the model (TCC's Gumbel noise) come from the default generator
    step = TrainStep(method, model, method.configure_optimizer(model), settings)
    aug = GPUAugment(method.augmentation(None), 16).cuda()
    gen = torch.Generator(device="cuda").manual_seed(0)
    losses = []
    for i in range(steps):
        idx = torch.randperm(len(x), generator=gen, device="cuda")[:8]
        losses.append(step.on_batch(aug, x, idx, gen, i / steps)["loss"].item())
    return step, losses


@cuda
@pytest.mark.parametrize("make,compile", [(_cc, False), (_cueco, False), (_tcc, False), (_cc, True), (_tcc, True)])
def test_graphed_step_trains_like_the_eager_step(make, compile):
    torch.backends.cudnn.deterministic = True
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (64, 16, 16, 3), dtype=np.uint8)).cuda()
    m_e, m_g = make(), make()
    torch.manual_seed(0)
    model_e = m_e.build_model(3, 16, 4).cuda()
    model_g = copy.deepcopy(model_e)
    step_e, loss_e = _train(m_e, model_e, False, 8, x, compile)
    step_g, loss_g = _train(m_g, model_g, True, 8, x, compile)
    assert step_e.graph_status.startswith("off") and step_g.graph_status == "on"
    assert step_g.compile_status == ("on" if compile else "off")  # compiled (and not fallen back) when asked
    assert step_g._graphs["batch"].graph is not None  # captured after the warm-up, then replayed
    # same seed, same random draws, same updates (to float rounding of differently ordered kernels)
    np.testing.assert_allclose(loss_g, loss_e, rtol=1e-3, atol=1e-3)
    for a, b in zip(model_e.state_dict().values(), model_g.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)
