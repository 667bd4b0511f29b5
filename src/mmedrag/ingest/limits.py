"""The pixel limit every image decoder checks before decoding (a leaf of ``ingest``: both the image
loader and the DICOM reader use it).

Example:
    >>> check_pixels(100, 1000, "x.png")
"""

from __future__ import annotations

from mmedrag.errors import InputTooLarge

DEFAULT_MAX_PIXELS = 64_000_000


def check_pixels(count: int, limit: int | None, what: str, shape: str = "") -> None:
    """Raise InputError when ``count`` pixels exceed ``limit`` (None: the default limit)."""
    limit = DEFAULT_MAX_PIXELS if limit is None else limit
    if count > limit:
        raise InputTooLarge(f"image is {shape or count} pixels ({count:,}), over the limit of "
                            f"{limit:,}", path=what)
