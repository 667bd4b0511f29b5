"""Chunking properties: size bound, order, coverage and overlap."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mmedrag.ingest.chunking import chunk_text

words = st.text(alphabet="abcdefghij", min_size=1, max_size=6)
sentences = st.lists(words, min_size=1, max_size=30).map(lambda ws: " ".join(ws).capitalize() + ".")


@settings(max_examples=150, deadline=None)
@given(st.lists(sentences, min_size=1, max_size=25), st.integers(5, 60), st.integers(0, 4))
def test_chunks_respect_size_and_cover_text_in_order(sents: list[str], size: int,
                                                     overlap: int) -> None:
    text = " ".join(sents)
    chunks = chunk_text(text, size=size, overlap=overlap)
    assert all(len(c.split()) <= size for c in chunks)
    # every word of the text appears, in order, when overlaps are removed
    stream = [w for c in chunks for w in c.split()]
    source = text.split()
    position = 0
    for word in stream:
        if position < len(source) and word == source[position]:
            position += 1
    assert position == len(source)


def test_sentence_boundaries_and_overlap() -> None:
    text = "Alpha beta gamma. Delta epsilon. Zeta eta theta iota. Kappa."
    assert chunk_text(text, size=5, overlap=0) == [
        "Alpha beta gamma. Delta epsilon.", "Zeta eta theta iota. Kappa."]
    overlapped = chunk_text(text, size=6, overlap=2)
    assert overlapped[1].startswith("Delta epsilon.")
