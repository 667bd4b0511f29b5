"""The router's ``cnn`` image features: a small grey-scale CNN trained with the router
(``mmedrag.training.cnn_features``) and loaded here, frozen, at query time.

Its pooled penultimate activations, averaged over the image and its mirror, feed the router's
calibrated linear probe (160 values).

Example:
    >>> CnnFeatures("router/cnn.pt").encode_images(["scan.png"]).shape   # doctest: +SKIP
    (1, 160)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.errors import MmedragError

PRELOAD = 128
INPUT = 128
WIDTHS = (32, 64, 96, 128, 160)
STEM = 24
FORMAT = "mmedrag-cnn/2"


def network(classes: int) -> Any:
    import torch.nn as nn

    layers: list[Any] = [nn.Conv2d(1, STEM, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(STEM), nn.ReLU(inplace=True)]
    channels = STEM
    for number, width in enumerate(WIDTHS):
        stride = 2 if number else 1
        layers += [nn.Conv2d(channels, width, 3, stride=stride, padding=1, bias=False),
                   nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                   nn.Conv2d(width, width, 3, padding=1, bias=False),
                   nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    trunk = nn.Sequential(*layers)
    return nn.ModuleDict({"trunk": trunk, "head": nn.Sequential(nn.Dropout(0.3),
                                                                 nn.Linear(channels, classes))})


def standardise(pixels: Any) -> Any:
    """uint8 (n, H, W) → float (n, 1, INPUT, INPUT) in [0, 1], the whole image resized."""
    import torch
    import torch.nn.functional as F

    batch = torch.as_tensor(np.asarray(pixels), dtype=torch.float32).unsqueeze(1) / 255.0
    if batch.shape[-1] != INPUT:
        batch = F.interpolate(batch, size=(INPUT, INPUT), mode="bilinear", antialias=True,
                              align_corners=False)
    return batch


class CnnFeatures:
    """Frozen features of a CNN saved by :func:`save_cnn` (mirror-averaged, 160 values).

    Example:
        >>> CnnFeatures("models/domain/cnn.pt").encode_images(["scan.png"]).shape  # doctest: +SKIP
        (1, 160)
    """

    def __init__(self, path: str | Path) -> None:
        import torch

        path = Path(path)
        if not path.exists():
            raise MmedragError(f"{path}: CNN weights not found (retrain the router)")
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a torn or foreign file: one clear line, no traceback
            raise MmedragError(f"{path}: not a compatible mmedrag CNN ({error})") from error
        if not isinstance(saved, dict) or saved.get("format") != FORMAT or (
                list(saved["widths"]), saved.get("stem"), saved.get("input")) != (
                list(WIDTHS), STEM, INPUT):
            raise MmedragError(f"{path}: not a compatible mmedrag CNN")
        self.classes: list[str] = list(saved["classes"])
        self.model = network(len(self.classes))
        self.model.load_state_dict(saved["state"])
        self.model.eval()
        self.name = f"cnn:{path.name}"
        self.dim = WIDTHS[-1]

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Features of letterboxed grey pixels (n, H, W) uint8."""
        import torch

        torch.set_num_threads(2)
        with torch.no_grad():
            batch = standardise(pixels)
            feats = (self.model["trunk"](batch) + self.model["trunk"](batch.flip(-1))) / 2
        return feats.numpy().astype(np.float32)

    def encode_images(self, images: list[Any]) -> np.ndarray:
        from mmedrag.encoders.pixels import letterbox

        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_pixels(np.stack([letterbox(image, PRELOAD) for image in images]))
