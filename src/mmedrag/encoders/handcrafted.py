"""Weight-free image features for domain identification (CT / MR / X-ray / body region).

Grey-level histograms, a small thumbnail, gradient-orientation histograms on a grid (HOG-like),
the shape of the non-black area and colourfulness (468 values, also fed to the image tower),
plus full-resolution scanner cues for the router (noise texture, clipping from CT windowing).
Nothing is downloaded; features are deterministic, so a classifier trained on them is
reproducible anywhere.

Example:
    >>> from PIL import Image
    >>> HandcraftedImageFeatures().encode_images([Image.new("L", (64, 48), 128)]).shape
    (1, 557)
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.errors import MmedragError
from mmedrag.ingest.images import load_image

SIZE = 64


def _letterbox(image: Any, size: int) -> tuple[np.ndarray, float, float]:
    rgb = load_image(image)
    arr = np.asarray(rgb, dtype=np.float32)
    colour = float(np.abs(arr - arr.mean(2, keepdims=True)).mean() / 255.0)
    grey = rgb.convert("L")
    width, height = grey.size
    scale = size / max(width, height)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    canvas = np.zeros((size, size), dtype=np.float32)
    top, left = (size - new[1]) // 2, (size - new[0]) // 2
    canvas[top:top + new[1], left:left + new[0]] = np.asarray(grey.resize(new), np.float32) / 255
    return canvas, width / height, colour


def _orientation_histograms(grey: np.ndarray, cells: int = 4, bins: int = 8) -> np.ndarray:
    gy, gx = np.gradient(grey)
    magnitude = np.hypot(gx, gy)
    angle = (np.arctan2(gy, gx) % np.pi) / np.pi * bins
    index = np.minimum(angle.astype(int), bins - 1)
    step = grey.shape[0] // cells
    out = np.zeros((cells, cells, bins), dtype=np.float32)
    for cy in range(cells):
        for cx in range(cells):
            sl = (slice(cy * step, (cy + 1) * step), slice(cx * step, (cx + 1) * step))
            out[cy, cx] = np.bincount(index[sl].ravel(), magnitude[sl].ravel(), minlength=bins)
    out /= np.linalg.norm(out, axis=2, keepdims=True) + 1e-6
    return out.ravel()


def image_features(image: Any, size: int = SIZE) -> np.ndarray:
    """The feature vector of one image (path, bytes or PIL image)."""
    grey, aspect, colour = _letterbox(image, size)
    inside = grey > 0.02
    hist_all = np.histogram(grey, bins=32, range=(0, 1))[0] / grey.size
    values = grey[inside] if inside.any() else grey.ravel()
    hist_in = np.histogram(values, bins=32, range=(0, 1))[0] / max(1, values.size)
    quantiles = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])
    thumb = grey.reshape(16, size // 16, 16, size // 16).mean((1, 3)).ravel()
    rows, cols = inside.mean(1), inside.mean(0)
    shape = [np.log(aspect), inside.mean(), rows.std(), cols.std(), colour,
             float(values.mean()), float(values.std())]
    dx = np.abs(np.diff(grey, axis=1))[:, :-1][inside[:, 1:-1]] if inside.sum() > 2 else np.zeros(1)
    texture = np.histogram(dx, bins=8, range=(0, 0.5))[0] / max(1, dx.size)
    return np.concatenate([np.sqrt(hist_all), np.sqrt(hist_in), quantiles, thumb,
                           _orientation_histograms(grey), shape, texture]).astype(np.float32)


def native_features(image: Any) -> np.ndarray:
    """Full-resolution cues of the scanner and windowing (89 values): a 64-bin grey histogram,
    Laplacian (noise/texture) histogram, clipping at black/white, flat runs, grey-level count."""
    grey = np.asarray(load_image(image).convert("L"), dtype=np.float32)
    inside = grey > 5
    values = grey[inside] if inside.any() else grey.ravel()
    core = inside[1:-1, 1:-1]
    lap = np.abs(4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2]
                 - grey[1:-1, 2:])[core]
    lap = lap if lap.size else np.zeros(1, np.float32)
    hist = np.histogram(values, bins=64, range=(0, 256))[0] / max(1, values.size)
    lap_hist = np.histogram(lap, bins=16, range=(0, 128))[0] / lap.size
    dx = np.abs(np.diff(grey, axis=1))[inside[:, 1:]]
    clipping = [(grey >= 250).mean(), (grey >= 254).mean(), (grey <= 1).mean(),
                (grey <= 5).mean(), inside.mean(), len(np.unique(grey.astype(np.uint8))) / 256]
    extra = [float((dx == 0).mean()) if dx.size else 0.0, np.log1p(lap.mean()),
             np.log1p(np.median(lap))]
    return np.concatenate([np.sqrt(hist), np.sqrt(lap_hist), clipping, extra]).astype(np.float32)


@functools.lru_cache(maxsize=8192)
def _file_features(path: str, mtime_ns: int, native: bool) -> np.ndarray:
    """Features of an image file, cached by path and modification time (the router and the
    tower both use them, often for the same files)."""
    features = image_features(path)
    if native:
        features = np.concatenate([features, native_features(path)])
    features.setflags(write=False)
    return features


class HandcraftedImageFeatures:
    """Feature extractor with the Encoder shape (``encode_images``), for linear probes.

    The vectors are not normalised: they are features for a classifier, not a search space.
    """

    def __init__(self, native: bool = True) -> None:
        self.native = native
        self.name = "handcrafted" if native else "handcrafted-small"
        self.version = "2"
        self.dim = 468 + (89 if native else 0)

    def _one(self, image: Any) -> np.ndarray:
        if isinstance(image, (str, Path)) and Path(image).is_file():
            return _file_features(str(image), Path(image).stat().st_mtime_ns, self.native)
        small = image_features(image)
        return np.concatenate([small, native_features(image)]) if self.native else small

    def encode_images(self, images: list[Any]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._one(image) for image in images])

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        raise MmedragError("hand-crafted image features have no text side")

    def save(self, directory: str | Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "dim": self.dim}


class SmallHandcraftedImageFeatures(HandcraftedImageFeatures):
    """The 468 hand-crafted values without the full-resolution scanner cues
    (``handcrafted-small``: the tower's fixed inputs)."""

    def __init__(self) -> None:
        super().__init__(native=False)
