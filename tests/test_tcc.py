"""TCC's pieces against values computed by hand, its gradients, shapes and an end-to-end fit."""

from __future__ import annotations

import math

import pytest
import torch

from clusterbench.methods.tcc import (
    TCC,
    cluster_contrastive_loss,
    cluster_representations,
    gumbel_softmax_sample,
    instance_elbo_loss,
    marginal_kl_to_uniform,
    tcc_loss,
)


def naive_nt_xent(a: torch.Tensor, b: torch.Tensor, t: float) -> float:
    """InfoNCE over the 2n rows of [a; b] written as loops (positive: the same row of the other view)."""
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


def naive_cluster_reps(q: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """s_k = sum_i q_ik u_i / || sum_i q_ik u_i ||, one cluster at a time."""
    n, k = q.shape
    reps = []
    for c in range(k):
        v = torch.zeros(u.shape[1], dtype=torch.float64)
        for i in range(n):
            v += float(q[i, c]) * u[i].double()
        reps.append(v / v.norm())
    return torch.stack(reps)


def naive_marginal_kl(q: torch.Tensor) -> float:
    """KL(mean_i q_i || uniform) = sum_k p_k log(p_k K)."""
    n, k = q.shape
    p = [sum(float(q[i, c]) for i in range(n)) / n for c in range(k)]
    return sum(pk * math.log(pk * k) for pk in p if pk > 0)


def _rand(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _unit(x):
    return x / x.norm(dim=1, keepdim=True)


# ---- the pure functions -----------------------------------------------------------------------------
def test_gumbel_softmax_sample_is_softmax_of_perturbed_logits():
    logits, g, tau = _rand(0, 4, 3), _rand(1, 4, 3), 0.7
    y = gumbel_softmax_sample(logits, tau, noise=g)
    for i in range(4):
        e = [math.exp((float(logits[i, c]) + float(g[i, c])) / tau) for c in range(3)]
        for c in range(3):
            assert float(y[i, c]) == pytest.approx(e[c] / sum(e), rel=1e-5)


def test_gumbel_softmax_hard_is_one_hot_with_the_soft_gradient():
    logits = _rand(2, 5, 4).requires_grad_(True)
    g = _rand(3, 5, 4)
    y = gumbel_softmax_sample(logits, 0.5, noise=g, hard=True)
    soft = gumbel_softmax_sample(logits, 0.5, noise=g)
    one_hot = torch.nn.functional.one_hot(soft.detach().argmax(1), 4).float()
    assert torch.allclose(y.detach(), one_hot, atol=1e-6)
    (y * torch.arange(4.0)).sum().backward()
    assert logits.grad.abs().sum() > 0


def test_gumbel_samples_follow_the_categorical_distribution():
    # Gumbel-max trick: argmax of the perturbed logits is distributed as softmax(logits)
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 0.0, -1.0]]).repeat(20000, 1)
    y = gumbel_softmax_sample(logits, 1.0)
    assert torch.allclose(y.sum(1), torch.ones(len(y)), atol=1e-5)
    freq = torch.bincount(y.argmax(1), minlength=3).float() / len(y)
    assert torch.allclose(freq, logits[0].softmax(0), atol=0.015)


def test_cluster_representations_are_assignment_weighted_means_on_the_sphere():
    q = _rand(4, 7, 3).softmax(1)
    u = _unit(_rand(5, 7, 5))
    s = cluster_representations(q, u)
    assert s.shape == (3, 5)
    assert torch.allclose(s.double(), naive_cluster_reps(q, u), atol=1e-5)
    # a hard assignment gives the normalised mean of the cluster's own members
    hard = torch.zeros(7, 3)
    hard[[0, 1, 2], 0] = 1
    hard[[3, 4], 1] = 1
    hard[[5, 6], 2] = 1
    s = cluster_representations(hard, u)
    assert torch.allclose(s[1], _unit(u[3:5].mean(0, keepdim=True))[0], atol=1e-6)


def test_cluster_contrastive_loss_matches_hand_computation():
    q1, q2 = _rand(6, 8, 4).softmax(1), _rand(7, 8, 4).softmax(1)
    u1, u2 = _unit(_rand(8, 8, 6)), _unit(_rand(9, 8, 6))
    s1, s2 = naive_cluster_reps(q1, u1), naive_cluster_reps(q2, u2)
    for t in (0.5, 1.0):
        expected = naive_nt_xent(s1, s2, t)
        assert cluster_contrastive_loss(q1, u1, q2, u2, t).item() == pytest.approx(expected, rel=1e-5)


