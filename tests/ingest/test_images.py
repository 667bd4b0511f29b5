"""The bounded loader: limits before decoding, JPEG downscaling, deep and odd modes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from faults.hostile import multi_frame_tiff, palette_transparent_png, png_16bit
from PIL import Image

from mmedrag.errors import InputTooLarge
from mmedrag.ingest.images import load_image


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_large_jpeg_is_decoded_at_reduced_scale() -> None:
    data = encoded(Image.new("L", (800, 600), 128), "JPEG")
    image = load_image(data, max_pixels=100_000)
    assert image.size == (200, 150) and image.mode == "RGB"  # 1/4 scale: 30,000 pixels


def test_large_png_is_refused_before_decoding() -> None:
    data = encoded(Image.new("L", (800, 600)), "PNG")
    with pytest.raises(InputTooLarge, match=r"upload: image is 800x600 pixels \(480,000\), "
                                            r"over the limit of 100,000"):
        load_image(data, what="upload", max_pixels=100_000)


def test_sixteen_bit_uses_the_full_range_and_frames_and_alpha() -> None:
    grey = np.asarray(load_image(png_16bit()).convert("L"))
    assert grey.min() == 0 and grey.max() == 255  # not clipped to white
    assert load_image(multi_frame_tiff()).getpixel((0, 0)) == (0, 0, 0)  # first frame
    assert load_image(palette_transparent_png()).getpixel((0, 0)) == (255, 0, 0)
