"""DICOM input: find series in a folder, read quantitative SPECT/PET and CT with their geometry.

What is read (tags named as in PS3.3):

* series are found recursively and grouped by SeriesInstanceUID (0020,000E); files that are
  not DICOM are skipped, DICOM files that cannot be parsed are an error naming the file;
* SPECT/PET (Modality NM or PT): single-frame files (one slice each, ImagePositionPatient per
  file), NM multi-frame (frames indexed by SliceVector (0054,0080); position and orientation
  from DetectorInformationSequence (0054,0022) or the top level; slice step
  SpacingBetweenSlices (0018,0088), else SliceThickness (0018,0050)) and enhanced
  multi-frame objects (per-frame PlanePositionSequence);
* pixel values: RealWorldValueMappingSequence (0040,9096) in Bq/mL when present (vendors'
  quantitative mapping), else RescaleSlope/Intercept (0028,1053/1052) per file or frame, and
  Philips' activity-concentration scale factor (7053,1009) for PET in CNTS;
* Units (0054,1001): BQML or CNTS; DecayCorrection (0054,1102): NONE, START or ADMIN with
  its reference time (DecayCorrectionDateTime (0018,9701), else SeriesDate/Time for START,
  the radiopharmaceutical start for ADMIN);
* acquisition date/time, RadiopharmaceuticalInformationSequence (0054,0016): start
  date/time, RadionuclideTotalDose, RadionuclideCodeSequence (nuclide), frame duration
  (ActualFrameDuration (0018,1242), or per-projection duration x NumberOfFramesInRotation).

What is refused, named for what it is (:func:`spect_series_problem`, before any geometry is
read): SPECT projections (ImageType TOMO / GATED TOMO, or an AngularViewVector, or frame
counts that are windows x detectors x views, without a RECON ImageType); planar NM images
(ImageType STATIC / WHOLE BODY / DYNAMIC / GATED); Secondary Capture pictures with Modality
NM or PT; a single image (one file, one frame); several energy windows, detectors, phases,
rotations or time slots in one object (a frame-index vector with more than one value);
for CT a localizer, a Secondary Capture or a single image (:func:`ct_series_problem`).
Among several series in a folder the refused ones are left out before one is chosen.

Nothing is guessed: a tag that is needed and missing is a :class:`StudyError` naming the
tag, the file, and the study-file key that can supply the value instead.
Date/times are read as naive local times (a UTC offset suffix is dropped); DA values in the
legacy ACR-NEMA form ``yyyy.mm.dd`` (PS3.5 6.2) and TM values with colons are read. A date
that cannot be parsed is kept as a problem of the header (``SpectHeader.date_problems``)
and is an error only where the value is needed (``study/dicom_keys.py``): an acquisition
time never when ``time_h`` is given, a start time never when
``study.administration_datetime`` is.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from ..core.errors import StudyError
from ..core.grid import Grid, Image
from ..core.nuclide import canonical_name

SPECT_MODALITIES = ("NM", "PT")
BQML_CODES = {"bq/ml", "bqml", "bq/cc", "bq/cm3"}
_ELEMENTS = {
    "actinium": "Ac", "astatine": "At", "bismuth": "Bi", "carbon": "C", "copper": "Cu",
    "erbium": "Er", "fluorine": "F", "gallium": "Ga", "holmium": "Ho", "indium": "In",
    "iodine": "I", "lead": "Pb", "lutetium": "Lu", "radium": "Ra", "rhenium": "Re",
    "samarium": "Sm", "scandium": "Sc", "strontium": "Sr", "technetium": "Tc",
    "terbium": "Tb", "thallium": "Tl", "thorium": "Th", "yttrium": "Y", "zirconium": "Zr",
}


def _dicom():
    import pydicom  # imported lazily: NIfTI-only studies never need it

    return pydicom


# --------------------------------------------------------------------------- scanning
@dataclass(frozen=True, eq=False)
class SeriesFiles:
    """One series: header-only datasets (pixel data not loaded) and their files."""

    uid: str
    modality: str
    description: str
    files: tuple[Path, ...]
    headers: tuple = field(repr=False)
    #: file-level problems found while scanning leniently (``scan_folder(problems=[])``)
    problems: tuple[str, ...] = ()

    def label(self) -> str:
        d = f" '{self.description}'" if self.description else ""
        return f"{self.modality}{d} ({len(self.files)} file(s), SeriesInstanceUID {self.uid})"


def scan_folder(folder, problems: list | None = None) -> list[SeriesFiles]:
    """Every DICOM series under ``folder`` (recursively), grouped by SeriesInstanceUID.

    By default a DICOM file that cannot be parsed, has no SeriesInstanceUID or is truncated
    is an error. With a list ``problems`` (``voxdose dicom-info``) the scan goes on: an
    unparseable file or one without a series is appended to it as (path, message) and left
    out; a truncated file stays in its series, whose ``problems`` name it."""
    pydicom = _dicom()
    from pydicom.errors import InvalidDicomError

    folder = Path(folder)
    paths = [folder] if folder.is_file() else sorted(
        Path(root) / f for root, _, files in os.walk(folder) for f in files)
    groups: dict[str, list] = {}
    series_problems: dict[str, list[str]] = {}
    for p in paths:
        if p.name.upper() == "DICOMDIR" or p.name.startswith("."):
            continue
        try:
            ds = pydicom.dcmread(p, defer_size=1024)  # large values: only offsets read
        except InvalidDicomError:
            continue  # not DICOM (a sidecar, a README, ...)
        except Exception as exc:  # truncated or corrupt
            msg = (f"{p}: cannot read this DICOM file ({type(exc).__name__}: "
                   f"{str(exc)[:100]}); is it truncated? remove or replace it")
            if problems is None:
                raise StudyError(msg) from None
            problems.append((p, msg))
            continue
        uid = str(ds.get("SeriesInstanceUID", ""))
        if not uid:
            msg = (f"{p}: SeriesInstanceUID (0020,000E) is missing; every DICOM file must "
                   "belong to a series")
            if problems is None:
                raise StudyError(msg)
            problems.append((p, msg))
            continue
        try:
            _check_pixel_bytes(p, ds)
        except StudyError as exc:
            if problems is None:
                raise
            series_problems.setdefault(uid, []).append(str(exc))
        groups.setdefault(uid, []).append((p, ds))
    out = []
    for uid, items in groups.items():
        ds0 = items[0][1]
        out.append(SeriesFiles(uid, str(ds0.get("Modality", "")),
                               str(ds0.get("SeriesDescription", "")),
                               tuple(p for p, _ in items), tuple(d for _, d in items),
                               tuple(series_problems.get(uid, ()))))
    return out


def _check_pixel_bytes(p: Path, ds) -> None:
    """Catch truncated files before any work: the pixel data must fit in the file and, when
    uncompressed, hold Rows x Columns x frames values."""
    el = ds.get_item((0x7FE0, 0x0010)) if (0x7FE0, 0x0010) in ds else None
    if el is None:
        return
    length = getattr(el, "length", None)
    value = getattr(el, "value", None)
    undefined = length == 0xFFFFFFFF
    if value is None and not undefined and hasattr(el, "value_tell") and \
            el.value_tell + length > os.path.getsize(p):
        raise StudyError(f"{p}: the file ends inside its pixel data: truncated; copy it again "
                         "from the archive")
    if "Rows" not in ds or undefined or ds.file_meta.get("TransferSyntaxUID") is None or \
            ds.file_meta.TransferSyntaxUID.is_compressed:
        return
    n = (int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames", 1) or 1)
         * int(ds.get("SamplesPerPixel", 1)) * int(ds.get("BitsAllocated", 16)) // 8)
    have = length if value is None else len(value)
    if have < n:
        raise StudyError(f"{p}: pixel data hold {have} bytes but {ds.Rows}x{ds.Columns}"
                         f"x{ds.get('NumberOfFrames', 1)} values need {n}: truncated; copy it "
                         "again from the archive")


def select_series(folder, modalities: tuple[str, ...], uid: str | None, key: str,
                  study_path=None) -> SeriesFiles:
    """The one series of ``modalities`` in ``folder`` (or the one with ``uid``). Among
    several, those :func:`series_problem` refuses (projections, planar images, localizers,
    ...) are left out, then reconstructions (ImageType RECON, or PT) are preferred."""
    where = f"{study_path}: " if study_path else ""
    series = [s for s in scan_folder(folder) if s.modality in modalities]
    if uid:
        series = [s for s in series if s.uid == uid]
        if not series:
            raise StudyError(f"{where}'{key}' = {folder}: no {'/'.join(modalities)} series "
                             f"with SeriesInstanceUID {uid}")
    if len(series) > 1:
        usable = [s for s in series if series_problem(s) is None]
        if not usable:
            listing = "; ".join(f"{s.label()}: {_first_clause(series_problem(s))}"
                                for s in series)
            raise StudyError(f"{where}'{key}' = {folder} holds {len(series)} "
                             f"{'/'.join(modalities)} series and none can be read: {listing}")
        series = usable
    if len(series) > 1 and "NM" in modalities:  # prefer reconstructions
        recon = [s for s in series if s.modality == "PT" or
                 "RECON" in " ".join(_image_type(s.headers[0]))]
        series = recon or series
    if not series:
        raise StudyError(f"{where}'{key}' = {folder}: no DICOM {'/'.join(modalities)} series "
                         "found in this folder (searched recursively)")
    if len(series) > 1:
        listing = "; ".join(s.label() for s in series)
        raise StudyError(f"{where}'{key}' = {folder} holds {len(series)} "
                         f"{'/'.join(modalities)} series: {listing}; choose one with "
                         f"'{key}_series_uid = \"...\"'")
    s = series[0]
    _check_one_patient(s, f"{where}'{key}' = {folder}")
    return s


def _check_one_patient(s: SeriesFiles, where: str) -> None:
    pids = {str(d.get("PatientID", "")) for d in s.headers}
    if len(pids) > 1:
        raise StudyError(f"{where}: series {s.uid} mixes patients "
                         f"{sorted(pids)} (PatientID (0010,0020)); split the folder")


def _first_clause(msg: str | None) -> str:
    """The start of a problem message, up to its first ';'."""
    return (msg or "").split(";")[0]


# --------------------------------------------------------------------------- what a series is
#: Secondary Capture SOP classes (1.2.840.10008.5.1.4.1.1.7 and the multi-frame .7.1-.7.4):
#: pictures, not quantitative volumes
_SECONDARY_CAPTURE = re.compile(r"1\.2\.840\.10008\.5\.1\.4\.1\.1\.7(\.\d+)?")
#: NM ImageType (0008,0008) value 3 (PS3.3 C.8.4.7.1.1)
_NM_PROJECTIONS = {"TOMO", "GATED TOMO"}
_NM_PLANAR = {"STATIC", "DYNAMIC", "GATED", "WHOLE BODY"}
#: NM frame-index vectors besides SliceVector (PS3.3 C.8.4.8): more than one distinct value
#: means the frames are several images (windows, heads, ...), not the slices of one volume
_NM_VECTORS = (
    ("EnergyWindowVector", "(0054,0010)", "energy windows", "energy window"),
    ("DetectorVector", "(0054,0020)", "detectors", "detector"),
    ("PhaseVector", "(0054,0030)", "phases", "phase"),
    ("RotationVector", "(0054,0050)", "rotations", "rotation"),
    ("RRIntervalVector", "(0054,0060)", "R-R intervals", "R-R interval"),
    ("TimeSlotVector", "(0054,0070)", "time slots", "time slot"),
    ("TimeSliceVector", "(0054,0100)", "time slices", "time slice"),
)


def _image_type(ds) -> list[str]:
    it = ds.get("ImageType")
    if it is None or it == "":
        return []
    vals = [it] if isinstance(it, str) else list(it)
    return [str(v).strip().upper() for v in vals]


def _distinct(ds, keyword: str) -> int:
    """How many different values a frame-index vector holds (0: absent)."""
    v = ds.get(keyword)
    if v is None or v == "":
        return 0
    vals = [v] if isinstance(v, (int, float, str)) else list(v)
    try:
        return len({int(x) for x in vals})
    except (TypeError, ValueError):
        return len({str(x) for x in vals})


def _int_tag(ds, keyword: str) -> int:
    try:
        return int(ds.get(keyword) or 0)
    except (TypeError, ValueError):
        return 0


def _n_frames(ds) -> int:
    return max(_int_tag(ds, "NumberOfFrames"), 1)


def _projection_counts(ds) -> tuple[list[str], int]:
    """(['6 energy windows', '2 detectors', '30 views per rotation'], their product) from
    NumberOfEnergyWindows, NumberOfDetectors, NumberOfRotations and the rotation's
    NumberOfFramesInRotation (or the distinct AngularViewVector values)."""
    parts, prod = [], 1
    for kw, what in (("NumberOfEnergyWindows", "energy windows"),
                     ("NumberOfDetectors", "detectors"), ("NumberOfRotations", "rotations")):
        n = _int_tag(ds, kw)
        if n > 1:
            parts.append(f"{n} {what}")
        prod *= max(n, 1)
    rot = ds.get("RotationInformationSequence")
    views = _int_tag(rot[0], "NumberOfFramesInRotation") if rot else 0
    views = views or _distinct(ds, "AngularViewVector")
    if views:
        parts.append(f"{views} views per rotation")
    return parts, prod * views if views else 0


def series_problem(s: SeriesFiles) -> str | None:
    """Why series ``s`` cannot be a voxdose input, named for what it is: for NM/PT
    :func:`spect_series_problem`, for CT :func:`ct_series_problem`; None otherwise."""
    if s.modality in SPECT_MODALITIES:
        return spect_series_problem(s)
    if s.modality == "CT":
        return ct_series_problem(s)
    return None


def spect_series_problem(s: SeriesFiles) -> str | None:
    """Why NM/PT series ``s`` is not a tomographic reconstruction (projections, a planar
    image, a Secondary Capture, a single image, several energy windows or other images in
    one object), or None. Only tags are looked at, before any geometry; the message starts
    with what the series is."""
    ds0 = s.headers[0]
    sop = str(ds0.get("SOPClassUID", "") or
              (getattr(ds0, "file_meta", None) or {}).get("MediaStorageSOPClassUID", ""))
    if _SECONDARY_CAPTURE.fullmatch(sop):
        return (f"a Secondary Capture image (SOP Class UID {sop}) with Modality "
                f"{s.modality}: a planar picture (e.g. a whole-body scan or a screen "
                "capture), not a tomographic reconstruction; export the reconstructed "
                f"{'SPECT' if s.modality == 'NM' else 'PET'} volume")
    if s.modality == "NM":
        problem = _nm_problem(s, ds0)
        if problem:
            return problem
    if sum(_n_frames(d) for d in s.headers) == 1:
        kind = "a planar image or a single slice" if s.modality == "NM" else "a single slice"
        return (f"a single image (1 file, 1 frame): {kind}, not a tomographic volume; export "
                "the whole reconstructed volume")
    return None


def _nm_problem(s: SeriesFiles, ds0) -> str | None:
    it = _image_type(ds0)
    v3 = it[2] if len(it) > 2 else ""
    recon = any("RECON" in v for v in it)
    nf = _n_frames(ds0)
    parts, prod = _projection_counts(ds0)
    counts = f"; {nf} frames: {', '.join(parts)}" if parts else ""
    why = None
    if v3 in _NM_PROJECTIONS:
        why = f"ImageType (0008,0008) value 3 '{v3}'"
        if "SliceVector" in ds0 and not _distinct(ds0, "AngularViewVector"):
            why += (", although the frames are indexed by SliceVector (0054,0080): if this "
                    "is a reconstruction, its ImageType value 3 must be RECON TOMO")
    elif not recon and _distinct(ds0, "AngularViewVector") > 1:
        why = (f"AngularViewVector (0054,0090) holds {_distinct(ds0, 'AngularViewVector')} "
               "views and ImageType does not say RECON")
    elif not recon and nf > 1 and "SliceVector" not in ds0 and prod == nf and \
            ds0.get("RotationInformationSequence"):
        why = ("the frame count is energy windows x detectors x rotations x views, no "
               "SliceVector (0054,0080) and ImageType does not say RECON")
    if why:
        windows = _distinct(ds0, "EnergyWindowVector")
        extra = (f"; {windows} energy windows in one object are not read either"
                 if windows > 1 else "")
        return (f"SPECT projections, not a reconstruction: reconstruct first ({why}"
                f"{counts}){extra}")
    if v3 in _NM_PLANAR:
        return (f"a planar NM image (ImageType (0008,0008) value 3 '{v3}'), not a "
                "tomographic reconstruction; voxdose needs a reconstructed SPECT volume "
                "(ImageType RECON TOMO)")
    for kw, tag, many, one in _NM_VECTORS:
        n = _distinct(ds0, kw)
        if n > 1:
            return (f"several {many} in one object ({kw} {tag} holds {n} values over {nf} "
                    f"frames), not one volume; export one reconstructed volume per {one}")
    return None


def ct_series_problem(s: SeriesFiles) -> str | None:
    """Why CT series ``s`` is not a tomographic volume (a localizer, a Secondary Capture, a
    single image), or None."""
    ds0 = s.headers[0]
    sop = str(ds0.get("SOPClassUID", ""))
    if _SECONDARY_CAPTURE.fullmatch(sop):
        return (f"a Secondary Capture image (SOP Class UID {sop}) with Modality CT: a "
                "picture, not a CT volume; export the CT series")
    if "LOCALIZER" in _image_type(ds0):
        return ("a CT localizer (scout view, ImageType (0008,0008) LOCALIZER), not a "
                "tomographic series; give the CT series")
    if sum(_n_frames(d) for d in s.headers) == 1:
        return "a single CT image (1 file, 1 frame), not a 3D volume; give the whole series"
    return None


# --------------------------------------------------------------------------- date / time
def parse_da_tm(da, tm) -> datetime | None:
    """DICOM DA + TM -> naive datetime; DA also in the legacy form 'yyyy.mm.dd' and TM
    with colons ('hh:mm:ss.frac'), both accepted by PS3.5 6.2 for older files."""
    if not da or not tm:
        return None
    return parse_dt(_da(da) + str(tm).strip().replace(":", ""))


def _da(da) -> str:
    s = str(da).strip()
    m = re.fullmatch(r"(\d{4})\.(\d{2})\.(\d{2})", s)  # ACR-NEMA 2.0 'yyyy.mm.dd'
    return "".join(m.groups()) if m else s


def parse_dt(dt) -> datetime | None:
    """DICOM DT 'YYYYMMDDHHMMSS.FFFFFF&ZZXX' (trailing parts optional) -> naive datetime."""
    if not dt:
        return None
    s = re.split(r"[+\-]", str(dt).strip().replace(":", ""), maxsplit=1)[0]
    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})(\d{2})?(\d{2})?(\d{2})?(\.\d+)?", s)
    if not m:
        raise ValueError(f"not a DICOM date/time: {dt!r}")
    y, mo, d, hh, mm, ss, frac = m.groups()
    out = datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0))
    return out + timedelta(seconds=float(frac or 0.0))


def _dt_or_problem(fn, what: str) -> tuple[datetime | None, str | None]:
    """(value, None), or (None, 'WHAT is not a valid DICOM date/time (...)') when the tags
    cannot be parsed; pydicom's own warnings about such values are silenced."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(), None
    except (ValueError, TypeError, OverflowError) as exc:
        return None, f"{what} is not a valid DICOM date/time ({exc})"


