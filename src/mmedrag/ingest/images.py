"""Image readers behind one function: PNG/JPEG/other PIL formats and DICOM (via ingest.dicom)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from mmedrag.errors import InputError

DICOM_SUFFIXES = {".dcm", ".dicom"}


def is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def load_image(source: Any, what: str = "image") -> Image.Image:
    """Open ``source`` (path, bytes or PIL image) as an RGB PIL image, fully decoded.

    Raises InputError naming the file when it is missing, not an image, or corrupt.
    """
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, (bytes, bytearray)):
        try:
            image = Image.open(io.BytesIO(source))
            image.load()
            return image.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InputError(f"not a readable image ({exc.__class__.__name__})", path=what) from None
    path = Path(source)
    if not path.exists():
        raise InputError("image file not found", path=str(path))
    if path.is_dir():
        raise InputError("expected an image file, got a folder", path=str(path))
    if is_dicom(path):
        from mmedrag.ingest.dicom import read_dicom

        return read_dicom(path).image
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except UnidentifiedImageError:
        raise InputError("not an image file (unrecognised format)", path=str(path)) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"corrupt or truncated image: {exc}", path=str(path)) from None
