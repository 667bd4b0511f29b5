"""The Selector contract: deterministic choice of how many retrieved contexts to keep."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from mmedrag.records import Hit


@dataclass
class Selection:
    """The kept hits and why: ``k`` and a one-line human explanation plus details."""

    hits: list[Hit]
    k: int
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "reason": self.reason, **self.details}


@runtime_checkable
class Selector(Protocol):
    name: str

    def select(self, hits: list[Hit]) -> Selection: ...
