"""Study-file values against the JSON sidecars of image-file SPECT frames.

A NIfTI / MHD / NRRD SPECT frame may have a JSON sidecar beside it (``spect_001h.json`` for
``spect_001h.nii.gz``: voxdose writes them, and so do dcm2niix and BIDS converters). What a
sidecar says about its frame is set against the study file, as ``dicom_keys.py`` does for
DICOM tags:

* said in both and different: an error naming both sources and both values;
* said in one of them only: taken from there, and where it came from recorded (the time
  point's ``info``: provenance ``assembly.frames[i].input``; study-level values in
  ``Study.info["study_keys"]``);
* said in neither: the study file's default (recorded as the default).

Sidecar keys read (:data:`SIDECAR_KEYS`; voxdose's own spelling first, then the DICOM-named
keys dcm2niix writes, then BIDS-PET's):

========================  ==================================================================
pixel unit                ``unit``, ``units``, ``Unit``, ``Units`` (Bq/mL, kBq/mL, MBq/mL,
                          counts; also BQML, CNTS, Bq/cc)
decay correction          ``decay_corrected`` (+ ``decay_correction_time_h``, h after the
                          administration, default 0); ``DecayCorrection`` (NONE, START: to
                          the acquisition start, ADMIN); ``ImageDecayCorrected`` (+
                          ``ImageDecayCorrectionTime`` and ``InjectionStart``, s)
acquisition time          ``time_h``; ``ScanStart`` - ``InjectionStart`` (s)
nuclide                   ``nuclide``, ``Radionuclide``, ``TracerRadionuclide``
administered activity     ``administered_activity_mbq``; ``RadionuclideTotalDose`` (Bq);
                          ``InjectedRadioactivity`` with ``InjectedRadioactivityUnits``
========================  ==================================================================

Two spellings of one value in one sidecar that disagree are an error. Tolerances: times
:data:`SAME_TIME_S` (60 s, as for DICOM), activities :data:`SAME_ACTIVITY_REL` (1 %).
Undoing a decay correction to the reference time t_ref (h after administration): the
activity at acquisition is the stored value x exp(-lambda (t - t_ref)); START counts as
t_ref = t (the frame already holds the activity at the start of its acquisition).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import InputError, NuclideError, StudyError
from ..core.nuclide import Nuclide, canonical_name
from ..io.sitk_adapter import read_sidecar as read_sidecar_json
from ..io.sitk_adapter import sidecar_path
from .model import TimePoint
from .schema import Section
from .sections import RawTimePoint, image_to_bq_ml

#: acquisition / decay-reference times this close count as the same (s)
SAME_TIME_S = 60.0
#: administered activities this close (relative) count as the same
SAME_ACTIVITY_REL = 0.01

#: the sidecar keys voxdose reads, per quantity
SIDECAR_KEYS = {
    "unit": ("unit", "units", "Unit", "Units"),
    "decay": ("decay_corrected", "DecayCorrection", "ImageDecayCorrected"),
    "time_h": ("time_h", "ScanStart"),
    "nuclide": ("nuclide", "Radionuclide", "TracerRadionuclide"),
    "activity_mbq": ("administered_activity_mbq", "RadionuclideTotalDose",
                     "InjectedRadioactivity"),
}
_UNITS = {"bq/ml": "Bq/mL", "bqml": "Bq/mL", "bq/cc": "Bq/mL", "bq/cm3": "Bq/mL",
          "kbq/ml": "kBq/mL", "kbq/cc": "kBq/mL", "mbq/ml": "MBq/mL", "mbq/cc": "MBq/mL",
          "counts": "counts", "cnts": "counts"}
_ACTIVITY_UNITS_MBQ = {"Bq": 1e-6, "kBq": 1e-3, "MBq": 1.0, "GBq": 1e3}


@dataclass(frozen=True)
class Decay:
    """A frame's decay correction: ``ref_h`` = the time it was corrected to (h after the
    administration), None = not corrected; ``start``: to its own acquisition start."""

    ref_h: float | None
    start: bool = False

    def describe(self) -> str:
        if self.start:
            return "decay-corrected to the acquisition start"
        if self.ref_h is None:
            return "not decay-corrected"
        return ("decay-corrected to the administration" if abs(self.ref_h) * 3600 <= SAME_TIME_S
                else f"decay-corrected to {self.ref_h:g} h after the administration")


@dataclass(frozen=True)
class Sidecar:
    """What one SPECT frame's sidecar says (None: not said)."""

    path: Path
    where: str                      # "timepoints[2].spect"
    unit: str | None = None
    decay: Decay | None = None
    time_h: float | None = None
    nuclide: str | None = None
    activity_mbq: float | None = None

    def name(self) -> str:
        return f"the JSON sidecar {self.path} of {self.where}"


