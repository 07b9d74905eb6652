"""CueCo: its loss terms against hand computations, the momentum encoder, the queue, shapes."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clusterbench import FeatureQueue, cosine_momentum, ema_update, info_nce, momentum_copy
from clusterbench.methods.cueco import (
    CueCo,
    lloyd_refine,
    sinkhorn_knopp,
    swapped_cluster_loss,
    warmup_cosine,
)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


# ---- clusterbench.train.momentum -------------------------------------------------------------------
def test_momentum_copy_is_frozen_and_equal():
    src = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    tgt = momentum_copy(src)
    assert all(not p.requires_grad for p in tgt.parameters())
    assert all(p.requires_grad for p in src.parameters())
    for a, b in zip(tgt.parameters(), src.parameters()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()


@pytest.mark.parametrize("m", [0.0, 0.9, 0.996, 1.0])
def test_ema_update_matches_formula(m):
    torch.manual_seed(0)
    src = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    tgt = momentum_copy(src)
    for p in tgt.parameters():
        p.add_(torch.randn_like(p))
    tgt[1].running_mean.fill_(5.0)
    before = [p.clone() for p in tgt.parameters()]
    ema_update(tgt, src, m)
    for old, new, s in zip(before, tgt.parameters(), src.parameters()):
        assert torch.allclose(new, m * old + (1 - m) * s, atol=1e-6)
    assert torch.all(tgt[1].running_mean == 5.0)  # buffers kept by default
    ema_update(tgt, src, m, buffers="copy")
    assert torch.equal(tgt[1].running_mean, src[1].running_mean)


def test_ema_update_rejects_mismatched_modules():
    with pytest.raises(ValueError):
        ema_update(nn.Linear(3, 4), nn.Linear(3, 5), 0.9)
    with pytest.raises(ValueError):
        ema_update(nn.Linear(3, 4), nn.Linear(3, 4), 1.5)


def test_cosine_momentum_schedule():
    assert cosine_momentum(0.0, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(1.0, 0.99) == pytest.approx(1.0)
    assert cosine_momentum(0.5, 0.99) == pytest.approx(0.995)
    assert cosine_momentum(0.25, 0.9, 0.99) == pytest.approx(0.99 - 0.09 * (math.cos(math.pi / 4) + 1) / 2)


# ---- the loss terms ---------------------------------------------------------------------------
def naive_infonce(q, k, queue, t):
    q, k = _unit(q.double()), _unit(k.double())
    total = 0.0
    for i in range(len(q)):
        negs = [_unit(queue.double())[j] for j in range(len(queue))] if queue is not None else \
               [k[j] for j in range(len(k)) if j != i]
        logits = [float(q[i] @ k[i]) / t] + [float(q[i] @ n) / t for n in negs]
        total += -logits[0] + math.log(sum(math.exp(s) for s in logits))
    return total / len(q)


@pytest.mark.parametrize("use_queue", [True, False])
def test_infonce_matches_hand_computation(use_queue):
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    queue = torch.randn(7, 4, generator=g) if use_queue else None
    assert info_nce(q, k, queue, 0.2).item() == pytest.approx(naive_infonce(q, k, queue, 0.2), rel=1e-5)


def naive_sinkhorn(scores, eps, iters):
    b, k = scores.shape
    q = [[math.exp(float(scores[i, j]) / eps) for i in range(b)] for j in range(k)]  # K x B
    tot = sum(map(sum, q))
    q = [[v / tot for v in row] for row in q]
    for _ in range(iters):
        q = [[v / sum(row) / k for v in row] for row in q]
        cols = [sum(q[j][i] for j in range(k)) for i in range(b)]
        q = [[q[j][i] / cols[i] / b for i in range(b)] for j in range(k)]
    return torch.tensor([[q[j][i] * b for j in range(k)] for i in range(b)], dtype=torch.float64)


def test_sinkhorn_matches_hand_computation_and_is_balanced():
    g = torch.Generator().manual_seed(2)
    scores = _unit(torch.randn(6, 4, generator=g)) @ _unit(torch.randn(3, 4, generator=g)).t()
    t = sinkhorn_knopp(scores, 0.05, 3)
    assert torch.allclose(t.double(), naive_sinkhorn(scores, 0.05, 3), atol=1e-5)
    assert torch.allclose(t.sum(1), torch.ones(6), atol=1e-5)


def test_sinkhorn_spreads_a_collapsed_assignment():
    # every sample prefers cluster 0: the targets still use each of the K clusters for B/K samples
    b, k = 12, 3
    scores = torch.zeros(b, k)
    scores[:, 0] = 0.9
    scores += 0.01 * torch.arange(b * k, dtype=torch.float32).reshape(b, k).sin()
    t = sinkhorn_knopp(scores, 0.05, 10)
    assert torch.allclose(t.sum(0), torch.full((k,), b / k), atol=0.05)
    naive_argmax = torch.bincount(scores.argmax(1), minlength=k)
    assert naive_argmax[0] == b  # what a plain argmax would have done


def test_swapped_cluster_loss_matches_formula_and_penalises_collapse():
    g = torch.Generator().manual_seed(3)
    s1, s2 = torch.rand(5, 3, generator=g) * 2 - 1, torch.rand(5, 3, generator=g) * 2 - 1
    t1, t2 = torch.rand(5, 3, generator=g).softmax(1), torch.rand(5, 3, generator=g).softmax(1)
    tau = 0.1
    expected = 0.0
    for s, t in ((s1, t2), (s2, t1)):
        for i in range(5):
            z = sum(math.exp(float(s[i, j]) / tau) for j in range(3))
            expected += -sum(float(t[i, j]) * (float(s[i, j]) / tau - math.log(z)) for j in range(3)) / 5
    assert swapped_cluster_loss(s1, s2, t1, t2, tau).item() == pytest.approx(expected / 2, rel=1e-5)
    # balanced targets, queries collapsed onto one centroid: large loss; queries matching them: ~0
    onehot = torch.eye(3).repeat(2, 1)
    collapsed = torch.zeros(6, 3)
    collapsed[:, 0] = 1.0
    assert swapped_cluster_loss(collapsed, collapsed, onehot, onehot, tau).item() > 5.0
    assert swapped_cluster_loss(onehot, onehot, onehot, onehot, tau).item() < 1e-3


def test_hard_assignment_is_one_hot_argmax_of_sinkhorn():
    from clusterbench.methods.cueco import balanced_assignment

    g = torch.Generator().manual_seed(5)
    scores = torch.rand(8, 4, generator=g) * 2 - 1
    soft = sinkhorn_knopp(scores, 0.05, 3)
    hard = balanced_assignment(scores, 0.05, 3, hard=True)
    assert torch.equal(hard, torch.eye(4)[soft.argmax(1)])
    assert torch.allclose(balanced_assignment(scores, 0.05, 3, hard=False), soft)


def test_cluster_imbalance_diagnostic():
    from clusterbench.methods.cueco import cueco_loss

    k = 4
    g = torch.Generator().manual_seed(4)
    z, kk = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    uniform = torch.eye(k).repeat(2, 1)
    collapsed = torch.zeros(8, k)
    collapsed[:, 1] = 1.0
    kw = dict(temperature=0.2, cluster_temperature=0.01, epsilon=0.05, sinkhorn_iters=3, cluster_weight=1.0)
    bal = cueco_loss(z, z, kk, kk, uniform, uniform, uniform, uniform, None, None, **kw)["cluster_imbalance"]
    col = cueco_loss(z, z, kk, kk, collapsed, collapsed, uniform, uniform, None, None, **kw)["cluster_imbalance"]
    assert bal.item() == pytest.approx(0.0, abs=1e-4)
    assert col.item() == pytest.approx(math.log(k), rel=1e-3)


def test_warmup_cosine():
    assert warmup_cosine(0.0, 0.1) == 0.0
    assert warmup_cosine(0.05, 0.1) == pytest.approx(0.5)
    assert warmup_cosine(0.1, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(0.55, 0.1) == pytest.approx(0.5)
    assert warmup_cosine(1.0, 0.1) == pytest.approx(0.0, abs=1e-12)


# ---- the model ------------------------------------------------------------------------------
_BASE: dict[str, nn.Module] = {}


def _tiny(**over):
    """A small CueCo (ResNet-18, ImageNet stem: cheapest on a CPU, 8x8 inputs, K = 5) and a fresh copy of its network.

    The ResNet is built once per test module and deep-copied (its initialisation dominates
    the CPU time); the queue is rebuilt at the requested size.
    """
    p = {"backbone": "resnet18", "small_stem": False, "image_size": 0, "hidden_dim": 32, "proj_dim": 16,
         "queue_size": 24}
    p.update(over)
    m = CueCo(CueCo.resolve_params(p))
    if "net" not in _BASE:
        torch.manual_seed(0)
        _BASE["net"] = m.build_model(3, 8, 5)
    net = copy.deepcopy(_BASE["net"])
    net.queues = nn.ModuleList([FeatureQueue(m.params.queue_size, m.params.proj_dim) for _ in range(2)])
    return m, net


def test_shapes_terms_and_gradients():
    m, net = _tiny()
    x1, x2 = torch.rand(6, 3, 8, 8), torch.rand(6, 3, 8, 8)
    assert m.cluster_logits(net, x1).shape == (6, 5)
    assert m.embed(net, x1).shape == (6, 512)
    terms = m.training_loss(net, x1, x2)
    assert set(terms) == {"loss", "loss_contrast", "loss_cluster", "cluster_imbalance", "keys1", "keys2"}
    assert terms["keys1"].shape == terms["keys2"].shape == (6, 16) and not terms["keys1"].requires_grad
    assert torch.isclose(terms["loss"], terms["loss_contrast"] + terms["loss_cluster"])
    terms["loss"].backward()
    assert net.query.backbone.net.conv1.weight.grad.abs().sum() > 0
    assert net.query.projector[2].weight.grad.abs().sum() > 0
    assert net.centroids.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in net.key.parameters())
    assert not any(q.features.requires_grad for q in net.queues)
    opt = m.configure_optimizer(net)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in in_opt for p in net.key.parameters())
    assert id(net.centroids) in in_opt and isinstance(opt, torch.optim.SGD)


def test_after_step_updates_key_network_and_enqueues_the_steps_keys():
    m, net = _tiny(momentum_base=0.9, momentum_final=1.0)
    x1, x2 = torch.rand(10, 3, 8, 8), torch.rand(10, 3, 8, 8)
    opt = m.configure_optimizer(net)
    terms = m.training_loss(net, x1, x2)
    opt.zero_grad()
    terms["loss"].backward()
    opt.step()
    outputs = {k: v.detach() for k, v in terms.items()}  # what the engine's step hands after_step
    key_before = [p.clone() for p in net.key.parameters()]
    m.after_step(net, 0.0, outputs)  # momentum 0.9 at progress 0
    for old, new, q in zip(key_before, net.key.parameters(), net.query.parameters()):
        assert torch.allclose(new, 0.9 * old + 0.1 * q, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(key_before, net.key.parameters()))
    assert int(net.queues[0].ptr) == int(net.queues[1].ptr) == 10
    assert torch.allclose(net.queues[0].features[:10], _unit(outputs["keys1"]), atol=1e-5)
    assert torch.allclose(net.queues[1].features[:10], _unit(outputs["keys2"]), atol=1e-5)
    assert not hasattr(m, "_pending_keys")  # no state carried between the hooks


def test_queue_is_fifo_and_wraps_around():
    _, net = _tiny(queue_size=8)
    batches = [torch.randn(3, 16) for _ in range(4)]
    for b in batches:
        net.enqueue(b, -b)
    # 12 keys into 8 slots: keys 0..7 fill the queue, keys 8..11 overwrite slots 0..3
    newest = torch.cat(batches)[-8:]  # keys 4..11: keys 4..7 sit in slots 4..7, keys 8..11 in slots 0..3
    expected = torch.cat([newest[4:], newest[:4]])
    assert int(net.queues[0].ptr) == 12 % 8
    assert torch.allclose(net.queues[0].features, _unit(expected), atol=1e-6)
    assert torch.allclose(net.queues[1].features, -_unit(expected), atol=1e-6)


def test_in_batch_negatives_when_queue_is_empty():
    m, net = _tiny(queue_size=0, momentum_base=0.5)
    v1, v2 = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    terms = m.training_loss(net, v1, v2)
    with torch.no_grad():
        z1, z2, k1, k2 = net.query(v1), net.query(v2), net.key(v1), net.key(v2)
    expected = (info_nce(z1, k2, None, m.params.temperature) + info_nce(z2, k1, None, m.params.temperature)) / 2
    assert terms["loss_contrast"].item() == pytest.approx(expected.item(), rel=1e-5)
    key_before = [p.clone() for p in net.key.parameters()]
    with torch.no_grad():
        for q in net.query.parameters():
            q.add_(1.0)
    m.after_step(net, 0.0, {k: v.detach() for k, v in terms.items()})  # nothing to enqueue
    assert all(q.features.shape == (0, 16) and int(q.ptr) == 0 for q in net.queues)
    assert all(torch.allclose(new, 0.5 * old + 0.5 * q) for old, new, q in
               zip(key_before, net.key.parameters(), net.query.parameters()))


def test_defaults_and_presets():
    p = CueCo.Params()
    assert (p.backbone, p.small_stem, p.image_size, p.batch_size) == ("resnet18", True, 0, 256)
    assert (p.lr, p.weight_decay, p.temperature, p.queue_size) == (0.3, 1e-4, 0.2, 32768)
    assert (p.momentum_base, p.momentum_final) == (0.99, 0.999)  # solo-learn MoCo v2+ CIFAR
    assert p.hard_assignment and p.warmup == 0.01 and p.head_refine_iters == 50
    fast = CueCo.resolve_params(preset="fast")
    assert (fast.backbone, fast.small_stem, fast.image_size, fast.batch_size) == ("resnet18", True, 0, 256)
    assert fast.warmup == 0.1
    in100 = CueCo.resolve_params(preset="imagenet100")  # solo-learn MoCo v2+ ImageNet-100
    assert (in100.small_stem, in100.image_size, in100.queue_size, in100.momentum_final) == (False, 224, 65536, 1.0)
    assert CueCo.resolve_params(preset="paper") == p
    assert CueCo.protocols[:1] == ("head",) and set(CueCo.protocols) == {"head", "kmeans", "linear"}


def test_reported_results_hook():
    from clusterbench.methods.cueco import clusterbench_reported_results

    rows = {r["dataset"]: r for r in clusterbench_reported_results()}
    assert set(rows) == {"cifar10", "cifar100", "imagenet100"}
    assert all("2507.12359" in r["citation"] and r["method"] == "cueco" for r in rows.values())
    assert rows["cifar10"]["protocol"] == "linear"
    assert rows["cifar10"]["metrics"] == {"accuracy": pytest.approx(0.914)}
    assert rows["cifar100"]["metrics"]["accuracy"] == pytest.approx(0.6856)
    assert rows["imagenet100"]["metrics"]["accuracy"] == pytest.approx(0.7865)


# ---- the head after training -------------------------------------------------------------------
def naive_lloyd(x, labels, k, iters):
    """Lloyd's algorithm written out: means of the members, then nearest mean (no empty clusters here)."""
    lab = list(labels)
    for _ in range(iters + 1):
        centres = []
        for c in range(k):
            members = [x[i] for i in range(len(x)) if lab[i] == c]
            centres.append(torch.stack(members).double().mean(0))
        new = [min(range(k), key=lambda c: float(((x[i].double() - centres[c]) ** 2).sum())) for i in range(len(x))]
        if new == lab:
            break
        lab = new
    return torch.stack(centres)


