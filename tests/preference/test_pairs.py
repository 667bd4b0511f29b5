"""The RAG-PT pair logic on constructed model outputs: each subset, and every no-pair case."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmedrag.preference.judge import Judge, normalize, token_f1
from mmedrag.preference.pairs import (
    ModelOutput,
    PreferencePair,
    Sample,
    SampleOutputs,
    deduplicate,
    pairs_for_sample,
)

NO_RAG_PROMPT = [{"role": "user", "content": "Question: Is there a fracture?"}]
RAG_PROMPT = [{"role": "user", "content": "Evidence [1] ...\nQuestion: Is there a fracture?"}]
JUDGE = Judge()


def _sample(answer: str = "yes", **kw) -> Sample:
    return Sample(id=kw.pop("id", "s1"), question="Is there a fracture?", answer=answer,
                  image="img/a.png", **kw)


def _outputs(no_rag: str, rag: str, replaced: dict[str, str] | None = None) -> SampleOutputs:
    return SampleOutputs(
        no_rag=ModelOutput(no_rag, messages=NO_RAG_PROMPT),
        rag=ModelOutput(rag, messages=RAG_PROMPT),
        replaced={kind: ModelOutput(text, messages=RAG_PROMPT, image=f"replaced/{kind}.png")
                  for kind, text in (replaced or {}).items()})


def test_oa1_wrong_without_rag_right_with_rag() -> None:
    pairs = pairs_for_sample(_sample(), _outputs("No, it is normal.", "Yes."), JUDGE)
    assert [p.subset for p in pairs] == ["oa1"]
    pair = pairs[0]
    assert pair.prompt == RAG_PROMPT
    assert pair.chosen == "yes" and pair.rejected == "No, it is normal."
    # the rejected answer is the one produced (and judged) under the no-RAG prompt
    assert pair.meta["rejected_prompt"] == NO_RAG_PROMPT
    assert pair.images == ["img/a.png"] and pair.rejected_images is None


def test_oa2_right_without_rag_misled_with_rag() -> None:
    pairs = pairs_for_sample(_sample(), _outputs("yes", "No fracture is seen."), JUDGE)
    assert [p.subset for p in pairs] == ["oa2"]
    assert pairs[0].chosen == "yes" and pairs[0].rejected == "No fracture is seen."
    assert pairs[0].prompt == RAG_PROMPT


def test_cm_same_text_different_image() -> None:
    outputs = _outputs("yes", "yes", replaced={"noise": "Yes", "unrelated": "no"})
    pairs = pairs_for_sample(_sample(), outputs, JUDGE)
    assert [p.subset for p in pairs] == ["cm"]
    pair = pairs[0]
    assert pair.chosen == pair.rejected == "yes"
    assert pair.images == ["img/a.png"] and pair.rejected_images == ["replaced/noise.png"]
    assert pair.meta["replacement"] == "noise"
    row = pair.to_trl()
    assert row["chosen"] == [{"role": "assistant", "content": "yes"}]
    assert row["rejected_images"] == ["replaced/noise.png"]


def test_cm_and_oa_from_one_sample() -> None:
    outputs = _outputs("no", "yes", replaced={"noise": "yes", "unrelated": "yes"})
    subsets = sorted(p.subset for p in pairs_for_sample(_sample(), outputs, JUDGE))
    assert subsets == ["cm", "cm", "oa1"]


@pytest.mark.parametrize("no_rag,rag", [("yes", "Yes, a fracture."), ("no", "No.")])
def test_right_both_or_wrong_both_give_no_oa_pair(no_rag: str, rag: str) -> None:
    assert pairs_for_sample(_sample(), _outputs(no_rag, rag), JUDGE) == []


def test_identical_chosen_and_rejected_is_never_written() -> None:
    # an open answer judged wrong by F1 but whose text equals the target cannot happen through
    # the judge, so build the degenerate pair directly and through a replaced run without image
    pair = PreferencePair("cm", "s1", RAG_PROMPT, "yes", "yes", ["a.png"], ["a.png"])
    assert pair.is_degenerate()
    outputs = _outputs("yes", "yes")
    outputs.replaced["noise"] = ModelOutput("yes", messages=RAG_PROMPT, image=None)
    assert pairs_for_sample(_sample(), outputs, JUDGE) == []
    different = PreferencePair("cm", "s1", RAG_PROMPT, "yes", "yes", ["a.png"], ["n.png"])
    assert not different.is_degenerate()


def test_duplicate_samples_are_deduplicated() -> None:
    outputs = _outputs("no", "yes")
    first = pairs_for_sample(_sample(id="a"), outputs, JUDGE)
    second = pairs_for_sample(_sample(id="a"), outputs, JUDGE)
    other = pairs_for_sample(_sample("no", id="b"), _outputs("yes", "no"), JUDGE)
    kept, dropped = deduplicate(first + second + other)
    assert dropped == 1
    assert [p.subset for p in kept] == ["oa1", "oa1"]


def test_choice_and_open_tasks() -> None:
    options = {"A": "Aspirin", "B": "Warfarin"}
    mcq = Sample(id="m", question="Which is an anticoagulant?", answer="B", options=options)
    pairs = pairs_for_sample(mcq, _outputs("A. Aspirin", "The answer is B"), JUDGE)
    assert [(p.subset, p.chosen) for p in pairs] == [("oa1", "B. Warfarin")]
    open_q = Sample(id="o", question="Which organ?", answer="left lung", answer_type="OPEN")
    pairs = pairs_for_sample(open_q, _outputs("The left lung.", "heart"), JUDGE)
    assert [p.subset for p in pairs] == ["oa2"]


def test_judge_rules() -> None:
    assert JUDGE.is_correct("Yes, there is.", "yes", kind="closed")
    assert not JUDGE.is_correct("There is no doubt.", "yes", kind="closed")
    assert not JUDGE.is_correct("I cannot tell.", "yes", kind="closed")
    assert JUDGE.is_correct("whatever", "yes", kind="closed", parsed="yes")
    assert JUDGE.is_correct("(B)", "B", kind="choice", options={"A": "x", "B": "y"})
    assert JUDGE.is_correct("right kidney", "kidney", kind="open")  # F1 = 2/3 >= 0.5
    assert not JUDGE.is_correct("liver", "kidney", kind="open")
    assert token_f1("the left lung", "left lung") == 1.0
    assert normalize("The  Left, lung!") == "left lung"


@given(st.text(min_size=1, max_size=30))
def test_f1_is_symmetric_and_bounded(text: str) -> None:
    other = "left lung"
    assert token_f1(text, other) == pytest.approx(token_f1(other, text))
    assert 0.0 <= token_f1(text, other) <= 1.0
