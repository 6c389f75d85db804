"""Study-file keys against DICOM headers: the nuclide, administration time and activity
from the files when the study file lacks them, and per DICOM time point the time, the pixel
unit (to Bq/mL) and the vendor's decay correction (undone). A key that contradicts a tag is
an error (the administered activity within :data:`SAME_ACTIVITY_REL`, a frame duration
within :data:`_SAME_DURATION_REL`), and so are time points whose series disagree (nuclide,
administration time, activity) and a time point's SPECT and CT in different frames of
reference; a needed tag that is missing is an error naming the tag, the file and the key.
A date or time the reader could not parse (``SpectHeader.date_problems``) is an error only
where its value is needed: never when the study-file key that replaces it is given."""

from __future__ import annotations

import itertools
import math
from datetime import datetime
from pathlib import Path

from ..core.errors import NuclideError, StudyError
from ..core.nuclide import Nuclide, load_nuclide
from .model import TimePoint
from .schema import Section
from .sections import UNIT_TO_BQ_ML, RawTimePoint
from .sidecars import same_activity

#: study-file spelling of the DICOM Units (0054,1001) values voxdose reads
_DICOM_UNITS = {"Bq/mL": "BQML", "counts": "CNTS"}
#: acquisitions / administrations this close count as the same time (s)
_SAME_TIME_S = 60.0
#: frame durations this close (relative) count as the same (the tag is in whole ms)
_SAME_DURATION_REL = 1e-3


def spect_headers(raws: list[RawTimePoint]) -> list[tuple[int, object]]:
    """(index, SpectHeader) of the DICOM SPECT time points."""
    return [(i, r.spect_h) for i, r in enumerate(raws) if r.spect_h is not None]


def check_one_patient(raws: list[RawTimePoint], path: Path) -> None:
    dicom_all = spect_headers(raws) + [(i, r.ct_h) for i, r in enumerate(raws)
                                       if r.ct_h is not None]
    if len({h.patient_id for _, h in dicom_all if h.patient_id}) > 1:
        listing = ", ".join(f"timepoints[{i}] '{h.patient_id}'" for i, h in dicom_all)
        raise StudyError(f"{path}: the DICOM inputs belong to different patients "
                         f"(PatientID (0010,0020): {listing}); check the folders")


#: what ``[study] override_dicom = true`` lets the study file decide (docs/io.md)
OVERRIDE_HINT = ("or, if the study file is right (a net activity after the residual, a tag "
                 "known to be wrong, a SPECT re-reconstructed into a new frame of reference), "
                 "set [study] override_dicom = true")


def _contradiction(text: str, override: bool, warnings: list | None) -> None:
    """A study file against a DICOM tag: an error, or with ``override_dicom`` a warning
    (appended to ``warnings``: provenance and the run's output)."""
    if not override:
        raise StudyError(f"{text}; {OVERRIDE_HINT}")
    if warnings is not None:
        warnings.append(f"{text}; the study file's value is used ([study] override_dicom)")


def check_frames_of_reference(raws: list[RawTimePoint], path: Path, override: bool = False,
                              warnings: list | None = None) -> None:
    """A time point's DICOM SPECT and CT in one frame of reference (one SPECT/CT
    acquisition); not checked where either series lacks FrameOfReferenceUID. With
    ``override`` a difference is a warning (the registration still checks the match)."""
    for i, r in enumerate(raws):
        if r.spect_h is None or r.ct_h is None:
            continue
        sp_for, ct_for = r.spect_h.frame_of_reference_uid, r.ct_h.frame_of_reference_uid
        if sp_for and ct_for and sp_for != ct_for:
            _contradiction(f"{path}: timepoints[{i}]: the SPECT {r.spect} "
                           f"(FrameOfReferenceUID (0020,0052) {sp_for}) and the CT {r.ct} "
                           f"({ct_for}) lie in different frames of reference: this CT was "
                           "not acquired with this SPECT; point "
                           f"'timepoints[{i}].ct' at the CT of the same SPECT/CT",
                           override, warnings)


