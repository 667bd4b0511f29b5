"""The retrieval contracts: Retriever, Reranker, and the index they search (SearchableIndex)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mmedrag.artefacts import IndexArtefacts
from mmedrag.encoders.protocol import Encoder
from mmedrag.records import Hit, Query, Record
from mmedrag.stores.bm25 import BM25Index
from mmedrag.stores.protocol import Store


@runtime_checkable
class Retriever(Protocol):
    """``retrieve`` returns up to k hits, best first; each Hit names its retriever."""

    name: str

    def retrieve(self, query: Query, k: int) -> list[Hit]: ...


@runtime_checkable
class Reranker(Protocol):
    def rerank(self, query: Query, hits: list[Hit], k: int | None = None) -> list[Hit]: ...


class SearchableIndex(Protocol):
    """What retrieval needs of an index (``mmedrag.index.Index`` is the implementation)."""

    dir: Path
    meta: dict[str, Any]
    text_store: Store
    image_store: Store | None

    @property
    def text_encoder(self) -> Encoder: ...

    @property
    def image_encoder(self) -> Encoder | None: ...

    @property
    def bm25(self) -> BM25Index: ...

    @property
    def artefacts(self) -> IndexArtefacts: ...

    def get(self, ids: list[str]) -> list[Record]: ...

    def count(self, filters: dict[str, Any] | None = None) -> int: ...

    def search_text_dense(self, text: str, k: int, filters: dict[str, Any] | None = None,
                          exact: bool = False) -> list[Hit]: ...

    def search_image_dense(self, image: Any, k: int, filters: dict[str, Any] | None = None,
                           exact: bool = False) -> list[Hit]: ...

    def search_vectors(self, vectors: np.ndarray, k: int, space: str = "text",
                       filters: dict[str, Any] | None = None) -> list[list[Hit]]: ...
