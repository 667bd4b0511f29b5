"""BM25: bm25s (mmedrag's BM25Index) against rank_bm25 on the same chunks and the same tokens.

Both libraries get identical token lists (bm25s' tokenizer: English stop words, Snowball
stemmer). Agreement compares bm25s' ``robertson`` variant (the classic Okapi BM25 that
rank_bm25 implements) with ``rank_bm25.BM25Okapi``: a query agrees when every bm25s top-10
item scores, under rank_bm25, at least rank_bm25's own 10th score (ties are not misses).
mmedrag's default ``lucene`` variant is reported too.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmedrag.stores.bm25 import BM25Index

K = 10


def _tokenize(texts: list[str], stemmer: Any) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, return_ids=False,
                          show_progress=False)


def _rank_top(model: Any, tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
    scores = model.get_scores(tokens)
    k = min(K, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top])], scores


def _agrees(bm25s_hits: list[tuple[str, float]], row_of: dict[str, int],
            rank_scores: np.ndarray) -> bool:
    positive = np.sort(rank_scores[rank_scores > 0])[::-1]
    if len(positive) == 0:
        return not bm25s_hits
    bar = positive[min(K, len(positive)) - 1]
    if len(bm25s_hits) != min(K, len(positive)):
        return False
    return all(rank_scores[row_of[rid]] >= bar - 1e-6 * max(1.0, abs(bar))
               for rid, _ in bm25s_hits)


def _latency(fn: Any, items: list[Any]) -> tuple[float, float, float]:
    times = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        times.append((time.perf_counter() - start) * 1000)
    return (float(np.percentile(times, 50)), float(np.percentile(times, 99)),
            len(items) / (sum(times) / 1000))


def run_bm25(ids: list[str], texts: list[str], questions: list[str], rank_queries: int,
             workdir: Path) -> dict[str, Any]:
    """Index and query throughput of both libraries, and their top-10 agreement."""
    import bm25s
    from rank_bm25 import BM25Okapi

    out: dict[str, Any] = {"docs": len(texts), "queries": len(questions),
                           "rank_bm25_queries": rank_queries}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        start = time.perf_counter()
        lucene = BM25Index(Path(tmp) / "lucene")
        lucene.build(ids, texts)
        out["bm25s_build_s"] = time.perf_counter() - start  # tokenise + index + save
        robertson = BM25Index(Path(tmp) / "robertson", method="robertson")
        robertson.build(ids, texts)
        start = time.perf_counter()
        tokens = _tokenize(texts, lucene._stemmer)  # noqa: SLF001 - the same tokenizer
        out["tokenize_s"] = time.perf_counter() - start
        as_ids = bm25s.tokenize(texts, stopwords="en", stemmer=lucene._stemmer,  # noqa: SLF001
                                show_progress=False)
        start = time.perf_counter()
        bm25s.BM25().index(as_ids, show_progress=False)
        out["bm25s_index_only_s"] = time.perf_counter() - start
        start = time.perf_counter()
        okapi = BM25Okapi(tokens)
        out["rank_bm25_index_only_s"] = time.perf_counter() - start
        out["bm25s_p50_ms"], out["bm25s_p99_ms"], out["bm25s_qps_single"] = _latency(
            lambda q: lucene.search(q, K), questions)
        start = time.perf_counter()
        lucene.search_many(questions, K)
        out["bm25s_qps_batch"] = len(questions) / (time.perf_counter() - start)
        sample = questions[:rank_queries]
        query_tokens = _tokenize(sample, lucene._stemmer)  # noqa: SLF001
        out["rank_p50_ms"], out["rank_p99_ms"], out["rank_qps"] = _latency(
            lambda toks: _rank_top(okapi, toks), query_tokens)
        row_of = {rid: n for n, rid in enumerate(ids)}
        agree = {"robertson": 0, "lucene": 0}
        for question, toks in zip(sample, query_tokens):
            _, rank_scores = _rank_top(okapi, toks)
            agree["robertson"] += _agrees(robertson.search(question, K), row_of, rank_scores)
            agree["lucene"] += _agrees(lucene.search(question, K), row_of, rank_scores)
        out["agree_robertson"] = agree["robertson"] / len(sample)
        out["agree_lucene"] = agree["lucene"] / len(sample)
    return out
