"""DICOM output: RT Dose (the product's dose export) and NM / CT / RTSTRUCT writers.

``write_rt_dose`` is what users get: a multi-frame RT Dose object that 3D Slicer, MIM and
pydicom open, on voxdose's grid (LPS mm; arrays [z, y, x]), in the CT's frame of reference
when a reference CT is given. The NM, CT and RTSTRUCT writers export a study as DICOM
(``voxdose export-dicom``, so the DICOM input path is tested end to end) and serve the tests.

Every object carries each Type 1 and Type 2 attribute of the modules it includes, as listed
per IOD in :data:`IOD_ATTRIBUTES` (PS3.3 Annex A module tables; Type 2 ones voxdose does not
know, such as KVP or the patient's birth date, are present and empty, as PS3.5 7.4 allows).
All writes are atomic (temporary file + rename).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.grid import Grid, Image
from .atomic import atomic_path

RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
NM_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.20"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RT_STRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
_UINT32_MAX = 2**32 - 1
_ELEMENT_NAMES = {"Lu": "Lutetium", "Y": "Yttrium", "I": "Iodine", "Tc": "Technetium",
                  "In": "Indium", "Ga": "Gallium", "Ho": "Holmium", "Tb": "Terbium",
                  "Ac": "Actinium", "Ra": "Radium", "Pb": "Lead", "Cu": "Copper"}

# --------------------------------------------------------------------------- IOD contents
_PATIENT = {"Patient (C.7.1.1)": ("PatientName", "PatientID", "PatientBirthDate",
                                  "PatientSex")}
_STUDY = {"General Study (C.7.2.1)": ("StudyInstanceUID", "StudyDate", "StudyTime",
                                      "ReferringPhysicianName", "StudyID", "AccessionNumber")}
_FRAME = {"Frame of Reference (C.7.4.1)": ("FrameOfReferenceUID",
                                           "PositionReferenceIndicator")}
_EQUIPMENT = {"General Equipment (C.7.5.1)": ("Manufacturer",)}
_RT_SERIES = {"RT Series (C.8.8.1)": ("Modality", "SeriesInstanceUID", "SeriesNumber",
                                      "OperatorsName")}
_PIXEL = ("SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated",
          "BitsStored", "HighBit", "PixelRepresentation", "PixelData")
_PLANE = {"Image Plane (C.7.6.2)": ("PixelSpacing", "ImageOrientationPatient",
                                    "ImagePositionPatient", "SliceThickness")}
_SOP = {"SOP Common (C.12.1)": ("SOPClassUID", "SOPInstanceUID")}

#: IOD -> module (PS3.3 section) -> the Type 1 and Type 2 attributes (top level) voxdose
#: writes there, including the Type 1C / 2C ones whose condition holds for what it writes
#: (noted). Modules that are User optional and not written are left out; the tests check
#: every exported object against this table.
IOD_ATTRIBUTES: dict[str, dict[str, tuple[str, ...]]] = {
    "CT Image (A.3)": {
        **_PATIENT, **_STUDY,
        # PatientPosition: 2C, required for the CT Image SOP Class
        "General Series (C.7.3.1)": ("Modality", "SeriesInstanceUID", "SeriesNumber",
                                     "PatientPosition"),
        **_FRAME, **_EQUIPMENT,
        "General Image (C.7.6.1)": ("InstanceNumber",),
        **_PLANE,
        "Image Pixel (C.7.6.3)": _PIXEL,
        "CT Image (C.8.2.1)": ("ImageType", "RescaleIntercept", "RescaleSlope", "KVP",
                               "AcquisitionNumber"),
        **_SOP},
    "NM Image (A.5)": {
        **_PATIENT, **_STUDY,
        "General Series (C.7.3.1)": ("Modality", "SeriesInstanceUID", "SeriesNumber"),
        "NM/PET Patient Orientation (C.8.4.6)": ("PatientOrientationCodeSequence",
                                                 "PatientGantryRelationshipCodeSequence"),
        **_FRAME, **_EQUIPMENT,
        # PatientOrientation: 2C, required as the NM image has no Image Plane module
        "General Image (C.7.6.1)": ("InstanceNumber", "PatientOrientation"),
        "Image Pixel (C.7.6.3)": _PIXEL,
        "Acquisition Context (C.7.6.14)": ("AcquisitionContextSequence",),
        "Multi-frame (C.7.6.6)": ("NumberOfFrames", "FrameIncrementPointer"),
        "NM Image Pixel (C.8.4.7)": ("PixelSpacing",),
        # NumberOfRotations, SliceVector, NumberOfSlices: 1C, required for RECON TOMO
        "NM Multi-frame (C.8.4.8)": ("NumberOfEnergyWindows", "NumberOfDetectors",
                                     "NumberOfRotations", "SliceVector", "NumberOfSlices"),
        "NM Image (C.8.4.9)": ("ImageType", "CountsAccumulated"),
        "NM Isotope (C.8.4.10)": ("EnergyWindowInformationSequence",
                                  "RadiopharmaceuticalInformationSequence"),
        "NM Detector (C.8.4.11)": ("DetectorInformationSequence",),
        # the NM TOMO Acquisition and NM Reconstruction modules: required for RECON TOMO
        "NM TOMO Acquisition (C.8.4.12)": ("RotationInformationSequence",),
        "NM Reconstruction (C.8.4.13)": ("SpacingBetweenSlices", "SliceThickness"),
        **_SOP},
    "RT Dose (A.18)": {
        **_PATIENT, **_STUDY, **_RT_SERIES, **_FRAME, **_EQUIPMENT,
        "General Image (C.7.6.1)": ("InstanceNumber",),
        **_PLANE,
        "Image Pixel (C.7.6.3)": _PIXEL,
        "Multi-frame (C.7.6.6)": ("NumberOfFrames", "FrameIncrementPointer"),
        # GridFrameOffsetVector, DoseGridScaling: 1C, required for multi-frame pixel data
        "RT Dose (C.8.8.3)": ("DoseUnits", "DoseType", "DoseSummationType",
                              "GridFrameOffsetVector", "DoseGridScaling"),
        **_SOP},
    "RT Structure Set (A.19)": {
        **_PATIENT, **_STUDY, **_RT_SERIES, **_FRAME, **_EQUIPMENT,
        "Structure Set (C.8.8.5)": ("StructureSetLabel", "StructureSetDate",
                                    "StructureSetTime", "StructureSetROISequence"),
        "ROI Contour (C.8.8.6)": ("ROIContourSequence",),
        "RT ROI Observations (C.8.8.8)": ("RTROIObservationsSequence",),
        **_SOP},
}
#: The RT DVH module (C.8.8.4, User optional in the RT Dose IOD): written with DVHs of the
#: structures of a referenced RTSTRUCT, the one place the RT Dose IOD references one.
RT_DVH_MODULE = {"RT DVH (C.8.8.4)": ("ReferencedStructureSetSequence", "DVHSequence")}


def required_attributes(iod: str) -> list[str]:
    """Every attribute keyword :data:`IOD_ATTRIBUTES` lists for an IOD (name up to the
    section, e.g. "CT Image")."""
    tables = [t for name, t in IOD_ATTRIBUTES.items() if name.split(" (")[0] == iod]
    if not tables:
        raise KeyError(f"unknown IOD {iod!r}; known: {list(IOD_ATTRIBUTES)}")
    return list(dict.fromkeys(k for keys in tables[0].values() for k in keys))


def ds_str(v: float) -> str:
    """A decimal string (DS, at most 16 characters) with 10 significant digits."""
    s = f"{float(v):.10g}"
    return "0" if s == "-0" else s


#: Patient and General Study attributes copied from a reference object (Type 2 when absent)
PATIENT_STUDY_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                      "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDate",
                      "StudyTime", "StudyDescription")


def patient_tags(patient_id: str = "VOXDOSE", patient_name: str = "voxdose^phantom",
                 sex: str = "", study_id: str = "1") -> dict:
    """Patient and study tags for a new study: ``sex`` as voxdose spells it (male/female)
    or as DICOM does (M, F, O; empty: unknown)."""
    code = {"male": "M", "female": "F", "other": "O"}.get(str(sex).lower(), str(sex))
    if code not in ("M", "F", "O", ""):
        raise InputError(f"patient sex {sex!r}: use male, female, M, F, O or leave it empty")
    return {"PatientID": patient_id, "PatientName": patient_name, "PatientSex": code,
            "StudyID": study_id}


def _new_dataset(sop_class: str, modality: str, *, patient_id: str = "VOXDOSE",
                 patient_name: str = "voxdose^phantom", study_uid: str | None = None,
                 series_uid: str | None = None, for_uid: str | None = None,
                 when: datetime | None = None, description: str = "",
                 patient: dict | None = None, series_number: int = 1,
                 content: bool = True, body_part: str | None = None):
    """A dataset with file meta, SOP Common, Patient, General Study, the series' Type 1/2
    attributes, General Equipment, the Frame of Reference module and (``content``) the
    content date and time. ``patient``: tags (see :data:`PATIENT_STUDY_TAGS`) that
    override the defaults."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientID, ds.PatientName = patient_id, patient_name
    ds.PatientBirthDate = ds.PatientSex = ""
    ds.ReferringPhysicianName = ds.AccessionNumber = ""
    ds.StudyID = "1"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesNumber = int(series_number)
    ds.FrameOfReferenceUID = for_uid or generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.SeriesDescription = description
    if body_part:  # (0018,0015); decides whether Laterality (2C) is needed
        ds.BodyPartExamined = body_part
    ds.Manufacturer = "voxdose"
    when = when or datetime.now()
    ds.StudyDate = ds.SeriesDate = when.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = when.strftime("%H%M%S.%f")
    if content:
        ds.ContentDate, ds.ContentTime = ds.StudyDate, ds.StudyTime
    for k, v in (patient or {}).items():
        if k not in PATIENT_STUDY_TAGS:
            raise InputError(f"patient tag {k!r} is not one of {PATIENT_STUDY_TAGS}")
        setattr(ds, k, v if v is not None else "")
    return ds


