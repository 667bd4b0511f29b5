"""BM25Index (bm25s): ranking, persistence, and agreement with rank_bm25's Okapi BM25."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from mmedrag.errors import UsageError
from mmedrag.stores.bm25 import BM25Index

DOCS = {
    "effusion": "Large left pleural effusion with compressive atelectasis of the lower lobe.",
    "pneumo": "Right apical pneumothorax; no mediastinal shift. Chest tube advised.",
    "brain": "Normal MRI of the brain. No mass, haemorrhage or infarct.",
    "fracture": "Displaced fracture of the distal radius with dorsal angulation.",
    "mixed": "Small pleural effusion and a tiny pneumothorax after the procedure.",
}


def _sample_texts(sample_dir: Path) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in (sample_dir / "pairs.jsonl").read_text().splitlines()]
    return [r["id"] for r in rows], [r["text"] for r in rows]


@pytest.fixture()
def small(tmp_path: Path) -> BM25Index:
    index = BM25Index(tmp_path / "bm25")
    index.build(list(DOCS), list(DOCS.values()))
    return index


def test_ranks_matching_documents_first_and_drops_non_matches(small: BM25Index) -> None:
    hits = small.search("pleural effusion", k=5)
    # the shorter document wins on equal term counts (length normalisation); others score 0
    assert [rid for rid, _ in hits] == ["mixed", "effusion"]
    assert hits[0][1] > hits[1][1] > 0
    assert [rid for rid, _ in small.search("pleural effusion atelectasis", k=5)] == [
        "effusion", "mixed"]
    assert [rid for rid, _ in small.search("fractured", k=1)] == ["fracture"]  # stemmed
    assert small.search("the of and", k=3) == []  # stop words only
    assert small.search("", k=3) == [] and small.search("xylophone", k=3) == []
    assert small.search("effusion", k=0) == []
    many = small.search_many(["fracture radius", "brain infarct", "nothing"], k=2)
    assert [[rid for rid, _ in row] for row in many] == [["fracture"], ["brain"], []]


def test_saved_index_reopens_with_the_same_scores_and_method(tmp_path: Path) -> None:
    built = BM25Index(tmp_path / "bm25", method="robertson", k1=1.2, b=0.5)
    built.build(list(DOCS), list(DOCS.values()))
    before = built.search_many(["pleural effusion", "pneumothorax"], k=3)
    reopened = BM25Index(tmp_path / "bm25")  # defaults differ: the saved ones must win
    assert (reopened.method, reopened.k1, reopened.b) == ("robertson", 1.2, 0.5)
    assert len(reopened) == len(DOCS) and reopened.built_for == len(DOCS)
    assert reopened.search_many(["pleural effusion", "pneumothorax"], k=3) == before


def test_rebuild_replaces_contents_even_after_an_interrupted_save(tmp_path: Path) -> None:
    index = BM25Index(tmp_path / "bm25")
    index.build(list(DOCS), list(DOCS.values()))
    (tmp_path / "bm25.old").mkdir()  # what a crash between the two renames leaves behind
    (tmp_path / "bm25.old" / "junk").write_text("x")
    index.build(["only"], ["pulmonary embolism"])
    assert BM25Index(tmp_path / "bm25").search("embolism", k=3) == [("only", pytest.approx(
        index.search("embolism", k=1)[0][1]))]
    assert BM25Index(tmp_path / "bm25").search("effusion", k=3) == []
    assert not (tmp_path / "bm25.old").exists()
    empty = BM25Index(tmp_path / "empty")
    empty.build([], [])
    assert len(empty) == 0 and empty.search("effusion", k=3) == []


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="method"):
        BM25Index(tmp_path / "x", method="okapi-ish")
    with pytest.raises(UsageError, match="2 ids but 1 texts"):
        BM25Index(tmp_path / "y").build(["a", "b"], ["only one"])


def test_robertson_scores_equal_rank_bm25_okapi_up_to_its_constant(
        tmp_path: Path, sample_dir: Path) -> None:
    """On identical tokens, bm25s' robertson variant is Okapi BM25 divided by (k1 + 1)."""
    rank_bm25 = pytest.importorskip("rank_bm25")
    ids, texts = _sample_texts(sample_dir)
    index = BM25Index(tmp_path / "bm25", method="robertson")
    index.build(ids, texts)
    tokens = _tokens(index, texts)
    okapi = rank_bm25.BM25Okapi(tokens, k1=1.5, b=0.75)
    df = Counter(t for doc in tokens for t in set(doc))
    checked = 0
    for doc in tokens:
        # terms in under half the documents: rank_bm25 floors negative idf differently
        query_terms = [t for t in dict.fromkeys(doc) if df[t] < len(tokens) / 2][:4]
        if not query_terms:
            continue
        expected = okapi.get_scores(query_terms) / 2.5
        hits = index._model.retrieve([query_terms], k=5, show_progress=False)  # noqa: SLF001
        for d, score in zip(hits[0][0], hits[1][0]):
            if score > 0:
                assert math.isclose(float(score), expected[int(d)], rel_tol=1e-4)
                checked += 1
        top = sorted(range(len(ids)), key=lambda i: -expected[i])[:1]
        assert expected[int(hits[0][0][0])] == pytest.approx(expected[top[0]], rel=1e-5)
    assert checked > 50


