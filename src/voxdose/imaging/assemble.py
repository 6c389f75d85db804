"""Assemble a study into one activity series: register, resample, undo decay correction.

Output: :class:`ActivitySeries`, frames (t, z, y, x) in Bq/mL on the reference SPECT grid,
times since administration in s, activity present at acquisition (not decay-corrected).

Inputs are image files (NIfTI/MHD/NRRD) or DICOM series (see ``docs/io.md``): a DICOM
time point carries its own conversion to Bq/mL and decay-correction undo factor, worked
out from its tags when the study file was validated.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from ..core.errors import StudyError
from ..core.grid import Grid, LabelMap
from ..study.images import read_study_labels, read_timepoint_ct, read_timepoint_spect
from ..study.load import Study
from ..core.nuclide import Nuclide
from .occupancy import fractional_occupancy
from .checks import (check_acquisition_span, check_finite, check_fov_activity, check_not_blank,
                     check_registration, check_resampling_loss, clip_negative)
from .registration import (
    Registration,
    identity_registration,
    plausibility,
    register,
    resample_concentration,
    resample_labels,
)
from ..core.units import hours_to_seconds


@dataclass(frozen=True, eq=False)
class ActivitySeries:
    """Activity-concentration frames on one grid.

    frames_bq_ml : (t, z, y, x) activity concentration at acquisition time, Bq/mL (host
        memory as assembled; :meth:`on` moves them to a device once)
    times_s : (t,) time after administration, s
    decay_corrected : False here: frames hold the activity present at each time
    """

    frames_bq_ml: np.ndarray
    grid: Grid
    times_s: np.ndarray
    nuclide: Nuclide
    decay_corrected: bool = False
    info: dict = field(default_factory=dict)

    def on(self, backend) -> ActivitySeries:
        """This series with its frames on ``backend``'s device (itself when already there)."""
        frames = backend.asarray(self.frames_bq_ml)
        return self if frames is self.frames_bq_ml else replace(self, frames_bq_ml=frames)

    def total_activity_bq(self) -> np.ndarray:
        """Activity in the field of view per frame, Bq."""
        return self.frames_bq_ml.reshape(len(self.times_s), -1).sum(axis=1) * \
            self.grid.voxel_volume_ml


def _administered_bq(study: Study) -> float | None:
    mbq = getattr(study, "administered_activity_mbq", None)
    return None if mbq is None else float(mbq) * 1e6


#: A structure keeping less than this fraction of its label-grid volume on the dose grid
#: lies partly outside the field of view (warned).
LABEL_COVERAGE_WARN = 0.99


def labels_on_grid(lab: LabelMap, grid: Grid) -> tuple[LabelMap, list[str]]:
    """The structures on the dose grid: a hard label map (majority vote, for figures and
    contours) carrying the fractional occupancy of every voxel computed from the label grid
    (``LabelMap.occupancy``: volumes, masses and dose statistics). Labels already on
    ``grid`` are returned as they are (whole voxels, no occupancy).

    Also returns one warning per structure whose volume on ``grid``, sum_v f(v) V_vox, is
    below :data:`LABEL_COVERAGE_WARN` of its label-grid volume n V_label (partly outside)."""
    names = dict(lab.names)
    if lab.grid.same_as(grid, tol_mm=1e-3):
        return LabelMap(np.asarray(lab.data), grid, names), []
    occ = fractional_occupancy(lab.data, lab.grid, grid, names)
    hard = LabelMap(resample_labels(lab.data, lab.grid, grid), grid, names, occ)
    warns = []
    data = np.asarray(lab.data)
    for value, name in sorted(names.items()):
        before = float(np.count_nonzero(data == value)) * lab.grid.voxel_volume_ml
        after = occ.volume_ml(value)
        if before > 0 and after < LABEL_COVERAGE_WARN * before:
            warns.append(f"structure '{name}': {after:.4g} of its {before:.4g} mL lie inside "
                         f"the dose grid ({100 * (1 - after / before):.1f} % outside the field "
                         "of view, left out of its volume and DVH)")
    return hard, warns


def _checked_spect(study: Study, i: int, tp, spect, reports: list, warns: list):
    """A time point's SPECT in Bq/mL as stored: finite, small negative noise clipped to 0
    (recorded), its field-of-view activity checked against the administered activity."""
    if tp.spect_dicom is None:  # image file: its unit factor (study file and sidecar)
        spect = spect.with_data(spect.data * (study.spect_to_bq_ml if tp.to_bq_ml is None
                                              else tp.to_bq_ml))
    src = tp.spect
    check_finite(spect.data, src)
    clipped, neg = clip_negative(spect.data, src)
    if neg is not None:
        spect = spect.with_data(clipped)
        reports.append({"time_index": i, **neg})
        warns.append(f"{src}: {neg['negative_voxels_clipped']} negative voxels "
                     f"({100 * neg['negative_fraction_of_positive']:.2g} % of the "
                     "positive activity) clipped to 0")
    check_not_blank(spect.data, src)
    lam = study.nuclide.decay_constant_per_s
    low = check_fov_activity(float(spect.data.sum()) * spect.grid.voxel_volume_ml *
                             _decay_undo(study, tp), _administered_bq(study), lam,
                             hours_to_seconds(tp.time_h), src)
    if low:
        warns.append(low)
    return spect