def _orientation_letters(v) -> str:
    """PatientOrientation (0020,0020) letters of a direction in LPS (e.g. "L", "PH")."""
    letters = (("R", "L"), ("A", "P"), ("F", "H"))
    order = np.argsort(-np.abs(np.asarray(v, float)))
    return "".join(letters[i][int(v[i] > 0)] for i in order if abs(v[i]) > 1e-3)[:3]


def _plane_geometry(grid: Grid):
    """(row cosines r, column cosines c, slice normal n, signed slice step) of a grid."""
    d = grid.direction
    r, c, zdir = d[:, 2], d[:, 1], d[:, 0]
    n = np.cross(r, c)
    if abs(abs(zdir @ n) - 1) > 1e-6 or abs(r @ c) > 1e-6:
        raise InputError("DICOM needs an orthogonal grid (slices along the plane normal); "
                         "this grid is sheared")
    return r, c, n, float(grid.spacing_mm[0] * np.sign(zdir @ n))


def _set_image_plane(ds, grid: Grid, z: int | None = None) -> None:
    r, c, _, _ = _plane_geometry(grid)
    ds.ImageOrientationPatient = [ds_str(v) for v in (*r, *c)]
    ds.PixelSpacing = [ds_str(grid.spacing_mm[1]), ds_str(grid.spacing_mm[2])]
    ds.Rows, ds.Columns = int(grid.shape[1]), int(grid.shape[2])
    ds.ImagePositionPatient = [ds_str(v) for v in grid.index_to_world([z or 0, 0, 0])]


