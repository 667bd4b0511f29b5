"""The one retrieval path: route → per-domain retrieval → fusion → rerank → select.

``Pipeline`` (``ask``, the REST ``/v1/answer``, evaluation, the preference builder, the demo),
``mmedrag search``, ``POST /v1/search`` and ``mmedrag eval retrieval`` all call
:meth:`RetrievalFlow.run`, so a user sees the same ranking everywhere. Components come from the
registry and the index's typed artefacts (router, towers, calibration, KG), built once per flow.

Image queries: the domain router (when the index or the config names one) picks the domain; the
domain's trained tower (image→report, into the text store) is used when one is registered, else
image→image search over the index's image store. ``image_search="image-image"`` asks for plain
image→image search without routing. Text queries: dense, BM25 or both (``retrieval.mode``),
optionally with HyDE and the KG retriever. Several rankings are fused by reciprocal rank.

Example:
    >>> flow = RetrievalFlow(Config(), index)                          # doctest: +SKIP
    >>> result = flow.run("pleural effusion?", image="cxr.png", k=10)  # doctest: +SKIP
    >>> result.route.domain, [h.id for h in result.candidates][:3]     # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmedrag.config import Config
from mmedrag.errors import UsageError
from mmedrag.generation.protocol import Generator
from mmedrag.records import Hit, Query
from mmedrag.registry import REGISTRY
from mmedrag.retrieval.hybrid import reciprocal_rank_fusion
from mmedrag.retrieval.protocol import Reranker, Retriever, SearchableIndex
from mmedrag.retrieval.router import DomainRouter, RouteDecision
from mmedrag.selection.protocol import Selection, Selector

TEXT_MODES = {"dense": ("dense",), "bm25": ("bm25",), "hybrid": ("dense", "bm25")}
IMAGE_SEARCH = ("auto", "image-image")
SEARCH_MODES = (*TEXT_MODES, "image-image")
# Retrievers whose scores are cosine similarities (comparable across one query's candidates).
SIMILARITY_RETRIEVERS = ("dense-text", "dense-image", "image-text")


@dataclass
class Route:
    """The route decision for one query and the record field it filters on."""

    decision: RouteDecision | None
    field: str = "domain"
    threshold: float | None = None
    threshold_source: str = ""

    @property
    def domain(self) -> str | None:
        if self.decision is None or self.decision.searched_all:
            return None
        return self.decision.domain

    def to_dict(self) -> dict[str, Any]:
        if self.decision is None:
            return {}
        d = self.decision
        return {"domain": d.domain, "field": self.field, "probability": d.probability,
                "probabilities": d.probabilities, "searched_all": d.searched_all,
                "reason": d.reason, "threshold": self.threshold,
                "threshold_source": self.threshold_source}


@dataclass
class RetrievalResult:
    """What one retrieval did: ranked candidates, the selection, the route, who retrieved, the
    seconds of each stage and a human-readable trace."""

    candidates: list[Hit]
    selection: Selection | None
    route: Route
    retrievers: list[str]
    seconds: dict[str, float]
    trace: list[str] = field(default_factory=list)

    @property
    def hits(self) -> list[Hit]:
        """The selected hits (all candidates when nothing was selected)."""
        return self.selection.hits if self.selection is not None else self.candidates

    @property
    def domain(self) -> str | None:
        return self.route.domain

    def to_dict(self) -> dict[str, Any]:
        return {"route": self.route.to_dict(), "retrievers": self.retrievers,
                "selection": self.selection.to_dict() if self.selection else None,
                "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
                "trace": self.trace}


class RetrievalFlow:
    """Builds the retrieval components of a config once and runs them per query.

    Args:
        config: the whole configuration (``retrieval``, ``reranker``, ``selector``).
        index: the index searched.
        image_search: ``auto`` (route, then the domain's tower or image→image) or
            ``image-image`` (plain image→image search, no router).
        exact: brute-force dense search instead of the ANN graph.
    """

    def __init__(self, config: Config, index: SearchableIndex, image_search: str = "auto",
                 exact: bool = False) -> None:
        if config.retrieval.mode not in TEXT_MODES:
            raise UsageError(f"retrieval.mode must be dense, bm25 or hybrid, got "
                             f"{config.retrieval.mode!r}")
        if image_search not in IMAGE_SEARCH:
            raise UsageError(f"image search must be auto or image-image, got {image_search!r}")
        self.config = config
        self.index = index
        self.image_search = image_search
        self.exact = exact
        self._cache: dict[str, Any] = {}
        self._building = threading.RLock()

    def derive(self, config: Config, keep_selector: bool, image_search: str | None = None,
               exact: bool | None = None) -> RetrievalFlow:
        """A flow for ``config`` sharing this one's built components."""
        clone = RetrievalFlow(config, self.index, image_search or self.image_search,
                              self.exact if exact is None else exact)
        clone._cache = self._cache if keep_selector else {
            k: v for k, v in self._cache.items() if k != "selector"}
        return clone

    def for_mode(self, mode: str | None, exact: bool = False) -> RetrievalFlow:
        """This flow with a search mode: ``dense``, ``bm25`` or ``hybrid`` for the text side
        (overrides ``retrieval.mode``), ``image-image`` for plain image→image search, or None.

        Example:
            >>> flow.for_mode("image-image").image_search          # doctest: +SKIP
            'image-image'
        """
        if mode is None or (mode == self.config.retrieval.mode and exact == self.exact):
            return self
        if mode == "image-image":
            return self.derive(self.config, True, image_search="image-image", exact=exact)
        if mode not in TEXT_MODES:
            raise UsageError(f"search mode must be one of {', '.join(SEARCH_MODES)}, "
                             f"got {mode!r}")
        retrieval = self.config.retrieval.model_copy(update={"mode": mode})
        return self.derive(self.config.model_copy(update={"retrieval": retrieval}), True,
                           exact=exact)

    # -- components ----------------------------------------------------------------------------
    def _component(self, key: str, build: Callable[[], Any]) -> Any:
        with self._building:  # server threads: each component is built once
            if key not in self._cache:
                self._cache[key] = build()
            return self._cache[key]

    def router(self) -> DomainRouter | None:
        """The config's router (``retrieval.router``), else the index's, else None; the config's
        ``router_threshold`` overrides the threshold saved with it."""
        def build() -> DomainRouter | None:
            cfg = self.config.retrieval
            registered = self.index.artefacts.router
            path = cfg.router or (registered.path if registered else None)
            if path is None:
                return None
            threshold, source = cfg.router_threshold, "config retrieval.router_threshold"
            if threshold is None and registered is not None and cfg.router is None:
                threshold, source = registered.threshold, "registered with the index"
            return DomainRouter.load(path, threshold=threshold, source=source)
        return self._component("router", build)

    def _tower_retriever(self, domain: str | None) -> tuple[Retriever, str] | None:
        """The image→report retriever of ``domain`` and what it is (config path, else the
        index's tower for that domain, else its tower for all domains)."""
        from mmedrag.encoders.dual import is_dual_folder

        path, what = self.config.retrieval.image_text, "config retrieval.image_text"
        text_store = None
        if path is None:
            tower = self.index.artefacts.tower_for(domain)
            if tower is None:
                return None
            path, text_store = tower.path, tower.text_store
            what = f"the {tower.domain} tower" if tower.domain else "the tower for all domains"
            if tower.kind == "dual":
                what += " (fine-tuned dual encoder)"
        elif is_dual_folder(path):
            # the config names a fine-tuned dual encoder: the text store it was registered with
            # for this domain, else its own store for all domains (built on first use)
            registered = self.index.artefacts.tower_for(domain)
            if registered is not None and registered.text_store and \
                    Path(registered.path).resolve() == Path(path).resolve():
                text_store = registered.text_store
        kind = "dual" if is_dual_folder(path) else "tower"
        options: dict[str, Any] = {"text_store": text_store} if kind == "dual" else {}
        retriever: Retriever = self._component(f"tower:{path}:{text_store}", lambda: REGISTRY.create(
            "retriever", "image-text", index=self.index,
            encoder=REGISTRY.create("image_encoder", kind, path=path), **options))
        return retriever, what

    def _retriever(self, name: str, **options: Any) -> Retriever:
        key = f"{name}:{sorted(options.items())}"
        found: Retriever = self._component(key, lambda: REGISTRY.create(
            "retriever", name, index=self.index, **options))
        return found

    def _reranker(self) -> Reranker | None:
        spec = self.config.reranker
        if spec.name == "none":
            return None
        def build() -> Reranker:
            options = dict(spec.options)
            if REGISTRY.accepts("reranker", spec.name, "index") and "index" not in options:
                options["index"] = self.index
            reranker: Reranker = REGISTRY.create("reranker", spec.name, **options)
            return reranker
        return self._component("reranker", build)

    def selector(self) -> Selector:
        def build() -> Selector:
            spec = self.config.selector
            options = dict(spec.options)
            calibration = self.index.artefacts.calibration
            if spec.name == "calibrated" and "calibration" not in options and calibration:
                options["calibration"] = calibration
            selector: Selector = REGISTRY.create("selector", spec.name, **options)
            return selector
        return self._component("selector", build)

    # -- running -------------------------------------------------------------------------------
    def run(self, question: str = "", image: Any = None, k: int | None = None,
            filters: dict[str, Any] | None = None, exclude_ids: set[str] | None = None,
            generator: Callable[[], Generator] | None = None,
            select: bool = True) -> RetrievalResult:
        """Route, retrieve ``k`` candidates (default ``retrieval.k``), fuse, rerank, select.

        Args:
            question: query text (may be empty for image-only retrieval).
            image: query image (path, bytes or PIL image) or None.
            k: candidates to retrieve before selection.
            filters: store filters (field → value or list of values), e.g. ``{"split": "dev"}``.
            exclude_ids: record ids never to return (e.g. the query's own pair).
            generator: the generator HyDE writes with (called only when HyDE is on).
            select: False skips the selector (``search`` shows the ranked candidates).
        """
        if not question and image is None:
            raise UsageError("retrieval needs a question, an image, or both")
        k = k or self.config.retrieval.k
        if k <= 0:
            raise UsageError(f"k must be positive, got {k}")
        trace: list[str] = []
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        filters = dict(filters or {})
        route = self._route(image, trace, filters)
        seconds["route"] = time.perf_counter() - start
        if route.domain is not None and route.field != "domain":
            filters[route.field] = route.domain
        query = Query(text=question, image=image, filters=filters,
                      domain=route.domain if route.field == "domain" else None)
        start = time.perf_counter()
        candidates, retrievers = self._retrieve(query, route, k, exclude_ids or set(), trace,
                                                generator)
        seconds["retrieve"] = time.perf_counter() - start
        start = time.perf_counter()
        reranker = self._reranker()
        if reranker is not None:
            candidates = reranker.rerank(query, candidates, k)
            for hit in candidates:  # the selector reads the reranker's scores from now on
                hit.details.pop("similarity", None)
            trace.append(f"reranked by {self.config.reranker.name}")
        seconds["rerank"] = time.perf_counter() - start
        for rank, hit in enumerate(candidates, start=1):
            hit.rank = rank
        selection = None
        if select:
            start = time.perf_counter()
            selection = self.selector().select(candidates)
            selection.hits = [dataclasses.replace(hit, rank=rank)  # evidence order, 1..k
                              for rank, hit in enumerate(selection.hits, start=1)]
            seconds["select"] = time.perf_counter() - start
            trace.append(f"selector {self.config.selector.name}: {selection.reason}")
        return RetrievalResult(candidates, selection, route, retrievers, seconds, trace)

    def _route(self, image: Any, trace: list[str], filters: dict[str, Any]) -> Route:
        if image is None:
            trace.append("text-only question: the image domain router does not apply; "
                         "searched all domains")
            return Route(None)
        if self.image_search == "image-image":
            trace.append("image→image search asked for: no domain routing")
            return Route(None)
        router = self.router()
        field_name = (router.field if router is not None else None) or "domain"
        fixed = filters.get(field_name)
        if isinstance(fixed, str):  # the caller chose the domain (and so its tower): no routing
            trace.append(f"{field_name} {fixed} fixed by the caller: no routing")
            return Route(RouteDecision(fixed, 1.0, {}, False, "fixed by the caller"),
                         field_name, None, "caller")
        if router is None:
            trace.append("no domain router for this index: searched all domains")
            return Route(None)
        decision = router.route(image)
        source = router.threshold_source
        route = Route(decision, field_name, router.threshold, source)
        if route.domain is None:
            trace.append(f"router unsure ({decision.reason}; threshold {router.threshold:.2f} "
                         f"{source}): searched all domains")
        else:
            trace.append(f"routed to {field_name} {decision.domain} "
                         f"(p={decision.probability:.2f} >= threshold {router.threshold:.2f} "
                         f"{source})")
        return route

    def _retrieve(self, query: Query, route: Route, k: int, exclude: set[str],
                  trace: list[str], generator: Callable[[], Generator] | None,
                  ) -> tuple[list[Hit], list[str]]:
        fetch = k + len(exclude)
        rankings: list[list[Hit]] = []
        if query.image is not None:
            rankings.append(self._image_hits(query, route, fetch, trace))
        if query.text:
            text_query = self._hyde(query, trace, generator)
            rankings.extend(self._text_hits(text_query, fetch))
            if self.config.retrieval.kg is not None:
                spec = self.config.retrieval.kg
                rankings.append(self._retriever(spec.name, **spec.options).retrieve(query, fetch))
        rankings = [[h for h in ranking if h.id not in exclude] for ranking in rankings]
        rankings = [r for r in rankings if r]
        names = sorted({h.retriever for r in rankings for h in r[:1]})
        if exclude:
            trace.append(f"excluded {len(exclude)} record(s) from the evidence")
        if len(rankings) <= 1:
            hits = rankings[0][:k] if rankings else []
            trace.append(f"retrieved {len(hits)} candidates ({', '.join(names) or 'none'})")
            return hits, names
        fused = reciprocal_rank_fusion(rankings, k)
        trace.append(f"retrieved {len(fused)} candidates: {', '.join(names)} fused by "
                     "reciprocal rank")
        return attach_similarity(fused), names

    def _image_hits(self, query: Query, route: Route, fetch: int, trace: list[str]) -> list[Hit]:
        if self.image_search == "auto":
            tower = self._tower_retriever(route.domain)
            if tower is not None:
                trace.append(f"image→report search with {tower[1]}")
                return tower[0].retrieve(query, fetch)
        if self.index.image_store is None:
            trace.append("the index has no image store and no tower: retrieved by the "
                         "question text only")
            return []
        return self._retriever("dense", space="image", exact=self.exact).retrieve(query, fetch)

    def _text_hits(self, query: Query, fetch: int) -> list[list[Hit]]:
        text_only = Query(text=query.text, domain=query.domain, filters=query.filters)
        out = []
        for name in TEXT_MODES[self.config.retrieval.mode]:
            if name == "bm25" and not self.index.meta.get("bm25", True):
                continue
            options = {"exact": self.exact} if name == "dense" else {}
            out.append(self._retriever(name, **options).retrieve(text_only, fetch))
        return out

    def _hyde(self, query: Query, trace: list[str],
              generator: Callable[[], Generator] | None) -> Query:
        if not self.config.retrieval.hyde:
            return query
        if generator is None:  # search / eval retrieval: the config's generator, as ask uses
            spec = self.config.generator
            generator = lambda: self._component(  # noqa: E731
                "generator", lambda: REGISTRY.create("generator", spec.name, **spec.options))
        from mmedrag.retrieval.hyde import hypothetical_query

        text = hypothetical_query(query.text, generator())
        trace.append("HyDE: retrieved with a hypothetical document written by the generator")
        return Query(text=text, image=query.image, domain=query.domain, filters=query.filters)


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
