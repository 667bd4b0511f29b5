"""Answer metrics agree with scikit-learn; bootstrap CIs are reproducible and sensible."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from mmedrag.evaluation import metrics as m

REFS = ["yes", "no", "yes", "yes", "no", "no", "yes", "no", "yes", "yes"]
PREDS = ["yes", "no", "no", "yes", "yes", "no", "yes", None, "yes", "no"]
PROBS = [0.9, 0.2, 0.4, 0.8, 0.6, 0.1, 0.7, 0.5, 0.95, 0.3]


def test_closed_metrics_match_sklearn() -> None:
    stats = [{"pred": p, "ref": r, "prob": q} for p, r, q in zip(PREDS, REFS, PROBS, strict=False)]
    out = m.closed_vqa_metrics(stats)
    y = [int(r == "yes") for r in REFS]
    yhat = [int(p == "yes") for p in PREDS]
    assert out["accuracy"] == pytest.approx(accuracy_score(REFS, [p or "none" for p in PREDS]))
    assert out["precision"] == pytest.approx(precision_score(y, yhat))
    assert out["recall"] == pytest.approx(recall_score(y, yhat))
    assert out["f1"] == pytest.approx(f1_score(y, yhat))
    assert out["auc"] == pytest.approx(roc_auc_score(y, PROBS))
    assert out["accuracy_prob"] == pytest.approx(
        accuracy_score(y, [int(q >= 0.5) for q in PROBS]))
    assert out["majority_baseline"] == pytest.approx(0.6) and out["majority_label"] == "yes"
    assert out["unparsed_rate"] == pytest.approx(0.1)


def test_closed_metrics_without_probabilities_has_no_auc_and_mixed_refs() -> None:
    stats = [{"pred": "yes", "ref": "yes"}, {"pred": "ct", "ref": "ct", "correct": True},
             {"pred": "no", "ref": "yes"}]
    out = m.closed_vqa_metrics(stats)
    assert "auc" not in out
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["n_yes_no"] == 2 and out["recall"] == pytest.approx(0.5)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(0, 1, allow_nan=False)), min_size=2,
                max_size=40))
def test_auc_matches_sklearn_with_ties(pairs: list[tuple[bool, float]]) -> None:
    labels = [int(a) for a, _ in pairs]
    scores = [round(s, 1) for _, s in pairs]  # force ties
    ours = m.roc_auc(labels, scores)
    if len(set(labels)) < 2:
        assert ours is None
    else:
        assert ours == pytest.approx(roc_auc_score(labels, scores))


def test_open_vqa_token_scores() -> None:
    assert m.exact_match("The Left lung.", "left lung") == 1.0
    p, r, f = m.token_scores("left lower lobe", "left lobe")
    assert (p, r) == pytest.approx((2 / 3, 1.0)) and f == pytest.approx(0.8)
    assert m.token_scores("", "") == (1.0, 1.0, 1.0)
    assert m.token_scores("kidney", "liver") == (0.0, 0.0, 0.0)


def test_choice_metrics_baseline() -> None:
    stats = [{"pred": "A", "ref": "A"}, {"pred": None, "ref": "A"}, {"pred": "C", "ref": "B"}]
    out = m.choice_metrics(stats)
    assert out["accuracy"] == pytest.approx(1 / 3)
    assert out["majority_baseline"] == pytest.approx(2 / 3)
    assert out["unparsed_rate"] == pytest.approx(1 / 3)


def test_bootstrap_ci_is_reproducible_and_brackets_the_estimate() -> None:
    stats = [{"pred": p, "ref": r} for p, r in zip(PREDS * 10, REFS * 10, strict=False)]
    first = m.bootstrap_ci(stats, m.choice_metrics, resamples=300, seed=1)
    again = m.bootstrap_ci(stats, m.choice_metrics, resamples=300, seed=1)
    point = m.choice_metrics(stats)["accuracy"]
    assert first == again
    low, high = first["accuracy"]
    assert low < point < high and high - low < 0.25
    assert "n" not in first
    assert m.bootstrap_ci(stats[:1], m.choice_metrics) == {}