# --------------------------------------------------------------------------- geometry
def _orientation(ds, path: Path, src=None):
    src = src if src is not None else ds
    iop = src.get("ImageOrientationPatient")
    if iop is None:
        raise StudyError(f"{path}: ImageOrientationPatient (0020,0037) is missing; the image "
                         "cannot be placed in patient space")
    iop = np.array([float(v) for v in iop])
    r, c = iop[:3], iop[3:]
    if abs(np.linalg.norm(r) - 1) > 1e-3 or abs(np.linalg.norm(c) - 1) > 1e-3 or \
            abs(r @ c) > 1e-3:
        raise StudyError(f"{path}: ImageOrientationPatient (0020,0037) = {iop.tolist()} is not "
                         "two orthogonal unit vectors")
    return r / np.linalg.norm(r), c / np.linalg.norm(c)


def _pixel_spacing(ds, path: Path, src=None):
    src = src if src is not None else ds
    ps = src.get("PixelSpacing")
    if ps is None:
        raise StudyError(f"{path}: PixelSpacing (0028,0030) is missing")
    return float(ps[0]), float(ps[1])  # (between rows = along y, between columns = along x)


def _ipp(src, path: Path):
    ipp = src.get("ImagePositionPatient")
    if ipp is None:
        raise StudyError(f"{path}: ImagePositionPatient (0020,0032) is missing")
    return np.array([float(v) for v in ipp])


