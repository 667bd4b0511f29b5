"""DICOM reading with PHI removal before anything is stored.

Pixels are rescaled (slope/intercept), windowed (the file's window centre/width, else min–max)
to 8 bits, inverted for MONOCHROME1, and rendered as a PIL image; only that image and an
allow-list of non-identifying tags leave this module. Identifying tags (names, ids, dates, times,
institution, physicians, free-text comments, addresses, private tags) are never returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmedrag.errors import InputError

# Non-identifying tags kept by default (a user's --keep-tags extends this list).
DEFAULT_KEEP = ("Modality", "BodyPartExamined", "ViewPosition", "PatientSex", "StudyDescription",
                "SeriesDescription", "Rows", "Columns", "PhotometricInterpretation",
                "SliceThickness", "PixelSpacing", "ImageType")

# Keywords that are PHI whatever the allow-list says (HIPAA identifiers in DICOM).
PHI_KEYWORDS = {
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientAddress",
    "PatientTelephoneNumbers", "OtherPatientIDs", "OtherPatientNames", "PatientMotherBirthName",
    "ReferringPhysicianName", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy",
    "OperatorsName", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "AccessionNumber", "StudyID", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate",
    "StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime", "StudyInstanceUID",
    "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID", "DeviceSerialNumber",
    "StationName", "ImageComments", "PatientComments", "AdditionalPatientHistory",
    "RequestingPhysician", "PhysiciansOfRecord", "MedicalRecordLocator", "PatientAge",
    "EthnicGroup", "Occupation", "IssuerOfPatientID", "RequestedProcedureDescription",
}


@dataclass
class DicomImage:
    image: Image.Image
    tags: dict[str, Any] = field(default_factory=dict)


def _is_phi(keyword: str) -> bool:
    return keyword in PHI_KEYWORDS or keyword.endswith(("Date", "Time", "DateTime", "Name", "UID"))


def deidentified_tags(dataset: Any, keep: tuple[str, ...] = DEFAULT_KEEP) -> dict[str, Any]:
    """Allow-listed tags as plain JSON values; PHI keywords are refused even if allow-listed."""
    out: dict[str, Any] = {}
    for keyword in keep:
        if _is_phi(keyword) or keyword not in dataset:
            continue
        value = dataset.data_element(keyword).value
        if hasattr(value, "__iter__") and not isinstance(value, (str, bytes)):
            value = [str(v) for v in value]
        elif not isinstance(value, (int, float)):
            value = str(value)
        out[keyword] = value
    return out


def window_to_uint8(pixels: np.ndarray, dataset: Any) -> np.ndarray:
    arr = pixels.astype(np.float64)
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4):
        arr = arr[arr.shape[0] // 2]  # a multi-frame volume: take the middle frame
    slope = float(getattr(dataset, "RescaleSlope", 1) or 1)
    intercept = float(getattr(dataset, "RescaleIntercept", 0) or 0)
    arr = arr * slope + intercept
    centre, width = getattr(dataset, "WindowCenter", None), getattr(dataset, "WindowWidth", None)
    if centre is not None and width is not None:
        centre = float(centre[0] if hasattr(centre, "__len__") and not isinstance(centre, str) else centre)
        width = float(width[0] if hasattr(width, "__len__") and not isinstance(width, str) else width)
        low, high = centre - width / 2, centre + width / 2
    else:
        low, high = float(arr.min()), float(arr.max())
    scaled = np.zeros_like(arr) if high <= low else np.clip((arr - low) / (high - low), 0, 1)
    if str(getattr(dataset, "PhotometricInterpretation", "")) == "MONOCHROME1":
        scaled = 1.0 - scaled
    return (scaled * 255).round().astype(np.uint8)


def read_dicom(path: str | Path, keep: tuple[str, ...] = DEFAULT_KEEP) -> DicomImage:
    """Read a DICOM file into an 8-bit image and de-identified tags.

    Example:
        >>> dicom = read_dicom("scan.dcm")   # doctest: +SKIP
        >>> "PatientName" in dicom.tags
        False
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        dataset = pydicom.dcmread(str(path))
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise InputError(f"not a readable DICOM file: {exc}", path=str(path)) from None
    if "PixelData" not in dataset:
        raise InputError("DICOM file has no pixel data", path=str(path))
    try:
        pixels = dataset.pixel_array
    except Exception as exc:  # noqa: BLE001 - codec errors come in many types
        raise InputError(f"cannot decode DICOM pixels: {exc}", path=str(path)) from None
    arr = window_to_uint8(np.asarray(pixels), dataset)
    image = Image.fromarray(arr).convert("RGB")
    return DicomImage(image=image, tags=deidentified_tags(dataset, keep))
