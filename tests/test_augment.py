"""GPU two-view augmentation: shapes, per-sample randomness, seeding, exactness against torchvision."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
import torchvision.transforms.functional as TF
import torchvision.transforms.v2.functional as F2

from clusterbench.train.augment import (_N_RAND, AugmentSpec, GPUAugment, _crop_theta, _draw_params, _sample_crops,
                                        blur_kernel_size, eval_transform, two_views)
from clusterbench.train.augment_kernels import adjust_hue, color_jitter, gaussian_blur, gray, linear_slot

# Everything random switched off and the crop the whole image: the identity policy.
OFF = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0,
           blur_p=0.0, solarize_p=0.0)
STRONG = AugmentSpec(blur_p=0.5, solarize_p=0.2)  # every op on


def images(b: int, h: int, w: int | None = None, c: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, h, w or h, c), generator=g, dtype=torch.uint8)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- shapes, dtype, range ------------------------------------------------------------------------
@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("size_in,size_out", [(8, 16), (32, 16), (16, 16)])
def test_shape_dtype_range(c, size_in, size_out):
    x = images(6, size_in, c=c)
    y = GPUAugment(STRONG, size_out)(x, gen(0))
    assert y.shape == (6, c, size_out, size_out) and y.dtype == torch.float32
    assert y.min() >= 0 and y.max() <= 1 and torch.isfinite(y).all()
    e = eval_transform(x, size_out)
    assert e.shape == y.shape and e.dtype == torch.float32 and 0 <= e.min() and e.max() <= 1


def test_non_square_input_and_normalize():
    x = images(4, 12, 20)
    spec = AugmentSpec(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    y = GPUAugment(spec, 16)(x, gen(0))
    assert y.shape == (4, 3, 16, 16)
    assert y.min() >= -2 - 1e-6 and y.max() <= 2 + 1e-6 and y.min() < -1  # normalised
    # a 3-value mean/std on 1-channel images uses their average
    y1 = GPUAugment(AugmentSpec(mean=(0.4, 0.5, 0.6), std=(0.2, 0.2, 0.2)), 8)(images(2, 8, c=1), gen(0))
    assert y1.shape == (2, 1, 8, 8)


def test_bad_input_rejected():
    aug = GPUAugment(AugmentSpec(), 8)
    with pytest.raises(TypeError):
        aug(torch.rand(2, 8, 8, 3))
    with pytest.raises(ValueError):
        aug(images(2, 8, c=3).permute(0, 3, 1, 2))


# ---- per-sample randomness, views, seeding ---------------------------------------------------------
def test_samples_of_a_batch_get_different_params():
    x = images(1, 32).expand(8, -1, -1, -1).contiguous()  # one image, 8 times
    y = GPUAugment(AugmentSpec(), 32)(x, gen(0))
    flat = y.flatten(1)
    for i, j in itertools.combinations(range(8), 2):
        assert not torch.allclose(flat[i], flat[j], atol=1e-3), (i, j)
    # crop only: the difference must come from per-sample crop parameters
    spec = AugmentSpec(**{**OFF, "crop_scale": (0.08, 1.0), "crop_ratio": (3 / 4, 4 / 3)})
    flat = GPUAugment(spec, 32)(x, gen(1)).flatten(1)
    assert all(not torch.allclose(flat[i], flat[j], atol=1e-3) for i, j in itertools.combinations(range(8), 2))


def test_two_views_differ_and_have_the_right_shape():
    x = images(5, 16)
    aug = GPUAugment(AugmentSpec(), 24)
    v1, v2 = two_views(aug, x, gen(0))
    assert v1.shape == v2.shape == (5, 3, 24, 24)
    for i in range(5):
        assert not torch.allclose(v1[i], v2[i], atol=1e-3)


def test_two_views_stacked_grid_equals_per_view_crop():
    """The views' grids are stacked along the output height: no view may see another's pixels."""
    x = images(3, 16)
    spec = AugmentSpec(**{**OFF, "crop_scale": (0.08, 1.0), "crop_ratio": (3 / 4, 4 / 3), "flip_p": 0.5})
    aug = GPUAugment(spec, 12)
    g = gen(3)
    v = aug.views(x, 2, g)
    u = torch.rand(6, _N_RAND, generator=gen(3))
    p = _draw_params(u, spec, 16, 16, 3)
    theta = _crop_theta(p.top, p.left, p.height, p.width, p.flip, 16, 16)
    xx = torch.cat([x, x]).permute(0, 3, 1, 2).float() / 255
    ref = F.grid_sample(xx, F.affine_grid(theta, [6, 3, 12, 12], align_corners=False), align_corners=False,
                        padding_mode="border")
    torch.testing.assert_close(v, ref, atol=1e-5, rtol=0)


def test_seed_reproduces_and_different_seed_changes():
    x = images(4, 16)
    aug = GPUAugment(STRONG, 16)
    a1, a2 = two_views(aug, x, gen(7))
    b1, b2 = two_views(aug, x, gen(7))
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    c1, _ = two_views(aug, x, gen(8))
    assert not torch.allclose(a1, c1)
    torch.manual_seed(5)
    d = aug(x)
    torch.manual_seed(5)
    assert torch.equal(d, aug(x))  # global RNG when no generator


# ---- exactness of the deterministic parts ----------------------------------------------------------
@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("size", [7, 16])
def test_identity_policy_equals_eval_transform(c, size):
    """Catches half-pixel grid bugs: a full-image crop at the same size must be the identity."""
    x = images(5, size, c=c)
    mean, std = ((0.3,) * c, (0.2,) * c)
    y = GPUAugment(AugmentSpec(**OFF, mean=mean, std=std), size)(x, gen(0))
    torch.testing.assert_close(y, eval_transform(x, size, mean, std), atol=1e-5, rtol=0)
    # jitter drawn but not applied (p = 0) must leave the pixels exact too
    y = GPUAugment(AugmentSpec(**{**OFF, "hue": 0.5, "brightness": 2.0}), size)(x, gen(1))
    torch.testing.assert_close(y, x.permute(0, 3, 1, 2).float() / 255, atol=1e-5, rtol=0)


def test_flip_equals_torch_flip():
    x = images(4, 16)
    y = GPUAugment(AugmentSpec(**{**OFF, "flip_p": 1.0}), 16)(x, gen(0))
    torch.testing.assert_close(y, torch.flip(eval_transform(x, 16), dims=[-1]), atol=1e-5, rtol=0)


def test_grayscale_matches_torchvision():
    x = images(4, 16)
    y = GPUAugment(AugmentSpec(**{**OFF, "grayscale_p": 1.0}), 16)(x, gen(0))
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    ref = TF.rgb_to_grayscale(eval_transform(x, 16), num_output_channels=3)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)
    # 1-channel images are left alone
    x1 = images(2, 16, c=1)
    y1 = GPUAugment(AugmentSpec(**{**OFF, "grayscale_p": 1.0}), 16)(x1, gen(0))
    torch.testing.assert_close(y1, eval_transform(x1, 16), atol=1e-5, rtol=0)


def test_solarize_matches_torchvision():
    x = images(3, 16)
    y = GPUAugment(AugmentSpec(**{**OFF, "solarize_p": 1.0}), 16)(x, gen(0))
    torch.testing.assert_close(y, F2.solarize(eval_transform(x, 16), 0.5), atol=1e-6, rtol=0)


def test_eval_transform_resizes_like_torchvision():
    x = images(3, 40)
    ref = F2.resize(x.permute(0, 3, 1, 2).float() / 255, [16, 16], antialias=True)
    torch.testing.assert_close(eval_transform(x, 16), ref, atol=1e-5, rtol=0)
    assert eval_transform(x, 40).shape == (3, 3, 40, 40)


def test_upscaled_crop_matches_resize_of_the_crop():
    """A centre crop upscaled 2x equals torchvision's resize of that crop away from its border."""
    x = images(2, 16)
    # scale = ratio = fixed: w = h = round(sqrt(0.25 * 256)) = 8, offsets from u
    u = torch.rand(2, _N_RAND, generator=gen(0))
    spec = AugmentSpec(**{**OFF, "crop_scale": (0.25, 0.25)})
    p = _draw_params(u, spec, 16, 16, 3)
    assert torch.equal(p.height, torch.full((2,), 8.0)) and torch.equal(p.width, torch.full((2,), 8.0))
    y = GPUAugment(spec, 16).views(x, 1, gen(0))
    for k in range(2):
        i, j = int(p.top[k]), int(p.left[k])
        crop = x[k:k + 1, i:i + 8, j:j + 8].permute(0, 3, 1, 2).float() / 255
        ref = F2.resize(crop, [16, 16], antialias=True)
        # the outermost output pixels also see the image outside the crop box; the rest must match
        torch.testing.assert_close(y[k:k + 1, :, 1:-1, 1:-1], ref[:, :, 1:-1, 1:-1], atol=1e-5, rtol=0)


