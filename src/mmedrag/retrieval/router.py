"""Domain routing and image retrieval for an index.

``router_for(index)`` returns the trained domain classifier stored with the index (or None);
``image_retriever_for(index)`` returns the best image retriever the index supports: the trained
image→report tower when one is registered (``index.extra("image_text")``), else image→image
search over the index's image store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmedrag.retrieval.dense import DenseRetriever


@dataclass
class RouteDecision:
    """Where a query goes: ``domain`` None means "search all domains" (low confidence)."""

    domain: str | None
    probability: float
    probabilities: dict[str, float] = field(default_factory=dict)
    searched_all: bool = False
    reason: str = ""


def router_for(index: Any) -> Any | None:
    """The index's trained domain router, or None when none was trained."""
    spec = index.extra("router")
    if not spec:
        return None
    from mmedrag.training.domain import DomainRouter

    return DomainRouter.load(spec["path"], threshold=spec.get("threshold"))


def image_retriever_for(index: Any) -> Any:
    """Trained image→text retriever if registered with the index, else image→image."""
    spec = index.extra("image_text")
    if spec:
        from mmedrag.training.retriever import ImageToTextRetriever

        return ImageToTextRetriever.from_index(index, spec)
    return DenseRetriever(index, space="image")