def grid_from_positions(positions: np.ndarray, r, c, dy: float, dx: float, rows: int,
                        cols: int, path: Path) -> tuple[Grid, np.ndarray]:
    """Grid from slice positions (any order). Returns the grid and the slice order."""
    n = np.cross(r, c)
    d = positions @ n
    order = np.argsort(d, kind="stable")
    p = positions[order]
    if len(p) > 1:
        steps = np.diff(p, axis=0)
        step = (p[-1] - p[0]) / (len(p) - 1)
        if np.any(np.linalg.norm(steps, axis=1) < 1e-6):
            raise StudyError(f"{path}: two slices share one ImagePositionPatient; the series "
                             "holds duplicates or several volumes")
        if np.max(np.linalg.norm(steps - step, axis=1)) > max(0.01, 1e-3 * np.linalg.norm(step)):
            raise StudyError(f"{path}: slices are not evenly spaced (steps "
                             f"{np.round(np.linalg.norm(steps, axis=1), 3).tolist()} mm); "
                             "missing slices? voxdose needs a regular grid")
        if np.linalg.norm(np.cross(step / np.linalg.norm(step), n)) > 1e-3:
            raise StudyError(f"{path}: slice positions are not along the slice normal (gantry "
                             "tilt / sheared grid); resample the series to a regular grid")
    else:
        raise StudyError(f"{path}: a single slice is not a 3D volume")
    a = np.eye(4)
    a[:3, 0] = step
    a[:3, 1] = c * dy
    a[:3, 2] = r * dx
    a[:3, 3] = p[0]
    return Grid((len(p), rows, cols), a), order


