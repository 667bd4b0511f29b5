"""Leakage-free retrieval corpora for the shipped evaluations.

VQA-RAD's train and test splits share images (the split is by question), and MedPix, VQA-RAD and
VQA-Med 2019 are all drawn from MedPix. :func:`vqa_rad_corpus` therefore builds the retrieval
database for VQA-RAD evaluation from

* MedPix 2.0 image–caption pairs, dropping every *case* that holds an image listed in
  ``overlaps.json`` (MedPix vs VQA-RAD) or whose synpic id is a VQA-RAD test image, and
* VQA-RAD train question–answer pairs grouped per image, dropping every image that appears in
  the test split,

so no test image (by synpic id) and no overlap id can be retrieved. :func:`pubmedqa_corpus`
returns one record per PubMedQA abstract (``pubmed<PMID>``); evaluation excludes each question's
own abstract at query time (``Sample.exclude_ids``).

Example:
    >>> records, report = vqa_rad_corpus("../shared/data")     # doctest: +SKIP
    >>> report["excluded_test_images"] > 0                      # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from mmedrag.errors import InputError, UsageError
from mmedrag.records import Document, Pair, Record

_SYNPIC = re.compile(r"synpic\d+")


def synpic_id(text: str) -> str | None:
    """The MedPix ``synpicNNNN`` id in a file name or record id, if any."""
    found = _SYNPIC.search(text or "")
    return found.group(0) if found else None


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise UsageError(f"{path} does not exist (is --data the shared data folder?)")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise InputError(f"malformed JSON: {exc.msg}", path=str(path),
                                     line=number) from None
    return rows


def vqa_rad_test_synpics(data_root: str | Path) -> set[str]:
    """Synpic ids of every image in the VQA-RAD test split."""
    rows = _jsonl(Path(data_root) / "vqa-rad" / "test.jsonl")
    return {s for s in (synpic_id(r["image"]) for r in rows) if s}


def overlap_ids(data_root: str | Path) -> set[str]:
    """Synpic ids shared by MedPix 2.0 and VQA-RAD (``overlaps.json``)."""
    path = Path(data_root) / "overlaps.json"
    if not path.exists():
        raise UsageError(f"{path} does not exist")
    data = json.loads(path.read_text(encoding="utf-8"))
    return {item["synpic"] for item in data.get("medpix_vs_vqa_rad", [])}


def vqa_rad_corpus(data_root: str | Path) -> tuple[list[Record], dict[str, Any]]:
    """MedPix pairs + VQA-RAD train pairs with no VQA-RAD test image and no overlap id.

    Returns:
        (records with absolute image paths, a report of what was dropped and why).
    """
    root = Path(data_root)
    test = vqa_rad_test_synpics(root)
    overlap = overlap_ids(root)
    banned = test | overlap
    medpix = _jsonl(root / "medpix" / "pairs.jsonl")
    bad_cases = {r["case_id"] for r in medpix if synpic_id(r["id"]) in banned}
    records: list[Record] = []
    for row in medpix:
        if row["case_id"] in bad_cases:
            continue
        records.append(Pair(id=row["id"], text=row["caption"],
                            image=str((root / "medpix" / row["image"]).resolve()),
                            domain=row["modality"],
                            meta={"source": "medpix", "case_id": row["case_id"],
                                  "location": row.get("location", ""), "split": row["split"]}))
    per_image: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in _jsonl(root / "vqa-rad" / "train.jsonl"):
        per_image[row["image"]].append(row)
    dropped_train = 0
    for image, rows in sorted(per_image.items()):
        synpic = synpic_id(image)
        if synpic in banned:
            dropped_train += 1
            continue
        text = " ".join(f"{r['question'].strip()} {r['answer'].strip()}." for r in rows)
        records.append(Pair(id=f"vqarad_{synpic}", text=text,
                            image=str((root / "vqa-rad" / image).resolve()),
                            domain=rows[0].get("organ", ""),
                            meta={"source": "vqa-rad-train", "questions": len(rows)}))
    report = {"records": len(records), "medpix_cases_dropped": len(bad_cases),
              "medpix_pairs_dropped": sum(r["case_id"] in bad_cases for r in medpix),
              "vqa_rad_train_images_dropped": dropped_train,
              "vqa_rad_train_images_kept": len(per_image) - dropped_train,
              "excluded_test_images": len(test), "excluded_overlap_ids": len(overlap)}
    return records, report


def pubmedqa_corpus(data_root: str | Path) -> list[Record]:
    """One Document per PubMedQA expert-labelled abstract (id ``pubmed<PMID>``)."""
    path = Path(data_root) / "pubmedqa" / "ori_pqal.json"
    if not path.exists():
        raise UsageError(f"{path} does not exist")
    items = json.loads(path.read_text(encoding="utf-8"))
    records: list[Record] = []
    for pmid, item in items.items():
        contexts = item.get("CONTEXTS")
        if not isinstance(contexts, list):
            raise InputError(f"{pmid}: CONTEXTS is not a list", path=str(path), field="CONTEXTS")
        records.append(Document(id=f"pubmed{pmid}", text=" ".join(contexts),
                                title=str(item.get("QUESTION", "")), domain="pubmed",
                                meta={"pmid": str(pmid), "year": item.get("YEAR", "")}))
    return records
