"""Retrieval and domain-identification metrics: Recall@k, MRR, nDCG@k, accuracy, bootstraps.

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

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np
import typer


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


# -- evaluating retrievers over an index -------------------------------------------------------

def _normal(text: str) -> str:
    return " ".join(text.split()).lower()


def relevant_ids(query_id: str, reference: str, corpus: Sequence[tuple[str, str]]) -> set[str]:
    """Ids that count as hits: the query's own pair and any record with identical text."""
    want = _normal(reference)
    return {query_id} | ({rid for rid, text in corpus if _normal(text) == want} if want else set())


def evaluate_index(index: object, rows: Sequence[object], mode: str = "image", k: int = 10,
                   exclude_self: bool = False, retriever: object | None = None,
                   progress: bool = False) -> dict[str, object]:
    """Run ``rows`` (training.data.Row: id, image, text) as queries against an index.

    ``mode="image"``: the image is the query (the index's image retriever: the trained tower
    when registered, else image→image); ``mode="text"``: the row text is the query (dense text
    search). Relevance: the query's own id or identical text. ``exclude_self`` drops the
    query's own record from its ranking (corpus and queries overlap).
    """
    from tqdm.auto import tqdm

    from mmedrag.records import Query
    from mmedrag.retrieval.dense import DenseRetriever
    from mmedrag.retrieval.router import image_retriever_for

    if retriever is None:
        retriever = image_retriever_for(index) if mode == "image" else DenseRetriever(index)
    corpus = [(r.id, r.text) for r in index.text_store.iter_records(batch=5000)]  # type: ignore[attr-defined]
    rankings, relevant = [], []
    for row in tqdm(rows, disable=not progress, desc="queries", unit="q"):
        query = Query(text="" if mode == "image" else row.text,  # type: ignore[attr-defined]
                      image=row.image if mode == "image" else None)  # type: ignore[attr-defined]
        hits = retriever.retrieve(query, k + (1 if exclude_self else 0))  # type: ignore[attr-defined]
        ids = [h.record.id for h in hits if not (exclude_self and h.record.id == row.id)][:k]  # type: ignore[attr-defined]
        rel = relevant_ids(row.id, row.text, corpus)  # type: ignore[attr-defined]
        if exclude_self and mode == "text":
            rel.discard(row.id)  # type: ignore[attr-defined]
        rankings.append(ids)
        relevant.append(rel)
    values = per_query_metrics(rankings, relevant)
    return {"retriever": getattr(retriever, "name", type(retriever).__name__), "mode": mode,
            "queries": len(rankings), "corpus": len(corpus),
            "metrics": {n: float(v.mean()) for n, v in values.items()},
            "intervals": {n: bootstrap_interval(v) for n, v in values.items()}}


def retrieval_command(
    queries: Path = typer.Argument(..., help="Query manifest (JSONL/CSV: id, image, text)."),
    index: Path = typer.Option(..., "--index", "-i", help="Index to search."),
    mode: str = typer.Option("image", help="image (image→report) | text (text→document)."),
    k: int = typer.Option(10, help="Ranking depth."),
    exclude_self: bool = typer.Option(False, "--exclude-self",
                                      help="Drop each query's own record from its ranking."),
    text_field: Optional[str] = typer.Option(None, help="Reference/query text field."),
    split_field: Optional[str] = typer.Option(None, help="Keep rows whose field equals --split."),
    split: str = typer.Option("dev", help="Value of --split-field to evaluate."),
    limit: Optional[int] = typer.Option(None, help="Evaluate the first N queries only."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Recall@1/5/10, MRR and nDCG@10 (bootstrap 95 % intervals) of an index's retriever.

    Example: mmedrag eval retrieval medpix/pairs.jsonl --index idx --split-field split --split dev
    """
    from mmedrag.errors import UsageError
    from mmedrag.index import Index
    from mmedrag.training.data import read_rows

    if mode not in ("image", "text"):
        raise UsageError(f"--mode must be image or text, got {mode!r}")
    rows = read_rows(queries, text_field=text_field)
    if split_field:
        rows = [r for r in rows if str(r.fields.get(split_field, "")) == split]
    rows = rows[:limit] if limit else rows
    if not rows:
        raise UsageError(f"{queries}: no query rows to evaluate")
    result = evaluate_index(Index.open(index), rows, mode, k, exclude_self, progress=not as_json)
    if as_json:
        typer.echo(json.dumps(result, indent=1))
        return
    typer.echo(f"{result['retriever']} ({mode}): {result['queries']} queries over "
               f"{result['corpus']} records")
    for name, value in result["metrics"].items():  # type: ignore[union-attr]
        low, high = result["intervals"][name]  # type: ignore[index]
        typer.echo(f"  {name:<8} {value:.3f}  [{low:.3f}, {high:.3f}]")
