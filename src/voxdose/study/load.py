"""The study file (``study.toml``): what a user's study consists of, validated up front.

Format (paths relative to the study file; times in hours after administration)::

    [study]
    name = "patient 01"
    nuclide = "Lu-177"                 # Lu-177, 177Lu, Y-90, 90Y ...
    administered_activity_mbq = 7400.0
    reference_timepoint = 0            # index into [[timepoints]]; registration target

    [spect]
    units = "Bq/mL"                    # pixel unit of the SPECT images
    calibration_factor = 1.0           # pixel value x factor = Bq/mL
    decay_corrected = false            # true: frames were decay-corrected to administration

    [structures]                       # optional
    labels = "labels.nii.gz"           # integer labels on the reference CT grid
    names = "structure_names.json"              # {"1": "liver", ...}

    [[timepoints]]                     # one per acquisition, strictly increasing time_h
    time_h = 1.0
    spect = "spect_001h.nii.gz"
    ct = "ct_001h.nii.gz"              # optional; without CTs, SPECT-to-SPECT registration

    [patient]                          # optional
    sex = "male"                       # reference red-marrow mass (ICRP 89): male | female

    [registration]                     # optional
    transform = "rigid"                # rigid (default) | affine | bspline (after rigid)
    grid = "spect"                     # grid of the 4D series and the dose: the reference
                                       # SPECT grid (default) or the reference CT grid

    [dose]                             # optional
    dpk = "my_dpk.csv"                 # your own water DPK for the study's nuclide (CSV
                                       # r_mm,dose_Gy_per_decay) instead of voxdose's; the
                                       # nuclide comparison keeps voxdose's kernels

    [analysis]                         # optional
    s_table = "olinda_s.csv"           # organ,S in mGy/(MBq s) (OLINDA/IDAC self S-values),
                                       # compared in mird_check.csv

    [plan]                             # optional: activity planning from dose limits
    limits_gy = { kidneys = 23.0, marrow = 1.0 }   # structure names, "kidneys" (all
                                       # kidney_* structures) or "marrow" (EANM L2-L4 result)
    after_h = { marrow = 336.0 }       # the limit applies to the dose delivered after t0 (h)

DICOM (see ``docs/io.md``): a time point's ``spect`` / ``ct`` may be a folder (searched
recursively) or a DICOM file. Then ``time_h`` may be left out (acquisition date/time minus
the radiopharmaceutical start date/time), ``study.nuclide`` and
``study.administered_activity_mbq`` may come from the files, and the pixel unit and decay
correction are read from the tags; the keys below only supply what the files lack (a key
that contradicts a tag is an error)::

    [study]
    administration_datetime = "2024-03-01T09:30:00"   # when RadiopharmaceuticalStartDateTime
                                                     # is missing (local time)
    [spect]
    units = "counts"                   # only if Units (0054,1001) is missing
    calibration_factor = 0.5           # counts: Bq/mL per count, or
    calibration_cps_per_mbq = 10.0     # counts: sensitivity (count rate per MBq in the FOV)
    decay_corrected = false            # only if DecayCorrection (0054,1102) is missing
    [structures]
    rtstruct = "RS.dcm"                # instead of labels + names (file or folder)
    rois = ["liver", "kidney_left"]    # optional; default every non-EXTERNAL ROI
    [[timepoints]]
    spect = "dicom/tp1/spect"          # folder: the one NM/PT reconstruction in it
    spect_series_uid = "1.2.3..."      # optional, when the folder holds several series
    ct = "dicom/tp1/ct"
    ct_series_uid = "1.2.3..."         # optional
    frame_duration_s = 1200.0          # optional: when counts need it and the file lacks it

Everything is checked before any computation starts; an error names the key and file.
"""

from __future__ import annotations

import itertools
import json
import math
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import SimpleITK as sitk

from ..core.errors import StudyError
from ..core.nuclide import Nuclide, load_nuclide
from ..io.sitk_adapter import grid_from_sitk