def _tokens(index: BM25Index, texts: list[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", stemmer=index._stemmer,  # noqa: SLF001
                          return_ids=False, show_progress=False)


def test_reopened_index_is_memory_mapped_and_reads_old_json_ids(tmp_path: Path) -> None:
    import numpy as np

    bm = BM25Index(tmp_path / "bm")
    bm.build(list(DOCS), list(DOCS.values()))
    again = BM25Index(tmp_path / "bm")
    assert isinstance(again._ids, np.memmap)  # ids are mapped, not loaded into a list
    assert again._model is not None and isinstance(again._model.scores["data"], np.memmap)
    assert {i for i, _ in again.search("pleural effusion", k=2)} == {"effusion", "mixed"}
    # an index saved before ids.npy kept its ids inside bm25.json: still readable
    meta = json.loads((tmp_path / "bm" / "bm25.json").read_text())
    meta["ids"] = list(DOCS)
    (tmp_path / "bm" / "bm25.json").write_text(json.dumps(meta))
    assert BM25Index(tmp_path / "bm").search("fracture", k=1)[0][0] == "fracture"


def test_readers_never_rebuild_bm25_the_writer_does_at_finalize(tmp_path: Path) -> None:
    import numpy as np

    from mmedrag.config import Component, IndexConfig
    from mmedrag.index import Index
    from mmedrag.records import Document

    config = IndexConfig(text_encoder=Component(name="hashing"), image_encoder=None)
    index = Index.open(tmp_path / "idx", create=True, config=config)
    index.add([Document.create(text, title=key) for key, text in DOCS.items()])
    stamp = BM25Index.stamp_of(tmp_path / "idx" / "bm25")
    # rows committed without the end-of-ingest step (as a killed writer leaves them)
    late = [Document.create("Acute appendicitis with periappendiceal fat stranding.")]
    index.text_store.add(late, index.text_encoder.encode_texts([late[0].text]))
    index.close()
    reader = Index.open(tmp_path / "idx", read_only=True)
    assert reader.bm25_status() == {"built_for": 5, "records": 6, "stale": True}
    assert reader.bm25.search("appendicitis", k=1) == []
    assert BM25Index.stamp_of(tmp_path / "idx" / "bm25") == stamp  # nothing rebuilt
    assert reader.info()["bm25"]["stale"]
    writer = Index.open(tmp_path / "idx")
    writer.finalize()
    assert writer.bm25_status()["stale"] is False
    assert writer.bm25.search("appendicitis", k=1)[0][0] == late[0].id
    assert isinstance(np.asarray(writer.bm25._ids), np.ndarray)
    writer.close()
