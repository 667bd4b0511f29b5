"""MedQuAD chunks and their all-MiniLM-L6-v2 embeddings, cached under benchmarks/.cache/.

Chunks are fixed 100-word windows over every MedQuAD answer (41,260 chunks); queries are
MedQuAD questions (a fixed random sample). Embedding runs in parts of 4,096 chunks saved as
``.npy`` so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np

PART = 4096


def load_chunks(qa_path: Path, words: int = 100) -> tuple[list[str], list[str]]:
    """(chunk ids, chunk texts): fixed ``words``-word windows over each answer."""
    ids: list[str] = []
    texts: list[str] = []
    with qa_path.open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            tokens = row["answer"].split()
            for part, start in enumerate(range(0, len(tokens), words)):
                ids.append(f"{row['id']}#{part}")
                texts.append(" ".join(tokens[start:start + words]))
    return ids, texts


def load_questions(qa_path: Path, n: int, seed: int = 0) -> list[str]:
    """A fixed random sample of ``n`` distinct MedQuAD questions."""
    with qa_path.open(encoding="utf-8") as handle:
        questions = sorted({json.loads(line)["question"] for line in handle})
    random.Random(seed).shuffle(questions)
    return questions[:n]


def _encoder():  # noqa: ANN202
    from sentence_transformers import SentenceTransformer

    from mmedrag.encoders.text import resolve_model_path

    return SentenceTransformer(resolve_model_path("all-MiniLM-L6-v2"), device="cpu")


def embed_cached(texts: list[str], cache: Path, label: str, log: bool = True,
                 parts: str | None = None) -> np.ndarray:
    """Embeddings of ``texts`` (L2-normalised float32), computed once and cached by part.

    ``parts`` names another label's part folder to reuse: a prefix of that label's texts
    whose length is a multiple of ``PART`` reuses its parts as they are.
    """
    final = cache / f"{label}.npy"
    if final.exists():
        matrix = np.load(final)
        if len(matrix) == len(texts):
            return matrix
    parts_dir = cache / f"{parts or label}.parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    model = None
    pieces = []
    for number, start in enumerate(range(0, len(texts), PART)):
        part_path = parts_dir / f"{number:04d}.npy"
        expected = len(texts[start:start + PART])
        if part_path.exists() and len(np.load(part_path)) == expected:
            pieces.append(np.load(part_path))
            continue
        model = model or _encoder()
        vecs = model.encode(texts[start:start + PART], batch_size=64, convert_to_numpy=True,
                            normalize_embeddings=True).astype(np.float32)
        tmp = part_path.with_suffix(".tmp.npy")
        np.save(tmp, vecs)
        os.replace(tmp, part_path)
        pieces.append(vecs)
        if log:
            print(f"  embedded {label}: {start + expected}/{len(texts)}", flush=True)
    matrix = np.concatenate(pieces) if pieces else np.zeros((0, 384), np.float32)
    np.save(final, matrix)
    return matrix


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Embed MedQuAD chunks and questions (cached).")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent
                        / "shared" / "data")
    parser.add_argument("--cache", type=Path, default=Path(__file__).resolve().parent / ".cache")
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    qa = args.data / "medquad" / "qa.jsonl"
    _, texts = load_chunks(qa)
    embed_cached(load_questions(qa, args.queries), args.cache, f"medquad-questions-{args.queries}")
    embed_cached(texts, args.cache, f"medquad-chunks-{len(texts)}")


if __name__ == "__main__":
    main()
