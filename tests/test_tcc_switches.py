"""TCC's candidate switches for short runs (methods/tcc.py, "Candidate switches"): each off by
default, and each against a hand computation on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clusterbench import ConfigError, ResNetBackbone, info_nce, neg_entropy_of_mean, simplex_centres
from clusterbench.methods.tcc import (TCC, VerdandiEncoder, cluster_queue_contrast, dec_sharpening_loss,
                                      perturbed_queue, verdandi_terms, weighted_cluster_means)
from clusterbench.train.splitbn import SplitBatchNorm2d

from test_tcc import _unit, naive_cluster_queue_contrast, verdandi_inputs

SWITCHES = ("gumbel_noise_fraction", "assign_scale", "projector", "bn_splits")


def _verdandi(**over):
    p = {"backbone": "resnet18", "feature_dim": 8, "instance_queue": 16, "cluster_queue_per_k": 2, **over}
    return TCC(TCC.resolve_params(p))


def test_every_switch_defaults_to_the_codes_behaviour_and_cites_its_source():
    p = TCC.Params()
    assert (p.gumbel_noise_fraction < 0, p.assign_scale, p.projector, p.bn_splits) == (True, 1.0, "linear", 0)
    for preset in ("paper", "verdandi", "fast"):  # no preset turns a candidate on (yet)
        q = TCC.resolve_params(preset=preset)
        assert all(getattr(q, n) == getattr(p, n) for n in SWITCHES), preset
    fields = {f.name: f for f in TCC.param_fields()}
    for name in SWITCHES:
        assert "OperationVerdandi@f70a1cc" in fields[name].metadata["source"], name
    with pytest.raises(ConfigError, match="bn_splits=7"):
        TCC(TCC.resolve_params({"bn_splits": 7}))  # 384 images do not make 7 equal groups


# ---- assign_scale ---------------------------------------------------------------------------------
def test_at_scale_one_even_a_feature_on_its_centre_gets_a_quarter_of_the_posterior():
    c = simplex_centres(10, 16)
    s = c[:1] @ c.t()  # the feature is centre 0: cosine 1 to it, -1/9 to the other nine
    for scale in (1.0, 10.0):
        want = math.exp(scale) / (math.exp(scale) + 9 * math.exp(-scale / 9))
        assert float((scale * s).softmax(1)[0, 0]) == pytest.approx(want, rel=1e-5)
    assert float(s.softmax(1)[0, 0]) == pytest.approx(0.25235, abs=1e-4)
    assert float((10 * s).softmax(1)[0, 0]) == pytest.approx(0.99987, abs=1e-4)
    # the Gumbel-max draw the assignment relaxes follows that posterior: at scale 1 it picks
    # the feature's own cluster a quarter of the time
    torch.manual_seed(0)
    g = -torch.empty(20000, 10).exponential_().log()
    assert float(((s + g).argmax(1) == 0).float().mean()) == pytest.approx(0.2524, abs=0.015)
    assert float(((10 * s + g).argmax(1) == 0).float().mean()) > 0.999


def test_assign_scale_multiplies_the_logits_of_the_gumbel_softmax_dec_and_the_balance_term():
    f, s, g, t, qn, qk, (n1, n2, n3) = verdandi_inputs(50)
    kw = dict(tau_instance=0.2, tau_cluster=0.5, tau_gumbel=0.3, noise_scale=1.0, queue_noise_std=0.1,
              noises=(n1, n2, n3))
    d = verdandi_terms(f, s, g, t, qn, qk, assign_scale=10.0, **kw)
    query = weighted_cluster_means(((10 * s + n1) / 0.3).softmax(1), f)
    key = weighted_cluster_means(((10 * t + n2) / 0.3).softmax(1), g)
    assert d["loss_cluster"].item() == pytest.approx(
        naive_cluster_queue_contrast(query, key, perturbed_queue(qk, 0.1, n3), 0.5), rel=1e-5)
    assert d["loss_dec"].item() == pytest.approx(dec_sharpening_loss((10 * s).softmax(1)).item(), rel=1e-6)
    assert d["loss_balance"].item() == pytest.approx(neg_entropy_of_mean((10 * s / 0.3).softmax(1)).item(),
                                                     abs=1e-6)
    assert d["loss_instance"].item() == pytest.approx(info_nce(f, g, qn, 0.2).item(), rel=1e-6)  # not a logit
    assert torch.allclose(d["cluster_keys"], key)
    # scale 1 is the code: the same numbers as without the argument
    one, plain = verdandi_terms(f, s, g, t, qn, qk, assign_scale=1.0, **kw), verdandi_terms(f, s, g, t, qn, qk, **kw)
    assert all(torch.equal(one[k], plain[k]) for k in plain)


# ---- tau_cluster (a value of an existing parameter) -------------------------------------------------
def test_the_cluster_contrast_at_temperature_one_has_little_room_below_chance():
    k = 10
    c = simplex_centres(k, 16)
    queue = c.repeat(20, 1)  # 20 past representations per cluster, entry j of cluster j mod K
    # perfectly separated clusters: cosine 1 to the positive, -1/9 to the 198 unmasked others
    for tau in (1.0, 0.2):
        want = -1 / tau + math.log(math.exp(1 / tau) + 198 * math.exp(-1 / (9 * tau)))
        assert cluster_queue_contrast(c, c, queue, tau).item() == pytest.approx(want, rel=1e-5)
    assert cluster_queue_contrast(c, c, queue, 1.0).item() == pytest.approx(4.1924, abs=1e-3)
    assert cluster_queue_contrast(c, c, queue, 0.2).item() == pytest.approx(0.5684, abs=1e-3)
    # no cluster structure at all (every representation the same): chance, log 199
    same = torch.ones(k, 16)
    assert cluster_queue_contrast(same, same, same.repeat(20, 1), 1.0).item() == pytest.approx(math.log(199), rel=1e-6)


# ---- gumbel_noise_fraction ------------------------------------------------------------------------
def _cluster_losses(m, net, x1, x2, n=2):
    with torch.no_grad():
        return [m.training_loss(net, x1, x2)["loss_cluster"].item() for _ in range(n)]


def test_the_noise_is_on_for_the_first_fraction_of_the_budget_then_off():
    torch.manual_seed(0)
    m = _verdandi(gumbel_noise_fraction=0.25, gumbel_noise_steps=0, queue_noise_std=0.0, momentum=1.0)
    net = m.build_model(3, 8, 3)
    x1, x2 = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    outputs = {k: v.detach() for k, v in m.training_loss(net, x1, x2).items()}
    on = []
    for i in range(10):  # a 10-step budget: progress i / 10 at the start of step i
        on.append(float(net.noise_on))
        m.after_step(net, i / 10, outputs)
    # the switch follows the progress of the step before: on for steps 0-3 (0.25 of 10 steps, plus
    # the one step after_step lags), off from step 4 on; gumbel_noise_steps=0 is not consulted
    assert on == [1.0] * 4 + [0.0] * 6
    quiet = _cluster_losses(m, net, x1, x2)
    assert quiet[0] == pytest.approx(quiet[1], rel=1e-6)
    # the switch is a buffer: a resumed run starts where it stopped
    fresh = m.build_model(3, 8, 3)
    assert float(fresh.noise_on) == 1.0
    fresh.load_state_dict(net.state_dict())
    assert float(fresh.noise_on) == 0.0


def test_while_the_switch_is_on_the_noise_is_drawn_and_fraction_zero_never_draws_it():
    torch.manual_seed(0)
    x1, x2 = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    m = _verdandi(gumbel_noise_fraction=0.5, gumbel_noise_steps=0, queue_noise_std=0.0)
    net = m.build_model(3, 8, 3)
    noisy = _cluster_losses(m, net, x1, x2)
    assert noisy[0] != pytest.approx(noisy[1], rel=1e-6)
    m0 = _verdandi(gumbel_noise_fraction=0.0, gumbel_noise_steps=-1, queue_noise_std=0.0)
    net0 = m0.build_model(3, 8, 3)
    assert float(net0.noise_on) == 0.0
    quiet = _cluster_losses(m0, net0, x1, x2)
    assert quiet[0] == pytest.approx(quiet[1], rel=1e-6)


# ---- projector ------------------------------------------------------------------------------------
def test_the_mlp_projector_is_linear_relu_linear_of_the_backbone_width():
    torch.manual_seed(0)
    enc = VerdandiEncoder(ResNetBackbone("resnet18", small_stem=True), 8, 3, True, projector="mlp").eval()
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        h = enc.backbone(x)
        w1, b1, w2, b2 = enc.fc[0].weight, enc.fc[0].bias, enc.fc[2].weight, enc.fc[2].bias
        assert w1.shape == (512, 512) and w2.shape == (8, 512)
        z = (h @ w1.t() + b1).clamp_min(0) @ w2.t() + b2
        want_f = z / z.norm(dim=1, keepdim=True)
        f, s = enc(x)
    assert torch.allclose(f, want_f, atol=1e-5)
    assert torch.allclose(s, want_f @ _unit(enc.centres).t(), atol=1e-5)
    linear = VerdandiEncoder(ResNetBackbone("resnet18", small_stem=True), 8, 3, True)
    assert isinstance(linear.fc, nn.Linear)  # the code's single layer stays the default


def test_an_mlp_model_trains_both_layers_and_its_twin_pairs_up():
    torch.manual_seed(0)
    m = _verdandi(projector="mlp", symmetric=True, momentum=0.5)
    net = m.build_model(3, 8, 3)
    terms = m.training_loss(net, torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8))
    terms["loss"].backward()
    assert net.online.fc[0].weight.grad.abs().sum() > 0 and net.online.fc[2].weight.grad.abs().sum() > 0
    before = [p.clone() for p in net.momentum.fc.parameters()]
    m.after_step(net, 0.0, {k: v.detach() for k, v in terms.items()})
    for old, new, src in zip(before, net.momentum.fc.parameters(), net.online.fc.parameters()):
        assert torch.allclose(new, 0.5 * old + 0.5 * src, atol=1e-6)


# ---- bn_splits --------------------------------------------------------------------------------------
def test_bn_splits_splits_both_encoders_and_shuffles_the_twins_batch():
    torch.manual_seed(0)
    m = _verdandi(bn_splits=2, batch_size=4, symmetric=True)
    net = m.build_model(3, 8, 3)
    for enc in (net.online, net.momentum):
        assert not any(type(x) is nn.BatchNorm2d for x in enc.modules())
        assert {x.splits for x in enc.modules() if isinstance(x, SplitBatchNorm2d)} == {2}
    assert net.shuffle_keys and not _verdandi().build_model(3, 8, 3).shuffle_keys
    v = torch.rand(4, 3, 8, 8)
    # the twin's keys: the encoder on the batch in the drawn order, BatchNorm over its halves,
    # handed back in the batch's order
    torch.manual_seed(5)
    perm = torch.rand(4).argsort()
    twin = [x for x in net.momentum.modules() if isinstance(x, SplitBatchNorm2d)]
    state = [(x.running_mean.clone(), x.running_var.clone()) for x in twin]
    with torch.no_grad():
        g_perm, t_perm = net.momentum(v[perm])
    for x, (mean, var) in zip(twin, state):  # undo that forward's running-statistics update
        x.running_mean.copy_(mean), x.running_var.copy_(var), x.num_batches_tracked.sub_(1)
    torch.manual_seed(5)
    g, t = net._keys(v)
    assert torch.allclose(g[perm], g_perm, atol=1e-6) and torch.allclose(t[perm], t_perm, atol=1e-6)
    terms = m.training_loss(net, v, torch.rand(4, 3, 8, 8))
    terms["loss"].backward()
    assert torch.isfinite(terms["loss"]) and net.online.backbone.net.bn1.weight.grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():  # prediction: BatchNorm with the running statistics, row by row
        assert torch.allclose(m.cluster_logits(net, v)[:2], m.cluster_logits(net, v[:2]), atol=1e-5)
