"""Dense-retrieval measurements: build time, single-query latency, batch throughput, recall@10.

Every system is measured the same way against the same query vectors; numpy brute force (one
matrix product per query) runs in the same process as the baseline. Recall counts a returned
item as correct when its exact score is at least the exact 10th score, so duplicate texts
(MedQuAD repeats answers) are not counted as misses.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.records import Record

K = 10


@dataclass
class DenseResult:
    """One row of the dense table."""

    system: str
    build_s: float | None
    p50_ms: float
    p99_ms: float
    batch_qps: float | None
    recall: float | None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def latency(search_one: Callable[[np.ndarray], Any], queries: np.ndarray,
            warmup: int = 5) -> tuple[float, float]:
    """(p50, p99) in ms of ``search_one(q)`` over the queries (after a few warm-up calls)."""
    for q in queries[:warmup]:
        search_one(q)
    times = []
    for q in queries:
        start = time.perf_counter()
        search_one(q)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def throughput(search_batch: Callable[[np.ndarray], Any], queries: np.ndarray) -> float:
    start = time.perf_counter()
    search_batch(queries)
    return len(queries) / (time.perf_counter() - start)


def numpy_topk(matrix: np.ndarray, queries: np.ndarray, k: int = K, block: int = 256
               ) -> np.ndarray:
    """Row indices of the exact top-k per query (brute force, blocked matrix products)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), block):
        scores = queries[start:start + block] @ matrix.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[start:start + block] = np.take_along_axis(top, order, axis=1)
    return out


def tenth_scores(matrix: np.ndarray, queries: np.ndarray, block: int = 64) -> np.ndarray:
    """The exact 10th-best score of every query."""
    out = np.empty(len(queries), dtype=np.float32)
    for start in range(0, len(queries), block):
        scores = queries[start:start + block] @ matrix.T
        out[start:start + block] = -np.partition(-scores, K - 1, axis=1)[:, K - 1]
    return out


def recall_at_10(matrix: np.ndarray, queries: np.ndarray, rows: list[list[int]],
                 tenth: np.ndarray) -> float:
    """Mean share of returned items whose exact score reaches the exact 10th score."""
    hits = 0
    for q, found, bar in zip(queries, rows, tenth):
        found = list(found)[:K]
        if found:
            hits += int(np.sum(matrix[found] @ q >= bar - 1e-5))
    return hits / (K * len(queries))


def bench_numpy(matrix: np.ndarray, queries: np.ndarray, latency_queries: int) -> DenseResult:
    p50, p99 = latency(lambda q: numpy_topk(matrix, q[None], block=1), queries[:latency_queries])
    qps = throughput(lambda qs: numpy_topk(matrix, qs), queries)
    return DenseResult("numpy brute force", 0.0, p50, p99, qps, 1.0, "exact")


def _records(start: int, stop: int, texts: list[str] | None,
             domains: list[str] | None) -> list[Record]:
    return [Record(id=f"c{i:07d}", text=texts[i] if texts else "",
                   domain=domains[i] if domains else "synthetic") for i in range(start, stop)]


def _rows(hits: list[list[Any]]) -> list[list[int]]:
    return [[int(h.id[1:]) for h in row] for row in hits]


def _fill(store: Any, matrix: np.ndarray, texts: list[str] | None,
          domains: list[str] | None, batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(matrix), batch):
        stop = min(start + batch, len(matrix))
        store.add(_records(start, stop, texts, domains), matrix[start:stop])
    return time.perf_counter() - started


