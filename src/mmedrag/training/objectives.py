"""Training-time parts of the image tower: batch augmentation, the learnable temperature and the
symmetric InfoNCE loss (the network itself is :class:`mmedrag.encoders.tower.ImageTower`).

Example:
    >>> import torch
    >>> emb = torch.nn.functional.normalize(torch.ones(4, 8), dim=-1)
    >>> round(float(info_nce(emb, emb, 1.0)), 4) == round(float(torch.log(torch.tensor(4.0))), 4)
    True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def augment(pixels: torch.Tensor, generator: torch.Generator | None = None,
            strength: float = 1.0) -> torch.Tensor:
    """Random affine (scale, rotation, shift), contrast/gamma jitter and cut-out, batched.

    No horizontal flip: reports name sides, and a flip would make "left" wrong.
    """
    n = pixels.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    s = strength
    scale = uniform(1 - 0.25 * s, 1 + 0.1 * s)
    angle = uniform(-12 * s, 12 * s) * math.pi / 180
    tx, ty = uniform(-0.1 * s, 0.1 * s), uniform(-0.1 * s, 0.1 * s)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    out = F.grid_sample(pixels, grid, align_corners=False, padding_mode="zeros")
    gamma = torch.exp(uniform(-0.3 * s, 0.3 * s)).view(n, 1, 1, 1)
    contrast = uniform(1 - 0.2 * s, 1 + 0.2 * s).view(n, 1, 1, 1)
    bright = uniform(-0.08 * s, 0.08 * s).view(n, 1, 1, 1)
    out = (out.clamp(1e-4, 1) ** gamma) * contrast + bright
    size = pixels.shape[-1]
    cut = max(1, int(size * 0.25 * s))
    ys = torch.randint(0, size - cut + 1, (n,), generator=generator)
    xs = torch.randint(0, size - cut + 1, (n,), generator=generator)
    mask = torch.ones_like(out)
    for i in range(n):
        if torch.rand(1, generator=generator).item() < 0.5:
            mask[i, :, ys[i]:ys[i] + cut, xs[i]:xs[i] + cut] = 0
    return (out * mask).clamp(0, 1)


class LogitScale(nn.Module):
    """Learnable inverse temperature ``exp(t)``, initialised to 1/0.07 and capped at 100."""

    def __init__(self, initial: float = 1 / 0.07) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(initial)))

    def forward(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=100.0)


def info_nce(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor | float,
             positives: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE: ``(L_img + L_txt) / 2`` over the in-batch similarity matrix.

    ``positives[i, j] > 0`` marks text j as a (weighted) match of image i, for captions that
    repeat across images of a case; the default is the identity (one positive per row).
    With all embeddings identical and identity positives the loss equals ``log N``.
    """
    logits = scale * image_emb @ text_emb.T
    if positives is None:
        positives = torch.eye(logits.shape[0], device=logits.device)
    row = positives / positives.sum(1, keepdim=True).clamp(min=1e-12)
    col = positives.T / positives.T.sum(1, keepdim=True).clamp(min=1e-12)
    loss_img = -(row * F.log_softmax(logits, dim=1)).sum(1).mean()
    loss_txt = -(col * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    return (loss_img + loss_txt) / 2


def positive_matrix(texts: list[str], groups: list[str] | None = None,
                    group_weight: float = 0.0) -> torch.Tensor:
    """1 where captions are identical, ``group_weight`` where only the case matches, else 0."""
    n = len(texts)
    pos = torch.zeros(n, n)
    for i in range(n):
        for j in range(n):
            if texts[i] == texts[j]:
                pos[i, j] = 1.0
            elif groups is not None and group_weight and groups[i] == groups[j]:
                pos[i, j] = group_weight
    return pos
