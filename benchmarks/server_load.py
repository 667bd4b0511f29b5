"""Load test of the REST server on loopback, then its answers to malformed requests.

1. Starts ``mmedrag serve`` in a child process on 127.0.0.1 (loopback only: this script never
   binds or calls any other address) with a random API key and the echo generator, over
   ``--index`` or, by default, a temporary index of the packaged 36-pair VQA-RAD sample built
   with the default all-MiniLM-L6-v2 text encoder. Clients run in this process, the server in
   its own, so they do not share one interpreter lock.
2. ``--clients`` threads POST ``/v1/search`` (the sample's questions, hybrid mode, k=5) for
   ``--seconds`` or until ``--max-requests`` in all, whichever comes first; prints requests,
   errors (a non-200, or hits that differ from the same query sent alone before the load),
   p50/p90/p99 latency and requests per second.
3. Sends the malformed requests (no image/question, a text file named .png, a 50 MB upload, a
   non-UTF-8 question, a wrong API key, malformed JSON and base64) and prints each status and
   message, then checks ``/healthz``.

Usage:
    python benchmarks/server_load.py [--seconds 60] [--clients 8] [--index IDX] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # fixed: the load never leaves this machine
SAMPLE = REPO / "src" / "mmedrag" / "data" / "vqarad_sample"


def build_sample_index(directory: Path, encoder: str) -> Path:
    from mmedrag.config import Component, IndexConfig
    from mmedrag.index import Index
    from mmedrag.ingest.manifest import read_manifest

    index = Index.open(directory, create=True,
                       config=IndexConfig(text_encoder=Component(name=encoder)))
    index.add(read_manifest(SAMPLE / "pairs.jsonl").records)
    index.close()
    return directory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start(index_dir: Path, api_key: str, config: Path) -> tuple[subprocess.Popen, str]:
    """``mmedrag serve`` in its own process (its own GIL), on loopback, echo generator."""
    port = free_port()
    env = {**os.environ, "MMEDRAG_LOAD_KEY": api_key}
    process = subprocess.Popen(
        [sys.executable, "-m", "mmedrag", "serve", "--index", str(index_dir), "--host", HOST,
         "--port", str(port), "--api-key-env", "MMEDRAG_LOAD_KEY", "--config", str(config),
         "--log-level", "warning"], env=env)
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.3)
    process.terminate()
    raise SystemExit("the server did not answer /healthz within 120 s")


def load(url: str, api_key: str, clients: int, seconds: float, max_requests: int,
         queries: list[str], unique: bool = False) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    issued = {"n": 0}
    stop_at = float("inf")  # set once the baseline is taken

    def take() -> int | None:
        with lock:
            if issued["n"] >= max_requests or time.monotonic() >= stop_at:
                return None
            issued["n"] += 1
            return issued["n"]

    def ask(client: httpx.Client, n: int, fresh: bool = False) -> httpx.Response:
        text = queries[n % len(queries)] + (f" (request {n})" if fresh else "")
        return client.post("/v1/search", json={"text": text, "k": 5, "mode": "hybrid"})

    def ranking(response: httpx.Response) -> list[tuple[str, float]]:
        return [(h["id"], round(h["score"], 6)) for h in response.json()["hits"]]

    with httpx.Client(base_url=url, headers={"X-API-Key": api_key}, timeout=30) as client:
        baseline = [ranking(ask(client, n)) for n in range(len(queries))]  # one at a time

    def client_loop() -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": api_key}, timeout=30) as client:
            while (n := take()) is not None:
                started = time.perf_counter()
                try:
                    response = ask(client, n, unique)
                    if response.status_code != 200:
                        kind = f"HTTP {response.status_code}"
                    elif unique:  # a new text every time: nothing to compare with
                        kind = "" if len(response.json()["hits"]) == 5 else "too few hits"
                    else:  # under load, exactly what a lone request got
                        same = ranking(response) == baseline[n % len(queries)]
                        kind = "" if same else "differs from the lone request"
                except httpx.HTTPError as exc:
                    kind = exc.__class__.__name__
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if kind:
                        errors[kind] = errors.get(kind, 0) + 1

    began = time.perf_counter()
    stop_at = time.monotonic() + seconds
    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    ordered = sorted(latencies)

    if not ordered:
        raise SystemExit("no request completed")

    def pct(p: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))], 2)

    return {"clients": clients, "seconds": round(wall, 2), "requests": len(ordered),
            "errors": sum(errors.values()), "error_kinds": errors,
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
            "mean_ms": round(1000 * statistics.fmean(ordered), 2),
            "req_per_s": round(len(ordered) / wall, 1)}


def malformed(url: str, api_key: str, image: bytes) -> list[dict[str, Any]]:
    """Each bad request once; returns (name, status, message) rows."""
    question = {"question": "Is the spleen normal size?"}
    cases: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        ("no image and no question", {"data": {"task": "open_vqa"}}, {}),
        ("text file named scan.png", {"data": question, "files": {
            "image": ("scan.png", b"this is a text file, not a PNG\n" * 10, "image/png")}}, {}),
        ("50 MB upload", {"data": question, "files": {
            "image": ("big.png", image + b"\0" * (50 * 1024 * 1024), "image/png")}}, {}),
        ("non-UTF-8 question", {"files": {
            "question": (None, b"Is the \xff\xfe spleen normal?"),
            "image": ("a.jpg", image, "image/jpeg")}}, {}),
        ("wrong API key", {"data": question}, {"X-API-Key": "not-the-key"}),
        ("malformed JSON", {"content": b'{"question": "Is it?",',
                            "headers": {"Content-Type": "application/json"}}, {}),
        ("malformed base64", {"json": {**question, "image_b64": "@@@not-base64@@@"}}, {}),
    ]
    rows = []
    for name, kwargs, override in cases:
        headers = {"X-API-Key": api_key, **override, **kwargs.pop("headers", {})}
        with httpx.Client(base_url=url, timeout=60) as client:
            try:
                response = client.post("/v1/answer", headers=headers, **kwargs)
                status, message = response.status_code, response.json().get("error", response.text)
            except httpx.HTTPError as exc:
                status, message = 0, f"client error: {exc.__class__.__name__}: {exc}"
            alive = client.get("/healthz").status_code == 200
        rows.append({"request": name, "status": status, "message": message,
                     "healthz_after": alive})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, help="index folder (default: the packaged sample)")
    parser.add_argument("--encoder", default="sentence-transformers",
                        help="text encoder for the default sample index")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--unique-queries", action="store_true",
                        help="make every query text new, so no cached embedding is reused")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not 1 <= args.clients <= 64 or not 0 < args.seconds <= 600:
        parser.error("--clients must be 1-64 and --seconds 0-600")
    queries = [json.loads(line)["question"] for line in
               (SAMPLE / "questions.jsonl").read_text(encoding="utf-8").splitlines()]
    image = (SAMPLE / "images" / "synpic19605.jpg").read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MMEDRAG_CACHE"] = str(Path(tmp) / "cache")  # fresh embedding cache, for both
        index_dir = args.index or build_sample_index(Path(tmp) / "index", args.encoder)
        api_key = secrets.token_urlsafe(24)
        config = Path(tmp) / "config.yaml"
        config.write_text("generator:\n  name: echo\n", encoding="utf-8")
        server, url = start(index_dir, api_key, config)
        try:
            stats = load(url, api_key, args.clients, args.seconds, args.max_requests, queries,
                         args.unique_queries)
            rows = malformed(url, api_key, image)
            health = httpx.get(f"{url}/healthz", timeout=10).json()
        finally:
            server.terminate()
            server.wait(timeout=30)
    result = {"index": str(args.index or f"packaged sample ({args.encoder})"), "load": stats,
              "unique_queries": args.unique_queries,
              "malformed": rows, "healthz": health, "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        texts = "a new text each request" if args.unique_queries else "36 texts, repeated"
        print(f"index: {result['index']}; {stats['clients']} clients on /v1/search (hybrid, k=5; "
              f"{texts}) for {stats['seconds']} s on {HOST} ({os.cpu_count()} CPUs)")
        kinds = stats["error_kinds"] or ""
        print(f"  requests {stats['requests']}, errors {stats['errors']} {kinds}")
        print(f"  latency p50 {stats['p50_ms']} ms, p90 {stats['p90_ms']} ms, p99 "
              f"{stats['p99_ms']} ms, mean {stats['mean_ms']} ms; {stats['req_per_s']} req/s")
        print("malformed requests to /v1/answer:")
        for row in rows:
            print(f"  {row['request']:<26} -> {row['status']} {row['message']}  "
                  f"(healthz after: {'ok' if row['healthz_after'] else 'DOWN'})")
        print(f"healthz: {health}")
    failed = stats["errors"] or any(not r["healthz_after"] or not 400 <= r["status"] < 500
                                    for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
