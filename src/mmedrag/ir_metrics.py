"""Pure information-retrieval metrics (a leaf module, NumPy only): Recall@k, MRR, nDCG@k,
domain accuracy, bootstrap intervals.

A ranking is a list of document ids, best first; ``relevant`` is the set of ids that count as a hit
for that query. Recall@k here is *success@k*: 1 when any relevant id is in the top k (the usual
image→report convention). nDCG uses binary gains and the ideal ranking of all relevant ids.

Example:
    >>> recall_at_k([["a", "b"], ["c", "d"]], [{"b"}, {"x"}], k=2)
    0.5
    >>> mrr([["a", "b"]], [{"b"}])
    0.5
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _check(rankings: Sequence[Sequence[str]], relevant: Sequence[set[str]]) -> None:
    if len(rankings) != len(relevant):
        raise ValueError(f"{len(rankings)} rankings but {len(relevant)} relevance sets")


def hits_at_k(rankings: Sequence[Sequence[str]], relevant: Sequence[set[str]],
              k: int) -> np.ndarray:
    """Per-query 0/1: a relevant id within the first k."""
    _check(rankings, relevant)
    return np.array([float(any(d in rel for d in ranked[:k]))
                     for ranked, rel in zip(rankings, relevant, strict=True)])


def reciprocal_ranks(rankings: Sequence[Sequence[str]], relevant: Sequence[set[str]]) -> np.ndarray:
    """Per-query 1/rank of the first relevant id (0 when none was retrieved)."""
    _check(rankings, relevant)
    out = []
    for ranked, rel in zip(rankings, relevant, strict=True):
        rank = next((i for i, d in enumerate(ranked, start=1) if d in rel), None)
        out.append(1.0 / rank if rank else 0.0)
    return np.array(out)


def ndcg_values(rankings: Sequence[Sequence[str]], relevant: Sequence[set[str]],
                k: int) -> np.ndarray:
    """Per-query nDCG@k with binary gains (0 for a query with no relevant ids)."""
    _check(rankings, relevant)
    out = []
    for ranked, rel in zip(rankings, relevant, strict=True):
        dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if d in rel)
        ideal = sum(1 / math.log2(i + 2) for i in range(min(k, len(rel))))
        out.append(dcg / ideal if ideal else 0.0)
    return np.array(out)


def recall_at_k(rankings: Sequence[Sequence[str]], relevant: Sequence[set[str]], k: int) -> float:
    """Fraction of queries with a relevant id in the top k."""
    return float(hits_at_k(rankings, relevant, k).mean()) if rankings else 0.0


def mrr(rankings: Sequence[Sequence[str]], relevant: Sequence[set[str]]) -> float:
    """Mean reciprocal rank of the first relevant id."""
    return float(reciprocal_ranks(rankings, relevant).mean()) if rankings else 0.0


def ndcg_at_k(rankings: Sequence[Sequence[str]], relevant: Sequence[set[str]],
              k: int = 10) -> float:
    """Mean binary nDCG@k."""
    return float(ndcg_values(rankings, relevant, k).mean()) if rankings else 0.0


def per_query_metrics(rankings: Sequence[Sequence[str]], relevant: Sequence[set[str]],
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, np.ndarray]:
    """Per-query values of R@k for each k, MRR and nDCG@10 (for means and bootstraps)."""
    values = {f"R@{k}": hits_at_k(rankings, relevant, k) for k in ks}
    values["MRR"] = reciprocal_ranks(rankings, relevant)
    values["nDCG@10"] = ndcg_values(rankings, relevant, 10)
    return values


def retrieval_metrics(rankings: Sequence[Sequence[str]], relevant: Sequence[set[str]],
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Mean R@k (each k), MRR and nDCG@10."""
    return {name: float(v.mean()) if len(v) else 0.0
            for name, v in per_query_metrics(rankings, relevant, ks).items()}


def bootstrap_interval(values: np.ndarray, samples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling queries)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (samples, len(values)))].mean(1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def paired_difference(a: np.ndarray, b: np.ndarray, samples: int = 2000,
                      seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` over the same queries and its paired bootstrap 95 % interval."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    low, high = bootstrap_interval(diff, samples, seed)
    return float(diff.mean()), low, high


def rank_by_similarity(queries: np.ndarray, docs: np.ndarray, doc_ids: Sequence[str], k: int,
                       exclude: Sequence[set[str]] | None = None) -> list[list[str]]:
    """Top-k doc ids per query by dot product, skipping ids in ``exclude[i]`` for query i."""
    scores = np.asarray(queries, dtype=np.float32) @ np.asarray(docs, dtype=np.float32).T
    extra = max((len(e) for e in exclude), default=0) if exclude else 0
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k + extra]
    out = []
    for i, row in enumerate(top):
        skip = exclude[i] if exclude else set()
        out.append([doc_ids[j] for j in row if doc_ids[j] not in skip][:k])
    return out


def domain_accuracy(truth: Sequence[str], predicted: Sequence[str | None],
                    labels: Sequence[str] | None = None,
                    ) -> tuple[float, list[str], list[list[int]]]:
    """Accuracy and confusion matrix (rows: truth, columns: prediction) of domain identification.

    A ``None`` prediction (the router fell back to all domains) counts as wrong and is tallied in
    an extra last column ``"(all)"`` when present.

    Example:
        >>> domain_accuracy(["CT", "MR"], ["CT", "CT"])
        (0.5, ['CT', 'MR'], [[1, 0], [1, 0]])
    """
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} labels but {len(predicted)} predictions")
    names = list(labels) if labels else sorted(set(truth) | {p for p in predicted if p is not None})
    others = sorted({p for p in predicted if p is not None and p not in names})
    columns = names + others + (["(all)"] if any(p is None for p in predicted) else [])
    where = {name: i for i, name in enumerate(columns)}
    matrix = [[0] * len(columns) for _ in names]
    for t, p in zip(truth, predicted, strict=True):
        if t in names:
            matrix[names.index(t)][where["(all)" if p is None else p]] += 1
    correct = sum(t == p for t, p in zip(truth, predicted, strict=True))
    return (correct / len(truth) if truth else 0.0), columns, matrix
