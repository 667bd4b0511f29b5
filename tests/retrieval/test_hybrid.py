"""Reciprocal rank fusion: exact scores, tie-breaking, properties, and the hybrid retriever."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmedrag.records import Hit, Query, Record
from mmedrag.retrieval.hybrid import HybridRetriever, reciprocal_rank_fusion


def _ranking(ids: list[str], name: str) -> list[Hit]:
    return [Hit(record=Record(id=i, text=i), score=10.0 - n, retriever=name, rank=n + 1)
            for n, i in enumerate(ids)]


def test_scores_are_sums_of_reciprocal_ranks() -> None:
    fused = reciprocal_rank_fusion([_ranking(["a", "b", "c"], "dense"),
                                    _ranking(["c", "a"], "bm25")], k=10, c=60)
    expected = {"a": 1 / 61 + 1 / 62, "b": 1 / 62, "c": 1 / 63 + 1 / 61}
    assert [h.id for h in fused] == ["a", "c", "b"]
    for hit in fused:
        assert hit.score == pytest.approx(expected[hit.id], rel=1e-12)
    assert [h.rank for h in fused] == [1, 2, 3]
    assert {h.retriever for h in fused} == {"rrf"}
    assert fused[0].details["sources"] == {"dense": 10.0, "bm25": 9.0}
    assert fused[2].details["sources"] == {"dense": 9.0}


def test_weights_c_and_k() -> None:
    lists = [_ranking(["a", "b"], "dense"), _ranking(["b", "a"], "bm25")]
    fused = reciprocal_rank_fusion(lists, k=1, c=0, weights=[1.0, 3.0])
    assert [h.id for h in fused] == ["b"]
    assert fused[0].score == pytest.approx(1 / 2 + 3 / 1)
    assert reciprocal_rank_fusion(lists, k=0) == []
    assert reciprocal_rank_fusion([], k=5) == []


def test_ties_go_to_the_best_single_rank_then_the_id() -> None:
    # p at ranks (1, 3) and q at (3, 1) tie exactly; z at (2, 2) scores a hair less
    fused = reciprocal_rank_fusion([_ranking(["p", "z", "q"], "a"),
                                    _ranking(["q", "z", "p"], "b")], k=3, c=60)
    assert fused[0].score == fused[1].score == pytest.approx(1 / 61 + 1 / 63)
    assert [h.id for h in fused] == ["p", "q", "z"]
    assert fused[2].score == pytest.approx(2 / 62)
    # equal sums and equal best ranks: by id
    tie = reciprocal_rank_fusion([_ranking(["n", "m"], "a"), _ranking(["m", "n"], "b")], k=2)
    assert [h.id for h in tie] == ["m", "n"]


_IDS = st.lists(st.sampled_from("abcdefghij"), unique=True, max_size=10)


@settings(max_examples=200, deadline=None)
@given(st.lists(_IDS, min_size=1, max_size=4), st.integers(1, 12), st.integers(0, 100))
def test_fusion_properties(lists: list[list[str]], k: int, c: int) -> None:
    rankings = [_ranking(ids, f"r{n}") for n, ids in enumerate(lists)]
    fused = reciprocal_rank_fusion(rankings, k=k, c=c)
    universe = {i for ids in lists for i in ids}
    assert len(fused) == min(k, len(universe))
    assert len({h.id for h in fused}) == len(fused)
    scores = [h.score for h in fused]
    assert scores == sorted(scores, reverse=True)
    for hit in fused:
        expected = sum(1 / (c + ids.index(hit.id) + 1) for ids in lists if hit.id in ids)
        assert hit.score == pytest.approx(expected, rel=1e-9)
    # the fused order does not depend on the order of the lists, except that exact ties
    # (e.g. 1/4 + 1/4 + 1/12 vs 1/8 + 1/8 + 1/3) may resolve by floating-point summation order
    again = reciprocal_rank_fusion(list(reversed(rankings)), k=k, c=c)
    assert [h.score for h in again] == pytest.approx(scores, rel=1e-9)
    for first, second in zip(fused, again):
        assert first.id == second.id or first.score == pytest.approx(second.score, rel=1e-9)
    # an item ahead of another in every list (and present in all) is ahead after fusion
    order = {h.id: n for n, h in enumerate(reciprocal_rank_fusion(rankings, k=100, c=c))}
    common = set.intersection(*(set(ids) for ids in lists))
    for x in common:
        for y in common:
            if all(ids.index(x) < ids.index(y) for ids in lists):
                assert order[x] < order[y]


def test_hybrid_retriever_fuses_dense_and_bm25_on_a_real_index(hashing_index) -> None:  # noqa: ANN001
    from mmedrag.retrieval.bm25 import BM25Retriever
    from mmedrag.retrieval.dense import DenseRetriever

    query = Query(text="pleural effusion in the chest")
    hybrid = HybridRetriever(hashing_index, fetch=20).retrieve(query, k=5)
    dense = DenseRetriever(hashing_index).retrieve(query, k=20)
    bm25 = BM25Retriever(hashing_index).retrieve(query, k=20)
    expected = reciprocal_rank_fusion([dense, bm25], k=5)
    assert [h.id for h in hybrid] == [h.id for h in expected]
    assert [h.score for h in hybrid] == pytest.approx([h.score for h in expected])
    assert all(h.retriever == "hybrid" for h in hybrid)
    chest = HybridRetriever(hashing_index).retrieve(Query(text="effusion", domain="CHEST"), k=5)
    assert chest and all(h.record.domain == "CHEST" for h in chest)
