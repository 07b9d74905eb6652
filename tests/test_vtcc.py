"""VTCC: the conv-stem ViT (token grids, fused attention, fixed positions), CC's losses by hand."""

from __future__ import annotations

import math
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clusterbench import ConfigError
from clusterbench.train.deep import augment_policy
from clusterbench.methods.vtcc import (
    VTCC,
    ConvStem,
    auto_patch_size,
    sincos_pos_embed,
    stem_channels,
    stem_strides,
)

TINY = {"image_size": 0, "embed_dim": 32, "depth": 2, "num_heads": 2, "feature_dim": 8}


def tiny(**over) -> VTCC:
    return VTCC(VTCC.resolve_params({**TINY, **over}))


# ---- hand computations ----------------------------------------------------------------------------
def naive_nt_xent(a: torch.Tensor, b: torch.Tensor, t: float) -> float:
    """CC's InstanceLoss as plain loops: each of the 2n rows against the other 2n-1, partner positive."""
    z = torch.cat([a, b]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n2 = len(z)
    total = 0.0
    for i in range(n2):
        pos = (i + n2 // 2) % n2
        logits = [float(z[i] @ z[j]) / t for j in range(n2) if j != i]
        total += -float(z[i] @ z[pos]) / t + math.log(sum(math.exp(s) for s in logits))
    return total / n2


def naive_neg_entropy(p: torch.Tensor) -> float:
    """log K + sum_k q_k log q_k with q the mean assignment."""
    q = p.double().sum(0)
    q = q / q.sum()
    return math.log(p.shape[1]) + sum(float(v) * math.log(float(v)) for v in q if v > 0)


# ---- the convolutional stem -----------------------------------------------------------------------
@pytest.mark.parametrize("size,patch,strides,tokens", [
    (224, 16, [2, 2, 2, 2], 196),  # the official configuration (ImageNet-sized inputs)
    (96, 12, [2, 2, 3], 64),       # STL-10
    (64, 8, [2, 2, 2], 64),        # Tiny-ImageNet
    (32, 4, [2, 2], 64),           # CIFAR
    (16, 2, [2], 64),              # tests
])
def test_auto_patch_size_gives_the_documented_token_grid(size, patch, strides, tokens):
    assert auto_patch_size(size) == patch
    assert stem_strides(patch) == strides
    m = tiny(depth=1)
    net = m.build_model(3, size, 5)
    stem = net.encoder.patch_embed
    assert isinstance(stem, ConvStem) and stem.num_patches == tokens
    convs = [l for l in stem.proj if isinstance(l, nn.Conv2d)]
    assert [c.stride[0] for c in convs[:-1]] == strides and convs[-1].kernel_size == (1, 1)
    net.eval()
    x = torch.rand(2, 3, size, size)
    assert stem(x).shape == (2, tokens, 32)
    assert net.encoder.pos_embed.shape == (1, tokens + 1, 32)
    assert m.embed(net, x).shape == (2, 32)


def test_explicit_patch_size_overrides_the_rule():
    net = tiny(patch_size=8, depth=1).build_model(3, 96, 5)
    assert net.encoder.patch_embed.num_patches == 12 * 12
    assert net.encoder.patch_embed.strides == [2, 2, 2]


def test_patch_16_stem_is_the_official_one():
    """Four 3x3 stride-2 conv-BN-ReLU with D/8, D/4, D/2, D channels, then a 1x1 conv (official ConvStem)."""
    stem = ConvStem(224, 16, 3, 384)
    kinds = [type(l) for l in stem.proj]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] * 4 + [nn.Conv2d]
    convs = [l for l in stem.proj if isinstance(l, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [48, 96, 192, 384, 384]
    assert all(c.kernel_size == (3, 3) and c.bias is None for c in convs[:4])
    assert convs[4].bias is not None
    assert stem_channels(384, 2) == [192, 384]


def test_stem_tokens_are_local_and_row_major():
    torch.manual_seed(0)
    stem = ConvStem(32, 4, 3, 16).eval()
    x = torch.rand(1, 3, 32, 32)
    base = stem(x)
    corner = x.clone()
    corner[..., 0, 31] += 1.0  # top-right pixel: token (row 0, col 7) = index 7
    diff = (stem(corner) - base).abs().sum(-1)[0]
    assert diff[7] > 0 and diff[0] == 0 and diff[56] == 0 and diff[63] == 0


@pytest.mark.parametrize("bad", [{"patch_size": 5}, {"patch_size": 7}])
def test_bad_patch_sizes_are_config_errors(bad):
    with pytest.raises(ConfigError):
        tiny(**bad).build_model(3, 35, 3)


def test_size_not_a_multiple_of_the_patch_is_a_config_error():
    with pytest.raises(ConfigError):
        tiny(patch_size=4).build_model(3, 30, 3)


# ---- the transformer ------------------------------------------------------------------------------
def test_blocks_are_timms_with_fused_attention():
    from timm.layers import Attention
    from timm.models.vision_transformer import Block

    m = tiny()
    net = m.build_model(3, 16, 4)
    blocks = list(net.encoder.blocks)
    assert len(blocks) == 2 and all(isinstance(b, Block) and isinstance(b.attn, Attention) for b in blocks)
    assert all(b.attn.fused_attn for b in blocks)
    calls = []
    sdpa = F.scaled_dot_product_attention

    def counting(*a, **k):
        calls.append(a[0].shape)
        return sdpa(*a, **k)

    with mock.patch.object(F, "scaled_dot_product_attention", counting):
        net.encoder(torch.rand(3, 3, 16, 16))
    assert len(calls) == 2 and calls[0] == (3, 2, 65, 16)  # (B, heads, 1 + 64 tokens, head width)


def test_position_embedding_is_fixed_sincos_with_zero_cls():
    net = tiny().build_model(3, 32, 4)
    pe = net.encoder.pos_embed
    assert "pos_embed" in dict(net.encoder.named_buffers())
    assert all(p is not pe for p in net.parameters()) and not pe.requires_grad
    assert torch.equal(pe[0, 0], torch.zeros(32))
    grid = pe[0, 1:]
    assert grid.abs().max() <= 1.0 and len(torch.unique(grid, dim=0)) == 64
    assert torch.allclose(pe, sincos_pos_embed((8, 8), 32))
    # token (r, c) = index 8 r + c; its first D/4 features are sin(r * omega_k), omega_k = 10000^(-k / (D/4))
    omega = 1.0 / 10000 ** (torch.arange(8) / 8.0)
    assert torch.allclose(grid[0, :8], torch.zeros(8))
    assert torch.allclose(grid[8 * 3 + 5, :8], torch.sin(3 * omega), atol=1e-6)


def test_moco_v3_initialisation_of_qkv():
    """Q, K, V each Xavier-uniform as a D x D matrix: bound sqrt(6 / (D + D)), not sqrt(6 / (3D + D))."""
    net = tiny(embed_dim=64, num_heads=4).build_model(3, 16, 4)
    w = net.encoder.blocks[0].attn.qkv.weight
    bound = math.sqrt(6.0 / (64 + 64))
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert net.encoder.cls_token.abs().max() < 1e-4


# ---- the network, the loss, the prediction ------------------------------------------------------
def test_shapes_and_prediction_rule():
    m = tiny()
    net = m.build_model(3, 16, 7)
    x = torch.rand(6, 3, 16, 16)
    z, c = net(x)
    assert z.shape == (6, 8) and c.shape == (6, 7)
    assert torch.allclose(c.sum(1), torch.ones(6), atol=1e-5)
    net.eval()
    logits = m.cluster_logits(net, x)
    assert logits.shape == (6, 7)
    assert torch.equal(logits.argmax(1), net.cluster_projector(net.encoder(x)).argmax(1))
    assert m.embed(net, x).shape == (6, 32)
    # projectors: Linear-BN-ReLU-Linear-BN-ReLU-Linear with hidden width 4 D
    kinds = [type(l) for l in net.cluster_projector]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert net.instance_projector[0].out_features == 128 and net.instance_projector[-1].out_features == 8


def test_training_loss_is_ccs_objective_computed_by_hand():
    torch.manual_seed(1)
    m = tiny(tau_instance=0.5, tau_cluster=1.0)
    net = m.build_model(3, 16, 3)
    v1, v2 = torch.rand(5, 3, 16, 16), torch.rand(5, 3, 16, 16)
    terms = m.training_loss(net, v1, v2)
    assert set(terms) == {"loss", "loss_instance", "loss_cluster"}
    with torch.no_grad():
        z1, c1 = net(v1)
        z2, c2 = net(v2)
    l_ins = naive_nt_xent(z1, z2, 0.5)
    l_clu = naive_nt_xent(c1.t(), c2.t(), 1.0) + naive_neg_entropy(c1) + naive_neg_entropy(c2)
    assert terms["loss_instance"].item() == pytest.approx(l_ins, rel=1e-4)
    assert terms["loss_cluster"].item() == pytest.approx(l_clu, rel=1e-4)
    assert terms["loss"].item() == pytest.approx(l_ins + l_clu, rel=1e-4)


def test_cluster_loss_entropy_term_prevents_collapse():
    from clusterbench import cc_cluster_loss, nt_xent

    k = 4
    collapsed = torch.zeros(8, k)
    collapsed[:, 1] = 1.0
    uniform = torch.full((8, k), 1.0 / k)
    for c, expected in ((collapsed, 2 * math.log(k)), (uniform, 0.0)):
        entropy_part = cc_cluster_loss(c, c, 1.0) - nt_xent(c.t(), c.t(), 1.0)
        assert entropy_part.item() == pytest.approx(expected, abs=1e-5)
        assert naive_neg_entropy(c) * 2 == pytest.approx(expected, abs=1e-9)


def test_gradients_reach_the_stem_blocks_and_the_right_projector():
    torch.manual_seed(2)
    m = tiny()
    net = m.build_model(3, 16, 3)
    v1, v2 = torch.rand(6, 3, 16, 16), torch.rand(6, 3, 16, 16)

    def grads(term):
        net.zero_grad(set_to_none=True)
        m.training_loss(net, v1, v2)[term].backward()
        return net

    net = grads("loss_instance")
    assert all(p.grad is None for p in net.cluster_projector.parameters())
    assert net.instance_projector[0].weight.grad.abs().sum() > 0
    net = grads("loss_cluster")
    assert all(p.grad is None for p in net.instance_projector.parameters())
    net = grads("loss")
    stem_conv = net.encoder.patch_embed.proj[0]
    for p in (stem_conv.weight, net.encoder.blocks[0].attn.qkv.weight, net.encoder.blocks[-1].mlp.fc2.weight,
              net.encoder.cls_token, net.cluster_projector[-1].weight, net.instance_projector[-1].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert net.encoder.pos_embed.grad is None


# ---- defaults, presets, hooks ----------------------------------------------------------------------
def test_defaults_are_the_official_ones():
    p = VTCC.Params()
    assert (p.embed_dim, p.depth, p.num_heads, p.mlp_ratio, p.image_size) == (384, 8, 12, 4.0, 224)
    assert (p.batch_size, p.lr, p.weight_decay, p.tau_instance, p.tau_cluster, p.feature_dim) == \
        (128, 3e-4, 0.0, 0.5, 1.0, 128)
    m = VTCC(p)
    assert m.resolved_patch_size(224) == 16
    net = m.build_model(3, 224, 20)
    enc = net.encoder
    assert enc.patch_embed.num_patches == 196 and len(enc.blocks) == 8
    assert enc.blocks[0].attn.num_heads == 12 and enc.blocks[0].mlp.fc1.out_features == 1536
    assert enc.norm.eps == 1e-6 and enc.blocks[0].attn.qkv.bias is not None
    assert net.cluster_projector[0].out_features == 1536
    view1, view2 = augment_policy(m, None)  # one spec per view, as official transform.py:22-43
    for spec in (view1, view2):
        assert spec.crop_scale == (0.08, 1.0) and (spec.brightness, spec.contrast, spec.saturation, spec.hue) == \
            (0.4, 0.4, 0.2, 0.1)
        assert (spec.jitter_p, spec.grayscale_p, spec.blur_p) == (0.8, 0.2, 1.0)
        assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)
    assert (view1.solarize_p, view2.solarize_p) == (0.0, 0.2)  # only the second view is solarised (:39)


def test_fast_preset_is_a_small_vit_at_the_datasets_size():
    fast = VTCC.resolve_params(preset="fast")
    assert (fast.depth, fast.embed_dim, fast.num_heads, fast.image_size, fast.batch_size, fast.blur_p) == \
        (6, 384, 12, 0, 256, 0.0)
    m = VTCC(fast)
    net = m.build_model(3, 32, 10)
    assert net.encoder.patch_embed.num_patches == 64 and len(net.encoder.blocks) == 6
    assert VTCC.resolve_params(preset="paper") == VTCC.Params()


def test_reported_results_hook_quotes_nothing_and_says_why():
    from clusterbench.methods.vtcc import CITATION, REPORTED, clusterbench_methods, clusterbench_reported_results

    assert clusterbench_methods() == [VTCC]
    # the paper's tables were not retrievable: nothing is quoted, and the citation says so
    assert REPORTED == {} and clusterbench_reported_results() == []
    assert "2206.12925" in CITATION and "not retrieved" in CITATION


def test_the_input_normalisation_is_the_class_attribute_and_a_policy_may_not_contradict_it():
    from clusterbench import AugmentSpec, PluginError

    m = tiny()
    assert (VTCC.input_mean, VTCC.input_std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert all(v.mean is None for v in m.augmentation(None))  # the policy leaves it to the class

    class Contradicting(VTCC):
        def augmentation(self, data):
            return AugmentSpec(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

    with pytest.raises(PluginError, match="input_mean/input_std"):
        augment_policy(Contradicting(m.params), None)


def test_fast_preset_is_the_small_data_vit_recipe():
    from clusterbench.methods.vtcc import VTCC

    fast = VTCC.resolve_params(preset="fast")
    assert (fast.depth, fast.image_size, fast.batch_size, fast.blur_p) == (6, 0, 256, 0.0)
    assert (fast.adamw, fast.weight_decay, fast.warmup, fast.lr) == (True, 0.05, 0.1, 5e-4)
    m = VTCC(VTCC.resolve_params({"embed_dim": 32, "num_heads": 2, "depth": 1}, preset="fast"))
    net = m.build_model(3, 16, 4)
    opt = m.configure_optimizer(net)
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(w.ndim > 1 for w in decay["params"]) and all(w.ndim <= 1 or w.shape[1] == 1 for w in no_decay["params"])
    names = {id(w): n for n, w in net.named_parameters()}
    assert any(names[id(w)].endswith("cls_token") for w in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(net.parameters()))
    # linear warm-up over the first 10%, then cosine to 0
    assert [round(m.lr_factor(p), 6) for p in (0.0, 0.05, 0.1, 0.55, 1.0)] == [0.0, 0.5, 1.0, 0.5, 0.0]
    paper = VTCC(VTCC.resolve_params(preset="paper"))
    assert type(paper.configure_optimizer(net)) is torch.optim.Adam and paper.lr_factor(0.3) == 1.0
