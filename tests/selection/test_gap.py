"""The gap (MMed-RAG paper), ratio (released code, fixed) and fixed-k selectors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmedrag.errors import UsageError
from mmedrag.records import Hit, Record
from mmedrag.registry import REGISTRY
from mmedrag.selection.fixed import FixedKSelector
from mmedrag.selection.gap import GapSelector, RatioSelector, gap_statistics, within_ratio


def hits_for(scores: list[float]) -> list[Hit]:
    return [Hit(Record(id=f"r{i}", text=f"t{i}"), s, rank=i + 1) for i, s in enumerate(scores)]


scores_st = st.lists(st.floats(min_value=-50, max_value=50, allow_nan=False), max_size=15)
sorted_scores_st = scores_st.map(lambda xs: sorted(xs, reverse=True))
bounds_st = st.tuples(st.integers(0, 6), st.integers(1, 8)).filter(lambda b: b[0] <= b[1])


def test_gap_cuts_at_first_large_log_ratio() -> None:
    # log(0.9/0.85)=0.057, log(0.85/0.5)=0.531 > 0.3 → keep 2
    sel = GapSelector(gamma=0.3, k_min=1, k_max=5).select(hits_for([0.9, 0.85, 0.5, 0.45, 0.1]))
    assert sel.k == 2 and [h.id for h in sel.hits] == ["r0", "r1"]
    assert sel.details["statistic"] == "log-ratio"
    assert sel.details["gaps"][1] == pytest.approx(math.log(0.85 / 0.5), abs=1e-6)
    assert "after hit 2" in sel.reason and "γ=0.3" in sel.reason


def test_gap_without_large_gap_keeps_k_max() -> None:
    sel = GapSelector(gamma=0.5, k_min=1, k_max=3).select(hits_for([0.9, 0.8, 0.7, 0.6, 0.5]))
    assert sel.k == 3 and sel.details["cut_after"] is None
    assert "no score gap" in sel.reason


def test_gap_ignores_gaps_before_k_min() -> None:
    sel = GapSelector(gamma=0.3, k_min=2, k_max=5).select(hits_for([0.9, 0.3, 0.29, 0.1, 0.09]))
    # first big gap (after hit 1) is below k_min; the next one is after hit 3
    assert sel.k == 3


def test_gap_negative_scores_use_relative_difference() -> None:
    sel = GapSelector(gamma=0.3, k_min=1, k_max=5).select(hits_for([2.0, 1.8, -1.0, -1.2]))
    assert sel.details["statistic"] == "relative-difference"
    assert sel.details["gaps"][1] == pytest.approx((1.8 + 1.0) / 2.0)
    assert sel.k == 2


def test_gap_statistics_all_zero_and_equal() -> None:
    assert gap_statistics([0.0, 0.0, 0.0]) == ([0.0, 0.0], "relative-difference")
    assert gap_statistics([0.5, 0.5]) == ([0.0], "log-ratio")
    assert GapSelector(gamma=0.0, k_max=4).select(hits_for([0.0] * 6)).k == 4


@settings(max_examples=200, deadline=None)
@given(scores=sorted_scores_st, bounds=bounds_st, gamma=st.floats(0, 3))
def test_gap_invariants(scores: list[float], bounds: tuple[int, int], gamma: float) -> None:
    k_min, k_max = bounds
    hits = hits_for(scores)
    selector = GapSelector(gamma=gamma, k_min=k_min, k_max=k_max)
    first, second = selector.select(hits), selector.select(hits)
    assert first.k == len(first.hits) == second.k and first.reason == second.reason
    assert first.hits == hits[: first.k]  # a prefix, in input order
    assert min(k_min, len(hits)) <= first.k <= min(k_max, len(hits))
    assert all(math.isfinite(u) for u in first.details["gaps"])
    if first.details["cut_after"] is not None:  # the cut is where the statistic exceeds γ
        assert gap_statistics(scores[:k_max])[0][first.k - 1] > gamma


@settings(max_examples=200, deadline=None)
@given(scores=sorted_scores_st, bounds=bounds_st, tau=st.floats(1.01, 10))
def test_ratio_invariants(scores: list[float], bounds: tuple[int, int], tau: float) -> None:
    k_min, k_max = bounds
    hits = hits_for(scores)
    sel = RatioSelector(tau=tau, k_min=k_min, k_max=k_max).select(hits)
    assert sel.hits == hits[: sel.k]
    assert min(k_min, len(hits)) <= sel.k <= min(k_max, len(hits))
    if hits and sel.k > max(k_min, 1):  # everything kept beyond k_min passed the ratio test
        assert all(within_ratio(scores[0], s, tau) for s in scores[: sel.k])


def test_ratio_matches_released_rule_on_positive_scores() -> None:
    scores = [0.9, 0.8, 0.65, 0.59, 0.3]
    released = [s for s in scores if scores[0] / s < 1.5]  # the released code's test
    assert RatioSelector(tau=1.5, k_min=1, k_max=5).select(hits_for(scores)).k == len(released)


def test_ratio_stops_on_negative_scores() -> None:
    """The released loop keeps any negative logit (negative ratio < τ); this one stops."""
    sel = RatioSelector(tau=1.5, k_min=1, k_max=5).select(hits_for([0.9, 0.8, -0.5, -3.0]))
    assert sel.k == 2 and sel.details["stopped_at"] == 3
    assert RatioSelector(tau=1.5, k_min=1, k_max=5).select(hits_for([-1.0, -1.2, -2.0])).k == 2


def test_fixed_selector_and_errors() -> None:
    sel = FixedKSelector(k=3).select(hits_for([0.1, 0.9, 0.5, 0.2]))
    assert [h.id for h in sel.hits] == ["r0", "r1", "r2"] and "fixed k=3" in sel.reason
    assert FixedKSelector(k=3).select(hits_for([0.4])).k == 1
    with pytest.raises(UsageError, match="k_min"):
        GapSelector(k_min=4, k_max=2)
    with pytest.raises(UsageError, match="tau"):
        RatioSelector(tau=0.5)


def test_registry_builds_selectors_and_configs_round_trip() -> None:
    for name, options in [("fixed", {"k": 2}), ("gap", {"gamma": 0.1, "k_min": 1, "k_max": 4}),
                          ("ratio", {"tau": 2.0, "k_min": 1, "k_max": 3})]:
        selector = REGISTRY.create("selector", name, **options)
        config = selector.config()
        assert config == {"name": name, "options": options}
        rebuilt = REGISTRY.create("selector", config["name"], **config["options"])
        hits = hits_for([0.9, 0.5, 0.4, 0.1])
        assert rebuilt.select(hits).k == selector.select(hits).k


def fused_hits(similarities: list[float]) -> list[Hit]:
    """Hits in fused (RRF) order whose cosine similarities are not sorted, as the pipeline
    hands them over (``details["similarity"]``)."""
    return [Hit(Record(id=f"f{i}", text=""), 1 / (60 + i), rank=i + 1,
                details={"similarity": s}) for i, s in enumerate(similarities)]


def test_gap_rule_reads_the_similarity_curve_sorted_descending() -> None:
    # fused order 0.70, 0.90, 0.40, 0.88: read in that order the "gaps" go negative
    hits = fused_hits([0.70, 0.90, 0.40, 0.88])
    sel = GapSelector(gamma=0.2, k_min=1, k_max=4).select(hits)
    assert sel.details["similarities"] == [0.90, 0.88, 0.70, 0.40]
    assert all(u >= 0 for u in sel.details["gaps"]) and sel.details["reordered"]
    # log(0.88/0.70)=0.229 > 0.2 after hit 2: the two most similar are kept, best first
    assert sel.k == 2 and [h.id for h in sel.hits] == ["f1", "f3"]
    ratio = RatioSelector(tau=1.5, k_min=1, k_max=4).select(hits)
    assert [h.id for h in ratio.hits] == ["f1", "f3", "f0"] and ratio.details["reordered"]


@settings(max_examples=200, deadline=None)
@given(similarities=st.lists(st.floats(0.01, 1.0), min_size=1, max_size=12),
       bounds=bounds_st, gamma=st.floats(0, 3))
def test_gap_keeps_the_most_similar_hits_whatever_the_input_order(
        similarities: list[float], bounds: tuple[int, int], gamma: float) -> None:
    k_min, k_max = bounds
    sel = GapSelector(gamma=gamma, k_min=k_min, k_max=k_max).select(fused_hits(similarities))
    kept = [h.details["similarity"] for h in sel.hits]
    assert kept == sorted(similarities, reverse=True)[: sel.k]
    assert all(u >= 0 for u in sel.details["gaps"])
