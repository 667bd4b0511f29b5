"""kill -9 of ``mmedrag index`` at random points, then ``--resume``: 0 lost, 0 duplicated, every
record (text and image) finds itself first. 3 kills in the default run, 20 in the slow one."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmedrag.index import Index

N = 1500
CONFIG = ("index:\n  text_encoder: {name: hashing}\n  image_encoder: {name: thumbnail}\n"
          "  store: {name: embedded, options: {exact_below: 1000000}}\n")


def dataset(folder: Path, n: int = N) -> Path:
    """``n`` pairs with unique noise images and unique texts."""
    rng = np.random.default_rng(7)
    (folder / "img").mkdir(parents=True)
    lines = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(
            folder / "img" / f"{i}.png")
        lines.append(json.dumps({"id": f"case/{i:05d}", "image": f"img/{i}.png",
                                 "text": f"finding {i} token{i}x lobe {i % 7} grade {i % 5}"}))
    (folder / "m.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "c.yaml").write_text(CONFIG)
    return folder / "m.jsonl"


def committed(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
    except sqlite3.Error:
        return 0


def kill_at_random(manifest: Path, index: Path, rng: random.Random, first: bool,
                   pause: float) -> int:
    """Start an ingest, SIGKILL it at a random moment; return committed text rows."""
    args = ["index", str(manifest), "--index", str(index), "--json"]
    args += ["--config", str(manifest.parent / "c.yaml")] if first else ["--resume"]
    proc = subprocess.Popen([sys.executable, "-m", "mmedrag", *args],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = index / "text" / "store.sqlite"
    start = committed(db)
    deadline = time.monotonic() + 60
    while committed(db) == start and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # wait until this run has committed something of its own
    time.sleep(rng.uniform(0.0, pause))
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return committed(db)


def check(index_dir: Path, manifest: Path) -> None:
    ids = [json.loads(line)["id"] for line in manifest.read_text().splitlines()]
    index = Index.open(index_dir, read_only=True)
    text_ids = [r.id for r in index.text_store.iter_records()]
    image_ids = [r.id for r in index.image_store.iter_records()]
    assert sorted(text_ids) == sorted(ids) == sorted(image_ids)  # 0 lost, 0 duplicated
    records = {r.id: r for r in index.get(ids)}
    sample = ids  # every record
    texts = index.text_encoder.encode_texts([records[i].text for i in sample])
    top_text = index.text_store.search(texts, k=1, exact=True)
    assert [h[0].id for h in top_text] == sample
    images = [Image.open(index.image_path(records[i])) for i in sample]
    vectors = index.image_encoder.encode_images(images)
    top_image = index.image_store.search(vectors, k=1, exact=True)
    assert [h[0].id for h in top_image] == sample
    index.close()


def run_kills(tmp_path: Path, kills: int, seed: int, pause: float = 0.6,
              n: int = N) -> list[int]:
    manifest = dataset(tmp_path, n)
    rng = random.Random(seed)
    counts = []
    for attempt in range(kills):
        counts.append(kill_at_random(manifest, tmp_path / "idx", rng, attempt == 0, pause))
        if counts[-1] >= n:
            break
    final = subprocess.run([sys.executable, "-m", "mmedrag", "index", str(manifest), "--index",
                            str(tmp_path / "idx"), "--resume", "--json"], capture_output=True,
                           text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["count"] == n
    check(tmp_path / "idx", manifest)
    return counts


def test_three_kills_then_resume(tmp_path: Path) -> None:
    counts = run_kills(tmp_path, kills=3, seed=1)
    assert counts == sorted(counts) and counts[0] > 0


@pytest.mark.slow
def test_twenty_kills_then_resume(tmp_path: Path) -> None:
    # each run is killed within 0.08 s of its first own commit (64 pairs), so 20 kills fit in
    # 8,000 pairs on a fast idle machine too (0.25 s let an idle CI machine finish in 18)
    counts = run_kills(tmp_path, kills=20, seed=2, pause=0.08, n=8000)
    print(f"committed text rows after each kill -9: {counts}")
    assert len(counts) == 20 and counts[-1] < 8000  # 20 real kills, each mid-ingest