# --------------------------------------------------------------------------- SPECT / PET
@dataclass(frozen=True, eq=False)
class SpectHeader:
    """What voxdose needs from a quantitative SPECT/PET series (no pixel data)."""

    series: SeriesFiles
    grid: Grid
    units: str | None                     # 'BQML' | 'CNTS' | other tag value | None
    value_mapping: str                    # how stored values become ``units``
    decay_correction: str | None          # 'NONE' | 'START' | 'ADMIN' | None (tag absent)
    decay_reference: datetime | None
    acquisition: datetime | None
    administration: datetime | None
    administration_time_only: bool        # only RadiopharmaceuticalStartTime (no date) given
    nuclide: str | None                   # canonical name, e.g. 'Lu-177'
    total_dose_bq: float | None
    frame_duration_s: float | None
    patient_id: str
    frame_of_reference_uid: str
    # per output slice: (file index, frame index or None, slope, intercept)
    slices: tuple = field(repr=False)
    #: dates that could not be parsed: 'acquisition' | 'administration' | 'decay_reference'
    #: -> message; an error only where the value is needed (study/dicom_keys.py)
    date_problems: dict = field(default_factory=dict, repr=False)

    @property
    def first_file(self) -> Path:
        return self.series.files[0]


def _rwvm(ds):
    """(slope, intercept, unit code) of a Bq/mL real-world value mapping, or None."""
    seq = ds.get("RealWorldValueMappingSequence")
    if not seq:
        return None
    for item in seq:
        units = item.get("MeasurementUnitsCodeSequence")
        code = str(units[0].get("CodeValue", "")) if units else ""
        if code.lower() in BQML_CODES and "RealWorldValueSlope" in item:
            return float(item.RealWorldValueSlope), float(
                item.get("RealWorldValueIntercept", 0.0)), code
    return None


