"""Rerankers: identity, cross-encoder (sentence-transformers) and MMR diversity.

Every reranker takes the hits of a retriever (or of RRF fusion,
:func:`mmedrag.retrieval.hybrid.reciprocal_rank_fusion`) and returns new Hit objects, best
first, with ``rank`` renumbered, ``score`` set to the reranker's score and the previous score and
rank kept in ``details["rerank"]``. ``retriever`` still names who found the record. Each one
serialises its configuration with ``config()`` → ``{"name", "options"}`` (a registry Component).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from mmedrag.errors import MmedragError, UsageError
from mmedrag.records import Hit, Query
from mmedrag.retrieval.protocol import SearchableIndex


def reranked(hits: list[Hit], scores: list[float], order: list[int], by: str) -> list[Hit]:
    """New hits in ``order`` with the given scores; previous score/rank go to details."""
    out = []
    for rank, i in enumerate(order, start=1):
        hit = hits[i]
        details = {**hit.details, "rerank": {"by": by, "score_before": float(hit.score),
                                             "rank_before": hit.rank or i + 1}}
        out.append(replace(hit, score=float(scores[i]), rank=rank, details=details))
    return out


class IdentityReranker:
    """Keeps the order; only truncates to k and renumbers ranks.

    Example:
        >>> IdentityReranker().rerank(Query(text="q"), [], k=3)
        []
    """

    name = "none"

    def __init__(self, index: SearchableIndex | None = None) -> None:
        self.index = index

    def rerank(self, query: Query, hits: list[Hit], k: int | None = None) -> list[Hit]:
        kept = hits[:k] if k is not None else hits
        return [replace(hit, rank=rank) for rank, hit in enumerate(kept, start=1)]

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "options": {}}


def _relevance_from_logits(scores: np.ndarray) -> np.ndarray:
    """One relevance score per pair: the logit (1 label) or P(label 1) (several labels)."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim == 2 and scores.shape[1] > 1:
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        return shifted[:, 1] / shifted.sum(axis=1)
    return scores.reshape(-1)


class CrossEncoderReranker:
    """Scores (question, passage) pairs with a sentence-transformers CrossEncoder.

    Args:
        model: hub id (needs the model in the local cache when offline) or a local folder.
        batch_size: pairs per forward pass.
        max_length: token limit of a pair (longer pairs are truncated).
        device: "cpu", "cuda", ...

    Image-only queries have no text to pair with, so their hits are returned unchanged.

    Example:
        >>> CrossEncoderReranker("cross-encoder/ms-marco-MiniLM-L-6-v2").rerank(
        ...     Query(text="pneumothorax"), hits, k=5)  # doctest: +SKIP
    """

    name = "cross-encoder"

    def __init__(self, model: str = "cross-encoder/ms-marco-MiniLM-L-6-v2", batch_size: int = 32,
                 max_length: int = 512, device: str = "cpu",
                 index: SearchableIndex | None = None) -> None:
        from sentence_transformers import CrossEncoder

        from mmedrag.encoders.text import resolve_model_path

        path = resolve_model_path(model)
        try:
            self._model = CrossEncoder(path, device=device, max_length=max_length)
        except Exception as exc:  # noqa: BLE001 - re-raised with the model named
            raise MmedragError(f"cannot load cross-encoder {model!r} (from {path}): "
                               f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                               ) from exc
        self.model, self.batch_size = model, batch_size
        self.max_length, self.device = max_length, device

    def score(self, question: str, passages: list[str]) -> np.ndarray:
        """Relevance of each passage to the question (higher is better)."""
        if not passages:
            return np.zeros(0)
        logits = self._model.predict([(question, p) for p in passages],
                                     batch_size=self.batch_size, show_progress_bar=False)
        return _relevance_from_logits(logits)

    def rerank(self, query: Query, hits: list[Hit], k: int | None = None) -> list[Hit]:
        if not hits or not query.text:
            return IdentityReranker().rerank(query, hits, k)
        scores = self.score(query.text, [h.record.text for h in hits]).tolist()
        order = sorted(range(len(hits)), key=lambda i: (-scores[i], i))
        return reranked(hits, scores, order[:k] if k is not None else order, self.name)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "options": {"model": self.model, "batch_size": self.batch_size,
                                               "max_length": self.max_length,
                                               "device": self.device}}


