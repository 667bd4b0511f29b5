"""Hoeffding–Bentkus p-values and the family-wise procedures of Learn-then-Test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from mmedrag.errors import UsageError
from mmedrag.selection.ltt import (
    bonferroni_valid,
    fixed_sequence_valid,
    h1,
    hb_p_value,
    hb_p_values,
    valid_mask,
)


def reference_p_value(errors: int, n: int, alpha: float) -> float:
    """Independent scalar re-statement of RULE's formula with math + scipy.stats."""
    risk = errors / n
    a = min(risk, alpha)
    kl = (a * math.log(a / alpha) if a > 0 else 0.0) + (1 - a) * math.log((1 - a) / (1 - alpha))
    return min(math.exp(-n * kl), math.e * binom.cdf(errors, n, alpha))


def test_known_values() -> None:
    # Bentkus term wins: e · P(Bin(100, .2) <= 10)
    assert hb_p_value(10, 100, 0.2) == pytest.approx(math.e * binom.cdf(10, 100, 0.2), rel=1e-9)
    assert hb_p_value(10, 100, 0.2) == pytest.approx(0.01548, abs=5e-5)
    # Hoeffding term wins close to alpha: exp(−100 · h1(0.19, 0.2))
    kl = 0.19 * math.log(0.19 / 0.2) + 0.81 * math.log(0.81 / 0.8)
    assert hb_p_value(19, 100, 0.2) == pytest.approx(math.exp(-100 * kl), rel=1e-9)
    assert hb_p_value(0, 50, 0.1) == pytest.approx(0.9 ** 50, rel=1e-9)  # Hoeffding: (1-α)^n
    assert hb_p_value(30, 100, 0.2) == 1.0  # risk above alpha: no evidence at all


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 2000), alpha=st.floats(0.01, 0.99), data=st.data())
def test_p_value_matches_reference_and_is_monotone(n: int, alpha: float, data) -> None:  # noqa: ANN001
    errors = sorted(data.draw(st.lists(st.integers(0, n), min_size=2, max_size=6)))
    p = hb_p_values(np.array(errors) / n, n, alpha)
    assert np.all(p >= 0) and np.all(p <= 1.0)
    assert np.all(np.diff(p) >= -1e-12)  # non-decreasing in the empirical risk
    for e, value in zip(errors, p, strict=True):
        reference = reference_p_value(e, n, alpha)
        # deep in the tail (p < 1e-250) exp/binomial-CDF lose digits: compare to 1e-5 there
        rel = 1e-7 if reference > 1e-250 else 1e-5
        assert value == pytest.approx(reference, rel=rel, abs=1e-300)


def test_h1_is_kl_divergence() -> None:
    assert float(h1(0.3, 0.3)) == 0.0
    assert float(h1(0.0, 0.2)) == pytest.approx(math.log(1 / 0.8))
    assert np.all(h1(np.linspace(0, 1, 11), 0.4) >= 0)


def test_family_wise_procedures() -> None:
    p = np.array([0.001, 0.04, 0.2, 0.01])
    assert bonferroni_valid(p, 0.1).tolist() == [True, False, False, True]
    assert fixed_sequence_valid(p, 0.1).tolist() == [True, True, False, False]
    assert fixed_sequence_valid(np.array([[0.5, 0.01], [0.01, 0.01]]), 0.1).tolist() == [
        [False, False], [True, True]]
    with pytest.raises(UsageError, match="unknown calibration method"):
        valid_mask(p, 0.1, "holm")
    with pytest.raises(UsageError, match="alpha"):
        hb_p_values([0.1], 10, 1.5)
