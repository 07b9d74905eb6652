"""The papers' data path, the baseline the harness's GPU augmentation is measured against:
torchvision transforms on PIL images in ``DataLoader`` worker processes."""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch

from clusterbench.train.augment import AugmentPolicy, AugmentSpec, blur_kernel_size, view_specs


@contextlib.contextmanager
def float32_mode(tf32: bool) -> Iterator[None]:
    """Strict IEEE fp32 (``tf32=False``) or TF32 tensor cores for fp32 convolutions and
    matmuls, restored afterwards.  PyTorch's defaults differ by op (cuDNN convolutions
    TF32, matmuls strict), so a plain "fp32" figure on a new GPU is neither."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


class PILTwoViews(torch.utils.data.Dataset):
    """PIL image -> torchvision transforms, once per view (the first view's for both if one is given).

    The images are held in a shared-memory tensor, so a spawned worker receives a handle,
    not a pickled copy of the whole array (which took ~80 s for 16 workers x 60,000 CIFAR
    images); the papers' loaders read an in-memory array the same way.
    """

    def __init__(self, x: np.ndarray, *transforms) -> None:
        self.x = torch.from_numpy(np.ascontiguousarray(x)).share_memory_()
        self.transforms = transforms if len(transforms) > 1 else transforms * 2

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        from PIL import Image

        a = self.x[i].numpy()
        img = Image.fromarray(a.squeeze(-1) if a.shape[-1] == 1 else a)
        return self.transforms[0](img), self.transforms[1](img)


def pil_transform(spec: AugmentSpec, size: int):
    """The torchvision pipeline of ``spec``, in the order ``GPUAugment`` applies it."""
    import torchvision.transforms as T

    mode = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}[spec.interpolation]
    ops = [T.RandomResizedCrop(size, scale=spec.crop_scale, ratio=spec.crop_ratio, interpolation=mode),
           T.RandomHorizontalFlip(spec.flip_p),
           T.RandomApply([T.ColorJitter(spec.brightness, spec.contrast, spec.saturation, spec.hue)], p=spec.jitter_p),
           T.RandomGrayscale(spec.grayscale_p)]
    if spec.blur_p > 0:
        ops.append(T.RandomApply([T.GaussianBlur(blur_kernel_size(size, spec.blur_sigma[1]), spec.blur_sigma)], p=spec.blur_p))
    if spec.solarize_p > 0:  # threshold 0.5 in [0, 1] units is 128 on uint8 PIL images
        ops.append(T.RandomSolarize(128, p=spec.solarize_p))
    ops.append(T.ToTensor())
    if spec.mean is not None:
        ops.append(T.Normalize(spec.mean, spec.std))
    return T.Compose(ops)


def pil_loader(x: np.ndarray, spec: AugmentPolicy, size: int, batch_size: int, workers: int,
               pin_memory: bool) -> torch.utils.data.DataLoader:
    """The papers' loader: PIL two views in ``workers`` spawned processes, shuffled, last
    batch dropped.  Spawned, not forked: a fork of a process holding CUDA graphs crashes
    when it frees them."""
    return torch.utils.data.DataLoader(
        PILTwoViews(x, *(pil_transform(s, size) for s in view_specs(spec))), batch_size=batch_size, shuffle=True, drop_last=True,
        num_workers=workers, pin_memory=pin_memory, persistent_workers=workers > 0,
        multiprocessing_context="spawn" if workers > 0 else None)