def _value_map(ds, units: str | None, path: Path):
    """(slope, intercept, units, description) turning stored values into ``units``."""
    rw = _rwvm(ds)
    if rw is not None:
        return rw[0], rw[1], "BQML", f"RealWorldValueMapping (0040,9096) in {rw[2]}"
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    icpt = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    desc = "RescaleSlope/Intercept (0028,1053/1052)" if "RescaleSlope" in ds else \
        "stored values (no rescale tags)"
    philips = (0x7053, 0x1009)
    if units == "CNTS" and "PHILIPS" in str(ds.get("Manufacturer", "")).upper() and \
            philips in ds and ds[philips].value not in (None, b"", ""):
        try:
            f = float(ds[philips].value if not isinstance(ds[philips].value, bytes)
                      else ds[philips].value.decode().strip("\0 "))
        except ValueError:
            f = None
        if f and f > 0:
            return slope * f, icpt * f, "BQML", \
                "Philips activity-concentration scale factor (7053,1009) x rescale"
    return slope, icpt, units, desc


def nuclide_from_dataset(ds) -> str | None:
    """Canonical nuclide name from RadionuclideCodeSequence / Radionuclide, or None."""
    seq = ds.get("RadiopharmaceuticalInformationSequence")
    texts = []
    if seq:
        item = seq[0]
        codes = item.get("RadionuclideCodeSequence")
        if codes:
            texts += [str(codes[0].get("CodeMeaning", "")), str(codes[0].get("CodeValue", ""))]
        texts.append(str(item.get("Radionuclide", "")))
    texts.append(str(ds.get("Radionuclide", "")))
    for t in texts:
        name = _parse_nuclide_text(t)
        if name:
            return name
    return None


def _parse_nuclide_text(t: str) -> str | None:
    t = t.strip()
    if not t:
        return None
    m = re.fullmatch(r"\^?(\d{1,3})(m?)\^?\s*([A-Za-z]+)", t)         # ^177^Lutetium
    if not m:
        m2 = re.fullmatch(r"([A-Za-z]+)[\s\-]*(\d{1,3})(m?)", t)     # Lutetium-177, Lu-177
        if m2:
            m = (m2.group(2), m2.group(3), m2.group(1))
        else:
            return None
    else:
        m = m.groups()
    a, meta, el = m
    sym = _ELEMENTS.get(el.lower(), el if len(el) <= 2 else None)
    if sym is None:
        return None
    try:
        return canonical_name(f"{sym}-{a}{meta}")
    except Exception:
        return None


def _frame_duration_s(ds) -> float | None:
    if "ActualFrameDuration" in ds and ds.ActualFrameDuration not in (None, ""):
        return float(ds.ActualFrameDuration) / 1000.0
    rot = ds.get("RotationInformationSequence")
    if rot and "ActualFrameDuration" in rot[0] and "NumberOfFramesInRotation" in rot[0]:
        return float(rot[0].ActualFrameDuration) * int(rot[0].NumberOfFramesInRotation) / 1000.0
    return None


