"""The rule-based echo generator (the test/dev backend) follows its documented rules."""

from __future__ import annotations

import pytest

from mmedrag.generation.echo import EchoGenerator
from mmedrag.generation.prompts import build_messages
from mmedrag.records import Hit, Record


def _hits(*texts: str) -> list[Hit]:
    return [Hit(record=Record(id=f"r{i}", text=t), score=1.0) for i, t in enumerate(texts)]


def test_closed_answer_and_yes_probability_come_from_the_first_evidence() -> None:
    gen = EchoGenerator()
    hits = _hits("A: No. A: No. A: Yes.", "yes yes")
    out = gen.generate(build_messages("closed_vqa", "Q?", hits))
    assert out.text == "no [1]"
    assert out.yes_probability == pytest.approx((1 + 1) / (1 + 2 + 2))
    assert out.model == "echo" and out.tokens_out == 2


def test_mcq_picks_the_option_overlapping_the_evidence() -> None:
    msgs = build_messages("mcq", "Q?", _hits("bilateral pleural effusion"),
                          {"A": "pneumothorax", "B": "pleural effusion", "C": "edema"})
    assert EchoGenerator().generate(msgs).text == "Answer: B [1]"


def test_open_answer_is_the_first_sentence_and_no_evidence_is_unknown() -> None:
    gen = EchoGenerator()
    assert gen.generate(build_messages("open_vqa", "Q?", _hits("Left kidney mass. Big."))).text \
        == "Left kidney mass. [1]"
    out = gen.generate(build_messages("open_vqa", "Q?", []))
    assert out.text == "unknown" and out.logprobs and out.logprobs[0] < -1.0
