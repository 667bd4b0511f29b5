"""Retrieval metric maths on constructed rankings, and the domain-accuracy function."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmedrag.evaluation.retrieval import relevant_ids
from mmedrag.ir_metrics import (
    bootstrap_interval,
    domain_accuracy,
    mrr,
    ndcg_at_k,
    paired_difference,
    rank_by_similarity,
    recall_at_k,
    retrieval_metrics,
)

RANKINGS = [["a", "b", "c"], ["x", "y", "z"], ["p", "q", "r"]]
RELEVANT = [{"a"}, {"z"}, {"nothing"}]


def test_recall_counts_queries_with_a_hit_in_top_k() -> None:
    assert recall_at_k(RANKINGS, RELEVANT, 1) == pytest.approx(1 / 3)
    assert recall_at_k(RANKINGS, RELEVANT, 2) == pytest.approx(1 / 3)
    assert recall_at_k(RANKINGS, RELEVANT, 3) == pytest.approx(2 / 3)


def test_mrr_is_mean_of_first_relevant_reciprocal_rank() -> None:
    assert mrr(RANKINGS, RELEVANT) == pytest.approx((1 + 1 / 3 + 0) / 3)


def test_ndcg_binary_gains_with_ideal_over_all_relevant() -> None:
    # two relevant, found at ranks 2 and 3: DCG = 1/log2(3) + 1/log2(4); IDCG = 1 + 1/log2(3)
    value = ndcg_at_k([["n", "r1", "r2"]], [{"r1", "r2"}], 10)
    expected = (1 / math.log2(3) + 0.5) / (1 + 1 / math.log2(3))
    assert value == pytest.approx(expected)
    assert ndcg_at_k([["r1", "r2"]], [{"r1", "r2"}], 10) == pytest.approx(1.0)
    assert ndcg_at_k([["n"]], [set()], 10) == 0.0


def test_retrieval_metrics_reports_every_name() -> None:
    metrics = retrieval_metrics(RANKINGS, RELEVANT)
    assert set(metrics) == {"R@1", "R@5", "R@10", "MRR", "nDCG@10"}
    assert metrics["R@10"] == pytest.approx(2 / 3)


def test_mismatched_lengths_are_an_error() -> None:
    with pytest.raises(ValueError):
        recall_at_k(RANKINGS, RELEVANT[:2], 1)


@given(st.lists(st.lists(st.sampled_from("abcdef"), min_size=1, max_size=6, unique=True),
                min_size=1, max_size=8),
       st.lists(st.sets(st.sampled_from("abcdefg"), max_size=3), min_size=8, max_size=8))
def test_metric_bounds_and_monotonic_recall(rankings: list[list[str]], rel: list[set[str]]) -> None:
    rel = rel[:len(rankings)]
    values = [recall_at_k(rankings, rel, k) for k in (1, 2, 5, 10)]
    assert values == sorted(values)
    assert 0 <= mrr(rankings, rel) <= values[-1] <= 1
    assert mrr(rankings, rel) >= values[0]
    assert 0 <= ndcg_at_k(rankings, rel, 10) <= 1


def test_rank_by_similarity_orders_and_excludes() -> None:
    q = np.array([[1.0, 0.0]], np.float32)
    docs = np.array([[0.9, 0.1], [1.0, 0.0], [0.0, 1.0]], np.float32)
    assert rank_by_similarity(q, docs, ["a", "b", "c"], 2) == [["b", "a"]]
    assert rank_by_similarity(q, docs, ["a", "b", "c"], 2, exclude=[{"b"}]) == [["a", "c"]]


def test_relevance_by_id_or_identical_text() -> None:
    corpus = [("1", "Axial CT  shows mass."), ("2", "axial ct shows mass."), ("3", "other")]
    assert relevant_ids("9", "Axial CT shows mass.", corpus) == {"9", "1", "2"}


def test_bootstrap_interval_contains_mean_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(1)
    small = rng.integers(0, 2, 50).astype(float)
    large = np.tile(small, 20)
    lo_s, hi_s = bootstrap_interval(small)
    lo_l, hi_l = bootstrap_interval(large)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert hi_l - lo_l < hi_s - lo_s


def test_paired_difference_of_identical_systems_is_zero() -> None:
    values = np.array([1.0, 0.0, 1.0, 1.0])
    assert paired_difference(values, values) == (0.0, 0.0, 0.0)


def test_domain_accuracy_and_confusion_with_fallback_column() -> None:
    acc, columns, matrix = domain_accuracy(["CT", "CT", "MR", "MR"], ["CT", None, "CT", "MR"])
    assert acc == 0.5
    assert columns == ["CT", "MR", "(all)"]
    assert matrix == [[1, 0, 1], [1, 1, 0]]
