"""Prompt templates: every task, numbered evidence, image notes, errors."""

from __future__ import annotations

import pytest

from mmedrag.errors import UsageError
from mmedrag.generation.prompts import TASKS, available_versions, build_messages, load_templates
from mmedrag.records import Hit, Record


def _hits(*texts: str) -> list[Hit]:
    return [Hit(record=Record(id=f"r{i}", text=t), score=1.0) for i, t in enumerate(texts)]


@pytest.mark.parametrize("task", TASKS)
def test_every_task_numbers_evidence_and_asks_for_citations(task: str) -> None:
    options = {"A": "Edema", "B": "Effusion"} if task.startswith("mcq") else None
    messages = build_messages(task, "What is shown?", _hits("Left effusion.", "Clear lungs."),
                              options)
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert "[1] Left effusion." in user and "[2] Clear lungs." in user
    assert "[n]" in user
    assert user.index("[2]") < user.index("Question: What is shown?")
    if options:
        assert "A. Edema" in user and "B. Effusion" in user
    bare = build_messages(task, "What is shown?", [], options)[1]["content"]
    assert "[1]" not in bare and "[n]" not in bare and "Evidence" not in bare


def test_verification_of_choice_asks_to_verify_each_option() -> None:
    user = build_messages("mcq_voc", "Q?", _hits("x"), {"A": "a", "B": "b"})[1]["content"]
    assert "Verify each option in turn" in user and "Answer: <letter>" in user


def test_image_notes_and_evidence_cut() -> None:
    long = "word " * 500
    seen = build_messages("open_vqa", "Q?", _hits(long), image="seen",
                          evidence_chars=100)[1]["content"]
    assert "image is attached" in seen
    evidence_line = next(line for line in seen.splitlines() if line.startswith("[1]"))
    assert len(evidence_line) <= 110 and evidence_line.endswith("...")
    system, unseen = (m["content"] for m in build_messages("open_vqa", "Q?", _hits("x"),
                                                           image="not_seen"))
    assert unseen.startswith("Reports of similar images:\n[1] x")
    assert "cannot see the image" in system
    bare = build_messages("open_vqa", "Q?", [], image="not_seen")[1]["content"]
    assert bare.startswith("You cannot see the medical image")


def test_errors_name_the_problem() -> None:
    assert "v1" in available_versions()
    assert load_templates("v1")["version"] == "v1"
    with pytest.raises(UsageError, match="unknown prompt_version 'v9'"):
        build_messages("open_vqa", "Q?", [], version="v9")
    with pytest.raises(UsageError, match="unknown task 'essay'"):
        build_messages("essay", "Q?", [])
    with pytest.raises(UsageError, match="needs options"):
        build_messages("mcq", "Q?", [])
