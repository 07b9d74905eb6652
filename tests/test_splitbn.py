"""Shuffle-BN pieces (``clusterbench.train.splitbn``) against loops on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from clusterbench import ConfigError, ResNetBackbone, shuffled_forward, split_batchnorm
from clusterbench.train.distributed import Distributed
from clusterbench.train.splitbn import SplitBatchNorm2d


def _rand(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_each_group_is_normalised_by_its_own_statistics_and_the_running_ones_average_them():
    x = _rand(0, 6, 2, 2, 2) * 3 + 1
    bn = SplitBatchNorm2d(2, splits=3, eps=1e-5, momentum=0.1)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([2.0, -0.5]))
        bn.bias.copy_(torch.tensor([0.3, 1.0]))
    y = bn(x).detach()
    means, uvars = [[0.0, 0.0] for _ in range(3)], [[0.0, 0.0] for _ in range(3)]
    for g in range(3):  # group g: rows 2g and 2g + 1 (contiguous blocks)
        for c in range(2):
            vals = [float(v) for v in x[2 * g:2 * g + 2, c].flatten()]
            mean = sum(vals) / len(vals)
            var = sum((v - mean) ** 2 for v in vals) / len(vals)
            means[g][c], uvars[g][c] = mean, var * len(vals) / (len(vals) - 1)
            w, b = float(bn.weight[c].detach()), float(bn.bias[c].detach())
            for i in (2 * g, 2 * g + 1):
                for h in range(2):
                    for k in range(2):
                        want = (float(x[i, c, h, k]) - mean) / math.sqrt(var + 1e-5) * w + b
                        assert float(y[i, c, h, k]) == pytest.approx(want, rel=1e-5, abs=1e-5)
    for c in range(2):
        assert float(bn.running_mean[c]) == pytest.approx(0.1 * sum(m[c] for m in means) / 3, rel=1e-5)
        assert float(bn.running_var[c]) == pytest.approx(0.9 + 0.1 * sum(v[c] for v in uvars) / 3, rel=1e-5)
    assert int(bn.num_batches_tracked) == 1


def test_one_split_is_batchnorm2d_in_training_and_eval():
    x = _rand(1, 8, 3, 4, 4).requires_grad_(True)
    ref = nn.BatchNorm2d(3)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor([1.5, 0.5, -1.0]))
        ref.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
    split = split_batchnorm(nn.Sequential(ref), 1)[0]
    assert isinstance(split, SplitBatchNorm2d) and split.splits == 1
    ref = nn.BatchNorm2d(3)  # a fresh reference with the same weights
    ref.load_state_dict(split.state_dict())
    x2 = x.detach().clone().requires_grad_(True)
    y1, y2 = split(x), ref(x2)
    assert torch.allclose(y1, y2, atol=1e-5)
    (y1 * torch.arange(y1.numel()).view_as(y1)).sum().backward()
    (y2 * torch.arange(y2.numel()).view_as(y2)).sum().backward()
    assert torch.allclose(x.grad, x2.grad, rtol=1e-4, atol=1e-4)
    assert torch.allclose(split.weight.grad, ref.weight.grad, rtol=1e-4)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.allclose(getattr(split, name).double(), getattr(ref, name).double(), atol=1e-6), name
    split.eval(), ref.eval()
    assert torch.allclose(split(x), ref(x), atol=1e-6)


def test_a_resnet_is_converted_whole_keeps_its_state_and_stays_out_of_syncbatchnorm():
    torch.manual_seed(0)
    net = ResNetBackbone("resnet18", small_stem=True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    names = [n for n, _ in net.named_parameters()]
    split_batchnorm(net, 4)
    assert not any(type(m) is nn.BatchNorm2d for m in net.modules())
    assert sum(isinstance(m, SplitBatchNorm2d) for m in net.modules()) == 20  # resnet18: 17 + 3 downsample
    assert [n for n, _ in net.named_parameters()] == names  # an EMA twin pairs up parameter by parameter
    after = net.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(net)  # what the engine does under torchrun
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())


def test_each_rank_normalises_its_whole_groups_and_bad_splits_are_refused():
    bn = SplitBatchNorm2d(1, splits=4)
    assert bn.local_groups(8, Distributed(0, 1)) == 4
    assert bn.local_groups(4, Distributed(1, 2)) == 2  # 16 rows over 2 ranks: 2 groups of 4 each
    with pytest.raises(ConfigError, match="multiple of"):
        bn.local_groups(4, Distributed(0, 3))
    with pytest.raises(ConfigError, match="evenly"):
        bn(torch.zeros(6, 1, 2, 2))  # 6 rows do not make 4 groups


def test_shuffled_forward_restores_the_order_of_rowwise_outputs():
    x = _rand(2, 6, 3)
    got = shuffled_forward(lambda z: (2 * z, z.sum(1)), x)
    assert isinstance(got, tuple) and torch.equal(got[0], 2 * x) and torch.equal(got[1], x.sum(1))


def test_shuffled_forward_groups_the_rows_of_a_random_permutation():
    x = torch.arange(8.0).view(8, 1) ** 2

    def centre_in_halves(z):  # batch-dependent: each half of its input minus that half's mean
        return torch.cat([z[:4] - z[:4].mean(), z[4:] - z[4:].mean()])

    torch.manual_seed(3)
    perm = torch.rand(8).argsort()  # the draw shuffled_forward makes
    assert set(perm[:4].tolist()) != {0, 1, 2, 3} and set(perm[:4].tolist()) != {4, 5, 6, 7}
    want = torch.empty(8, 1)
    for half in (perm[:4].tolist(), perm[4:].tolist()):
        mean = sum(float(x[i]) for i in half) / 4
        for i in half:
            want[i] = float(x[i]) - mean
    torch.manual_seed(3)
    got = shuffled_forward(centre_in_halves, x)
    assert torch.allclose(got, want)
    assert not torch.allclose(got, centre_in_halves(x))  # the shuffle changed the groups