def _decay_undo(study: Study, tp) -> float:
    """x this: the activity at acquisition (the time point's factor, set by load_study)."""
    if tp.decay_undo is not None:
        return tp.decay_undo
    return math.exp(-study.nuclide.decay_constant_per_s * hours_to_seconds(tp.time_h)) \
        if study.decay_corrected else 1.0


#: Time points registered at once, in threads (SimpleITK releases the GIL): on 2 cores the
#: demo's four took 1.78 s instead of 2.17 s one at a time (issue 14), the same results bit
#: for bit. Each holds its moving image in memory, hence no more than two.
PARALLEL_REGISTRATIONS = 2


def _register(study: Study, i: int, tp, fixed, spect, use_ct: bool):
    """(registration, its plausibility record, a warning or None) of time point ``i`` (its
    CT, read here, or its checked SPECT) to ``fixed``; an implausible one is refused unless
    the study allows large motion (then the warning). Runs in a worker thread."""
    src = f"time point {i} ({tp.ct or tp.spect})"
    moving = read_timepoint_ct(tp) if use_ct else spect
    try:
        reg = register(fixed, moving, study.registration)
    except RuntimeError as exc:
        raise StudyError(f"registration of {src} to the reference failed: "
                         f"{str(exc).strip()[-120:]}") from None
    p = plausibility(fixed, moving, reg)
    return reg, p, check_registration(p, getattr(study, "allow_large_motion", False), src)


def _frames(study: Study, fixed, ref_spect, grid: Grid, use_ct: bool, progress):
    """Every time point's SPECT read and checked (all first, in order: the cheap checks fail
    before any registration), registered (:data:`PARALLEL_REGISTRATIONS` at once) and
    resampled onto ``grid``: (frames, registrations, reports, warnings), in time-point
    order as one at a time would give them."""
    ref = study.reference_index
    checked = []
    for i, tp in enumerate(study.timepoints):
        rep, warn = [], []
        spect = _checked_spect(study, i, tp, ref_spect if i == ref else
                               read_timepoint_spect(tp), rep, warn)
        checked.append((spect, rep, warn))
    frames, regs, reports, warns = [], [], [], []
    pool = ThreadPoolExecutor(PARALLEL_REGISTRATIONS)
    try:
        jobs = [None if i == ref else pool.submit(_register, study, i, tp, fixed, checked[i][0],
                                                  use_ct)
                for i, tp in enumerate(study.timepoints)]
        for i, tp in enumerate(study.timepoints):
            spect, spect_reports, spect_warns = checked[i]
            reg, plaus, reg_warn = (identity_registration(), None, None) if jobs[i] is None \
                else jobs[i].result()
            reports += spect_reports
            warns += spect_warns + ([reg_warn] if reg_warn else [])
            res, rep = resample_concentration(spect, grid, reg)
            check_resampling_loss(rep["activity_before_bq"], rep["activity_after_bq"], tp.spect)
            frames.append(res.data * _decay_undo(study, tp))
            regs.append(reg)
            reports.append({"time_index": i, "time_h": tp.time_h, **rep,
                            "registration": {**reg.to_dict(),
                                             **({"plausibility": plaus} if plaus else {})},
                            **({"input": tp.info} if tp.spect_dicom is None and tp.info
                               else {})})
            if progress:
                progress(i + 1, len(study.timepoints))
    finally:  # an error: the registrations not started yet are dropped
        pool.shutdown(wait=True, cancel_futures=True)
    return frames, regs, reports, warns


def assemble_series(study: Study, progress=None) -> tuple[ActivitySeries, list[Registration],
                                                          LabelMap | None]:
    """Load every frame, register it to the reference time point, resample to the reference
    SPECT grid, and undo a vendor decay correction. Also brings the labels onto that grid."""
    nuc = study.nuclide
    span = check_acquisition_span(study.times_h, nuc.half_life_s / 3600.0, nuc.name,
                                  study.path)
    warns = [span] if span else []
    # RTSTRUCT contours that (slightly) leave the CT: found when the study was loaded
    warns += study.info.get("structures", {}).get("warnings", [])
    warns += study.info.get("warnings", [])  # [study] override_dicom: what it overrode
    ref = study.reference_index
    ref_spect = read_timepoint_spect(study.timepoints[ref])
    use_ct = study.has_ct
    fixed = read_timepoint_ct(study.timepoints[ref]) if use_ct else ref_spect
    # activity concentration is resampled onto the reference SPECT grid (default) or, on
    # request, the reference CT grid (finer voxels; same intensive-quantity resampling)
    grid = fixed.grid if study.dose_grid == "ct" else ref_spect.grid
    frames, regs, reports, frame_warns = _frames(study, fixed, ref_spect, grid, use_ct,
                                                 progress)
    warns += frame_warns
    labels = None
    lab = read_study_labels(study)
    if lab is not None:
        labels, lab_warns = labels_on_grid(lab, grid)
        warns.extend(lab_warns)
    # what the loader found (sidecars, DICOM keys), without its bookkeeping of the checks
    inputs = {k: v for k, v in (study.info or {}).items() if k != "labels_checked"}
    series = ActivitySeries(np.stack(frames), grid,
                            np.array([hours_to_seconds(t) for t in study.times_h]),
                            study.nuclide, False,
                            {"registration": ("CT-to-CT " if use_ct else "SPECT-to-SPECT ")
                             + study.registration, "grid": study.dose_grid, "frames": reports,
                             "warnings": warns,
                             **({"inputs": inputs} if inputs else {})})
    return series, regs, labels
