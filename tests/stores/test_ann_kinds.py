"""The embedded store's ANN kinds at sizes where they answer: IVF-PQ with exact re-ranking from
the vector file, the automatic switch by size, the memory model, and the on-disk vector file
(legacy migration, truncation)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from mmedrag.errors import StoreDamaged
from mmedrag.records import Record
from mmedrag.stores.ann import AnnParams, memory_estimate, resolve_kind
from mmedrag.stores.embedded import EmbeddedStore

DIM = 32


def _clustered(n: int, seed: int = 0, start: int = 0) -> tuple[list[Record], np.ndarray]:
    """Vectors around 40 centres (like topics in a corpus), L2-normalised."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(40, DIM))
    vectors = centres[rng.integers(0, 40, n)] + 0.35 * rng.normal(size=(n, DIM))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    records = [Record(id=f"v{start + i}", text=str(start + i), domain="ab"[i % 2],
                      meta={"split": "train" if i % 3 else "test"}) for i in range(n)]
    return records, vectors


def _ivf(path: Path, **options: object) -> EmbeddedStore:
    return EmbeddedStore(path, dim=DIM, kind="ivfpq", exact_below=100, lists=64, nprobe=16,
                         rerank=100, **options)  # type: ignore[arg-type]


def _recall(store: EmbeddedStore, queries: np.ndarray, **filters: str) -> float:
    approx = store.search(queries, k=10, filters=filters or None)
    exact = store.search(queries, k=10, filters=filters or None, exact=True)
    return float(np.mean([len({h.id for h in a} & {h.id for h in e}) / 10
                          for a, e in zip(approx, exact)]))


def test_ivfpq_recall_and_exact_rescoring(tmp_path: Path) -> None:
    records, vectors = _clustered(4000)
    store = _ivf(tmp_path / "s")
    store.add(records, vectors)
    store.build_ann()
    assert store.active_kind() == "ivfpq"
    assert (tmp_path / "s" / "ivfpq.faiss").exists() and not (tmp_path / "s" / "hnsw.faiss").exists()
    queries = vectors[:50] + 0.05
    assert _recall(store, queries) >= 0.9
    hits = store.search(queries[:5], k=10)
    for query, row in zip(queries[:5], hits):
        expected = {r.id: float(v @ query) for r, v in zip(records, vectors)}
        # candidates are re-scored from the vector file: exact inner products, best first
        assert all(abs(h.score - expected[h.id]) < 1e-5 for h in row)
        assert [h.score for h in row] == sorted((h.score for h in row), reverse=True)
    store.close()


def test_ivfpq_filters_inside_the_search(tmp_path: Path) -> None:
    records, vectors = _clustered(4000)
    store = _ivf(tmp_path / "s")
    store.add(records, vectors)
    queries = vectors[100:130]
    for hits in store.search(queries, k=10, filters={"domain": "b"}):
        assert len(hits) == 10 and {h.record.domain for h in hits} == {"b"}
    assert _recall(store, queries, domain="b") >= 0.9
    for hits in store.search(queries, k=10, filters={"split": "test"}):
        assert len(hits) == 10 and {h.record.meta["split"] for h in hits} == {"test"}
    assert store.count({"split": "test"}) == sum(1 for i in range(4000) if i % 3 == 0)
    store.close()


def test_ivfpq_deletes_in_place_and_the_saved_index_agrees(tmp_path: Path) -> None:
    records, vectors = _clustered(3000)
    store = _ivf(tmp_path / "s")
    store.add(records, vectors)
    store.build_ann()
    gone = [r.id for r in records[:300]]
    assert store.delete(gone) == 300
    found = {h.id for hits in store.search(vectors[:300], k=10) for h in hits}
    assert not found & set(gone)
    store.build_ann()  # saves the index without the deleted rows
    meta = json.loads((tmp_path / "s" / "ivfpq.json").read_text())
    assert meta["epoch"] == "1" and meta["nodes"] == 2700
    store.close()
    again = _ivf(tmp_path / "s")
    saved = (tmp_path / "s" / "ivfpq.faiss").stat().st_mtime_ns
    found = {h.id for hits in again.search(vectors[:300], k=10) for h in hits}
    assert not found & set(gone) and len(found) > 100
    again.close()
    assert (tmp_path / "s" / "ivfpq.faiss").stat().st_mtime_ns == saved  # reused, not rebuilt


def test_ivfpq_finds_every_copy_of_a_repeated_vector(tmp_path: Path) -> None:
    records, vectors = _clustered(3000)
    vectors[1000:1040] = vectors[7]  # a boilerplate passage repeated 40 times, plus the original
    store = _ivf(tmp_path / "s")
    store.add(records, vectors)
    hits = store.search(vectors[7:8], k=45)[0]
    copies = {f"v{i}" for i in range(1000, 1040)} | {"v7"}
    assert copies <= {h.id for h in hits[:41]}
    store.close()


