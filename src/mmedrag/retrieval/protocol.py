"""The Retriever contract."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from mmedrag.records import Hit, Query


@runtime_checkable
class Retriever(Protocol):
    """``retrieve`` returns up to k hits, best first; each Hit names its retriever."""

    name: str

    def retrieve(self, query: Query, k: int) -> list[Hit]: ...


@runtime_checkable
class Reranker(Protocol):
    def rerank(self, query: Query, hits: list[Hit], k: int | None = None) -> list[Hit]: ...
