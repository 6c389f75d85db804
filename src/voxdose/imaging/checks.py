"""Plausibility of activity frames, one policy for every command (``run`` and ``tia``).

Each check either passes, passes with a warning (unusual but valid: the caller records it
in provenance), or raises :class:`~voxdose.core.errors.InputError` with one line naming the
file and what to do. Thresholds (documented in docs/io.md):

* **finite**: a NaN or infinite voxel is an error (a NaN block over a lesion gave 0.18 Gy
  instead of 20 Gy when it was read as 0).
* **negative activity**: reconstruction noise may leave small negative values (FBP,
  subtraction-based scatter correction). With N = sum of |a| over negative voxels and
  P = sum of a over positive ones, N <= ``NEGATIVE_FRACTION_MAX`` x P is clipped to 0,
  counted and recorded; more is refused (a negated frame, a sign or offset error).
* **activity in the field of view** A_fov(t) = sum a V_voxel (Bq, at acquisition, decay
  correction undone) against the administered activity decayed to t,
  A_adm(t) = A_0 exp(-lambda t): A_fov > ``FOV_EXCESS_MAX`` x A_adm is an error (wrong
  unit, calibration or administered activity: 1 MBq given with GBq in the images gave
  8,930 Gy/GBq); A_fov < ``FOV_LOW_WARN`` x A_adm is a warning (a field of view far from
  the uptake, or most of the activity excreted).
* **resampling loss**: a frame whose activity on the dose grid is below
  (1 - ``RESAMPLE_LOSS_MAX``) of its activity before resampling lies largely outside the
  grid (a SPECT 1 m from its CT became 0): an error.
* **acquisition span** (:func:`check_acquisition_span`): the last time point t_last,
  n = t_last / T_phys physical half-lives after the administration. The activity left,
  2^-n, below ``SPAN_MIN_REMAINING`` (1e-6, n > 19.9) is an error (the frames would hold
  noise: Lu-178m's 23 min against data to 168 h gave 56 % failed fits); n >
  ``SPAN_WARN_HALF_LIVES`` (10, less than 1/1024 left) is a warning.
* **registration** (:func:`check_registration`, measured by
  :func:`voxdose.imaging.registration.plausibility` against the scanner coordinates):
  a translation of the fixed image's centre above ``REG_TRANSLATION_MAX_MM`` (50 mm), a
  rotation above ``REG_ROTATION_MAX_DEG`` (15 degrees), an affine scaling outside
  1 +/- ``REG_SCALE_MAX`` (10 %), or a final Mattes MI worse (higher) than at the scanner
  coordinates by more than ``REG_METRIC_WORSE_TOL`` (2 % of its magnitude) is implausible
  (a truncated CT registered 120 mm off): an error, or with ``[registration]
  allow_large_motion = true`` a warning.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.errors import InputError

#: Negative activity allowed (as clipped noise), fraction of the positive activity.
NEGATIVE_FRACTION_MAX = 0.05
#: Largest activity in the field of view, x the administered activity decayed to the scan.
FOV_EXCESS_MAX = 1.5
#: Below this fraction of the decayed administered activity in the field of view: warning.
FOV_LOW_WARN = 0.01
#: Largest activity lost by resampling a frame onto the dose grid (fraction).
RESAMPLE_LOSS_MAX = 0.05
#: Last time point more than this many physical half-lives after administration: warning.
SPAN_WARN_HALF_LIVES = 10.0
#: Activity left at the last time point (fraction of the administered) below this: error.
SPAN_MIN_REMAINING = 1e-6
#: Registration: largest plausible translation (mm) and rotation (degrees) from the
#: scanner coordinates, affine scaling (|s - 1|), and how much worse (relative to |MI|) the
#: final metric may be than the scanner coordinates' before the result is implausible.
REG_TRANSLATION_MAX_MM = 50.0
REG_ROTATION_MAX_DEG = 15.0
REG_SCALE_MAX = 0.10
REG_METRIC_WORSE_TOL = 0.02


def check_finite(data: np.ndarray, source) -> None:
    """Refuse NaN or infinite voxels."""
    bad = ~np.isfinite(data)
    if bad.any():
        raise InputError(f"{source}: {int(bad.sum())} voxels are NaN or infinite; a damaged "
                         "or masked image: fix or re-export it (voxdose does not guess a "
                         "value for them)")


def clip_negative(data: np.ndarray, source) -> tuple[np.ndarray, dict | None]:
    """``data`` with small negative noise clipped to 0, and a record of what was clipped
    (None when nothing was); substantial negative activity is refused (see the module)."""
    neg = data < 0
    if not neg.any():
        return data, None
    n_abs = float(-data[neg].sum(dtype=np.float64))
    p = float(data[data > 0].sum(dtype=np.float64))
    frac = n_abs / p if p > 0 else math.inf
    if frac > NEGATIVE_FRACTION_MAX:
        raise InputError(f"{source}: negative activity in {int(neg.sum())} voxels, "
                         f"{_pct(frac)} of the positive activity (at most "
                         f"{NEGATIVE_FRACTION_MAX:.0%} is accepted as "
                         "reconstruction noise); check the sign, offset and units of the "
                         "image")
    record = {"negative_voxels_clipped": int(neg.sum()),
              "negative_fraction_of_positive": frac}
    return np.clip(data, 0.0, None), record


def check_not_blank(data, source) -> None:
    """A frame with no voxel above 0 (a blank or failed reconstruction, a frame zeroed by a
    conversion) is an error: fitted, it would pull every voxel's curve to 0 there."""
    if not float(np.max(data)) > 0:
        raise InputError(f"{source}: the frame holds no activity (no voxel above 0): a blank "
                         "or failed reconstruction; give the frame's reconstruction, or leave "
                         "the time point out")


