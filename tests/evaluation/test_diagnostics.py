"""Factuality diagnostics: over-reliance with its denominator, copy-reference, support rule."""

from __future__ import annotations

import pytest

from mmedrag.evaluation import diagnostics as dg


def _row(i: int, correct: bool, **extra: object) -> dict:
    return {"id": str(i), "correct": correct, **extra}


def test_over_reliance_counts_only_samples_correct_without_rag() -> None:
    without = [_row(0, True), _row(1, True), _row(2, True), _row(3, False), _row(4, False)]
    with_rag = [_row(0, True), _row(1, False), _row(2, False), _row(3, True), _row(4, False),
                _row(9, True)]  # id 9 has no pair and is ignored
    out = dg.over_reliance(without, with_rag)
    assert out["paired"] == 5 and out["correct_without_rag"] == 3
    assert out["over_reliance"] == pytest.approx(2 / 3) and out["over_reliance_count"] == 2
    assert out["rescue"] == pytest.approx(1 / 2) and out["rescue_count"] == 1
    assert dg.over_reliance([_row(0, False)], [_row(0, True)])["over_reliance"] is None


def test_polarity_and_support_rule() -> None:
    assert dg.polarity("Is there a pleural effusion?", "Small left pleural effusion.") == "yes"
    assert dg.polarity("Is there a pleural effusion?", "No pleural effusion is seen.") == "no"
    assert dg.polarity("Is there a pneumothorax?", "Lungs are clear.") is None
    assert dg.supports("Is there a pleural effusion?", "no", "There is no pleural effusion.")
    assert not dg.supports("Is there a pleural effusion?", "yes", "There is no pleural effusion.")
    assert not dg.supports("Is it benign?", "maybe", "benign", {"A": "yes", "C": "maybe"})
    options = {"A": "Metformin therapy", "B": "Insulin"}
    assert dg.supports("Which drug?", "A", "First-line therapy is metformin.", options)
    assert not dg.supports("Which drug?", "B", "First-line therapy is metformin.", options)
    assert not dg.supports("Q?", None, "anything")


def test_evidence_support_rates_have_stated_denominators() -> None:
    ev = lambda text, cited: {"text": text, "cited": cited}  # noqa: E731
    rows = [
        {"question": "Is there an effusion?", "parsed": "yes", "kind": "closed_vqa",
         "evidence": [ev("Right effusion.", True)]},
        {"question": "Is there an effusion?", "parsed": "yes", "kind": "closed_vqa",
         "evidence": [ev("No effusion.", True), ev("Large effusion.", False)]},
        {"question": "Is there an effusion?", "parsed": "no", "kind": "closed_vqa",
         "evidence": [ev("No effusion.", False)]},
        {"question": "Is there an effusion?", "parsed": "no", "kind": "closed_vqa",
         "evidence": []},
    ]
    out = dg.evidence_support(rows)
    assert out["answers_with_evidence"] == 3 and out["answers_citing"] == 2
    assert out["citation_rate"] == pytest.approx(2 / 3)
    assert out["support_rate_cited"] == pytest.approx(1 / 2)
    assert out["support_rate_shown"] == pytest.approx(1.0)


def test_copy_reference_rates() -> None:
    rows = [_row(0, True, noise_correct=True), _row(1, True, noise_correct=False),
            _row(2, False, noise_correct=True), _row(3, True)]
    out = dg.copy_reference(rows)
    assert out["probed"] == 3 and out["copy_reference_rate"] == pytest.approx(2 / 3)
    assert out["correct_with_image"] == 2
    assert out["copy_reference_rate_of_correct"] == pytest.approx(1 / 2)
    assert dg.copy_reference([_row(0, True)]) is None