def nuclide_of(st: Section, dicom_sp: list, path: Path) -> Nuclide:
    """study.nuclide or the files', never two different ones."""
    file_nucs = {h.nuclide: h for _, h in dicom_sp if h.nuclide}
    if len(file_nucs) > 1:
        listing = ", ".join(f"{n} in {h.first_file}" for n, h in file_nucs.items())
        raise StudyError(f"{path}: time points disagree on the nuclide "
                         f"(RadionuclideCodeSequence (0054,0300)): {listing}")
    if not st.has("nuclide"):
        if not file_nucs:
            raise StudyError(f"{path}: missing key 'study.nuclide' (the SPECT files do not "
                             "name it); add it to the study file")
        return load_nuclide(next(iter(file_nucs)))
    try:
        nuclide = load_nuclide(st.get("nuclide"))
    except NuclideError as exc:  # named by the file and key that gave it
        raise StudyError(f"{path}: study.nuclide: {exc}") from None
    for n, h in file_nucs.items():
        if n != nuclide.name:
            raise StudyError(f"{path}: study.nuclide = {nuclide.name} contradicts "
                             f"RadionuclideCodeSequence (0054,0300) = {n} in "
                             f"{h.first_file}; correct one of them")
    return nuclide


def administration_of(st: Section, dicom_sp: list, path: Path) -> datetime | None:
    """The administration date/time (needed for DICOM times): the key or the files'."""
    file_admin = [h for _, h in dicom_sp if h.administration is not None]
    for a, b in itertools.pairwise(file_admin):
        if abs((a.administration - b.administration).total_seconds()) > _SAME_TIME_S:
            raise StudyError(f"{path}: RadiopharmaceuticalStartDateTime (0018,1078) differs "
                             f"between {a.first_file} ({a.administration}) and {b.first_file} "
                             f"({b.administration}); set study.administration_datetime and "
                             "check the series")
    if not st.has("administration_datetime"):
        return file_admin[0].administration if file_admin else None
    admin = st.get("administration_datetime")
    for h in file_admin[:1]:
        if abs((h.administration - admin).total_seconds()) > _SAME_TIME_S:
            raise StudyError(f"{path}: study.administration_datetime = {admin} contradicts "
                             "RadiopharmaceuticalStartDateTime (0018,1078) = "
                             f"{h.administration} in {h.first_file}; correct one of them")
    return admin


def activity_of(st: Section, dicom_sp: list, path: Path, source: str | None = None,
                warnings: list | None = None) -> float:
    """Administered activity (MBq): the key or RadionuclideTotalDose, never two different
    ones (within :data:`SAME_ACTIVITY_REL`). ``source``: where the key's value came from
    when not from the study file ("JSON sidecar PATH", ``study/sidecars.py``)."""
    doses = [(i, h) for i, h in dicom_sp if h.total_dose_bq]
    override = bool(st.get("override_dicom"))
    if any(not same_activity(h.total_dose_bq, doses[0][1].total_dose_bq)
           for _, h in doses[1:]):
        listing = ", ".join(f"{h.total_dose_bq / 1e6:g} MBq in {h.first_file} "
                            f"(timepoints[{i}])" for i, h in doses)
        text = (f"{path}: time points disagree on the administered activity "
                f"(RadionuclideTotalDose (0018,1074)): {listing}; check the series (one "
                "administration per study)")
        if not st.has("administered_activity_mbq"):  # nothing to choose between them
            raise StudyError(text + ", or give study.administered_activity_mbq with "
                             "[study] override_dicom = true")
        _contradiction(text, override, warnings)
    if st.has("administered_activity_mbq"):
        a0 = st.get("administered_activity_mbq")
        if doses and not same_activity(a0, doses[0][1].total_dose_bq / 1e6):
            _, h = doses[0]
            given = (f"the administered activity {a0:g} MBq in the {source}"
                     if source and source.startswith("JSON sidecar") else
                     f"study.administered_activity_mbq = {a0:g} in the study file")
            _contradiction(f"{path}: {given} contradicts RadionuclideTotalDose (0018,1074) "
                           f"= {h.total_dose_bq / 1e6:g} MBq in {h.first_file}; correct one "
                           "of them", override, warnings)
        return a0
    if not doses:
        raise StudyError(f"{path}: missing key 'study.administered_activity_mbq' (the files "
                         "have no RadionuclideTotalDose (0018,1074)); add it to the study "
                         "file")
    return doses[0][1].total_dose_bq / 1e6


