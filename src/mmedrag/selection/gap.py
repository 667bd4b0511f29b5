"""Adaptive number of contexts from the score curve: MMed-RAG's gap rule and its ratio variant.

Both rules assume a similarity curve sorted best first (S_1 ≥ S_2 ≥ …). Candidates fused by
reciprocal rank are not in that order (a hit found by two retrievers outranks a more similar hit
found by one), and reading the curve in fused order gave negative "gaps". So both selectors first
sort the candidates by the similarity they read (:func:`hit_similarity`; stable, so equal
similarities keep the given order), cut that curve, and return the kept hits most similar first;
``details["reordered"]`` says whether the order changed. After a reranker, the similarity is the
reranker's score, which is already in order. Both are deterministic functions of the scores.

``GapSelector`` is the rule of the MMed-RAG paper. With scores S_1 ≥ S_2 ≥ …, the gap statistic
is u_i = log(S_i / S_{i+1}); the cut is at the first i (with k_min ≤ i < k_max) where u_i > γ,
keeping S_1 … S_i. When no gap exceeds γ, k_max hits are kept.

The log-ratio is undefined when a score is zero or negative (cross-encoder logits, centred
similarities, BM25 zeros). For such windows the selector switches to *relative differences*,
u_i = (S_i − S_{i+1}) / max_j |S_j| over the scores it inspects, which agrees with the log-ratio
to first order when the scores are positive and close (log(a/b) ≈ (a − b)/b), is scale-free like
it, and is defined for any real scores. A window whose scores are all equal (including all zero)
has no gap, so k_max hits are kept. ``details["statistic"]`` says which statistic was used.

``RatioSelector`` is what the released MMed-RAG code does instead: keep hits while S_1 / S_i < τ
(scores within a factor τ of the top one). The released loop accepts any negative score, because
a negative ratio is always below τ. Here the test is written without division, as "S_i is within
a factor τ of S_1 on the same side of zero": S_i > S_1 / τ when S_1 > 0, and S_i > τ · S_1 when
S_1 ≤ 0; a score equal to the top one is always kept. A score of the wrong sign therefore always
stops the prefix, which is the defect fixed.
"""

from __future__ import annotations

import math
from typing import Any

from mmedrag.errors import UsageError
from mmedrag.records import Hit
from mmedrag.selection.protocol import Selection


def _check_bounds(name: str, k_min: int, k_max: int) -> tuple[int, int]:
    k_min, k_max = int(k_min), int(k_max)
    if k_min < 0 or k_max < 1 or k_min > k_max:
        raise UsageError(f"{name} selector: need 0 <= k_min <= k_max and k_max >= 1, "
                         f"got k_min={k_min}, k_max={k_max}")
    return k_min, k_max


def hit_similarity(hit: Hit) -> float:
    """The score a curve-based selector reads: ``details["similarity"]`` when the pipeline set
    one (fused rankings carry rank-based RRF scores, which say nothing about similarity), else
    the hit's own score.

    Example:
        >>> from mmedrag.records import Record
        >>> hit_similarity(Hit(Record(id="a", text=""), 0.016, details={"similarity": 0.71}))
        0.71
    """
    value = hit.details.get("similarity") if hit.details else None
    return float(hit.score if value is None else value)


def by_similarity(hits: list[Hit]) -> tuple[list[Hit], bool]:
    """The hits sorted by :func:`hit_similarity`, best first (stable), and whether that changed
    their order.

    Example:
        >>> from mmedrag.records import Record
        >>> hits = [Hit(Record(id=i, text=""), s) for i, s in (("a", 0.5), ("b", 0.9))]
        >>> [h.id for h in by_similarity(hits)[0]], by_similarity(hits)[1]
        (['b', 'a'], True)
    """
    ordered = sorted(hits, key=lambda h: -hit_similarity(h))
    return ordered, any(a is not b for a, b in zip(ordered, hits, strict=True))


def gap_statistics(scores: list[float]) -> tuple[list[float], str]:
    """The gap statistic u_i between consecutive scores, and which formula was used.

    Returns ``(u, "log-ratio")`` when every score is positive, else ``(u, "relative-difference")``
    with u_i = (S_i − S_{i+1}) / max |S| (all zeros when the scores are all zero).

    Example:
        >>> gap_statistics([0.8, 0.4])[1]
        'log-ratio'
        >>> [round(u, 3) for u in gap_statistics([0.8, 0.4])[0]]
        [0.693]
        >>> gap_statistics([2.0, -1.0])
        ([1.5], 'relative-difference')
    """
    if len(scores) < 2:
        return [], "log-ratio"
    if all(s > 0 for s in scores):
        logs = [math.log(s) for s in scores]  # log a − log b: no overflow for tiny b
        return [a - b for a, b in zip(logs, logs[1:], strict=False)], "log-ratio"
    scale = max(abs(s) for s in scores)
    if scale == 0:
        return [0.0] * (len(scores) - 1), "relative-difference"
    gaps = [(a - b) / scale for a, b in zip(scores, scores[1:], strict=False)]
    return gaps, "relative-difference"


