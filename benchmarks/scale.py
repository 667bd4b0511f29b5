"""Scale: the embedded store at 1M, 5M and 10M vectors (384-d) per ANN kind, and a fitted
memory/latency model extrapolated to 24M x 384 and 24M x 768.

Vectors: each is a random convex mix (Dirichlet(1, 1, 1)) of three of the first 4,096 real
all-MiniLM-L6-v2 MedQuAD chunk embeddings plus Gaussian noise (sigma 0.01 per coordinate),
normalised -- as the 1M section of retrieval_speed.py -- generated block by block (never held
whole) and stored as float16 in the store's vector file. Queries: MedQuAD question embeddings;
the first ``--tune`` choose ``nprobe`` (the smallest reaching recall@10 >= 0.95 on them), the
next ``--report`` are the reported figures (never used to choose a setting).

Each size/kind runs in two child processes so that peak RSS is measured per phase
(``VmHWM`` of ``/proc/self/status``): ``build`` (insert records + vectors, train,
fill the ANN index, save) and ``query`` (open read-only as a server does, tune, measure). The
exact baseline (brute force over the same stored vectors, blockwise) runs inside the query
child after its ANN figures are taken, so ratios are measured in one process. Recall@10 is
tie-aware: a returned item counts when its exact score reaches the exact 10th score.

Usage:
    python benchmarks/scale.py                                   # 1M, 5M, 10M with ivfpq
    python benchmarks/scale.py --sizes 1000000 --kinds hnsw ivfpq --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
K = 10
BLOCK = 100_000
# (nprobe, rerank) in rising cost
IVF_SWEEP = [(16, 200), (32, 200), (32, 500), (64, 500), (64, 1000), (128, 1000), (128, 2000),
             (256, 2000), (256, 4000), (512, 4000)]


def _peak_mb() -> float:
    """Peak resident set of this process (VmHWM). Not ru_maxrss: after fork + exec that keeps
    the forking parent's resident size, which is not this child's memory."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _bases(cache: Path, data: Path) -> tuple[np.ndarray, np.ndarray]:
    from _medquad_embed import embed_cached, load_chunks, load_questions

    qa = data / "medquad" / "qa.jsonl"
    _, texts = load_chunks(qa)
    chunks = embed_cached(texts, cache, f"medquad-chunks-{len(texts)}")
    questions = embed_cached(load_questions(qa, 1000), cache, "medquad-questions-1000")
    return chunks[:4096], questions