def test_reopened_store_catches_up_rows_added_after_the_saved_index(tmp_path: Path) -> None:
    records, vectors = _clustered(3000)
    store = _ivf(tmp_path / "s")
    store.add(records[:2000], vectors[:2000])
    store.build_ann()
    store.close()
    again = _ivf(tmp_path / "s")
    again.add(records[2000:], vectors[2000:])
    assert _recall(again, vectors[2000:2030]) >= 0.9
    assert again.search(vectors[2500:2501], k=1)[0][0].id == "v2500"
    again.build_ann()
    assert json.loads((tmp_path / "s" / "ivfpq.json").read_text())["rows"] == 3000
    again.close()


def test_auto_kind_switches_from_hnsw_to_ivfpq_at_the_threshold(tmp_path: Path) -> None:
    records, vectors = _clustered(3000)
    store = EmbeddedStore(tmp_path / "s", dim=DIM, exact_below=100, ivf_above=2500, lists=64)
    store.add(records[:2000], vectors[:2000])
    store.build_ann()
    assert store.describe()["kind"] == "hnsw" and (tmp_path / "s" / "hnsw.faiss").exists()
    store.add(records[2000:], vectors[2000:])
    store.build_ann()
    info = store.describe()
    assert info["kind"] == "ivfpq" and info["configured_kind"] == "auto"
    assert json.loads((tmp_path / "s" / "ivfpq.json").read_text())["lists"] == 64
    assert info["params"]["lists"] == 64 and info["params"]["pq_m"] == DIM // 8
    assert info["vector_file_bytes"] == 3000 * DIM * 4 and info["ann_file_bytes"] > 0
    assert not (tmp_path / "s" / "hnsw.faiss").exists()  # the old kind's cache is dropped
    assert _recall(store, vectors[:30]) >= 0.9
    store.close()


def test_memory_model_orders_the_kinds() -> None:
    params = AnnParams()
    hnsw = memory_estimate("hnsw", 10_000_000, 384, params)["ram_bytes"]
    ivf = memory_estimate("ivfpq", 10_000_000, 384, params)["ram_bytes"]
    assert ivf < 1 << 30 < 10 * (1 << 30) < hnsw  # PQ codes: ~56 B/vector; HNSW: > 1.7 kB
    assert resolve_kind("auto", 999_999, params) == "hnsw"
    assert resolve_kind("auto", 1_000_000, params) == "ivfpq"
    assert resolve_kind("ivfpq", 500, params) == "flat"  # too few rows to train


def test_float16_vector_file_halves_the_bytes(tmp_path: Path) -> None:
    records, vectors = _clustered(1500)
    store = EmbeddedStore(tmp_path / "s", dim=DIM, vector_dtype="float16", exact_below=100)
    store.add(records, vectors)
    assert (tmp_path / "s" / "vectors.f16").stat().st_size == 1500 * DIM * 2
    assert _recall(store, vectors[:20]) >= 0.9
    store.close()
    with pytest.raises(Exception, match="float16"):
        EmbeddedStore(tmp_path / "s", dim=DIM, vector_dtype="float32")


def test_truncated_vector_file_is_damage_not_garbage(tmp_path: Path) -> None:
    records, vectors = _clustered(200)
    store = EmbeddedStore(tmp_path / "s", dim=DIM)
    store.add(records, vectors)
    store.close()
    path = tmp_path / "s" / "vectors.f32"
    with open(path, "r+b") as handle:
        handle.truncate(150 * DIM * 4 + 10)
    with pytest.raises(StoreDamaged, match="vectors.f32: holds 150 vectors"):
        EmbeddedStore(tmp_path / "s", dim=DIM)


def _legacy_store(folder: Path, records: list[Record], vectors: np.ndarray, deleted: list[str],
                  with_dim: bool = True) -> Path:
    """A store as mmedrag wrote it before the vector file: every vector a BLOB in SQLite."""
    folder.mkdir()
    db = sqlite3.connect(folder / "store.sqlite")
    db.executescript("CREATE TABLE records (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT "
                     "UNIQUE NOT NULL, domain TEXT NOT NULL DEFAULT '', data TEXT NOT NULL, "
                     "vec BLOB NOT NULL); CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT);")
    if with_dim:
        db.execute("INSERT INTO state VALUES ('dim', ?)", (str(DIM),))
    db.executemany("INSERT INTO records (id, domain, data, vec) VALUES (?, ?, ?, ?)",
                   [(r.id, r.domain, json.dumps(r.to_dict()), v.tobytes())
                    for r, v in zip(records, vectors, strict=True)])
    db.execute(f"DELETE FROM records WHERE id IN ({','.join('?' * len(deleted))})", deleted)
    db.commit()
    db.close()
    return folder


