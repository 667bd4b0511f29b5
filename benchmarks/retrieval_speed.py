"""Retrieval speed: embedded store and Milvus Lite vs numpy brute force; bm25s vs rank_bm25.

Data: all-MiniLM-L6-v2 embeddings of the 41,260 100-word chunks of MedQuAD's answers
(``<data>/medquad/qa.jsonl``), queried with 1,000 MedQuAD questions; embeddings are cached
under ``benchmarks/.cache/`` after the first run (about 20 min on two free cores). A synthetic
scale-up (default 1M vectors mixed from real chunk embeddings plus noise) measures the
embedded store at scale. Every ratio is to numpy brute force run in the same process.

Usage:
    python benchmarks/retrieval_speed.py                      # everything
    python benchmarks/retrieval_speed.py --sections real bm25 # skip the 1M part
    python benchmarks/retrieval_speed.py --synthetic 200000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # before numpy loads: one BLAS thread (see --help, README)
    for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _bm25_speed import run_bm25  # noqa: E402
from _dense_speed import (  # noqa: E402
    DenseResult,
    bench_numpy,
    run_embedded,
    run_milvus,
    synthetic,
    tenth_scores,
)
from _medquad_embed import embed_cached, load_chunks, load_questions  # noqa: E402


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data",
                        help="folder holding medquad/qa.jsonl (default ../shared/data)")
    parser.add_argument("--cache", type=Path, default=HERE / ".cache")
    parser.add_argument("--sections", nargs="+", default=["real", "synthetic", "bm25"],
                        choices=["real", "synthetic", "bm25"])
    parser.add_argument("--queries", type=int, default=1000, help="MedQuAD questions embedded")
    parser.add_argument("--max-chunks", type=int, default=0,
                        help="use only the first N chunks (a multiple of 4096 reuses the cache)")
    parser.add_argument("--latency-queries", type=int, default=300)
    parser.add_argument("--milvus-latency-queries", type=int, default=100)
    parser.add_argument("--no-milvus", action="store_true")
    parser.add_argument("--m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--ef-search", type=int, default=128)
    parser.add_argument("--ef-sweep", type=int, nargs="*", default=[32, 64, 256],
                        help="extra ef_search values measured on the same graphs")
    parser.add_argument("--synthetic", type=int, default=1_000_000, help="vectors in the scale-up")
    parser.add_argument("--synthetic-queries", type=int, default=200,
                        help="queries at scale (each costs a 1M-row brute-force pass)")
    parser.add_argument("--synthetic-ef-construction", type=int, default=40,
                        help="HNSW efConstruction at scale (bounds the build time)")
    parser.add_argument("--synthetic-bases", type=int, default=4096,
                        help="first N real chunk embeddings the synthetic vectors mix")
    parser.add_argument("--rank-bm25-queries", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    return parser.parse_args()


def _ratio_cells(row: DenseResult, base: DenseResult) -> tuple[str, str]:
    speed = f"{base.p50_ms / row.p50_ms:.3g}x" if row.p50_ms else "-"
    qps = f"{row.batch_qps / base.batch_qps:.3g}x" if row.batch_qps and base.batch_qps else "-"
    return speed, qps


def print_dense(title: str, rows: list[DenseResult]) -> None:
    base = rows[0]
    print(f"\n{title}")
    print(f"{'system':<46}{'build s':>9}{'p50 ms':>9}{'p99 ms':>9}{'batch q/s':>11}"
          f"{'recall@10':>11}{'p50 vs numpy':>14}{'q/s vs numpy':>14}")
    for row in rows:
        speed, qps = _ratio_cells(row, base)
        build = f"{row.build_s:9.1f}" if row.build_s is not None else f"{'-':>9}"
        batch = f"{row.batch_qps:11.0f}" if row.batch_qps else f"{'-':>11}"
        recall = f"{row.recall:11.4f}" if row.recall is not None else f"{'-':>11}"
        print(f"{row.system:<46}{build}{row.p50_ms:9.3f}{row.p99_ms:9.3f}{batch}{recall}"
              f"{speed:>14}{qps:>14}")
    for row in rows:
        if row.notes and row.build_s:
            print(f"  {row.system}: {row.notes}")


def real_section(args: argparse.Namespace, matrix: np.ndarray, queries: np.ndarray,
                 texts: list[str], domains: list[str]) -> list[DenseResult]:
    tenth = tenth_scores(matrix, queries)
    rows = [bench_numpy(matrix, queries, args.latency_queries)]
    common = dict(m=args.m, ef_construction=args.ef_construction, ef_search=args.ef_search,
                  workdir=args.cache, ef_sweep=tuple(args.ef_sweep))
    rows += run_embedded(matrix, queries, tenth, args.latency_queries, texts, domains, **common)
    if not args.no_milvus:
        common["ef_sweep"] = ()
        rows += run_milvus(matrix, queries, tenth, args.milvus_latency_queries, texts, domains,
                           **common)
    print_dense(f"Dense top-10, MedQuAD {len(matrix):,} chunks x {matrix.shape[1]} "
                f"(all-MiniLM-L6-v2), {len(queries)} question queries", rows)
    return rows


def synthetic_section(args: argparse.Namespace, bases: np.ndarray,
                      queries: np.ndarray) -> list[DenseResult]:
    queries = queries[:args.synthetic_queries]
    started = time.perf_counter()
    matrix = synthetic(bases, args.synthetic)
    seconds = time.perf_counter() - started
    print(f"\n(generated {len(matrix):,} synthetic vectors in {seconds:.0f}s)", flush=True)
    tenth = tenth_scores(matrix, queries)
    rows = [bench_numpy(matrix, queries, min(50, args.latency_queries))]
    rows += run_embedded(matrix, queries, tenth, args.latency_queries, None, None, m=args.m,
                         ef_construction=args.synthetic_ef_construction,
                         ef_search=args.ef_search, workdir=args.cache,
                         ef_sweep=tuple(args.ef_sweep))
    print_dense(f"Dense top-10, synthetic scale-up {len(matrix):,} x {matrix.shape[1]} "
                f"(Dirichlet mixes of 3 of {len(bases):,} real chunk embeddings + noise), "
                f"{len(queries)} "
                "MedQuAD question queries", rows)
    return rows


def print_bm25(res: dict[str, Any]) -> None:
    tok = res["tokenize_s"]
    print(f"\nBM25 over {res['docs']:,} MedQuAD chunks ({res['queries']} queries for bm25s, "
          f"first {res['rank_bm25_queries']} for rank_bm25)")
    print(f"{'':<28}{'index s':>9}{'+tokenise s':>13}{'p50 ms':>9}{'p99 ms':>9}{'q/s':>9}")
    print(f"{'bm25s (mmedrag BM25Index)':<28}{res['bm25s_index_only_s']:9.2f}"
          f"{res['bm25s_index_only_s'] + tok:13.2f}{res['bm25s_p50_ms']:9.3f}"
          f"{res['bm25s_p99_ms']:9.3f}{res['bm25s_qps_single']:9.0f}")
    print(f"{'rank_bm25 BM25Okapi':<28}{res['rank_bm25_index_only_s']:9.2f}"
          f"{res['rank_bm25_index_only_s'] + tok:13.2f}{res['rank_p50_ms']:9.3f}"
          f"{res['rank_p99_ms']:9.3f}{res['rank_qps']:9.1f}")
    print(f"  query p50 speed-up of bm25s over rank_bm25: "
          f"{res['rank_p50_ms'] / res['bm25s_p50_ms']:.1f}x (bm25s timed with its tokenizer, "
          f"rank_bm25 on pre-tokenised queries); batch bm25s {res['bm25s_qps_batch']:.0f} q/s")
    rank_index, bm25s_index = res["rank_bm25_index_only_s"], res["bm25s_index_only_s"]
    print(f"  indexing speed-up: {rank_index / bm25s_index:.1f}x"
          f" on tokens, {(rank_index + tok) / (bm25s_index + tok):.1f}x"
          f" with the shared tokenisation ({tok:.1f}s); BM25Index.build with save "
          f"{res['bm25s_build_s']:.1f}s")
    print(f"  same top-10 as rank_bm25: {res['agree_robertson']:.1%} of queries (robertson, "
          f"= Okapi), {res['agree_lucene']:.1%} with mmedrag's default lucene idf")


def main() -> None:
    args = _arguments()
    qa = args.data / "medquad" / "qa.jsonl"
    if not qa.exists():
        sys.exit(f"{qa}: not found (pass --data pointing at the shared data folder)")
    args.cache.mkdir(parents=True, exist_ok=True)
    print(f"retrieval_speed: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
          "(figures on a shared machine vary with its load)", flush=True)
    ids, texts = load_chunks(qa)
    domains = [i.split("_", 1)[0] for i in ids]
    questions = load_questions(qa, args.queries)
    queries = embed_cached(questions, args.cache, f"medquad-questions-{args.queries}")
    report: dict[str, Any] = {"load_average_start": os.getloadavg()[0]}
    if "real" in args.sections:
        n = min(args.max_chunks or len(texts), len(texts))
        matrix = embed_cached(texts[:n], args.cache, f"medquad-chunks-{n}",
                              parts=f"medquad-chunks-{len(texts)}")
        report["real"] = [vars(r) for r in real_section(args, matrix, queries, texts[:n],
                                                        domains[:n])]
    if "synthetic" in args.sections and args.synthetic:
        bases = embed_cached(texts[:args.synthetic_bases], args.cache,
                             f"medquad-chunks-first{args.synthetic_bases}")
        report["synthetic"] = [vars(r) for r in synthetic_section(args, bases, queries)]
    if "bm25" in args.sections:
        report["bm25"] = run_bm25(ids, texts, questions, args.rank_bm25_queries, args.cache)
        print_bm25(report["bm25"])
    report["load_average_end"] = os.getloadavg()[0]
    print(f"\nload average at the end: {report['load_average_end']:.1f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
