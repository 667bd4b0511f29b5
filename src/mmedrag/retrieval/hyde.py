"""HyDE query expansion (SL-HyDE): retrieve with a hypothetical document written by the LLM.

A short question and the reports or passages that answer it use different words. HyDE asks the
generator to *write* a plausible answer document first, then retrieves with it: the hypothetical
document's embedding is fused with the question's (weighted mean of the normalised vectors,
``fusion="mean"``), or the two rankings are fused by reciprocal rank (``fusion="rrf"``, which
also works for BM25 or any other base retriever). HyDE is off by default
(``retrieval.hyde: false``): it costs one generation per query.

``hypothetical_query`` is the text-level variant the pipeline uses: the question followed by
the hypothetical document, searched by every text retriever.

Example:
    >>> from mmedrag.generation.echo import EchoGenerator
    >>> hypothetical_query("Is there a pneumothorax?", EchoGenerator()).startswith(
    ...     "Is there a pneumothorax?")
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmedrag.errors import UsageError
from mmedrag.records import Hit, Query
from mmedrag.retrieval.dense import query_filters
from mmedrag.retrieval.protocol import SearchableIndex

HYDE_PROMPT = ("Write a short passage from a medical report or textbook that answers the "
               "question. State findings plainly; do not mention that it is hypothetical.\n"
               "Question: {question}\nPassage:")


def hypothetical_document(question: str, generator: Any, max_tokens: int = 128, seed: int = 0,
                          prompt: str = HYDE_PROMPT) -> str:
    """The generator's hypothetical answer passage for ``question`` (stripped; may be empty)."""
    from mmedrag.generation.protocol import GenerationParams

    messages = [{"role": "user", "content": prompt.format(question=question)}]
    params = GenerationParams(max_tokens=max_tokens, temperature=0.0, seed=seed)
    return generator.generate(messages, None, params).text.strip()


def hypothetical_query(question: str, generator: Any, max_tokens: int = 128) -> str:
    """The question followed by its hypothetical document (text-level HyDE for any retriever)."""
    document = hypothetical_document(question, generator, max_tokens=max_tokens)
    return f"{question}\n{document}" if document else question


def _generator(generator: Any) -> Any:
    if generator is None:
        raise UsageError("hyde retriever needs a generator (an object or a registry name)")
    if isinstance(generator, (str, dict)):
        from mmedrag.registry import REGISTRY

        spec: dict[str, Any] = {"name": generator} if isinstance(generator, str) else generator
        return REGISTRY.create("generator", spec["name"], **dict(spec.get("options") or {}))
    return generator


class HydeRetriever:
    """Retrieval with the question's embedding fused with a hypothetical document's.

    Args:
        index: the Index to search (its text encoder embeds question and hypothesis).
        generator: a Generator (``generate(messages, images, params)``) or a registry name.
        base: for ``fusion="rrf"``, the retriever run on both texts (default dense text).
        weight: share of the hypothetical document, in [0, 1] (0 = plain retrieval).
        fusion: "mean" (weighted mean of normalised vectors) or "rrf" (rank fusion).
        max_tokens: length of the hypothetical document.

    Example:
        >>> HydeRetriever(index, generator="llama-cpp").retrieve(
        ...     Query(text="why is the liver bumpy?"), k=5)  # doctest: +SKIP
    """

    name = "hyde"

    def __init__(self, index: SearchableIndex | None = None, generator: Any = None,
                 base: Any = None,
                 weight: float = 0.5, fusion: str = "mean", max_tokens: int = 128,
                 prompt: str = HYDE_PROMPT) -> None:
        if fusion not in ("mean", "rrf"):
            raise UsageError(f"hyde retriever: fusion must be 'mean' or 'rrf', got {fusion!r}")
        if not 0.0 <= float(weight) <= 1.0:
            raise UsageError(f"hyde retriever: weight must be in [0, 1], got {weight}")
        if index is None and (fusion == "mean" or base is None):
            raise UsageError("hyde retriever needs an index (or fusion='rrf' with a base "
                             "retriever)")
        if "{question}" not in prompt:
            raise UsageError("hyde retriever: prompt must contain '{question}'")
        self.index, self.base = index, base
        self.generator = _generator(generator)
        self.weight, self.fusion = float(weight), fusion
        self.max_tokens, self.prompt = max_tokens, prompt
        self.last_hypothesis = ""

    def retrieve(self, query: Query, k: int) -> list[Hit]:
        if not query.text:
            return self._base().retrieve(query, k)
        hypothesis = hypothetical_document(query.text, self.generator, self.max_tokens,
                                           prompt=self.prompt)
        self.last_hypothesis = hypothesis
        if self.fusion == "mean":
            hits = self._mean(query, hypothesis, k)
        else:
            hits = self._rrf(query, hypothesis, k)
        info = {"hypothesis": hypothesis, "weight": self.weight, "fusion": self.fusion}
        for rank, hit in enumerate(hits, start=1):
            hit.retriever, hit.rank = self.name, rank
            hit.details = {**hit.details, "hyde": info}
        return hits

    def _base(self) -> Any:
        if self.base is None:
            from mmedrag.retrieval.dense import DenseRetriever

            self.base = DenseRetriever(self._index())
        return self.base

    def _index(self) -> SearchableIndex:
        if self.index is None:
            raise UsageError("hyde retriever: fusion='mean' needs an index")
        return self.index

    def _mean(self, query: Query, hypothesis: str, k: int) -> list[Hit]:
        from mmedrag.encoders.protocol import l2_normalise

        index = self._index()
        encoder = index.text_encoder
        texts = [query.text, hypothesis] if hypothesis else [query.text]
        vectors = encoder.encode_texts(texts)
        weights = np.array([1 - self.weight, self.weight][: len(texts)], dtype=np.float32)
        if len(texts) == 1:
            weights = np.ones(1, dtype=np.float32)
        fused = l2_normalise((weights[:, None] * vectors).sum(axis=0, keepdims=True))
        return index.search_vectors(fused, k, "text", query_filters(query))[0]

    def _rrf(self, query: Query, hypothesis: str, k: int) -> list[Hit]:
        from mmedrag.retrieval.hybrid import reciprocal_rank_fusion

        base = self._base()
        rankings = [base.retrieve(query, k)]
        if hypothesis:
            rankings.append(base.retrieve(Query(text=hypothesis, domain=query.domain,
                                                filters=query.filters), k))
        weights = [1 - self.weight, self.weight][: len(rankings)] if len(rankings) > 1 else [1.0]
        return reciprocal_rank_fusion(rankings, k, weights=weights, name=self.name)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "options": {"weight": self.weight, "fusion": self.fusion,
                                               "max_tokens": self.max_tokens}}
