"""One contract suite for every Store backend: the embedded store, Milvus Lite, and a real Milvus
server (Standalone, started by ``conftest.milvus_server_uri``; slow, skipped without the
``milvus`` package)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmedrag.errors import IndexMismatchError, MmedragError
from mmedrag.records import Record
from mmedrag.stores.protocol import Store, matches

DIM = 8


def _open_embedded(path: Path, dim: int, **options: Any) -> Any:
    from mmedrag.stores.embedded import EmbeddedStore

    return EmbeddedStore(path, dim=dim, **options)


def _embedded_kind(large: dict[str, Any] | None = None, **fixed: Any) -> Callable[..., Any]:
    """The embedded store with one ANN kind forced (exact_below 0: the ANN answers even at
    contract-suite sizes). ``large`` replaces ``fixed`` for the one test that builds a larger
    collection (it passes its own exact_below), where IVF-PQ is trained as it would be."""

    def open_store(path: Path, dim: int, **options: Any) -> Any:
        chosen = large if large is not None and "exact_below" in options else fixed
        return _open_embedded(path, dim, **{**options, **chosen})

    return open_store


def _open_milvus(path: Path, dim: int, **options: Any) -> Any:
    if "uri" not in options:
        pytest.importorskip("milvus_lite")
    from mmedrag.stores.milvus import MilvusStore

    options.pop("exact_below", None)
    return MilvusStore(path, dim=dim, **options)


BACKENDS = {"embedded": _open_embedded, "milvus": _open_milvus, "milvus-server": _open_milvus,
            "embedded-hnsw": _embedded_kind(kind="hnsw", exact_below=0),
            "embedded-flat": _embedded_kind(kind="flat"),
            # IVF-PQ at contract sizes: one list, 1-bit codes (trainable on 8 rows); the
            # re-ranking from the vector file makes its answers exact
            "embedded-ivfpq": _embedded_kind(kind="ivfpq", lists=1, pq_bits=1, exact_below=0,
                                             large={"kind": "ivfpq", "lists": 16,
                                                    "exact_below": 500}),
            "embedded-float16": _embedded_kind(vector_dtype="float16", exact_below=0)}


@pytest.fixture(params=[*sorted(set(BACKENDS) - {"milvus-server"}),
                        pytest.param("milvus-server", marks=pytest.mark.slow)])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Opens stores of one backend; every store it opened is closed after the test."""
    opened: list[Any] = []
    server: dict[str, Any] = {}
    if request.param == "milvus-server":
        server["uri"] = request.getfixturevalue("milvus_server_uri")

    def open_store(dim: int = DIM, path: Path | None = None, **options: Any) -> Any:
        store = BACKENDS[request.param](path or tmp_path / "store", dim, **server, **options)
        opened.append(store)
        return store

    open_store.backend = request.param  # type: ignore[attr-defined]
    yield open_store
    for store in opened:
        store.close()


def _tolerance(opener: Any, exact: float) -> float:
    """float16 storage keeps scores and vectors within ~1e-3 (half an ulp per coordinate)."""
    return 2e-3 if opener.backend == "embedded-float16" else exact


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _corpus(n: int = 12, seed: int = 0) -> tuple[list[Record], np.ndarray]:
    rng = np.random.default_rng(seed)
    records = [Record(id=f"r{i:02d}", text=f"record {i} — naïve café",
                      domain="CT" if i % 2 else "MR",
                      title=f"t{i}", image=f"images/r{i:02d}.png" if i % 3 == 0 else "",
                      meta={"split": "train" if i % 3 else "dev", "case": i, "tags": ["x"]})
               for i in range(n)]
    return records, _unit(rng.normal(size=(n, DIM)))


def _brute(vectors: np.ndarray, query: np.ndarray, records: list[Record], k: int,
           filters: dict[str, Any] | None = None) -> list[str]:
    scores = vectors @ query
    order = [i for i in np.argsort(-scores, kind="stable") if matches(records[i], filters)]
    return [records[i].id for i in order[:k]]


def test_satisfies_protocol_and_adds_each_id_once(opener: Callable[..., Any]) -> None:
    store = opener()
    records, vectors = _corpus()
    assert isinstance(store, Store)
    assert store.add(records[:8], vectors[:8]) == 8
    assert store.add(records, vectors) == 4  # the first 8 are skipped
    twice = [Record(id="dup", text="a"), Record(id="dup", text="b")]
    assert store.add(twice, vectors[:2]) == 1
    assert store.count() == 13
    assert store.get(["dup"])[0].text == "a"
    assert store.add([], np.zeros((0, DIM), np.float32)) == 0


def test_search_returns_best_first_with_inner_product_scores(opener: Callable[..., Any]) -> None:
    store = opener()
    records, vectors = _corpus()
    store.add(records, vectors)
    queries = _unit(np.random.default_rng(1).normal(size=(3, DIM)))
    for exact in (False, True):
        results = store.search(queries, k=5, exact=exact)
        assert len(results) == 3
        for query, hits in zip(queries, results):
            assert [h.id for h in hits] == _brute(vectors, query, records, 5)
            assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
            expected = {r.id: float(v @ query) for r, v in zip(records, vectors)}
            assert all(abs(h.score - expected[h.id]) < _tolerance(opener, 1e-4) for h in hits)
            assert all(h.retriever for h in hits)
    assert len(store.search(queries[0], k=50)[0]) == len(records)
    assert store.search(queries, k=0) == [[], [], []]


