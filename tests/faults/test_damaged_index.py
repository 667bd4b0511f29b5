"""Damaged stores and caches: a one-line error naming the file and the repair, never an empty
success; a flipped bit in the graph cache is caught by its digest; repair + --resume restores
every record."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmedrag.records import Record
from mmedrag.stores.embedded import EmbeddedStore

CONFIG = "index:\n  text_encoder: {name: hashing}\n  image_encoder: {name: thumbnail}\n"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmedrag", *args], capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("damage")
    (root / "c.yaml").write_text(CONFIG)
    out = run("index", str(sample_dir / "pairs.jsonl"), "--index", str(root / "idx"),
              "--config", str(root / "c.yaml"))
    assert out.returncode == 0, out.stderr
    return root / "idx"


@pytest.fixture()
def damaged(built: Path, tmp_path: Path) -> Path:
    shutil.copytree(built, tmp_path / "idx")
    return tmp_path / "idx"


@pytest.mark.parametrize("damage", ["truncate0", "truncate100k", "delete", "garbage"])
def test_damaged_store_is_a_one_line_error_then_repaired(damaged: Path, damage: str,
                                                         sample_dir: Path) -> None:
    db = damaged / "text" / "store.sqlite"
    for extra in ("store.sqlite-wal", "store.sqlite-shm"):
        (damaged / "text" / extra).unlink(missing_ok=True)
    if damage == "truncate0":
        os.truncate(db, 0)
    elif damage == "truncate100k":
        os.truncate(db, min(100_000, db.stat().st_size // 2))
    elif damage == "delete":
        db.unlink()
    else:
        db.write_bytes(b"\x00garbage" * 4000)
    for command in (["info", "--index", str(damaged), "--json"],
                    ["search", "--index", str(damaged), "--text", "liver"]):
        out = run(*command)
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        [line] = out.stderr.splitlines()
        assert "store.sqlite" in line and "mmedrag repair --index" in line, line
    fixed = run("repair", "--index", str(damaged), "--json")
    assert fixed.returncode == 0, fixed.stderr
    resumed = run("index", str(sample_dir / "pairs.jsonl"), "--index", str(damaged),
                  "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["count"] == 36
    info = json.loads(run("info", "--index", str(damaged), "--json").stdout)
    assert info["count"] == 36 and info["images"] == 36


def test_graph_cache_bit_flip_is_detected_and_rebuilt(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(600, 16)).astype("float32")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = EmbeddedStore(tmp_path / "s", dim=16, exact_below=100)
    store.add([Record(id=f"r{i}", text="t") for i in range(600)], vectors)
    store.build_ann()
    store.close()
    graph = tmp_path / "s" / "hnsw.faiss"
    data = bytearray(graph.read_bytes())
    start = bytes(data).find(vectors.tobytes()[:64])  # the graph's copy of the vectors
    for offset in range(start + 3, start + vectors.nbytes, 256):
        data[offset] ^= 0x40  # an exponent bit: a trusted cache scored these up to 1.6e38
    graph.write_bytes(bytes(data))
    reopened = EmbeddedStore(tmp_path / "s", dim=16, exact_below=100)
    hits = reopened.search(vectors, k=1)
    assert [h[0].id for h in hits] == [f"r{i}" for i in range(600)]
    assert all(abs(h[0].score - 1.0) < 1e-4 for h in hits)
    reopened.close()
    saved = json.loads((tmp_path / "s" / "hnsw.json").read_text())
    assert saved["rows"] == 600 and saved["dim"] == 16 and len(saved["digest"]) == 32


def test_fewer_records_than_index_json_says_is_damage(damaged: Path) -> None:
    meta = json.loads((damaged / "index.json").read_text())
    meta["counts"]["records"] = 665
    (damaged / "index.json").write_text(json.dumps(meta))
    out = run("info", "--index", str(damaged), "--json")
    assert out.returncode == 1 and "holds 36 records but index.json says 665" in out.stderr


def test_repair_salvages_a_vector_file_cut_mid_row(tmp_path: Path) -> None:
    """A vector file cut at any byte (not a multiple of the dtype's size) is damage repair
    salvages: the whole rows are kept, the cut record is left for --resume."""
    from mmedrag.index_repair import _rebuild_store

    folder, dim = tmp_path / "text", 8
    store = EmbeddedStore(folder, dim=dim)
    vectors = np.eye(10, dim, dtype=np.float32) + 0.1
    store.add([Record(id=f"r{i}", text="t") for i in range(10)], vectors)
    store.close()
    os.truncate(folder / "vectors.f32", 9 * dim * 4 + 3)
    report = _rebuild_store(folder, dim, {})
    assert report == {"salvaged": 9, "without_vector": 1}
    again = EmbeddedStore(folder, dim=dim)
    np.testing.assert_allclose(again.vectors([f"r{i}" for i in range(9)]), vectors[:9])
    again.close()
