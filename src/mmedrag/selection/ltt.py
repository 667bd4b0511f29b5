"""Learn-then-Test risk control for the number of contexts k (RULE's calibrated selection).

For each candidate k, FR(k) = 1 − accuracy with k retrieved contexts, measured on a calibration
set of n i.i.d. samples. The null hypothesis H_k: FR_true(k) > α is tested with the
Hoeffding–Bentkus p-value

    p_k = min( exp(−n · h1(FR(k) ∧ α, α)),  e · P(Bin(n, α) ≤ ⌈n · FR(k)⌉) ),
    h1(a, b) = a · log(a/b) + (1 − a) · log((1 − a)/(1 − b)),

and the family of candidates is controlled at level δ either by Bonferroni
(Λ̂ = {k : p_k ≤ δ / |C_K|}) or by fixed-sequence testing (test k in an order fixed *before*
looking at the data, each at level δ, and stop at the first failure). Either way, for i.i.d.
data, P(every k in Λ̂ has FR_true(k) ≤ α) ≥ 1 − δ.

Example:
    >>> round(hb_p_value(10, 100, 0.2), 6) == round(float(hb_p_values([0.1], 100, 0.2)[0]), 6)
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mmedrag.errors import UsageError

METHODS = ("bonferroni", "fixed-sequence")


def h1(a: np.ndarray | float, b: float) -> np.ndarray:
    """Bernoulli KL divergence h1(a, b) = a log(a/b) + (1−a) log((1−a)/(1−b)), with 0·log 0 = 0.

    Example:
        >>> float(h1(0.2, 0.2))
        0.0
    """
    a = np.asarray(a, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0) / b), 0.0)
        right = np.where(a < 1, (1 - a) * np.log(np.where(a < 1, 1 - a, 1.0) / (1 - b)), 0.0)
    return left + right


def _check(n: int, alpha: float) -> None:
    if n <= 0:
        raise UsageError(f"calibration needs at least one sample, got n={n}")
    if not 0 < alpha < 1:
        raise UsageError(f"alpha must be in (0, 1), got {alpha}")


def hb_p_values(risks: Sequence[float] | np.ndarray, n: int, alpha: float) -> np.ndarray:
    """Hoeffding–Bentkus p-values for empirical risks (vectorised over any array shape).

    ``⌈n · FR⌉`` is taken on the rounded error count, so FR = errors/n gives exactly ``errors``.
    The result lies in [0, 1] (it underflows to 0 for huge n) and is non-decreasing in the risk.

    Example:
        >>> hb_p_values([0.5], 100, 0.2).tolist()
        [1.0]
    """
    from scipy.special import bdtr  # binomial CDF; lighter to import than scipy.stats

    _check(n, alpha)
    risks = np.asarray(risks, dtype=float)
    if np.any((risks < 0) | (risks > 1)) or not np.all(np.isfinite(risks)):
        raise UsageError("empirical risks must lie in [0, 1]")
    hoeffding = np.exp(-n * h1(np.minimum(risks, alpha), alpha))
    errors = np.ceil(np.round(n * risks, 9))
    bentkus = math.e * bdtr(errors, n, alpha)
    return np.minimum(np.minimum(hoeffding, bentkus), 1.0)


def hb_p_value(errors: int, n: int, alpha: float) -> float:
    """The p-value for ``errors`` failures out of ``n`` calibration samples.

    Example:
        >>> hb_p_value(100, 100, 0.2)
        1.0
    """
    if not 0 <= errors <= n:
        raise UsageError(f"errors must lie in [0, n={n}], got {errors}")
    return float(hb_p_values([errors / n], n, alpha)[0])


def bonferroni_valid(p_values: np.ndarray, delta: float) -> np.ndarray:
    """Boolean mask of the candidates rejected at level δ/|C_K| (works on [..., K] arrays).

    Example:
        >>> bonferroni_valid(np.array([0.01, 0.2]), 0.1).tolist()
        [True, False]
    """
    p_values = np.asarray(p_values, dtype=float)
    return p_values <= delta / p_values.shape[-1]


def fixed_sequence_valid(p_values: np.ndarray, delta: float) -> np.ndarray:
    """Boolean mask for fixed-sequence testing: candidates in array order, stop at first failure.

    Works on [..., K] arrays; candidate j is valid when p_0 … p_j are all ≤ δ.

    Example:
        >>> fixed_sequence_valid(np.array([0.01, 0.5, 0.01]), 0.1).tolist()
        [True, False, False]
    """
    p_values = np.asarray(p_values, dtype=float)
    return np.cumprod(p_values <= delta, axis=-1).astype(bool)


def valid_mask(p_values: np.ndarray, delta: float, method: str) -> np.ndarray:
    """Dispatch to the family-wise procedure named ``method`` ("bonferroni" | "fixed-sequence")."""
    if not 0 < delta < 1:
        raise UsageError(f"delta must be in (0, 1), got {delta}")
    if method == "bonferroni":
        return bonferroni_valid(p_values, delta)
    if method == "fixed-sequence":
        return fixed_sequence_valid(p_values, delta)
    raise UsageError(f"unknown calibration method {method!r} (known: {', '.join(METHODS)})")