# ---- one DICOM time point -------------------------------------------------------------------

def _time_h(i: int, r: RawTimePoint, admin, path: Path, info: dict,
            override: bool = False) -> float:
    """Time after administration: acquisition - administration, or the key where the files
    cannot give it; both, more than :data:`_SAME_TIME_S` apart: a contradiction (an error;
    with ``override_dicom`` the key, said in the warnings)."""
    h, where, f0 = r.spect_h, f"timepoints[{i}].", r.spect_h.first_file
    t_dicom = None
    if h.acquisition is not None and admin is not None:
        t_dicom = (h.acquisition - admin).total_seconds() / 3600.0
        info["time_h_from_dicom"] = t_dicom
    if r.time_h is not None:
        info["time_source"] = "study file"
        if t_dicom is not None and abs(r.time_h - t_dicom) * 3600.0 > _SAME_TIME_S:
            found: list = []
            _contradiction(f"{path}: {where}time_h = {r.time_h:g} h in the study file "
                           f"contradicts the acquisition {h.acquisition} - administration "
                           f"{admin} = {t_dicom:.4g} h of {f0} (more than "
                           f"{_SAME_TIME_S:g} s apart); remove {where}time_h (the files give "
                           "it) or correct it", override, found)
            info.setdefault("override_warnings", []).extend(found)
        return r.time_h
    problems = getattr(h, "date_problems", {}) or {}
    if h.acquisition is None:
        if "acquisition" in problems:  # names its file
            raise StudyError(f"{problems['acquisition']}; give '{where}time_h' in "
                             f"{path.name}")
        raise StudyError(f"{f0}: AcquisitionDate/AcquisitionTime (0008,0022/0032) and "
                         "AcquisitionDateTime (0008,002A) are missing; give "
                         f"'{where}time_h' in {path.name}")
    if admin is None:
        what = (problems["administration"] if "administration" in problems else
                "only RadiopharmaceuticalStartTime (0018,1072) is given (no date)"
                if h.administration_time_only else
                "RadiopharmaceuticalStartDateTime (0018,1078) is missing")
        raise StudyError(f"{f0}: {what}; set study.administration_datetime = "
                         f"\"YYYY-MM-DDTHH:MM:SS\" or '{where}time_h' in {path.name}")
    if t_dicom < 0:
        raise StudyError(f"{f0}: acquisition {h.acquisition} is before the "
                         f"administration {admin}; check the dates or give '{where}time_h'")
    info["time_source"] = "DICOM acquisition - administration"
    return t_dicom


def _effective_units(r: RawTimePoint, sp: Section, path: Path) -> str:
    """The pixel unit: Units (0054,1001), or spect.units when the tag is missing."""
    f0, units = r.spect_h.first_file, sp.get("units")
    file_units = r.spect_h.units
    if file_units is None:
        if not sp.has("units"):
            raise StudyError(f"{f0}: Units (0054,1001) is missing; set spect.units = "
                             f"\"Bq/mL\" (or \"counts\" with a calibration) in {path.name}")
        return _DICOM_UNITS.get(units, units)
    if sp.has("units") and _DICOM_UNITS.get(units, units) != file_units:
        raise StudyError(f"{path}: spect.units = {units!r} contradicts Units (0054,1001)"
                         f" = {file_units} in {f0}; remove spect.units")
    return file_units