def test_cluster_contrast_rewards_assignments_consistent_across_views():
    # two well-separated groups of features; assigning them consistently in both views
    # gives a lower cluster-level loss than swapping the clusters between the views
    u = _unit(torch.tensor([[1.0, 0.1], [1.0, -0.1], [-1.0, 0.1], [-1.0, -0.1]]))
    q = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])
    consistent = cluster_contrastive_loss(q, u, q, u, 0.5)
    swapped = cluster_contrastive_loss(q, u, q.flip(1), u, 0.5)
    assert consistent < swapped


def test_instance_elbo_term_is_infonce_of_the_conditional_embeddings():
    z1, z2 = _rand(10, 5, 4), _rand(11, 5, 4)
    assert instance_elbo_loss(z1, z2, 0.5).item() == pytest.approx(naive_nt_xent(z1, z2, 0.5), rel=1e-5)


def test_marginal_kl_zero_when_uniform_and_log_k_when_collapsed():
    k = 5
    uniform = torch.full((6, k), 1.0 / k)
    collapsed = torch.zeros(6, k)
    collapsed[:, 3] = 1.0
    assert marginal_kl_to_uniform(uniform, uniform).item() == pytest.approx(0.0, abs=1e-6)
    assert marginal_kl_to_uniform(collapsed, collapsed).item() == pytest.approx(math.log(k), rel=1e-4)
    # per-sample confident but balanced over the batch: the marginal term is still ~0
    balanced = torch.eye(k).repeat(2, 1)
    assert marginal_kl_to_uniform(balanced[:k], balanced[k:]).item() == pytest.approx(0.0, abs=1e-6)
    q1, q2 = _rand(12, 6, k).softmax(1), _rand(13, 6, k).softmax(1)
    expected = naive_marginal_kl(torch.cat([q1, q2]))
    assert marginal_kl_to_uniform(q1, q2).item() == pytest.approx(expected, rel=1e-4)
    assert marginal_kl_to_uniform(q1, q2).item() > 0


def test_total_loss_is_the_weighted_sum_of_the_three_terms():
    q1, q2 = _rand(14, 6, 3).softmax(1), _rand(15, 6, 3).softmax(1)
    u1, u2, z1, z2 = (_unit(_rand(s, 6, 4)) for s in (16, 17, 18, 19))
    terms = tcc_loss(q1, u1, z1, q2, u2, z2, 0.5, 1.0, 0.3)
    expected = (naive_nt_xent(z1, z2, 0.5)
                + naive_nt_xent(naive_cluster_reps(q1, u1), naive_cluster_reps(q2, u2), 1.0)
                + 0.3 * naive_marginal_kl(torch.cat([q1, q2])))
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert set(terms) == {"loss", "loss_instance", "loss_cluster", "loss_entropy"}
    # other aggregation weights change only the cluster term
    w1, w2 = _rand(20, 6, 3).softmax(1), _rand(21, 6, 3).softmax(1)
    other = tcc_loss(q1, u1, z1, q2, u2, z2, 0.5, 1.0, 0.3, w1, w2)
    assert other["loss_instance"] == terms["loss_instance"] and other["loss_entropy"] == terms["loss_entropy"]
    assert other["loss_cluster"].item() == pytest.approx(
        naive_nt_xent(naive_cluster_reps(w1, u1), naive_cluster_reps(w2, u2), 1.0), rel=1e-5)


# ---- the model ---------------------------------------------------------------------------------------
def _small(**over):
    return TCC(TCC.resolve_params({"backbone": "resnet18", "small_stem": True, "image_size": 0, **over}))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return _small().build_model(3, 16, 4)  # the architecture does not depend on the loss options


PARTS = ("backbone", "assignment_head", "cluster_projector", "instance_projector")


def _grad_norms(net, method, term_names):
    """{term: {part: sum |d term / d params of part|}} from one forward pass."""
    torch.manual_seed(1)
    net.train()
    terms = method.training_loss(net, torch.rand(6, 3, 16, 16), torch.rand(6, 3, 16, 16))
    out = {}
    for name in term_names:
        out[name] = {}
        for part in PARTS:
            params = list(getattr(net, part).parameters())
            grads = torch.autograd.grad(terms[name], params, retain_graph=True, allow_unused=True)
            out[name][part] = sum(float(g.abs().sum()) for g in grads if g is not None)
    return terms, out


