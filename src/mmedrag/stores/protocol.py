"""The Store contract, shared by the embedded store and Milvus (one contract test suite)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from mmedrag.records import Hit, Record


@runtime_checkable
class Store(Protocol):
    """A durable vector store holding records and one vector per record.

    ``add`` is durable on return; ``search`` returns, per query vector, hits best first
    (inner product on L2-normalised vectors = cosine). ``filters`` maps a field (domain, or a
    meta key such as modality or split) to a value or a list of allowed values.
    """

    dim: int

    def add(self, records: list[Record], vectors: np.ndarray) -> int: ...

    def search(self, vectors: np.ndarray, k: int, filters: dict[str, Any] | None = None,
               exact: bool = False) -> list[list[Hit]]: ...

    def get(self, ids: list[str]) -> list[Record]: ...

    def vectors(self, ids: list[str]) -> np.ndarray: ...

    def has(self, ids: list[str]) -> set[str]: ...

    def delete(self, ids: list[str]) -> int: ...

    def count(self, filters: dict[str, Any] | None = None) -> int: ...

    def iter_records(self, batch: int = 1000) -> Any: ...

    def close(self) -> None: ...


def matches(record: Record, filters: dict[str, Any] | None) -> bool:
    """True when ``record`` satisfies every filter (value or list of allowed values)."""
    if not filters:
        return True
    for key, allowed in filters.items():
        value = record.field_value(key)
        if isinstance(allowed, (list, tuple, set)):
            if value not in allowed:
                return False
        elif value != allowed:
            return False
    return True