def test_store_with_vectors_inside_sqlite_is_migrated_once(tmp_path: Path) -> None:
    """Stores written before the vector file kept each vector as a BLOB in SQLite."""
    records, vectors = _clustered(300)
    folder = _legacy_store(tmp_path / "s", records, vectors, ["v5"])  # a gap in seq
    with pytest.raises(StoreDamaged, match="older mmedrag"):
        EmbeddedStore(folder, dim=DIM, read_only=True)
    store = EmbeddedStore(folder, dim=DIM)
    assert store.count() == 299
    np.testing.assert_array_equal(store.vectors(["v0", "v299"]), vectors[[0, 299]])
    assert store.search(vectors[42:43], k=1)[0][0].id == "v42"
    store.close()
    with sqlite3.connect(folder / "store.sqlite") as check:
        assert check.execute("SELECT MAX(LENGTH(vec)) FROM records").fetchone()[0] == 0
    assert EmbeddedStore(folder, dim=DIM, read_only=True).count() == 299


def test_ivfpq_delete_in_a_fresh_process_removes_in_place_not_retrains(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``mmedrag delete`` opens the store cold: the saved IVF-PQ index (older than the delete)
    drops the deleted rows in place instead of being trained and filled again."""
    records, vectors = _clustered(3000)
    store = _ivf(tmp_path / "s")
    store.add(records, vectors)
    store.build_ann()
    store.close()
    again = _ivf(tmp_path / "s")
    gone = [r.id for r in records[:300]]
    assert again.delete(gone) == 300  # nothing loaded yet, as in a fresh CLI process

    def no_training(self: EmbeddedStore) -> None:
        raise AssertionError("IVF-PQ retrained after a delete")

    monkeypatch.setattr(EmbeddedStore, "_train_ivf", no_training)
    again.build_ann()
    meta = json.loads((tmp_path / "s" / "ivfpq.json").read_text())
    assert meta["epoch"] == "1" and meta["nodes"] == 2700
    found = {h.id for hits in again.search(vectors[:300], k=10) for h in hits}
    assert not found & set(gone) and len(found) > 100
    again.close()
    reader = _ivf(tmp_path / "s", read_only=True)  # the saved copy agrees: used as it is
    assert reader.search(vectors[400:401], k=1)[0][0].id == "v400"
    reader.close()


def test_legacy_migration_writes_runs_of_rows_not_one_fsync_per_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each vector-file write is fsynced: a migration writing row by row takes one fsync per
    record (hours for a million-row store); contiguous rows go in one write."""
    from mmedrag.stores.vector_file import VectorFile

    records, vectors = _clustered(300)
    folder = _legacy_store(tmp_path / "s", records, vectors, ["v5", "v6"],  # one gap: two runs
                           with_dim=False)
    writes = []
    original = VectorFile.write
    monkeypatch.setattr(VectorFile, "write",
                        lambda self, start, rows: writes.append(len(rows)) or original(
                            self, start, rows))
    store = EmbeddedStore(folder, dim=DIM)
    assert writes == [5, 293]
    np.testing.assert_array_equal(store.vectors(["v4", "v7", "v299"]), vectors[[4, 7, 299]])
    store.close()


def test_add_never_overwrites_committed_vectors_when_sqlite_sequence_lags(
        tmp_path: Path) -> None:
    """Rows are placed at ``sqlite_sequence`` + 1; a database whose sequence row was lost or
    lags (a dump/recover, a hand edit) must not put a new batch over committed vectors."""
    records, vectors = _clustered(20)
    store = EmbeddedStore(tmp_path / "s", dim=DIM)
    store.add(records[:10], vectors[:10])
    store.close()
    with sqlite3.connect(tmp_path / "s" / "store.sqlite") as db:
        db.execute("DELETE FROM sqlite_sequence")
    again = EmbeddedStore(tmp_path / "s", dim=DIM)
    assert again.add(records[10:], vectors[10:]) == 10
    np.testing.assert_array_equal(again.vectors([r.id for r in records]), vectors)
    again.close()


def test_describe_reports_the_lists_the_index_was_trained_with(tmp_path: Path) -> None:
    """The list count is fixed at training: a store that grew reports what it searches with."""
    records, vectors = _clustered(20_000)
    store = EmbeddedStore(tmp_path / "s", dim=DIM, kind="ivfpq", exact_below=100)
    store.add(records[:3000], vectors[:3000])
    store.build_ann()
    assert store.describe()["params"]["lists"] == 64  # sqrt(3,000) -> 64
    store.add(records[3000:], vectors[3000:])
    store.build_ann()
    assert store.describe()["params"]["lists"] == 64  # not sqrt(20,000) -> 128
    store.close()
