"""PHI planted everywhere a DICOM header or image file can hold it, and a byte search that
finds it anywhere in a folder (PNG chunks decompressed)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

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
