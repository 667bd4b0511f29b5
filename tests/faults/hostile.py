"""Builders of hostile and damaged inputs shared by the ingest, server and fault suites."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SAMPLE = Path(__file__).resolve().parents[2] / "src" / "mmedrag" / "data" / "vqarad_sample"
TINY_CONFIG = ("index:\n  text_encoder: {name: hashing}\n"
               "  image_encoder: {name: thumbnail}\n")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A real 1-bit grey PNG of ``width`` × ``height`` zeros (a few dozen KB compressed)."""
    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body)
            + _chunk(b"IEND", b""))


def png_16bit() -> bytes:
    arr = np.tile(np.linspace(0, 4095, 64), (64, 1)).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="PNG")
    return buffer.getvalue()


def cmyk_jpeg(icc: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    Image.new("CMYK", (48, 40), (10, 200, 30, 5)).save(buffer, format="JPEG",
                                                     **({"icc_profile": icc} if icc else {}))
    return buffer.getvalue()


def multi_frame_tiff() -> bytes:
    frames = [Image.new("L", (32, 32), value) for value in (0, 128, 255)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def palette_transparent_png() -> bytes:
    image = Image.new("P", (24, 24), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=0)
    return buffer.getvalue()


def exif_rotated_jpeg() -> bytes:
    """A 40 × 20 JPEG whose EXIF says 'rotate 90°' (so it loads as 20 × 40)."""
    image = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


GOOD_EXTRA = ("sixteen", "cmyk", "multiframe", "palette", "exif", "../../ESCAPED_OUTSIDE")


def hostile_manifest(folder: Path) -> tuple[Path, list[str], list[int]]:
    """Write a manifest mixing good pairs with every hostile case; return (path, ids of the
    records that must be indexed, line numbers that must be named as errors)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = sorted((SAMPLE / "images").iterdir())
    for n in range(5):
        shutil.copy(images[n], folder / f"good{n}.jpg")
    (folder / "fake.png").write_text("this is not an image")
    (folder / "truncated.jpg").write_bytes(images[5].read_bytes()[:300])
    (folder / "bomb.png").write_bytes(png_bomb())
    (folder / "sixteen.png").write_bytes(png_16bit())
    (folder / "cmyk.jpg").write_bytes(cmyk_jpeg())
    (folder / "multi.tif").write_bytes(multi_frame_tiff())
    (folder / "palette.png").write_bytes(palette_transparent_png())
    (folder / "rotated.jpg").write_bytes(exif_rotated_jpeg())
    (folder / "nopix.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    rows: list[object] = [{"id": f"good{n}", "image": f"good{n}.jpg", "text": f"normal study {n}",
                           "domain": "CHEST"} for n in range(5)]
    good = [f"good{n}" for n in range(5)] + list(GOOD_EXTRA)
    rows += [
        {"id": "sixteen", "image": "sixteen.png", "text": "sixteen bit ramp"},
        {"id": "cmyk", "image": "cmyk.jpg", "text": "cmyk photo"},
        {"id": "multiframe", "image": "multi.tif", "text": "three frames"},
        {"id": "palette", "image": "palette.png", "text": "palette with transparency"},
        {"id": "exif", "image": "rotated.jpg", "text": "rotated by exif"},
        {"id": "../../ESCAPED_OUTSIDE", "image": "good0.jpg", "text": "traversal id"},
    ]
    bad_start = len(rows) + 1
    rows += [
        "{not json",
        {"id": "empty", "image": "good0.jpg", "text": "   "},
        {"id": "missing", "image": "nowhere.jpg", "text": "x"},
        {"id": "good1", "image": "good2.jpg", "text": "duplicate id"},
        {"id": "fake", "image": "fake.png", "text": "text file named png"},
        {"id": "trunc", "image": "truncated.jpg", "text": "truncated jpeg"},
        {"id": "bomb", "image": "bomb.png", "text": "decompression bomb"},
        {"id": "nopix", "image": "nopix.dcm", "text": "dicom without pixels"},
        {"id": "outside", "image": "../../../../etc/passwd", "text": "image path traversal"},
    ]
    bad_lines = list(range(bad_start, len(rows) + 1))
    path = folder / "hostile.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    (folder / "config.yaml").write_text(TINY_CONFIG)
    return path, good, bad_lines
