"""Read RAG-PT preference files back into TRL rows for a given model (text-only or VLM).

The builder writes ``cm.jsonl``, ``oa1.jsonl``, ``oa2.jsonl`` and ``pairs.jsonl`` (all of them)
in TRL's conversational DPO format plus provenance (``subset``, ``sample_id``, ``meta``), with
image paths relative to the data folder. For a text-only model the image parts of the prompt
are dropped, and cm pairs, which differ *only* in the image, are left out: a model that cannot
see the image cannot learn from them (the caller reports how many were left out).

Example:
    >>> data = read_pairs("prefs/")                              # doctest: +SKIP
    >>> rows, skipped = trl_rows(data, subsets=("oa1", "oa2"), vision=False)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmedrag.errors import InputError, UsageError
from mmedrag.ingest.jsonl import iter_jsonl

PAIR_FILES = {"cm": "cm.jsonl", "oa1": "oa1.jsonl", "oa2": "oa2.jsonl"}
REQUIRED = ("prompt", "chosen", "rejected")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a bad line names the file and line."""
    rows: list[dict[str, Any]] = []
    for number, row in iter_jsonl(path):
        for name in REQUIRED:
            if name not in row:
                raise InputError("missing field", path=str(path), line=number, field=name)
        rows.append(row)
    return rows


def read_pairs(directory: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Pairs per subset from a builder output folder (or a single JSONL file, split by subset)."""
    path = Path(directory)
    if path.is_file():
        rows = read_jsonl(path)
        grouped: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            grouped.setdefault(str(row.get("subset", "mixed")), []).append(row)
        return grouped
    if not path.is_dir():
        raise UsageError(f"{path}: preference data not found (expected a folder from "
                         "`mmedrag prefs build` or a JSONL file)")
    found = {subset: read_jsonl(path / name) for subset, name in PAIR_FILES.items()
             if (path / name).exists()}
    if not found and (path / "pairs.jsonl").exists():
        return read_pairs(path / "pairs.jsonl")
    if not found:
        raise UsageError(f"{path}: no cm.jsonl, oa1.jsonl, oa2.jsonl or pairs.jsonl")
    return found


def _text_only(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for message in messages:
        content = message.get("content", "")
        if isinstance(content, list):
            content = "\n".join(part.get("text", "") for part in content
                                if isinstance(part, dict) and part.get("type") == "text")
        out.append({"role": message.get("role", "user"), "content": content})
    return out


def _resolve(images: list[str], base: Path | None) -> list[str]:
    if base is None:
        return list(images)
    return [str(p if Path(p).is_absolute() else base / p) for p in images]


def trl_rows(data: dict[str, list[dict[str, Any]]], subsets: tuple[str, ...], vision: bool,
             base: Path | None = None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """TRL rows for ``subsets``; returns (rows, {reason: count} of pairs left out).

    Args:
        data: pairs per subset (from :func:`read_pairs`).
        subsets: which subsets to include.
        vision: the model sees images (keep ``images``/``rejected_images``); else text only.
        base: folder that relative image paths are resolved against.
    """
    rows: list[dict[str, Any]] = []
    skipped: dict[str, int] = {}
    for subset in subsets:
        for row in data.get(subset, []):
            differs_only_in_image = row.get("rejected_images") is not None and \
                _text_only(row["chosen"]) == _text_only(row["rejected"])
            if not vision and differs_only_in_image:
                skipped["image-only difference (text-only model)"] = \
                    skipped.get("image-only difference (text-only model)", 0) + 1
                continue
            if vision:
                side = row.get("rejected_images")
                out = {"prompt": row["prompt"], "chosen": row["chosen"],
                       "rejected": row["rejected"],
                       "images": _resolve(row.get("images") or [], base),
                       # the same columns on every row (mixed stages hold cm and oa pairs)
                       "rejected_images": _resolve(side, base) if side is not None else None}
            else:
                out = {"prompt": _text_only(row["prompt"]), "chosen": _text_only(row["chosen"]),
                       "rejected": _text_only(row["rejected"])}
            rows.append(out)
    return rows, skipped