def _set_pixels(ds, arr: np.ndarray, bits: int, signed: bool) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    dtype = {(16, False): "<u2", (16, True): "<i2", (32, False): "<u4"}[(bits, signed)]
    ds.PixelData = np.ascontiguousarray(arr.astype(dtype)).tobytes()


def _save(ds, path: Path) -> Path:
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return Path(path)


def quantise(values: np.ndarray, bits: int) -> tuple[np.ndarray, float]:
    """Non-negative floats -> unsigned integers and a DS-representable scale (v ~ q * scale)."""
    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise InputError("values to store contain NaN or infinity")
    vmax = float(v.max()) if v.size else 0.0
    if v.size and float(v.min()) < -1e-12 * max(vmax, 1.0):
        raise InputError(f"values to store must be >= 0, got minimum {float(v.min()):.4g}")
    top = float(2**bits - 1)
    scale = float(ds_str(vmax / top)) if vmax > 0 else 1.0
    if scale * top < vmax:  # the rounded scale must still cover the maximum
        scale = float(ds_str(scale * (1 + 1e-9)))
    q = np.clip(np.rint(np.clip(v, 0, None) / scale), 0, top)
    return q, scale


# --------------------------------------------------------------------------- RT Dose
#: DoseSummationType (3004,000A) of a voxdose dose. PS3.3 C.8.8.3 gives Defined Terms, and
#: each of them names what the dose was summed over: an RT Plan (PLAN, MULTI_PLAN,
#: FRACTION, BEAM, BRACHY, the *_SESSION terms, CONTROL_POINT: Referenced RT Plan Sequence
#: (300C,0002) is then Type 1C, required), a treatment record (RECORD: Referenced Treatment
#: Record Sequence (3008,0030) required) or the plan overview of the Plan Overview Sequence
#: (PLAN_OVERVIEW). The absorbed dose of a radiopharmaceutical administration, integrated
#: over time from the measured kinetics, has no RT Plan and no treatment record, so voxdose
#: extends the Defined Terms (as PS3.3 permits for Defined Terms) with this one: no
#: reference is then required, and none is invented. PLAN and MULTI_PLAN are written only
#: with the RT Plan(s) they refer to (``plan_uids``).
RPT_SUMMATION = "ADMINISTRATION"
_PLAN_SUMMATIONS = ("PLAN", "MULTI_PLAN")
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"


