"""Per-voxel TIA: trapezoid up to the peak, fitted mono-exponential from the peak to infinity.

For samples (t_i, a_i), i = 0..n-1, times after administration (s), activity
concentration a_i >= 0 (Bq/mL), with k the index of the largest sample:

* head (documented rule: the curve rises linearly from 0 at t = 0 to the first sample)::

      H = trapz([0, t_0, ..., t_k], [0, a_0, ..., a_k])

* tail: a weighted log-linear least-squares fit of a(t) = A exp(-lambda t) to the samples
  k..n-1 that are > 0, with Poisson-like weights w_i = a_i (var(ln a_i) ~ 1/counts_i);
  lambda is bounded below by the physical decay constant lambda_p (biological washout
  cannot be negative); when the bound is active the amplitude is refitted with lambda
  fixed. Integral from t_k to infinity::

      T = A exp(-lambda t_k) / lambda

* TIA concentration = H + T (Bq*s/mL); multiply by the voxel volume for decays per voxel.

Fallbacks (never NaN): fewer than two positive samples from the peak on, or the peak at
the last sample -> physical-decay tail a_last / lambda_p; voxels whose maximum is below the
background threshold -> trapezoid + physical tail (no fit).

The per-voxel maths is one plain function compiled with ``numba.njit`` and run over the
voxels with ``prange``. Status codes per voxel are :data:`STATUS`.
"""

from __future__ import annotations

import numba
import numpy as np

STATUS = {0: "fit", 1: "fit, lambda clamped to physical decay", 2: "physical-decay tail",
          3: "background (trapezoid + physical tail)"}


@numba.njit(cache=True, fastmath=False)
def tia_one_voxel(t_s, a, lam_phys, background):
    """TIA concentration (Bq*s/mL), effective lambda (1/s) and status of one curve."""
    n = t_s.shape[0]
    k = 0
    amax = a[0]
    for i in range(1, n):
        if a[i] > amax:
            amax = a[i]
            k = i
    if amax <= 0.0:
        return 0.0, lam_phys, 3
    # head: 0 at t = 0 rising linearly to the first sample, trapezoids up to the peak k
    head = 0.5 * t_s[0] * max(a[0], 0.0)
    for i in range(1, k + 1):
        head += 0.5 * (t_s[i] - t_s[i - 1]) * (max(a[i], 0.0) + max(a[i - 1], 0.0))
    if amax < background:
        # trapezoid over every sample, physical-decay tail from the last one
        tot = 0.5 * t_s[0] * max(a[0], 0.0)
        for i in range(1, n):
            tot += 0.5 * (t_s[i] - t_s[i - 1]) * (max(a[i], 0.0) + max(a[i - 1], 0.0))
        return tot + max(a[n - 1], 0.0) / lam_phys, lam_phys, 3
    # weighted log-linear fit on samples k..n-1 with a > 0
    sw = 0.0
    swt = 0.0
    swy = 0.0
    swtt = 0.0
    swty = 0.0
    m = 0
    for i in range(k, n):
        if a[i] > 0.0:
            w = a[i]
            y = np.log(a[i])
            sw += w
            swt += w * t_s[i]
            swy += w * y
            swtt += w * t_s[i] * t_s[i]
            swty += w * t_s[i] * y
            m += 1
    if m < 2:
        return head + max(a[n - 1], 0.0) / lam_phys - 0.0, lam_phys, 2
    det = sw * swtt - swt * swt
    if det <= 0.0:
        return head + max(a[k], 0.0) / lam_phys, lam_phys, 2
    slope = (sw * swty - swt * swy) / det
    lam = -slope
    status = 0
    if lam < lam_phys:
        lam = lam_phys
        status = 1
        ln_amp = (swy + lam * swt) / sw
    else:
        ln_amp = (swy - slope * swt) / sw
    tail = np.exp(ln_amp - lam * t_s[k]) / lam
    return head + tail, lam, status


@numba.njit(parallel=True, cache=True)
def _tia_all(t_s, curves, lam_phys, background, tia, lam_eff, status):
    for v in numba.prange(curves.shape[0]):
        r0, r1, r2 = tia_one_voxel(t_s, curves[v], lam_phys, background)
        tia[v] = r0
        lam_eff[v] = r1
        status[v] = r2


def tia_concentration(times_s: np.ndarray, frames: np.ndarray, lambda_phys_per_s: float,
                      background_fraction: float = 1e-3):
    """Fit every voxel of ``frames`` (t, z, y, x) in Bq/mL.

    Returns (tia Bq*s/mL, lambda_eff 1/s, status int8), each shaped (z, y, x).
    ``background_fraction`` x the maximum of all frames is the background threshold.
    """
    times_s = np.ascontiguousarray(times_s, dtype=np.float64)
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 4 or frames.shape[0] != times_s.size:
        raise ValueError(f"frames must be (t, z, y, x) with t = {times_s.size}")
    spatial = frames.shape[1:]
    curves = np.ascontiguousarray(frames.reshape(frames.shape[0], -1).T)
    n = curves.shape[0]
    tia = np.empty(n)
    lam = np.empty(n)
    status = np.empty(n, dtype=np.int8)
    background = float(background_fraction) * float(frames.max(initial=0.0))
    _tia_all(times_s, curves, float(lambda_phys_per_s), background, tia, lam, status)
    return tia.reshape(spatial), lam.reshape(spatial), status.reshape(spatial)
