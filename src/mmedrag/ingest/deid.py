"""DICOM de-identification by profile: PS3.15 Annex E basic profile, applied by tag action.

Actions (Table E.1-1): ``X`` remove, ``Z`` empty, ``D`` dummy value, ``U`` replace UID
(consistently: the same input UID always maps to the same ``2.25.`` UID, a one-way digest), ``K``
keep. Where the standard allows several (``X/Z/D``) the strictest, removal, is used. On top of
the table, and in every sequence item at any depth:

* private tags (odd groups) and overlay/curve groups (50xx, 60xx) are removed;
* any person name (VR PN), date, time or date-time (DA, TM, DT) is removed;
* any other UID (VR UI) is replaced, except class/transfer-syntax UIDs, which identify nobody;
* free text whose keyword is a description, comment, remark, note, address, telephone or an ID
  (``*Description``, ``*Comments``, ``*ID`` ...) is removed — "cleaned" here means dropped: a
  planted "for Jane Doe MRN 123" in StudyDescription cannot survive;
* ``PatientSex`` and ``PatientAge`` follow the Retain Patient Characteristics option: kept when
  asked, with ages over 89 coarsened to ``090Y`` (HIPAA safe harbour).

A user's keep-list can add tags that survive the profile; asking to keep a tag the profile
removes raises ``UsageError`` that names the tag and its action.

Pixel data is not examined: text burned into the pixels is NOT removed. Files that declare
``BurnedInAnnotation = YES`` are refused by ``read_dicom`` unless the caller opts in.

Example:
    >>> from pydicom.dataset import Dataset
    >>> ds = Dataset(); ds.PatientName = "Doe^Jane"; ds.Modality = "CT"
    >>> clean = deidentify(ds)
    >>> "PatientName" in clean, clean.Modality
    (False, 'CT')
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from mmedrag.errors import UsageError

# PS3.15 Table E.1-1, basic profile column, by keyword (X/Z/D collapsed to the strictest kept).
_TABLE = """
Z AccessionNumber PatientName PatientID PatientBirthDate StudyID ReferringPhysicianName
Z FillerOrderNumberImagingServiceRequest PlacerOrderNumberImagingServiceRequest
Z ContrastBolusAgent VerifyingObserverIdentificationCodeSequence PersonName
D ContentCreatorName VerifyingObserverName ObserverName PersonIdentificationCodeSequence
D VerifyingOrganization
X AcquisitionComments AcquisitionContextSequence AcquisitionDeviceProcessingDescription
X AcquisitionProtocolDescription ActualHumanPerformersSequence AdditionalPatientHistory
X AdmissionID AdmittingDiagnosesCodeSequence AdmittingDiagnosesDescription Allergies Arbitrary
X AuthorObserverSequence BranchOfService CommentsOnThePerformedProcedureStep
X ConfidentialityConstraintOnPatientDataDescription ContributionDescription CountryOfResidence
X CurrentPatientLocation CustodialOrganizationSequence DataSetTrailingPadding
X DerivationDescription DeviceSerialNumber DigitalSignaturesSequence
X DischargeDiagnosisDescription DistributionAddress DistributionName EthnicGroup
X FrameComments GraphicAnnotationSequence HumanPerformerName HumanPerformerOrganization
X IconImageSequence IdentifyingComments ImageComments ImagePresentationComments
X ImagingServiceRequestComments InstitutionAddress InstitutionName InstitutionalDepartmentName
X InsurancePlanIdentification IntendedRecipientsOfResultsIdentificationSequence
X InterpretationApproverSequence InterpretationAuthor InterpretationDiagnosisDescription
X InterpretationIDIssuer InterpretationRecorder InterpretationText InterpretationTranscriber
X IssuerOfAdmissionID IssuerOfPatientID IssuerOfPatientIDQualifiersSequence
X IssuerOfServiceEpisodeID MedicalAlerts MedicalRecordLocator MilitaryRank
X ModifiedAttributesSequence
X ModifyingDeviceID ModifyingDeviceManufacturer NameOfPhysiciansReadingStudy
X NamesOfIntendedRecipientsOfResults Occupation OperatorIdentificationSequence OperatorsName
X OrderCallbackPhoneNumber OrderEnteredBy OrderEntererLocation OriginalAttributesSequence
X OtherPatientIDs OtherPatientIDsSequence OtherPatientNames ParticipantSequence PatientAddress
X PatientAge PatientBirthName PatientBirthTime PatientComments PatientInsurancePlanCodeSequence
X PatientMotherBirthName PatientPrimaryLanguageCodeSequence PatientReligiousPreference
X PatientSex PatientSexNeutered PatientSize PatientState PatientTelephoneNumbers PatientWeight
X PatientTransportArrangements PerformedLocation PerformedProcedureStepDescription
X PerformedProcedureStepID PerformedStationAETitle PerformedStationName PerformingPhysicianName
X PerformingPhysicianIdentificationSequence PhysicianApprovingInterpretation
X PhysiciansOfRecord PhysiciansOfRecordIdentificationSequence
X PhysiciansReadingStudyIdentificationSequence
X PreMedication ProtocolName ReasonForStudy ReferencedPatientAliasSequence
X ReferencedPatientSequence ReferencedStudySequence ReferringPhysicianAddress
X ReferringPhysicianIdentificationSequence ReferringPhysicianTelephoneNumbers RegionOfResidence
X RequestAttributesSequence RequestedContrastAgent RequestedProcedureComments
X RequestedProcedureDescription RequestedProcedureID RequestedProcedureLocation
X RequestingPhysician RequestingService ResponsibleOrganization ResponsiblePerson
X ResultsComments ResultsDistributionListSequence ResultsIDIssuer ScheduledHumanPerformersSequence
X ScheduledPatientInstitutionResidence ScheduledPerformingPhysicianIdentificationSequence
X ScheduledPerformingPhysicianName ScheduledProcedureStepDescription ScheduledProcedureStepLocation
X ScheduledStationAETitle ScheduledStationName ScheduledStudyLocation SeriesDescription
X ServiceEpisodeDescription ServiceEpisodeID SmokingStatus SpecialNeeds StationName
X StudyComments StudyDescription StudyIDIssuer TextComments TextString TopicAuthor TopicKeywords
X TopicSubject TopicTitle VisitComments AdmittingDate AdmittingTime PatientInstitutionResidence
X PregnancyStatus LastMenstrualDate CurrentObserverTrial ClinicalTrialSponsorName
X ClinicalTrialProtocolName ClinicalTrialSiteName ClinicalTrialSubjectID
X ClinicalTrialSubjectReadingID ClinicalTrialTimePointID ClinicalTrialCoordinatingCenterName
U StudyInstanceUID SeriesInstanceUID SOPInstanceUID FrameOfReferenceUID ReferencedSOPInstanceUID
U MediaStorageSOPInstanceUID ConcatenationUID InstanceCreatorUID IrradiationEventUID
U SynchronizationFrameOfReferenceUID UID StorageMediaFileSetUID DimensionOrganizationUID
U ReferencedFrameOfReferenceUID RelatedFrameOfReferenceUID TransactionUID DoseReferenceUID
U FiducialUID TargetUID TemplateExtensionCreatorUID TemplateExtensionOrganizationUID
"""
ACTIONS: dict[str, str] = {kw: line.split()[0] for line in _TABLE.strip().splitlines()
                           for kw in line.split()[1:]}
# Retain Patient Characteristics option: may be kept when asked (age coarsened over 89).
RETAINABLE = frozenset({"PatientSex", "PatientAge", "PatientSize", "PatientWeight"})
# UIDs that name a kind of object, not a person or study.
CLASS_UIDS = frozenset({"SOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID",
                        "ReferencedSOPClassUID", "ImplementationClassUID",
                        "ReferencedSOPClassUIDInFile", "CodingSchemeUID",
                        "ContextGroupExtensionCreatorUID"})
_FREE_TEXT = re.compile(r"(Description|Comments?|Remarks?|Notes?|Address|Telephone\w*|Text"
                        r"|ID|IDs|Number|Numbers|Name|Names|Identifier|Identification\w*)$")
_TEXT_VRS = {"LO", "LT", "SH", "ST", "UT", "UC", "PN", "AE"}
_SALT = b"mmedrag-deid-uid/1"


def action_for(keyword: str, vr: str = "") -> str:
    """The profile action for a standard tag: X, Z, D, U or K (the table, then the rules)."""
    if keyword in ACTIONS:
        return ACTIONS[keyword]
    if vr in ("PN", "DA", "TM", "DT") or keyword.endswith(("Date", "Time", "DateTime")):
        return "X"
    if vr == "UI" or keyword.endswith("UID"):
        return "K" if keyword in CLASS_UIDS else "U"
    if (vr in _TEXT_VRS or not vr) and _FREE_TEXT.search(keyword):
        return "X"
    return "K"


def replace_uid(uid: str) -> str:
    """A consistent stand-in for ``uid``: ``2.25.`` + 128-bit digest (same input, same output)."""
    digest = hashlib.blake2b(str(uid).encode(), key=_SALT, digest_size=16).digest()
    return f"2.25.{int.from_bytes(digest, 'big')}"


def coarsen_age(value: str) -> str:
    """DICOM AS age with years over 89 coarsened: ``'095Y'`` → ``'090Y'``."""
    match = re.fullmatch(r"\s*(\d{1,3})\s*Y\s*", str(value))
    if match and int(match.group(1)) > 89:
        return "090Y"
    return str(value)


def check_keep_tags(keep: tuple[str, ...]) -> tuple[str, ...]:
    """Validate a user's keep-list; a tag the profile removes is refused with its reason.

    Raises:
        UsageError: for an unknown keyword, or one the profile marks as identifying.
    """
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    for keyword in keep:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise UsageError(f"--keep-tags: {keyword!r} is not a DICOM keyword "
                             "(private tags cannot be kept)")
        action = action_for(keyword, dictionary_VR(tag))
        if action in ("X", "Z", "D") and keyword not in RETAINABLE:
            raise UsageError(
                f"--keep-tags: refused to keep {keyword}: it is identifying under the DICOM "
                f"PS3.15 Annex E basic profile (action {action}) and is always removed")
    return keep


def deidentify(dataset: Any, retain: frozenset[str] = frozenset()) -> Any:
    """Apply the profile to ``dataset`` in place, recursing into every sequence item.

    Args:
        dataset: A pydicom Dataset (its file meta is cleaned too).
        retain: Patient-characteristic keywords to keep (from ``RETAINABLE``).

    Returns:
        The same dataset, de-identified.
    """
    meta = getattr(dataset, "file_meta", None)
    if meta is not None:
        _clean(meta, retain)
    return _clean(dataset, retain)


def _clean(dataset: Any, retain: frozenset[str]) -> Any:
    for element in list(dataset):
        tag = element.tag
        if tag.is_private or (tag.group >> 8) in (0x50, 0x60):
            del dataset[tag]
            continue
        keyword = element.keyword
        action = ("K" if keyword in retain & RETAINABLE
                  else action_for(keyword, element.VR) if keyword else "X")
        if action in ("X", "D"):
            del dataset[tag]
        elif action == "Z":
            element.value = None
        elif action == "U" and element.value:
            values = element.value if element.VM > 1 else [element.value]
            replaced = [replace_uid(v) for v in values]
            element.value = replaced if element.VM > 1 else replaced[0]
        elif element.VR == "SQ":
            for item in element.value:
                _clean(item, retain)
        elif keyword == "PatientAge" and element.value:
            element.value = coarsen_age(element.value)
    return dataset


def plain_value(element: Any) -> Any:
    """A JSON value for a cleaned element (sequences as lists of keyword → value dicts)."""
    if element.VR == "SQ":
        items = [{e.keyword: plain_value(e) for e in item if e.keyword} for item in element.value]
        return [{k: v for k, v in item.items() if v not in (None, "", [])} for item in items]
    value = element.value
    if isinstance(value, (bytes, bytearray)):
        return None
    if hasattr(value, "__iter__") and not isinstance(value, str):
        return [str(v) for v in value]
    return value if isinstance(value, (int, float)) or value is None else str(value)
