"""CC's objective (Li et al., AAAI 2021), shared by every method that trains with it (CC, VTCC).

A network returning ``(z, softmax assignment)`` for a batch is trained with
L = L_ins + L_clu: NT-Xent over the 2N instance rows z, and NT-Xent over the 2K columns of
the assignment matrices plus log K - H(P(y)) per view (CC paper, §3.2-3.4).
Its prediction rule is the argmax of the assignment.  The SimCLR-style augmentation policy
CC uses (and TCC borrows) lives here too.
"""

from __future__ import annotations

import torch
from torch import nn

from clusterbench.train.augment import AugmentSpec
from clusterbench.train.losses import neg_entropy_of_mean, nt_xent

__all__ = ["CCObjective", "cc_augmentation", "cc_cluster_loss", "cc_loss"]


def cc_cluster_loss(c1: torch.Tensor, c2: torch.Tensor, temperature: float) -> torch.Tensor:
    """CC's cluster-level loss: NT-Xent over assignment columns + (log K - H) per view."""
    return nt_xent(c1.t(), c2.t(), temperature) + neg_entropy_of_mean(c1) + neg_entropy_of_mean(c2)


def cc_loss(z1: torch.Tensor, z2: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, tau_instance: float,
            tau_cluster: float) -> dict[str, torch.Tensor]:
    """L = L_ins + L_clu for one batch of two views, with both terms for the learning curve."""
    l_ins = nt_xent(z1, z2, tau_instance)
    l_clu = cc_cluster_loss(c1, c2, tau_cluster)
    return {"loss": l_ins + l_clu, "loss_instance": l_ins, "loss_cluster": l_clu}


def cc_augmentation(jitter_strength: float, blur: bool) -> AugmentSpec:
    """CC's policy (official ``transform.py``): crop, flip, ColorJitter(0.8s, 0.8s, 0.8s, 0.2s)
    with p = 0.8, grayscale p = 0.2, and Gaussian blur with p = 0.5 when ``blur``."""
    s = jitter_strength
    return AugmentSpec(brightness=0.8 * s, contrast=0.8 * s, saturation=0.8 * s, hue=min(0.5, 0.2 * s),
                       jitter_p=0.8, grayscale_p=0.2, blur_p=0.5 if blur else 0.0)


class CCObjective:
    """Mixin (before ``DeepMethod``): CC's ``training_loss`` and ``cluster_logits`` over a
    network returning ``(z, softmax assignment)``; ``Params`` has ``tau_instance`` and
    ``tau_cluster``."""

    def training_loss(self, model: nn.Module, v1: torch.Tensor, v2: torch.Tensor) -> dict[str, torch.Tensor]:
        z1, c1 = model(v1)
        z2, c2 = model(v2)
        return cc_loss(z1, z2, c1, c2, self.params.tau_instance, self.params.tau_cluster)

    def cluster_logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)[1]
