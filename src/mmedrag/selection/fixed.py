"""The fixed-k baseline: keep the first k hits, whatever their scores."""

from __future__ import annotations

from typing import Any

from mmedrag.errors import UsageError
from mmedrag.records import Hit
from mmedrag.selection.protocol import Selection


class FixedKSelector:
    """Keep the first ``k`` hits in the order given (the usual top-k RAG baseline).

    Example:
        >>> FixedKSelector(k=2).select([]).k
        0
    """

    name = "fixed"

    def __init__(self, k: int = 5) -> None:
        if int(k) < 0:
            raise UsageError(f"fixed selector: k must be >= 0, got {k}")
        self.k = int(k)

    def select(self, hits: list[Hit]) -> Selection:
        kept = list(hits[: self.k])
        reason = f"kept the top {len(kept)} of {len(hits)} hits (fixed k={self.k})"
        return Selection(hits=kept, k=len(kept), reason=reason,
                         details={"selector": self.name, "k_requested": self.k,
                                  "candidates": len(hits)})

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "options": {"k": self.k}}