def test_model_shapes_and_prediction_rule(net):
    m = _small()
    net.eval()
    x = torch.rand(6, 3, 16, 16)
    with torch.no_grad():
        q, k, u, z = net(x)
        assert q.shape == k.shape == (6, 4) and u.shape == z.shape == (6, 128)
        assert torch.allclose(q.sum(1), torch.ones(6), atol=1e-5)
        assert torch.allclose(k.sum(1), torch.ones(6), atol=1e-5)
        assert torch.allclose(u.norm(dim=1), torch.ones(6), atol=1e-5)
        assert torch.allclose(z.norm(dim=1), torch.ones(6), atol=1e-5)
        logits = m.cluster_logits(net, x)
        assert logits.shape == (6, 4)
        # prediction = argmax q(k|x) of the assignment head, deterministic (no Gumbel noise)
        h = net.backbone(x)
        assert torch.allclose(logits, net.assignment_head(h).softmax(1), atol=1e-6)
        assert torch.equal(m.cluster_logits(net, x), logits)
        assert m.embed(net, x).shape == (6, 512)
        # the instance embedding is conditioned on the assignment
        onehot = torch.eye(4)
        assert not torch.allclose(net.instance_features(h, onehot[[0] * 6]), net.instance_features(h, onehot[[1] * 6]))


def test_each_term_reaches_the_parameters_it_should(net):
    terms, g = _grad_norms(net, _small(entropy_weight=0.5), ("loss_instance", "loss_cluster", "loss_entropy"))
    assert all(torch.isfinite(v) for v in terms.values())
    assert torch.isclose(terms["loss"], terms["loss_instance"] + terms["loss_cluster"] + 0.5 * terms["loss_entropy"])
    # instance ELBO term: reaches the assignment head through the reparameterised sample k~
    assert g["loss_instance"]["assignment_head"] > 0
    assert g["loss_instance"]["instance_projector"] > 0 and g["loss_instance"]["backbone"] > 0
    assert g["loss_instance"]["cluster_projector"] == 0
    # cluster-level contrast: assignments (aggregation weights) and the cluster projector
    assert g["loss_cluster"]["assignment_head"] > 0 and g["loss_cluster"]["cluster_projector"] > 0
    assert g["loss_cluster"]["backbone"] > 0 and g["loss_cluster"]["instance_projector"] == 0
    # marginal KL: the assignment head only (and the backbone below it)
    assert g["loss_entropy"]["assignment_head"] > 0
    assert g["loss_entropy"]["instance_projector"] == 0 and g["loss_entropy"]["cluster_projector"] == 0


def test_aggregating_with_hard_samples_still_trains_end_to_end(net):
    _, g = _grad_norms(net, _small(aggregate_samples=True, gumbel_hard=True), ("loss", "loss_cluster"))
    assert all(v > 0 for v in g["loss"].values())
    assert g["loss_cluster"]["assignment_head"] > 0  # straight-through Gumbel samples as the weights


# ---- defaults, presets, hooks -----------------------------------------------------------------------
def test_defaults_and_presets():
    p = TCC.Params()
    assert (p.backbone, p.small_stem, p.image_size, p.batch_size, p.lr, p.weight_decay) == \
        ("resnet34", False, 224, 256, 3e-4, 0.0)
    assert (p.tau_instance, p.tau_cluster, p.tau_gumbel, p.gumbel_hard, p.entropy_weight, p.feature_dim) == \
        (0.5, 1.0, 1.0, False, 1.0, 128)
    fast = TCC.resolve_params(preset="fast")
    assert (fast.backbone, fast.small_stem, fast.image_size, fast.batch_size) == ("resnet18", True, 0, 256)
    assert TCC.resolve_params(preset="paper") == p
    spec = TCC(p).augmentation(None)
    assert (spec.brightness, spec.contrast, spec.saturation, spec.hue) == pytest.approx((0.4, 0.4, 0.4, 0.1))
    assert (spec.jitter_p, spec.grayscale_p, spec.blur_p) == (0.8, 0.2, 0.0)


def test_reported_results_hook():
    from clusterbench.methods.tcc import clusterbench_methods, clusterbench_reported_results

    assert clusterbench_methods() == [TCC]
    rows = clusterbench_reported_results()
    by_ds = {r["dataset"]: r for r in rows}
    assert by_ds["cifar10"]["metrics"] == {"acc": 0.906, "nmi": 0.790}
    for r in rows:
        assert r["method"] == "tcc" and r["protocol"] == "head" and "Never Cluster Alone" in r["citation"]
        assert r["metrics"] and all(0.0 < v <= 1.0 for v in r["metrics"].values())