def mmr_order(relevance: np.ndarray, vectors: np.ndarray, k: int,
              lambda_mult: float) -> tuple[list[int], list[float]]:
    """Greedy maximal marginal relevance: λ·rel(d) − (1 − λ)·max_{s picked} cos(d, s).

    Returns the picked positions and each one's MMR value when it was picked. Ties go to the
    earlier position, so the result is deterministic.

    Example:
        >>> v = np.array([[1, 0], [1, 0], [0, 1]], dtype=float)
        >>> mmr_order(np.array([0.9, 0.85, 0.5]), v, 2, 0.5)[0]
        [0, 2]
    """
    n = len(relevance)
    k = min(k, n)
    picked: list[int] = []
    values: list[float] = []
    redundancy = np.full(n, -np.inf)
    available = np.ones(n, dtype=bool)
    for _ in range(k):
        penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
        objective = lambda_mult * relevance - (1 - lambda_mult) * penalty
        objective = np.where(available, objective, -np.inf)
        best = int(np.argmax(objective))
        picked.append(best)
        values.append(float(objective[best]))
        available[best] = False
        redundancy = np.maximum(redundancy, vectors @ vectors[best])
    return picked, values


class MMRReranker:
    """Maximal marginal relevance: trades relevance to the question against redundancy.

    Args:
        index: an Index whose stored text vectors are reused (and whose text encoder embeds the
            question and any hit not in the store).
        encoder: a text encoder (object, registry name or {name, options}) to use instead of
            (or without) an index.
        lambda_mult: 1.0 = pure relevance, 0.0 = pure diversity.

    A hit's relevance is the cosine of its vector with the question's; for image-only queries
    it is the retriever's score scaled to [0, 1]. The output score is the MMR value at the time
    the hit was picked.

    Example:
        >>> MMRReranker(index, lambda_mult=0.7).rerank(
        ...     Query(text="effusion"), hits, k=5)  # doctest: +SKIP
    """

    name = "mmr"

    def __init__(self, index: SearchableIndex | None = None, encoder: Any = None,
                 lambda_mult: float = 0.7) -> None:
        if not 0.0 <= float(lambda_mult) <= 1.0:
            raise UsageError(f"mmr reranker: lambda_mult must be in [0, 1], got {lambda_mult}")
        self.index = index
        if isinstance(encoder, (str, dict)):
            from mmedrag.registry import REGISTRY

            spec: dict[str, Any] = {"name": encoder} if isinstance(encoder, str) else encoder
            encoder = REGISTRY.create("text_encoder", spec["name"],
                                      **dict(spec.get("options") or {}))
        if encoder is None and index is None:
            raise UsageError("mmr reranker needs an index or a text encoder (option encoder, "
                             "e.g. 'sentence-transformers') to compare hits")
        self.encoder = encoder if encoder is not None else index.text_encoder  # type: ignore[union-attr]
        self.lambda_mult = float(lambda_mult)

    def vectors(self, hits: list[Hit]) -> np.ndarray:
        """Hit vectors: stored ones when the index holds the record, else freshly encoded."""
        ids = [h.id for h in hits]
        stored: set[str] = set()
        if self.index is not None and getattr(self.index, "text_store", None) is not None:
            stored = self.index.text_store.has(ids)
        out = np.zeros((len(hits), int(self.encoder.dim)), dtype=np.float32)
        known = [i for i, hit_id in enumerate(ids) if hit_id in stored]
        fresh = [i for i, hit_id in enumerate(ids) if hit_id not in stored]
        if known and self.index is not None:
            out[known] = self.index.text_store.vectors([ids[i] for i in known])
        if fresh:
            out[fresh] = self.encoder.encode_texts([hits[i].record.text for i in fresh])
        return out

    def rerank(self, query: Query, hits: list[Hit], k: int | None = None) -> list[Hit]:
        if not hits:
            return []
        vectors = self.vectors(hits)
        if query.text:
            relevance = vectors @ self.encoder.encode_texts([query.text])[0]
        else:
            raw = np.array([h.score for h in hits], dtype=float)
            spread = raw.max() - raw.min()
            relevance = (raw - raw.min()) / spread if spread > 0 else np.ones_like(raw)
        order, values = mmr_order(np.asarray(relevance, dtype=float), vectors,
                                  k if k is not None else len(hits), self.lambda_mult)
        scores = [0.0] * len(hits)
        for position, value in zip(order, values, strict=True):
            scores[position] = value
        return reranked(hits, scores, order, self.name)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "options": {"lambda_mult": self.lambda_mult}}
