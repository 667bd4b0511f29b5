"""RULE's calibrated number of contexts: choose k with a finite-sample risk guarantee.

``calibrate`` turns per-sample correctness on a calibration set (for each candidate k, was the
answer right with k retrieved contexts?) into a :class:`Calibration`: the empirical factuality
risk FR(k) = 1 − accuracy, the Hoeffding–Bentkus p-value of each k (see
:mod:`mmedrag.selection.ltt`), the valid set Λ̂ under Bonferroni or fixed-sequence testing, the
chosen k and the guarantee P(FR ≤ α) ≥ 1 − δ, which holds simultaneously for every k in Λ̂ when
calibration and deployment samples are i.i.d.

Which valid k is used (``choose``):
    - ``"accuracy"`` (default): the valid k with the lowest empirical risk; ties go to the
      smaller k (fewer tokens, less distraction).
    - ``"largest"`` / ``"smallest"``: the largest / smallest valid k.
Every valid k carries the same guarantee, so the choice only trades accuracy against cost.

``CalibratedSelector`` keeps the first k hits for the stored calibration (the pipeline passes
``calibration=index.artefacts.calibration``, written by ``mmedrag calibrate``).

Example:
    >>> cal = calibrate({1: [True] * 90 + [False] * 10, 3: [True] * 97 + [False] * 3},
    ...                 alpha=0.2, delta=0.1)
    >>> cal.valid, cal.k, cal.guarantee
    ([1, 3], 3, 'P(FR ≤ 0.2) ≥ 0.9')
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mmedrag.errors import UsageError
from mmedrag.records import Hit
from mmedrag.selection.ltt import METHODS, hb_p_values, valid_mask
from mmedrag.selection.protocol import Selection

CHOICES = ("accuracy", "largest", "smallest")
_METHOD_NAMES = {"bonferroni": "Bonferroni", "fixed-sequence": "fixed-sequence"}


@dataclass
class CandidateResult:
    """The calibration outcome of one candidate k."""

    k: int
    n: int
    errors: int
    risk: float
    p_value: float
    valid: bool


@dataclass
class Calibration:
    """A JSON-able calibration result: per-k risks and p-values, Λ̂, the chosen k, the guarantee.

    Example:
        >>> cal = calibrate({2: [True] * 50}, alpha=0.1, delta=0.1)
        >>> Calibration.from_dict(cal.to_dict()).k
        2
    """

    alpha: float
    delta: float
    method: str
    choose: str
    order: list[int]
    candidates: list[CandidateResult]
    valid: list[int]
    k: int | None
    guarantee: str
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    @property
    def n(self) -> int:
        """Calibration set size (the smallest over candidates)."""
        return min((c.n for c in self.candidates), default=0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """Read a stored calibration; a malformed one raises UsageError naming the field."""
        try:
            candidates = [CandidateResult(**c) for c in data["candidates"]]
            return cls(alpha=float(data["alpha"]), delta=float(data["delta"]),
                       method=str(data["method"]), choose=str(data["choose"]),
                       order=[int(k) for k in data["order"]], candidates=candidates,
                       valid=[int(k) for k in data["valid"]],
                       k=None if data.get("k") is None else int(data["k"]),
                       guarantee=str(data["guarantee"]), created=str(data.get("created", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"stored calibration is malformed (field {exc}); "
                             f"re-run 'mmedrag calibrate'") from None

    def summary(self) -> str:
        """One line for people: Λ̂, the chosen k and the guarantee."""
        valid = "{" + ", ".join(str(k) for k in self.valid) + "}"
        method = _METHOD_NAMES.get(self.method, self.method)
        if self.k is None:
            return (f"no k in {self.order} meets FR ≤ {self.alpha:g} at δ={self.delta:g} "
                    f"({method}, n={self.n}): Λ̂ = ∅")
        return (f"Λ̂ = {valid} ({method}, n={self.n}); chosen k={self.k} ({self.choose}); "
                f"{self.guarantee}")


def _as_bool_arrays(per_sample_correct: dict[Any, Any]) -> dict[int, np.ndarray]:
    if not per_sample_correct:
        raise UsageError("calibration needs results for at least one k")
    out: dict[int, np.ndarray] = {}
    for key, values in per_sample_correct.items():
        try:
            k = int(key)
        except (TypeError, ValueError):
            raise UsageError(f"calibration: k must be an integer, got {key!r}") from None
        if k < 0:
            raise UsageError(f"calibration: k must be >= 0, got {k}")
        values = np.asarray(values, dtype=bool).ravel()
        if values.size == 0:
            raise UsageError(f"calibration: no samples for k={k}")
        out[k] = values
    return out


def _choose(rows: list[CandidateResult], choose: str) -> int | None:
    valid = [r for r in rows if r.valid]
    if not valid:
        return None
    if choose == "largest":
        return max(r.k for r in valid)
    if choose == "smallest":
        return min(r.k for r in valid)
    return min(valid, key=lambda r: (r.risk, r.k)).k


def calibrate(per_sample_correct: dict[Any, Any], alpha: float = 0.1, delta: float = 0.1,
              method: str = "bonferroni", choose: str = "accuracy",
              order: list[int] | None = None) -> Calibration:
    """Calibrate k: Learn-then-Test with Hoeffding–Bentkus p-values.

    Args:
        per_sample_correct: for each candidate k, one bool per calibration sample (answer right
            with k contexts). The same samples should be used for every k.
        alpha: target factuality risk: FR = 1 − accuracy ≤ α.
        delta: tolerated probability that some selected k violates the target.
        method: "bonferroni" or "fixed-sequence".
        choose: which valid k to use: "accuracy", "largest" or "smallest" (see module doc).
        order: the candidates to test, in testing order (fixed-sequence stops at the first
            failure). Must be fixed before seeing the data; default ascending k.

    Returns:
        The Calibration (``to_dict()`` is JSON-able).

    Example:
        >>> calibrate({1: [True, False] * 50}, alpha=0.2, delta=0.1).valid
        []
    """
    data = _as_bool_arrays(per_sample_correct)
    if method not in METHODS:
        raise UsageError(f"unknown calibration method {method!r} (known: {', '.join(METHODS)})")
    if choose not in CHOICES:
        raise UsageError(f"unknown choice {choose!r} (known: {', '.join(CHOICES)})")
    order = sorted(data) if order is None else [int(k) for k in order]
    missing = [k for k in order if k not in data]
    if missing or len(set(order)) != len(order) or not order:
        raise UsageError(f"calibration order {order} must list distinct k that have results "
                         f"(have {sorted(data)})")
    sizes = np.array([len(data[k]) for k in order])
    errors = np.array([len(data[k]) - int(data[k].sum()) for k in order])
    risks = errors / sizes
    if len(set(sizes.tolist())) > 1:  # different n per k: one p-value at a time
        p_values = np.array([hb_p_values([r], int(n), alpha)[0]
                             for r, n in zip(risks, sizes, strict=True)])
    else:
        p_values = hb_p_values(risks, int(sizes[0]), alpha)
    mask = valid_mask(p_values, delta, method)
    rows = [CandidateResult(k=k, n=int(n), errors=int(e), risk=float(r), p_value=float(p),
                            valid=bool(v))
            for k, n, e, r, p, v in zip(order, sizes, errors, risks, p_values, mask, strict=True)]
    return Calibration(alpha=float(alpha), delta=float(delta), method=method, choose=choose,
                       order=order, candidates=rows,
                       valid=sorted(r.k for r in rows if r.valid), k=_choose(rows, choose),
                       guarantee=f"P(FR ≤ {alpha:g}) ≥ {1 - delta:g}")


class CalibratedSelector:
    """Keep the first k hits, with k calibrated by :func:`calibrate` (RULE).

    Args:
        calibration: a stored calibration (``Calibration.to_dict()``, e.g.
            ``index.artefacts.calibration``) or a Calibration.
        k: use this k instead (no guarantee; for ablations).
        fallback_k: k to use when the calibration found no valid k (the reason says so);
            without it such a calibration is refused.

    Example:
        >>> cal = calibrate({2: [True] * 60}, alpha=0.1, delta=0.1)
        >>> CalibratedSelector(calibration=cal.to_dict()).select([]).details["k_calibrated"]
        2
    """

    name = "calibrated"

    def __init__(self, calibration: dict[str, Any] | Calibration | None = None,
                 k: int | None = None, fallback_k: int | None = None) -> None:
        if isinstance(calibration, dict):
            calibration = Calibration.from_dict(calibration)
        self.calibration = calibration
        self.fallback_k = fallback_k
        if k is not None:
            self.k, self.source = int(k), "given"
        elif calibration is None:
            raise UsageError("calibrated selector: no calibration is stored with this index; "
                             "run 'mmedrag calibrate' or set the selector option k")
        elif calibration.k is not None:
            self.k, self.source = calibration.k, "calibrated"
        elif fallback_k is not None:
            self.k, self.source = int(fallback_k), "fallback"
        else:
            raise UsageError(f"calibrated selector: {calibration.summary()}; raise alpha, add "
                             f"calibration samples, or set the selector option fallback_k")
        if self.k < 0:
            raise UsageError(f"calibrated selector: k must be >= 0, got {self.k}")

    def _why(self) -> str:
        cal = self.calibration
        if self.source == "given":
            return f"k={self.k} set by hand (no calibration guarantee)"
        assert cal is not None
        method = _METHOD_NAMES.get(cal.method, cal.method)
        if self.source == "fallback":
            return (f"fallback k={self.k}: calibration found no k with FR ≤ {cal.alpha:g} at "
                    f"δ={cal.delta:g}, so no guarantee")
        return f"calibrated k={self.k} ({method} LTT, n={cal.n}); {cal.guarantee}"

    def select(self, hits: list[Hit]) -> Selection:
        kept = list(hits[: self.k])
        details: dict[str, Any] = {"selector": self.name, "k_calibrated": self.k,
                                   "source": self.source, "candidates": len(hits)}
        if self.calibration is not None and self.source != "given":
            details.update(alpha=self.calibration.alpha, delta=self.calibration.delta,
                           valid=self.calibration.valid, method=self.calibration.method,
                           guarantee=self.calibration.guarantee)
        reason = f"kept {len(kept)} of {len(hits)} hits: {self._why()}"
        return Selection(hits=kept, k=len(kept), reason=reason, details=details)

    def config(self) -> dict[str, Any]:
        options: dict[str, Any] = {"fallback_k": self.fallback_k}
        if self.source == "given":
            options["k"] = self.k
        return {"name": self.name, "options": options}