# ---- colour ops against torchvision.transforms.v2.functional ----------------------------------------
# One op for every sample: production applies them through ``linear_slot`` (op 0/1/2, any mix
# per batch); these spell out each op the way torchvision's kernels are written.
def _adjust_brightness(x, f):
    return (x * f.view(-1, 1, 1, 1)).clamp(0, 1)


def _adjust_contrast(x, f):
    m = gray(x).mean(dim=(1, 2, 3), keepdim=True)
    return (x * f.view(-1, 1, 1, 1) + m * (1 - f).view(-1, 1, 1, 1)).clamp(0, 1)


def _adjust_saturation(x, f):
    if x.shape[1] == 1:
        return x
    return (x * f.view(-1, 1, 1, 1) + gray(x) * (1 - f).view(-1, 1, 1, 1)).clamp(0, 1)


def _slot(op):
    """The production kernel with every sample taking op ``op`` (0 brightness, 1 contrast, 2 saturation)."""
    return lambda x, f: linear_slot(x, torch.full((len(x),), op), torch.stack([f, f, f, f], 1))


def _per_sample(fn, x, factors):
    return torch.stack([fn(x[i], float(factors[i])) for i in range(len(x))])


@pytest.mark.parametrize("ours,theirs,lo,hi", [
    (_adjust_brightness, F2.adjust_brightness, 0.0, 2.0),
    (_adjust_contrast, F2.adjust_contrast, 0.0, 2.0),
    (_adjust_saturation, F2.adjust_saturation, 0.0, 2.0),
    (_slot(0), F2.adjust_brightness, 0.0, 2.0),
    (_slot(1), F2.adjust_contrast, 0.0, 2.0),
    (_slot(2), F2.adjust_saturation, 0.0, 2.0),
    (adjust_hue, F2.adjust_hue, -0.5, 0.5),
])
def test_colour_ops_match_torchvision(ours, theirs, lo, hi):
    g = gen(0)
    x = torch.rand(16, 3, 12, 12, generator=g)
    x[0] = 0.5           # gray image: hue/saturation degenerate case
    x[1, :, :6] = 1.0    # saturated pixels
    f = lo + (hi - lo) * torch.rand(16, generator=g)
    f[2] = 0.0 if lo < 0 else 1.0  # neutral factor
    torch.testing.assert_close(ours(x, f), _per_sample(theirs, x, f), atol=1e-3, rtol=0)
    # one channel: brightness/contrast apply, saturation/hue are identities, as in torchvision
    x1 = x[:, :1].contiguous()
    torch.testing.assert_close(ours(x1, f), _per_sample(theirs, x1, f), atol=1e-3, rtol=0)


