"""One parser per study-file table, reading values checked by ``study/schema.py``.

Each takes the table's :class:`~voxdose.study.schema.Section` (plus what it depends on) and
does the checks the schema cannot: files that exist, image grids, keys that need each other.
The DICOM side of ``[study]``, ``[spect]`` and ``[[timepoints]]`` is in ``dicom_keys.py``.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from ..core.errors import InputError, StudyError
from ..io.sitk_adapter import grid_from_sitk
from .model import TimePoint
from .schema import Section

SUPPORTED_SPECT_UNITS = ("Bq/mL", "kBq/mL", "MBq/mL")
UNIT_TO_BQ_ML = {"Bq/mL": 1.0, "kBq/mL": 1e3, "MBq/mL": 1e6}


# ---- files and grids ------------------------------------------------------------------------

def resolve_file(base: Path, value: str, label: str, path: Path) -> Path:
    """``value`` (a path relative to the study file, checked by the schema) as an existing
    absolute path."""
    p = (base / value).resolve()
    if not p.exists():
        raise StudyError(f"{path}: file for '{label}' not found: {p}")
    return p


def optional_file(sec: Section, name: str, base: Path, path: Path) -> Path | None:
    """An optional ``[table] name = "file"`` entry, checked to exist; None when absent."""
    return resolve_file(base, sec.get(name), sec.where + name, path) if sec.has(name) else None


def header_grid(p: Path, label: str, study_path: Path):
    """The grid of an image file, from its header only."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise StudyError(f"{study_path}: '{label}' = {p} is not a readable image "
                         "(NIfTI, MHD or NRRD expected)") from None
    if reader.GetDimension() != 3:
        raise StudyError(f"{study_path}: '{label}' = {p} must be a 3D image, "
                         f"got {reader.GetDimension()}D")
    img = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    img.SetSpacing(reader.GetSpacing())
    img.SetOrigin(reader.GetOrigin())
    img.SetDirection(reader.GetDirection())
    g = grid_from_sitk(img)
    nx, ny, nz = reader.GetSize()
    return type(g)((nz, ny, nx), g.affine)


def grid_of(p: Path, label: str, study_path: Path, dicom=None):
    return dicom.grid if dicom is not None else header_grid(p, label, study_path)


# ---- [study] --------------------------------------------------------------------------------

def study_name(st: Section, path: Path) -> str:
    return st.get("name") if st.has("name") else path.parent.name


def reference_index(st: Section, n: int, path: Path) -> int:
    ref = st.get("reference_timepoint")
    if ref >= n:
        raise StudyError(f"{path}: study.reference_timepoint must be an index 0..{n - 1}")
    return ref


# ---- [[timepoints]] -------------------------------------------------------------------------

@dataclass(frozen=True)
class RawTimePoint:
    """A [[timepoints]] entry with its files resolved and DICOM headers read."""

    time_h: float | None        # None: from the DICOM times or the image's JSON sidecar
    spect: Path
    ct: Path | None
    spect_h: object             # io.dicom_read.SpectHeader or None
    ct_h: object                # io.dicom_read.CTHeader or None
    keys: Section


def _raw_timepoint(e: Section, base: Path, path: Path) -> RawTimePoint:
    from ..io.dicom_read import is_dicom_input, read_ct_header, read_spect_header

    w = e.where
    spect = resolve_file(base, e.need("spect"), w + "spect", path)
    ct = resolve_file(base, e.get("ct"), w + "ct", path) if e.has("ct") else None
    h_sp = read_spect_header(spect, e.get("spect_series_uid"), w + "spect", path) \
        if is_dicom_input(spect) else None
    h_ct = read_ct_header(ct, e.get("ct_series_uid"), w + "ct", path) \
        if ct is not None and is_dicom_input(ct) else None
    # None: from the DICOM times, or (image files) the JSON sidecar (study/sidecars.py)
    t_h = e.get("time_h") if e.has("time_h") else None
    return RawTimePoint(t_h, spect, ct, h_sp, h_ct, e)


