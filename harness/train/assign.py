"""Differentiable cluster assignments shared by clustering methods.

- ``gumbel_softmax``: the Gumbel-softmax (Concrete) relaxation of a categorical draw
  (Jang et al. 2017; Maddison et al. 2017), with the noise switchable by a tensor so a
  CUDA-graphed step can turn it off without re-capture;
- ``simplex_centres``: K unit vectors with pairwise cosine -1/(K-1), the "max-Mahalanobis
  centres" (Pang et al., ICLR 2020) TCC's author initialises cluster embeddings with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gumbel_noise", "gumbel_softmax", "simplex_centres"]


def gumbel_noise(like: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) draws shaped like ``like`` (float32): -log(E), E ~ Exp(1)."""
    e = torch.empty_like(like, dtype=torch.float32).exponential_()
    return -e.clamp_min_(torch.finfo(torch.float32).tiny).log()


def gumbel_softmax(logits: torch.Tensor, tau: float, noise: torch.Tensor | None = None,
                   noise_scale: torch.Tensor | float = 1.0, hard: bool = False) -> torch.Tensor:
    """softmax((logits + s * g) / tau) over the last dimension, in float32.

    ``noise`` is the Gumbel draw g (drawn here when None); ``noise_scale`` s (a float or a
    0-d tensor: 0 turns the noise off, leaving softmax(logits / tau)).  ``hard``: one-hot
    of the argmax in the forward pass, the soft sample's gradient (straight-through).
    """
    logits = logits.float()
    if noise is None:
        noise = gumbel_noise(logits)
    y = ((logits + noise_scale * noise.float()) / tau).softmax(dim=-1)
    if hard:
        y = F.one_hot(y.argmax(dim=-1), y.shape[-1]).to(y.dtype) + y - y.detach()
    return y


def simplex_centres(k: int, dim: int) -> torch.Tensor:
    """(k, dim) unit rows with <c_i, c_j> = -1/(k-1) for i != j (needs k >= 2 and dim >= k - 1).

    Built row by row (Gram-Schmidt-like), as the max-Mahalanobis-centre construction: row i
    takes the coordinates that give the required inner products with rows 0..i-1 and puts
    the rest of its unit norm on coordinate i.
    """
    if k < 2 or dim < k - 1:
        raise ValueError(f"need k >= 2 and dim >= k - 1, got k={k}, dim={dim}")
    c = torch.zeros(k, dim, dtype=torch.float64)
    c[0, 0] = 1.0
    for i in range(1, k):
        for j in range(i):
            c[i, j] = -(1.0 / (k - 1) + c[i] @ c[j]) / c[j, j]
        if i < dim:
            c[i, i] = (1.0 - (c[i] ** 2).sum()).clamp_min(0).sqrt()
    return c.float()