def bench_store(label: str, store: Any, matrix: np.ndarray, queries: np.ndarray,
                tenth: np.ndarray, latency_queries: int, texts: list[str] | None = None,
                domains: list[str] | None = None, batch: int = 10000,
                exact_row: bool = True, ef_sweep: tuple[int, ...] = ()) -> list[DenseResult]:
    """Fill ``store``, build its ANN index, and measure it (plus its exact mode)."""
    insert_s = _fill(store, matrix, texts, domains, batch)
    started = time.perf_counter()
    store.build_ann()
    store.search(queries[:1], K)  # first search: loads whatever is still lazy
    ann_s = time.perf_counter() - started
    p50, p99 = latency(lambda q: store.search(q, K), queries[:latency_queries])
    batch_hits: list[list[Any]] = []
    qps = throughput(lambda qs: batch_hits.extend(store.search(qs, K)), queries)
    recall = recall_at_10(matrix, queries, _rows(batch_hits), tenth)
    results = [DenseResult(label, insert_s + ann_s, p50, p99, qps, recall,
                           f"insert {insert_s:.1f}s + index {ann_s:.1f}s",
                           {"insert_s": insert_s, "index_s": ann_s})]
    for ef in ef_sweep:
        store.ef_search = ef
        s50, s99 = latency(lambda q: store.search(q, K), queries[:latency_queries])
        sweep_hits = store.search(queries, K)
        results.append(DenseResult(f"{label.split(' (')[0]} ef={ef}", None, s50, s99, None,
                                   recall_at_10(matrix, queries, _rows(sweep_hits), tenth),
                                   "same graph, other ef_search"))
    if exact_row:
        subset = queries[:max(20, latency_queries // 5)]
        e50, e99 = latency(lambda q: store.search(q, K, exact=True), subset)
        exact_hits = store.search(subset, K, exact=True)
        e_recall = recall_at_10(matrix, subset, _rows(exact_hits), tenth[:len(subset)])
        results.append(DenseResult(label.replace("HNSW", "exact"), None, e50, e99, None,
                                   e_recall, "exact=True"))
    return results


def run_embedded(matrix: np.ndarray, queries: np.ndarray, tenth: np.ndarray,
                 latency_queries: int, texts: list[str] | None, domains: list[str] | None,
                 m: int, ef_construction: int, ef_search: int, workdir: Path,
                 ef_sweep: tuple[int, ...] = ()) -> list[DenseResult]:
    from mmedrag.stores.embedded import EmbeddedStore

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        store = EmbeddedStore(Path(tmp) / "embedded", dim=matrix.shape[1], m=m,
                              ef_construction=ef_construction, ef_search=ef_search)
        try:
            label = f"embedded HNSW (M={m}, efC={ef_construction}, ef={ef_search})"
            return bench_store(label, store, matrix, queries, tenth, latency_queries, texts,
                               domains, ef_sweep=ef_sweep)
        finally:
            store.close()


def run_milvus(matrix: np.ndarray, queries: np.ndarray, tenth: np.ndarray,
               latency_queries: int, texts: list[str] | None, domains: list[str] | None,
               m: int, ef_construction: int, ef_search: int, workdir: Path,
               ef_sweep: tuple[int, ...] = ()) -> list[DenseResult]:
    from mmedrag.stores.milvus import MilvusStore

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        store = MilvusStore(Path(tmp) / "milvus", dim=matrix.shape[1], m=m,
                            ef_construction=ef_construction, ef_search=ef_search)
        try:
            label = f"Milvus Lite HNSW (M={m}, efC={ef_construction}, ef={ef_search})"
            return bench_store(label, store, matrix, queries, tenth, latency_queries, texts,
                               domains, batch=2000, exact_row=False, ef_sweep=ef_sweep)
        finally:
            store.close()


def synthetic(bases: np.ndarray, n: int, seed: int = 0, noise: float = 0.01) -> np.ndarray:
    """``n`` unit vectors spread over the span of ``bases``: each is a random convex mix
    (Dirichlet(1, 1, 1) weights) of three real embeddings plus Gaussian noise, so the set has
    the real data's directions without clusters of near-copies of one base vector."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, bases.shape[1]), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        weights = rng.dirichlet((1.0, 1.0, 1.0), size=m).astype(np.float32)
        block = sum(weights[:, j:j + 1] * bases[rng.integers(0, len(bases), m)]
                    for j in range(3))
        block += noise * rng.standard_normal(block.shape, dtype=np.float32)
        out[start:start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out