def read_timepoints(entries: list[Section], base: Path, path: Path) -> list[RawTimePoint]:
    if not entries:
        raise StudyError(f"{path}: [[timepoints]] is empty; give at least one time point")
    raws = [_raw_timepoint(e, base, path) for e in entries]
    if any(r.ct is None for r in raws) and any(r.ct is not None for r in raws):
        raise StudyError(f"{path}: give a ct for every time point or for none")
    seen: dict = {}
    for i, r in enumerate(raws):  # one acquisition per time point
        uid = getattr(getattr(r.spect_h, "series", None), "uid", None)
        key = (os.path.realpath(r.spect), uid)
        if key in seen:
            raise StudyError(f"{path}: timepoints[{seen[key]}] and timepoints[{i}] name the "
                             f"same SPECT ({r.spect}{f', series {uid}' if uid else ''}); "
                             "each time point needs its own acquisition")
        seen[key] = i
    return raws


def check_increasing(tps: list[TimePoint], path: Path) -> None:
    times = [tp.time_h for tp in tps]
    if any(b <= a for a, b in itertools.pairwise(times)):
        raise StudyError(f"{path}: timepoints must be in strictly increasing time_h, got "
                         f"{[round(t, 4) for t in times]}")


def check_grids(tps: list[TimePoint], ref: int, path: Path) -> None:
    """Every image readable; without CTs, every SPECT frame on the reference frame's grid."""
    spect_grids = []
    for i, tp in enumerate(tps):
        spect_grids.append(grid_of(tp.spect, f"timepoints[{i}].spect", path, tp.spect_dicom))
        if tp.ct is not None and tp.ct_dicom is None:
            header_grid(tp.ct, f"timepoints[{i}].ct", path)
    if any(tp.ct is not None for tp in tps):
        return
    for i, g in enumerate(spect_grids):
        if not g.same_as(spect_grids[ref], tol_mm=1e-2):
            raise StudyError(
                f"{path}: timepoints[{i}].spect grid ({g.describe()}) differs from the "
                f"reference frame's ({spect_grids[ref].describe()}) and the study has no "
                "CTs to register with; add a ct per time point or reconstruct the frames "
                "on one grid")


# ---- [spect] (image files; DICOM in dicom_keys.py) ------------------------------------------

def image_to_bq_ml(units: str, sp: Section, path: Path) -> float:
    """The factor from image-file pixel values in ``units`` to Bq/mL: calibration_factor x
    the unit's factor (counts: calibration_factor, which must be given)."""
    if units not in UNIT_TO_BQ_ML and not sp.has("calibration_factor"):
        raise StudyError(f"{path}: pixel values in counts (spect.units or the JSON sidecar) "
                         "need spect.calibration_factor (Bq/mL per count) for the image-file "
                         "time points")
    return sp.get("calibration_factor") * UNIT_TO_BQ_ML.get(units, 1.0)


def spect_to_bq_ml(sp: Section, tps: list[TimePoint], path: Path) -> float:
    """The factor from image-file SPECT pixel values to Bq/mL: the time points' one factor
    (study/sidecars.py), else the study file's keys'."""
    factors = {tp.to_bq_ml for tp in tps if tp.spect_dicom is None and tp.to_bq_ml is not None}
    if len(factors) == 1:
        return factors.pop()
    if any(tp.spect_dicom is None for tp in tps):
        return image_to_bq_ml(sp.get("units"), sp, path)
    return sp.get("calibration_factor") * UNIT_TO_BQ_ML.get(sp.get("units"), 1.0)


# ---- [structures] ---------------------------------------------------------------------------

def _rtstruct_structures(s: Section, ref_tp: TimePoint, base: Path, path: Path, info: dict):
    from ..io.rtstruct import read_rtstruct_header

    if s.has("labels"):
        raise StudyError(f"{path}: give structures.rtstruct or structures.labels, not both")
    rts = read_rtstruct_header(resolve_file(base, s.get("rtstruct"), "structures.rtstruct",
                                            path), s.get("rois"))
    names = dict(rts.names)
    target_h = ref_tp.ct_dicom if ref_tp.ct is not None else ref_tp.spect_dicom
    ref_for = getattr(target_h, "frame_of_reference_uid", "")
    if ref_for and rts.frame_of_reference_uids and ref_for not in rts.frame_of_reference_uids:
        raise StudyError(
            f"{path}: structures.rtstruct {rts.path} references frame of reference "
            f"{', '.join(rts.frame_of_reference_uids)}, not the reference time point's "
            f"{'CT' if ref_tp.ct else 'SPECT'} ({ref_for}); export the structures "
            "drawn on that CT")
    from ..io.rtstruct import check_rtstruct_in_grid

    target = ref_tp.ct if ref_tp.ct is not None else ref_tp.spect
    grid = grid_of(target, "structures.rtstruct", path, target_h)
    outside = check_rtstruct_in_grid(rts, grid)  # > 1 % of a ROI outside: an error, here
    info["structures"] = {"rtstruct": str(rts.path), "rois": names,
                          "skipped_external": list(rts.skipped),
                          "frame_of_reference_checked": bool(ref_for),
                          "warnings": outside}
    return names, rts


