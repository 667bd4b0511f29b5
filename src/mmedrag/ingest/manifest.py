"""Image–report manifests: JSONL or CSV with ``id, image, text, domain, ...meta``.

Image paths are relative to the manifest. Field names can be mapped (``text_field="caption"``,
``domain_field="modality"``) so the ecosystem's files load without conversion. Every bad line is
reported with file and line; ``on_error="fail"`` stops at the first.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmedrag.errors import InputError, UsageError
from mmedrag.records import Pair, Record, content_id

TEXT_FIELDS = ("text", "report", "caption", "findings", "content")


@dataclass
class ReadResult:
    records: list[Record] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: int = 0


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """(line number, row or None, error) for each data line of a JSONL or CSV file."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        with open(path, encoding="utf-8", errors="strict") as handle:
            try:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        yield number, None, f"malformed JSON: {exc.msg}"
                        continue
                    if not isinstance(row, dict):
                        yield number, None, "expected a JSON object per line"
                        continue
                    yield number, row, None
            except UnicodeDecodeError:
                yield number + 1, None, "not UTF-8 text"
    elif suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            for number, row in enumerate(reader, start=2):
                if None in row:
                    yield number, None, "more values than header columns"
                    continue
                yield number, dict(row), None
    else:
        raise UsageError(f"{path}: manifest must be .jsonl or .csv/.tsv")


def read_manifest(path: str | Path, text_field: str | None = None, domain_field: str = "domain",
                  default_domain: str = "", on_error: str = "skip",
                  image_field: str = "image") -> ReadResult:
    """Read a manifest into Pair records (image paths resolved against the manifest folder).

    Example:
        >>> result = read_manifest("pairs.jsonl", text_field="caption", domain_field="modality")
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: manifest not found")
    result = ReadResult()
    seen: set[str] = set()
    for number, row, error in _rows(path):
        try:
            if error:
                raise InputError(error, path=str(path), line=number)
            assert row is not None
            record = _pair_from_row(row, path, number, text_field, domain_field,
                                    default_domain, image_field)
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
                   domain_field: str, default_domain: str, image_field: str) -> Pair:
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
        resolved = (path.parent / image).resolve()
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
    rid = str(row.get("id") or content_id(str(image), text, prefix="p"))
    return Pair(id=rid, text=text.strip(), image=image_path, domain=domain, meta=meta)
