"""Labelled image manifests: rows with image, report, group and labels, and group-level splits.

Rows are read from the ecosystem's JSONL/CSV manifests (``id, image, text|caption, ...``) with the
image path resolved against the manifest. Splits are by *group* (case or patient id) so that no
patient's images land on both sides of a split.

Example:
    >>> rows = read_rows("pairs.jsonl", label_field="modality")      # doctest: +SKIP
    >>> train, val = split_rows(rows, val_fraction=0.1)              # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmedrag.errors import InputError, UsageError
from mmedrag.ingest.manifest import TEXT_FIELDS, _rows

GROUP_FIELDS = ("case_id", "patient_id", "study_id", "case", "patient")


@dataclass
class Row:
    """One labelled image: id, image path, report text, group (case/patient) and raw fields."""

    id: str
    image: Path
    text: str = ""
    group: str = ""
    label: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


def _pick(row: dict[str, Any], wanted: str | None, candidates: tuple[str, ...]) -> str | None:
    if wanted:
        return wanted
    return next((name for name in candidates if name in row), None)


def read_rows(path: str | Path, label_field: str | None = None, text_field: str | None = None,
              group_field: str | None = None, require_text: bool = False) -> list[Row]:
    """Read a manifest into rows; a missing field or image names the file and line.

    Args:
        path: JSONL/CSV manifest; ``image`` paths are relative to it.
        label_field: field that must be present and non-empty (e.g. ``modality``), or None.
        text_field: report field (default: the first of text/report/caption/findings/content).
        group_field: case/patient field (default: case_id, patient_id, ...; else the row id).
        require_text: fail on rows without report text.
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: manifest not found")
    rows: list[Row] = []
    for number, row, error in _rows(path):
        if error or row is None:
            raise InputError(error or "bad row", path=str(path), line=number)
        image = row.get("image")
        if not image:
            raise InputError("missing image path", path=str(path), line=number, field="image")
        image_path = Path(image) if Path(image).is_absolute() else path.parent / image
        row_id = str(row.get("id") or image_path.stem)
        tname = _pick(row, text_field, TEXT_FIELDS)
        text = str(row.get(tname, "") or "") if tname else ""
        if require_text and not text.strip():
            raise InputError("empty report text", path=str(path), line=number,
                             field=tname or "text")
        label = ""
        if label_field:
            label = str(row.get(label_field, "") or "").strip()
            if not label:
                raise InputError("missing label", path=str(path), line=number, field=label_field)
        gname = _pick(row, group_field, GROUP_FIELDS)
        group = str(row.get(gname, "") or "") if gname else ""
        if group_field and gname not in row:
            raise InputError("missing group field", path=str(path), line=number, field=group_field)
        rows.append(Row(row_id, image_path, text, group or row_id, label, row))
    if not rows:
        raise InputError("no rows", path=str(path))
    return rows


def _bucket(group: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


def split_rows(rows: list[Row], val_fraction: float = 0.1, seed: int = 0,
               split_field: str | None = None, train_value: str = "train",
               val_value: str = "dev") -> tuple[list[Row], list[Row]]:
    """Split rows into (train, validation) by group, so no case or patient is on both sides.

    With ``split_field`` the manifest's own split is used (``train_value`` / ``val_value``);
    otherwise each group goes to validation with probability ``val_fraction`` (hash of the
    group id and ``seed``: deterministic and stable when rows are added).
    """
    if split_field:
        train = [r for r in rows if str(r.fields.get(split_field, "")) == train_value]
        val = [r for r in rows if str(r.fields.get(split_field, "")) == val_value]
        if not train or not val:
            raise UsageError(f"split field {split_field!r} has no {train_value!r} or "
                             f"{val_value!r} rows")
        return train, val
    if not 0 < val_fraction < 1:
        raise UsageError(f"validation fraction must be in (0, 1), got {val_fraction}")
    val = [r for r in rows if _bucket(r.group, seed) < val_fraction]
    train = [r for r in rows if _bucket(r.group, seed) >= val_fraction]
    if not train or not val:
        raise UsageError(f"cannot split {len(rows)} rows in {len({r.group for r in rows})} "
                         f"groups with validation fraction {val_fraction}")
    return train, val