@dataclass(frozen=True)
class StructureSetRef:
    """An RTSTRUCT the dose's structures came from: its SOP instance and ROI numbers."""

    sop_instance_uid: str
    roi_numbers: dict[str, int]     # ROI name -> ROINumber


def structure_set_ref(path, roi_numbers: dict[str, int]) -> StructureSetRef:
    """The :class:`StructureSetRef` of an RTSTRUCT file (its SOPInstanceUID is read)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        return StructureSetRef(str(ds.SOPInstanceUID), dict(roi_numbers))
    except Exception as exc:
        raise InputError(f"{path}: cannot read the RTSTRUCT's SOPInstanceUID ({exc})") from None


def _check_summation(summation: str, plan_uids) -> None:
    """The Type 1C conditions of PS3.3 C.8.8.3 for what voxdose writes (see RPT_SUMMATION)."""
    n = len(plan_uids)
    if summation == RPT_SUMMATION:
        if n:
            raise InputError(f"DoseSummationType {RPT_SUMMATION} refers to no RT Plan; give "
                             "summation PLAN (one plan) or MULTI_PLAN with plan_uids")
        return
    if summation not in _PLAN_SUMMATIONS:
        raise InputError(f"DoseSummationType {summation!r}: voxdose writes {RPT_SUMMATION}, "
                         "PLAN or MULTI_PLAN (the others need fraction, beam or record "
                         "references it does not have)")
    if n < (1 if summation == "PLAN" else 2) or (summation == "PLAN" and n > 1):
        raise InputError(f"DoseSummationType {summation} needs "
                         f"{'one RT Plan' if summation == 'PLAN' else 'two or more RT Plans'}"
                         f" in plan_uids (Referenced RT Plan Sequence, PS3.3 C.8.8.3); got {n}")


def write_rt_dose(path, dose_image: Image, reference=None, *, series_description: str =
                  "voxdose absorbed dose", summation: str = RPT_SUMMATION, comment: str = "",
                  plan_uids: tuple[str, ...] = (), structure_set: StructureSetRef | None =
                  None, dvhs=None, series_number: int = 1) -> Path:
    """Write a dose image (Gy) as a DICOM RT Dose file, atomically.

    reference : None, a DICOM CT folder/file path, or a pydicom Dataset of the reference CT:
        FrameOfReferenceUID, StudyInstanceUID and the patient and study tags are copied from
        it so the dose overlays the CT in a viewer. Without one, new UIDs are made.
    summation, plan_uids : DoseSummationType and the RT Plans it refers to (see
        :data:`RPT_SUMMATION`; Type 1C conditions checked).
    structure_set, dvhs : the RTSTRUCT the structures came from and their DVHs (objects with
        name, doses_gy, weights, voxel_volume_ml, as ``analysis.dvh.DVH``): written as the
        RT DVH module, whose Referenced Structure Set Sequence references the RTSTRUCT.
    Stored as uint32 with DoseGridScaling = max / (2^32 - 1) (10 significant digits), so
    every voxel above 1e-7 of the maximum is reproduced within 0.1 %.
    """
    from ..core.backend import to_numpy

    _check_summation(summation, tuple(plan_uids))
    dose = np.asarray(to_numpy(dose_image.data), dtype=np.float64)
    grid = dose_image.grid
    q, scale = quantise(dose, 32)
    ds = _dose_dataset(_reference_dataset(reference), series_description, series_number)
    _set_image_plane(ds, grid, 0)
    step = _plane_geometry(grid)[3]
    ds.NumberOfFrames = int(grid.shape[0])
    ds.FrameIncrementPointer = 0x3004000C  # GridFrameOffsetVector
    ds.GridFrameOffsetVector = [ds_str(k * step) for k in range(grid.shape[0])]
    ds.SliceThickness = ds_str(grid.spacing_mm[0])
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = summation
    if plan_uids:
        ds.ReferencedRTPlanSequence = [_sop_ref(RT_PLAN_STORAGE, u) for u in plan_uids]
    ds.DoseGridScaling = ds_str(scale)
    ds.TissueHeterogeneityCorrection = tissue_heterogeneity_correction(dose_image.meta)
    if comment:
        ds.DoseComment = comment[:1024]
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.InstanceNumber = 1
    if structure_set is not None:
        _set_dvh_module(ds, structure_set, dvhs or [])
    _set_pixels(ds, q, 32, False)
    return _save(ds, Path(path))


def _dose_dataset(ref, description: str, series_number: int):
    """The RT Dose dataset's patient, study, series and frame of reference (from ``ref``)."""
    kw: dict = {"description": description, "series_number": series_number}
    if ref is not None:
        kw.update(study_uid=str(ref.get("StudyInstanceUID", "")) or None,
                  for_uid=str(ref.get("FrameOfReferenceUID", "")) or None,
                  patient={k: ref.get(k) for k in PATIENT_STUDY_TAGS if k in ref})
    ds = _new_dataset(RT_DOSE_STORAGE, "RTDOSE", **kw)
    ds.OperatorsName = ""
    return ds