def synthetic_block(bases: np.ndarray, start: int, m: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng([seed, start])
    weights = rng.dirichlet((1.0, 1.0, 1.0), size=m).astype(np.float32)
    block = sum(weights[:, j:j + 1] * bases[rng.integers(0, len(bases), m)] for j in range(3))
    block += 0.01 * rng.standard_normal(block.shape, dtype=np.float32)
    return (block / np.linalg.norm(block, axis=1, keepdims=True)).astype(np.float32)


def _store(folder: Path, kind: str, read_only: bool = False, pq_m: int = 0) -> Any:
    from mmedrag.stores.embedded import EmbeddedStore

    options: dict[str, Any] = {"kind": kind, "vector_dtype": "float16", "read_only": read_only,
                               "pq_m": pq_m}
    if kind == "hnsw":
        options.update(ef_construction=40)  # as retrieval_speed.py's 1M run: bounded build
    return EmbeddedStore(folder, dim=384, **options)


def child_build(args: argparse.Namespace) -> dict[str, Any]:
    from mmedrag.records import Record

    bases, _ = _bases(args.cache, args.data)
    folder = Path(args.folder)
    started = time.perf_counter()
    store = _store(folder, args.kind, pq_m=args.pq_m)
    for start in range(0, args.size, BLOCK):
        m = min(BLOCK, args.size - start)
        records = [Record(id=f"s{i:08d}", text="", domain="abc"[i % 3])
                   for i in range(start, start + m)]
        store.add(records, synthetic_block(bases, start, m))
        print(f"  added {start + m:,}/{args.size:,} ({time.perf_counter() - started:.0f}s)",
              file=sys.stderr, flush=True)
    added = time.perf_counter() - started
    store.build_ann()
    total = time.perf_counter() - started
    info = store.describe()
    store.close()
    disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {"insert_s": added, "ann_s": total - added, "build_s": total,
            "peak_rss_build_mb": _peak_mb(), "disk_bytes": disk, "describe": info}


def _recall(hits: list[list[Any]], tenth: np.ndarray) -> float:
    found = sum(sum(1 for h in row[:K] if h.score >= bar - 1e-4) for row, bar in zip(hits, tenth))
    return found / (K * len(tenth))


def child_query(args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    _, questions = _bases(args.cache, args.data)
    tenth = np.load(args.tenth)
    tune_q, report_q = questions[:args.tune], questions[args.tune:args.tune + args.report]
    tune_t, report_t = tenth[:args.tune], tenth[args.tune:args.tune + args.report]
    started = time.perf_counter()
    store = _store(Path(args.folder), args.kind, read_only=True, pq_m=args.pq_m)
    store.search(report_q[:1], k=K)  # loads the saved ANN index
    open_s = time.perf_counter() - started
    sweep = []
    knob = "nprobe/rerank" if store.active_kind() == "ivfpq" else "ef_search"
    chosen: Any = None
    settings: list[Any] = (IVF_SWEEP if knob == "nprobe/rerank" else [32, 64, 128, 256])
    for value in settings:  # cheapest first; the first reaching 0.95 on the tuning queries
        if knob == "nprobe/rerank":
            store.params = dataclasses.replace(store.params, nprobe=value[0], rerank=value[1])
        else:
            store.ef_search = value
        t0 = time.perf_counter()
        recall = _recall(store.search(tune_q, k=K), tune_t)
        sweep.append({knob: value, "tune_recall": recall,
                      "tune_ms_per_query": (time.perf_counter() - t0) * 1000 / len(tune_q)})
        print(f"  tuning {knob}={value}: recall@10 {recall:.4f}", file=sys.stderr, flush=True)
        if recall >= 0.95:
            chosen = value
            break
    chosen = chosen if chosen is not None else sweep[-1][knob]
    latencies, hits = [], []
    for q in report_q:
        t0 = time.perf_counter()
        hits.append(store.search(q[None], k=K)[0])
        latencies.append((time.perf_counter() - t0) * 1000)
    peak = _peak_mb()
    exact_ms = []
    for q in report_q[:args.exact_queries]:
        t0 = time.perf_counter()
        store.search(q[None], k=K, exact=True)
        exact_ms.append((time.perf_counter() - t0) * 1000)
    store.close()
    p50 = float(np.percentile(latencies, 50))
    return {"kind": store.active_kind(), knob: chosen, "sweep": sweep, "open_s": open_s,
            "p50_ms": p50, "p99_ms": float(np.percentile(latencies, 99)),
            "recall@10": _recall(hits, report_t), "peak_rss_query_mb": peak,
            "exact_p50_ms": float(np.median(exact_ms)),
            "speedup_vs_exact": float(np.median(exact_ms)) / p50}


def exact_tenth(folder: Path, rows: int, queries: np.ndarray) -> np.ndarray:
    """Exact 10th-best score per query over the stored (float16) vectors, blockwise."""
    from mmedrag.stores.vector_file import VectorFile

    vf = VectorFile(folder, 384, "float16", read_only=True)
    best = np.full((len(queries), K), -np.inf, dtype=np.float32)
    for _, block in vf.blocks(rows, block=131_072):
        scores = queries @ block.T
        merged = np.concatenate([best, scores], axis=1)
        best = -np.partition(-merged, K - 1, axis=1)[:, :K]
    return best.min(axis=1)


def _child(mode: str, args: argparse.Namespace, folder: Path, kind: str, size: int,
           extra: list[str]) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", mode, "--folder", str(folder), "--kind", kind,
               "--size", str(size), "--cache", str(args.cache), "--data", str(args.data),
               "--tune", str(args.tune), "--report", str(args.report),
               "--exact-queries", str(args.exact_queries), "--pq-m", str(args.pq_m), *extra]
    out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fit(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Least-squares models over the ivfpq runs, extrapolated to 24M vectors (a model, not a
    measurement): peak RSS and disk = a + b*N; p50 = c + d*(codes scanned) + e*(rows
    re-ranked), codes scanned = nprobe * N / lists; every run re-ranks 1000 rows, so c holds
    that cost. At 768-d the per-vector terms of RSS/disk and the whole p50 double (PQ codes
    are dim/8 bytes, float16 rows 2*dim bytes, the scan and the re-ranking read twice the
    bytes): an upper bound, since ids and flags do not grow with the dimension."""
    runs = [r for r in rows if r["kind"] == "ivfpq"]
    if len(runs) < 2:
        return {}
    n = np.array([r["size"] for r in runs], dtype=float)
    out: dict[str, Any] = {"model": "RSS/disk = a + b*N; p50 = c + d*nprobe*N/lists; "
                                    "fitted on "
                                    f"{', '.join(f'{int(x):,}' for x in n)} vectors"}
    target = 24_000_000
    for key in ("peak_rss_query_mb", "peak_rss_build_mb", "disk_bytes"):
        y = np.array([r[key] for r in runs], dtype=float)
        b, a = np.polyfit(n, y, 1)
        out[f"{key}@24Mx384"] = round(float(a + b * target), 1)
        out[f"{key}@24Mx768"] = round(float(a + 2 * b * target), 1)
    scanned = np.array([r["nprobe/rerank"][0] * r["size"] / r["describe"]["params"]["lists"]
                        for r in runs])
    y = np.array([r["p50_ms"] for r in runs])
    slope, intercept = np.polyfit(scanned, y, 1)
    lists = 2 ** round(np.log2(np.sqrt(target)))
    for nprobe in (64, 128):
        codes = nprobe * target / lists
        for dim, factor in ((384, 1), (768, 2)):
            value = factor * (intercept + slope * codes)
            out[f"p50_ms@24Mx{dim} (nprobe {nprobe}, rerank 1000, {lists} lists)"] = \
                round(float(value), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--cache", type=Path, default=HERE / ".cache")
    parser.add_argument("--work", type=Path, default=HERE / ".cache" / "scale")
    parser.add_argument("--sizes", type=int, nargs="+",
                        default=[1_000_000, 5_000_000, 10_000_000])
    parser.add_argument("--kinds", nargs="+", default=["ivfpq"])
    parser.add_argument("--tune", type=int, default=300)
    parser.add_argument("--report", type=int, default=200)
    parser.add_argument("--exact-queries", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the built indexes")
    parser.add_argument("--pq-m", type=int, default=0, help="PQ bytes per vector (0: dim/8)")
    parser.add_argument("--reuse", action="store_true", help="query a kept index, no rebuild")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=["build", "query"])
    parser.add_argument("--folder")
    parser.add_argument("--kind", default="ivfpq")
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--tenth")
    parser.add_argument("--from-json", type=Path, nargs="+",
                        help="print the table and the fitted model of saved runs, no new runs")
    args = parser.parse_args()
    if args.from_json:
        runs = [r for path in args.from_json for r in json.loads(path.read_text())["runs"]]
        runs.sort(key=lambda r: (r["size"], r["kind"]))
        print(json.dumps({"runs": [{k: r.get(k) for k in (
            "size", "kind", "build_s", "peak_rss_build_mb", "peak_rss_query_mb", "disk_bytes",
            "p50_ms", "p99_ms", "recall@10", "exact_p50_ms", "speedup_vs_exact",
            "nprobe/rerank")} for r in runs],
                          "model": fit(runs)}, indent=1))
        return
    if args.child:
        result = child_build(args) if args.child == "build" else child_query(args)
        print(json.dumps(result))
        return
    _, questions = _bases(args.cache, args.data)
    queries = questions[:args.tune + args.report]
    rows: list[dict[str, Any]] = []
    header = (f"{'vectors':>11} {'kind':<6} {'build s':>8} {'build RSS':>10} {'query RSS':>10} "
              f"{'disk GB':>8} {'p50 ms':>7} {'p99 ms':>7} {'recall@10':>9} {'exact p50':>10} "
              f"{'speedup':>8}  setting")
    for size in args.sizes:
        for kind in args.kinds:
            folder = args.work / f"{kind}-{size}-pq{args.pq_m}"
            if args.reuse and (folder / "built.json").exists():
                built = json.loads((folder / "built.json").read_text())
            else:
                shutil.rmtree(folder, ignore_errors=True)
                print(f"# {kind} {size:,}: building", flush=True)
                built = _child("build", args, folder, kind, size, [])
                (folder / "built.json").write_text(json.dumps(built))
            tenth = exact_tenth(folder, size, queries)
            np.save(args.work / "tenth.npy", tenth)
            print(f"# {kind} {size:,}: querying", flush=True)
            queried = _child("query", args, folder, kind, size,
                             ["--tenth", str(args.work / "tenth.npy")])
            row = {"size": size, **built, **queried}
            rows.append(row)
            setting = {k: queried[k] for k in ("nprobe/rerank", "ef_search") if k in queried}
            print(header)
            print(f"{size:>11,} {queried['kind']:<6} {built['build_s']:>8.0f} "
                  f"{built['peak_rss_build_mb']:>8.0f}MB {queried['peak_rss_query_mb']:>8.0f}MB "
                  f"{built['disk_bytes'] / 1e9:>8.2f} {queried['p50_ms']:>7.2f} "
                  f"{queried['p99_ms']:>7.2f} {queried['recall@10']:>9.4f} "
                  f"{queried['exact_p50_ms']:>8.0f}ms {queried['speedup_vs_exact']:>7.0f}x  "
                  f"{setting}", flush=True)
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
            if args.json:
                args.json.write_text(json.dumps({"runs": rows, "model": fit(rows)}, indent=2))
    model = fit(rows)
    print("\n# fitted model (extrapolated, not measured):")
    for key, value in model.items():
        print(f"  {key}: {value}")
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "model": model}, indent=2))


if __name__ == "__main__":
    main()
