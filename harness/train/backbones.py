"""Network building blocks shared by the deep methods: torchvision ResNets without their
classifier, and the Linear-ReLU-Linear head the contrastive methods project with.

``small_stem`` swaps the ImageNet stem (7x7 stride-2 conv + max-pool) for a 3x3 stride-1
conv, the usual CIFAR variant (SimCLR's CIFAR ResNet, solo-learn, SCAN): at 32x32 the
ImageNet stem throws away 15/16 of the pixels before the first block.
"""

from __future__ import annotations

import torch
from torch import nn

RESNETS = ("resnet18", "resnet34", "resnet50")

__all__ = ["RESNETS", "ResNetBackbone", "mlp"]


def mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    """Linear-ReLU-Linear: SimCLR's projection head, and CC's instance and cluster projectors."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(inplace=True), nn.Linear(d_hidden, d_out))


class ResNetBackbone(nn.Module):
    """A torchvision ResNet returning pooled features of size ``out_dim``."""

    def __init__(self, arch: str = "resnet34", in_chans: int = 3, small_stem: bool = False) -> None:
        super().__init__()
        import torchvision.models as tvm

        if arch not in RESNETS:
            raise ValueError(f"unknown backbone {arch!r}; choose from {', '.join(RESNETS)}")
        net = getattr(tvm, arch)(weights=None)  # trained from scratch, as the papers do
        if small_stem:
            net.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_chans != 3:
            net.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.out_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