SUPPORTED_SPECT_UNITS = ("Bq/mL", "kBq/mL", "MBq/mL")
_UNIT_TO_BQ_ML = {"Bq/mL": 1.0, "kBq/mL": 1e3, "MBq/mL": 1e6}
#: study-file spelling of the DICOM Units (0054,1001) values voxdose reads
_DICOM_UNITS = {"Bq/mL": "BQML", "counts": "CNTS"}
#: acquisitions / administrations this close count as the same time (s)
_SAME_TIME_S = 60.0


@dataclass(frozen=True)
class TimePoint:
    time_h: float
    spect: Path
    ct: Path | None
    # DICOM inputs only (None for image files):
    spect_dicom: object = None          # io.dicom_read.SpectHeader
    ct_dicom: object = None             # io.dicom_read.CTHeader
    to_bq_ml: float | None = None       # mapped pixel value x this = Bq/mL
    decay_undo: float | None = None     # x this: activity at acquisition
    info: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Study:
    """A validated study. Times in h after administration, activity in MBq."""

    path: Path
    name: str
    nuclide: Nuclide
    administered_activity_mbq: float
    reference_index: int
    spect_to_bq_ml: float  # multiply SPECT pixel values by this to get Bq/mL
    decay_corrected: bool
    timepoints: tuple[TimePoint, ...]
    labels: Path | None
    names: dict[int, str]
    sex: str = "male"
    plan_limits_gy: dict | None = None
    plan_after_h: dict | None = None
    rtstruct: object = None             # io.rtstruct.RTStructHeader (instead of labels)
    administration: datetime | None = None
    info: dict = field(default_factory=dict, compare=False)
    s_table: Path | None = None         # user S-values (organ,S mGy/(MBq s)) for the MIRD check
    registration: str = "rigid"         # rigid | affine | bspline (after rigid)
    dose_grid: str = "spect"            # spect (reference SPECT grid) | ct (reference CT grid)
    dpk: Path | None = None             # user's radial DPK CSV (r_mm,dose_Gy_per_decay)

    @property
    def times_h(self) -> list[float]:
        return [tp.time_h for tp in self.timepoints]

    @property
    def has_ct(self) -> bool:
        return all(tp.ct is not None for tp in self.timepoints)


def _need(table: dict, key: str, where: str, path: Path, kind=None):
    if key not in table:
        raise StudyError(f"{path}: missing key '{where}{key}'; add it to the study file")
    v = table[key]
    if kind is not None and not isinstance(v, kind):
        raise StudyError(f"{path}: key '{where}{key}' must be {getattr(kind, '__name__', kind)},"
                         f" got {v!r}")
    return v


def _number(table, key, where, path, default=None, positive=True) -> float:
    if key not in table and default is not None:
        return float(default)
    v = _need(table, key, where, path)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise StudyError(f"{path}: key '{where}{key}' must be a number, got {v!r}")
    if positive and v <= 0:
        raise StudyError(f"{path}: key '{where}{key}' must be > 0, got {v}")
    return float(v)


