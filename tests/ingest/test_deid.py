"""De-identification by profile: PHI planted everywhere in DICOM headers (nested sequences,
descriptions, private tags, UIDs) and in image metadata never reaches any byte of the index."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from faults.phi import NEEDLES, STUDY_UID, every_byte, phi_dicom, phi_png
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from mmedrag.config import Component, IndexConfig
from mmedrag.errors import InputError, UsageError
from mmedrag.index import Index
from mmedrag.ingest.deid import check_keep_tags, coarsen_age, deidentify, replace_uid
from mmedrag.ingest.dicom import read_dicom
from mmedrag.ingest.manifest import read_manifest


def test_planted_phi_leaves_zero_hits_in_the_index(tmp_path: Path) -> None:
    phi_dicom(tmp_path / "scan.dcm")
    phi_png(tmp_path / "photo.png")
    rows = [{"id": "d1", "image": "scan.dcm", "text": "Chest CT, no nodules."},
            {"id": "p1", "image": "photo.png", "text": "Skin photo."}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = IndexConfig(text_encoder=Component(name="hashing"),
                      image_encoder=Component(name="thumbnail"))
    index = Index.open(tmp_path / "idx", create=True, config=cfg)
    keep = ("PatientAge", "AnatomicRegionSequence", "StudyInstanceUID")
    summary = index.add(read_manifest(tmp_path / "m.jsonl").records, keep_tags=keep)
    assert summary.added == 2, summary.errors
    tags = index.get(["d1"])[0].meta["dicom"]
    assert tags["PatientAge"] == "090Y" and tags["PatientSex"] == "F"
    assert tags["StudyInstanceUID"] == replace_uid(STUDY_UID)
    region = tags["AnatomicRegionSequence"][0]
    assert region["CodeMeaning"] == "Chest" and region["ContextUID"] == replace_uid(STUDY_UID)
    assert region["AnatomicRegionModifierSequence"] == [
        {"ReferencedSOPInstanceUID": replace_uid(STUDY_UID)}]
    index.close()
    hits = [(path.name, needle) for path, data in every_byte(tmp_path / "idx")
            for needle in NEEDLES
            for variant in (needle.encode(), needle.encode("utf-16-le"))
            if re.search(re.escape(variant), data, re.IGNORECASE)]
    assert hits == []


@pytest.mark.parametrize("tag", ["OtherPatientIDsSequence", "RequestAttributesSequence",
                                 "PatientName", "StudyDescription", "SeriesDescription",
                                 "ImageComments", "InstitutionName", "AccessionNumber",
                                 "StudyDate", "RequestedProcedureID"])
def test_keep_tags_can_never_keep_an_identifying_tag(tag: str) -> None:
    with pytest.raises(UsageError, match=rf"refused to keep {tag}: it is identifying"):
        check_keep_tags(("Manufacturer", tag))


def test_keep_tags_refusal_on_the_cli(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "mmedrag", "index", str(tmp_path / "m.jsonl"),
                          "--index", str(tmp_path / "idx"), "--keep-tags",
                          "OtherPatientIDsSequence,RequestAttributesSequence"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "refused to keep OtherPatientIDsSequence" in out.stderr
    assert not (tmp_path / "idx").exists()


def test_burned_in_annotation_refused_unless_opted_in(tmp_path: Path) -> None:
    path = phi_dicom(tmp_path / "burned.dcm", burned_in="YES")
    with pytest.raises(InputError, match="BurnedInAnnotation is YES"):
        read_dicom(path)
    assert read_dicom(path, allow_burned_in=True).image.size == (32, 32)


def test_uids_replaced_consistently_and_ages_coarsened() -> None:
    assert replace_uid("1.2.3") == replace_uid("1.2.3") != replace_uid("1.2.4")
    assert replace_uid("1.2.3").startswith("2.25.") and len(replace_uid("1.2.3")) <= 64
    assert coarsen_age("095Y") == "090Y" and coarsen_age("089Y") == "089Y"
    assert coarsen_age("012M") == "012M"
    ds = Dataset()
    ds.PatientName = "Doe^Jane"
    ds.add_new(0x00111001, "LO", "private")
    item = Dataset()
    item.PatientID = "MRN123456"
    ds.ReferencedPatientSequence = Sequence([item])
    ds.Modality = "MR"
    clean = deidentify(ds)
    assert [e.keyword for e in clean] == ["Modality", "PatientName"]  # Z: kept, emptied
    assert not clean.PatientName


def test_dicom_pixel_limit_counts_frames_before_decoding(tmp_path: Path) -> None:
    path = phi_dicom(tmp_path / "a.dcm")
    with pytest.raises(InputError, match=r"32x32x1 frames x1 samples pixels \(1,024\), over"):
        read_dicom(path, max_pixels=1000)
    data = path.read_bytes()
    buffer = io.BytesIO(data)
    assert read_dicom(buffer.getvalue(), max_pixels=2000).image.size == (32, 32)


def test_deflated_9000_square_dicom_is_refused_before_decoding(tmp_path: Path) -> None:
    import time

    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from mmedrag.server.inputs import BadRequest, decode_image

    path = phi_dicom(tmp_path / "small.dcm")
    from pydicom import dcmread

    ds = dcmread(path)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.Rows = ds.Columns = 9000
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = bytes(9000 * 9000)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    assert len(data) < 200_000
    started = time.perf_counter()
    with pytest.raises(BadRequest) as caught:
        decode_image(data, "big.dcm")
    assert caught.value.status == 413 and "9000x9000" in caught.value.message
    assert time.perf_counter() - started < 5
