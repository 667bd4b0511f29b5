"""How ingest reads a record's image: bounded, DICOM de-identified, errors naming the line.

Stored images are named by a digest of the record id (``image_file_name``): an id is data and
can never name a path, whatever slashes or dots it holds.

Example:
    >>> image_file_name("../../ESCAPED")
    '0b4b5f3ad1f4d3a0ff2b8f3f7a3d6a69.png'
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmedrag.errors import InputError
from mmedrag.records import Record


def image_file_name(record_id: str) -> str:
    """The stored image's file name: a digest of the id, so no id can name a path."""
    return hashlib.blake2b(record_id.encode("utf-8"), digest_size=16).hexdigest() + ".png"


def check_text(record: Record) -> None:
    """Raise InputError naming the manifest line when the record has no text."""
    if not record.text.strip():
        raise InputError("empty report/text", path=record.meta.get("_source"),
                         line=record.meta.get("_line"), field="text")


@dataclass
class ImageReader:
    """How ingest decodes a record's image: bounded, DICOM de-identified by profile."""

    keep_tags: tuple[str, ...] = ()
    max_pixels: int | None = None
    allow_burned_in: bool = False

    def read(self, record: Record) -> Any:
        """Decode ``record.image``; errors name the manifest line (DICOM tags go to meta)."""
        from mmedrag.ingest.dicom import DEFAULT_KEEP, read_dicom
        from mmedrag.ingest.images import is_dicom, load_image

        try:
            if is_dicom(Path(record.image)):
                dicom = read_dicom(record.image, keep=DEFAULT_KEEP + self.keep_tags,
                                   max_pixels=self.max_pixels,
                                   allow_burned_in=self.allow_burned_in)
                record.meta["dicom"] = dicom.tags
                return dicom.image
            return load_image(record.image, max_pixels=self.max_pixels)
        except InputError as exc:
            if record.meta.get("_source") is None:
                raise
            hint = " (raise it with --max-pixels)" if "over the limit of" in exc.reason else ""
            raise InputError(f"{exc.path}: {exc.reason}{hint}" if exc.path else exc.reason + hint,
                             path=record.meta.get("_source"), line=record.meta.get("_line"),
                             field="image") from None


@dataclass
class IngestSummary:
    """What an ``add`` did: counts and every error with its file and line."""

    added: int = 0
    already_indexed: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    by_domain: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def merge(self, other: IngestSummary) -> None:
        self.added += other.added
        self.already_indexed += other.already_indexed
        self.skipped += other.skipped
        self.errors.extend(other.errors)
        for key, value in other.by_domain.items():
            self.by_domain[key] = self.by_domain.get(key, 0) + value
        self.seconds += other.seconds

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "already_indexed": self.already_indexed,
                "skipped": self.skipped, "errors": self.errors, "by_domain": self.by_domain,
                "seconds": round(self.seconds, 3)}
