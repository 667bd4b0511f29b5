"""Manifests, folders and corpora: good input loads, bad input is reported with file and line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mmedrag.config import Component, IndexConfig
from mmedrag.errors import InputError
from mmedrag.index import Index
from mmedrag.ingest.corpus import read_corpus
from mmedrag.ingest.folder import read_folder
from mmedrag.ingest.manifest import read_manifest


def test_sample_manifest_loads_with_resolved_images(sample_dir: Path) -> None:
    result = read_manifest(sample_dir / "pairs.jsonl")
    assert len(result.records) == 36 and result.errors == []
    assert {r.domain for r in result.records} == {"HEAD", "CHEST", "ABD"}
    assert all(Path(r.image).is_file() for r in result.records)


@pytest.fixture()
def bad_manifest(tmp_path: Path, sample_dir: Path) -> Path:
    images = sorted((sample_dir / "images").iterdir())
    shutil.copy(images[0], tmp_path / "good.jpg")
    shutil.copy(images[1], tmp_path / "good2.jpg")
    (tmp_path / "fake.png").write_text("this is not an image")
    (tmp_path / "truncated.jpg").write_bytes(images[2].read_bytes()[:300])
    lines = [
        {"id": "ok1", "image": "good.jpg", "text": "Normal chest.", "domain": "CHEST"},
        "{not json",
        {"id": "empty", "image": "good.jpg", "text": "   ", "domain": "CHEST"},
        {"id": "missing", "image": "nowhere.jpg", "text": "x", "domain": "CHEST"},
        {"id": "ok1", "image": "good2.jpg", "text": "Duplicate id.", "domain": "CHEST"},
        {"id": "fake", "image": "fake.png", "text": "Text file named png.", "domain": "CHEST"},
        {"id": "trunc", "image": "truncated.jpg", "text": "Corrupt jpeg.", "domain": "CHEST"},
        {"id": "ok2", "image": "good2.jpg", "text": "Another normal chest.", "domain": "CHEST"},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_bad_lines_are_reported_with_file_and_line(bad_manifest: Path) -> None:
    result = read_manifest(bad_manifest)
    ids = [r.id for r in result.records]
    assert ids == ["ok1", "fake", "trunc", "ok2"]  # image content is checked at ingest
    joined = "\n".join(result.errors)
    assert f"{bad_manifest}:2: malformed JSON" in joined
    assert f"{bad_manifest}:3 [text]: empty report" in joined
    assert f"{bad_manifest}:4 [image]: image file not found" in joined
    assert f"{bad_manifest}:5 [id]: duplicate id 'ok1'" in joined
    assert result.skipped == 4


def test_on_error_fail_stops_at_first_bad_line(bad_manifest: Path) -> None:
    with pytest.raises(InputError, match=r"pairs.jsonl:2: malformed JSON"):
        read_manifest(bad_manifest, on_error="fail")


def test_ingest_skips_unreadable_images_and_keeps_indexed_data(bad_manifest: Path,
                                                               tmp_path: Path) -> None:
    cfg = IndexConfig(text_encoder=Component(name="hashing"))
    index = Index.open(tmp_path / "idx", create=True, config=cfg)
    records = read_manifest(bad_manifest).records
    summary = index.add(records)
    assert summary.added == 2 and summary.skipped == 2
    assert any("fake.png: not an image file" in e for e in summary.errors)
    assert any("truncated.jpg: corrupt or truncated image" in e for e in summary.errors)
    assert index.count() == 2
    with pytest.raises(InputError, match="fake.png"):
        index.add(read_manifest(bad_manifest).records, on_error="fail")
    assert index.count() == 2  # nothing already indexed is lost
    again = index.add(read_manifest(bad_manifest).records)
    assert again.added == 0 and again.already_indexed == 2


def test_csv_manifest_and_field_mapping(tmp_path: Path, sample_dir: Path) -> None:
    image = next((sample_dir / "images").iterdir())
    shutil.copy(image, tmp_path / "a.jpg")
    (tmp_path / "m.csv").write_text("id,image,caption,modality\nx1,a.jpg,Axial CT of the head,CT\n"
                                    "x2,a.jpg,,CT\n")
    result = read_manifest(tmp_path / "m.csv", text_field="caption", domain_field="modality")
    assert [r.id for r in result.records] == ["x1"] and result.records[0].domain == "CT"
    assert result.errors == [f"{tmp_path / 'm.csv'}:3 [caption]: empty report/text"]


def test_folder_with_sidecars(tmp_path: Path, sample_dir: Path) -> None:
    images = sorted((sample_dir / "images").iterdir())[:3]
    for n, image in enumerate(images):
        folder = tmp_path / ("CT" if n < 2 else "MR")
        folder.mkdir(exist_ok=True)
        shutil.copy(image, folder / f"s{n}.jpg")
        if n != 1:
            (folder / f"s{n}.txt").write_text(f"report {n}")
    result = read_folder(tmp_path)
    assert [(r.id, r.domain, r.text) for r in result.records] == [
        ("f_CT_s0", "CT", "report 0"), ("f_MR_s2", "MR", "report 2")]
    assert len(result.errors) == 1 and "s1.jpg: no sidecar report" in result.errors[0]


def test_corpus_is_chunked_with_stable_ids(tmp_path: Path) -> None:
    long_text = " ".join(f"Sentence number {i} about pleural effusion." for i in range(60))
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({"id": "doc1", "title": "Effusion", "content": long_text}) + "\n"
                    + json.dumps({"id": "doc2", "title": "Short", "content": "Tiny."}) + "\n"
                    + json.dumps({"id": "doc3", "title": "Empty", "content": ""}) + "\n")
    result = read_corpus(path, chunk_tokens=50, chunk_overlap=10)
    chunks = [r for r in result.records if r.meta["doc_id"] == "doc1"]
    assert len(chunks) >= 6 and all(len(c.text.split()) <= 50 for c in chunks)
    assert [c.id for c in chunks][:2] == ["doc1#0", "doc1#1"]
    assert any(r.id == "doc2" for r in result.records)
    assert result.errors == [f"{path}:3 [content]: empty content"]