# ---- reading --------------------------------------------------------------------------------

def _said(v) -> bool:
    """A value is given: not null and not an empty string (voxdose writes "unit": "" for
    images without a unit)."""
    return v is not None and not (isinstance(v, str) and not v.strip())


def _bad(car: Path, key: str, v, what: str) -> StudyError:
    return StudyError(f"{car}: '{key}' = {v!r} is not {what}; fix the JSON sidecar")


def _number(d: dict, key: str, car: Path) -> float | None:
    if key not in d or d[key] is None:
        return None
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _bad(car, key, v, "a number")
    return float(v)


def _one(car: Path, what: str, found: dict, same=lambda a, b: a == b):
    """The one value of ``found`` {key: value} (None when empty); spellings that disagree
    are an error."""
    vals = {k: v for k, v in found.items() if v is not None}
    first = next(iter(vals.values()), None)
    if any(not same(v, first) for v in vals.values()):
        listing = ", ".join(f"{k} = {v!r}" for k, v in vals.items())
        raise StudyError(f"{car}: the sidecar gives two different {what}s ({listing}); "
                         "correct it")
    return first


def _same_decay(a: Decay, b: Decay) -> bool:
    """Both not corrected or corrected to the acquisition start, or both corrected to
    references within SAME_TIME_S."""
    if a.ref_h is None or b.ref_h is None:
        return a.ref_h is None and b.ref_h is None
    return abs(a.ref_h - b.ref_h) * 3600.0 <= SAME_TIME_S


def _read_unit(d: dict, car: Path) -> str | None:
    found = {}
    for k in SIDECAR_KEYS["unit"]:
        v = d.get(k)
        if not _said(v):
            continue
        u = _UNITS.get(v.strip().lower().replace(" ", "")) if isinstance(v, str) else None
        if u is None:
            raise StudyError(f"{car}: '{k}' = {v!r} is not an activity-concentration unit "
                             "voxdose reads (Bq/mL, kBq/mL, MBq/mL, counts); point the "
                             "time point's spect at the activity image or fix the sidecar")
        found[k] = u
    return _one(car, "pixel unit", found)


def _bids_seconds_after_injection(d: dict, key: str, car: Path, what: str) -> float | None:
    t = _number(d, key, car)
    if t is None:
        return None
    inj = _number(d, "InjectionStart", car)
    if inj is None:
        raise StudyError(f"{car}: '{key}' (the {what}) needs 'InjectionStart' to be read "
                         "relative to the administration; add it or remove the key")
    return (t - inj) / 3600.0


def _read_decay(d: dict, car: Path) -> Decay | None:
    found: dict = {}
    v = d.get("decay_corrected")
    if v is not None:
        if not isinstance(v, bool):
            raise _bad(car, "decay_corrected", v, "true or false")
        ref = _number(d, "decay_correction_time_h", car)
        found["decay_corrected"] = Decay((0.0 if ref is None else ref) if v else None)
    v = d.get("DecayCorrection")
    if v is not None:
        code = str(v).strip().upper()
        if code not in ("NONE", "START", "ADMIN"):
            raise _bad(car, "DecayCorrection", v, "NONE, START or ADMIN")
        found["DecayCorrection"] = {"NONE": Decay(None), "START": Decay(None, start=True),
                                    "ADMIN": Decay(0.0)}[code]
    v = d.get("ImageDecayCorrected")
    if v is not None:
        if not isinstance(v, bool):
            raise _bad(car, "ImageDecayCorrected", v, "true or false")
        ref = _bids_seconds_after_injection(d, "ImageDecayCorrectionTime", car,
                                            "decay-correction time") if v else None
        if v and ref is None:
            raise StudyError(f"{car}: ImageDecayCorrected is true but "
                             "ImageDecayCorrectionTime is missing: the reference time of the "
                             "correction is unknown; add it to the sidecar")
        found["ImageDecayCorrected"] = Decay(ref if v else None)
    return _one(car, "decay correction", found, _same_decay)


def _read_time_h(d: dict, car: Path) -> float | None:
    own = _number(d, "time_h", car)
    bids = _bids_seconds_after_injection(d, "ScanStart", car, "scan start")
    if own is not None and bids is not None and abs(own - bids) * 3600.0 > SAME_TIME_S:
        raise StudyError(f"{car}: the sidecar gives two different acquisition times "
                         f"(time_h = {own:g} h, ScanStart - InjectionStart = {bids:g} h); "
                         "correct it")
    return own if own is not None else bids