def test_hue_round_trip_is_tight():
    x = torch.rand(8, 3, 16, 16, generator=gen(1))
    f = torch.rand(8, generator=gen(2)) - 0.5
    ref = _per_sample(F2.adjust_hue, x, f)
    assert (adjust_hue(x, f) - ref).abs().max() < 1e-5


def test_color_jitter_random_order_matches_sequential_torchvision():
    """Every sample gets its own op order; the result equals torchvision applying them in that order."""
    n = 48
    g = gen(3)
    x = torch.rand(n, 3, 8, 8, generator=g)
    factors = torch.stack([0.4 + 1.2 * torch.rand(n, generator=g) for _ in range(3)]
                          + [0.4 * torch.rand(n, generator=g) - 0.2], 1)
    order = torch.rand(n, 4, generator=g).argsort(1)
    assert len({tuple(o) for o in order.tolist()}) > 12  # many different orders in one batch
    fns = [F2.adjust_brightness, F2.adjust_contrast, F2.adjust_saturation, F2.adjust_hue]
    ref = []
    for i in range(n):
        img = x[i]
        for op in order[i].tolist():
            img = fns[op](img, float(factors[i, op]))
        ref.append(img)
    torch.testing.assert_close(color_jitter(x, factors, order), torch.stack(ref), atol=1e-4, rtol=0)
    # without hue: orders over the three linear ops
    order3 = torch.rand(n, 3, generator=g).argsort(1)
    ref3 = []
    for i in range(n):
        img = x[i]
        for op in order3[i].tolist():
            img = fns[op](img, float(factors[i, op]))
        ref3.append(img)
    torch.testing.assert_close(color_jitter(x, factors, order3), torch.stack(ref3), atol=1e-4, rtol=0)


def test_gaussian_blur_matches_torchvision():
    x = torch.rand(4, 3, 20, 20, generator=gen(4))
    sigma = torch.tensor([0.1, 0.7, 1.3, 2.0])
    k = blur_kernel_size(64)  # 7
    ref = torch.stack([F2.gaussian_blur(x[i], [k, k], [float(s), float(s)]) for i, s in enumerate(sigma)])
    torch.testing.assert_close(gaussian_blur(x, sigma, k), ref, atol=1e-5, rtol=0)
    x = torch.rand(4, 1, 6, 11, generator=gen(5))  # non-square, kernel 5 on a 6-pixel side
    ref = torch.stack([F2.gaussian_blur(x[i], [5, 5], [float(s), float(s)]) for i, s in enumerate(sigma)])
    torch.testing.assert_close(gaussian_blur(x, sigma, 5), ref, atol=1e-5, rtol=0)
    assert blur_kernel_size(32) == 3 and blur_kernel_size(224) == 23 and blur_kernel_size(96) == 9