def test_lloyd_refine_matches_hand_computation_and_fixes_a_bad_start():
    g = torch.Generator().manual_seed(0)
    blobs = torch.cat([torch.randn(10, 2, generator=g) * 0.2 + torch.tensor(c) for c in ([0.0, 0.0], [4.0, 0.0], [0.0, 4.0])])
    truth = torch.arange(3).repeat_interleave(10)
    start = truth.clone()
    start[[0, 1, 10, 11, 20]] = torch.tensor([1, 2, 0, 2, 1])  # five of thirty in the wrong cluster
    centres = lloyd_refine(blobs, start, 3, 10)
    assert torch.allclose(centres.double(), naive_lloyd(blobs, start.tolist(), 3, 10), atol=1e-5)
    assert torch.equal(torch.cdist(blobs, centres).argmin(1), truth)
    # zero steps: the means of the starting partition
    assert torch.allclose(lloyd_refine(blobs, start, 3, 0)[0], blobs[start == 0].mean(0), atol=1e-6)


def test_lloyd_refine_refills_an_empty_cluster():
    x = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    centres = lloyd_refine(x, torch.zeros(4, dtype=torch.long), 2, 5)  # everything starts in cluster 0
    assert torch.isfinite(centres).all()
    assert set(torch.cdist(x, centres).argmin(1).tolist()) == {0, 1}


def test_refined_head_is_nearest_refined_centre_and_unrefined_head_the_centroids():
    m, net = _tiny()
    x = torch.rand(5, 3, 8, 8)
    net.eval()
    with torch.no_grad():
        learned = net.centroid_scores(net.query(x))
        assert torch.equal(m.cluster_logits(net, x), learned)  # before refine_head
        net.head_centres.copy_(torch.randn_like(net.head_centres))
        net.head_refined.fill_(True)
        feats = m.embed(net, x)
        got = m.cluster_logits(net, x)
    assert torch.equal(got.argmax(1), torch.cdist(feats, net.head_centres).argmin(1))
    assert torch.allclose(got, -torch.cdist(feats, net.head_centres).pow(2), atol=1e-4)
