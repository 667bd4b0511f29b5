"""Dense retrieval over an index's text store (text queries) or image store (image queries)."""

from __future__ import annotations

from typing import Any

from mmedrag.errors import UsageError
from mmedrag.records import Hit, Query
from mmedrag.retrieval.protocol import SearchableIndex


def query_filters(query: Query) -> dict[str, Any] | None:
    filters = dict(query.filters)
    if query.domain:
        filters["domain"] = query.domain
    return filters or None


class DenseRetriever:
    """Embeds the query with the index's own encoder and searches the matching store.

    ``space="text"``: query text → report/document texts. ``space="image"``: query image →
    stored images (image→image). Image→report retrieval with a trained tower lives in
    ``mmedrag.retrieval.image_text`` (it embeds images into the text space).

    Example:
        >>> DenseRetriever(index).retrieve(Query(text="pleural effusion"), k=5)  # doctest: +SKIP
    """

    def __init__(self, index: SearchableIndex, space: str = "text", exact: bool = False) -> None:
        if space not in ("text", "image"):
            raise UsageError(f"dense retriever space must be 'text' or 'image', got {space!r}")
        self.index = index
        self.space = space
        self.exact = exact
        self.name = f"dense-{space}"

    def retrieve(self, query: Query, k: int) -> list[Hit]:
        filters = query_filters(query)
        if self.space == "image":
            if query.image is None:
                return []
            hits = self.index.search_image_dense(query.image, k, filters, exact=self.exact)
        else:
            if not query.text:
                return []
            hits = self.index.search_text_dense(query.text, k, filters, exact=self.exact)
        for hit in hits:
            hit.retriever = self.name
        return hits
