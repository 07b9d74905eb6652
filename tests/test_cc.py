"""CC's losses against values computed by hand, and the model's shapes."""

from __future__ import annotations

import math

import pytest
import torch

from clusterbench import cc_cluster_loss, neg_entropy_of_mean, nt_xent
from clusterbench.methods.cc import CC


def naive_nt_xent(a: torch.Tensor, b: torch.Tensor, t: float) -> float:
    """The official InstanceLoss written as plain loops over the 2n rows."""
    z = torch.cat([a, b]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n2 = len(z)
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        pos = (i + n) % n2
        sims = [float(z[i] @ z[j]) / t for j in range(n2) if j != i]
        total += -(float(z[i] @ z[pos]) / t) + math.log(sum(math.exp(s) for s in sims))
    return total / n2


@pytest.mark.parametrize("n,d,t", [(2, 3, 0.5), (5, 4, 0.5), (4, 8, 1.0)])
def test_nt_xent_matches_hand_computation(n, d, t):
    g = torch.Generator().manual_seed(n * d)
    a, b = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    assert nt_xent(a, b, t).item() == pytest.approx(naive_nt_xent(a, b, t), rel=1e-5)


def test_nt_xent_small_for_identical_views():
    a = torch.eye(4) * 3
    # positives identical, negatives orthogonal: loss = -1/t + log(e^{1/t} + 6 e^0)
    t = 0.5
    expected = -1 / t + math.log(math.exp(1 / t) + 6)
    assert nt_xent(a, a.clone(), t).item() == pytest.approx(expected, rel=1e-6)


def test_entropy_term_zero_when_uniform_and_log_k_when_collapsed():
    k = 5
    uniform = torch.full((10, k), 1.0 / k)
    collapsed = torch.zeros(10, k)
    collapsed[:, 2] = 1.0
    assert neg_entropy_of_mean(uniform).item() == pytest.approx(0.0, abs=1e-6)
    assert neg_entropy_of_mean(collapsed).item() == pytest.approx(math.log(k), rel=1e-4)


def test_cluster_loss_is_contrast_over_columns_plus_entropy_terms():
    g = torch.Generator().manual_seed(0)
    c1 = torch.randn(8, 3, generator=g).softmax(1)
    c2 = torch.randn(8, 3, generator=g).softmax(1)
    p1, p2 = c1.sum(0) / c1.sum(), c2.sum(0) / c2.sum()
    ent = sum(math.log(3) + float((p * p.log()).sum()) for p in (p1, p2))
    expected = naive_nt_xent(c1.t(), c2.t(), 1.0) + ent
    assert cc_cluster_loss(c1, c2, 1.0).item() == pytest.approx(expected, rel=1e-5)


def test_model_shapes_and_loss_terms():
    m = CC(CC.resolve_params({"backbone": "resnet18", "small_stem": True, "image_size": 0}))
    net = m.build_model(3, 16, 7)
    x = torch.rand(6, 3, 16, 16)
    z, c = net(x)
    assert z.shape == (6, 128) and c.shape == (6, 7)
    assert torch.allclose(c.sum(1), torch.ones(6), atol=1e-5)
    assert m.cluster_logits(net, x).shape == (6, 7)
    assert m.embed(net, x).shape == (6, 512)
    terms = m.training_loss(net, x, torch.rand(6, 3, 16, 16))
    assert set(terms) == {"loss", "loss_instance", "loss_cluster"}
    assert torch.isclose(terms["loss"], terms["loss_instance"] + terms["loss_cluster"])
    terms["loss"].backward()
    assert net.cluster_projector[2].weight.grad is not None
    assert net.backbone.net.conv1.weight.grad.abs().sum() > 0


def test_defaults_are_the_papers():
    p = CC.Params()
    assert (p.backbone, p.image_size, p.batch_size, p.lr, p.weight_decay) == ("resnet34", 224, 256, 3e-4, 0.0)
    assert (p.tau_instance, p.tau_cluster, p.feature_dim) == (0.5, 1.0, 128)
    fast = CC.resolve_params(preset="fast")
    assert (fast.backbone, fast.small_stem, fast.image_size) == ("resnet18", True, 0)
