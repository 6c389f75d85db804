"""DICOM output: RT Dose (the product's dose export) and NM / CT / RTSTRUCT writers.

``write_rt_dose`` is what users get: a multi-frame RT Dose object that 3D Slicer, MIM and
pydicom open, on voxdose's grid (LPS mm; arrays [z, y, x]), in the CT's frame of reference
when a reference CT is given. The NM, CT and RTSTRUCT writers exist to export the synthetic
study as DICOM (so the DICOM input path is tested end to end) and for tests; they write the
tags voxdose's reader needs, not every tag of the IODs.

All writes are atomic (temporary file + rename).
"""

from __future__ import annotations

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


def ds_str(v: float) -> str:
    """A decimal string (DS, at most 16 characters) with 10 significant digits."""
    s = f"{float(v):.10g}"
    return "0" if s == "-0" else s


def _new_dataset(sop_class: str, modality: str, *, patient_id: str = "VOXDOSE",
                 patient_name: str = "voxdose^phantom", study_uid: str | None = None,
                 series_uid: str | None = None, for_uid: str | None = None,
                 when: datetime | None = None, description: str = ""):
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
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.FrameOfReferenceUID = for_uid or generate_uid()
    ds.SeriesDescription = description
    ds.Manufacturer = "voxdose"
    when = when or datetime.now()
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = when.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = when.strftime("%H%M%S.%f")
    return ds


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
def write_rt_dose(path, dose_image: Image, reference=None, *, series_description: str =
                  "voxdose absorbed dose", summation: str = "PLAN", comment: str = "") -> Path:
    """Write a dose image (Gy) as a DICOM RT Dose file, atomically.

    reference : None, a DICOM CT folder/file path, or a pydicom Dataset of the reference CT:
        FrameOfReferenceUID, StudyInstanceUID and the patient module are copied from it so
        the dose overlays the CT in a viewer. Without one, new UIDs are made.
    Stored as uint32 with DoseGridScaling = max / (2^32 - 1) (10 significant digits), so
    every voxel above 1e-7 of the maximum is reproduced within 0.1 %.
    """
    from ..core.backend import to_numpy

    dose = np.asarray(to_numpy(dose_image.data), dtype=np.float64)
    grid = dose_image.grid
    q, scale = quantise(dose, 32)
    ref = _reference_dataset(reference)
    kw = {}
    if ref is not None:
        kw = {"patient_id": str(ref.get("PatientID", "")),
              "patient_name": str(ref.get("PatientName", "")),
              "study_uid": str(ref.get("StudyInstanceUID", "")) or None,
              "for_uid": str(ref.get("FrameOfReferenceUID", "")) or None}
    ds = _new_dataset(RT_DOSE_STORAGE, "RTDOSE", description=series_description, **kw)
    if ref is not None:
        for k in ("PatientBirthDate", "PatientSex", "StudyID", "StudyDate", "StudyTime",
                  "AccessionNumber", "ReferringPhysicianName"):
            if k in ref:
                setattr(ds, k, ref.get(k))
    _set_image_plane(ds, grid, 0)
    step = _plane_geometry(grid)[3]
    ds.NumberOfFrames = int(grid.shape[0])
    ds.FrameIncrementPointer = 0x3004000C  # GridFrameOffsetVector
    ds.GridFrameOffsetVector = [ds_str(k * step) for k in range(grid.shape[0])]
    ds.SliceThickness = ds_str(grid.spacing_mm[0])
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = summation
    ds.DoseGridScaling = ds_str(scale)
    ds.TissueHeterogeneityCorrection = tissue_heterogeneity_correction(dose_image.meta)
    ds.SeriesNumber = 1
    if comment:
        ds.DoseComment = comment[:1024]
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.InstanceNumber = 1
    ds.PositionReferenceIndicator = ""
    _set_pixels(ds, q, 32, False)
    return _save(ds, Path(path))


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
def write_nm(path, values: np.ndarray, grid: Grid, *, units: str = "BQML",
             acquisition: datetime, administration: datetime | None, nuclide: str | None,
             total_dose_bq: float | None = None, decay_correction: str = "NONE",
             frame_duration_s: float | None = None, patient_id: str = "VOXDOSE",
             study_uid: str | None = None, for_uid: str | None = None,
             description: str = "SPECT recon", multiframe: bool = True) -> list[Path]:
    """A reconstructed NM volume (values in ``units``) as DICOM: one multi-frame file
    (frames along SliceVector, geometry in DetectorInformationSequence), or one file per
    slice (``multiframe=False``, ImagePositionPatient per file) in folder ``path``."""
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    q, scale = quantise(values, 16)
    series_uid = generate_uid()
    study_uid = study_uid or generate_uid()
    for_uid = for_uid or generate_uid()

    def base():
        ds = _new_dataset(NM_IMAGE_STORAGE, "NM", patient_id=patient_id, study_uid=study_uid,
                          series_uid=series_uid, for_uid=for_uid, when=acquisition,
                          description=description)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
        ds.AcquisitionDate = acquisition.strftime("%Y%m%d")
        ds.AcquisitionTime = acquisition.strftime("%H%M%S.%f")
        ds.Units = units
        ds.DecayCorrection = decay_correction
        ds.RescaleSlope = ds_str(scale)
        ds.RescaleIntercept = "0"
        if frame_duration_s is not None:
            ds.ActualFrameDuration = int(round(frame_duration_s * 1000))
        rp = Dataset()
        if administration is not None:
            rp.RadiopharmaceuticalStartDateTime = administration.strftime("%Y%m%d%H%M%S.%f")
            rp.RadiopharmaceuticalStartTime = administration.strftime("%H%M%S.%f")
        if total_dose_bq is not None:
            rp.RadionuclideTotalDose = ds_str(total_dose_bq)
        if nuclide:
            el, a = nuclide.split("-")
            code = Dataset()
            code.CodeValue = nuclide
            code.CodingSchemeDesignator = "99VOXDOSE"
            code.CodeMeaning = f"^{a}^{_ELEMENT_NAMES.get(el, el)}"
            rp.RadionuclideCodeSequence = [code]
        ds.RadiopharmaceuticalInformationSequence = [rp]
        return ds

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    step = _plane_geometry(grid)[3]
    if multiframe:
        ds = base()
        _set_image_plane(ds, grid, 0)
        det = Dataset()
        det.ImagePositionPatient = ds.ImagePositionPatient
        det.ImageOrientationPatient = ds.ImageOrientationPatient
        ds.DetectorInformationSequence = [det]
        del ds.ImagePositionPatient
        nz = grid.shape[0]
        # frames along +normal; a grid whose z runs against the normal is stored reversed
        order = range(nz) if step > 0 else range(nz - 1, -1, -1)
        if step < 0:
            det.ImagePositionPatient = [ds_str(v) for v in grid.index_to_world([nz - 1, 0, 0])]
        ds.NumberOfFrames = nz
        ds.NumberOfSlices = nz
        ds.FrameIncrementPointer = 0x00540080
        ds.SliceVector = list(range(1, nz + 1))
        ds.SpacingBetweenSlices = ds_str(abs(step))
        ds.SliceThickness = ds_str(abs(step))
        _set_pixels(ds, q[list(order)], 16, False)
        return [_save(ds, path / "NM000001.dcm")]
    out = []
    for z in range(grid.shape[0]):
        ds = base()
        _set_image_plane(ds, grid, z)
        ds.InstanceNumber = z + 1
        ds.SliceThickness = ds_str(abs(step))
        _set_pixels(ds, q[z], 16, False)
        out.append(_save(ds, path / f"NM{z + 1:06d}.dcm"))
    return out