def _read_names(names_path: Path) -> dict[int, str]:
    from ..io.names import read_names_json

    return read_names_json(names_path, error=StudyError)


def labels_fingerprint(labels: Path) -> dict:
    """The label file as it was when its values were checked (path, bytes, mtime): the
    pipeline reads it again and need not check it again while this still holds."""
    st = Path(labels).stat()
    return {"file": str(labels), "bytes": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _label_structures(s: Section, ref_tp: TimePoint, ref: int, base: Path, path: Path,
                      info: dict):
    labels = resolve_file(base, s.need("labels"), "structures.labels", path)
    names = _read_names(resolve_file(base, s.need("names"), "structures.names", path))
    lab_grid = header_grid(labels, "structures.labels", path)
    if ref_tp.ct is not None:
        ref_grid = grid_of(ref_tp.ct, f"timepoints[{ref}]", path, ref_tp.ct_dicom)
    else:
        ref_grid = grid_of(ref_tp.spect, f"timepoints[{ref}]", path, ref_tp.spect_dicom)
    if not lab_grid.same_as(ref_grid, tol_mm=1e-2):
        raise StudyError(
            f"{path}: structures.labels grid ({lab_grid.describe()}) of {labels} does not "
            f"match the reference time point's {'CT' if ref_tp.ct else 'SPECT'} grid "
            f"({ref_grid.describe()}); resample the labels onto it")
    # its values too, before any work: a label without a name, or a negative one, would
    # otherwise be found only after every frame is registered
    from ..io.names import check_labels_named
    from ..io.sitk_adapter import read_labels

    check_labels_named(read_labels(labels, names).data, names, labels, error=StudyError)
    info["labels_checked"] = labels_fingerprint(labels)
    return labels, names


def structures(s: Section, tps: list[TimePoint], ref: int, base: Path, path: Path,
               info: dict):
    """(labels file, names, RTSTRUCT header): labels + names, or an RTSTRUCT, or nothing."""
    if not s.present:
        return None, {}, None
    if s.has("rtstruct"):
        names, rts = _rtstruct_structures(s, tps[ref], base, path, info)
        return None, names, rts
    labels, names = _label_structures(s, tps[ref], ref, base, path, info)
    return labels, names, None


# ---- [plan], [registration], [dose] ---------------------------------------------------------

def plan(pl: Section, names: dict, path: Path):
    """(limits_gy, after_h), each None when empty."""
    if not pl.present:
        return None, None
    limits, after = pl.get("limits_gy"), pl.get("after_h") or {}
    extra = sorted(set(after) - set(limits))
    if extra:
        raise StudyError(f"{path}: plan.after_h names {extra} without a plan.limits_gy entry")
    if not names:
        raise StudyError(f"{path}: [plan] needs [structures] (labels and names)")
    known = plan_targets(names)
    unknown = sorted(set(limits or {}) - known)
    if unknown:   # before any computation (the decisions would find it after the dose)
        raise StudyError(f"{path}: plan.limits_gy names {', '.join(map(repr, unknown))}, which "
                         f"this study cannot dose; known: {', '.join(sorted(known))}")
    return limits or None, after or None


def plan_targets(names: dict) -> set[str]:
    """What a dose limit may name, from the structure names alone: every structure,
    ``kidneys`` (the mass-weighted kidneys) with a structure named kidney*, ``marrow``
    (EANM L2-L4) with labels for L2, L3 and L4 (like ``marrow_L2``). A structure without
    voxels in the label map is found later, by the decisions."""
    from ..analysis.marrow import l2_l4_labels

    known = {str(n) for n in names.values()}
    if any(str(n).startswith("kidney") for n in names.values()):
        known.add("kidneys")
    try:
        if all(k in l2_l4_labels(names) for k in ("L2", "L3", "L4")):
            known.add("marrow")
    except InputError:   # two labels for one vertebra: the marrow stage reports it
        known.add("marrow")
    return known


def registration(reg: Section, tps: list[TimePoint], path: Path) -> tuple[str, str, bool]:
    """(transform, grid, allow_large_motion)."""
    grid = reg.get("grid")
    if grid == "ct" and not all(tp.ct is not None for tp in tps):
        raise StudyError(f"{path}: registration.grid = \"ct\" needs a ct for every time point")
    return reg.get("transform"), grid, reg.get("allow_large_motion")


# ---- [kinetics] -----------------------------------------------------------------------------

#: a single time point may lie at most this many effective half-lives after the
#: administration: TIA = a(t1) exp(lambda t1) / lambda extrapolates the frame back by
#: 2^(t1 / T_eff), more than 2^10 = 1024x beyond it (the result is then the half-life's guess)
STP_MAX_HALF_LIVES = 10.0


def _stp_half_life(kin: Section, t1_h: float, t_phys_h: float, nuclide: str,
                   path: Path) -> float:
    t_eff = kin.need("effective_half_life_h", ' (single_time_point = "effective" needs it)')
    if t_eff > t_phys_h * (1 + 1e-9):
        raise StudyError(f"{path}: kinetics.effective_half_life_h = {t_eff:g} h exceeds "
                         f"{nuclide}'s physical half-life ({t_phys_h:.4g} h), which an "
                         "effective half-life cannot; correct it, or use single_time_point = "
                         '"physical"')
    if t1_h > STP_MAX_HALF_LIVES * t_eff:
        raise StudyError(f"{path}: the one time point ({t1_h:g} h) is "
                         f"{t1_h / t_eff:.3g} effective half-lives ({t_eff:g} h) after the "
                         "administration: the single-time-point TIA would extrapolate the "
                         f"frame back {2 ** (t1_h / t_eff):.3g}x (at most "
                         f"{STP_MAX_HALF_LIVES:g} half-lives accepted); check "
                         "kinetics.effective_half_life_h")
    return t_eff


def kinetics(kin: Section, tps: list[TimePoint], nuclide, path: Path):
    """(single-time-point method, its half-life in h); both None with several time points,
    and with one time point when the study file does not say (then
    :func:`require_single_time_point` refuses to integrate it).

    ``physical`` integrates a(t1) with the physical half-life, ``effective`` with
    ``effective_half_life_h`` (<= the physical one; the time point at most
    :data:`STP_MAX_HALF_LIVES` of them after the administration)."""
    given = [k for k in ("single_time_point", "effective_half_life_h") if kin.has(k)]
    if len(tps) > 1:
        if given:
            raise StudyError(f"{path}: kinetics.{given[0]} is for a study with one time "
                             f"point; this one has {len(tps)}, which are fitted: remove it")
        return None, None
    method = kin.get("single_time_point")
    if method is None:
        if kin.has("effective_half_life_h"):
            raise StudyError(f"{path}: kinetics.effective_half_life_h needs "
                             'kinetics.single_time_point = "effective"; add it')
        return None, None
    t_phys_h = nuclide.half_life_s / 3600.0
    if method == "physical":
        if kin.has("effective_half_life_h"):
            raise StudyError(f"{path}: kinetics.effective_half_life_h is given but "
                             'single_time_point = "physical" integrates with the physical '
                             'half-life; remove it or set single_time_point = "effective"')
        return method, t_phys_h
    return method, _stp_half_life(kin, tps[0].time_h, t_phys_h, nuclide.name, path)


def require_single_time_point(study) -> None:
    """A study with one time point is integrated only as its study file says (``voxdose
    run``; loading it for other uses does not need the method)."""
    if len(study.timepoints) == 1 and study.single_time_point is None:
        raise StudyError(
            f"{study.path}: the study has one time point, so the study file must say how to "
            "integrate it: add [kinetics] single_time_point = \"physical\" (the activity "
            "stays and decays physically only, e.g. microspheres) or single_time_point = "
            "\"effective\" with effective_half_life_h = ... (Hänscheid et al. 2018)")


def user_dpk(dose: Section, nuclide, base: Path, path: Path) -> Path | None:
    dpk = optional_file(dose, "dpk", base, path)
    if dpk is not None:
        from ..kernels.point import read_dpk_csv

        read_dpk_csv(dpk, nuclide=nuclide.name)  # validate now, before any work
    return dpk


# ---- [pvc] (with [spect] resolution_fwhm_mm) ------------------------------------------------

def pvc(pv: Section, sp: Section, tps: list[TimePoint], ref: int, structures_given: bool,
        dose_grid: str, base: Path, path: Path):
    """(method, FWHM (x, y, z) mm or None, RC table path or None) of the partial-volume
    correction (docs/pvc.md), checked before any work: the method against what it needs
    (the FWHM, an RC table, structures), the FWHM against the reference SPECT's voxels
    (0 < FWHM <= 50 mm, >= a fifth of a voxel), the RC table's rows (monotone, in (0, 1]),
    and that the label grid covers the reference SPECT's activity (at most 1 % outside)."""
    from ..core.errors import InputError
    from ..pvc.correct import check_method
    from ..pvc.psf import GaussianPsf
    from ..pvc.rc import read_rc_table

    method, fwhm = pv.get("method"), sp.get("resolution_fwhm_mm")
    table = optional_file(pv, "rc_table", base, path)
    tp = tps[ref]
    try:
        check_method(method, fwhm, table, where="pvc.method =")
        spect_grid = grid_of(tp.spect, f"timepoints[{ref}].spect", path, tp.spect_dicom)
        psf = None if fwhm is None else GaussianPsf.from_value(
            fwhm, spect_grid, "spect.resolution_fwhm_mm")
        if table is not None:
            read_rc_table(table)
    except StudyError:
        raise
    except InputError as exc:
        raise StudyError(f"{path}: {exc}") from None
    if method != "none":
        if not structures_given:
            raise StudyError(f'{path}: pvc.method = "{method}" corrects structure by '
                             "structure and needs [structures] (labels + names, or an "
                             'RTSTRUCT); add them or set pvc.method = "none"')
        if dose_grid == "ct":
            raise StudyError(f'{path}: pvc.method = "{method}" models the SPECT voxels and '
                             'needs the series on the SPECT grid: remove registration.grid = '
                             '"ct" (the correction itself puts the TIA and the dose on the '
                             "structures' grid)")
        _check_pvc_coverage(tp, ref, spect_grid, path)
    return method, (None if psf is None else psf.fwhm_mm_xyz), table


def _check_pvc_coverage(tp: TimePoint, ref: int, spect_grid, path: Path) -> None:
    """The structures' grid (the reference CT's; the SPECT's without CTs) must hold all but
    :data:`voxdose.pvc.gtm.MAX_UNCOVERED_ACTIVITY` of the reference SPECT's activity."""
    import numpy as np

    from ..imaging.occupancy import box_average
    from ..pvc.gtm import MAX_UNCOVERED_ACTIVITY, uncovered_activity_fraction

    if tp.ct is None:
        return  # the structures are on the SPECT grid itself
    from .images import read_timepoint_spect

    label_grid = grid_of(tp.ct, f"timepoints[{ref}].ct", path, tp.ct_dicom)
    covered = box_average(np.ones(label_grid.shape, np.float32), label_grid, spect_grid)
    frac = uncovered_activity_fraction(covered, read_timepoint_spect(tp).data)
    if frac > MAX_UNCOVERED_ACTIVITY:
        raise StudyError(f"{path}: the structures' grid (the reference CT, "
                         f"{label_grid.describe()}) does not cover the SPECT field: "
                         f"{100 * frac:.1f} % of the reference SPECT's activity lies outside "
                         f"it (at most {100 * MAX_UNCOVERED_ACTIVITY:g} % for the partial-volume"
                         " correction); give a CT covering the SPECT field, or set "
                         'pvc.method = "none"')
