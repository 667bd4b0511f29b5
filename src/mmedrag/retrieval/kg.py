"""KG-Rank: knowledge-graph retrieval with entity linking and (re)ranking of triples.

For a question, :class:`Gazetteer` finds the KG entities it names (exact n-gram match over
labels and synonyms, longest first, then fuzzy matching with rapidfuzz for misspellings). The
retriever collects their 1-hop triples (optionally 2-hop, through the neighbouring entities),
ranks them by the cosine between the question's and the triple's embedding (the index's text
encoder) plus a relation-intent term (cosine of the question with the relation alone),
optionally diversifies them with MMR and reranks the head with a cross-encoder, and
returns them as evidence hits: text "head — relation — tail", domain "kg", retriever "kg".

Example:
    >>> kg = KGRetriever(kg_path="kg.sqlite", encoder="hashing")  # doctest: +SKIP
    >>> kg.retrieve(Query(text="What are the symptoms of influenza?"), k=5)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.errors import UsageError
from mmedrag.records import Hit, Query, Record, content_id
from mmedrag.retrieval.kg_store import KnowledgeGraph, StoredTriple, normalise
from mmedrag.retrieval.protocol import SearchableIndex

FUNCTION_WORDS = frozenset(
    "a an and are as at be by can could do does for from has have how i in is it its me my of "
    "on or should the their there these this those to was were what when where which who why "
    "will with would you your".split())
# Words that never name an entity on their own (a gram made only of these is skipped).
GENERIC_WORDS = FUNCTION_WORDS | frozenset(
    "symptom symptoms sign signs cause causes causing treatment treat disease diseases disorder "
    "patient patients show shows image finding findings".split())


@dataclass(frozen=True)
class EntityMatch:
    """An entity named in the text: the KG key, the words that named it, and a 0–100 score."""

    entity: str
    surface: str
    start: int
    end: int
    score: float


class Gazetteer:
    """Finds KG entity names in free text (exact n-grams, then fuzzy with rapidfuzz).

    Args:
        names: normalised surface name → entity key (``KnowledgeGraph.names()``).
        fuzzy_threshold: minimum rapidfuzz ``ratio`` (0–100) for a fuzzy match; 100 disables.
        max_ngram: longest name, in words, looked for.
        min_fuzzy_chars: shorter n-grams are matched exactly only.

    Example:
        >>> g = Gazetteer({"influenza": "influenza", "swine influenza": "swine influenza"})
        >>> [(m.entity, m.score) for m in g.find("Symptoms of swine influenza?")]
        [('swine influenza', 100.0)]
        >>> [m.entity for m in g.find("is it influensa")]
        ['influenza']
    """

    def __init__(self, names: dict[str, str], fuzzy_threshold: float = 85.0, max_ngram: int = 8,
                 min_fuzzy_chars: int = 5) -> None:
        self.names = names
        self.fuzzy_threshold = float(fuzzy_threshold)
        self.max_ngram = max_ngram
        self.min_fuzzy_chars = min_fuzzy_chars
        self._choices = [n for n in names if len(n) >= min_fuzzy_chars]

    def find(self, text: str) -> list[EntityMatch]:
        """Non-overlapping matches in text order; exact beats fuzzy, longer beats shorter."""
        tokens = normalise(text).split()
        covered = [False] * len(tokens)
        matches = self._exact(tokens, covered)
        if self.fuzzy_threshold < 100 and self._choices:
            matches += self._fuzzy(tokens, covered)
        return sorted(matches, key=lambda m: m.start)

    def _grams(self, tokens: list[str], covered: list[bool]):  # noqa: ANN202 - generator
        for n in range(min(self.max_ngram, len(tokens)), 0, -1):
            for start in range(len(tokens) - n + 1):
                words = tokens[start:start + n]
                if any(covered[start:start + n]) or words[0] in FUNCTION_WORDS \
                        or words[-1] in FUNCTION_WORDS or all(w in GENERIC_WORDS for w in words):
                    continue
                yield start, n, " ".join(words)

    def _exact(self, tokens: list[str], covered: list[bool]) -> list[EntityMatch]:
        found = []
        for start, n, gram in self._grams(tokens, covered):
            if gram in self.names and not any(covered[start:start + n]):
                found.append(EntityMatch(self.names[gram], gram, start, start + n, 100.0))
                covered[start:start + n] = [True] * n
        return found

    def _fuzzy(self, tokens: list[str], covered: list[bool]) -> list[EntityMatch]:
        from rapidfuzz import fuzz, process

        grams = [g for g in self._grams(tokens, covered) if len(g[2]) >= self.min_fuzzy_chars
                 and g[1] <= 4]
        if not grams:
            return []
        scores = process.cdist([g[2] for g in grams], self._choices, scorer=fuzz.ratio,
                               score_cutoff=self.fuzzy_threshold, dtype=np.uint8, workers=1)
        best = scores.argmax(axis=1)
        ranked = sorted(range(len(grams)), key=lambda i: (-int(scores[i, best[i]]), -grams[i][1],
                                                          grams[i][0]))
        found = []
        for i in ranked:
            score = int(scores[i, best[i]])
            start, n, gram = grams[i]
            if score < self.fuzzy_threshold or any(covered[start:start + n]):
                continue
            name = self._choices[int(best[i])]
            found.append(EntityMatch(self.names[name], gram, start, start + n, float(score)))
            covered[start:start + n] = [True] * n
        return found


def triple_record(triple: StoredTriple) -> Record:
    """A triple as an evidence record (stable id from its content)."""
    return Record(id=content_id(triple.head, triple.relation, triple.tail, prefix="kg"),
                  text=triple.text, domain="kg",
                  meta={"source": triple.source, "head": triple.head,
                        "relation": triple.relation, "tail": triple.tail})


class KGRetriever:
    """KG-Rank retriever over a graph built by ``mmedrag kg build``.

    Args:
        index: optional Index; its text encoder embeds questions and triples, and its
            ``artefacts.kg`` names the graph when ``kg_path`` is not given.
        kg_path: the SQLite graph file.
        encoder: a text encoder, a registry name ("hashing", "sentence-transformers") or
            ``{"name", "options"}``; default the index's text encoder, else all-MiniLM-L6-v2.
        hops: 1, or 2 to add the triples of neighbouring entities (scored × ``hop_decay``).
        max_per_entity: at most this many triples per entity (outgoing first).
        max_candidates: at most this many candidate triples are ranked.
        mmr: MMR λ in [0, 1] to diversify the ranking, or None (off).
        reranker: a reranker (object, registry name or {name, options}, e.g.
            ``{"name": "cross-encoder", "options": {"model": ...}}``) for the top ``rerank_top``.
        fuzzy_threshold: rapidfuzz ratio for fuzzy entity matches (100 = exact only).
        incoming_weight: factor for triples where the entity is the tail ("Y — is a — X"), so
            facts *about* X (X as head) come first on a tie.

        relation_weight: weight of the relation-intent term cos(question, relation), which
            lets "What are the symptoms of X?" prefer "has symptom" over "is a" triples.

    Score of a triple: [cos(question, triple) + relation_weight · cos(question, relation)]
    × match score/100 × hop_decay^(hop−1) × (incoming_weight if the entity is the tail).

    Example:
        >>> KGRetriever(kg_path="kg.sqlite", encoder="hashing").retrieve(
        ...     Query(text="What are the symptoms of influenza?"), k=5)  # doctest: +SKIP
    """

    name = "kg"

    def __init__(self, index: SearchableIndex | None = None, kg_path: str | Path | None = None,
                 encoder: Any = None,
                 hops: int = 1, max_per_entity: int = 100, max_candidates: int = 400,
                 hop_decay: float = 0.8, mmr: float | None = None, reranker: Any = None,
                 rerank_top: int = 30, fuzzy_threshold: float = 85.0,
                 incoming_weight: float = 0.9, relation_weight: float = 0.5) -> None:
        kg_path = kg_path or (index.artefacts.kg if index is not None else None)
        if not kg_path:
            raise UsageError("kg retriever needs kg_path (or an index with a stored 'kg' path; "
                             "see 'mmedrag kg build --index')")
        if hops not in (1, 2):
            raise UsageError(f"kg retriever: hops must be 1 or 2, got {hops}")
        if mmr is not None and not 0 <= float(mmr) <= 1:
            raise UsageError(f"kg retriever: mmr must be in [0, 1] or null, got {mmr}")
        self.kg_path = str(kg_path)
        self.graph = KnowledgeGraph(kg_path)
        self.gazetteer = Gazetteer(self.graph.names(), fuzzy_threshold=fuzzy_threshold)
        self._encoder_spec = encoder if isinstance(encoder, (str, dict)) else None
        self.encoder = self._encoder(index, encoder)
        self.hops, self.max_per_entity, self.max_candidates = hops, max_per_entity, max_candidates
        self.hop_decay, self.mmr, self.rerank_top = hop_decay, mmr, rerank_top
        self.fuzzy_threshold, self.incoming_weight = fuzzy_threshold, incoming_weight
        self.relation_weight = relation_weight
        self._reranker_spec = reranker if isinstance(reranker, (str, dict)) else None
        self.reranker = self._component("reranker", reranker) if self._reranker_spec else reranker

    @staticmethod
    def _component(kind: str, spec: str | dict[str, Any]) -> Any:
        """Build a registry component from a name or ``{"name", "options"}``."""
        from mmedrag.registry import REGISTRY

        spec = {"name": spec} if isinstance(spec, str) else spec
        if "name" not in spec:
            raise UsageError(f"kg retriever: {kind} must be a name or {{name, options}}")
        return REGISTRY.create(kind, spec["name"], **dict(spec.get("options") or {}))

    @classmethod
    def _encoder(cls, index: SearchableIndex | None, encoder: Any) -> Any:
        if encoder is None:
            if index is not None:
                return index.text_encoder
            encoder = "sentence-transformers"
        if isinstance(encoder, (str, dict)):
            return cls._component("text_encoder", encoder)
        return encoder

    def candidates(self, matches: list[EntityMatch]) -> list[tuple[StoredTriple, EntityMatch, int]]:
        """Triples around the matched entities: (triple, entity match, hop), deduplicated."""
        seen: set[int] = set()
        out: list[tuple[StoredTriple, EntityMatch, int]] = []
        frontier: list[tuple[str, EntityMatch]] = []
        for match in matches:
            for triple in self.graph.triples_of(match.entity, self.max_per_entity):
                if triple.id not in seen:
                    seen.add(triple.id)
                    out.append((triple, match, 1))
                    other = triple.tail_key if triple.head_key == match.entity else triple.head_key
                    frontier.append((other, match))
        if self.hops == 2:
            for entity, match in frontier:
                if len(out) >= self.max_candidates:
                    break
                for triple in self.graph.triples_of(entity, self.max_per_entity):
                    if triple.id not in seen:
                        seen.add(triple.id)
                        out.append((triple, match, 2))
        return out[: self.max_candidates]

    def retrieve(self, query: Query, k: int) -> list[Hit]:
        if not query.text or k <= 0:
            return []
        matches = self.gazetteer.find(query.text)
        found = self.candidates(matches)
        if not found:
            return []
        question = self.encoder.encode_texts([query.text])[0]
        vectors = self.encoder.encode_texts([t.text for t, _, _ in found])
        similarity = vectors @ question
        relations = sorted({t.relation for t, _, _ in found})
        intent = dict(zip(relations, self.encoder.encode_texts(relations) @ question, strict=True))
        relevance = similarity + self.relation_weight * np.array([intent[t.relation]
                                                                  for t, _, _ in found])
        scores = relevance * np.array([self._weight(t, m, hop) for t, m, hop in found])
        if self.mmr is not None:
            from mmedrag.retrieval.rerank import mmr_order

            order, values = mmr_order(scores, vectors, len(found), float(self.mmr))
            scores = np.zeros(len(found))
            scores[order] = values
        else:
            order = sorted(range(len(found)), key=lambda i: (-scores[i], found[i][0].id))
        hits = [self._hit(found[i], float(scores[i]), float(similarity[i]), rank)
                for rank, i in enumerate(order, start=1)]
        if self.reranker is not None:
            head = self.reranker.rerank(query, hits[: self.rerank_top], k)
            hits = [*head, *hits[self.rerank_top:]]
            for rank, hit in enumerate(hits, start=1):
                hit.rank = rank
        return hits[:k]

    def _weight(self, triple: StoredTriple, match: EntityMatch, hop: int) -> float:
        """Match confidence × hop decay × (incoming_weight when the entity is the tail)."""
        direction = 1.0 if hop > 1 or triple.head_key == match.entity else self.incoming_weight
        return match.score / 100 * self.hop_decay ** (hop - 1) * direction

    def _hit(self, item: tuple[StoredTriple, EntityMatch, int], score: float, similarity: float,
             rank: int) -> Hit:
        triple, match, hop = item
        return Hit(record=triple_record(triple), score=score, retriever=self.name, rank=rank,
                   details={"entity": match.entity, "surface": match.surface,
                            "match_score": match.score, "hop": hop,
                            "similarity": round(similarity, 6)})

    def entities(self, text: str) -> list[EntityMatch]:
        """The entities recognised in ``text`` (for explanations and debugging)."""
        return self.gazetteer.find(text)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "options": {
            "kg_path": self.kg_path, "hops": self.hops, "max_per_entity": self.max_per_entity,
            "max_candidates": self.max_candidates, "hop_decay": self.hop_decay, "mmr": self.mmr,
            "rerank_top": self.rerank_top, "fuzzy_threshold": self.fuzzy_threshold,
            "incoming_weight": self.incoming_weight, "relation_weight": self.relation_weight,
            "encoder": self._encoder_spec, "reranker": self._reranker_spec}}
