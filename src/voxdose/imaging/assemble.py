"""Assemble a study into one activity series: register, resample, undo decay correction.

Output: :class:`ActivitySeries`, frames (t, z, y, x) in Bq/mL on the reference SPECT grid,
times since administration in s, activity present at acquisition (not decay-corrected).

Inputs are image files (NIfTI/MHD/NRRD) or DICOM series (see ``docs/io.md``): a DICOM
time point carries its own conversion to Bq/mL and decay-correction undo factor, worked
out from its tags when the study file was validated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..core.errors import StudyError
from ..core.grid import Grid, LabelMap
from ..study.images import read_study_labels, read_timepoint_ct, read_timepoint_spect
from ..study.load import Study
from ..core.nuclide import Nuclide
from .checks import check_finite, check_fov_activity, check_resampling_loss, clip_negative
from .registration import (
    Registration,
    identity_registration,
    register,
    resample_concentration,
    resample_labels,
)
from ..core.units import hours_to_seconds


@dataclass(frozen=True, eq=False)
class ActivitySeries:
    """Activity-concentration frames on one grid.

    frames_bq_ml : (t, z, y, x) activity concentration at acquisition time, Bq/mL
    times_s : (t,) time after administration, s
    decay_corrected : False here: frames hold the activity present at each time
    """

    frames_bq_ml: np.ndarray
    grid: Grid
    times_s: np.ndarray
    nuclide: Nuclide
    decay_corrected: bool = False
    info: dict = field(default_factory=dict)

    def total_activity_bq(self) -> np.ndarray:
        """Activity in the field of view per frame, Bq."""
        return self.frames_bq_ml.reshape(len(self.times_s), -1).sum(axis=1) * \
            self.grid.voxel_volume_ml


def _administered_bq(study: Study) -> float | None:
    mbq = getattr(study, "administered_activity_mbq", None)
    return None if mbq is None else float(mbq) * 1e6


def assemble_series(study: Study, progress=None) -> tuple[ActivitySeries, list[Registration],
                                                          LabelMap | None]:
    """Load every frame, register it to the reference time point, resample to the reference
    SPECT grid, and undo a vendor decay correction. Also brings the labels onto that grid."""
    ref = study.reference_index
    ref_spect = read_timepoint_spect(study.timepoints[ref])
    use_ct = study.has_ct
    fixed = read_timepoint_ct(study.timepoints[ref]) if use_ct else ref_spect
    # activity concentration is resampled onto the reference SPECT grid (default) or, on
    # request, the reference CT grid (finer voxels; same intensive-quantity resampling)
    grid = fixed.grid if study.dose_grid == "ct" else ref_spect.grid
    lam = study.nuclide.decay_constant_per_s
    frames, regs, reports, warns = [], [], [], []
    for i, tp in enumerate(study.timepoints):
        spect = ref_spect if i == ref else read_timepoint_spect(tp)
        if tp.spect_dicom is None:
            spect = spect.with_data(spect.data * study.spect_to_bq_ml)
        src = tp.spect
        check_finite(spect.data, src)
        clipped, neg = clip_negative(spect.data, src)
        if neg is not None:
            spect = spect.with_data(clipped)
            reports.append({"time_index": i, **neg})
            warns.append(f"{src}: {neg['negative_voxels_clipped']} negative voxels "
                         f"({100 * neg['negative_fraction_of_positive']:.2g} % of the "
                         "positive activity) clipped to 0")
        undo = (tp.decay_undo if tp.decay_undo is not None else
                math.exp(-lam * hours_to_seconds(tp.time_h)) if study.decay_corrected else 1.0)
        low = check_fov_activity(float(spect.data.sum()) * spect.grid.voxel_volume_ml * undo,
                                 _administered_bq(study), lam, hours_to_seconds(tp.time_h),
                                 src)
        if low:
            warns.append(low)
        if i == ref:
            reg = identity_registration()
        else:
            moving = read_timepoint_ct(tp) if use_ct else spect
            try:
                reg = register(fixed, moving, study.registration)
            except RuntimeError as exc:
                raise StudyError(f"registration of time point {i} ({tp.ct or tp.spect}) to the "
                                 f"reference failed: {str(exc).strip()[-120:]}") from None
        res, rep = resample_concentration(spect, grid, reg)
        check_resampling_loss(rep["activity_before_bq"], rep["activity_after_bq"], src)
        data = res.data
        if tp.decay_undo is not None:  # DICOM: from DecayCorrection (0054,1102)
            data = data * tp.decay_undo
        elif study.decay_corrected:
            data = data * np.exp(-lam * hours_to_seconds(tp.time_h))
        frames.append(data)
        regs.append(reg)
        reports.append({"time_index": i, "time_h": tp.time_h, **rep,
                        "registration": reg.to_dict()})
        if progress:
            progress(i + 1, len(study.timepoints))
    labels = None
    lab = read_study_labels(study)
    if lab is not None:
        labels = LabelMap(resample_labels(lab.data, lab.grid, grid), grid, dict(lab.names))
    series = ActivitySeries(np.stack(frames), grid,
                            np.array([hours_to_seconds(t) for t in study.times_h]),
                            study.nuclide, False,
                            {"registration": ("CT-to-CT " if use_ct else "SPECT-to-SPECT ")
                             + study.registration, "grid": study.dose_grid, "frames": reports,
                             "warnings": warns,
                             **({"dicom": study.info} if study.info else {})})
    return series, regs, labels