@dataclass(frozen=True, eq=False)
class SpectLayout:
    """What a layout reader finds: the grid, the value units and mapping, and per output
    slice (file index, frame index or None, slope, intercept)."""

    grid: Grid
    units: str | None
    value_mapping: str
    slices: tuple


def _units_tag(ds) -> str | None:
    return str(ds.get("Units", "")) or None


def _enhanced_item(shared, frames, name: str, path: Path):
    """``name``'s first item from the shared functional groups, else from frame 1's."""
    item = shared.get(name)[0] if shared and name in shared else None
    if item:
        return item
    seq = frames[0].get(name) if len(frames) else None
    if not seq:
        raise StudyError(f"{path}: {name} is in neither the shared nor the first per-frame "
                         "functional groups; the image cannot be placed in patient space")
    return seq[0]


def _read_enhanced(s: SeriesFiles, folder) -> SpectLayout:
    """Enhanced multi-frame object: per-frame PlanePositionSequence, shared or per-frame
    PixelMeasures / PlaneOrientation / PixelValueTransformation."""
    ds0, p0 = s.headers[0], s.files[0]
    if len(s.files) > 1:
        raise StudyError(f"{folder}: an enhanced multi-frame series in several files is "
                         "not supported; give one file per folder")
    shared = ds0.get("SharedFunctionalGroupsSequence", [None])[0]
    frames = ds0.PerFrameFunctionalGroupsSequence
    pm = _enhanced_item(shared, frames, "PixelMeasuresSequence", p0)
    po = _enhanced_item(shared, frames, "PlaneOrientationSequence", p0)
    r, c = _orientation(ds0, p0, po)
    dy, dx = _pixel_spacing(ds0, p0, pm)
    pos = np.array([_ipp(f.PlanePositionSequence[0], p0) for f in frames])
    info = []
    for f in frames:
        pvt = f.get("PixelValueTransformationSequence") or (
            shared.get("PixelValueTransformationSequence") if shared else None)
        sl = float(pvt[0].get("RescaleSlope", 1.0)) if pvt else 1.0
        ic = float(pvt[0].get("RescaleIntercept", 0.0)) if pvt else 0.0
        info.append((sl, ic))
    grid, order = grid_from_positions(pos, r, c, dy, dx, int(ds0.Rows), int(ds0.Columns), p0)
    _, _, units, mapping = _value_map(ds0, _units_tag(ds0), p0)
    return SpectLayout(grid, units, mapping, tuple((0, int(k), *info[k]) for k in order))


def _read_nm_multiframe(s: SeriesFiles, folder) -> SpectLayout:
    """NM multi-frame reconstruction: frames along SliceVector from one position (top level
    or DetectorInformationSequence), slice step SpacingBetweenSlices or SliceThickness."""
    ds0, p0 = s.headers[0], s.files[0]
    if len(s.files) > 1:
        raise StudyError(f"{folder}: series {s.uid} has {len(s.files)} multi-frame files; "
                         "voxdose reads one multi-frame reconstruction per series")
    nf = int(ds0.NumberOfFrames)
    n_slices = int(ds0.get("NumberOfSlices", nf) or nf)
    if n_slices != nf:
        raise StudyError(f"{p0}: {nf} frames but NumberOfSlices (0054,0081) = {n_slices} "
                         "(several energy windows, detectors or time slots); export one "
                         "reconstructed volume")
    det = ds0.get("DetectorInformationSequence")
    src = det[0] if det and "ImagePositionPatient" in det[0] else ds0
    r, c = _orientation(ds0, p0, src if "ImageOrientationPatient" in src else ds0)
    dy, dx = _pixel_spacing(ds0, p0)
    step = ds0.get("SpacingBetweenSlices") or ds0.get("SliceThickness")
    if step in (None, ""):
        raise StudyError(f"{p0}: SpacingBetweenSlices (0018,0088) and SliceThickness "
                         "(0018,0050) are both missing; the slice spacing is unknown")
    sv = ds0.get("SliceVector")
    idx = np.array([int(v) for v in sv]) - 1 if sv is not None else np.arange(nf)
    if sorted(idx.tolist()) != list(range(nf)):
        raise StudyError(f"{p0}: SliceVector (0054,0080) is not a permutation of 1..{nf}")
    n = np.cross(r, c)
    pos = _ipp(src, p0)[None, :] + (idx[:, None] * float(step)) * n[None, :]
    grid, order = grid_from_positions(pos, r, c, dy, dx, int(ds0.Rows), int(ds0.Columns), p0)
    sl, ic, units, mapping = _value_map(ds0, _units_tag(ds0), p0)
    return SpectLayout(grid, units, mapping, tuple((0, int(k), sl, ic) for k in order))


def _read_single_slices(s: SeriesFiles, folder) -> SpectLayout:
    """One slice per file: ImagePositionPatient per file; orientation, size and pixel
    spacing must agree; rescale per file."""
    headers, files = s.headers, s.files
    ds0, p0 = headers[0], files[0]
    r, c = _orientation(ds0, p0)
    dy, dx = _pixel_spacing(ds0, p0)
    for ds, p in zip(headers, files):
        r2, c2 = _orientation(ds, p)
        if np.max(np.abs(np.concatenate([r - r2, c - c2]))) > 1e-4 or \
                (int(ds.Rows), int(ds.Columns)) != (int(ds0.Rows), int(ds0.Columns)) or \
                np.max(np.abs(np.array(_pixel_spacing(ds, p)) - (dy, dx))) > 1e-4:
            raise StudyError(f"{p}: orientation, size or pixel spacing differs from {p0} "
                             "in the same series")
    pos = np.array([_ipp(ds, p) for ds, p in zip(headers, files)])
    grid, order = grid_from_positions(pos, r, c, dy, dx, int(ds0.Rows), int(ds0.Columns), p0)
    units0 = _units_tag(ds0)
    units, mapping, slices = None, "", []
    for k in order:
        sl, ic, units, mapping = _value_map(headers[k], units0, files[k])
        slices.append((int(k), None, sl, ic))
    return SpectLayout(grid, units, mapping, tuple(slices))