def test_records_round_trip_with_every_field(opener: Callable[..., Any]) -> None:
    store = opener()
    records, vectors = _corpus()
    store.add(records, vectors)
    wanted = ["r05", "missing", "r00", "r03"]
    got = store.get(wanted)
    assert [r.id for r in got] == ["r05", "r00", "r03"]
    assert got[1] == records[0]
    assert store.has(wanted) == {"r05", "r00", "r03"}
    assert sorted(r.id for r in store.iter_records(batch=5)) == [r.id for r in records]
    np.testing.assert_allclose(store.vectors(["r07", "r01"]), vectors[[7, 1]], atol=_tolerance(opener, 1e-6))
    with pytest.raises(MmedragError):
        store.vectors(["missing"])


@pytest.mark.parametrize("filters", [
    {"domain": "CT"}, {"domain": ["CT", "MR"]}, {"split": "dev"},
    {"domain": "MR", "split": "train"},
    {"case": 4}, {"case": [1, 2, 3]}, {"domain": []}, {"unknown": "x"}, {"split": 'de"v'},
])
def test_filters_match_the_reference_semantics(opener: Callable[..., Any],
                                               filters: dict[str, Any]) -> None:
    store = opener()
    records, vectors = _corpus()
    store.add(records, vectors)
    query = _unit(np.ones((1, DIM)))[0]
    expected = _brute(vectors, query, records, 4, filters)
    assert store.count(filters) == sum(matches(r, filters) for r in records)
    for exact in (False, True):
        hits = store.search(query, k=4, filters=filters, exact=exact)[0]
        assert [h.id for h in hits] == expected
        assert all(matches(h.record, filters) for h in hits)


def test_delete_removes_from_every_read(opener: Callable[..., Any]) -> None:
    store = opener()
    records, vectors = _corpus()
    store.add(records, vectors)
    assert store.delete(["r01", "r02", "missing"]) == 2
    assert store.delete([]) == 0
    assert store.count() == len(records) - 2
    assert store.has(["r01", "r02", "r03"]) == {"r03"}
    hits = store.search(vectors[1], k=len(records))[0]
    assert {"r01", "r02"}.isdisjoint(h.id for h in hits)
    assert hits[0].id != "r01"
    assert store.add(records[1:2], vectors[1:2]) == 1  # a deleted id can be added again
    assert store.search(vectors[1], k=1)[0][0].id == "r01"


def test_contents_survive_close_and_reopen(opener: Callable[..., Any], tmp_path: Path) -> None:
    records, vectors = _corpus()
    store = opener(path=tmp_path / "persist")
    store.add(records, vectors)
    before = [h.id for h in store.search(vectors[4], k=5)[0]]
    store.close()
    again = opener(path=tmp_path / "persist")
    assert again.count() == len(records)
    assert [h.id for h in again.search(vectors[4], k=5)[0]] == before
    assert again.get(["r04"])[0] == records[4]
    assert again.add(records, vectors) == 0


def test_dimension_mismatches_are_clear_errors(opener: Callable[..., Any], tmp_path: Path) -> None:
    records, vectors = _corpus()
    store = opener(path=tmp_path / "dims")
    store.add(records, vectors)
    with pytest.raises(MmedragError, match="-d"):
        store.add(records[:1], np.ones((1, DIM + 1), np.float32))
    with pytest.raises(MmedragError, match="-d"):
        store.search(np.ones((1, DIM + 1), np.float32), k=1)
    with pytest.raises(MmedragError, match="2 vectors"):
        store.add(records[:1], vectors[:2])
    store.close()
    with pytest.raises(IndexMismatchError, match=f"{DIM}-d"):
        opener(dim=DIM + 4, path=tmp_path / "dims")


def test_approximate_search_keeps_recall_on_a_larger_collection(
        opener: Callable[..., Any]) -> None:
    """Above the exact-search threshold the ANN path is used; it must stay near exact."""
    rng = np.random.default_rng(3)
    n, dim = 3000, 32
    centres = _unit(rng.normal(size=(30, dim)))
    vectors = _unit(centres[rng.integers(0, 30, n)] + 0.35 * rng.normal(size=(n, dim)))
    records = [Record(id=f"v{i}", text=str(i), domain=("a", "b", "c")[i % 3]) for i in range(n)]
    store = opener(dim=dim, exact_below=500)
    for start in range(0, n, 1000):
        store.add(records[start:start + 1000], vectors[start:start + 1000])
    if hasattr(store, "build_ann"):
        store.build_ann()
    queries = _unit(vectors[rng.choice(n, 20, replace=False)] + 0.2 * rng.normal(size=(20, dim)))
    for filters in (None, {"domain": ["a", "b"]}):
        approx = store.search(queries, k=10, filters=filters)
        exact = store.search(queries, k=10, filters=filters, exact=True)
        recall = np.mean([len({h.id for h in a} & {h.id for h in e}) / 10
                          for a, e in zip(approx, exact)])
        assert recall >= 0.9, (filters, recall)
        assert all(matches(h.record, filters) for hits in approx for h in hits)
