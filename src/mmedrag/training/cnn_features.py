"""A small CNN trained end-to-end on the router's labelled training images, used as features.

The ``cnn`` feature option of the domain router: a six-stage grey-scale CNN (about 1 M weights,
128 px letterboxed input) trained on the *training split only* with geometric augmentation (mild
zoom, shift, rotation, mirror), then frozen; its pooled penultimate activations, averaged over the
image and its mirror, feed the router's calibrated linear probe. Intensities are never jittered:
the grey levels a scanner and its window produce are the signal (an earlier recipe with gamma and
contrast jitter at 80 px reached 0.84 on held-out MedPix cases; this one about 0.93).
It learns the cues hand-crafted statistics miss (CT: bright bone and black air through a fixed
window, round field of view, table; MR: bias-field shading, no table, different noise).

Example:
    >>> model = train_cnn(pixels, labels, epochs=2)               # doctest: +SKIP
    >>> save_cnn(model, labels_sorted, "router/cnn.pt")           # doctest: +SKIP
    >>> from mmedrag.encoders.cnn import CnnFeatures                  # doctest: +SKIP
    >>> CnnFeatures("router/cnn.pt").encode_images(["scan.png"]).shape   # doctest: +SKIP
    (1, 160)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.encoders.cnn import FORMAT, INPUT, PRELOAD, STEM, WIDTHS, network

__all__ = ["PRELOAD", "save_cnn", "train_cnn"]


def _augment(batch: Any, generator: Any) -> Any:
    """Zoom (0.85-1.15), shift (±10 %), rotation (±10°) and mirror in one affine warp."""
    import torch
    import torch.nn.functional as F

    n = batch.shape[0]
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    scale = 0.85 + 0.3 * rand(n)
    angle = (rand(n) - 0.5) * math.radians(20)
    flip = torch.where(rand(n) < 0.5, -1.0, 1.0)
    tx, ty = (rand(n) - 0.5) * 0.2, (rand(n) - 0.5) * 0.2
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos * scale * flip, -sin * scale, tx], 1),
                         torch.stack([sin * scale * flip, cos * scale, ty], 1)], 1)
    grid = F.affine_grid(theta, (n, 1, INPUT, INPUT), align_corners=False)
    return F.grid_sample(batch, grid, align_corners=False, padding_mode="zeros")


def train_cnn(pixels: np.ndarray, labels: list[str], epochs: int = 30, batch_size: int = 48,
              seed: int = 0, progress: bool = False) -> tuple[Any, list[str]]:
    """Train the CNN on letterboxed grey ``pixels`` (n, 128, 128) uint8; returns (model, classes).

    Class-balanced cross-entropy with label smoothing, AdamW with a one-cycle schedule (peak
    3e-3); two CPU threads. About 8 s an epoch for 1,650 images on 2 cores.
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    torch.set_num_threads(2)
    torch.manual_seed(seed)
    classes = sorted(set(labels))
    target = torch.tensor([classes.index(label) for label in labels])
    counts = torch.bincount(target, minlength=len(classes)).float()
    weights = counts.sum() / (len(classes) * counts)
    images = torch.as_tensor(pixels, dtype=torch.float32).unsqueeze(1) / 255.0
    model = network(len(classes))
    steps = epochs * math.ceil(len(labels) / batch_size)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(range(epochs), desc="router cnn", unit="epoch", disable=not progress)
    for _epoch in bar:
        order = torch.randperm(len(labels), generator=generator)
        total = 0.0
        for start in range(0, len(labels), batch_size):
            idx = order[start:start + batch_size]
            logits = model["head"](model["trunk"](_augment(images[idx], generator)))
            loss = F.cross_entropy(logits, target[idx], weight=weights, label_smoothing=0.05)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        bar.set_postfix(loss=f"{total / len(labels):.3f}")
    model.eval()
    return model, classes


def save_cnn(model: Any, classes: list[str], path: str | Path) -> None:
    """Save the weights and class names (``torch.save`` of plain tensors)."""
    import torch

    torch.save({"format": FORMAT, "classes": classes, "widths": list(WIDTHS),
                "stem": STEM, "input": INPUT,
                "state": model.state_dict()}, Path(path))
