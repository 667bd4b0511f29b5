"""One writer, many readers: a second writer waits or fails clearly, the server never writes,
and a running server sees a writer's commits (dense, BM25, counts) within its refresh time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")

CONFIG = "index:\n  text_encoder: {name: hashing}\n  image_encoder: null\n"
WORDS = ("effusion pneumothorax consolidation nodule fracture edema mass stenosis aneurysm "
         "infarct haemorrhage atelectasis cardiomegaly").split()


def corpus(path: Path, start: int, n: int) -> list[str]:
    ids = []
    with path.open("w") as handle:
        for i in range(start, start + n):
            ids.append(f"rec{i:05d}")
            text = " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(12)) + f" zq{i}x"
            handle.write(json.dumps({"id": ids[-1], "text": text}) + "\n")
    return ids


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mmedrag", *args]


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() and not p.name.endswith(("-shm", "-wal"))}


@pytest.fixture()
def base(tmp_path: Path) -> Path:
    (tmp_path / "c.yaml").write_text(CONFIG)
    corpus(tmp_path / "a.jsonl", 0, 100)
    out = subprocess.run(cli("index", str(tmp_path / "a.jsonl"), "--index", str(tmp_path / "idx"),
                             "--config", str(tmp_path / "c.yaml")), env=env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return tmp_path


def test_second_writer_fails_clearly_or_waits(base: Path) -> None:
    corpus(base / "b.jsonl", 100, 30000)
    corpus(base / "c.jsonl", 30100, 300)
    first = subprocess.Popen(cli("index", str(base / "b.jsonl"), "--index", str(base / "idx")),
                             env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lock = base / "idx" / ".writer.lock"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (lock.exists() and lock.read_text().strip()
                                               == str(first.pid)):
        time.sleep(0.05)
    second = subprocess.run(cli("index", str(base / "c.jsonl"), "--index", str(base / "idx")),
                            env=env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert f"another process (pid {first.pid}) is writing" in second.stderr
    waiting = subprocess.run(cli("index", str(base / "c.jsonl"), "--index", str(base / "idx"),
                                 "--wait", "120", "--json"), env=env(), capture_output=True,
                             text=True, timeout=300)
    assert first.wait(timeout=300) == 0
    assert waiting.returncode == 0, waiting.stderr
    assert json.loads(waiting.stdout)["count"] == 30400  # 0 lost, 0 duplicated


def test_server_never_writes_and_sees_a_writers_commits(base: Path) -> None:
    from mmedrag.config import Component, Config
    from mmedrag.index import Index
    from mmedrag.server.app import create_app
    from mmedrag.server.background import serve_in_thread

    idx = base / "idx"
    stale = Index.open(idx)  # rows committed without BM25/graph/index.json: a stale cache
    stale.text_store.add(*_records(stale, 100, 20))
    stale.close()
    before = snapshot(idx)
    app = create_app(idx, config=Config(generator=Component(name="echo")), refresh_seconds=0.5)
    running = serve_in_thread(app)
    try:
        with httpx.Client(base_url=running.url, timeout=30) as client:
            for mode in ("bm25", "dense", "hybrid"):
                assert client.post("/v1/search", json={"text": "zq105x", "mode": mode}
                                   ).status_code == 200
            assert client.get("/healthz").json()["records"] == 120
            assert snapshot(idx) == before  # the read-only server wrote nothing
            corpus(base / "b.jsonl", 120, 300)
            last = json.loads((base / "b.jsonl").read_text().splitlines()[-1])["text"]
            writer = subprocess.run(cli("index", str(base / "b.jsonl"), "--index", str(idx)),
                                    env=env(), capture_output=True, text=True, timeout=300)
            assert writer.returncode == 0, writer.stderr
            done = time.monotonic()
            seen: dict[str, float] = {}
            while len(seen) < 3 and time.monotonic() - done < 10:
                if "count" not in seen and client.get("/healthz").json()["records"] == 420:
                    seen["count"] = time.monotonic() - done
                for mode, query in (("dense", last), ("bm25", "zq419x")):
                    hits = client.post("/v1/search", json={"text": query, "mode": mode,
                                                           "k": 1}).json()["hits"]
                    if mode not in seen and hits and hits[0]["id"] == "rec00419":
                        seen[mode] = time.monotonic() - done
                time.sleep(0.05)
            assert set(seen) == {"count", "dense", "bm25"}, seen
            assert max(seen.values()) < 3.0, seen  # refresh every 0.5 s
            print(f"freshness after the writer exits (s): {seen}")
            refreshed = client.post("/v1/admin/refresh").json()
            assert refreshed["records"] == 420
    finally:
        running.stop()


def _records(index: Any, start: int, n: int) -> tuple[list[Any], Any]:
    from mmedrag.records import Record

    records = [Record(id=f"rec{i:05d}", text=f"stale zq{i}x") for i in range(start, start + n)]
    return records, index.text_encoder.encode_texts([r.text for r in records])
