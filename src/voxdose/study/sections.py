"""One parser per study-file table, reading values checked by ``study/schema.py``.

Each takes the table's :class:`~voxdose.study.schema.Section` (plus what it depends on) and
does the checks the schema cannot: files that exist, image grids, keys that need each other.
The DICOM side of ``[study]``, ``[spect]`` and ``[[timepoints]]`` is in ``dicom_keys.py``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from ..core.errors import StudyError
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

    time_h: float | None        # None: from the DICOM times
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
    t_h = e.need("time_h") if e.has("time_h") or h_sp is None else None
    return RawTimePoint(t_h, spect, ct, h_sp, h_ct, e)


def read_timepoints(entries: list[Section], base: Path, path: Path) -> list[RawTimePoint]:
    if not entries:
        raise StudyError(f"{path}: [[timepoints]] is empty; give at least one time point")
    raws = [_raw_timepoint(e, base, path) for e in entries]
    if any(r.ct is None for r in raws) and any(r.ct is not None for r in raws):
        raise StudyError(f"{path}: give a ct for every time point or for none")
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

def spect_to_bq_ml(sp: Section, tps: list[TimePoint], path: Path) -> float:
    """The factor from image-file SPECT pixel values to Bq/mL."""
    units = sp.get("units")
    nifti_units = units if units in UNIT_TO_BQ_ML else None
    if nifti_units is None and any(tp.spect_dicom is None for tp in tps) \
            and not sp.has("calibration_factor"):
        raise StudyError(f"{path}: spect.units = \"counts\" needs spect.calibration_factor "
                         "(Bq/mL per count) for the image-file time points")
    return sp.get("calibration_factor") * (UNIT_TO_BQ_ML[nifti_units] if nifti_units else 1.0)


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
    info["structures"] = {"rtstruct": str(rts.path), "rois": names,
                          "skipped_external": list(rts.skipped),
                          "frame_of_reference_checked": bool(ref_for)}
    return names, rts


def _read_names(names_path: Path) -> dict[int, str]:
    from ..io.names import read_names_json

    return read_names_json(names_path, error=StudyError)


def _label_structures(s: Section, ref_tp: TimePoint, ref: int, base: Path, path: Path):
    labels = resolve_file(base, s.need("labels"), "structures.labels", path)
    names = _read_names(resolve_file(base, s.need("names"), "structures.names", path))
    lab_grid = header_grid(labels, "structures.labels", path)
    if ref_tp.ct is not None:
        ref_grid = grid_of(ref_tp.ct, f"timepoints[{ref}]", path, ref_tp.ct_dicom)
    else:
        ref_grid = grid_of(ref_tp.spect, f"timepoints[{ref}]", path, ref_tp.spect_dicom)
    if not lab_grid.same_as(ref_grid, tol_mm=1e-2):
        raise StudyError(
            f"{path}: structures.labels grid ({lab_grid.describe()}) does not match the "
            f"reference time point's {'CT' if ref_tp.ct else 'SPECT'} grid "
            f"({ref_grid.describe()}); resample the labels onto it")
    return labels, names


def structures(s: Section, tps: list[TimePoint], ref: int, base: Path, path: Path,
               info: dict):
    """(labels file, names, RTSTRUCT header): labels + names, or an RTSTRUCT, or nothing."""
    if not s.present:
        return None, {}, None
    if s.has("rtstruct"):
        names, rts = _rtstruct_structures(s, tps[ref], base, path, info)
        return None, names, rts
    labels, names = _label_structures(s, tps[ref], ref, base, path)
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
    return limits or None, after or None


def registration(reg: Section, tps: list[TimePoint], path: Path) -> tuple[str, str]:
    """(transform, grid)."""
    grid = reg.get("grid")
    if grid == "ct" and not all(tp.ct is not None for tp in tps):
        raise StudyError(f"{path}: registration.grid = \"ct\" needs a ct for every time point")
    return reg.get("transform"), grid


def user_dpk(dose: Section, nuclide, base: Path, path: Path) -> Path | None:
    dpk = optional_file(dose, "dpk", base, path)
    if dpk is not None:
        from ..kernels.point import read_dpk_csv

        read_dpk_csv(dpk, nuclide=nuclide.name)  # validate now, before any work
    return dpk
