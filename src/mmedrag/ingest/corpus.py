"""Text corpora in the MedRAG JSONL format (``id, title, content``), chunked."""

from __future__ import annotations

from pathlib import Path

from mmedrag.errors import InputError
from mmedrag.ingest.chunking import chunk_text
from mmedrag.ingest.manifest import ReadResult, _rows
from mmedrag.records import Document


def read_corpus(path: str | Path, chunk_tokens: int = 100, chunk_overlap: int = 20,
                domain: str = "text", content_field: str = "content", title_field: str = "title",
                on_error: str = "skip") -> ReadResult:
    """Read and chunk a corpus; chunk ids are ``<id>#<n>`` (just ``<id>`` for a single chunk).

    Example:
        >>> result = read_corpus("medquad.jsonl", chunk_tokens=100)
    """
    path = Path(path)
    result = ReadResult()
    seen: set[str] = set()
    for number, row, error in _rows(path):
        try:
            if error:
                raise InputError(error, path=str(path), line=number)
            assert row is not None
            content = row.get(content_field) or row.get("contents") or row.get("text")
            if not isinstance(content, str) or not content.strip():
                raise InputError("empty content", path=str(path), line=number, field=content_field)
            rid = str(row.get("id") or "")
            if not rid:
                raise InputError("missing id", path=str(path), line=number, field="id")
            if rid in seen:
                raise InputError(f"duplicate id {rid!r}", path=str(path), line=number, field="id")
            seen.add(rid)
            title = str(row.get(title_field) or "")
            chunks = chunk_text(content, chunk_tokens, chunk_overlap) if chunk_tokens else [content]
            meta = {k: v for k, v in row.items() if k not in ("id", content_field, title_field)
                    and isinstance(v, (str, int, float, bool))}
            for n, chunk in enumerate(chunks):
                cid = rid if len(chunks) == 1 else f"{rid}#{n}"
                result.records.append(Document(id=cid, text=chunk, title=title,
                                               domain=str(row.get("domain") or domain),
                                               meta={**meta, "doc_id": rid, "chunk": n}))
        except InputError as exc:
            if on_error == "fail":
                raise
            result.skipped += 1
            result.errors.append(str(exc))
    return result