#: CT numbers: a CT in HU whose largest value is at most this is a density or mu-map.
CT_MAX_HU_FOR_DENSITY_MAP = 5.0
#: A CT with (almost) no voxel between ``CT_PADDING_HU`` and ``CT_UNSIGNED_FLOOR_HU`` (no
#: air, lung or fat) and at least ``CT_UNSIGNED_TISSUE_FRACTION`` of its voxels above
#: ``CT_UNSIGNED_TISSUE_HU`` (soft tissue at ~1064 instead of ~40) looks like stored values
#: without the rescale intercept (HU + 1024). Values at or below ``CT_PADDING_HU`` are a
#: scanner's padding outside the reconstruction circle (-2000, -3024), not patient.
CT_PADDING_HU = -1500.0
CT_UNSIGNED_FLOOR_HU = -50.0
#: ... "almost": the fraction of voxels allowed below that floor (noise of air at +24).
CT_UNSIGNED_BELOW_FRACTION = 1e-3
CT_UNSIGNED_TISSUE_HU = 900.0
CT_UNSIGNED_TISSUE_FRACTION = 0.05


def check_ct_in_hu(data, source) -> None:
    """A CT about to be turned into densities (density modes ``scale`` and ``mvs``) must
    hold CT numbers in HU (air -1000, fat about -100, water 0, bone above 300):

    * every value in [0, ``CT_MAX_HU_FOR_DENSITY_MAP``] (5], not all 0: a density map
      (g/cm^3) or a mu-map (1/cm) given as the CT; read as HU it would be water everywhere
      (density 1.0 for lung and bone alike). An all-zero CT (noise-free water) passes;
    * fewer than 0.1 % of the values in (-1500, -50) HU (padding below -1500 ignored) and
      at least 5 % above 900 HU: stored values without the rescale intercept (HU + 1024,
      air at +24 with its noise, soft tissue at ~1064; it would read as 1.6 g/cm^3, its
      dose -40 %). A patient CT holds air, lung or fat (about -100 HU) below -50 HU, and
      only bone above 900 HU; a CT cropped to an organ (no fat) with a coil passes.

    Both are errors naming the file; checked on the CT as read, before resampling."""
    d = np.asarray(data)
    lo, hi = float(np.min(d)), float(np.max(d))
    if lo >= 0 and 0 < hi <= CT_MAX_HU_FOR_DENSITY_MAP:
        raise InputError(f"{source}: CT values span {lo:.4g} to {hi:.4g}: this looks like a "
                         "density map (g/cm^3) or mu-map, not CT numbers in HU (air -1000, "
                         "water 0, bone > 300); give the CT in HU")
    n = max(d.size, 1)
    below = float(np.count_nonzero((d > CT_PADDING_HU) & (d < CT_UNSIGNED_FLOOR_HU))) / n
    dense = float(np.count_nonzero(d > CT_UNSIGNED_TISSUE_HU)) / n
    if below < CT_UNSIGNED_BELOW_FRACTION and dense >= CT_UNSIGNED_TISSUE_FRACTION:
        raise InputError(f"{source}: almost no CT value below -50 HU ({100 * below:.2g} %, "
                         f"{100 * dense:.2g} % above 900 HU; range {lo:.4g} to {hi:.4g}), "
                         "where a patient CT holds air, lung and fat: stored values without "
                         "the rescale intercept (HU + 1024)? Give the CT in HU (apply "
                         "RescaleSlope/RescaleIntercept)")


