"""Durability: ``kill -9`` in the middle of ``mmedrag index``, reopen, then ``--resume``.

The ingest commits one batch of 64 records per transaction, so after the kill the index must
hold a whole number of batches, be readable and searchable, and ``mmedrag index --resume``
must complete it with every id exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

BATCH = 64  # Index.add's default batch size: one committed transaction each
TOTAL = 10_000
# exact search only (no HNSW build at the end) keeps the test to seconds; ANN is in test_contract
CONFIG = ("index:\n  text_encoder: {name: hashing}\n  image_encoder: null\n"
          "  store: {name: embedded, options: {exact_below: 1000000}}\n")


def _write_corpus(path: Path, n: int) -> list[str]:
    words = ("effusion pneumothorax consolidation nodule fracture edema mass stenosis "
             "aneurysm infarct haemorrhage atelectasis cardiomegaly").split()
    ids = []
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            text = " ".join(words[(i * 7 + j) % len(words)] for j in range(40)) + f" case {i}."
            ids.append(f"doc{i:06d}")
            row = {"id": ids[-1], "title": f"report {i}", "content": text}
            handle.write(json.dumps(row) + "\n")
    return ids


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mmedrag", *args]


def _committed(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
    except sqlite3.Error:  # table not created yet, or busy
        return 0


def _kill_after_first_commits(command: list[str], db: Path, timeout: float = 120.0) -> int:
    """Start ``command``, SIGKILL it once at least one batch is committed; committed count."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while _committed(db) < BATCH:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ingest ended (rc={proc.returncode}) before a batch was committed")
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return _committed(db)


def test_kill_during_ingest_keeps_whole_batches_and_resume_completes(tmp_path: Path) -> None:
    from mmedrag.index import Index

    corpus = tmp_path / "corpus.jsonl"
    ids = _write_corpus(corpus, TOTAL)
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    index_dir = tmp_path / "idx"
    command = _cli("index", str(corpus), "--index", str(index_dir), "--kind", "corpus",
                   "--config", str(tmp_path / "cfg.yaml"), "--json")

    committed = _kill_after_first_commits(command, index_dir / "text" / "store.sqlite")
    assert 0 < committed < TOTAL, "the kill must land mid-ingest"
    assert committed % BATCH == 0, f"{committed} records is not a whole number of batches"

    index = Index.open(index_dir)  # reopens at the last committed state
    assert index.count() == committed
    first = index.get(["doc000000", "doc000001"])
    assert [r.id for r in first] == ["doc000000", "doc000001"] and first[0].title == "report 0"
    hits = index.search_text_dense(first[1].text, k=3)
    assert hits[0].id == "doc000001"
    index.close()

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(command[:-1] + ["--resume", "--json"], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["already_indexed"] == committed
    assert summary["added"] == TOTAL - committed
    assert summary["count"] == TOTAL

    index = Index.open(index_dir)
    stored = [r.id for r in index.text_store.iter_records(batch=5000)]
    assert len(stored) == len(set(stored)) == TOTAL
    assert set(stored) == set(ids)
    assert index.info()["count"] == TOTAL
    assert index.search_text_dense(index.get(["doc009999"])[0].text, k=1)[0].id == "doc009999"
    # no torn vector: every stored row of the memory-mapped vector file is the encoder's
    # vector of its record (rows written by the killed batch were overwritten on resume)
    sample = stored[::97] + stored[committed - 2:committed + 2]
    texts = [r.text for r in index.get(sample)]
    np.testing.assert_allclose(index.text_store.vectors(sample),
                               index.text_encoder.encode_texts(texts), atol=1e-6)
    vector_file = index_dir / "text" / "vectors.f32"
    assert vector_file.stat().st_size == TOTAL * index.text_encoder.dim * 4
    index.close()
