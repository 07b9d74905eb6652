"""TCC's pieces against values computed by hand, its gradients, shapes and an end-to-end fit."""

from __future__ import annotations

import math

import pytest
import torch

from clusterbench import FeatureQueue, gumbel_softmax, simplex_centres
from clusterbench.methods.tcc import (
    TCC,
    cluster_contrastive_loss,
    cluster_queue_contrast,
    cluster_representations,
    dec_sharpening_loss,
    instance_elbo_loss,
    marginal_kl_to_uniform,
    perturbed_queue,
    tcc_loss,
    verdandi_loss,
    verdandi_terms,
    weighted_cluster_means,
)

gumbel_softmax_sample = gumbel_softmax


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


def verdandi_inputs(seed: int) -> tuple:
    """Tiny inputs of ``verdandi_terms`` (K = 3, d = 4, batch 6, queue 8): features f, g, their
    cosines s, t to simplex centres, the instance queue qn, the cluster queue qk, three noises."""
    f, g = _unit(_rand(seed, 6, 4)), _unit(_rand(seed + 1, 6, 4))
    c = simplex_centres(3, 4)
    qn, qk = _unit(_rand(seed + 2, 8, 4)), _unit(_rand(seed + 3, 6, 4))
    noises = (_rand(seed + 4, 6, 3), _rand(seed + 5, 6, 3), _rand(seed + 6, 6, 4))
    return f, f @ c.t(), g, g @ c.t(), qn, qk, noises


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
    return TCC(TCC.resolve_params({"backbone": "resnet18", "small_stem": True, "image_size": 0, **over},
                                  preset="abstract-fast"))


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
    p = TCC.Params()  # = paper = verdandi: the first author's code (util/config.py, train_moco.py, model/moco.py)
    assert p.formulation == "verdandi"
    assert (p.backbone, p.small_stem, p.image_size, p.batch_size, p.lr, p.weight_decay) == \
        ("resnet34", True, 0, 384, 1e-3, 0.0)
    assert (p.tau_instance, p.tau_cluster, p.tau_gumbel, p.gumbel_noise_steps, p.feature_dim) == \
        (1.0, 1.0, 0.3, 100000, 128)
    assert (p.momentum, p.instance_queue, p.cluster_queue_per_k, p.queue_noise_std, p.dec_weight) == \
        (0.999, 16384, 20, 0.1, 0.1)
    assert (p.lr_decay_epochs, p.lr_decay, p.symmetric, p.entropy_weight) == ("120,160", 0.95, False, 0.0)
    assert TCC.resolve_params(preset="paper") == p == TCC.resolve_params(preset="verdandi")
    for f in TCC.param_fields():  # every verdandi default cites the code, file:line
        if f.name not in ("gumbel_hard", "aggregate_samples", "jitter_strength", "blur"):
            assert f.metadata["source"], f.name
    fast = TCC.resolve_params(preset="fast")
    assert (fast.formulation, fast.backbone, fast.small_stem, fast.image_size, fast.batch_size) == \
        ("verdandi", "resnet18", True, 0, 384)
    assert (fast.symmetric, fast.momentum, fast.tau_instance, fast.entropy_weight) == (True, 0.99, 0.2, 1.0)
    old = TCC.resolve_params(preset="abstract")
    assert (old.formulation, old.backbone, old.image_size, old.batch_size, old.lr, old.tau_instance) == \
        ("abstract", "resnet34", 224, 256, 3e-4, 0.5)
    spec = TCC(p).augmentation(None)  # util/moco_aug.py: crop area 0.2-1, jitter 0.4 x4 always, grey 0.2
    assert spec.crop_scale == (0.2, 1.0)
    assert (spec.brightness, spec.contrast, spec.saturation, spec.hue) == pytest.approx((0.4, 0.4, 0.4, 0.4))
    assert (spec.jitter_p, spec.grayscale_p, spec.blur_p) == (1.0, 0.2, 0.0)
    spec = TCC(old).augmentation(None)
    assert (spec.brightness, spec.contrast, spec.saturation, spec.hue) == pytest.approx((0.4, 0.4, 0.4, 0.1))
    assert (spec.jitter_p, spec.grayscale_p, spec.blur_p) == (0.8, 0.2, 0.0)


def test_the_provenance_line_names_what_it_rests_on():
    assert TCC.provenance == "reconstruction"
    assert "OperationVerdandi@f70a1cc" in TCC.provenance_note and "abstract" in TCC.provenance_note


def test_reported_results_hook():
    from clusterbench.methods.tcc import clusterbench_methods, clusterbench_reported_results

    assert clusterbench_methods() == [TCC]
    rows = clusterbench_reported_results()
    by_ds = {r["dataset"]: r for r in rows}
    assert by_ds["cifar10"]["metrics"] == {"acc": 0.906, "nmi": 0.790}
    for r in rows:
        assert r["method"] == "tcc" and r["protocol"] == "head" and "Never Cluster Alone" in r["citation"]
        assert r["metrics"] and all(0.0 < v <= 1.0 for v in r["metrics"].values())


