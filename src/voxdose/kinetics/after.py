"""Per-voxel kinetics after the fit: activity at a time t and TIA from a time t0 on.

These feed the dose engine's dose-rate and dose-after-t0 functions
(:mod:`voxdose.dose.rate`): the dose rate at t is the kernel applied to the activity
(Bq per voxel) at t, and the dose delivered after t0 (e.g. from a stem-cell transplant on)
is the kernel applied to the TIA from t0 to infinity.

For fitted voxels (model ids 1-4, parameters from :func:`voxdose.kinetics.fit.fit_tia` with
``keep_params=True``; amplitudes Bq/mL, decay constants 1/h) the curve is the model's sum of
exponential terms a(t) = sum_k c_k e^(-l_k t) (table in :mod:`voxdose.kinetics.models`),
evaluated by the fitter's own code (:func:`voxdose.kinetics.lm_core.terms_map_cpu`):
activity a(t) and int_t0^inf a dt = sum_k c_k e^(-l_k t0) / l_k.

For trapezoid voxels (model 0) the curve is the piecewise-linear interpolation through
(0, 0) and the samples, followed by a_last exp(-lambda_tail (t - t_last)) with lambda_tail the
voxel's ``lambda_eff``; its integral from t0 is taken exactly.
Times in s at this boundary; activity in Bq/mL (multiply by the voxel volume for Bq).
"""

from __future__ import annotations

import numpy as np

from . import lm_core
from .fit import TiaFit


def _unpack(fit: TiaFit):
    if fit.params is None:
        raise ValueError("the fit has no parameters: call fit_tia(..., keep_params=True)")
    return np.asarray(fit.model), np.asarray(fit.params)  # (z, y, x), (z, y, x, 5)


def _fitted(fit: TiaFit, t_h: float, integral: bool) -> np.ndarray:
    """a(t_h) or int_t_h^inf a dt (h) of every fitted voxel (model 1-4); 0 elsewhere."""
    model, p = _unpack(fit)
    out = np.zeros(model.size)
    lm_core.terms_map_cpu(np.ascontiguousarray(model.ravel(), dtype=np.int64),
                          np.ascontiguousarray(p.reshape(-1, p.shape[-1]), dtype=np.float64),
                          float(t_h), bool(integral), out)
    return out.reshape(model.shape)


def activity_at(fit: TiaFit, times_s, frames_bq_ml, t_s: float) -> np.ndarray:
    """Activity concentration (Bq/mL) of every voxel at time ``t_s`` (s after administration)."""
    out = _fitted(fit, t_s / 3600.0, False)
    m0 = fit.model == 0
    if m0.any():
        out[m0] = _trapz_curve_at(np.asarray(times_s, float), np.asarray(frames_bq_ml)[:, m0],
                                  fit.lambda_eff_per_s[m0], t_s)
    return out


def tia_after(fit: TiaFit, times_s, frames_bq_ml, t0_s: float) -> np.ndarray:
    """Time-integrated activity concentration from ``t0_s`` to infinity (Bq*s/mL)."""
    out = _fitted(fit, t0_s / 3600.0, True) * 3600.0  # (Bq/mL) h -> (Bq/mL) s
    m0 = fit.model == 0
    if m0.any():
        out[m0] = _trapz_integral_from(np.asarray(times_s, float),
                                       np.asarray(frames_bq_ml)[:, m0],
                                       fit.lambda_eff_per_s[m0], t0_s)
    return np.clip(out, 0.0, None)


def _trapz_curve_at(t, a, lam_tail, t_s):
    a = np.clip(a, 0.0, None)
    if t_s >= t[-1]:
        return a[-1] * np.exp(-lam_tail * (t_s - t[-1]))
    tt = np.r_[0.0, t]
    aa = np.vstack([np.zeros((1, a.shape[1])), a])
    i = np.searchsorted(tt, t_s, side="right") - 1
    w = (t_s - tt[i]) / (tt[i + 1] - tt[i])
    return aa[i] * (1 - w) + aa[i + 1] * w


def _trapz_integral_from(t, a, lam_tail, t0_s):
    a = np.clip(a, 0.0, None)
    tail = a[-1] / lam_tail
    if t0_s >= t[-1]:
        return tail * np.exp(-lam_tail * (t0_s - t[-1]))
    tt = np.r_[0.0, t]
    aa = np.vstack([np.zeros((1, a.shape[1])), a])
    total = tail.copy()
    for k in range(len(tt) - 1):
        lo, hi = max(tt[k], t0_s), tt[k + 1]
        if hi <= lo:
            continue
        f_lo = _trapz_curve_at(t, a, lam_tail, lo) if lo > tt[k] else aa[k]
        total += 0.5 * (hi - lo) * (f_lo + aa[k + 1])
    return total
