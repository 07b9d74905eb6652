"""The training step as a CUDA graph: when it is used, and (on a GPU) that it trains like the eager step.

The GPU test runs over every registered deep method (its ``smoke`` preset), so a new deep
method gets the graph-vs-eager check with no test of its own.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from clusterbench import DeepMethod, EngineSettings
from clusterbench.plugins import load_registry
from clusterbench.train.augment import GPUAugment
from clusterbench.train.deep import augment_policy
from clusterbench.train.step import TrainStep, why_not_graphed

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    REG = load_registry()
DEEP = sorted(name for name, cls in REG.methods.items() if cls.deep)
SIZE, K = 16, 4
#: smoke presets with switches that the graph must replay right: TCC's shuffle-BN (draws and
#: gathers in the forward) and its noise switch, flipped by after_step mid-run (after the capture)
VARIANTS = {"tcc-switches": ("tcc", {"bn_splits": 4, "projector": "mlp", "assign_scale": 10.0,
                                     "gumbel_noise_fraction": 0.5, "tau_cluster": 0.2})}


def smoke(name: str) -> DeepMethod:
    """The smoke preset of a deep method, or of one of VARIANTS."""
    method, over = VARIANTS.get(name, (name, {}))
    cls = REG.methods[method]
    return cls(cls.resolve_params(over, preset="smoke"))


#: deep methods whose smoke preset has an lr schedule (the step updates the lr in place)
SCHEDULED = sorted(n for n in DEEP if smoke(n).lr_scheduled())


def test_every_deep_method_is_covered():
    assert {"cc", "cueco", "tcc", "vtcc"} <= set(DEEP)  # the parametrised tests below are not empty
    assert {"cueco", "tcc", "vtcc"} <= set(SCHEDULED) and "cc" not in SCHEDULED  # CC's smoke: constant Adam


def test_a_schedule_chosen_by_parameter_is_a_schedule_only_when_asked():
    cc = REG.methods["cc"]
    assert not cc(cc.resolve_params({}, preset="smoke")).lr_scheduled()
    cosine = cc(cc.resolve_params({"schedule": "cosine", "optimizer": "sgd"}, preset="smoke"))
    model = cosine.build_model(3, SIZE, K)
    step = TrainStep(cosine, model, cosine.configure_optimizer(model), EngineSettings(device="cpu"))
    assert step.scheduled
    step.set_progress(0.5)
    assert step.opt.param_groups[0]["lr"] == pytest.approx(0.5 * 3e-4)


@pytest.mark.parametrize("name", DEEP)
def test_graphs_are_off_on_the_cpu_and_say_why(name):
    m = smoke(name)
    model = m.build_model(3, SIZE, K)
    step = TrainStep(m, model, m.configure_optimizer(model), EngineSettings(device="cpu"))
    assert not step.use_graphs and step.graph_status == "off: no CUDA device"


def test_why_not_graphed_reasons():
    m = smoke("cc")
    opt_plain = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    opt_adam = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    on = EngineSettings(device="cuda")
    assert why_not_graphed("cpu", on, m, opt_adam, scheduled=False) == "no CUDA device"
    assert why_not_graphed("cuda", on, m, opt_adam, scheduled=False) is None
    assert why_not_graphed("cuda", on, m, opt_plain, scheduled=False) is None  # constant lr: baked in
    assert "fused or capturable" in why_not_graphed("cuda", on, m, opt_plain, scheduled=True)
    assert why_not_graphed("cuda", on, m, opt_adam, scheduled=True) is None  # Adam has `capturable`
    assert "disabled" in why_not_graphed("cuda", EngineSettings(device="cuda", cuda_graphs=False), m, opt_adam, False)
    m.cuda_graphs = False
    assert "opts out" in why_not_graphed("cuda", on, m, opt_adam, scheduled=False)


@pytest.mark.parametrize("name", SCHEDULED)
def test_scheduled_lr_is_applied_in_place_to_a_tensor_lr(name):
    m = smoke(name)
    model = m.build_model(3, SIZE, K)
    step = TrainStep(m, model, m.configure_optimizer(model), EngineSettings(device="cpu"))
    assert step.scheduled
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
    aug = GPUAugment(augment_policy(method, None), SIZE).cuda()  # the policy the engine uses
    gen = torch.Generator(device="cuda").manual_seed(0)
    batch = min(int(method.params.batch_size), len(x))
    losses = []
    for i in range(steps):
        idx = torch.randperm(len(x), generator=gen, device="cuda")[:batch]
        losses.append(step.step_on_indices(aug, x, idx, gen, i / steps)["loss"].item())
    return step, losses


@cuda
@pytest.mark.parametrize("name,compile", [(n, False) for n in DEEP + list(VARIANTS)]
                         + [(n, True) for n in DEEP + list(VARIANTS) if smoke(n).compile_model])
def test_graphed_step_trains_like_the_eager_step(name, compile):
    torch.backends.cudnn.deterministic = True
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (64, SIZE, SIZE, 3), dtype=np.uint8)).cuda()
    m_e, m_g = smoke(name), smoke(name)
    torch.manual_seed(0)
    model_e = m_e.build_model(3, SIZE, K).cuda()
    model_g = copy.deepcopy(model_e)
    step_e, loss_e = _train(m_e, model_e, False, 8, x, compile)
    step_g, loss_g = _train(m_g, model_g, True, 8, x, compile)
    assert step_e.graph_status.startswith("off")
    if not m_g.cuda_graphs:  # a method may opt out; then it must say so
        assert step_g.graph_status == f"off: method {name!r} opts out"
        return
    assert step_g.graph_status == "on"
    assert step_g.compile_status == ("on" if compile else "off")  # compiled (and not fallen back) when asked
    assert step_g._graphs["batch"].graph is not None  # captured after the warm-up, then replayed
    # same seed, same random draws, same updates (to float rounding of differently ordered kernels)
    np.testing.assert_allclose(loss_g, loss_e, rtol=1e-3, atol=1e-3)
    for a, b in zip(model_e.state_dict().values(), model_g.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)