# ---- formulation "verdandi": each term against loops ------------------------------------------------
def test_simplex_centres_are_unit_with_equal_negative_cosines():
    c = simplex_centres(5, 8).double()
    gram = c @ c.t()
    assert torch.allclose(gram.diagonal(), torch.ones(5, dtype=torch.float64), atol=1e-6)
    off = gram[~torch.eye(5, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, -1 / 4), atol=1e-6)
    assert torch.allclose(simplex_centres(4, 3).double().sum(0), torch.zeros(3, dtype=torch.float64), atol=1e-6)
    with pytest.raises(ValueError):
        simplex_centres(6, 3)


def test_gumbel_noise_scale_zero_is_the_tempered_softmax():
    logits, g = _rand(30, 4, 3), _rand(31, 4, 3)
    assert torch.allclose(gumbel_softmax(logits, 0.3, g, noise_scale=torch.tensor(0.0)), (logits / 0.3).softmax(1))
    assert torch.allclose(gumbel_softmax(logits, 0.3, g, noise_scale=torch.tensor(1.0)),
                          ((logits + g) / 0.3).softmax(1))


def test_weighted_cluster_means_match_loops():
    a = _rand(32, 6, 3).softmax(1)
    f = _unit(_rand(33, 6, 4))
    got = weighted_cluster_means(a, f)
    for k in range(3):
        v = sum(float(a[i, k]) * f[i].double() for i in range(6)) / (sum(float(a[i, k]) for i in range(6)) + 1e-8)
        assert torch.allclose(got[k].double(), v / v.norm(), atol=1e-6)


def test_perturbed_queue_is_twice_the_queue_plus_noise_normalised():
    q, n = _unit(_rand(34, 6, 4)), _rand(35, 6, 4)
    got = perturbed_queue(q, 0.1, n)
    want = 2 * q + 0.1 * n
    assert torch.allclose(got, want / want.norm(dim=1, keepdim=True), atol=1e-6)


def naive_cluster_queue_contrast(query, key, queue, t):
    """Row k: positive key[k]; candidates the other query rows, every key row and the queue rows of other clusters."""
    k = len(query)
    query, key, queue = (_unit(x.double()) for x in (query, key, queue))
    total = 0.0
    for i in range(k):
        cands = [float(query[i] @ query[j]) / t for j in range(k) if j != i]
        cands += [float(query[i] @ key[j]) / t for j in range(k)]
        cands += [float(query[i] @ queue[j]) / t for j in range(len(queue)) if j % k != i]
        total += -float(query[i] @ key[i]) / t + math.log(sum(math.exp(c) for c in cands))
    return total / k


def test_cluster_queue_contrast_matches_loops_and_needs_a_multiple_of_k():
    query, key, queue = _rand(36, 3, 5), _rand(37, 3, 5), _rand(38, 6, 5)
    for t in (1.0, 0.5):
        assert cluster_queue_contrast(query, key, queue, t).item() == pytest.approx(
            naive_cluster_queue_contrast(query, key, queue, t), rel=1e-5)
    with pytest.raises(ValueError):
        cluster_queue_contrast(query, key, queue[:5], 1.0)


def test_dec_sharpening_loss_matches_loops():
    q = _rand(39, 5, 3).softmax(1)
    n, k = q.shape
    freq = [sum(float(q[i, c]) for i in range(n)) for c in range(k)]
    total = 0.0
    for i in range(n):
        w = [float(q[i, c]) ** 2 / freq[c] for c in range(k)]
        p = [x / sum(w) for x in w]
        total += sum(p[c] * math.log(p[c] / float(q[i, c])) for c in range(k))
    assert dec_sharpening_loss(q).item() == pytest.approx(total / n, rel=1e-4)
    assert dec_sharpening_loss(torch.full((4, 3), 1 / 3)).item() == pytest.approx(0.0, abs=1e-6)


def test_verdandi_terms_and_total_against_the_pieces():
    from clusterbench import info_nce, neg_entropy_of_mean

    f, s, g, t, qn, qk, (n1, n2, n3) = verdandi_inputs(40)
    d = verdandi_terms(f, s, g, t, qn, qk, tau_instance=0.2, tau_cluster=1.0, tau_gumbel=0.3, noise_scale=1.0,
                       queue_noise_std=0.1, noises=(n1, n2, n3))
    query = weighted_cluster_means(((s + n1) / 0.3).softmax(1), f)
    key = weighted_cluster_means(((t + n2) / 0.3).softmax(1), g)
    assert d["loss_instance"].item() == pytest.approx(info_nce(f, g, qn, 0.2).item(), rel=1e-6)
    assert d["loss_cluster"].item() == pytest.approx(
        naive_cluster_queue_contrast(query, key, perturbed_queue(qk, 0.1, n3), 1.0), rel=1e-5)
    assert d["loss_dec"].item() == pytest.approx(dec_sharpening_loss(s.softmax(1)).item(), rel=1e-6)
    assert d["loss_balance"].item() == pytest.approx(neg_entropy_of_mean((s / 0.3).softmax(1)).item(), abs=1e-6)
    assert torch.allclose(d["cluster_keys"], key) and torch.equal(d["instance_keys"], g)
    total = verdandi_loss([d, d], dec_weight=0.1, entropy_weight=0.5)["loss"]
    assert total.item() == pytest.approx((d["loss_instance"] + d["loss_cluster"] + 0.1 * d["loss_dec"]
                                          + 0.5 * d["loss_balance"]).item(), rel=1e-6)


