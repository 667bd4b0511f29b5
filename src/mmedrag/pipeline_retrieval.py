"""The retrieval half of :class:`mmedrag.pipeline.Pipeline`: route → retrieve → fuse → rerank →
select, each stage timed and explained in the trace.

Optional stages (domain router, KG retriever, HyDE) are imported only when configured; a stage
whose module is absent is skipped and the trace says so.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

from mmedrag.config import Component, Config
from mmedrag.errors import UsageError
from mmedrag.records import Hit, Query
from mmedrag.registry import REGISTRY
from mmedrag.retrieval.hybrid import reciprocal_rank_fusion
from mmedrag.selection.protocol import Selection

_TEXT_RETRIEVERS = {"dense": ("dense",), "bm25": ("bm25",), "hybrid": ("dense", "bm25")}


class RetrievalFlow:
    """Builds the retrieval components of a config once and runs them per query.

    Example:
        >>> flow = RetrievalFlow(Config(), index)                               # doctest: +SKIP
        >>> hits, selection, info = flow.run("effusion?", None, 10, None, None)   # doctest: +SKIP
    """

    def __init__(self, config: Config, index: Any | None) -> None:
        if config.retrieval.mode not in _TEXT_RETRIEVERS:
            raise UsageError(f"retrieval.mode must be dense, bm25 or hybrid, got "
                             f"{config.retrieval.mode!r}")
        self.config = config
        self.index = index
        self._cache: dict[str, Any] = {}

    def derive(self, config: Config, keep_selector: bool) -> RetrievalFlow:
        """A flow for ``config`` sharing this one's built components."""
        clone = RetrievalFlow(config, self.index)
        clone._cache = {k: v for k, v in self._cache.items() if keep_selector or k != "selector"}
        return clone

    # -- components ----------------------------------------------------------------------------
    def _component(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def _router(self) -> tuple[Any | None, str]:
        def build() -> tuple[Any | None, str]:
            from mmedrag.retrieval.router import router_for

            try:
                router = router_for(self.index)
            except ModuleNotFoundError as exc:
                return None, f"domain router unavailable ({exc.name} missing)"
            return router, "" if router else "no domain router trained for this index"
        return self._component("router", build)

    def _reranker(self) -> Any | None:
        spec = self.config.reranker
        if spec.name == "none":
            return None
        def build() -> Any:
            cls = REGISTRY.get("reranker", spec.name)
            options = dict(spec.options)
            if "index" in inspect.signature(cls).parameters and "index" not in options:
                options["index"] = self.index
            return cls(**options)
        return self._component("reranker", build)

    def _selector(self) -> Any:
        def build() -> Any:
            spec = self.config.selector
            options = dict(spec.options)
            wants = spec.name == "calibrated" and "calibration" not in options
            if wants and self.index is not None:
                calibration = self.index.extra("calibration")
                if calibration is not None:
                    options["calibration"] = calibration
            return REGISTRY.create("selector", spec.name, **options)
        return self._component("selector", build)

    def _kg(self) -> Any | None:
        spec: Component | None = self.config.retrieval.kg
        if spec is None:
            return None
        return self._component("kg", lambda: REGISTRY.create("retriever", spec.name,
                                                             index=self.index, **spec.options))

    # -- running -------------------------------------------------------------------------------
    def run(self, question: str, image: Any, k: int, filters: dict[str, Any] | None,
            exclude_ids: set[str] | None, generator: Callable[[], Any] | None = None,
            ) -> tuple[list[Hit], Selection, dict[str, Any]]:
        """Route, retrieve ``k`` candidates, fuse, rerank and select; see Pipeline.retrieve."""
        trace: list[str] = []
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        domain, field, route = self._route(image, trace)
        seconds["route"] = time.perf_counter() - start
        filters = dict(filters or {})
        if domain is not None and field != "domain":
            filters[field] = domain
        query = Query(text=question, image=image, domain=domain if field == "domain" else None,
                      filters=filters)
        start = time.perf_counter()
        candidates = self._retrieve(query, k, exclude_ids or set(), trace, generator)
        seconds["retrieve"] = time.perf_counter() - start
        start = time.perf_counter()
        reranker = self._reranker()
        if reranker is not None:
            candidates = reranker.rerank(query, candidates, k)
            trace.append(f"reranked by {self.config.reranker.name}")
        seconds["rerank"] = time.perf_counter() - start
        start = time.perf_counter()
        selection = self._selector().select(candidates)
        seconds["select"] = time.perf_counter() - start
        trace.append(f"selector {self.config.selector.name}: kept {selection.k} of "
                     f"{len(candidates)}: {selection.reason}")
        info = {"domain": domain, "route": route, "trace": trace, "seconds": seconds,
                "candidates": len(candidates)}
        return selection.hits, selection, info

    def _route(self, image: Any, trace: list[str]) -> tuple[str | None, str, dict[str, Any]]:
        """(domain or None, the record field it filters on, route details)."""
        router, why = self._router()
        if router is None:
            trace.append(f"{why}; searched all domains")
            return None, "domain", {}
        if image is None:
            trace.append("text-only question: the image domain router does not apply; "
                         "searched all domains")
            return None, "domain", {}
        decision = router.route(image)
        field = getattr(router, "field", "domain") or "domain"
        route = {"domain": decision.domain, "field": field, "probability": decision.probability,
                 "probabilities": decision.probabilities, "searched_all": decision.searched_all,
                 "reason": decision.reason}
        if decision.domain is None or decision.searched_all:
            trace.append(f"router unsure (p={decision.probability:.2f}): searched all domains")
            return None, field, route
        trace.append(f"routed to {field} {decision.domain} (p={decision.probability:.2f})")
        return decision.domain, field, route

    def _retrieve(self, query: Query, k: int, exclude: set[str], trace: list[str],
                  generator: Callable[[], Any] | None) -> list[Hit]:
        fetch = k + len(exclude)
        rankings: list[list[Hit]] = []
        if query.image is not None:
            rankings.append(self._image_hits(query, fetch, trace))
        if query.text:
            text_query = self._hyde(query, trace, generator)
            rankings.extend(self._text_hits(text_query, fetch))
            kg = self._kg()
            if kg is not None:
                rankings.append(kg.retrieve(query, fetch))
        rankings = [[h for h in ranking if h.id not in exclude] for ranking in rankings]
        rankings = [r for r in rankings if r]
        names = ", ".join(sorted({h.retriever for r in rankings for h in r[:1]}))
        if exclude:
            trace.append(f"excluded {len(exclude)} record(s) from the evidence")
        if len(rankings) == 1:
            trace.append(f"retrieved {len(rankings[0][:k])} candidates ({names})")
            return rankings[0][:k]
        fused = reciprocal_rank_fusion(rankings, k)
        trace.append(f"retrieved {len(fused)} candidates: {names} fused by reciprocal rank")
        return attach_similarity(fused)

    def _image_hits(self, query: Query, fetch: int, trace: list[str]) -> list[Hit]:
        from mmedrag.retrieval.router import image_retriever_for

        if self.index.image_store is None and not self.index.extra("image_text"):
            trace.append("the index has no image store: retrieved by the question text only")
            return []
        retriever = self._component("image_retriever", lambda: image_retriever_for(self.index))
        return retriever.retrieve(query, fetch)

    def _text_hits(self, query: Query, fetch: int) -> list[list[Hit]]:
        from mmedrag.retrieval.bm25 import BM25Retriever
        from mmedrag.retrieval.dense import DenseRetriever

        builders = {"dense": lambda: DenseRetriever(self.index),
                    "bm25": lambda: BM25Retriever(self.index)}
        text_only = Query(text=query.text, domain=query.domain, filters=query.filters)
        out = []
        for name in _TEXT_RETRIEVERS[self.config.retrieval.mode]:
            if name == "bm25" and not self.index.meta.get("bm25", True):
                continue
            retriever = self._component(f"text-{name}", builders[name])
            out.append(retriever.retrieve(text_only, fetch))
        return out

    def _hyde(self, query: Query, trace: list[str], generator: Callable[[], Any] | None) -> Query:
        if not self.config.retrieval.hyde or generator is None:
            return query
        try:
            from mmedrag.retrieval import hyde
        except ModuleNotFoundError as exc:
            if exc.name != "mmedrag.retrieval.hyde":
                raise
            trace.append("HyDE configured but mmedrag.retrieval.hyde is not installed: skipped")
            return query
        text = hyde.hypothetical_query(query.text, generator())
        trace.append("HyDE: retrieved with a hypothetical document written by the generator")
        return Query(text=text, image=query.image, domain=query.domain, filters=query.filters)


# Retrievers whose scores are cosine similarities (comparable across one query's candidates).
SIMILARITY_RETRIEVERS = ("dense-text", "dense-image", "image-text")


def attach_similarity(fused: list[Hit]) -> list[Hit]:
    """Give each fused hit ``details["similarity"]``: its best cosine score among the dense
    retrievers that found it. RRF scores are rank-based, so curve-based selectors (MMed-RAG's gap
    rule, the ratio rule) read this instead. A hit found only lexically (BM25) or in the KG gets
    the lowest similarity seen, i.e. it never creates a gap of its own. Order is unchanged.

    Example:
        >>> attach_similarity([])
        []
    """
    known: dict[str, float] = {}
    for hit in fused:
        sources = hit.details.get("sources", {})
        cosines = [float(v) for name, v in sources.items() if name in SIMILARITY_RETRIEVERS]
        if cosines:
            known[hit.id] = max(cosines)
    if not known:
        return fused
    floor = min(known.values())
    for hit in fused:
        hit.details["similarity"] = known.get(hit.id, floor)
    return fused