def _read_nuclide(d: dict, car: Path) -> str | None:
    found = {}
    for k in SIDECAR_KEYS["nuclide"]:
        if _said(d.get(k)):
            try:
                found[k] = canonical_name(d[k])
            except NuclideError:
                raise _bad(car, k, d[k], "a nuclide name like Lu-177 or 177Lu") from None
    return _one(car, "nuclide", found)


def _read_activity_mbq(d: dict, car: Path) -> float | None:
    found = {"administered_activity_mbq": _number(d, "administered_activity_mbq", car)}
    bq = _number(d, "RadionuclideTotalDose", car)
    found["RadionuclideTotalDose"] = None if bq is None else bq * 1e-6
    inj = _number(d, "InjectedRadioactivity", car)
    if inj is not None:
        unit = d.get("InjectedRadioactivityUnits")
        if unit not in _ACTIVITY_UNITS_MBQ:
            raise _bad(car, "InjectedRadioactivityUnits", unit, "one of Bq, kBq, MBq, GBq")
        found["InjectedRadioactivity"] = inj * _ACTIVITY_UNITS_MBQ[unit]
    vals = {k: v for k, v in found.items() if v is not None}
    ref = next(iter(vals.values()), None)
    for k, v in vals.items():
        if abs(v - ref) > SAME_ACTIVITY_REL * abs(ref):
            listing = ", ".join(f"{k} = {v:g} MBq" for k, v in vals.items())
            raise StudyError(f"{car}: the sidecar gives two different administered "
                             f"activities ({listing}); correct it")
    return ref


def read_sidecar(spect: Path, where: str, study_path: Path) -> Sidecar | None:
    """The sidecar of one image-file SPECT frame, None when it has none (a sidecar that is
    not a readable JSON object is an error, ``io.sitk_adapter.read_sidecar``)."""
    try:
        d = read_sidecar_json(spect)
    except InputError as exc:
        raise StudyError(f"{study_path}: {where}: {exc}") from None
    if not d:
        return None
    car = sidecar_path(spect)
    return Sidecar(car, where, _read_unit(d, car), _read_decay(d, car), _read_time_h(d, car),
                   _read_nuclide(d, car), _read_activity_mbq(d, car))


def read_sidecars(raws: list[RawTimePoint], study_path: Path) -> dict[int, Sidecar]:
    """{time-point index: Sidecar} of the image-file SPECT frames that have one."""
    out = {}
    for i, r in enumerate(raws):
        if r.spect_h is None:
            car = read_sidecar(r.spect, f"timepoints[{i}].spect", study_path)
            if car is not None:
                out[i] = car
    return out


# ---- study-level values: nuclide, administered activity -------------------------------------

def _common(cars: dict[int, Sidecar], attr: str, what: str, study_path: Path,
            same=lambda a, b: a == b):
    """(value, first sidecar giving it) over every sidecar; None when none gives it. Two
    sidecars that disagree are an error."""
    given = [(getattr(c, attr), c) for c in cars.values() if getattr(c, attr) is not None]
    for v, c in given[1:]:
        if not same(v, given[0][0]):
            raise StudyError(f"{study_path}: the time points' JSON sidecars disagree on the "
                             f"{what}: {given[0][0]} in {given[0][1].path}, {v} in {c.path}; "
                             "correct the sidecars")
    return given[0] if given else None


def same_activity(a: float, b: float) -> bool:
    return abs(a - b) <= SAME_ACTIVITY_REL * max(abs(a), abs(b))


def _contradicts(study_path: Path, key: str, key_value, car: Sidecar, what: str,
                 car_value) -> StudyError:
    return StudyError(f"{study_path}: {key} = {key_value} in the study file contradicts "
                      f"{what} {car_value} in {car.name()}; correct one of them")


def _sidecar_nuclide(st: Section, cars, dicom_sp, path: Path, values: dict, record: dict):
    got = _common(cars, "nuclide", "nuclide", path)
    if got is None:
        return
    nuc, car = got
    if st.has("nuclide"):
        key = canonical_name(st.get("nuclide"))
        if key != nuc:
            raise _contradicts(path, "study.nuclide", key, car, "the nuclide", nuc)
        record["nuclide"] = f"study file; JSON sidecar {car.path} agrees"
        return
    for _, h in dicom_sp:
        if h.nuclide and h.nuclide != nuc:
            raise StudyError(f"{path}: the nuclide {nuc} in {car.name()} contradicts "
                             f"RadionuclideCodeSequence (0054,0300) = {h.nuclide} in "
                             f"{h.first_file}; correct one of them")
    values["nuclide"] = nuc
    record["nuclide"] = f"JSON sidecar {car.path}"


