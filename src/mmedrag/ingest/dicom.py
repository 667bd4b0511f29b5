"""DICOM reading: bounded, de-identified by profile before anything leaves this module.

The pixel count (rows × columns × frames × samples) is checked against the loader's limit
before any pixel is decoded, and a deflated data set is inflated only up to a bound. Pixels are
rescaled (slope/intercept), windowed (the file's window centre/width, else min–max) to 8 bits,
inverted for MONOCHROME1, and rendered as a PIL image (the middle frame of a volume). Header
tags go through ``ingest.deid`` (PS3.15 Annex E basic profile) and only an allow-list of
non-identifying tags is returned. Files declaring ``BurnedInAnnotation = YES`` are refused unless
``allow_burned_in`` (text in the pixels is not removed).
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmedrag.errors import InputError, InputTooLarge
from mmedrag.ingest.deid import RETAINABLE, deidentify, plain_value
from mmedrag.ingest.limits import DEFAULT_MAX_PIXELS, check_pixels

# Non-identifying tags kept by default (a user's --keep-tags extends this list, after
# ingest.deid.check_keep_tags has refused identifying ones).
DEFAULT_KEEP = ("Modality", "BodyPartExamined", "ViewPosition", "PatientSex", "Rows", "Columns",
                "PhotometricInterpretation", "SliceThickness", "PixelSpacing", "ImageType")
_DEFLATED = "1.2.840.10008.1.2.1.99"


@dataclass
class DicomImage:
    """A rendered 8-bit image and the de-identified, allow-listed tags."""

    image: Image.Image
    tags: dict[str, Any] = field(default_factory=dict)


def deidentified_tags(dataset: Any, keep: tuple[str, ...] = DEFAULT_KEEP) -> dict[str, Any]:
    """Allow-listed tags of ``dataset`` after the de-identification profile, as JSON values."""
    deidentify(dataset, retain=frozenset(keep) & RETAINABLE)
    out: dict[str, Any] = {}
    for keyword in keep:
        if keyword in dataset and keyword != "PixelData":
            value = plain_value(dataset.data_element(keyword))
            if value not in (None, "", []):
                out[keyword] = value
    return out


def window_to_uint8(pixels: np.ndarray, dataset: Any) -> np.ndarray:
    """Rescale, window and invert (MONOCHROME1) one frame to uint8."""
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    if pixels.ndim == 3 and (frames > 1 or pixels.shape[-1] not in (3, 4)):
        pixels = pixels[pixels.shape[0] // 2]  # a multi-frame volume: take the middle frame
    elif pixels.ndim == 4:
        pixels = pixels[pixels.shape[0] // 2]
    arr = pixels.astype(np.float32)
    slope = float(getattr(dataset, "RescaleSlope", 1) or 1)
    intercept = float(getattr(dataset, "RescaleIntercept", 0) or 0)
    arr = arr * slope + intercept
    centre, width = getattr(dataset, "WindowCenter", None), getattr(dataset, "WindowWidth", None)
    if centre is not None and width is not None:
        centre, width = _first(centre), _first(width)
        low, high = centre - width / 2, centre + width / 2
    else:
        low, high = float(arr.min()), float(arr.max())
    scaled = np.zeros_like(arr) if high <= low else np.clip((arr - low) / (high - low), 0, 1)
    if str(getattr(dataset, "PhotometricInterpretation", "")) == "MONOCHROME1":
        scaled = 1.0 - scaled
    return (scaled * 255).round().astype(np.uint8)


def _first(value: Any) -> float:
    """The first of a multi-valued DICOM number (window centre/width), as float."""
    many = hasattr(value, "__len__") and not isinstance(value, str)
    return float(value[0] if many else value)


def _body_offset(data: bytes) -> int:
    """Offset of the data set after the file meta group (explicit VR little endian)."""
    offset = 132
    while offset + 8 <= len(data) and data[offset:offset + 2] == b"\x02\x00":
        vr = data[offset + 4:offset + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR"):
            offset += 12 + int.from_bytes(data[offset + 8:offset + 12], "little")
        else:
            offset += 8 + int.from_bytes(data[offset + 6:offset + 8], "little")
    return offset


def _check_deflate(data: bytes, limit: int, what: str) -> None:
    """Refuse a deflated data set that would inflate past ``limit`` bytes (a zip bomb)."""
    if _DEFLATED.encode() not in data[:4096]:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflater.decompress(data[_body_offset(data):], limit)
    except zlib.error as exc:
        raise InputError(f"deflated DICOM is corrupt: {exc}", path=what) from None
    if inflater.unconsumed_tail:
        raise InputTooLarge(f"deflated DICOM inflates past {limit:,} bytes (refused)", path=what)


def read_dicom(source: str | Path | bytes, keep: tuple[str, ...] = DEFAULT_KEEP,
               max_pixels: int | None = None, allow_burned_in: bool = False,
               what: str | None = None) -> DicomImage:
    """Read a DICOM file (path or bytes) into an 8-bit image and de-identified tags.

    Args:
        source: Path or the file's bytes.
        keep: Tags to return (identifying ones never survive the profile).
        max_pixels: Limit on rows × columns × frames × samples (None: the loader's default).
        allow_burned_in: Accept files that declare BurnedInAnnotation = YES.
        what: Name for error messages (defaults to the path).

    Example:
        >>> dicom = read_dicom("scan.dcm")   # doctest: +SKIP
        >>> "PatientName" in dicom.tags
        False
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    name = what or (str(source) if not isinstance(source, bytes) else "image")
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        _check_deflate(data, limit * 4 + (1 << 20), name)
        dataset = pydicom.dcmread(io.BytesIO(data))
    except InputError:
        raise
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise InputError(f"not a readable DICOM file: {exc}", path=name) from None
    if "PixelData" not in dataset:
        raise InputError("DICOM file has no pixel data", path=name)
    if str(getattr(dataset, "BurnedInAnnotation", "")).upper() == "YES" and not allow_burned_in:
        raise InputError("BurnedInAnnotation is YES: text in the pixels would be stored (it is "
                         "not removed); index it only with --allow-burned-in", path=name)
    try:
        rows, cols = int(dataset.Rows), int(dataset.Columns)
        frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
        samples = int(getattr(dataset, "SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise InputError("DICOM file lacks valid Rows/Columns", path=name) from None
    check_pixels(rows * cols * frames * samples, limit, name,
                 f"{rows}x{cols}x{frames} frames x{samples} samples")
    try:
        arr = window_to_uint8(np.asarray(dataset.pixel_array), dataset)
        image = Image.fromarray(arr).convert("RGB")
    except Exception as exc:  # noqa: BLE001 - codec errors come in many types
        raise InputError(f"cannot decode DICOM pixels: {str(exc)[:120]}", path=name) from None
    return DicomImage(image=image, tags=deidentified_tags(dataset, keep))