def test_cluster_queue_keeps_each_entry_on_its_cluster():
    q = FeatureQueue(6, 2)  # 3 past batches of K = 2 cluster representations
    for step in range(5):
        q.push(torch.tensor([[1.0, step], [-1.0, step]]))
        assert int(q.ptr) == (2 * (step + 1)) % 6
    assert (q.features[0::2, 0] > 0).all() and (q.features[1::2, 0] < 0).all()  # entry j holds cluster j mod 2


def _verdandi(**over):
    p = {"backbone": "resnet18", "feature_dim": 8, "instance_queue": 16, "cluster_queue_per_k": 2, **over}
    return TCC(TCC.resolve_params(p))


def test_verdandi_step_trains_online_only_and_after_step_updates_twin_queues_and_noise():
    torch.manual_seed(0)
    m = _verdandi(momentum=0.5, gumbel_noise_steps=1, symmetric=True, queue_noise_std=0.0)
    net = m.build_model(3, 8, 3)
    assert not any(p.requires_grad for p in net.momentum.parameters()) and net.online.centres.requires_grad
    x1, x2 = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    with torch.no_grad():  # step 0 < gumbel_noise_steps: the Gumbel noise makes two evaluations differ
        noisy = [m.training_loss(net, x1, x2)["loss_cluster"].item() for _ in range(2)]
    assert noisy[0] != pytest.approx(noisy[1], rel=1e-6)
    terms = m.training_loss(net, x1, x2)
    terms["loss"].backward()
    assert net.online.centres.grad.abs().sum() > 0 and net.online.fc.weight.grad.abs().sum() > 0
    assert terms["instance_keys"].shape == (8, 8) and terms["cluster_keys"].shape == (6, 8)
    before = [p.clone() for p in net.momentum.parameters()]
    m.after_step(net, 0.0, {k: v.detach() for k, v in terms.items()})
    for old, new, src in zip(before, net.momentum.parameters(), net.online.parameters()):
        assert torch.allclose(new, 0.5 * old + 0.5 * src, atol=1e-6)
    assert int(net.steps) == 1 and int(net.instance_queue.ptr) == 8 and int(net.cluster_queue.ptr) == 0
    assert torch.allclose(net.cluster_queue.features, _unit(terms["cluster_keys"].detach()), atol=1e-6)
    # from step gumbel_noise_steps on the noise is off: two evaluations agree
    with torch.no_grad():
        quiet = [m.training_loss(net, x1, x2)["loss_cluster"].item() for _ in range(2)]
    assert quiet[0] == pytest.approx(quiet[1], rel=1e-6)
    # prediction: cosines to the centres of the online encoder, no noise
    net.eval()
    with torch.no_grad():
        f, s = net.online(x1)
        assert torch.equal(m.cluster_logits(net, x1), s) and m.embed(net, x1).shape == (4, 512)


def test_lr_schedule_is_piecewise_constant_in_epochs():
    m = _verdandi(lr_decay_epochs="2,3", lr_decay=0.5)
    m._steps_per_epoch = 10
    for steps, factor in ((0, 1.0), (20, 1.0), (21, 0.5), (30, 0.5), (31, 0.25), (1000, 0.25)):
        m._steps_done = steps
        assert m.lr_factor(0.0) == factor
    assert _verdandi(lr_decay_epochs="").lr_factor(0.9) == 1.0


def test_an_unknown_formulation_is_a_config_error():
    from clusterbench import ConfigError

    with pytest.raises(ConfigError, match="formulation"):
        _verdandi(formulation="other")


def test_fixed_centres_stay_the_simplex_in_both_encoders():
    """``train_centres=false`` (the TF code as it runs): no gradient reaches C, the twin's C is the same."""
    torch.manual_seed(0)
    m = _verdandi(momentum=0.5, train_centres=False)
    net = m.build_model(3, 8, 3)
    start = net.online.centres.detach().clone()
    assert torch.allclose(start, simplex_centres(3, 8)) and not net.online.centres.requires_grad
    opt = torch.optim.Adam([p for p in net.online.parameters() if p.requires_grad], lr=0.1)
    x1, x2 = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    fc_before = net.online.fc.weight.detach().clone()
    terms = m.training_loss(net, x1, x2)
    terms["loss"].backward()
    opt.step()
    m.after_step(net, 0.0, {k: v.detach() for k, v in terms.items()})
    assert net.online.centres.grad is None and not torch.equal(net.online.fc.weight, fc_before)
    assert torch.equal(net.online.centres, start) and torch.equal(net.momentum.centres, start)
