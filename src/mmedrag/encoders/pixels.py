"""Letterboxed grey pixels: the fixed-size input of the project's image networks.

Example:
    >>> from PIL import Image
    >>> letterbox(Image.new("L", (80, 40), 200), 32).shape
    (32, 32)
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from mmedrag.ingest.images import load_image


def letterbox(image: Any, size: int) -> np.ndarray:
    """Grey ``size``×``size`` uint8 array: the image scaled to fit, centred on black."""
    grey = load_image(image).convert("L")
    width, height = grey.size
    scale = size / max(width, height)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    grey = grey.resize(new)
    canvas = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - new[1]) // 2, (size - new[0]) // 2
    canvas[top:top + new[1], left:left + new[0]] = np.asarray(grey)
    return canvas


def preload_images(sources: list[Any], size: int = 128, workers: int = 2) -> np.ndarray:
    """Letterboxed grey pixels of each source (an object with ``.image``, such as a labelled row,
    a path, bytes or a PIL image): (n, size, size) uint8."""
    items = [getattr(s, "image", s) for s in sources]
    if not items:
        return np.zeros((0, size, size), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        arrays = list(pool.map(lambda item: letterbox(item, size), items))
    return np.stack(arrays)
