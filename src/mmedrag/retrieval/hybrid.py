"""Reciprocal rank fusion (RRF) of several retrievers: score = Σ 1 / (c + rank)."""

from __future__ import annotations

from typing import Any

from mmedrag.records import Hit, Query
from mmedrag.retrieval.protocol import SearchableIndex


def reciprocal_rank_fusion(rankings: list[list[Hit]], k: int, c: int = 60,
                           weights: list[float] | None = None, name: str = "rrf") -> list[Hit]:
    """Fuse ranked lists; ties broken by best single rank, then id. Details keep each source.

    Example:
        >>> reciprocal_rank_fusion([[], []], k=3)
        []
    """
    weights = weights or [1.0] * len(rankings)
    scores: dict[str, float] = {}
    best: dict[str, Hit] = {}
    best_rank: dict[str, int] = {}
    sources: dict[str, dict[str, float]] = {}
    for number, (weight, ranking) in enumerate(zip(weights, rankings)):
        for position, hit in enumerate(ranking, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + weight / (c + position)
            sources.setdefault(hit.id, {})[hit.retriever or f"list{number}"] = hit.score
            if hit.id not in best or position < best_rank[hit.id]:
                best[hit.id], best_rank[hit.id] = hit, position
    order = sorted(scores, key=lambda i: (-scores[i], best_rank[i], i))[:k]
    return [Hit(record=best[i].record, score=scores[i], retriever=name, rank=n + 1,
                details={"sources": sources[i]}) for n, i in enumerate(order)]


class HybridRetriever:
    """Dense + BM25 fused by RRF (each fetches ``fetch`` candidates).

    Example:
        >>> HybridRetriever(index).retrieve(Query(text="pneumothorax"), k=10)  # doctest: +SKIP
    """

    def __init__(self, index: SearchableIndex, retrievers: list[Any] | None = None, c: int = 60,
                 fetch: int = 50) -> None:
        from mmedrag.retrieval.bm25 import BM25Retriever
        from mmedrag.retrieval.dense import DenseRetriever

        self.retrievers = retrievers or [DenseRetriever(index), BM25Retriever(index)]
        self.c = c
        self.fetch = fetch
        self.name = "hybrid"

    def retrieve(self, query: Query, k: int) -> list[Hit]:
        rankings = [r.retrieve(query, max(k, self.fetch)) for r in self.retrievers]
        return reciprocal_rank_fusion(rankings, k, self.c, name=self.name)
