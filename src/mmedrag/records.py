"""Plain records that flow between every part of mmedrag.

Every arrow in the architecture is a plain Python call on these dataclasses. Ids are derived from
content (``content_id``) so that indexing the same data twice yields the same ids and adds nothing.

Example:
    >>> pair = Pair.create(image="img/a.png", text="No acute findings.", domain="radiology")
    >>> pair.id == Pair.create(image="img/a.png", text="No acute findings.", domain="radiology").id
    True
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any


def content_id(*parts: str, prefix: str = "") -> str:
    """Stable id from content: sha1 of the parts joined by a separator, 16 hex chars."""
    digest = hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]
    return f"{prefix}{digest}"


@dataclass
class Record:
    """What a store holds: one retrievable unit (an image–report pair or a text chunk).

    Attributes:
        id: unique id within the index.
        text: the report / caption / chunk text (what text retrieval matches and prompts show).
        image: path of the stored image relative to the index folder, or "" for text-only records.
        domain: routing label (radiology, pathology, CT, MR, ... or "text" for corpora).
        title: optional title (documents).
        meta: any other fields (modality, split, case_id, source, ...). JSON-serialisable.
    """

    id: str
    text: str
    image: str = ""
    domain: str = ""
    title: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        return cls(
            id=str(data["id"]),
            text=str(data.get("text", "")),
            image=str(data.get("image", "") or ""),
            domain=str(data.get("domain", "") or ""),
            title=str(data.get("title", "") or ""),
            meta=dict(data.get("meta") or {}),
        )

    def field_value(self, name: str) -> Any:
        """Value of a filterable field: a top-level attribute or a meta key."""
        if name in ("id", "text", "image", "domain", "title"):
            return getattr(self, name)
        return self.meta.get(name)


@dataclass
class Pair(Record):
    """An image–report pair. ``image`` is the source path until ingestion copies it."""

    @classmethod
    def create(cls, image: str, text: str, domain: str = "", id: str | None = None,
               **meta: Any) -> Pair:
        return cls(id=id or content_id(image, text, prefix="p"), text=text, image=image,
                   domain=domain, meta=dict(meta))


@dataclass
class Document(Record):
    """A text document or chunk in the MedRAG corpus format (id, title, content)."""

    @classmethod
    def create(cls, content: str, title: str = "", id: str | None = None, domain: str = "text",
               **meta: Any) -> Document:
        return cls(id=id or content_id(title, content, prefix="d"), text=content, title=title,
                   domain=domain, meta=dict(meta))


@dataclass
class Query:
    """A question, optionally with an image (path or PIL image) and retrieval filters."""

    text: str = ""
    image: Any = None
    domain: str | None = None
    filters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.text and self.image is None:
            raise ValueError("a Query needs text, an image, or both")


@dataclass
class Hit:
    """One retrieved record with its score and the retriever that found it."""

    record: Record
    score: float
    retriever: str = ""
    rank: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.record.id

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.record.id, "score": float(self.score), "domain": self.record.domain,
                "text": self.record.text, "image": self.record.image, "title": self.record.title,
                "retriever": self.retriever, "rank": self.rank, "meta": self.record.meta,
                "details": self.details}


@dataclass
class Evidence:
    """A numbered piece of evidence shown to the generator and cited as [n] in answers."""

    number: int
    hit: Hit
    cited: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "cited": self.cited, **self.hit.to_dict()}


@dataclass
class Generation:
    """What a generator returns."""

    text: str
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    logprobs: list[float] | None = None
    yes_probability: float | None = None
    model: str = ""


@dataclass
class Answer:
    """The pipeline's result: text, parsed answer, cited evidence and a trace of every stage."""

    question: str
    text: str
    parsed: str | None = None
    evidence: list[Evidence] = field(default_factory=list)
    domain: str | None = None
    selection: dict[str, Any] = field(default_factory=dict)
    trace: list[str] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    image_seen: bool = False
    yes_probability: float | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    used_rag: bool = True
    warnings: list[str] = field(default_factory=list)
    route: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "text": self.text, "parsed": self.parsed,
                "yes_probability": self.yes_probability, "used_rag": self.used_rag,
                "warnings": self.warnings, "route": self.route,
                "messages": self.messages,
                "evidence": [e.to_dict() for e in self.evidence], "domain": self.domain,
                "selection": self.selection, "trace": self.trace, "tokens_in": self.tokens_in,
                "tokens_out": self.tokens_out, "seconds": self.seconds,
                "image_seen": self.image_seen}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)