def _sop_ref(sop_class: str, sop_instance: str, frame: int | None = None):
    from pydicom.dataset import Dataset

    it = Dataset()
    it.ReferencedSOPClassUID, it.ReferencedSOPInstanceUID = sop_class, sop_instance
    if frame is not None:
        it.ReferencedFrameNumber = int(frame)
    return it


def _dvh_bins(dvhs) -> float:
    """One dose bin width (Gy, DS) for every DVH: 1/1000 of the highest dose."""
    top = max((float(np.max(d.doses_gy)) for d in dvhs if len(d.doses_gy)), default=0.0)
    return float(ds_str(top / 1000.0)) if top > 0 else 1.0


def _set_dvh_module(ds, ref: StructureSetRef, dvhs) -> None:
    """RT DVH module (PS3.3 C.8.8.4): Referenced Structure Set Sequence and one cumulative
    DVH (volume in cm3 receiving at least each bin's lower dose) per referenced ROI."""
    from pydicom.dataset import Dataset

    items, width = [], _dvh_bins(dvhs)
    for d in dvhs:
        if d.name not in ref.roi_numbers or not len(d.doses_gy):
            continue
        doses = np.sort(np.asarray(d.doses_gy, dtype=np.float64))
        w = np.ones_like(doses) if d.weights is None else \
            np.asarray(d.weights, dtype=np.float64)[np.argsort(d.doses_gy, kind="stable")]
        vol_cm3 = np.cumsum(w[::-1])[::-1] * float(d.voxel_volume_ml)  # dose >= doses[i]
        nbins = int(np.floor(doses[-1] / width)) + 2
        lower = np.arange(nbins) * width
        at = np.searchsorted(doses, lower, side="left")
        volumes = np.where(at < len(doses), vol_cm3[np.minimum(at, len(doses) - 1)], 0.0)
        roi = Dataset()
        roi.ReferencedROINumber = int(ref.roi_numbers[d.name])
        roi.DVHROIContributionType = "INCLUDED"
        it = Dataset()
        it.DVHReferencedROISequence = [roi]
        it.DVHType, it.DoseUnits, it.DoseType = "CUMULATIVE", "GY", "PHYSICAL"
        it.DVHDoseScaling, it.DVHVolumeUnits = "1", "CM3"
        it.DVHNumberOfBins = nbins
        it.DVHData = [ds_str(v) for pair in zip([width] * nbins, volumes) for v in pair]
        it.DVHMinimumDose, it.DVHMaximumDose = ds_str(doses[0]), ds_str(doses[-1])
        it.DVHMeanDose = ds_str(float(np.sum(w * doses) / np.sum(w)))
        items.append(it)
    if not items:
        raise InputError("structure_set given, but none of the DVHs names one of its ROIs "
                         f"({sorted(ref.roi_numbers)}); the RT DVH module needs one or more")
    ds.ReferencedStructureSetSequence = [_sop_ref(RT_STRUCT_STORAGE, ref.sop_instance_uid)]
    ds.DVHSequence = items


def tissue_heterogeneity_correction(meta: dict) -> str:
    """(3004,0014) of a dose: WATER for a dose in water (density mode 'none' or absent),
    IMAGE when a CT-derived density entered it (modes 'scale' and 'mvs')."""
    mode = str((meta or {}).get("density_mode", "none")).lower()
    return "WATER" if mode in ("none", "") else "IMAGE"