def _counts_to_bq_ml(i: int, r: RawTimePoint, sp: Section, path: Path, info: dict,
                     override: bool = False) -> float:
    f0, cal, cps = r.spect_h.first_file, sp.get("calibration_factor"), sp.get(
        "calibration_cps_per_mbq")
    if sp.has("calibration_factor") and cps is not None:
        raise StudyError(f"{path}: give spect.calibration_factor or "
                         "spect.calibration_cps_per_mbq, not both")
    if sp.has("calibration_factor"):
        info["calibration"] = f"{cal} Bq/mL per count (spect.calibration_factor)"
        return cal
    if cps is None:
        raise StudyError(f"{f0}: pixel values are counts (Units CNTS); give "
                         "spect.calibration_factor (Bq/mL per count) or "
                         f"spect.calibration_cps_per_mbq in {path.name}")
    dur = _frame_duration(i, r, path, override, info)
    if not dur:
        raise StudyError(f"{f0}: ActualFrameDuration (0018,1242) is missing and "
                         "spect.calibration_cps_per_mbq needs it; give "
                         f"'timepoints[{i}].frame_duration_s' or spect.calibration_factor")
    info["calibration"] = (f"counts / ({dur} s x {cps} cps/MBq) / voxel volume "
                           "(spect.calibration_cps_per_mbq)")
    return 1e6 / (cps * dur * r.spect_h.grid.voxel_volume_ml)


def _frame_duration(i: int, r: RawTimePoint, path: Path, override: bool = False,
                    info: dict | None = None) -> float | None:
    """The frame duration (s): the file's, or 'timepoints[i].frame_duration_s' where the
    file lacks it; both given and different (beyond :data:`_SAME_DURATION_REL`): an error."""
    h, key = r.spect_h, r.keys.get("frame_duration_s")
    if not r.keys.has("frame_duration_s"):
        return h.frame_duration_s
    if not h.frame_duration_s:
        return key
    if abs(key - h.frame_duration_s) > _SAME_DURATION_REL * h.frame_duration_s:
        ds0 = h.series.headers[0]
        tag = ("ActualFrameDuration (0018,1242)"
               if ds0.get("ActualFrameDuration") not in (None, "") else
               "ActualFrameDuration (0018,1242) x NumberOfFramesInRotation (0054,0053) of "
               "RotationInformationSequence (0054,0052)")
        found: list = []
        _contradiction(f"{path}: timepoints[{i}].frame_duration_s = {key:g} s in the study "
                       f"file contradicts {tag} = {h.frame_duration_s:g} s in "
                       f"{h.first_file}; remove timepoints[{i}].frame_duration_s (it is for "
                       "files that lack the tag)", override, found)
        if info is not None:
            info.setdefault("override_warnings", []).extend(found)
        return key
    return h.frame_duration_s


def _to_bq_ml(i: int, r: RawTimePoint, sp: Section, path: Path, info: dict,
              override: bool = False):
    """(pixel unit, factor to Bq/mL)."""
    f0, eff = r.spect_h.first_file, _effective_units(r, sp, path)
    if eff == "BQML":
        if (sp.has("calibration_factor") and sp.get("calibration_factor") != 1.0) or \
                sp.get("calibration_cps_per_mbq") is not None:
            raise StudyError(f"{path}: spect.calibration_* given but {f0} is already in "
                             "Bq/mL (Units BQML); remove the calibration keys")
        return eff, 1.0
    if eff in ("kBq/mL", "MBq/mL"):
        return eff, UNIT_TO_BQ_ML[eff]
    if eff == "CNTS":
        return eff, _counts_to_bq_ml(i, r, sp, path, info, override)
    raise StudyError(f"{f0}: Units (0054,1001) = {eff!r} is not supported (BQML or "
                     "CNTS); export activity concentration or counts")


