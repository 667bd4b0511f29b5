"""Brute-force top-k and metadata filter masks over an in-memory vector matrix.

Example:
    >>> import numpy as np
    >>> rows, scores = exact_top_k(np.eye(2, dtype="float32"), np.eye(2, dtype="float32"), 1, None)
    >>> rows.tolist()
    [[0], [1]]
"""

from __future__ import annotations

from typing import Any

import numpy as np


def exact_top_k(queries: np.ndarray, matrix: np.ndarray, k: int, mask: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``matrix`` with the highest inner product per query (best first)."""
    if mask is not None:
        subset = np.flatnonzero(mask)
        scores = queries @ matrix[subset].T
    else:
        subset = None
        scores = queries @ matrix.T
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    top_scores = np.take_along_axis(top_scores, order, axis=1)
    rows = subset[top] if subset is not None else top
    return rows, top_scores


def filter_mask(fields: dict[str, list[Any]], n: int, filters: dict[str, Any]) -> np.ndarray:
    """Boolean mask of the ``n`` rows whose field values pass every filter (value or list)."""
    mask = np.ones(n, dtype=bool)
    for key, allowed in filters.items():
        column = fields.get(key)
        if column is None:
            return np.zeros(n, dtype=bool)
        values = set(allowed) if isinstance(allowed, (list, tuple, set)) else {allowed}
        mask &= np.fromiter((v in values for v in column), dtype=bool, count=len(column))
    return mask
