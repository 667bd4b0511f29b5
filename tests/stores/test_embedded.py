"""Embedded-store specifics: the HNSW graph cache on disk and its crash/deletion handling."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmedrag.records import Record
from mmedrag.stores.embedded import EmbeddedStore

DIM = 16


def _data(n: int, start: int = 0, seed: int = 0) -> tuple[list[Record], np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    records = [Record(id=f"v{start + i}", text=str(start + i), domain="ab"[i % 2])
               for i in range(n)]
    return records, vectors


def _open(path: Path) -> EmbeddedStore:
    return EmbeddedStore(path, dim=DIM, exact_below=100, m=16, ef_construction=80, ef_search=64)


def _recall(store: EmbeddedStore, queries: np.ndarray) -> float:
    approx = store.search(queries, k=10)
    exact = store.search(queries, k=10, exact=True)
    return float(np.mean([len({h.id for h in a} & {h.id for h in e}) / 10
                          for a, e in zip(approx, exact)]))


def test_graph_is_saved_once_built_and_reused_after_reopen(tmp_path: Path) -> None:
    records, vectors = _data(600)
    store = _open(tmp_path / "s")
    store.add(records, vectors)
    store.build_ann()
    meta = json.loads((tmp_path / "s" / "hnsw.json").read_text())
    assert meta["rows"] == 600
    saved = (tmp_path / "s" / "hnsw.faiss").stat().st_mtime_ns
    store.close()
    again = _open(tmp_path / "s")
    assert _recall(again, vectors[:20]) >= 0.9
    again.close()
    assert (tmp_path / "s" / "hnsw.faiss").stat().st_mtime_ns == saved  # not rebuilt or rewritten


def test_graph_newer_than_its_sidecar_is_rebuilt_not_trusted(tmp_path: Path) -> None:
    """A crash between replacing hnsw.faiss and hnsw.json leaves counts that disagree."""
    first, first_vecs = _data(400)
    store = _open(tmp_path / "s")
    store.add(first, first_vecs)
    store.build_ann()
    shutil.copy(tmp_path / "s" / "hnsw.json", tmp_path / "old-sidecar.json")
    more, more_vecs = _data(300, start=400, seed=1)
    store.add(more, more_vecs)
    store.build_ann()
    store.close()
    shutil.copy(tmp_path / "old-sidecar.json", tmp_path / "s" / "hnsw.json")
    again = _open(tmp_path / "s")
    queries = np.concatenate([first_vecs[:10], more_vecs[:10]])
    assert _recall(again, queries) >= 0.9
    assert {h.id for hits in again.search(queries, k=10) for h in hits} <= {
        r.id for r in first + more}
    again.close()
    assert json.loads((tmp_path / "s" / "hnsw.json").read_text())["rows"] == 700


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_graph_file_is_rebuilt(tmp_path: Path, damage: str) -> None:
    records, vectors = _data(500)
    store = _open(tmp_path / "s")
    store.add(records, vectors)
    store.build_ann()
    store.close()
    graph = tmp_path / "s" / "hnsw.faiss"
    data = graph.read_bytes()
    graph.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"not a faiss index")
    again = _open(tmp_path / "s")
    assert _recall(again, vectors[:20]) >= 0.9
    again.close()


def test_deleted_rows_never_come_back_from_the_graph(tmp_path: Path) -> None:
    records, vectors = _data(500)
    store = _open(tmp_path / "s")
    store.add(records, vectors)
    store.build_ann()
    gone = [r.id for r in records[:50]]
    assert store.delete(gone) == 50
    hits = store.search(vectors[:50], k=5)
    assert all(h.id not in gone for row in hits for h in row)
    assert _recall(store, vectors[50:70]) >= 0.9
    store.close()
    again = _open(tmp_path / "s")
    assert all(h.id not in gone for row in again.search(vectors[:50], k=5) for h in row)
    again.close()


def test_meta_fields_never_shadow_record_fields(tmp_path: Path) -> None:
    store = _open(tmp_path / "s")
    records = [Record(id="x", text="t", domain="CT", meta={"domain": "MR", "split": "dev"}),
               Record(id="y", text="u", domain="MR", meta={"split": "train"})]
    store.add(records, np.eye(2, DIM, dtype=np.float32))
    assert store.count({"domain": "CT"}) == 1 and store.count({"domain": "MR"}) == 1
    assert store.count({"split": "dev", "domain": "CT"}) == 1
    hits = store.search(np.eye(1, DIM, dtype=np.float32), k=2, filters={"domain": "MR"})[0]
    assert [h.id for h in hits] == ["y"]
    store.close()


def test_repeated_vectors_are_one_graph_node_and_every_copy_is_found(tmp_path: Path) -> None:
    """Boilerplate passages share one vector: as separate HNSW nodes they trap the search (the
    full MedQuAD lost 6 % recall@10); the graph keeps one node and hits expand to the copies."""
    records, vectors = _data(300)
    vectors[100:280] = vectors[100]  # 180 copies of one passage
    store = _open(tmp_path / "s")
    store.add(records, vectors)
    store.build_ann()
    meta = json.loads((tmp_path / "s" / "hnsw.json").read_text())
    assert (meta["rows"], meta["nodes"]) == (300, 121)
    queries = vectors[np.r_[0:100, 280:300]]
    approx, exact = store.search(queries, k=10), store.search(queries, k=10, exact=True)
    # tie-aware recall@10 (copies of one vector are interchangeable)
    found = [sum(h.score >= e[-1].score - 1e-5 for h in a) / 10
             for a, e in zip(approx, exact, strict=True)]
    assert float(np.mean(found)) >= 0.95
    hits = store.search(vectors[100:101], k=12)[0]
    assert len(hits) == 12 and {h.id for h in hits} <= {f"v{i}" for i in range(100, 280)}
    assert all(h.score == pytest.approx(1.0, abs=1e-5) for h in hits)
    # v100 (the node) is domain "a"; its copies of domain "b" are still found through it
    b_hits = store.search(vectors[100:101], k=5, filters={"domain": "b"})[0]
    assert len(b_hits) == 5 and all(h.record.domain == "b" for h in b_hits)
    assert all(int(h.id[1:]) in range(101, 280) for h in b_hits)
    store.close()
    again = _open(tmp_path / "s")  # maps rebuilt from the saved graph, not the graph itself
    assert [h.id for h in again.search(vectors[100:101], k=12)[0]] == [h.id for h in hits]
    again.delete(["v100"])  # the node's row goes; the copies stay findable
    after = again.search(vectors[100:101], k=3)[0]
    assert len(after) == 3 and "v100" not in {h.id for h in after}
    again.close()


def test_search_after_add_then_delete_with_a_built_graph(tmp_path: Path) -> None:
    """The per-row node map grew with an add; a delete reloads the rows at their true size
    (the map of the dropped graph must not be copied into a smaller array)."""
    records, vectors = _data(300)
    store = _open(tmp_path / "s")
    store.add(records[:200], vectors[:200])
    store.build_ann()  # graph built: the node map has 200 rows
    store.add(records[200:], vectors[200:])  # rows grow by doubling: 400
    assert store.delete(["v0"]) == 1  # reload at 300 rows
    hits = store.search(vectors[1:2], k=3)[0]
    assert hits[0].id == "v1"
    store.close()


def test_meta_keys_with_quotes_or_dots_filter_like_any_other(tmp_path: Path) -> None:
    """Filter columns are read from SQLite by JSON path; a key holding a double quote (which a
    quoted path label cannot hold) or a dot still filters as the reference ``matches`` does."""
    store = _open(tmp_path / "s")
    records = [Record(id="x", text="t", meta={'say "hi"': "yes", "a.b": 1, "flag": True,
                                              "c:\\dir": "x", "tab\tkey": 3}),
               Record(id="y", text="u", meta={'say "hi"': "no", "a.b": 2, "flag": False})]
    store.add(records, np.eye(2, DIM, dtype=np.float32))
    assert store.count({'say "hi"': "yes"}) == 1 and store.count({"c:\\dir": "x"}) == 1
    assert store.count({"tab\tkey": 3}) == 1
    assert store.count({"a.b": [1, 2]}) == 2
    assert store.count({"flag": True}) == 1 and store.count({"flag": False}) == 1
    store.close()


def test_filter_value_none_matches_records_without_the_key(tmp_path: Path) -> None:
    """As before the vector file (and as ``matches``): ``{"split": None}`` keeps the records
    that lack ``split`` (or hold null or a list there) once any record has the key."""
    store = _open(tmp_path / "s")
    records = [Record(id="x", text="t", meta={"split": "dev"}),
               Record(id="y", text="u", meta={}),
               Record(id="z", text="v", meta={"split": None})]
    store.add(records, np.eye(3, DIM, dtype=np.float32))
    assert store.count({"split": None}) == 2
    assert store.count({"split": [None, "dev"]}) == 3
    hits = store.search(np.eye(1, DIM, dtype=np.float32), k=3, filters={"split": None})[0]
    assert sorted(h.id for h in hits) == ["y", "z"]
    store.close()
