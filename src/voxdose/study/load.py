"""The study file (``study.toml``): what a user's study consists of, validated up front.

Every table and key (type, unit, default, allowed values) is in the table "Study file keys"
of ``docs/io.md``, rendered from the schema in ``study/schema.py`` (the one source; unknown
or misspelt keys and tables are errors). DICOM inputs (folders or files for a time point's
``spect`` / ``ct``) and how their tags combine with the keys: ``docs/io.md``. A minimal
study::

    [study]
    nuclide = "Lu-177"
    administered_activity_mbq = 7400.0

    [[timepoints]]                     # one per acquisition, strictly increasing time_h
    time_h = 1.0                       # hours after administration
    spect = "spect_001h.nii.gz"        # paths relative to the study file

Everything is checked before any computation starts; an error names the key and file.
Parsers: ``study/sections.py`` (one per table), ``study/dicom_keys.py`` (keys vs. tags),
``study/sidecars.py`` (keys vs. the JSON sidecars of image files).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from ..core.errors import StudyError
from ..io.toml_file import read_toml
from . import sections as sec
from .dicom_keys import (activity_of, administration_of, check_frames_of_reference,
                         check_one_patient, nuclide_of, spect_headers, timepoints_of)
from .model import Study, TimePoint
from .schema import validate
from .sections import SUPPORTED_SPECT_UNITS
from .sidecars import check_ct_sidecars, image_timepoints, read_sidecars, study_keys

__all__ = ["SUPPORTED_SPECT_UNITS", "Study", "TimePoint", "load_study", "study_inputs"]


def _read_toml(path: Path) -> dict:
    if not path.exists():
        raise StudyError(f"study file not found: {path}")
    try:
        return read_toml(path)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StudyError(f"{path}: not valid TOML ({exc})") from None


def load_study(path) -> Study:
    """Read and fully validate a study file. Raises :class:`StudyError` with one clear line."""
    path = Path(path).resolve()
    t = validate(_read_toml(path), path)  # unknown keys, types, ranges, allowed values
    base, st, sp = path.parent, t["study"], t["spect"]
    raws = sec.read_timepoints(t["timepoints"], base, path)
    check_one_patient(raws, path)
    override, dicom_warnings = bool(st.get("override_dicom")), []
    check_frames_of_reference(raws, path, override, dicom_warnings)  # one SPECT/CT each
    dicom_sp, cars, key_info = spect_headers(raws), read_sidecars(raws, path), {}
    st = study_keys(st, cars, dicom_sp, path, key_info)  # nuclide, activity vs the sidecars
    nuclide = nuclide_of(st, dicom_sp, path)
    admin = administration_of(st, dicom_sp, path)
    a0 = activity_of(st, dicom_sp, path,
                     key_info.get("study_keys", {}).get("administered_activity_mbq"),
                     dicom_warnings)
    tps, info = timepoints_of(raws, sp, admin, nuclide, path, override)
    dicom_warnings += [w for tp in tps for w in (tp.info or {}).get("override_warnings", [])]
    if dicom_warnings:  # [study] override_dicom: said in provenance and by the run
        info["warnings"] = dicom_warnings
    tps = image_timepoints(tps, raws, cars, sp, nuclide, path)  # time, unit, decay
    info.update(key_info)
    sec.check_increasing(tps, path)
    check_ct_sidecars(tps, path)  # a CT in HU, of its own time point
    ref = sec.reference_index(st, len(tps), path)
    sec.check_grids(tps, ref, path)
    labels, names, rts = sec.structures(t["structures"], tps, ref, base, path, info)
    limits, after = sec.plan(t["plan"], names, path)
    spect_to_bq_ml = sec.spect_to_bq_ml(sp, tps, path)
    s_table = sec.optional_file(t["analysis"], "s_table", base, path)
    transform, dose_grid, allow_motion = sec.registration(t["registration"], tps, path)
    stp, stp_half_life_h = sec.kinetics(t["kinetics"], tps, nuclide, path)
    dpk = sec.user_dpk(t["dose"], nuclide, base, path)
    pvc_method, fwhm, rc_table = sec.pvc(t["pvc"], sp, tps, ref, bool(names), dose_grid, base,
                                         path)
    return Study(path=path, name=sec.study_name(st, path), nuclide=nuclide,
                 administered_activity_mbq=a0, reference_index=ref,
                 spect_to_bq_ml=spect_to_bq_ml, decay_corrected=sp.get("decay_corrected"),
                 timepoints=tuple(tps), labels=labels, names=names,
                 sex=t["patient"].get("sex"), plan_limits_gy=limits, plan_after_h=after,
                 rtstruct=rts, administration=admin, info=info, s_table=s_table,
                 registration=transform, dose_grid=dose_grid, dpk=dpk,
                 allow_large_motion=allow_motion, single_time_point=stp,
                 stp_half_life_h=stp_half_life_h, pvc_method=pvc_method,
                 resolution_fwhm_mm=fwhm, pvc_rc_table=rc_table)


def study_inputs(study: Study) -> list[Path]:
    """Every input file of a study (DICOM folders expanded), e.g. to hash for provenance."""
    from ..io.dicom_read import dicom_files
    from ..io.sitk_adapter import sidecar_path

    out = [study.path]
    for tp in study.timepoints:
        out += dicom_files(tp.spect) if tp.spect_dicom is not None else [tp.spect]
        if tp.spect_dicom is None and sidecar_path(tp.spect).is_file():
            out.append(sidecar_path(tp.spect))  # its values were read (study/sidecars.py)
        if tp.ct is not None:
            out += dicom_files(tp.ct) if tp.ct_dicom is not None else [tp.ct]
    if study.labels is not None:
        out.append(study.labels)
    if study.rtstruct is not None:
        out.append(study.rtstruct.path)
    if study.pvc_rc_table is not None:
        out.append(study.pvc_rc_table)
    return out

