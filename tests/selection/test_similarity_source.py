"""Curve-based selectors read cosine similarities, not the rank-based RRF scores of a fusion."""

from __future__ import annotations

from mmedrag.records import Hit, Record
from mmedrag.retrieval.flow import attach_similarity
from mmedrag.retrieval.hybrid import reciprocal_rank_fusion
from mmedrag.selection.gap import GapSelector, RatioSelector


def ranked(name: str, pairs: list[tuple[str, float]]) -> list[Hit]:
    return [Hit(Record(id=i, text=i), s, retriever=name, rank=n + 1)
            for n, (i, s) in enumerate(pairs)]


def test_fused_hits_carry_their_best_dense_similarity() -> None:
    dense = ranked("dense-text", [("a", 0.82), ("b", 0.80), ("c", 0.41)])
    image = ranked("dense-image", [("b", 0.95), ("d", 0.40)])
    bm25 = ranked("bm25", [("e", 12.0), ("a", 9.0)])
    fused = attach_similarity(reciprocal_rank_fusion([dense, image, bm25], k=5))
    sims = {h.id: h.details["similarity"] for h in fused}
    assert sims == {"a": 0.82, "b": 0.95, "c": 0.41, "d": 0.40, "e": 0.40}
    assert all(h.score < 0.05 for h in fused)  # RRF scores: what the selector must not read


def test_gap_rule_cuts_on_similarity_where_rrf_scores_show_no_gap() -> None:
    dense = ranked("dense-text", [("a", 0.90), ("b", 0.88), ("c", 0.30), ("d", 0.29)])
    bm25 = ranked("bm25", [("a", 5.0), ("b", 4.0), ("c", 3.0), ("d", 2.0)])
    fused = reciprocal_rank_fusion([dense, bm25], k=4)
    plain = GapSelector(gamma=0.5, k_min=1, k_max=4).select(fused)
    assert plain.k == 4  # RRF scores 2/61, 2/62, ... never differ by log > 0.5
    selection = GapSelector(gamma=0.5, k_min=1, k_max=4).select(attach_similarity(fused))
    assert selection.k == 2 and "log(0.880/0.300)" in selection.reason
    # attach_similarity annotated the hits in place: the ratio rule now reads similarities too
    assert RatioSelector(tau=1.5, k_max=4).select(fused).k == 2