def _reference_dataset(reference):
    import pydicom

    if reference is None:
        return None
    if isinstance(reference, pydicom.Dataset):
        return reference
    p = Path(reference)
    if p.is_dir():
        from .dicom_read import read_ct_header

        return read_ct_header(p).series.headers[0]
    try:
        return pydicom.dcmread(p, stop_before_pixels=True)
    except Exception as exc:
        raise InputError(f"reference {p}: not a readable DICOM file ({exc})") from None


# --------------------------------------------------------------------------- NM / CT
#: a tomographic acquisition as the NM TOMO Acquisition module records it: this many
#: projections over 360 degrees, each lasting frame_duration_s / this
NM_PROJECTIONS = 60


def _radiopharmaceutical(administration, total_dose_bq, nuclide):
    """One RadiopharmaceuticalInformationSequence item (NM Isotope module, C.8.4.10)."""
    from pydicom.dataset import Dataset

    rp = Dataset()
    if administration is not None:
        rp.RadiopharmaceuticalStartDateTime = administration.strftime("%Y%m%d%H%M%S.%f")
        rp.RadiopharmaceuticalStartTime = administration.strftime("%H%M%S.%f")
    if total_dose_bq is not None:
        rp.RadionuclideTotalDose = ds_str(total_dose_bq)
    rp.RadionuclideCodeSequence = []
    if nuclide:
        el, a = nuclide.split("-")
        code = Dataset()
        code.CodeValue = nuclide
        code.CodingSchemeDesignator = "99VOXDOSE"
        code.CodeMeaning = f"^{a}^{_ELEMENT_NAMES.get(el, el)}"
        rp.RadionuclideCodeSequence = [code]
    return rp


def _rotation(frame_duration_s: float | None) -> list:
    """RotationInformationSequence (NM TOMO Acquisition, C.8.4.12; Type 2: empty when the
    duration is unknown): one 360-degree rotation of NM_PROJECTIONS projections whose
    durations add up to ``frame_duration_s``."""
    from pydicom.dataset import Dataset

    if frame_duration_s is None:
        return []
    it = Dataset()
    it.StartAngle, it.AngularStep = "0", ds_str(360.0 / NM_PROJECTIONS)
    it.RotationDirection, it.ScanArc = "CW", "360"
    it.ActualFrameDuration = int(round(frame_duration_s * 1000.0 / NM_PROJECTIONS))
    it.NumberOfFramesInRotation = NM_PROJECTIONS
    return [it]


def _nm_base(q_scale: float, *, units, acquisition, decay_correction, rp, uids: dict,
             patient: dict, description: str):
    """The NM dataset's attributes shared by the multi-frame and per-slice layouts."""
    ds = _new_dataset(NM_IMAGE_STORAGE, "NM", when=acquisition, description=description,
                      patient=patient, **uids)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
    ds.AcquisitionDate = acquisition.strftime("%Y%m%d")
    ds.AcquisitionTime = acquisition.strftime("%H%M%S.%f")
    ds.Units = units
    ds.DecayCorrection = decay_correction
    ds.RescaleSlope = ds_str(q_scale)
    ds.RescaleIntercept = "0"
    ds.PatientOrientationCodeSequence = []
    ds.PatientGantryRelationshipCodeSequence = []
    ds.AcquisitionContextSequence = []
    ds.InstanceNumber = 1
    ds.CountsAccumulated = ""
    ds.NumberOfEnergyWindows = ds.NumberOfDetectors = ds.NumberOfRotations = 1
    ds.EnergyWindowInformationSequence = []
    ds.RadiopharmaceuticalInformationSequence = [rp]
    return ds


