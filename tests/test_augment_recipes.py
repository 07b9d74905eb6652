"""Augmentation as the recipes specify it: blur kernels sized from sigma, one spec per view,
the resampling mode per method (CPU)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import records_in

from clusterbench.cli import main
from clusterbench.train.augment import AugmentSpec, GPUAugment, blur_kernel_size, two_views

# everything off but what a test looks at: the whole image, not flipped, not jittered
PLAIN = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0)


def _impulse(size: int) -> torch.Tensor:
    x = torch.zeros(1, size, size, 3, dtype=torch.uint8)
    x[0, size // 2, size // 2] = 255
    return x


def _std_of_response(y: torch.Tensor) -> float:
    """The standard deviation (in pixels) of a blurred impulse along x: the kernel's effective sigma."""
    w = y[0, 0].sum(0).double()
    w = w / w.sum()
    t = torch.arange(len(w), dtype=torch.float64)
    mu = (w * t).sum()
    return math.sqrt(float((w * (t - mu) ** 2).sum()))


@pytest.mark.parametrize("size", [32, 96, 224])
@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_the_blur_acts_with_the_sigma_asked_for_at_every_size(size, sigma):
    aug = GPUAugment(AugmentSpec(**PLAIN, blur_p=1.0, blur_sigma=(sigma, sigma)), size)
    y = aug(_impulse(size), torch.Generator().manual_seed(0))
    assert _std_of_response(y) == pytest.approx(sigma, rel=0.01)
    assert aug.blur_kernel >= 2 * math.ceil(3 * sigma) + 1  # radius >= 3 sigma (4 sigma here), odd


def test_the_kernel_keeps_ccs_23_taps_at_224_and_grows_at_small_sizes():
    assert blur_kernel_size(224, 2.0) == 23  # CC's official cv2 kernel (modules/transform.py:31)
    assert blur_kernel_size(32, 2.0) == 17 > blur_kernel_size(32) == 3  # 3 taps acted like sigma <= 0.8
    assert blur_kernel_size(4, 2.0) == 7  # capped where reflect padding still works (radius < size)


def test_a_policy_may_give_each_view_its_own_spec():
    x = torch.randint(0, 256, (64, 8, 8, 3), dtype=torch.uint8)
    plain = x.permute(0, 3, 1, 2).float() / 255
    policy = (AugmentSpec(**PLAIN, blur_p=1.0), AugmentSpec(**PLAIN, solarize_p=1.0))  # BYOL-style asymmetry
    v1, v2 = two_views(GPUAugment(policy, 8), x, torch.Generator().manual_seed(0))
    assert not torch.allclose(v1, plain, atol=1e-3)  # view 1 blurred
    assert torch.allclose(v2, torch.where(plain >= 0.5, 1 - plain, plain), atol=1e-6)  # view 2 only solarised


def test_a_policy_of_one_spec_per_view_draws_each_views_probabilities():
    x = torch.full((4000, 4, 4, 3), 200, dtype=torch.uint8)  # 200/255 >= 0.5: solarised pixels change
    policy = (AugmentSpec(**PLAIN), AugmentSpec(**PLAIN, solarize_p=0.2))  # VTCC's: view 2 only, p 0.2
    v1, v2 = two_views(GPUAugment(policy, 4), x, torch.Generator().manual_seed(0))
    solarised = [(v < 0.5).flatten(1).all(1).float().mean().item() for v in (v1, v2)]
    assert solarised[0] == 0.0 and solarised[1] == pytest.approx(0.2, abs=0.03)


def test_the_same_spec_for_both_views_is_the_one_spec_policy_bit_for_bit():
    x = torch.randint(0, 256, (16, 12, 12, 3), dtype=torch.uint8)
    spec = AugmentSpec(blur_p=0.5, solarize_p=0.3)
    one = two_views(GPUAugment(spec, 10), x, torch.Generator().manual_seed(3))
    per_view = two_views(GPUAugment((spec, spec), 10), x, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(one, per_view))


def test_views_of_one_policy_must_share_resampling_and_normalisation():
    with pytest.raises(ValueError, match="share interpolation"):
        GPUAugment((AugmentSpec(), AugmentSpec(interpolation="bicubic")), 8)
    with pytest.raises(ValueError, match="interpolation must be one of"):
        GPUAugment(AugmentSpec(interpolation="lanczos"), 8)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_the_crop_is_resampled_in_the_specs_mode(mode):
    x = torch.randint(0, 256, (3, 8, 8, 3), dtype=torch.uint8)
    y = GPUAugment(AugmentSpec(**PLAIN, interpolation=mode), 16)(x, torch.Generator().manual_seed(0))
    ref = F.interpolate(x.permute(0, 3, 1, 2).float() / 255, size=(16, 16), mode=mode, align_corners=False)
    other = F.interpolate(x.permute(0, 3, 1, 2).float() / 255, size=(16, 16),
                          mode="bicubic" if mode == "bilinear" else "bilinear", align_corners=False)
    assert torch.allclose(y, ref.clamp(0, 1), atol=1e-5) and not torch.allclose(y, other.clamp(0, 1), atol=1e-3)


def test_cueco_crops_bicubic_as_its_solo_learn_recipe_and_the_pil_baseline_follows():
    from torchvision.transforms import InterpolationMode

    from clusterbench.bench.pil import pil_transform
    from clusterbench.methods.cueco import CueCo
    from clusterbench.train.deep import augment_policy

    spec = augment_policy(CueCo(CueCo.resolve_params(preset="smoke")), None)
    assert spec.interpolation == "bicubic"
    assert pil_transform(spec, 32).transforms[0].interpolation == InterpolationMode.BICUBIC


def test_vtcc_records_its_per_view_policy(tmp_path):
    results = tmp_path / "res"
    assert main(["run", "--methods", "vtcc[preset=smoke]", "--datasets", "synthetic[n=32,classes=2,size=16]",
                 "--seeds", "0", "--budget", "steps=1", "--device", "cpu", "--results", str(results),
                 "--quiet"]) == 0
    (rec,) = records_in(results)
    views = rec["stats"]["augmentation"]["views"]
    assert [v["solarize_p"] for v in views] == [0.0, 0.2]  # official transform.py:39: view 2 only
    assert views[0]["mean"] == [0.485, 0.456, 0.406]