def _sidecar_activity(st: Section, cars, path: Path, values: dict, record: dict):
    got = _common(cars, "activity_mbq", "administered activity (MBq)", path, same_activity)
    if got is None:
        return
    mbq, car = got
    if st.has("administered_activity_mbq"):
        key = st.get("administered_activity_mbq")
        if not same_activity(key, mbq):
            raise _contradicts(path, "study.administered_activity_mbq", f"{key:g}", car,
                               "the administered activity", f"{mbq:g} MBq")
        record["administered_activity_mbq"] = f"study file; JSON sidecar {car.path} agrees"
        return
    values["administered_activity_mbq"] = mbq
    record["administered_activity_mbq"] = f"JSON sidecar {car.path}"


def study_keys(st: Section, cars: dict[int, Sidecar], dicom_sp: list, path: Path,
               info: dict) -> Section:
    """``[study]`` completed from the sidecars: the nuclide and the administered activity
    when the study file lacks them (recorded in ``info["study_keys"]``); a sidecar that
    contradicts the study file, a DICOM tag or another sidecar is an error."""
    values, record = dict(st.values), {}
    _sidecar_nuclide(st, cars, dicom_sp, path, values, record)
    _sidecar_activity(st, cars, path, values, record)
    if record:
        info["study_keys"] = record
    return Section(st.table, values, st.where, st.path, st.present)


# ---- one image-file time point: time, pixel unit, decay correction --------------------------

def _time(i: int, r: RawTimePoint, car: Sidecar | None, path: Path, info: dict) -> float:
    key = r.time_h
    side = None if car is None else car.time_h
    if key is None and side is None:
        raise StudyError(f"{path}: missing key 'timepoints[{i}].time_h' (the SPECT file has "
                         "no JSON sidecar giving its time); add it to the study file")
    if key is not None and side is not None and abs(key - side) * 3600.0 > SAME_TIME_S:
        raise _contradicts(path, f"timepoints[{i}].time_h", f"{key:g} h", car,
                           "the acquisition time", f"{side:g} h")
    info["time_from"] = _source(key is not None, side is not None)
    return key if key is not None else side


def _source(in_key: bool, in_sidecar: bool) -> str:
    if in_key and in_sidecar:
        return "study file and JSON sidecar (agree)"
    return "study file" if in_key else "JSON sidecar" if in_sidecar else "default"


def _unit(sp: Section, car: Sidecar | None, where: str, path: Path, info: dict) -> str:
    side = None if car is None else car.unit
    if sp.has("units") and side is not None and sp.get("units") != side:
        raise _contradicts(path, "spect.units", f'"{sp.get("units")}"', car,
                           "the pixel unit", f'"{side}"')
    info["units_from"] = _source(sp.has("units"), side is not None)
    return sp.get("units") if sp.has("units") or side is None else side


def _key_decay(sp: Section) -> Decay:
    return Decay(0.0 if sp.get("decay_corrected") else None)


def _decay_agrees(key: Decay, side: Decay, t_h: float) -> bool:
    """The study file's true (to the administration) or false (activity at acquisition)
    against the sidecar's correction (START or a reference at the acquisition: as false)."""
    at_acquisition = side.start or side.ref_h is None or \
        abs(side.ref_h - t_h) * 3600.0 <= SAME_TIME_S
    if key.ref_h is None:
        return at_acquisition
    return side.ref_h is not None and not side.start and abs(side.ref_h) * 3600.0 <= SAME_TIME_S


def _decay(sp: Section, car: Sidecar | None, t_h: float, path: Path, info: dict) -> Decay:
    side = None if car is None else car.decay
    if sp.has("decay_corrected") and side is not None and \
            not _decay_agrees(_key_decay(sp), side, t_h):
        raise StudyError(f"{path}: spect.decay_corrected = "
                         f"{str(sp.get('decay_corrected')).lower()} in the study file "
                         f"contradicts {car.name()}, which says the frame is "
                         f"{side.describe()}; correct one of them")
    info["decay_from"] = _source(sp.has("decay_corrected"), side is not None)
    d = side if side is not None and not sp.has("decay_corrected") else _key_decay(sp)
    if d.ref_h is not None and d.ref_h * 3600.0 < -SAME_TIME_S:
        raise StudyError(f"{car.path}: the frame is {d.describe()}, before the "
                         "administration; fix the sidecar")
    info["decay_correction"] = d.describe()
    return d


