"""RULE's calibrated k: the risk guarantee, the choice of k, and the selector."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmedrag.errors import UsageError
from mmedrag.records import Hit, Record
from mmedrag.registry import REGISTRY
from mmedrag.selection.calibrated import CalibratedSelector, Calibration, calibrate

TRUE_RISK = {1: 0.30, 2: 0.22, 3: 0.16, 4: 0.12, 5: 0.10, 6: 0.11, 7: 0.14, 8: 0.19}
ALPHA, DELTA, N, TRIALS = 0.15, 0.1, 400, 1000


def simulate(trials: int, seed: int) -> np.ndarray:
    """Bernoulli correctness [trial, k, sample] with the known accuracy 1 − TRUE_RISK[k]."""
    rng = np.random.default_rng(seed)
    accuracy = 1 - np.array(list(TRUE_RISK.values()))
    return rng.random((trials, len(TRUE_RISK), N)) < accuracy[None, :, None]


def violation_rate(correct: np.ndarray, method: str,
                   order: list[int] | None = None) -> tuple[float, float]:
    """Share of trials whose valid set holds some k with true risk > α; mean |Λ̂|."""
    ks = list(TRUE_RISK)
    violations, sizes = 0, []
    for trial in correct:
        cal = calibrate({k: trial[j] for j, k in enumerate(ks)}, ALPHA, DELTA, method, order=order)
        violations += any(TRUE_RISK[k] > ALPHA for k in cal.valid)
        sizes.append(len(cal.valid))
    return violations / len(correct), float(np.mean(sizes))


@pytest.mark.parametrize("method,order", [("bonferroni", None),
                                          ("fixed-sequence", [5, 6, 4, 7, 3, 8, 2, 1])])
def test_guarantee_holds_over_1000_seeded_trials(method: str, order: list[int] | None) -> None:
    """P(every selected k has FR ≤ α) ≥ 1 − δ, checked empirically on known true risks."""
    correct = simulate(TRIALS, seed=20240601)
    rate, mean_size = violation_rate(correct, method, order)
    print(f"{method}: P(all valid k safe) = {1 - rate:.3f} over {TRIALS} trials "
          f"(target >= {1 - DELTA}); mean |valid| = {mean_size:.2f}")
    assert 1 - rate >= 1 - DELTA
    assert mean_size >= 1.0  # the procedure is not vacuous: it certifies safe k


def test_naive_empirical_rule_breaks_the_guarantee() -> None:
    """The check above can fail: 'empirical FR ≤ α' picks k=3 (true 0.16) far too often."""
    correct = simulate(TRIALS, seed=20240601)
    empirical = 1 - correct.mean(axis=2)
    unsafe = np.array([TRUE_RISK[k] > ALPHA for k in TRUE_RISK])
    naive_violations = np.mean(np.any((empirical <= ALPHA) & unsafe[None, :], axis=1))
    assert naive_violations > DELTA


def test_calibration_choices_and_round_trip() -> None:
    data = {1: [True] * 80 + [False] * 20, 2: [True] * 95 + [False] * 5,
            3: [True] * 97 + [False] * 3, 4: [True] * 96 + [False] * 4}
    cal = calibrate(data, alpha=0.15, delta=0.1)
    assert cal.valid == [2, 3, 4] and cal.k == 3 and cal.n == 100
    assert calibrate(data, 0.15, 0.1, choose="largest").k == 4
    assert calibrate(data, 0.15, 0.1, choose="smallest").k == 2
    # fixed sequence stops at the first failure (k=1 is tested first)
    assert calibrate(data, 0.15, 0.1, method="fixed-sequence", order=[1, 2, 3, 4]).valid == []
    assert calibrate(data, 0.15, 0.1, method="fixed-sequence", order=[3, 2, 1, 4]).valid == [2, 3]
    stored = json.loads(json.dumps(cal.to_dict()))
    assert Calibration.from_dict(stored) == cal
    assert "Λ̂ = {2, 3, 4}" in cal.summary() and "P(FR ≤ 0.15) ≥ 0.9" in cal.summary()


def test_calibrate_rejects_bad_input() -> None:
    with pytest.raises(UsageError, match="at least one k"):
        calibrate({})
    with pytest.raises(UsageError, match="order"):
        calibrate({1: [True]}, order=[2])
    with pytest.raises(UsageError, match="choice"):
        calibrate({1: [True]}, choose="best")


def hits_for(n: int) -> list[Hit]:
    return [Hit(Record(id=f"r{i}", text=""), 1.0 - i / 10) for i in range(n)]


def test_selector_cuts_at_calibrated_k_and_states_the_guarantee() -> None:
    cal = calibrate({2: [True] * 95 + [False] * 5, 4: [True] * 97 + [False] * 3}, 0.15, 0.1)
    selector = REGISTRY.create("selector", "calibrated", calibration=cal.to_dict())
    selection = selector.select(hits_for(6))
    assert selection.k == 4 and [h.id for h in selection.hits] == ["r0", "r1", "r2", "r3"]
    assert "P(FR ≤ 0.15) ≥ 0.9" in selection.reason and "n=100" in selection.reason
    assert selection.details["valid"] == [2, 4]
    assert CalibratedSelector(k=2).select(hits_for(6)).reason.endswith("(no calibration guarantee)")


def test_selector_without_valid_k_needs_a_fallback() -> None:
    cal = calibrate({3: [True, False] * 50}, alpha=0.1, delta=0.1).to_dict()
    with pytest.raises(UsageError, match="fallback_k"):
        CalibratedSelector(calibration=cal)
    selection = CalibratedSelector(calibration=cal, fallback_k=1).select(hits_for(3))
    assert selection.k == 1 and "no guarantee" in selection.reason
    with pytest.raises(UsageError, match="mmedrag calibrate"):
        CalibratedSelector()
    with pytest.raises(UsageError, match="malformed"):
        CalibratedSelector(calibration={"alpha": 0.1})
