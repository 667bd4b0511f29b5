"""The one bounded image loader: PNG/JPEG/other PIL formats and DICOM (via ingest.dicom).

Every image the project decodes — ingest, query images on the CLI, server uploads (multipart,
base64 and DICOM alike), encoders, trainers, the preference builder — goes through
``load_image``. It:

* checks the pixel count *before* decoding (width × height from the header; DICOM rows ×
  columns × frames × samples), against ``max_pixels`` (``DEFAULT_MAX_PIXELS`` = 64 Mpx unless
  given; ``mmedrag index --max-pixels``). A JPEG over the limit is decoded at a reduced scale
  (the codec's 1/2, 1/4 or 1/8 DCT scaling, so memory never holds the full image); any other
  format over the limit is refused. Pillow's own hard limit (2 × ``Image.MAX_IMAGE_PIXELS``,
  about 179 Mpx) still applies on top;
* decodes only the first frame of a multi-frame file, applies EXIF orientation, scales 16-bit
  and float images to 8 bits (min–max), converts CMYK/palette/alpha images to RGB (transparent
  pixels become black);
* turns every decoder failure (bomb, truncation, unknown format, codec errors) into
  ``InputError`` naming the source, which ``--on-error`` then governs per record;
* returns an image with no metadata (``info`` emptied: no ICC profile, EXIF or text chunks), so
  ``save_png`` stores pixels only.

Example:
    >>> from PIL import Image
    >>> load_image(Image.new("L", (4, 3))).size
    (4, 3)
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mmedrag.errors import InputError, InputTooLarge
from mmedrag.ingest.limits import DEFAULT_MAX_PIXELS, check_pixels

DICOM_SUFFIXES = {".dcm", ".dicom"}


def is_dicom(source: Path | bytes) -> bool:
    """True for a ``.dcm``/``.dicom`` path or data with the DICM preamble marker."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source[128:132]) == b"DICM"
    if source.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(source, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def load_image(source: Any, what: str = "image", max_pixels: int | None = None) -> Image.Image:
    """Open ``source`` (path, bytes or PIL image) as a metadata-free RGB image, fully decoded.

    Args:
        source: A path, the file's bytes, or a PIL image (only converted).
        what: Name used in error messages for bytes (a path names itself).
        max_pixels: Pixel limit checked before decoding (None: ``DEFAULT_MAX_PIXELS``).

    Raises:
        InputError: naming the file when it is missing, not an image, over the pixel limit,
            or corrupt.
    """
    if isinstance(source, Image.Image):
        return to_rgb(source)
    data: bytes | Path
    if isinstance(source, (bytes, bytearray)):
        data, name = bytes(source), what
    else:
        path = Path(source)
        name = str(path)
        if not path.exists():
            raise InputError("image file not found", path=name)
        if path.is_dir():
            raise InputError("expected an image file, got a folder", path=name)
        data = path
    if is_dicom(data):
        from mmedrag.ingest.dicom import read_dicom

        return read_dicom(data, max_pixels=max_pixels, what=name).image
    return _decode(data, name, max_pixels)


def _decode(data: bytes | Path, name: str, max_pixels: int | None) -> Image.Image:
    stream = io.BytesIO(data) if isinstance(data, bytes) else open(data, "rb")  # noqa: SIM115
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(stream) as image:
                width, height = image.size
                limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
                if width * height > limit and image.format == "JPEG":
                    scale = 1
                    while scale < 8 and width * height // (scale * scale) > limit:
                        scale *= 2
                    image.draft(image.mode if image.mode in ("L", "RGB") else "RGB",
                                (width // scale, height // scale))
                    width, height = image.size
                check_pixels(width * height, limit, name, f"{width}x{height}")
                image.load()
                return to_rgb(image)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError("not an image file (unrecognised format)", path=name) from None
    except Image.DecompressionBombError:
        hard = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise InputTooLarge(f"image is over the limit of {hard:,} pixels (decompression bomb "
                            "refused)", path=name) from None
    except MemoryError:
        raise InputError("image too large to decode in memory", path=name) from None
    except Exception as exc:  # noqa: BLE001 - decoders raise assorted errors on hostile files
        detail = str(exc).splitlines()[0][:120] if str(exc) else exc.__class__.__name__
        raise InputError(f"corrupt or truncated image: {detail}", path=name) from None
    finally:
        stream.close()


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``image``: EXIF orientation applied, deep/float modes scaled,
    CMYK, palette and alpha converted, and no metadata (``info`` is empty)."""
    if image.getexif().get(0x0112, 1) != 1:
        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(image, dtype=np.float32)
        low, high = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if high <= low else (arr - low) / (high - low)
        image = Image.fromarray((scaled * 255).round().astype(np.uint8), mode="L")
    elif mode == "P" and "transparency" in image.info or mode in ("PA", "LA", "La", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size)
        background.paste(image, mask=image.getchannel("A"))
        image = background
    out = image.convert("RGB") if image.mode != "RGB" else image.copy()
    out.info = {}
    return out


def save_png(image: Image.Image, path: Path) -> None:
    """Write ``image`` as a PNG with pixel data only (no ICC, EXIF or text chunks)."""
    clean = Image.frombytes(image.mode, image.size, image.tobytes())
    clean.save(path, format="PNG")