# ---- parameter distributions ----------------------------------------------------------------------
def test_drawn_params_distribution():
    n = 6000
    u = torch.rand(n, _N_RAND, generator=gen(5))
    spec = AugmentSpec()
    p = _draw_params(u, spec, 32, 32, 3)
    # every order a permutation, all 24 seen, roughly uniform (expected 250 each)
    assert torch.equal(p.order.sort(1).values, torch.arange(4).expand(n, 4))
    counts = torch.unique(p.order, dim=0, return_counts=True)[1]
    assert len(counts) == 24 and counts.min() > 170 and counts.max() < 330
    jit = p.factors[:, 0] != 1
    assert abs(jit.float().mean() - 0.8) < 0.03
    fb, fh = p.factors[jit, 0], p.factors[jit, 3]
    assert 0.6 <= fb.min() and fb.max() <= 1.4 and -0.1 <= fh.min() and fh.max() <= 0.1
    assert abs(p.flip.float().mean() - 0.5) < 0.03 and abs(p.gray.float().mean() - 0.2) < 0.03
    # 1 channel: no saturation, no hue, orders over three ops
    p1 = _draw_params(u, spec, 32, 32, 1)
    assert p1.order.shape == (n, 3) and (p1.factors[:, 2] == 1).all() and (p1.factors[:, 3] == 0).all()


@pytest.mark.parametrize("hw,scale,ratio,n", [((32, 32), (0.08, 1.0), (3 / 4, 4 / 3), 5000),
                                              ((24, 40), (0.2, 1.0), (0.5, 2.0), 2500)])
def test_crop_area_matches_torchvision_get_params(hw, scale, ratio, n):
    """Mean area fraction (and log aspect) of n crops vs torchvision's get_params.

    Tolerance: the area fraction has sd <= ~0.27 (uniform over [0.08, 1] is 0.266), so the
    difference of two n-draw means has sd ~ 0.27 * sqrt(2 / n) (0.0054 at n = 5000); we
    allow 4.6 sd (0.025 at n = 5000; seeds are fixed, so the test is deterministic anyway).
    A wrong scale mapping (e.g. sampling the side instead of the area) moves the mean by > 0.05.
    """
    h, w = hw
    tol = 4.6 * 0.27 * (2 / n) ** 0.5
    tol_lr = 4.6 * 0.4 * (2 / n) ** 0.5  # log aspect: sd <= log(4) / sqrt(12) = 0.4
    torch.manual_seed(0)
    img = torch.zeros(3, h, w)
    tv = torch.tensor([T.RandomResizedCrop.get_params(img, list(scale), list(ratio)) for _ in range(n)],
                      dtype=torch.float32)
    u = torch.rand(n, 22, generator=gen(6))
    top, left, ch, cw = _sample_crops(u[:, :10], u[:, 10:20], u[:, 20], u[:, 21], h, w, scale, ratio)
    assert (top >= 0).all() and (left >= 0).all() and (top + ch <= h).all() and (left + cw <= w).all()
    assert (ch >= 1).all() and (cw >= 1).all()
    assert torch.equal(ch, ch.round()) and torch.equal(top, top.round())
    ours_area, tv_area = (ch * cw / (h * w)).mean(), (tv[:, 2] * tv[:, 3] / (h * w)).mean()
    assert abs(ours_area - tv_area) < tol, (float(ours_area), float(tv_area))
    ours_lr, tv_lr = torch.log(cw / ch).mean(), torch.log(tv[:, 3] / tv[:, 2]).mean()
    assert abs(ours_lr - tv_lr) < tol_lr, (float(ours_lr), float(tv_lr))
    # offsets uniform over the valid range: mean of top / (H - h) ~ 1/2
    free = h - ch
    assert abs((top[free > 0] / free[free > 0]).mean() - 0.5) < 0.03


def test_crop_fallback_is_torchvision_central_crop():
    # no candidate can fit (ratio 2 with the whole area): every sample takes the fallback
    for hw in [(32, 32), (20, 50)]:
        h, w = hw
        u = torch.rand(7, 22, generator=gen(7))
        got = _sample_crops(u[:, :10], u[:, 10:20], u[:, 20], u[:, 21], h, w, (1.0, 1.0), (2.0, 2.0))
        want = T.RandomResizedCrop.get_params(torch.zeros(3, h, w), [1.0, 1.0], [2.0, 2.0])
        for t, v in zip(got, want):
            assert torch.equal(t, torch.full((7,), float(v)))


def test_compile_flag_is_a_no_op_on_cpu():
    x = images(3, 12)
    a = GPUAugment(STRONG, 12, compile=True)
    assert torch.equal(a(x, gen(0)), GPUAugment(STRONG, 12)(x, gen(0)))
    assert callable(a.compile)  # nn.Module.compile is not shadowed
