"""BM25 retrieval over an index's texts (filters applied after an over-fetch)."""

from __future__ import annotations

from mmedrag.records import Hit, Query
from mmedrag.retrieval.dense import query_filters
from mmedrag.retrieval.protocol import SearchableIndex
from mmedrag.stores.protocol import matches


class BM25Retriever:
    """Sparse lexical retrieval; scores are BM25 scores (not comparable with cosines)."""

    def __init__(self, index: SearchableIndex, overfetch: int = 5) -> None:
        self.index = index
        self.overfetch = overfetch
        self.name = "bm25"

    def retrieve(self, query: Query, k: int) -> list[Hit]:
        if not query.text:
            return []
        filters = query_filters(query)
        fetch = k * self.overfetch if filters else k
        pairs = self.index.bm25.search(query.text, fetch)
        records = {r.id: r for r in self.index.get([rid for rid, _ in pairs])}
        hits: list[Hit] = []
        for rid, score in pairs:
            record = records.get(rid)
            if record is None or not matches(record, filters):
                continue
            hits.append(Hit(record=record, score=score, retriever=self.name, rank=len(hits) + 1))
            if len(hits) == k:
                break
        return hits
