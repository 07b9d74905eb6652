"""The batched image kernels ``GPUAugment`` composes, each with a parameter per sample.

Float (N, C, H, W) images in [0, 1]; every kernel is a fixed number of batched tensor ops,
whatever N, and matches its torchvision counterpart (checked in ``tests/test_augment.py``).
"""

from __future__ import annotations

from typing import Sequence

import torch

# ITU-R 601-2 luma weights, exactly as torchvision's rgb_to_grayscale.
_LUMA = (0.2989, 0.587, 0.114)


# ---- colour ops, per-sample factors (N,) --------------------------------------------------------
def gray(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luma (ITU-R 601-2, torchvision's arithmetic); a 1-channel image is its own gray."""
    if x.shape[1] == 1:
        return x
    return x[:, 0:1].mul(_LUMA[0]).add_(x[:, 1:2], alpha=_LUMA[1]).add_(x[:, 2:3], alpha=_LUMA[2])


def per_sample(f: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N, 1, 1, 1): a per-sample value broadcast over its image."""
    return f.view(-1, 1, 1, 1)


def adjust_hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """torchvision adjust_hue (RGB -> HSV, shift H, -> RGB) with a shift per sample.

    Fused to few kernels: with v = max, c = max - min (so v s = c), hue in sixths is
    h6 = (g - b)/c, 2 + (b - r)/c or 4 + (r - g)/c (Pillow's case order, as torchvision),
    and back to RGB in closed form: channel_n = v - c clamp(min(k, 4 - k), 0, 1) with
    k = (n + h6') mod 6, n = 5, 3, 1 for R, G, B -- the same function as torchvision's
    sector table, without its gather.  Factor 0 (and 1 channel) is the exact identity.
    """
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    minc, maxc = torch.aminmax(x, dim=1)
    cr = maxc - minc
    num = torch.where(maxc == r, g - b, torch.where(maxc == g, (b - r).add_(cr, alpha=2.0),
                                                    (r - g).add_(cr, alpha=4.0)))
    h6 = num.div_(torch.where(cr == 0, torch.ones_like(cr), cr))  # c = 0 -> num = 0
    h6 = torch.remainder(h6.add_(6.0 * f.view(-1, 1, 1)), 6.0)
    out = []
    for n in (5.0, 3.0, 1.0):  # R, G, B
        k = torch.remainder(h6 + n, 6.0)
        out.append(torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0).mul_(cr).neg_().add_(maxc))
    y = torch.stack(out, 1)
    # torchvision returns early on factor 0: keep those samples bit-exact
    return torch.where(per_sample(f) != 0, y, x)


def linear_slot(x: torch.Tensor, op: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Apply to each sample one of brightness/contrast/saturation (op 0/1/2) or nothing (-1).

    All three are clamp(a x + c gray(x) + d mean(gray(x))) with per-sample (a, c, d):
    brightness (f, 0, 0), contrast (f, 0, 1-f), saturation (f, 1-f, 0); nothing is
    (1, 0, 0), which returns x bit-exactly.  One pass covers every sample's op.
    """
    f = factors.gather(1, op.clamp(min=0).unsqueeze(1)).squeeze(1)
    identity = op < 0
    if x.shape[1] == 1:
        identity = identity | (op == 2)
    f = torch.where(identity, torch.ones_like(f), f)
    c = torch.where(op == 2, 1 - f, torch.zeros_like(f))
    d = torch.where(op == 1, 1 - f, torch.zeros_like(f))
    g = gray(x)
    m = g.mean(dim=(1, 2, 3), keepdim=True)
    bias = torch.addcmul(m * per_sample(d), g, per_sample(c))         # (N, 1, H, W)
    return torch.addcmul(bias, x, per_sample(f)).clamp_(0, 1)


def color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """ColorJitter with per-sample factors (N, 4) and per-sample op order (N, K).

    Random order, exactly and vectorised: brightness, contrast and saturation are the same
    blend with different coefficients (``linear_slot``), so one batched pass can apply a
    different one of them to each sample.  Hue is the only costly op, so it runs once:
    a sample whose hue comes at position p has p linear ops before it and 3 - p after, so
    the fixed schedule [3 linear slots, hue, 3 linear slots] (pre slot s takes order[:, s]
    if s < p, post slot s takes order[:, s + 1] if s >= p, other slots are identities)
    realises every one of the 24 orders.  Cost: 6 cheap blends + 1 HSV round trip, vs
    4 HSV round trips for "apply every op in every slot" or an approximation with a few
    fixed orders.  Without hue (K = 3) it is just 3 linear slots.
    """
    if order.shape[1] == 3:
        for s in range(3):
            x = linear_slot(x, order[:, s], factors)
        return x
    p = (order == 3).to(torch.uint8).argmax(dim=1)
    none = torch.full_like(p, -1)
    for s in range(3):
        x = linear_slot(x, torch.where(p > s, order[:, s], none), factors)
    x = adjust_hue(x, factors[:, 3])
    for s in range(3):
        x = linear_slot(x, torch.where(p <= s, order[:, s + 1], none), factors)
    return x


def blur_matrices(sigma: torch.Tensor, kernel_size: int, size: int) -> torch.Tensor:
    """(N, size, size) banded matrices M with (M v) = 1-D Gaussian blur of v, reflect-padded."""
    half = (kernel_size - 1) / 2
    dev = sigma.device
    t = torch.linspace(-half, half, kernel_size, device=dev)
    w = torch.softmax(-0.5 * (t / sigma.float().unsqueeze(1)) ** 2, dim=1)  # (N, k): torchvision's kernel
    idx = torch.arange(size, device=dev).unsqueeze(1) + torch.arange(kernel_size, device=dev) - kernel_size // 2
    idx = idx.abs()                                              # reflect at 0 (edge pixel not repeated)
    idx = torch.where(idx > size - 1, 2 * (size - 1) - idx, idx)  # reflect at size - 1
    n = sigma.shape[0]
    m = torch.zeros(n, size, size, device=dev)
    return m.scatter_add_(2, idx.expand(n, size, kernel_size), w.unsqueeze(1).expand(n, size, kernel_size))


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """torchvision gaussian_blur (reflect padding) with a sigma per sample.

    Separable, each pass one batched matmul with a per-sample banded matrix that folds in
    the padding: out = M_h x M_w^T.  A per-sample kernel rules out one plain conv; the
    grouped (groups = N*C) depthwise conv was ~3x slower on an H100 at 224 px.
    Padding needs kernel_size // 2 < H, W (true for the ~10%-of-size kernel).
    """
    n, c, hh, ww = x.shape
    mw = blur_matrices(sigma, kernel_size, ww)
    mh = mw if hh == ww else blur_matrices(sigma, kernel_size, hh)
    y = torch.bmm(x.reshape(n, c * hh, ww), mw.transpose(1, 2)).view(n, c, hh, ww)
    return torch.matmul(mh.unsqueeze(1), y)


def normalize(y: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    """In-place per-channel Normalize from Python scalars (no host->device copy).

    A 3-value mean/std on a 1-channel image uses the average of the three.
    """
    if mean is None:
        return y
    if std is None:
        raise ValueError("mean given without std")
    c = y.shape[1]
    mean, std = list(mean), list(std)
    if len(mean) != c or len(std) != c:
        if len(mean) == 1 and len(std) == 1:
            mean, std = mean * c, std * c
        elif c == 1 and len(mean) == 3 and len(std) == 3:
            mean, std = [sum(mean) / 3], [sum(std) / 3]
        else:
            raise ValueError(f"mean/std of length {len(mean)}/{len(std)} for {c}-channel images")
    for i in range(c):
        y[:, i].sub_(mean[i]).div_(std[i])
    return y
