"""Image–report manifests: JSONL or CSV with ``id, image, text, domain, ...meta``.

Image paths are relative to the manifest and must stay inside its folder (a path that leaves it,
absolute or through ``..`` or a symlink, is refused unless under a folder passed in
``allow_outside``). Ids are data, never file names: any text without control characters, up to
``MAX_ID_CHARS``. Field names can be mapped (``text_field="caption"``,
``domain_field="modality"``) so the ecosystem's files load without conversion. Every bad line is
reported with file and line; ``on_error="fail"`` stops at the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmedrag.errors import InputError, UsageError
from mmedrag.ingest.rows import iter_rows
from mmedrag.records import Pair, Record, content_id

TEXT_FIELDS = ("text", "report", "caption", "findings", "content")
MAX_ID_CHARS = 512


@dataclass
class ReadResult:
    records: list[Record] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: int = 0


_rows = iter_rows  # the name the rest of the project imports


def read_manifest(path: str | Path, text_field: str | None = None, domain_field: str = "domain",
                  default_domain: str = "", on_error: str = "skip",
                  image_field: str = "image",
                  allow_outside: tuple[str | Path, ...] = ()) -> ReadResult:
    """Read a manifest into Pair records (image paths resolved against the manifest folder).

    Args:
        allow_outside: Folders outside the manifest's own from which images may be read.

    Example:
        >>> result = read_manifest("pairs.jsonl", text_field="caption", domain_field="modality")
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: manifest not found")
    roots = (path.parent.resolve(), *(Path(p).resolve() for p in allow_outside))
    result = ReadResult()
    seen: set[str] = set()
    for number, row, error in _rows(path):
        try:
            if error:
                raise InputError(error, path=str(path), line=number)
            assert row is not None
            record = _pair_from_row(row, path, number, text_field, domain_field,
                                    default_domain, image_field, roots)
            if record.id in seen:
                raise InputError(f"duplicate id {record.id!r}", path=str(path), line=number,
                                 field="id")
            seen.add(record.id)
            result.records.append(record)
        except InputError as exc:
            if on_error == "fail":
                raise
            result.skipped += 1
            result.errors.append(str(exc))
    return result


def _pair_from_row(row: dict[str, Any], path: Path, number: int, text_field: str | None,
                   domain_field: str, default_domain: str, image_field: str,
                   roots: tuple[Path, ...] = ()) -> Pair:
    field_name = text_field or next((f for f in TEXT_FIELDS if f in row), None)
    if field_name is None or field_name not in row:
        raise InputError(f"no text field (looked for {text_field or ', '.join(TEXT_FIELDS)})",
                         path=str(path), line=number)
    text = row.get(field_name)
    if not isinstance(text, str) or not text.strip():
        raise InputError("empty report/text", path=str(path), line=number, field=field_name)
    image = row.get(image_field) or ""
    if image and not isinstance(image, str):
        raise InputError("image must be a path string", path=str(path), line=number,
                         field=image_field)
    image_path = ""
    if image:
        try:
            resolved = (path.parent / image).resolve()
        except (OSError, ValueError, RuntimeError):
            raise InputError(f"invalid image path {image[:200]!r}", path=str(path), line=number,
                             field=image_field) from None
        if not inside(resolved, roots or (path.parent.resolve(),)):
            raise InputError(f"image path leaves the manifest's folder: {image[:200]!r} "
                             "(allow a folder with --allow-outside PATH)", path=str(path),
                             line=number, field=image_field)
        if not resolved.exists():
            raise InputError(f"image file not found: {image}", path=str(path), line=number,
                             field=image_field)
        image_path = str(resolved)
    domain = str(row.get(domain_field) or default_domain or "")
    reserved = {"id", image_field, field_name, "domain"}
    meta = {k: v for k, v in row.items() if k not in reserved and isinstance(
        v, (str, int, float, bool, list, dict))}
    meta.setdefault("modality", row.get("modality", domain))
    meta["_source"], meta["_line"] = str(path), number
    rid = valid_id(row.get("id") or content_id(str(image), text, prefix="p"), path, number)
    return Pair(id=rid, text=text.strip(), image=image_path, domain=domain, meta=meta)


def inside(path: Path, roots: tuple[Path, ...]) -> bool:
    """True when the resolved ``path`` is one of ``roots`` or below one of them."""
    return any(path == root or root in path.parents for root in roots)


def valid_id(value: Any, path: Path, number: int) -> str:
    """A record id as text: non-empty, at most MAX_ID_CHARS, no control characters.

    Ids are never used as file names (stored images are named by a digest), so slashes and dots
    are plain data.
    """
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise InputError("id must be a string or an integer", path=str(path), line=number,
                         field="id")
    rid = str(value)
    if not rid.strip() or len(rid) > MAX_ID_CHARS or any(ord(c) < 32 or ord(c) == 127 for c in rid):
        raise InputError(f"invalid id {rid[:80]!r}: 1 to {MAX_ID_CHARS} characters, no control "
                         "characters", path=str(path), line=number, field="id")
    return rid