#: layout name -> reader, in the order :func:`spect_layout` tests them
SPECT_LAYOUT_READERS = {
    "enhanced": _read_enhanced,
    "nm-multiframe": _read_nm_multiframe,
    "single-slice": _read_single_slices,
}


def spect_layout(ds) -> str:
    """Which layout a series' first header has: 'enhanced' (PerFrameFunctionalGroupsSequence),
    'nm-multiframe' (NumberOfFrames > 1) or 'single-slice' (one slice per file)."""
    if "PerFrameFunctionalGroupsSequence" in ds:
        return "enhanced"
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return "nm-multiframe"
    return "single-slice"


def _check_same_in_series(s: SeriesFiles, folder) -> None:
    for tag, kw in (("(0054,1001)", "Units"), ("(0054,1102)", "DecayCorrection")):
        vals = {str(d.get(kw, "")) for d in s.headers}
        if len(vals) > 1:
            raise StudyError(f"{folder}: {kw} {tag} differs between files of series {s.uid}: "
                             f"{sorted(vals)}")


def _administration(ds0) -> tuple[datetime | None, bool, float | None, str | None]:
    """(start date/time, only a start time given, total dose in Bq, date problem) of the
    first RadiopharmaceuticalInformationSequence item."""
    rp = ds0.get("RadiopharmaceuticalInformationSequence")
    if not rp:
        return None, False, None, None
    item = rp[0]
    admin, problem = _dt_or_problem(
        lambda: parse_dt(item.get("RadiopharmaceuticalStartDateTime")),
        "RadiopharmaceuticalStartDateTime (0018,1078)")
    time_only = admin is None and problem is None and \
        bool(item.get("RadiopharmaceuticalStartTime"))
    total = None
    if item.get("RadionuclideTotalDose") not in (None, ""):
        total = float(item.RadionuclideTotalDose)
    return admin, time_only, total, problem


def _decay_reference(ds0, dc: str | None, admin: datetime | None):
    """(the time the values are decay-corrected to, date problem): DecayCorrectionDateTime,
    else the series start (START) or the administration (ADMIN); None for NONE."""
    if ds0.get("DecayCorrectionDateTime"):
        return _dt_or_problem(lambda: parse_dt(ds0.DecayCorrectionDateTime),
                              "DecayCorrectionDateTime (0018,9701)")
    if dc == "START":
        return _dt_or_problem(lambda: parse_da_tm(ds0.get("SeriesDate"),
                                                  ds0.get("SeriesTime")),
                              "SeriesDate/SeriesTime (0008,0021/0031)")
    if dc == "ADMIN":
        return admin, None
    return None, None


def read_spect_header(folder, series_uid: str | None = None, key: str = "spect",
                      study_path=None) -> SpectHeader:
    """Validate and summarise one NM/PT series in ``folder`` (headers only)."""
    return spect_header_of(select_series(folder, SPECT_MODALITIES, series_uid, key,
                                         study_path), folder)


def spect_header_of(s: SeriesFiles, folder) -> SpectHeader:
    """Validate and summarise NM/PT series ``s`` (found in ``folder``; headers only)."""
    ds0, p0 = s.headers[0], s.files[0]
    if s.problems:
        raise StudyError(s.problems[0])
    problem = spect_series_problem(s)
    if problem:
        raise StudyError(f"{p0}: {problem}")
    _check_one_patient(s, str(Path(folder)))
    layout = SPECT_LAYOUT_READERS[spect_layout(ds0)](s, folder)
    _check_same_in_series(s, folder)
    dc = str(ds0.get("DecayCorrection", "")).strip().upper() or None
    acq, acq_problem = _acquisition_time(s.headers, s.files)
    admin, time_only, total, admin_problem = _administration(ds0)
    ref, ref_problem = _decay_reference(ds0, dc, admin)
    date_problems = {k: v for k, v in (("acquisition", acq_problem),
                                       ("administration", admin_problem),
                                       ("decay_reference", ref_problem)) if v}
    return SpectHeader(
        series=s, grid=layout.grid, units=layout.units, value_mapping=layout.value_mapping,
        decay_correction=dc, decay_reference=ref,
        acquisition=acq, administration=admin, administration_time_only=time_only,
        nuclide=nuclide_from_dataset(ds0), total_dose_bq=total,
        frame_duration_s=_frame_duration_s(ds0), patient_id=str(ds0.get("PatientID", "")),
        frame_of_reference_uid=str(ds0.get("FrameOfReferenceUID", "")),
        slices=layout.slices, date_problems=date_problems)


def _acquisition_time(headers, files) -> tuple[datetime | None, str | None]:
    """(earliest acquisition start of the series (AcquisitionDateTime, else Date + Time),
    the first date problem naming its file)."""
    times = []
    for ds, p in zip(headers, files):
        t, bad = _dt_or_problem(
            lambda ds=ds: parse_dt(ds.get("AcquisitionDateTime")) or parse_da_tm(
                ds.get("AcquisitionDate"), ds.get("AcquisitionTime")),
            "AcquisitionDateTime (0008,002A) / AcquisitionDate+Time (0008,0022/0032)")
        if bad:
            return None, f"{p}: {bad}"  # one unreadable file: the series' start is unknown
        if t is not None:
            times.append(t)
    return (min(times) if times else None), None


