"""The VQA-RAD retrieval corpus cannot leak test images; PubMedQA exclusion covers own abstracts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmedrag.evaluation.corpora import (
    overlap_ids,
    pubmedqa_corpus,
    synpic_id,
    vqa_rad_corpus,
    vqa_rad_test_synpics,
)
from mmedrag.evaluation.tasks import get_task

pytestmark = pytest.mark.data


def test_synpic_id() -> None:
    assert synpic_id("images/MPX1024_synpic40275.jpg") == "synpic40275"
    assert synpic_id("vqarad_synpic7.jpg") == "synpic7"
    assert synpic_id("no id here") is None


def test_vqa_rad_corpus_holds_no_test_image_and_no_overlap_id(shared_data: Path) -> None:
    records, report = vqa_rad_corpus(shared_data)
    test_ids = {synpic_id(s.image) for s in get_task("vqa-rad-closed").load(shared_data)}
    test_ids |= {synpic_id(s.image) for s in get_task("vqa-rad-open").load(shared_data)}
    overlap = overlap_ids(shared_data)
    assert len(test_ids) == 203 and test_ids == vqa_rad_test_synpics(shared_data)
    assert len(overlap) == 18
    corpus_ids = {synpic_id(r.id) for r in records} | {synpic_id(r.image) for r in records}
    assert not corpus_ids & test_ids, "a VQA-RAD test image is retrievable"
    assert not corpus_ids & overlap, "a MedPix/VQA-RAD overlap image is retrievable"
    # Whole MedPix cases holding an overlapping image are gone too.
    data = json.loads((shared_data / "overlaps.json").read_text())
    bad_cases = {item["medpix_id"].split("_")[0] for item in data["medpix_vs_vqa_rad"]}
    assert not {r.meta.get("case_id") for r in records} & bad_cases
    sources = {r.meta["source"] for r in records}
    assert sources == {"medpix", "vqa-rad-train"}
    assert report["vqa_rad_train_images_kept"] > 50 and report["records"] == len(records)
    assert all(Path(r.image).exists() for r in records[:20] + records[-20:])


def test_pubmedqa_corpus_and_own_abstract_exclusion(shared_data: Path) -> None:
    records = pubmedqa_corpus(shared_data)
    assert len(records) == 1000 and all(r.id.startswith("pubmed") for r in records)
    ids = {r.id for r in records}
    samples = get_task("pubmedqa").load(shared_data)
    assert all(s.exclude_ids and s.exclude_ids <= ids for s in samples)
