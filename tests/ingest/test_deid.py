"""De-identification by profile: PHI planted everywhere in DICOM headers (nested sequences,
descriptions, private tags, UIDs) and in image metadata never reaches any byte of the index."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from mmedrag.config import Component, IndexConfig
from mmedrag.errors import InputError, UsageError
from mmedrag.index import Index
from mmedrag.ingest.deid import check_keep_tags, coarsen_age, deidentify, replace_uid
from mmedrag.ingest.dicom import read_dicom
from mmedrag.ingest.manifest import read_manifest

NEEDLES = ("Jane", "Doe", "MRN123456", "998877", "SaintExample", "Gregory", "ACC55501",
           "19450317", "RQ4242")
STUDY_UID = "1.2.826.0.1.998877.1"


def phi_dicom(path: Path, burned_in: str = "NO") -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.998877.3"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.PatientName, ds.PatientID = "Doe^Jane", "MRN123456"
    ds.PatientBirthDate, ds.PatientAge, ds.PatientSex = "19450317", "095Y", "F"
    ds.StudyDescription = "CT chest for Jane Doe MRN123456"
    ds.SeriesDescription = "Jane Doe follow-up"
    ds.ImageComments = "Patient Jane Doe"
    ds.InstitutionName, ds.ReferringPhysicianName = "SaintExample Hospital", "House^Gregory"
    ds.AccessionNumber, ds.StudyInstanceUID = "ACC55501", STUDY_UID
    ds.SeriesInstanceUID, ds.SOPInstanceUID = "1.2.826.0.1.998877.2", "1.2.826.0.1.998877.3"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    other = Dataset()
    other.PatientID, other.IssuerOfPatientID = "MRN123456", "SaintExample"
    ds.OtherPatientIDsSequence = Sequence([other])
    request = Dataset()
    request.ScheduledProcedureStepDescription = "scan Jane Doe"
    request.RequestedProcedureID = "RQ4242"
    inner = Dataset()
    inner.PatientName = "Doe^Jane"
    inner.ReferencedSOPInstanceUID = STUDY_UID
    request.ReferencedStudySequence = Sequence([inner])
    ds.RequestAttributesSequence = Sequence([request])
    code = Dataset()
    code.CodeMeaning = "Chest"
    code.CodeValue = "T-D3000"
    code.ContextUID = STUDY_UID
    code.AnatomicRegionModifierSequence = Sequence([inner.copy()])
    ds.AnatomicRegionSequence = Sequence([code])
    ds.add_new(0x00091010, "LO", "Jane Doe private MRN123456")
    ds.Modality, ds.BodyPartExamined, ds.BurnedInAnnotation = "CT", "CHEST", burned_in
    pixels = np.tile(np.linspace(0, 1000, 32), (32, 1)).astype(np.uint16)
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 15, 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def phi_png(path: Path) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "Jane Doe MRN123456")
    info.add_text("Author", "House Gregory", zip=True)
    exif = Image.Exif()
    exif[0x010E] = "Jane Doe MRN123456"
    Image.new("RGB", (16, 16), (9, 9, 9)).save(path, pnginfo=info, exif=exif.tobytes(),
                                               icc_profile=b"SaintExample" * 20)
    return path


def every_byte(folder: Path) -> list[tuple[Path, bytes]]:
    """Each file's bytes, plus every zlib stream inside PNG chunks, decompressed."""
    out = []
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        out.append((path, data))
        if data.startswith(b"\x89PNG"):
            offset, idat = 8, b""
            while offset < len(data):
                length = int.from_bytes(data[offset:offset + 4], "big")
                kind, body = data[offset + 4:offset + 8], data[offset + 8:offset + 8 + length]
                if kind == b"IDAT":
                    idat += body
                elif kind in (b"zTXt", b"iCCP", b"iTXt", b"eXIf", b"tEXt"):
                    out.append((path, body))
                    start = body.find(b"\0") + 2
                    try:
                        out.append((path, zlib.decompress(body[start:])))
                    except zlib.error:
                        pass
                offset += 12 + length
            out.append((path, zlib.decompress(idat)))
    return out


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