def write_nm(path, values: np.ndarray, grid: Grid, *, units: str = "BQML",
             acquisition: datetime, administration: datetime | None, nuclide: str | None,
             total_dose_bq: float | None = None, decay_correction: str = "NONE",
             frame_duration_s: float | None = None, patient_id: str = "VOXDOSE",
             study_uid: str | None = None, for_uid: str | None = None,
             description: str = "SPECT recon", multiframe: bool = True,
             patient: dict | None = None, series_number: int = 1,
             body_part: str | None = None) -> list[Path]:
    """A reconstructed NM volume (values in ``units``) as DICOM: one multi-frame NM Image
    (RECON TOMO; frames along SliceVector, geometry in DetectorInformationSequence; the
    frame duration as a rotation of NM_PROJECTIONS projections), or one file per slice
    (``multiframe=False``, ImagePositionPatient and ActualFrameDuration at the top level, a
    vendor layout voxdose reads) in folder ``path``."""
    from pydicom.uid import generate_uid

    q, scale = quantise(values, 16)
    uids = {"patient_id": patient_id, "study_uid": study_uid or generate_uid(),
            "series_uid": generate_uid(), "for_uid": for_uid or generate_uid(),
            "series_number": series_number, "body_part": body_part}
    kw = {"units": units, "acquisition": acquisition, "decay_correction": decay_correction,
          "rp": _radiopharmaceutical(administration, total_dose_bq, nuclide), "uids": uids,
          "patient": patient, "description": description}
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if multiframe:
        ds = _nm_base(scale, **kw)
        order = _nm_multiframe_geometry(ds, grid, frame_duration_s)
        _set_pixels(ds, q[order], 16, False)
        return [_save(ds, path / "NM000001.dcm")]
    out = []
    for z in range(grid.shape[0]):
        ds = _nm_base(scale, **kw)
        _set_image_plane(ds, grid, z)
        ds.InstanceNumber = z + 1
        ds.SliceThickness = ds_str(abs(_plane_geometry(grid)[3]))
        if frame_duration_s is not None:
            ds.ActualFrameDuration = int(round(frame_duration_s * 1000))
        _set_pixels(ds, q[z], 16, False)
        out.append(_save(ds, path / f"NM{z + 1:06d}.dcm"))
    return out


def _nm_multiframe_geometry(ds, grid: Grid, frame_duration_s) -> list[int]:
    """NM Multi-frame, Detector, TOMO Acquisition and Reconstruction attributes of a
    multi-frame RECON TOMO image; returns the slice order of its frames (along +normal:
    a grid whose z runs against the normal is stored reversed)."""
    from pydicom.dataset import Dataset

    r, c, _, step = _plane_geometry(grid)
    _set_image_plane(ds, grid, 0)
    nz = grid.shape[0]
    det = Dataset()
    det.CollimatorType = ""
    det.FocalDistance = ""
    det.ImageOrientationPatient = ds.ImageOrientationPatient
    det.ImagePositionPatient = [ds_str(v) for v in
                                grid.index_to_world([0 if step > 0 else nz - 1, 0, 0])]
    ds.DetectorInformationSequence = [det]
    del ds.ImagePositionPatient
    ds.PatientOrientation = [_orientation_letters(r), _orientation_letters(c)]
    ds.RotationInformationSequence = _rotation(frame_duration_s)
    ds.NumberOfFrames = ds.NumberOfSlices = nz
    ds.FrameIncrementPointer = 0x00540080
    ds.SliceVector = list(range(1, nz + 1))
    ds.SpacingBetweenSlices = ds_str(abs(step))
    ds.SliceThickness = ds_str(abs(step))
    return list(range(nz)) if step > 0 else list(range(nz - 1, -1, -1))


def write_ct(path, hu: np.ndarray, grid: Grid, *, patient_id: str = "VOXDOSE",
             study_uid: str | None = None, for_uid: str | None = None,
             when: datetime | None = None, description: str = "CT",
             patient: dict | None = None, series_number: int = 2,
             patient_position: str = "HFS", body_part: str | None = None) -> list[Path]:
    """A CT volume (HU) as one int16 file per slice in folder ``path`` (CT Image IOD; KVP
    unknown, so empty; ``patient_position`` HFS: head first, supine)."""
    from pydicom.uid import generate_uid

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    _plane_geometry(grid)
    vals = np.clip(np.rint(np.asarray(hu, dtype=np.float64)), -32768, 32767)
    out = []
    for z in range(grid.shape[0]):
        ds = _new_dataset(CT_IMAGE_STORAGE, "CT", patient_id=patient_id, study_uid=study_uid,
                          series_uid=series_uid, for_uid=for_uid, when=when,
                          description=description, patient=patient,
                          series_number=series_number, body_part=body_part)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientPosition = patient_position
        _set_image_plane(ds, grid, z)
        ds.InstanceNumber = z + 1
        ds.AcquisitionNumber = 1
        ds.KVP = ""
        ds.SliceThickness = ds_str(grid.spacing_mm[0])
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "1", "0", "HU"
        _set_pixels(ds, vals[z], 16, True)
        out.append(_save(ds, path / f"CT{z + 1:06d}.dcm"))
    return out