def _file(base: Path, value, key: str, path: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise StudyError(f"{path}: key '{key}' must be a file path string, got {value!r}")
    p = (base / value).resolve()
    if not p.exists():
        raise StudyError(f"{path}: file for '{key}' not found: {p}")
    return p


def _header_grid(p: Path, key: str, study_path: Path):
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise StudyError(f"{study_path}: '{key}' = {p} is not a readable image "
                         "(NIfTI, MHD or NRRD expected)") from None
    if reader.GetDimension() != 3:
        raise StudyError(f"{study_path}: '{key}' = {p} must be a 3D image, "
                         f"got {reader.GetDimension()}D")
    img = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    img.SetSpacing(reader.GetSpacing())
    img.SetOrigin(reader.GetOrigin())
    img.SetDirection(reader.GetDirection())
    g = grid_from_sitk(img)
    nx, ny, nz = reader.GetSize()
    return type(g)((nz, ny, nx), g.affine)


def _grid_of(p: Path, key: str, study_path: Path, dicom=None):
    return dicom.grid if dicom is not None else _header_grid(p, key, study_path)


def _datetime_key(v, key: str, path: Path) -> datetime:
    if isinstance(v, datetime):
        return v.replace(tzinfo=None)
    if isinstance(v, str):
        try:
            return datetime.fromisoformat(v.strip()).replace(tzinfo=None)
        except ValueError:
            pass
    raise StudyError(f"{path}: key '{key}' must be a date-time like \"2024-03-01T09:30:00\" "
                     f"(local time), got {v!r}")


def _optional_file(doc: dict, table: str, key: str, base: Path, path: Path) -> Path | None:
    """An optional ``[table] key = "file"`` entry, checked to exist; None when absent."""
    t = doc.get(table, {})
    if not isinstance(t, dict):
        raise StudyError(f"{path}: [{table}] must be a table")
    return _file(base, t[key], f"{table}.{key}", path) if key in t else None


def load_study(path) -> Study:
    """Read and fully validate a study file. Raises :class:`StudyError` with one clear line."""
    from ..io.dicom_read import is_dicom_input, read_ct_header, read_spect_header

    path = Path(path).resolve()
    if not path.exists():
        raise StudyError(f"study file not found: {path}")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StudyError(f"{path}: not valid TOML ({exc})") from None
    base = path.parent

    st = _need(doc, "study", "", path, dict)
    name = str(st.get("name", path.parent.name))

    sp = doc.get("spect", {})
    if not isinstance(sp, dict):
        raise StudyError(f"{path}: [spect] must be a table")
    units = sp.get("units", "Bq/mL")
    if units not in _UNIT_TO_BQ_ML and units != "counts":
        raise StudyError(f"{path}: spect.units = {units!r} is not supported; use one of "
                         f"{', '.join(SUPPORTED_SPECT_UNITS)} and spect.calibration_factor "
                         "to convert counts")
    cal = _number(sp, "calibration_factor", "spect.", path, default=1.0)
    cps = _number(sp, "calibration_cps_per_mbq", "spect.", path) \
        if "calibration_cps_per_mbq" in sp else None
    decay_corrected = sp.get("decay_corrected", False)
    if not isinstance(decay_corrected, bool):
        raise StudyError(f"{path}: spect.decay_corrected must be true or false")

    tps_raw = _need(doc, "timepoints", "", path, list)
    if not tps_raw:
        raise StudyError(f"{path}: [[timepoints]] is empty; give at least one time point")
    raw = []  # (explicit time_h or None, spect, ct, spect header, ct header, table)
    for i, tp in enumerate(tps_raw):
        where = f"timepoints[{i}]."
        if not isinstance(tp, dict):
            raise StudyError(f"{path}: [[timepoints]] entry {i} must be a table")
        spect = _file(base, _need(tp, "spect", where, path), where + "spect", path)
        ct = _file(base, tp["ct"], where + "ct", path) if "ct" in tp else None
        for k in ("spect_series_uid", "ct_series_uid"):
            if k in tp and not isinstance(tp[k], str):
                raise StudyError(f"{path}: key '{where}{k}' must be a UID string")
        h_sp = read_spect_header(spect, tp.get("spect_series_uid"), where + "spect", path) \
            if is_dicom_input(spect) else None
        h_ct = read_ct_header(ct, tp.get("ct_series_uid"), where + "ct", path) \
            if ct is not None and is_dicom_input(ct) else None
        if "time_h" in tp or h_sp is None:
            t_h = _number(tp, "time_h", where, path, positive=False)
            if t_h < 0:
                raise StudyError(f"{path}: {where}time_h = {t_h} is before the administration")
        else:
            t_h = None
        if "frame_duration_s" in tp:
            _number(tp, "frame_duration_s", where, path)
        raw.append((t_h, spect, ct, h_sp, h_ct, tp))
    if any(r[2] is None for r in raw) and any(r[2] is not None for r in raw):
        raise StudyError(f"{path}: give a ct for every time point or for none")
    dicom_sp = [(i, r[3]) for i, r in enumerate(raw) if r[3] is not None]
    dicom_all = dicom_sp + [(i, r[4]) for i, r in enumerate(raw) if r[4] is not None]

    # one patient
    pids = {h.patient_id for _, h in dicom_all if h.patient_id}
    if len(pids) > 1:
        listing = ", ".join(f"timepoints[{i}] '{h.patient_id}'" for i, h in dicom_all)
        raise StudyError(f"{path}: the DICOM inputs belong to different patients "
                         f"(PatientID (0010,0020): {listing}); check the folders")

    # nuclide: the study file or the files, never two different ones
    file_nucs = {h.nuclide: (i, h) for i, h in dicom_sp if h.nuclide}
    if len(file_nucs) > 1:
        listing = ", ".join(f"{n} in {h.first_file}" for n, (_, h) in file_nucs.items())
        raise StudyError(f"{path}: time points disagree on the nuclide "
                         f"(RadionuclideCodeSequence (0054,0300)): {listing}")
    if "nuclide" in st:
        nuclide = load_nuclide(_need(st, "nuclide", "study.", path, str))
        for n, (_, h) in file_nucs.items():
            if n != nuclide.name:
                raise StudyError(f"{path}: study.nuclide = {nuclide.name} contradicts "
                                 f"RadionuclideCodeSequence (0054,0300) = {n} in "
                                 f"{h.first_file}; correct one of them")
    elif file_nucs:
        nuclide = load_nuclide(next(iter(file_nucs)))
    else:
        raise StudyError(f"{path}: missing key 'study.nuclide' (the SPECT files do not name "
                         "it); add it to the study file")

    # administration date/time (needed for DICOM times)
    file_admin = [(i, h) for i, h in dicom_sp if h.administration is not None]
    for (_, a), (_, b) in itertools.pairwise(file_admin):
        if abs((a.administration - b.administration).total_seconds()) > _SAME_TIME_S:
            raise StudyError(f"{path}: RadiopharmaceuticalStartDateTime (0018,1078) differs "
                             f"between {a.first_file} ({a.administration}) and {b.first_file} "
                             f"({b.administration}); set study.administration_datetime and "
                             "check the series")
    admin = None
    if "administration_datetime" in st:
        admin = _datetime_key(st["administration_datetime"], "study.administration_datetime",
                              path)
        for _, h in file_admin[:1]:
            if abs((h.administration - admin).total_seconds()) > _SAME_TIME_S:
                raise StudyError(f"{path}: study.administration_datetime = {admin} contradicts "
                                 "RadiopharmaceuticalStartDateTime (0018,1078) = "
                                 f"{h.administration} in {h.first_file}; correct one of them")
    elif file_admin:
        admin = file_admin[0][1].administration

    # administered activity
    if "administered_activity_mbq" in st:
        a0 = _number(st, "administered_activity_mbq", "study.", path)
    else:
        doses = [h.total_dose_bq for _, h in dicom_sp if h.total_dose_bq]
        if not doses:
            raise StudyError(f"{path}: missing key 'study.administered_activity_mbq' (the files "
                             "have no RadionuclideTotalDose (0018,1074)); add it to the study "
                             "file")
        a0 = doses[0] / 1e6

    lam = nuclide.decay_constant_per_s
    tps = []
    info: dict = {}
    for i, (t_h, spect, ct, h_sp, h_ct, tp) in enumerate(raw):
        where = f"timepoints[{i}]."
        if h_sp is None:
            tps.append(TimePoint(t_h, spect, ct, None, h_ct))
            continue
        tp_info: dict = {"series_uid": h_sp.series.uid, "value_mapping": h_sp.value_mapping}
        f0 = h_sp.first_file
        # time after administration
        t_dicom = None
        if h_sp.acquisition is not None and admin is not None:
            t_dicom = (h_sp.acquisition - admin).total_seconds() / 3600.0
            tp_info["time_h_from_dicom"] = t_dicom
        if t_h is None:
            if h_sp.acquisition is None:
                raise StudyError(f"{f0}: AcquisitionDate/AcquisitionTime (0008,0022/0032) and "
                                 "AcquisitionDateTime (0008,002A) are missing; give "
                                 f"'{where}time_h' in {path.name}")
            if admin is None:
                what = ("only RadiopharmaceuticalStartTime (0018,1072) is given (no date)"
                        if h_sp.administration_time_only else
                        "RadiopharmaceuticalStartDateTime (0018,1078) is missing")
                raise StudyError(f"{f0}: {what}; set study.administration_datetime = "
                                 f"\"YYYY-MM-DDTHH:MM:SS\" or '{where}time_h' in {path.name}")
            t_h = t_dicom
            if t_h < 0:
                raise StudyError(f"{f0}: acquisition {h_sp.acquisition} is before the "
                                 f"administration {admin}; check the dates or give "
                                 f"'{where}time_h'")
            tp_info["time_source"] = "DICOM acquisition - administration"
        else:
            tp_info["time_source"] = "study file"
        # pixel unit -> Bq/mL
        file_units = h_sp.units
        if file_units is None:
            if "units" not in sp:
                raise StudyError(f"{f0}: Units (0054,1001) is missing; set spect.units = "
                                 f"\"Bq/mL\" (or \"counts\" with a calibration) in {path.name}")
            eff = _DICOM_UNITS.get(units, units)
        else:
            eff = file_units
            if "units" in sp and _DICOM_UNITS.get(units, units) != file_units:
                raise StudyError(f"{path}: spect.units = {units!r} contradicts Units (0054,1001)"
                                 f" = {file_units} in {f0}; remove spect.units")
        if eff == "BQML":
            if ("calibration_factor" in sp and cal != 1.0) or cps is not None:
                raise StudyError(f"{path}: spect.calibration_* given but {f0} is already in "
                                 "Bq/mL (Units BQML); remove the calibration keys")
            to_bq = 1.0
        elif eff in ("kBq/mL", "MBq/mL"):
            to_bq = _UNIT_TO_BQ_ML[eff]
        elif eff == "CNTS":
            if "calibration_factor" in sp and cps is not None:
                raise StudyError(f"{path}: give spect.calibration_factor or "
                                 "spect.calibration_cps_per_mbq, not both")
            if "calibration_factor" in sp:
                to_bq = cal
                tp_info["calibration"] = f"{cal} Bq/mL per count (spect.calibration_factor)"
            elif cps is not None:
                dur = float(tp["frame_duration_s"]) if "frame_duration_s" in tp else \
                    h_sp.frame_duration_s
                if not dur:
                    raise StudyError(f"{f0}: ActualFrameDuration (0018,1242) is missing and "
                                     "spect.calibration_cps_per_mbq needs it; give "
                                     f"'{where}frame_duration_s' or spect.calibration_factor")
                to_bq = 1e6 / (cps * dur * h_sp.grid.voxel_volume_ml)
                tp_info["calibration"] = (f"counts / ({dur} s x {cps} cps/MBq) / voxel volume "
                                          "(spect.calibration_cps_per_mbq)")
            else:
                raise StudyError(f"{f0}: pixel values are counts (Units CNTS); give "
                                 "spect.calibration_factor (Bq/mL per count) or "
                                 f"spect.calibration_cps_per_mbq in {path.name}")
        else:
            raise StudyError(f"{f0}: Units (0054,1001) = {eff!r} is not supported (BQML or "
                             "CNTS); export activity concentration or counts")
        # decay correction -> activity at acquisition
        dc = h_sp.decay_correction
        if dc is None:
            if "decay_corrected" not in sp:
                raise StudyError(f"{f0}: DecayCorrection (0054,1102) is missing; set "
                                 "spect.decay_corrected = false (or true: corrected to the "
                                 f"administration) in {path.name}")
            dc = "ADMIN" if decay_corrected else "NONE"
        elif dc not in ("NONE", "START", "ADMIN"):
            raise StudyError(f"{f0}: DecayCorrection (0054,1102) = {dc!r} is not one of NONE, "
                             "START, ADMIN")
        elif "decay_corrected" in sp and decay_corrected != (dc == "ADMIN"):
            raise StudyError(f"{path}: spect.decay_corrected = {str(decay_corrected).lower()} "
                             f"contradicts DecayCorrection (0054,1102) = {dc} in {f0}; remove "
                             "spect.decay_corrected")
        if dc == "NONE":
            undo = 1.0
        elif dc == "ADMIN" and (h_sp.decay_reference is None or h_sp.acquisition is None):
            undo = math.exp(-lam * t_h * 3600.0)
        else:
            if h_sp.acquisition is None or h_sp.decay_reference is None:
                raise StudyError(f"{f0}: DecayCorrection = START needs the acquisition time "
                                 "(0008,0022/0032) and the series time (0008,0021/0031) or "
                                 "DecayCorrectionDateTime (0018,9701); fix the file")
            undo = math.exp(-lam * (h_sp.acquisition - h_sp.decay_reference).total_seconds())
        tp_info.update({"units": eff, "decay_correction": dc, "decay_undo_factor": undo,
                        "to_bq_ml": to_bq})
        tps.append(TimePoint(t_h, spect, ct, h_sp, h_ct, to_bq, undo, tp_info))
        info[f"timepoint_{i}"] = tp_info

    times = [tp.time_h for tp in tps]
    if any(b <= a for a, b in itertools.pairwise(times)):
        raise StudyError(f"{path}: timepoints must be in strictly increasing time_h, got "
                         f"{[round(t, 4) for t in times]}")

    ref = st.get("reference_timepoint", 0)
    if not isinstance(ref, int) or isinstance(ref, bool) or not 0 <= ref < len(tps):
        raise StudyError(f"{path}: study.reference_timepoint must be an index 0..{len(tps) - 1}")

    spect_grids = []
    for i, tp in enumerate(tps):
        spect_grids.append(_grid_of(tp.spect, f"timepoints[{i}].spect", path, tp.spect_dicom))
        if tp.ct is not None and tp.ct_dicom is None:
            _header_grid(tp.ct, f"timepoints[{i}].ct", path)
    if all(tp.ct is None for tp in tps):
        for i, g in enumerate(spect_grids):
            if not g.same_as(spect_grids[ref], tol_mm=1e-2):
                raise StudyError(
                    f"{path}: timepoints[{i}].spect grid ({g.describe()}) differs from the "
                    f"reference frame's ({spect_grids[ref].describe()}) and the study has no "
                    "CTs to register with; add a ct per time point or reconstruct the frames "
                    "on one grid")

    labels, names, rts = None, {}, None
    if "structures" in doc:
        s = doc["structures"]
        ref_tp = tps[ref]
        target_h = ref_tp.ct_dicom if ref_tp.ct is not None else ref_tp.spect_dicom
        target = ref_tp.ct if ref_tp.ct is not None else ref_tp.spect
        if "rtstruct" in s:
            if "labels" in s:
                raise StudyError(f"{path}: give structures.rtstruct or structures.labels, "
                                 "not both")
            from ..io.rtstruct import read_rtstruct_header

            rois = s.get("rois")
            if rois is not None and (not isinstance(rois, list) or
                                     not all(isinstance(r, str) for r in rois)):
                raise StudyError(f"{path}: structures.rois must be a list of ROI names")
            rts = read_rtstruct_header(_file(base, s["rtstruct"], "structures.rtstruct", path),
                                       rois)
            names = dict(rts.names)
            ref_for = getattr(target_h, "frame_of_reference_uid", "")
            if ref_for and rts.frame_of_reference_uids and \
                    ref_for not in rts.frame_of_reference_uids:
                raise StudyError(
                    f"{path}: structures.rtstruct {rts.path} references frame of reference "
                    f"{', '.join(rts.frame_of_reference_uids)}, not the reference time point's "
                    f"{'CT' if ref_tp.ct else 'SPECT'} ({ref_for}); export the structures "
                    "drawn on that CT")
            info["structures"] = {"rtstruct": str(rts.path), "rois": names,
                                  "skipped_external": list(rts.skipped),
                                  "frame_of_reference_checked": bool(ref_for)}
        else:
            labels = _file(base, _need(s, "labels", "structures.", path), "structures.labels",
                           path)
            names_path = _file(base, _need(s, "names", "structures.", path),
                               "structures.names", path)
            try:
                raw_names = json.loads(names_path.read_text())
                names = {int(k): str(v) for k, v in raw_names.items()}
            except (ValueError, AttributeError):
                raise StudyError(f"{names_path}: must be a JSON object like "
                                 '{"1": "liver", "2": "kidney_left"}') from None
            lab_grid = _header_grid(labels, "structures.labels", path)
            ref_grid = _grid_of(target, f"timepoints[{ref}]", path, target_h)
            if not lab_grid.same_as(ref_grid, tol_mm=1e-2):
                raise StudyError(
                    f"{path}: structures.labels grid ({lab_grid.describe()}) does not match the "
                    f"reference time point's {'CT' if ref_tp.ct else 'SPECT'} grid "
                    f"({ref_grid.describe()}); resample the labels onto it")

    sex = doc.get("patient", {}).get("sex", "male")
    if sex not in ("male", "female"):
        raise StudyError(f"{path}: patient.sex must be \"male\" or \"female\", got {sex!r}")
    limits, after = None, None
    if "plan" in doc:
        pl = doc["plan"]
        limits = _need(pl, "limits_gy", "plan.", path, dict)
        after = pl.get("after_h", {})
        if not isinstance(after, dict):
            raise StudyError(f"{path}: plan.after_h must be a table like {{ marrow = 336.0 }}")
        for key, table in (("limits_gy", limits), ("after_h", after)):
            for organ in table:
                _number(table, organ, f"plan.{key}.", path, positive=key == "limits_gy")
        extra = sorted(set(after) - set(limits))
        if extra:
            raise StudyError(f"{path}: plan.after_h names {extra} without a plan.limits_gy entry")
        if not names:
            raise StudyError(f"{path}: [plan] needs [structures] (labels and names)")
    nifti_units = units if units in _UNIT_TO_BQ_ML else None
    if nifti_units is None and any(tp.spect_dicom is None for tp in tps):
        if "calibration_factor" not in sp:
            raise StudyError(f"{path}: spect.units = \"counts\" needs spect.calibration_factor "
                             "(Bq/mL per count) for the image-file time points")
    spect_to_bq_ml = cal * (_UNIT_TO_BQ_ML[nifti_units] if nifti_units else 1.0)
    s_table = _optional_file(doc, "analysis", "s_table", base, path)
    reg = doc.get("registration", {}).get("transform", "rigid")
    if reg not in ("rigid", "affine", "bspline"):
        raise StudyError(f"{path}: registration.transform = {reg!r}; use rigid, affine or "
                         "bspline")
    dose_grid = doc.get("registration", {}).get("grid", "spect")
    if dose_grid not in ("spect", "ct"):
        raise StudyError(f"{path}: registration.grid = {dose_grid!r}; use spect or ct")
    if dose_grid == "ct" and not all(tp.ct is not None for tp in tps):
        raise StudyError(f"{path}: registration.grid = \"ct\" needs a ct for every time point")
    dpk = _optional_file(doc, "dose", "dpk", base, path)
    if dpk is not None:
        from ..kernels.point import read_dpk_csv

        read_dpk_csv(dpk, nuclide=nuclide.name)  # validate now, before any work
    return Study(path, name, nuclide, a0, ref, spect_to_bq_ml, decay_corrected,
                 tuple(tps), labels, names, sex,
                 {k: float(v) for k, v in limits.items()} if limits else None,
                 {k: float(v) for k, v in after.items()} if after else None,
                 rts, admin, info, s_table, reg, dose_grid, dpk)


def study_inputs(study: Study) -> list[Path]:
    """Every input file of a study (DICOM folders expanded), e.g. to hash for provenance."""
    from ..io.dicom_read import dicom_files

    out = [study.path]
    for tp in study.timepoints:
        out += dicom_files(tp.spect) if tp.spect_dicom is not None else [tp.spect]
        if tp.ct is not None:
            out += dicom_files(tp.ct) if tp.ct_dicom is not None else [tp.ct]
    if study.labels is not None:
        out.append(study.labels)
    if study.rtstruct is not None:
        out.append(study.rtstruct.path)
    return out