def decay_undo_factor(d: Decay, t_h: float, decay_per_s: float) -> float:
    """x this: the activity at acquisition, exp(-lambda (t - t_ref)); 1 when not corrected
    or corrected to the acquisition start."""
    if d.start or d.ref_h is None:
        return 1.0
    return math.exp(-decay_per_s * (t_h - d.ref_h) * 3600.0)


def image_timepoint(i: int, r: RawTimePoint, car: Sidecar | None, sp: Section,
                    decay_per_s: float, path: Path) -> TimePoint:
    """An image-file time point with its time, factor to Bq/mL and decay-correction undo
    worked out from the study file and the frame's sidecar (see the module)."""
    info: dict = {"sidecar": None if car is None else str(car.path)}
    t_h = _time(i, r, car, path, info)
    unit = _unit(sp, car, f"timepoints[{i}].spect", path, info)
    to_bq = image_to_bq_ml(unit, sp, path)
    undo = decay_undo_factor(_decay(sp, car, t_h, path, info), t_h, decay_per_s)
    info.update({"units": unit, "to_bq_ml": to_bq, "decay_undo_factor": undo})
    return TimePoint(time_h=t_h, spect=r.spect, ct=r.ct, ct_dicom=r.ct_h, to_bq_ml=to_bq,
                     decay_undo=undo, info=info)


def image_timepoints(tps: list[TimePoint], raws: list[RawTimePoint],
                     cars: dict[int, Sidecar], sp: Section, nuclide: Nuclide,
                     path: Path) -> list[TimePoint]:
    """``tps`` with every image-file time point resolved by :func:`image_timepoint`
    (DICOM time points as they are)."""
    lam = nuclide.decay_constant_per_s
    return [tp if r.spect_h is not None else
            image_timepoint(i, r, cars.get(i), sp, lam, path)
            for i, (tp, r) in enumerate(zip(tps, raws, strict=True))]


# ---- the CTs' sidecars ---------------------------------------------------------------------

#: sidecar units that mean CT numbers (compared without case and spaces)
CT_UNITS = ("HU", "Hounsfield units", "Hounsfield unit", "Hounsfield")
#: a CT acquired this long before or after its SPECT still belongs to it (h), unless it is
#: nearer to another time point's SPECT (see :func:`check_ct_sidecars`)
CT_SPECT_GAP_H = 2.0


def _ct_belongs_elsewhere(i: int, t_ct: float, tps: list[TimePoint]) -> bool:
    """Time point i's CT, acquired at ``t_ct`` (h), is not its own: more than
    ``CT_SPECT_GAP_H`` from its SPECT, or nearer to another time point's SPECT."""
    own = abs(t_ct - tps[i].time_h)
    return own > CT_SPECT_GAP_H or any(abs(t_ct - o.time_h) < own
                                        for k, o in enumerate(tps) if k != i)


def check_ct_sidecars(tps: list[TimePoint], path: Path) -> None:
    """Each image-file CT's JSON sidecar (when it has one) against its time point: a unit
    other than HU (a density map in g/cm^3, a mu-map) is an error, and so is an acquisition
    time (``time_h``, BIDS ``ScanStart``) that makes it another time point's
    (:func:`_ct_belongs_elsewhere`). Nothing but the sidecars is read."""
    ok_units = {"".join(u.lower().split()) for u in CT_UNITS}
    for i, tp in enumerate(tps):
        if tp.ct is None or tp.ct_dicom is not None:
            continue
        where = f"timepoints[{i}].ct"
        try:
            d = read_sidecar_json(tp.ct)
        except InputError as exc:
            raise StudyError(f"{path}: {where}: {exc}") from None
        if not d:
            continue
        car = sidecar_path(tp.ct)
        unit = _one(car, "unit", {k: d[k] for k in SIDECAR_KEYS["unit"] if _said(d.get(k))})
        if unit is not None and "".join(str(unit).lower().split()) not in ok_units:
            raise StudyError(f"{path}: {where} {tp.ct}: its JSON sidecar {car} gives the unit "
                             f"'{unit}'; the CT is read as CT numbers in HU (a density map or "
                             "mu-map is not a CT): give the CT in HU, or fix the sidecar")
        t_ct = _read_time_h(d, car)
        if t_ct is not None and _ct_belongs_elsewhere(i, t_ct, tps):
            raise StudyError(f"{path}: {where} {tp.ct}: its JSON sidecar {car} says it was "
                             f"acquired at {t_ct:g} h, but the time point's SPECT is at "
                             f"{tp.time_h:g} h (more than {CT_SPECT_GAP_H:g} h apart, or "
                             f"nearer another time point's): the CT of another time point? "
                             f"point {where} at this time point's CT (or fix the sidecar)")