# --------------------------------------------------------------------------- RTSTRUCT
#: RT Referenced Study Sequence item class (Detached Study Management, as planning systems
#: write it)
_STUDY_REF_CLASS = "1.2.840.10008.3.1.2.3.1"
_COLOURS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
            (0, 128, 128), (170, 110, 40), (128, 0, 0), (128, 128, 0), (0, 0, 128))


def write_rtstruct(path, rois: dict[str, list[np.ndarray]], *, for_uid: str,
                   patient_id: str = "VOXDOSE", study_uid: str | None = None,
                   series_ref=None, contour_refs: dict | None = None,
                   patient: dict | None = None, label: str = "voxdose",
                   series_number: int = 3, interpreted_types: dict | None = None) -> Path:
    """An RTSTRUCT: ``rois`` maps a name to closed planar contours, each (n, 3) LPS mm.

    series_ref : the image series drawn on (``rtstruct_write.SeriesRef``): referenced in
        ReferencedFrameOfReferenceSequence with every slice; ``contour_refs`` (name -> one
        ``ImageRef`` per contour) fills each contour's ContourImageSequence.
    interpreted_types : name -> RTROIInterpretedType (default ORGAN).
    """
    from pydicom.dataset import Dataset

    ds = _new_dataset(RT_STRUCT_STORAGE, "RTSTRUCT", patient_id=patient_id,
                      study_uid=study_uid, for_uid=for_uid, description="structures",
                      patient=patient, series_number=series_number, content=False)
    ds.OperatorsName = ""
    ds.StructureSetLabel = label[:16]
    ds.StructureSetDate, ds.StructureSetTime = ds.SeriesDate, ds.SeriesTime
    fr = Dataset()
    fr.FrameOfReferenceUID = for_uid
    if series_ref is not None:
        fr.RTReferencedStudySequence = [_study_ref(series_ref)]
    ds.ReferencedFrameOfReferenceSequence = [fr]
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = \
        _roi_sequences(rois, for_uid, contour_refs or {}, interpreted_types or {})
    return _save(ds, Path(path))


def _study_ref(series_ref):
    """RT Referenced Study Sequence item: the study, its series, every image (slice)."""
    from pydicom.dataset import Dataset

    se = Dataset()
    se.SeriesInstanceUID = series_ref.series_uid
    se.ContourImageSequence = [_sop_ref(r.sop_class_uid, r.sop_instance_uid, r.frame)
                               for r in series_ref.slices]
    st = Dataset()
    st.ReferencedSOPClassUID, st.ReferencedSOPInstanceUID = _STUDY_REF_CLASS, \
        series_ref.study_uid
    st.RTReferencedSeriesSequence = [se]
    return st


def _roi_sequences(rois, for_uid, contour_refs, interpreted_types):
    """StructureSetROISequence, ROIContourSequence and RTROIObservationsSequence items."""
    from pydicom.dataset import Dataset

    roi_seq, contour_seq, obs_seq = [], [], []
    for i, (name, contours) in enumerate(rois.items(), start=1):
        r = Dataset()
        r.ROINumber, r.ReferencedFrameOfReferenceUID, r.ROIName = i, for_uid, name
        r.ROIGenerationAlgorithm = "AUTOMATIC" if contour_refs else "MANUAL"
        roi_seq.append(r)
        rc = Dataset()
        rc.ReferencedROINumber = i
        rc.ROIDisplayColor = list(_COLOURS[(i - 1) % len(_COLOURS)])
        items, refs = [], contour_refs.get(name)
        for k, pts in enumerate(contours):
            pts = np.asarray(pts, dtype=np.float64)
            ct = Dataset()
            if refs:
                ref = refs[k]
                ct.ContourImageSequence = [_sop_ref(ref.sop_class_uid, ref.sop_instance_uid,
                                                    ref.frame)]
            ct.ContourGeometricType = "CLOSED_PLANAR"
            ct.NumberOfContourPoints = len(pts)
            ct.ContourNumber = k + 1
            ct.ContourData = [ds_str(v) for v in pts.ravel()]
            items.append(ct)
        if items:
            rc.ContourSequence = items
        contour_seq.append(rc)
        ob = Dataset()
        ob.ObservationNumber, ob.ReferencedROINumber = i, i
        ob.RTROIInterpretedType = interpreted_types.get(name, "ORGAN")
        ob.ROIInterpreter = ""
        obs_seq.append(ob)
    return roi_seq, contour_seq, obs_seq
