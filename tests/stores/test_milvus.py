"""Milvus-specific behaviour: the Lite server's lifetime, expressions, and an Index on Milvus."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from mmedrag.errors import MmedragError, UsageError
from mmedrag.records import Record

pytest.importorskip("milvus_lite")

from mmedrag.stores.milvus import (  # noqa: E402
    MilvusStore,
    collection_name,
    filter_expression,
)


def _lite_port(db_path: Path) -> int | None:
    from milvus_lite.server_manager import server_manager_instance

    entry = server_manager_instance._servers.get(str(db_path.resolve()))  # noqa: SLF001
    return entry[2] if entry else None


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_close_stops_the_lite_server_once_its_last_store_closes(tmp_path: Path) -> None:
    first = MilvusStore(tmp_path / "s", dim=4)
    second = MilvusStore(tmp_path / "s", dim=4)
    port = _lite_port(tmp_path / "s" / "milvus.db")
    assert port is not None and _accepts(port)
    first.close()
    assert _lite_port(tmp_path / "s" / "milvus.db") == port  # still used by `second`
    second.add([Record(id="a", text="x")], np.ones((1, 4), np.float32))
    second.close()
    second.close()  # closing twice is harmless
    assert _lite_port(tmp_path / "s" / "milvus.db") is None
    assert not _accepts(port)


def test_filter_expressions_quote_values_and_reject_bad_fields() -> None:
    assert filter_expression(None) == ""
    assert filter_expression({"domain": 'a"b'}) == 'domain in ["a\\"b"]'
    assert filter_expression({"flag": True, "n": [1, 2.5]}) == (
        '(meta["flag"] == true) and (meta["n"] == 1 or meta["n"] == 2.5)')
    assert filter_expression({"split": []}) is None
    assert filter_expression({"domain": 3}) is None  # domain is a string field
    with pytest.raises(UsageError, match="filter field"):
        filter_expression({'x"] or true or meta["y': "v"})
    with pytest.raises(UsageError, match="filter values"):
        filter_expression({"split": {"nested": 1}})


def test_unreachable_server_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MmedragError, match="cannot connect to Milvus at http://127.0.0.1:1"):
        MilvusStore(tmp_path / "remote", dim=4, uri="http://127.0.0.1:1")


def test_records_too_large_for_milvus_are_input_errors(tmp_path: Path) -> None:
    store = MilvusStore(tmp_path / "s", dim=2)
    try:
        with pytest.raises(MmedragError, match="chunk the text"):
            store.add([Record(id="big", text="x" * 70000)], np.ones((1, 2), np.float32))
        assert store.count() == 0
    finally:
        store.close()


def test_an_index_can_live_in_milvus(tmp_path: Path, sample_dir: Path) -> None:
    from mmedrag.config import Component, IndexConfig
    from mmedrag.index import Index
    from mmedrag.ingest.manifest import read_manifest

    config = IndexConfig(text_encoder=Component(name="hashing"),
                         store=Component(name="milvus", options={"m": 16}))
    index = Index.open(tmp_path / "idx", create=True, config=config)
    records = read_manifest(sample_dir / "pairs.jsonl").records
    assert index.add(records).added == len(records)
    assert (tmp_path / "idx" / "text" / "milvus.db").exists()
    assert (tmp_path / "idx" / "image" / "milvus.db").exists()
    target = index.get([records[5].id])[0]
    assert index.search_text_dense(target.text, k=1)[0].id == target.id
    index.close()
    again = Index.open(tmp_path / "idx")
    assert again.count() == len(records) and again.image_store.count() == len(records)
    domain = records[0].domain
    hits = again.search_text_dense(records[0].text, k=50, filters={"domain": domain})
    assert hits and all(h.record.domain == domain for h in hits)
    assert len(hits) == sum(r.domain == domain for r in records)
    again.close()


def test_server_collections_of_one_index_never_collide(tmp_path: Path) -> None:
    uri = "http://milvus:19530"
    text, image = tmp_path / "idx" / "text", tmp_path / "idx" / "image"
    assert collection_name(text, uri, "med") == "med_text"
    assert collection_name(image, uri, "med") == "med_image"
    derived = collection_name(text, uri, None)
    assert derived.startswith("mmedrag_text_") and derived != collection_name(image, uri, None)
    assert collection_name(text, uri, None) == derived  # remembered in milvus.json
    other = tmp_path / "other" / "text"
    assert collection_name(other, uri, None) != derived  # another index, another collection
    assert collection_name(text, None, None) == "records"  # Lite: one file per store


@pytest.mark.slow
def test_an_index_can_live_on_a_milvus_server(tmp_path: Path, sample_dir: Path,
                                              milvus_server_uri: str) -> None:
    """The same Index on a real Milvus Standalone server: collections per store, reopened by URI
    from index.json, domain filters served by the partition key."""
    from mmedrag.config import Component, IndexConfig
    from mmedrag.index import Index
    from mmedrag.ingest.manifest import read_manifest

    config = IndexConfig(text_encoder=Component(name="hashing"), image_encoder=None,
                         store=Component(name="milvus", options={
                             "uri": milvus_server_uri, "collection": "sample"}))
    index = Index.open(tmp_path / "idx", create=True, config=config)
    records = read_manifest(sample_dir / "pairs.jsonl").records
    assert index.add(records).added == len(records)
    assert index.text_store.collection == "sample_text"
    assert not (tmp_path / "idx" / "text" / "milvus.db").exists()  # no Lite file: the server
    index.close()
    again = Index.open(tmp_path / "idx")
    assert again.meta["store"]["options"]["uri"] == milvus_server_uri
    assert again.count() == len(records)
    target = records[7]
    assert again.search_text_dense(target.text, k=1)[0].id == target.id
    domain = records[0].domain
    hits = again.search_text_dense(records[0].text, k=50, filters={"domain": domain})
    assert len(hits) == sum(r.domain == domain for r in records)
    assert all(h.record.domain == domain for h in hits)
    again.close()