def check_fov_activity(activity_bq: float, administered_bq: float, decay_per_s: float,
                       time_s: float, source) -> str | None:
    """Compare the activity in the field of view with the administered activity decayed to
    the scan; returns a warning text or None; raises when it exceeds it."""
    if administered_bq is None or not administered_bq > 0:
        return None
    expected = administered_bq * math.exp(-decay_per_s * time_s)
    ratio = activity_bq / expected
    t_h = time_s / 3600.0
    if ratio > FOV_EXCESS_MAX:
        raise InputError(f"{source}: {activity_bq / 1e6:.4g} MBq in the field of view at "
                         f"{t_h:g} h, {ratio:.3g}x the administered activity decayed to that "
                         f"time ({expected / 1e6:.4g} MBq; at most {FOV_EXCESS_MAX:g}x "
                         "accepted); check the image units, calibration and the study's "
                         "administered_activity_mbq")
    if ratio < FOV_LOW_WARN:
        return (f"{source}: only {_pct(ratio)} of the administered activity (decayed to "
                f"{t_h:g} h) is in the field of view")
    return None


def check_resampling_loss(before_bq: float, after_bq: float, source) -> None:
    """Refuse a frame that lost more than RESAMPLE_LOSS_MAX of its activity in resampling."""
    if before_bq > 0 and after_bq < (1.0 - RESAMPLE_LOSS_MAX) * before_bq:
        raise InputError(f"{source}: resampling onto the dose grid kept only "
                         f"{_pct(after_bq / before_bq)} of the frame's activity (the frame "
                         "lies largely outside the grid); check the registration and that "
                         "SPECT and CT cover the same patient region")


def check_acquisition_span(times_h, half_life_h: float, nuclide: str, source) -> str | None:
    """The last time point against the physical half-life (see the module): returns a
    warning text or None; raises when less than SPAN_MIN_REMAINING of the administered
    activity is left at the last time point."""
    t_last = float(max(times_h))
    n = t_last / half_life_h
    left = 2.0 ** -n
    what = (f"the last time point, {t_last:g} h, is {n:.3g} {nuclide} half-lives "
            f"({half_life_h:.4g} h) after the administration")
    if left < SPAN_MIN_REMAINING:
        raise InputError(f"{source}: {what}: {left:.2g} of the administered activity is left "
                         f"(less than {SPAN_MIN_REMAINING:g}), so the frames would hold noise; "
                         "check study.nuclide and the time points")
    if n > SPAN_WARN_HALF_LIVES:
        return (f"{source}: {what} (more than {SPAN_WARN_HALF_LIVES:g}; {left:.2g} of the "
                "activity left): the late frames carry little signal")
    return None


def registration_problems(p: dict) -> list[str]:
    """What is implausible about a registration (:func:`plausibility`'s record)."""
    out = []
    if p["translation_mm"] > REG_TRANSLATION_MAX_MM:
        out.append(f"moved the image {p['translation_mm']:.0f} mm from the scanner "
                   f"coordinates (more than {REG_TRANSLATION_MAX_MM:g} mm)")
    if p["rotation_deg"] > REG_ROTATION_MAX_DEG:
        out.append(f"rotated it {p['rotation_deg']:.1f} degrees (more than "
                   f"{REG_ROTATION_MAX_DEG:g})")
    lo, hi = p.get("scale_extremes", (1.0, 1.0))
    if lo < 1.0 - REG_SCALE_MAX or hi > 1.0 + REG_SCALE_MAX:
        out.append(f"scaled it by {lo:.3g} to {hi:.3g} (beyond 1 +/- {REG_SCALE_MAX:g})")
    m0, m1 = p.get("metric_initial"), p.get("metric_final")
    if m0 is not None and m1 is not None and m1 > m0 + REG_METRIC_WORSE_TOL * abs(m0):
        out.append(f"matches worse than the scanner coordinates (Mattes MI {m1:.4g} "
                   f"against {m0:.4g}, lower is better)")
    return out


def check_registration(p: dict, allow_large_motion: bool, source) -> str | None:
    """Refuse an implausible registration (see the module), or with ``allow_large_motion``
    return it as a warning text; None when plausible."""
    problems = registration_problems(p)
    if not problems:
        return None
    what = f"{source}: the registration to the reference is implausible: it " + \
        "; it ".join(problems)
    if allow_large_motion:
        return what + " (accepted: [registration] allow_large_motion = true)"
    raise InputError(f"{what}; check that the images cover the same region (a truncated or "
                     "wrong CT?) and the time point's files; if the patient really moved that "
                     "much, set [registration] allow_large_motion = true in the study file")


def _pct(x: float) -> str:
    return "inf %" if not math.isfinite(x) else f"{100 * x:.3g} %"
