"""Two-view image augmentation on the device, parameters drawn per sample.

    spec = AugmentSpec(...)                       # the policy a method asks for
    aug = GPUAugment(spec, out_size=32)           # stateless module
    v = aug(x_uint8_nhwc_on_device, generator)    # float32 NCHW in [0, 1] (or normalised)
    v1, v2 = two_views(aug, x, generator)         # the two views a contrastive step needs

Why not torchvision on PIL images in DataLoader workers: at batch 256-1024 the CPU
pipeline, not the GPU, bounds the step.  Here the whole dataset sits on the device as
uint8 and each batch is augmented there, in a fixed number of batched kernels whatever
the batch size: no Python loop over samples, no ``.item()``, no branch on device values
(so no host-device sync), with every random parameter drawn per sample from the same
distributions as the torchvision transforms the papers use:

    RandomResizedCrop(scale, ratio) -> RandomHorizontalFlip(flip_p)
    -> RandomApply([ColorJitter(b, c, s, h)], jitter_p) -> RandomGrayscale(grayscale_p)
    -> RandomApply([GaussianBlur(k, blur_sigma)], blur_p) -> RandomSolarize(0.5, solarize_p)
    -> optional Normalize(mean, std)

A method may give one ``AugmentSpec`` per view (a tuple): VTCC solarises only its second
view, BYOL-style recipes blur the views with different probabilities.  The views still go
through one ``grid_sample`` and one pass of each kernel; only the per-sample parameters
are drawn from each view's own spec (so the views must share the resampling mode and the
normalisation).

Differences from torchvision a user should know about:

* The crop is resampled with ``grid_sample`` (bilinear by default, or bicubic when the
  spec says so, as solo-learn's recipes do; half-pixel centres, border clamping), which
  does not antialias.  Upscaling a crop (the usual case: crops are
  smaller than the image, the image is about out_size) equals a bilinear resize of the
  integer crop box, except that pixels just outside the box (inside the image) enter the
  interpolation at its edge instead of being clamped.  Downscaling skips the low-pass
  that an antialiased resize applies: slightly sharper below 2x, aliasing well above it
  (store images near the model's input size).
* The crop box is integer, as in ``RandomResizedCrop.get_params``; its 10 attempts are
  10 candidates drawn at once, the first valid one taken, else the same central fallback.
* The Gaussian blur kernel is sized from sigma: radius 4 sigma_max (scipy's truncation;
  the sampled kernel's std is then sigma to < 1% for sigma >= 1), and at least the ~10%
  of the image SimCLR/CC use (23 taps at 224 px, CC's official cv2 kernel), as long as
  the image allows (radius < size).  PIL's GaussianBlur (MoCo v3, VTCC, solo-learn)
  does not truncate either; a fixed 10% kernel (3 taps at 32 px) would act like
  sigma <= 0.8 whatever sigma was asked for.
* ColorJitter's random op order is exact per sample (see ``augment_kernels.color_jitter``).
* 1-channel images: saturation, hue and grayscale need colour and are skipped, as
  torchvision's tensor kernels do; brightness and contrast apply.  Images are not
  replicated to 3 channels.
* Randomness comes only from ``generator`` (or the device's global RNG): one
  ``torch.rand(N, 36)`` per call, so a seed reproduces the views exactly on one device
  (values differ between CPU and CUDA generators, as any torch RNG does).  A generator
  on another device than x also works (the draws are copied over), but costs a copy.
* Checked on an H100 under ``torch.cuda.set_sync_debug_mode("error")``: no host sync.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

from clusterbench.train.augment_kernels import color_jitter, gaussian_blur, gray, normalize, per_sample

__all__ = ["AugmentSpec", "AugmentPolicy", "GPUAugment", "eval_transform", "two_views", "blur_kernel_size",
           "view_specs"]

_N_TRIES = 10  # RandomResizedCrop's attempts before its central fallback


@dataclass(frozen=True)
class AugmentSpec:
    """A two-view augmentation policy; defaults = the SimCLR-style policy CC uses."""

    crop_scale: tuple[float, float] = (0.08, 1.0)   # RandomResizedCrop scale
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # RandomResizedCrop ratio
    flip_p: float = 0.5                              # RandomHorizontalFlip
    jitter_p: float = 0.8                            # RandomApply([ColorJitter], p)
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2                         # RandomGrayscale
    blur_p: float = 0.0                              # GaussianBlur applied with prob (kernel ~10% of size)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0                          # RandomSolarize(threshold=0.5 in [0,1] units)
    mean: tuple[float, ...] | None = None            # optional Normalize after augmentation
    std: tuple[float, ...] | None = None
    interpolation: str = "bilinear"                  # RandomResizedCrop's resampling: bilinear | bicubic


#: What a method's ``augmentation`` returns: one spec for both views, or one spec per view.
AugmentPolicy = AugmentSpec | tuple[AugmentSpec, ...]

INTERPOLATIONS = ("bilinear", "bicubic")
BLUR_TRUNCATE = 4.0  # kernel radius in sigmas (scipy.ndimage.gaussian_filter's default)


def view_specs(policy: AugmentPolicy) -> tuple[AugmentSpec, ...]:
    """The policy as one spec per view (a single spec serves every view)."""
    return (policy,) if isinstance(policy, AugmentSpec) else tuple(policy)


def blur_kernel_size(out_size: int, sigma_max: float = 0.0) -> int:
    """Gaussian kernel side: odd, radius >= 4 sigma_max and >= ~10% of the image (SimCLR / CC's
    23 taps at 224 px), at least 3, and at most what reflect padding allows (radius < out_size)."""
    ten_percent = max(3, int(0.1 * out_size) // 2 * 2 + 1)
    from_sigma = 2 * math.ceil(BLUR_TRUNCATE * sigma_max) + 1
    return max(3, min(max(ten_percent, from_sigma), 2 * (out_size - 1) + 1))


# ---- parameter sampling ---------------------------------------------------------------------
# Columns of the (N, _N_RAND) uniform matrix drawn once per call.
_C_AREA = slice(0, _N_TRIES)
_C_LOGR = slice(_N_TRIES, 2 * _N_TRIES)
_C_TOP, _C_LEFT, _C_FLIP, _C_JIT = 20, 21, 22, 23
_C_FACT = slice(24, 28)      # brightness, contrast, saturation, hue
_C_ORDER = slice(28, 32)     # sort keys -> a uniform random permutation of the 4 ops
_C_GRAY, _C_BLUR, _C_SIGMA, _C_SOL = 32, 33, 34, 35
_N_RAND = 36


class _Draws(NamedTuple):
    """The random draws of one call, per sample (all shape (N,) or (N, k), on the device)."""

    top: torch.Tensor        # crop box, integer-valued float
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    flip: torch.Tensor       # bool
    factors: torch.Tensor    # (N, 4) brightness, contrast, saturation, hue; neutral when not jittered
    order: torch.Tensor      # (N, 4) or (N, 3) permutation of op ids (3 = hue; absent when hue is off)
    gray: torch.Tensor       # bool
    blur: torch.Tensor       # bool
    sigma: torch.Tensor
    solarize: torch.Tensor   # bool


def _sample_crops(u_area: torch.Tensor, u_logr: torch.Tensor, u_top: torch.Tensor, u_left: torch.Tensor,
                  height: int, width: int, scale: Sequence[float], ratio: Sequence[float]
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Vectorised ``RandomResizedCrop.get_params``: (top, left, h, w) per sample.

    ``u_area``/``u_logr`` are (N, tries) uniforms: each column is one of torchvision's
    attempts; the first valid one is kept (argmax of the validity mask returns the first
    True), samples with none take torchvision's central fallback crop.
    """
    area = float(height * width)
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    target = area * (scale[0] + (scale[1] - scale[0]) * u_area)
    aspect = torch.exp(lo + (hi - lo) * u_logr)
    w = torch.round(torch.sqrt(target * aspect))   # round half to even, like Python's round()
    h = torch.round(torch.sqrt(target / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)
    ok = valid.any(dim=1)
    # torchvision's fallback, a static function of the image size
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    w = torch.where(ok, w.gather(1, first).squeeze(1), float(fw))
    h = torch.where(ok, h.gather(1, first).squeeze(1), float(fh))
    # randint(0, H - h + 1) == floor(u * (H - h + 1)); the clamp guards u -> 1 rounding
    top = torch.minimum(torch.floor(u_top * (height - h + 1)), height - h)
    left = torch.minimum(torch.floor(u_left * (width - w + 1)), width - w)
    top = torch.where(ok, top, float((height - fh) // 2))
    left = torch.where(ok, left, float((width - fw) // 2))
    return top, left, h, w


def _draw_params(u: torch.Tensor, spec: AugmentSpec, height: int, width: int, channels: int,
                 use_hue: bool | None = None) -> _Draws:
    """Map the (N, 36) uniforms to every per-sample parameter of the policy (``use_hue``: whether
    the op order includes hue; by default, whether this spec jitters hue)."""
    top, left, h, w = _sample_crops(u[:, _C_AREA], u[:, _C_LOGR], u[:, _C_TOP], u[:, _C_LEFT],
                                    height, width, spec.crop_scale, spec.crop_ratio)
    jit = u[:, _C_JIT] < spec.jitter_p
    uf = u[:, _C_FACT]
    ranges = [(max(0.0, 1 - spec.brightness), 1 + spec.brightness),
              (max(0.0, 1 - spec.contrast), 1 + spec.contrast),
              (max(0.0, 1 - spec.saturation), 1 + spec.saturation),
              (-spec.hue, spec.hue)]
    # per column from Python scalars: no host->device copy of a range table
    factors = torch.stack([lo + (hi - lo) * uf[:, i] for i, (lo, hi) in enumerate(ranges)], 1)
    neutral = torch.zeros_like(factors)
    neutral[:, :3] = 1.0
    if channels == 1:  # saturation and hue need colour
        factors[:, 2:] = neutral[:, 2:]
    factors = torch.where(jit[:, None], factors, neutral)
    if use_hue is None:
        use_hue = spec.hue > 0 and channels == 3
    keys = u[:, _C_ORDER] if use_hue else u[:, _C_ORDER][:, :3]
    order = keys.argsort(dim=1)  # uniform random permutation (ties have probability ~0)
    sigma = spec.blur_sigma[0] + (spec.blur_sigma[1] - spec.blur_sigma[0]) * u[:, _C_SIGMA]
    return _Draws(top, left, h, w, u[:, _C_FLIP] < spec.flip_p, factors, order,
                   u[:, _C_GRAY] < spec.grayscale_p, u[:, _C_BLUR] < spec.blur_p, sigma,
                   u[:, _C_SOL] < spec.solarize_p)


def _draw_view_params(u: torch.Tensor, specs: tuple[AugmentSpec, ...], height: int, width: int,
                      channels: int) -> _Draws:
    """``_draw_params`` for view-major draws: each view's rows from its own spec (one spec: one call)."""
    if len(set(specs)) == 1:
        return _draw_params(u, specs[0], height, width, channels)
    b = u.shape[0] // len(specs)
    use_hue = channels == 3 and any(s.hue > 0 for s in specs)  # one op order for all views
    parts = [_draw_params(u[v * b:(v + 1) * b], s, height, width, channels, use_hue) for v, s in enumerate(specs)]
    return _Draws(*(torch.cat(column) for column in zip(*parts)))


def _check_spec(spec: AugmentSpec) -> None:
    for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
        if not 0.0 <= getattr(spec, name) <= 1.0:
            raise ValueError(f"{name} must be a probability, got {getattr(spec, name)}")
    if not 0.0 <= spec.hue <= 0.5:
        raise ValueError(f"hue must be in [0, 0.5], got {spec.hue}")
    if min(spec.brightness, spec.contrast, spec.saturation) < 0:
        raise ValueError("brightness, contrast and saturation must be non-negative")
    if not (0 < spec.crop_scale[0] <= spec.crop_scale[1] and 0 < spec.crop_ratio[0] <= spec.crop_ratio[1]):
        raise ValueError(f"bad crop_scale {spec.crop_scale} or crop_ratio {spec.crop_ratio}")
    if spec.blur_p > 0 and not 0 < spec.blur_sigma[0] <= spec.blur_sigma[1]:
        raise ValueError(f"bad blur_sigma {spec.blur_sigma}")
    if spec.interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {spec.interpolation!r}")


def _crop_theta(top: torch.Tensor, left: torch.Tensor, h: torch.Tensor, w: torch.Tensor,
                flip: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 2, 3) affine matrices for ``affine_grid(align_corners=False)``.

    Output pixel k (normalised x_o = (2k+1)/out - 1) must read the crop at input pixel
    edge coordinate left + (k + 1/2) w / out, i.e. x_i = (w/W) x_o + (2 left + w)/W - 1;
    a horizontal flip after the crop is x_o -> -x_o, so it negates the x scale.
    """
    sx = torch.where(flip, -w, w) / width
    tx = (2 * left + w) / width - 1
    sy = h / height
    ty = (2 * top + h) / height - 1
    zero = torch.zeros_like(sx)
    return torch.stack([torch.stack([sx, zero, tx], 1), torch.stack([zero, sy, ty], 1)], 1)


def _check_input(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"expected uint8 images (B, H, W, C) with C in (1, 3), got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {x.dtype}")


def _to_float_nchw(x: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [0, 1] (a channels_last-strided view of one copy)."""
    return x.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)


# ---- public API ---------------------------------------------------------------------------------
class GPUAugment(torch.nn.Module):
    """The policy of an ``AugmentSpec`` applied on the input's device, parameters per sample.

    Stateless (no parameters or buffers): ``.to(device)`` is a no-op, kept for symmetry.

    ``compile=True`` runs the colour jitter (most of the cost: 7 ops of many memory-bound
    passes that eager PyTorch cannot fuse) through ``torch.compile`` on CUDA inputs.  On an
    H100 ``two_views`` of 256 images at 224 px took 13.9 ms eager, 8.7 ms compiled (at 32 px:
    3.5 -> 1.8 ms, where eager is kernel-launch bound), for ~5-15 s of compilation on first
    use, same results to ~1e-6.  Off by default (CPU inputs always run eager); if
    compilation fails, it warns and falls back to eager.
    """

    def __init__(self, spec: AugmentPolicy, out_size: int, *, compile: bool = False) -> None:
        super().__init__()
        if out_size < 2:
            raise ValueError(f"out_size must be >= 2, got {out_size}")
        self.specs = view_specs(spec)
        if not self.specs:
            raise ValueError("an augmentation policy needs at least one AugmentSpec")
        for s in self.specs:
            _check_spec(s)
        first = self.specs[0]
        if any((s.interpolation, s.mean, s.std) != (first.interpolation, first.mean, first.std) for s in self.specs):
            raise ValueError("the views of one policy must share interpolation and mean/std (one grid_sample, "
                             "one test-time transform)")
        self.spec = first  # what every view shares (resampling, normalisation)
        self.out_size = int(out_size)
        sigma_max = max((s.blur_sigma[1] for s in self.specs if s.blur_p > 0), default=0.0)
        self.blur_kernel = blur_kernel_size(self.out_size, sigma_max)
        self._use_compile = bool(compile)  # not ``self.compile``: that is nn.Module's method
        self._compiled_jitter = None

    def _jitter(self, y: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        if not (self._use_compile and y.is_cuda):
            return color_jitter(y, factors, order)
        if self._compiled_jitter is None:
            self._compiled_jitter = torch.compile(color_jitter)
        try:
            return self._compiled_jitter(y, factors, order)
        except Exception as e:  # no Triton, no compiler, ...: the eager path is the reference anyway
            warnings.warn(f"torch.compile of the colour jitter failed, running it eagerly: {e!r}")
            self._use_compile = False
            return color_jitter(y, factors, order)

    def extra_repr(self) -> str:
        return f"out_size={self.out_size}, specs={self.specs}"

    @property
    def compiled(self) -> bool:
        """Whether the colour jitter did run compiled (CUDA inputs, and the compiler worked)."""
        return self._use_compile and self._compiled_jitter is not None

    def describe(self) -> dict:
        """What the record says of the policy: each view's spec and the blur kernel used."""
        import dataclasses

        return {"views": [dataclasses.asdict(s) for s in self.specs], "blur_kernel": self.blur_kernel}

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x: uint8 (B, H, W, C) on any device, C in {1, 3}. Returns float32 (B, C, out, out),
        values in [0, 1] before the optional Normalize."""
        return self.views(x, 1, generator)

    def views(self, x: torch.Tensor, n_views: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n_views`` independent views of the batch, view-major: (n_views * B, C, out, out).

        View v is drawn from ``specs[v]`` (a one-spec policy: every view from it).  One float conversion of the input and one ``grid_sample`` for all views: the views'
        sampling grids are stacked along the output height, so the input is not repeated.
        """
        _check_input(x)
        spec, out = self.spec, self.out_size
        specs = self.specs if len(self.specs) == 1 else self.specs[:n_views]
        if len(self.specs) > 1 and len(specs) != n_views:
            raise ValueError(f"a policy of {len(self.specs)} views cannot make {n_views}")
        b, hh, ww, c = x.shape
        n = n_views * b
        dev = x.device
        gdev = generator.device if generator is not None else dev
        u = torch.rand(n, _N_RAND, generator=generator, device=gdev).to(dev, non_blocking=True)
        p = _draw_view_params(u, specs if len(specs) > 1 else specs * n_views, hh, ww, c)

        # crop + flip: one grid_sample for the whole batch and all views
        theta = _crop_theta(p.top, p.left, p.height, p.width, p.flip, hh, ww)
        grid = F.affine_grid(theta, [n, c, out, out], align_corners=False)
        if n_views > 1:
            grid = grid.view(n_views, b, out, out, 2).transpose(0, 1).reshape(b, n_views * out, out, 2)
        y = F.grid_sample(_to_float_nchw(x), grid, mode=spec.interpolation, padding_mode="border",
                          align_corners=False)
        if n_views > 1:
            y = y.view(b, c, n_views, out, out).permute(2, 0, 1, 3, 4).reshape(n, c, out, out)
        if any(s.jitter_p > 0 for s in specs):  # every linear slot clamps to [0, 1]
            y = self._jitter(y, p.factors, p.order)
        else:  # bilinear weights can overshoot 1 by an ulp, bicubic ones by more
            y = y.clamp_(0, 1)
        if c == 3 and any(s.grayscale_p > 0 for s in specs):
            y = torch.where(per_sample(p.gray), gray(y).expand(-1, 3, -1, -1), y)
        if any(s.blur_p > 0 for s in specs):
            y = torch.where(per_sample(p.blur), gaussian_blur(y, p.sigma, self.blur_kernel).clamp_(0, 1), y)
        if any(s.solarize_p > 0 for s in specs):  # threshold 0.5 for the chosen samples, unreachable 2 for the others
            thr = torch.where(p.solarize, 0.5, 2.0)
            y = torch.where(y >= per_sample(thr), 1.0 - y, y)
        return normalize(y, spec.mean, spec.std)


def eval_transform(x: torch.Tensor, out_size: int, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None) -> torch.Tensor:
    """The deterministic test-time transform: uint8 NHWC -> float32 NCHW in [0,1], resized
    (bilinear, antialias) to out_size when sizes differ, optionally normalised."""
    _check_input(x)
    y = _to_float_nchw(x)
    if y.shape[-2:] != (out_size, out_size):
        y = F.interpolate(y, size=(out_size, out_size), mode="bilinear", align_corners=False, antialias=True)
        y = y.clamp_(0, 1)
    return normalize(y, mean, std)


def two_views(aug: GPUAugment, x: torch.Tensor, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent augmented views of the same batch (one batched call, then split).

    The views are independent draws, but not the same numbers as two ``aug(x)`` calls.
    """
    v = aug.views(x, 2, generator)
    b = x.shape[0]
    return v[:b], v[b:]
