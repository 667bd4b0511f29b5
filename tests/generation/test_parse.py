"""Answer parsers: worked examples and hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmedrag.generation.parse import (
    first_sentence,
    parse_answer,
    parse_citations,
    parse_option,
    parse_yes_no,
)

# Filler that can never contain a yes/no word, an option letter cue or a citation.
filler = st.text(alphabet="xyz qrstuvw,", max_size=40).filter(
    lambda s: not any(w in s.split() for w in ("no",)))
letters = st.sampled_from("ABCDEFGHIJ")


@pytest.mark.parametrize("text,expected", [
    ("Yes.", "yes"), ("no", "no"), ("NO, there is no effusion", "no"),
    ("The answer is yes [1].", "yes"), ("Based on the evidence, no.", "no"),
    ("Answer: No. Although yes-like findings ...", "no"),
    ("There is no fracture, so yes the bones are intact", "no"),
    ("Final answer: yes", "yes"), ("True", "yes"), ("false.", "no"),
    ("The kidneys are normal.", None), ("", None), ("Nobody knows", None),
])
def test_yes_no_examples(text: str, expected: str | None) -> None:
    assert parse_yes_no(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("The answer is (B)", "B"), ("B.", "B"), ("Option b", "B"), ("answer: C) Pneumonia", "C"),
    ("Answer: D", "D"), ("(E) is correct", "E"), ("I choose option J.", "J"),
    ("The correct answer is A because ...", "A"), ("the answer is a fracture", None),
    ("A patient with fever", None), ("\nC) Edema\n", "C"), ("", None),
    ("Final answer: [F]", "F"),
])
def test_option_examples(text: str, expected: str | None) -> None:
    assert parse_option(text) == expected


def test_option_by_text_when_no_letter() -> None:
    options = {"A": "Pneumonia", "B": "Pulmonary edema", "C": "Pneumothorax"}
    assert parse_option("It is most likely pulmonary edema.", options=options) == "B"
    assert parse_option("pneumonia or pneumothorax", options=options) is None
    assert parse_option("Answer: K", options=options) is None      # K is not an option


@given(letter=letters, before=filler, after=filler,
       template=st.sampled_from(["The answer is ({})", "Answer: {}", "answer: {}) text",
                                 "Option {}", "{}.", "The correct option is {}",
                                 "answer is {}", "Final answer: [{}]"]),
       lower=st.booleans())
@settings(max_examples=300, deadline=None)
def test_option_found_in_any_template(letter: str, before: str, after: str, template: str,
                                      lower: bool) -> None:
    cue = template.format(letter.lower() if lower and "Option" in template else letter)
    text = f"{cue} {after}" if template == "{}." else f"{before}\n{cue} {after}"
    assert parse_option(text) == letter


@given(word=st.sampled_from(["yes", "no", "Yes", "No", "YES", "NO"]), before=filler,
       after=filler)
@settings(max_examples=200, deadline=None)
def test_marked_yes_no_wins(word: str, before: str, after: str) -> None:
    text = f"{before} Answer: {word}. {after} no yes"
    assert parse_yes_no(text) == word.lower()


@given(numbers=st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=8),
       words=filler)
@settings(max_examples=200, deadline=None)
def test_citations_round_trip(numbers: list[int], words: str) -> None:
    text = " ".join(f"{words} [{n}]" for n in numbers)
    expected = list(dict.fromkeys(numbers))
    assert parse_citations(text) == expected


@given(a=st.integers(1, 20), b=st.integers(1, 20))
def test_citation_groups_and_ranges(a: int, b: int) -> None:
    assert parse_citations(f"[{a}, {b}]") == list(dict.fromkeys([a, b]))
    low, high = min(a, b), max(a, b)
    if low < high:
        assert parse_citations(f"[{low}-{high}]") == list(range(low, high + 1))


def test_citations_ignore_non_numbers() -> None:
    assert parse_citations("see [a] and [1.5] and [ 2 ]") == [2]


@pytest.mark.parametrize("text,expected", [
    ("A: incorrect, no mass [1].\nB: correct, effusion [2].\nC: incorrect.", "B"),
    ("A: correct\nB: correct\nAnswer: B", "B"),
    ("A: correct\nB: correct", None),
    ("Option A is incorrect.\nOption C is correct [1].", "C"),
    ("None verified; the answer is (D)", "D"),
])
def test_verification_of_choice(text: str, expected: str | None) -> None:
    options = {"A": "Mass", "B": "Effusion", "C": "Edema", "D": "Normal"}
    assert parse_answer("mcq_voc", text, options) == expected


def test_parse_answer_by_task() -> None:
    assert parse_answer("closed_vqa", "Yes [1]") == "yes"
    assert parse_answer("mcq_voc", "A: incorrect. B: correct.\nAnswer: B") == "B"
    assert parse_answer("open_vqa", "Answer: Left kidney [2]. It is large.") == "Left kidney"
    assert first_sentence("   ") is None


def test_option_text_matches_whole_words_only() -> None:
    from mmedrag.generation.parse import parse_option

    options = {"A": "yes", "B": "no", "C": "maybe"}
    assert parse_option("The answer is not possible.", options=options) is None
    assert parse_option("It is not clear", options=options) is None
    assert parse_option("no, it does not", options=options) == "B"
    assert parse_option("Probably yes.", options=options) == "A"