class GapSelector:
    """MMed-RAG's adaptive k: cut where the similarity curve drops by more than γ.

    Args:
        gamma: threshold on the gap statistic u_i (log-ratio of consecutive scores).
        k_min: always keep at least this many hits (when available); gaps before it are ignored.
        k_max: never keep more than this many hits.

    Example:
        >>> from mmedrag.records import Hit, Record
        >>> scores = [0.9, 0.88, 0.5, 0.49]
        >>> hits = [Hit(Record(id=str(i), text=""), s) for i, s in enumerate(scores)]
        >>> sel = GapSelector(gamma=0.2, k_min=1, k_max=4).select(hits)
        >>> sel.k, sel.reason
        (2, 'kept 2 of 4 hits: score gap log(0.880/0.500)=0.565 > γ=0.2 after hit 2')
    """

    name = "gap"

    def __init__(self, gamma: float = 0.05, k_min: int = 1, k_max: int = 5) -> None:
        if not math.isfinite(float(gamma)) or float(gamma) < 0:
            raise UsageError(f"gap selector: gamma must be a finite number >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.k_min, self.k_max = _check_bounds(self.name, k_min, k_max)

    def select(self, hits: list[Hit]) -> Selection:
        hits, reordered = by_similarity(hits)
        window = [hit_similarity(h) for h in hits[: self.k_max]]
        gaps, statistic = gap_statistics(window)
        details: dict[str, Any] = {"selector": self.name, "gamma": self.gamma,
                                   "k_min": self.k_min, "k_max": self.k_max,
                                   "candidates": len(hits), "statistic": statistic,
                                   "reordered": reordered,
                                   "similarities": [round(v, 6) for v in window],
                                   "gaps": [round(u, 6) for u in gaps]}
        cut = None
        # keep i hits when the gap after hit i is big
        for i in range(max(self.k_min, 1), len(window)):
            if gaps[i - 1] > self.gamma:
                cut = i
                break
        if cut is None:
            k = min(len(hits), self.k_max)
            why = (f"no score gap above γ={self.gamma:g} within the first {len(window)} hits"
                   if len(window) > 1 else "too few hits to measure a gap")
            reason = f"kept {k} of {len(hits)} hits: {why} (k_max={self.k_max})"
        else:
            k = cut
            a, b = window[cut - 1], window[cut]
            formula = (f"log({a:.3f}/{b:.3f})" if statistic == "log-ratio"
                       else f"({a:.3f}-{b:.3f})/max|S|")
            reason = (f"kept {k} of {len(hits)} hits: score gap {formula}={gaps[cut - 1]:.3f} "
                      f"> γ={self.gamma:g} after hit {cut}")
        details["cut_after"] = cut
        return Selection(hits=list(hits[:k]), k=k, reason=reason, details=details)

    def config(self) -> dict[str, Any]:
        return {"name": self.name,
                "options": {"gamma": self.gamma, "k_min": self.k_min, "k_max": self.k_max}}


def within_ratio(top: float, score: float, tau: float) -> bool:
    """True when ``score`` is within a factor ``tau`` of ``top`` on the same side of zero.

    Equivalent to the released code's ``top / score < tau`` whenever both are positive, but a
    score of the wrong sign (or zero below a positive top) is never "within" the ratio.

    Example:
        >>> within_ratio(0.9, 0.7, 1.5), within_ratio(0.9, 0.5, 1.5), within_ratio(0.9, -3.0, 1.5)
        (True, False, False)
        >>> within_ratio(-1.0, -1.4, 1.5), within_ratio(-1.0, -2.0, 1.5)
        (True, False)
    """
    if score >= top:
        return True
    if top > 0:
        return score > top / tau
    return score > tau * top


class RatioSelector:
    """The released MMed-RAG rule, fixed: keep hits whose score is within a factor τ of the top.

    Args:
        tau: ratio threshold (> 1); 1.5 in the released code's example.
        k_min: always keep at least this many hits (when available).
        k_max: never keep more than this many hits.

    Example:
        >>> from mmedrag.records import Hit, Record
        >>> hits = [Hit(Record(id=str(i), text=""), s) for i, s in enumerate([0.9, 0.7, -2.0])]
        >>> RatioSelector(tau=1.5, k_min=1, k_max=5).select(hits).k
        2
    """

    name = "ratio"

    def __init__(self, tau: float = 1.5, k_min: int = 1, k_max: int = 5) -> None:
        if not math.isfinite(float(tau)) or float(tau) <= 1:
            raise UsageError(f"ratio selector: tau must be a finite number > 1, got {tau}")
        self.tau = float(tau)
        self.k_min, self.k_max = _check_bounds(self.name, k_min, k_max)

    def select(self, hits: list[Hit]) -> Selection:
        hits, reordered = by_similarity(hits)
        window = [hit_similarity(h) for h in hits[: self.k_max]]
        details: dict[str, Any] = {"selector": self.name, "tau": self.tau, "k_min": self.k_min,
                                   "k_max": self.k_max, "candidates": len(hits),
                                   "reordered": reordered}
        if not window:
            return Selection(hits=[], k=0, reason="no hits to select from", details=details)
        top = window[0]
        passed = 1
        while passed < len(window) and within_ratio(top, window[passed], self.tau):
            passed += 1
        k = min(max(passed, self.k_min), len(window))
        if passed < len(window):
            why = (f"hit {passed + 1} (score {window[passed]:.3f}) is not within a factor "
                   f"τ={self.tau:g} of the top score {top:.3f}")
        else:
            why = f"all of the first {len(window)} hits are within τ={self.tau:g} of the top"
        if k > passed:
            why += f"; raised to k_min={self.k_min}"
        details["stopped_at"] = passed + 1 if passed < len(window) else None
        return Selection(hits=list(hits[:k]), k=k, reason=f"kept {k} of {len(hits)} hits: {why}",
                         details=details)

    def config(self) -> dict[str, Any]:
        return {"name": self.name,
                "options": {"tau": self.tau, "k_min": self.k_min, "k_max": self.k_max}}
