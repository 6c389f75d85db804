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

    [plan]                             # optional: activity planning from dose limits
    limits_gy = { kidneys = 23.0, marrow = 1.0 }   # structure names, "kidneys" (all
                                       # kidney_* structures) or "marrow" (EANM L2-L4 result)
    after_h = { marrow = 336.0 }       # the limit applies to the dose delivered after t0 (h)

Everything is checked before any computation starts; an error names the key and file.
"""

from __future__ import annotations

import itertools
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from ..errors import StudyError
from ..nuclide import Nuclide, load_nuclide
from .sitk_adapter import grid_from_sitk

SUPPORTED_SPECT_UNITS = ("Bq/mL", "kBq/mL", "MBq/mL")
_UNIT_TO_BQ_ML = {"Bq/mL": 1.0, "kBq/mL": 1e3, "MBq/mL": 1e6}


@dataclass(frozen=True)
class TimePoint:
    time_h: float
    spect: Path
    ct: Path | None


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


def load_study(path) -> Study:
    """Read and fully validate a study file. Raises :class:`StudyError` with one clear line."""
    path = Path(path).resolve()
    if not path.exists():
        raise StudyError(f"study file not found: {path}")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StudyError(f"{path}: not valid TOML ({exc})") from None
    base = path.parent

    st = _need(doc, "study", "", path, dict)
    nuclide = load_nuclide(_need(st, "nuclide", "study.", path, str))
    a0 = _number(st, "administered_activity_mbq", "study.", path)
    name = str(st.get("name", path.parent.name))

    sp = doc.get("spect", {})
    units = sp.get("units", "Bq/mL")
    if units not in _UNIT_TO_BQ_ML:
        raise StudyError(f"{path}: spect.units = {units!r} is not supported; use one of "
                         f"{', '.join(SUPPORTED_SPECT_UNITS)} and spect.calibration_factor "
                         "to convert counts")
    cal = _number(sp, "calibration_factor", "spect.", path, default=1.0)
    decay_corrected = sp.get("decay_corrected", False)
    if not isinstance(decay_corrected, bool):
        raise StudyError(f"{path}: spect.decay_corrected must be true or false")

    tps_raw = _need(doc, "timepoints", "", path, list)
    if not tps_raw:
        raise StudyError(f"{path}: [[timepoints]] is empty; give at least one time point")
    tps = []
    for i, tp in enumerate(tps_raw):
        where = f"timepoints[{i}]."
        t_h = _number(tp, "time_h", where, path, positive=False)
        if t_h < 0:
            raise StudyError(f"{path}: {where}time_h = {t_h} is before the administration")
        spect = _file(base, _need(tp, "spect", where, path), where + "spect", path)
        ct = _file(base, tp["ct"], where + "ct", path) if "ct" in tp else None
        tps.append(TimePoint(t_h, spect, ct))
    times = [tp.time_h for tp in tps]
    if any(b <= a for a, b in itertools.pairwise(times)):
        raise StudyError(f"{path}: timepoints must be in strictly increasing time_h, got {times}")
    if any(tp.ct is None for tp in tps) and any(tp.ct is not None for tp in tps):
        raise StudyError(f"{path}: give a ct for every time point or for none")

    ref = st.get("reference_timepoint", 0)
    if not isinstance(ref, int) or isinstance(ref, bool) or not 0 <= ref < len(tps):
        raise StudyError(f"{path}: study.reference_timepoint must be an index 0..{len(tps) - 1}")

    for i, tp in enumerate(tps):
        _header_grid(tp.spect, f"timepoints[{i}].spect", path)
        if tp.ct is not None:
            _header_grid(tp.ct, f"timepoints[{i}].ct", path)

    labels, names = None, {}
    if "structures" in doc:
        s = doc["structures"]
        labels = _file(base, _need(s, "labels", "structures.", path), "structures.labels", path)
        names_path = _file(base, _need(s, "names", "structures.", path), "structures.names",
                           path)
        try:
            raw = json.loads(names_path.read_text())
            names = {int(k): str(v) for k, v in raw.items()}
        except (ValueError, AttributeError):
            raise StudyError(f"{names_path}: must be a JSON object like "
                             '{"1": "liver", "2": "kidney_left"}') from None
        lab_grid = _header_grid(labels, "structures.labels", path)
        ref_tp = tps[ref]
        target = ref_tp.ct if ref_tp.ct is not None else ref_tp.spect
        ref_grid = _header_grid(target, f"timepoints[{ref}]", path)
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
    return Study(path, name, nuclide, a0, ref, cal * _UNIT_TO_BQ_ML[units], decay_corrected,
                 tuple(tps), labels, names, sex,
                 {k: float(v) for k, v in limits.items()} if limits else None,
                 {k: float(v) for k, v in after.items()} if after else None)