def write_ct(path, hu: np.ndarray, grid: Grid, *, patient_id: str = "VOXDOSE",
             study_uid: str | None = None, for_uid: str | None = None,
             when: datetime | None = None, description: str = "CT") -> list[Path]:
    """A CT volume (HU) as one int16 file per slice in folder ``path``."""
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
                          description=description)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        _set_image_plane(ds, grid, z)
        ds.InstanceNumber = z + 1
        ds.SliceThickness = ds_str(grid.spacing_mm[0])
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "1", "0", "HU"
        _set_pixels(ds, vals[z], 16, True)
        out.append(_save(ds, path / f"CT{z + 1:06d}.dcm"))
    return out


def write_rtstruct(path, rois: dict[str, list[np.ndarray]], *, for_uid: str,
                   patient_id: str = "VOXDOSE", study_uid: str | None = None) -> Path:
    """An RTSTRUCT: ``rois`` maps a name to closed planar contours, each (n, 3) LPS mm."""
    from pydicom.dataset import Dataset

    ds = _new_dataset(RT_STRUCT_STORAGE, "RTSTRUCT", patient_id=patient_id,
                      study_uid=study_uid, for_uid=for_uid, description="structures")
    ds.StructureSetLabel = "voxdose"
    fr = Dataset()
    fr.FrameOfReferenceUID = for_uid
    ds.ReferencedFrameOfReferenceSequence = [fr]
    roi_seq, contour_seq, obs_seq = [], [], []
    for i, (name, contours) in enumerate(rois.items(), start=1):
        r = Dataset()
        r.ROINumber, r.ReferencedFrameOfReferenceUID, r.ROIName = i, for_uid, name
        r.ROIGenerationAlgorithm = "MANUAL"
        roi_seq.append(r)
        rc = Dataset()
        rc.ReferencedROINumber = i
        rc.ROIDisplayColor = [255, 0, 0]
        items = []
        for pts in contours:
            pts = np.asarray(pts, dtype=np.float64)
            ct = Dataset()
            ct.ContourGeometricType = "CLOSED_PLANAR"
            ct.NumberOfContourPoints = len(pts)
            ct.ContourData = [ds_str(v) for v in pts.ravel()]
            items.append(ct)
        rc.ContourSequence = items
        contour_seq.append(rc)
        ob = Dataset()
        ob.ObservationNumber, ob.ReferencedROINumber = i, i
        ob.RTROIInterpretedType = "ORGAN"
        obs_seq.append(ob)
    ds.StructureSetROISequence = roi_seq
    ds.ROIContourSequence = contour_seq
    ds.RTROIObservationsSequence = obs_seq
    return _save(ds, Path(path))