def _decay_correction(r: RawTimePoint, sp: Section, path: Path) -> str:
    """DecayCorrection (0054,1102), or spect.decay_corrected when the tag is missing."""
    f0, dc, corrected = r.spect_h.first_file, r.spect_h.decay_correction, \
        sp.get("decay_corrected")
    if dc is None:
        if not sp.has("decay_corrected"):
            raise StudyError(f"{f0}: DecayCorrection (0054,1102) is missing; set "
                             "spect.decay_corrected = false (or true: corrected to the "
                             f"administration) in {path.name}")
        return "ADMIN" if corrected else "NONE"
    if dc not in ("NONE", "START", "ADMIN"):
        raise StudyError(f"{f0}: DecayCorrection (0054,1102) = {dc!r} is not one of NONE, "
                         "START, ADMIN")
    if sp.has("decay_corrected") and corrected != (dc == "ADMIN"):
        raise StudyError(f"{path}: spect.decay_corrected = {str(corrected).lower()} "
                         f"contradicts DecayCorrection (0054,1102) = {dc} in {f0}; remove "
                         "spect.decay_corrected")
    return dc


def _decay_undo(dc: str, h, t_h: float, lam: float) -> float:
    """x this: the activity at acquisition from the vendor's decay-corrected values."""
    if dc == "NONE":
        return 1.0
    problems = getattr(h, "date_problems", {}) or {}
    if "decay_reference" in problems:  # the reference is given but unreadable: no guess
        raise StudyError(f"{h.first_file}: {problems['decay_reference']}; DecayCorrection "
                         f"= {dc} needs it; fix the file")
    if dc == "ADMIN" and (h.decay_reference is None or h.acquisition is None):
        return math.exp(-lam * t_h * 3600.0)
    if h.acquisition is None or h.decay_reference is None:
        why = f" ({problems['acquisition']})" if "acquisition" in problems else ""
        raise StudyError(f"{h.first_file}: DecayCorrection = START needs the acquisition time "
                         "(0008,0022/0032) and the series time (0008,0021/0031) or "
                         f"DecayCorrectionDateTime (0018,9701){why}; fix the file")
    return math.exp(-lam * (h.acquisition - h.decay_reference).total_seconds())


def dicom_timepoint(i: int, r: RawTimePoint, sp: Section, admin, lam: float,
                    path: Path, override: bool = False) -> TimePoint:
    h = r.spect_h
    info: dict = {"series_uid": h.series.uid, "value_mapping": h.value_mapping}
    t_h = _time_h(i, r, admin, path, info, override)
    _frame_duration(i, r, path, override, info)  # refused (or said) even where unused
    eff, to_bq = _to_bq_ml(i, r, sp, path, info, override)
    dc = _decay_correction(r, sp, path)
    undo = _decay_undo(dc, h, t_h, lam)
    info.update({"units": eff, "decay_correction": dc, "decay_undo_factor": undo,
                 "to_bq_ml": to_bq})
    return TimePoint(time_h=t_h, spect=r.spect, ct=r.ct, spect_dicom=h, ct_dicom=r.ct_h,
                     to_bq_ml=to_bq, decay_undo=undo, info=info)


def timepoints_of(raws: list[RawTimePoint], sp: Section, admin, nuclide: Nuclide,
                  path: Path, override: bool = False) -> tuple[list[TimePoint], dict]:
    """The time points, and the DICOM ones' provenance {"timepoint_<i>": {...}}."""
    lam = nuclide.decay_constant_per_s
    tps, info = [], {}
    for i, r in enumerate(raws):
        if r.spect_h is None:
            tps.append(TimePoint(time_h=r.time_h, spect=r.spect, ct=r.ct, ct_dicom=r.ct_h))
            continue
        tps.append(dicom_timepoint(i, r, sp, admin, lam, path, override))
        info[f"timepoint_{i}"] = tps[-1].info
    return tps, info
