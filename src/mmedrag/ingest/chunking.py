"""Sentence-aware chunking by token count with overlap (whitespace tokens by default)."""

from __future__ import annotations

import re
from collections.abc import Callable

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])|\n{2,}")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]


def chunk_text(text: str, size: int = 100, overlap: int = 20,
               count: Callable[[str], int] | None = None) -> list[str]:
    """Chunks of at most ``size`` tokens that end at sentence boundaries where possible,
    repeating about ``overlap`` tokens of trailing sentences at the start of the next chunk.
    A single sentence longer than ``size`` is cut by tokens.

    Example:
        >>> chunk_text("One two. Three four. Five six.", size=4, overlap=0)
        ['One two. Three four.', 'Five six.']
    """
    if size <= 0 or overlap < 0 or overlap >= size:
        raise ValueError("need size > 0 and 0 <= overlap < size")
    count = count or (lambda s: len(s.split()))
    pieces: list[str] = []
    for sentence in split_sentences(text):
        words = sentence.split()
        if count(sentence) <= size:
            pieces.append(sentence)
        else:
            step = size - overlap if overlap else size
            for start in range(0, len(words), step):
                pieces.append(" ".join(words[start:start + size]))
                if start + size >= len(words):
                    break
    chunks: list[str] = []
    current: list[str] = []
    tokens = 0
    for piece in pieces:
        n = count(piece)
        if current and tokens + n > size:
            chunks.append(" ".join(current))
            carry: list[str] = []
            carried = 0
            for prev in reversed(current):
                m = count(prev)
                if carried + m > overlap or carried + m + n > size:
                    break
                carry.insert(0, prev)
                carried += m
            current, tokens = carry, carried
        current.append(piece)
        tokens += n
    if current:
        chunks.append(" ".join(current))
    return chunks
