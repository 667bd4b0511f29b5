"""DICOM: windowing to 8 bits, PHI never stored, clear errors for files without pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mmedrag.config import Component, IndexConfig
from mmedrag.errors import InputError
from mmedrag.index import Index
from mmedrag.ingest.dicom import read_dicom
from mmedrag.ingest.manifest import read_manifest

PHI = {"PatientName": "Doe^Jane", "PatientID": "MRN-998877", "StudyDate": "20240102",
       "InstitutionName": "Saint Example Hospital", "ImageComments": "Jane Doe follow-up",
       "ReferringPhysicianName": "House^Gregory", "AccessionNumber": "ACC-55501"}


def write_dicom(path: Path, pixels: np.ndarray | None, **extra: object) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    for key, value in {**PHI, **extra}.items():
        setattr(ds, key, value)
    ds.Modality = "CT"
    ds.Manufacturer = "Acme Scanners"
    ds.BodyPartExamined = "CHEST"
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = extra.get("PhotometricInterpretation", "MONOCHROME2")
        ds.PixelData = pixels.astype(np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp() -> np.ndarray:
    # stored values 824..1224 → HU -200..200 after the intercept
    return np.tile(np.linspace(824, 1224, 64), (64, 1)).astype(np.int16)


def test_windowing_and_phi_removal(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "a.dcm", ramp(), RescaleIntercept=-1024, RescaleSlope=1,
                       WindowCenter=0, WindowWidth=400)
    dicom = read_dicom(path)
    arr = np.asarray(dicom.image.convert("L"))
    assert arr[0, 0] == 0 and arr[0, -1] == 255 and abs(int(arr[0, 32]) - 128) <= 3
    assert dicom.tags["Modality"] == "CT" and dicom.tags["BodyPartExamined"] == "CHEST"
    assert not set(PHI) & set(dicom.tags)
    kept = read_dicom(path, keep=("Manufacturer", "PatientName", "StudyDate"))
    assert kept.tags == {"Manufacturer": "Acme Scanners"}  # PHI refused even when asked


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "m1.dcm", ramp(), PhotometricInterpretation="MONOCHROME1")
    arr = np.asarray(read_dicom(path).image.convert("L"))
    assert arr[0, 0] == 255 and arr[0, -1] == 0


def test_dicom_without_pixels_is_a_clear_error(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "nopix.dcm", None)
    with pytest.raises(InputError, match=r"nopix.dcm: DICOM file has no pixel data"):
        read_dicom(path)


def test_ingested_dicom_leaves_no_phi_anywhere_in_the_index(tmp_path: Path) -> None:
    write_dicom(tmp_path / "scan.dcm", ramp(), RescaleIntercept=-1024)
    write_dicom(tmp_path / "nopix.dcm", None)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"id": "d1", "image": "scan.dcm", "text": "Chest CT, no nodules.",
                    "domain": "CT"}) + "\n"
        + json.dumps({"id": "d2", "image": "nopix.dcm", "text": "Broken.", "domain": "CT"}) + "\n")
    cfg = IndexConfig(text_encoder=Component(name="hashing"))
    index = Index.open(tmp_path / "idx", create=True, config=cfg)
    summary = index.add(read_manifest(manifest).records, keep_tags=("Manufacturer",))
    assert summary.added == 1 and summary.skipped == 1
    assert "nopix.dcm: DICOM file has no pixel data" in summary.errors[0]
    record = index.get(["d1"])[0]
    assert record.meta["dicom"]["Manufacturer"] == "Acme Scanners"
    assert (tmp_path / "idx" / record.image).read_bytes()[:4] == b"\x89PNG"
    index.close()
    for file in (tmp_path / "idx").rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            for value in ("Doe^Jane", "MRN-998877", "Saint Example", "Gregory", "ACC-55501",
                          "20240102"):
                assert value.encode() not in data, f"{value} leaked into {file}"