def read_spect_values(h: SpectHeader) -> np.ndarray:
    """Pixel values mapped to ``h.units`` (Bq/mL for BQML, counts for CNTS), [z, y, x]."""
    pydicom = _dicom()
    out = np.empty(h.grid.shape, dtype=np.float64)
    cache: dict[int, np.ndarray] = {}
    for z, (fi, frame, slope, icpt) in enumerate(h.slices):
        if fi not in cache:
            path = h.series.files[fi]
            try:
                cache.clear()
                cache[fi] = pydicom.dcmread(path).pixel_array
            except Exception as exc:
                raise StudyError(f"{path}: cannot decode the pixel data ({type(exc).__name__}: "
                                 f"{str(exc)[:100]}); truncated or unsupported compression?"
                                 ) from None
        arr = cache[fi]
        plane = arr[frame] if frame is not None else arr
        if plane.shape != h.grid.shape[1:]:
            raise StudyError(f"{h.series.files[fi]}: pixel data shape {plane.shape} does not "
                             f"match Rows x Columns {h.grid.shape[1:]}")
        out[z] = plane.astype(np.float64) * slope + icpt
    if not np.all(np.isfinite(out)):
        raise StudyError(f"{h.first_file}: pixel values are not finite after rescaling")
    return out


# --------------------------------------------------------------------------- CT
@dataclass(frozen=True, eq=False)
class CTHeader:
    series: SeriesFiles
    grid: Grid
    files_sorted: tuple[Path, ...]
    patient_id: str
    frame_of_reference_uid: str
    study_instance_uid: str


def read_ct_header(folder, series_uid: str | None = None, key: str = "ct",
                   study_path=None) -> CTHeader:
    return ct_header_of(select_series(folder, ("CT",), series_uid, key, study_path))


def ct_header_of(s: SeriesFiles) -> CTHeader:
    """Validate CT series ``s`` and build its grid (headers only)."""
    ds0, p0 = s.headers[0], s.files[0]
    if s.problems:
        raise StudyError(s.problems[0])
    problem = ct_series_problem(s)
    if problem:
        raise StudyError(f"{p0}: {problem}")
    _check_one_patient(s, str(p0.parent))
    if int(ds0.get("NumberOfFrames", 1) or 1) > 1:
        raise StudyError(f"{p0}: multi-frame CT is not supported; export one file per slice")
    r, c = _orientation(ds0, p0)
    dy, dx = _pixel_spacing(ds0, p0)
    for ds, p in zip(s.headers, s.files):
        r2, c2 = _orientation(ds, p)
        if np.max(np.abs(np.concatenate([r - r2, c - c2]))) > 1e-4 or \
                (int(ds.Rows), int(ds.Columns)) != (int(ds0.Rows), int(ds0.Columns)):
            raise StudyError(f"{p}: orientation or size differs from {p0} in the same series")
    pos = np.array([_ipp(ds, p) for ds, p in zip(s.headers, s.files)])
    grid, order = grid_from_positions(pos, r, c, dy, dx, int(ds0.Rows), int(ds0.Columns), p0)
    return CTHeader(s, grid, tuple(s.files[k] for k in order), str(ds0.get("PatientID", "")),
                    str(ds0.get("FrameOfReferenceUID", "")),
                    str(ds0.get("StudyInstanceUID", "")))


def read_ct_series(h: CTHeader) -> Image:
    """CT in HU via SimpleITK's ImageSeriesReader on the geometrically sorted files."""
    import SimpleITK as sitk

    from .sitk_adapter import sitk_to_array_and_grid

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in h.files_sorted])
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise StudyError(f"{h.files_sorted[0].parent}: SimpleITK cannot read the CT series "
                         f"({str(exc).strip()[-100:]})") from None
    arr, g = sitk_to_array_and_grid(img)
    if not g.same_as(h.grid, tol_mm=0.05):
        raise StudyError(f"{h.files_sorted[0].parent}: CT geometry read by SimpleITK "
                         f"({g.describe()}) differs from the DICOM headers ({h.grid.describe()})")
    return Image(arr.astype(np.float64), h.grid, "CT", "HU",
                 {"source": str(h.files_sorted[0].parent), "series_uid": h.series.uid})


def read_ct(path, series_uid: str | None = None) -> Image:
    """A CT from a DICOM folder or an image file (NIfTI/MHD/NRRD), in HU."""
    from .sitk_adapter import read_image

    p = Path(path)
    if p.is_dir():
        return read_ct_series(read_ct_header(p, series_uid))
    return read_image(p, "CT", "HU")


def is_dicom_input(path) -> bool:
    """A folder (DICOM series) or a single DICOM file."""
    p = Path(path)
    if p.is_dir():
        return True
    try:
        with open(p, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def dicom_files(path) -> list[Path]:
    """Every DICOM file of an input (for hashing in provenance)."""
    p = Path(path)
    if not p.is_dir():
        return [p]
    return sorted(f for s in scan_folder(p) for f in s.files)


def decay_factor(lam_per_s: float, start: datetime, end: datetime) -> float:
    """exp(-lambda (end - start))."""
    return math.exp(-lam_per_s * (end - start).total_seconds())
