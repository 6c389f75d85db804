"""Closed forms for a uniform sphere blurred by an isotropic 3-D Gaussian (no FFT, no grid).

Profile
    A ball of radius ``R`` (concentration 1) convolved with a Gaussian of standard deviation
    ``s``, at distance ``r`` from its centre (integrating the Gaussian over spherical
    shells; e.g. Hoffman, Huang & Phelps 1979, J Comput Assist Tomogr 3:299 for the
    partial-volume effect of spheres):

        f(r) = 1/2 [erf((R - r)/(sqrt2 s)) + erf((R + r)/(sqrt2 s))]
               - s / (r sqrt(2 pi)) [exp(-(r - R)^2 / 2s^2) - exp(-(r + R)^2 / 2s^2)],

    with the limit ``f(0) = erf(R/(sqrt2 s)) - sqrt(2/pi) (R/s) exp(-R^2/2s^2)`` (the
    recovery at the centre, the *maximum* recovery).

Volume-averaged recovery (the mean over the sphere, what a VOI on the sphere measures)
    ``RC = (1/V) int_S int_S G(x - x') dx dx' = int G(u) g(|u|) du`` where
    ``g(u) = |S ∩ (S + u)| / V = 1 - 3u/(4R) + u^3/(16 R^3)`` (u <= 2R, else 0) is the ball's
    normalised geometric covariogram (e.g. Matheron 1975, Random Sets and Integral
    Geometry).  ``|u|`` of a 3-D Gaussian follows the Maxwell law
    ``p(u) = sqrt(2/pi) u^2 / s^3 exp(-u^2 / 2s^2)``, so with ``a = 2R``, ``z = a/s``,
    ``W = z^2/2``:

        P   = int_0^a p       = erf(z/sqrt2) - sqrt(2/pi) z e^-W
        M1  = int_0^a u p     = sqrt(2/pi) 2 s   [1 - (1 + W) e^-W]
        M3  = int_0^a u^3 p   = sqrt(2/pi) 4 s^3 [2 - (2 + 2W + W^2) e^-W]
        RC  = P - 3 M1 / (4R) + M3 / (16 R^3).

    Limits: ``RC -> 1 - (3/sqrt(2 pi)) s/R`` for ``R >> s`` (surface-to-volume loss) and
    ``RC -> V / (2 pi s^2)^(3/2)`` for ``R << s``.  The test suite checks this against
    ``(3/R^3) int_0^R f(r) r^2 dr`` by quadrature, an independent route.

Voxels
    An RC measured on SPECT voxels of size ``d`` with fractional-occupancy VOIs sees the PSF
    convolved with the voxel box twice (the image is a voxel average, the VOI mean another):
    :func:`effective_sigma_mm` gives ``s_eff^2 = s^2 + d^2/6`` (Gaussian approximation of the
    two boxes' variance ``2 d^2/12`` per axis; the geometric mean voxel size for
    anisotropic voxels).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

from .psf import FWHM_TO_SIGMA

SQRT2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def sphere_radius_mm(volume_ml) -> np.ndarray:
    """Radius (mm) of a sphere of ``volume_ml`` (1 mL = 1000 mm^3)."""
    return np.cbrt(3.0 * np.asarray(volume_ml, dtype=np.float64) * 1000.0 / (4.0 * math.pi))


def sphere_volume_ml(radius_mm) -> np.ndarray:
    return 4.0 / 3.0 * math.pi * np.asarray(radius_mm, dtype=np.float64) ** 3 / 1000.0


def blurred_sphere_profile(r_mm, radius_mm: float, sigma_mm: float) -> np.ndarray:
    """``f(r)``: a unit-concentration ball of radius R blurred by a Gaussian (module doc)."""
    r = np.abs(np.asarray(r_mm, dtype=np.float64))
    big_r, s = float(radius_mm), float(sigma_mm)
    two_s2 = 2.0 * s * s
    erfs = 0.5 * (erf((big_r - r) / (SQRT2 * s)) + erf((big_r + r) / (SQRT2 * s)))
    x = r * big_r / (s * s)
    small = x < 1e-4
    rs = np.where(small, 1.0, r)
    diff = np.exp(-(r - big_r) ** 2 / two_s2) - np.exp(-(r + big_r) ** 2 / two_s2)
    term = s / (rs * math.sqrt(2.0 * math.pi)) * diff
    # r -> 0: diff = 2 sinh(x) exp(-(r^2 + R^2)/2s^2), sinh(x)/x = 1 + x^2/6
    limit = (2.0 * big_r / (s * math.sqrt(2.0 * math.pi)) * (1.0 + x * x / 6.0)
             * np.exp(-(r * r + big_r * big_r) / two_s2))
    return erfs - np.where(small, limit, term)


def sphere_recovery(radius_mm, sigma_mm) -> np.ndarray:
    """Volume-averaged recovery of a uniform ball blurred by an isotropic Gaussian
    (closed form of the module docstring); broadcasts over its arguments."""
    big_r = np.asarray(radius_mm, dtype=np.float64)
    s = np.asarray(sigma_mm, dtype=np.float64)
    z = 2.0 * big_r / s
    w = 0.5 * z * z
    e = np.exp(-w)
    p = erf(z / SQRT2) - SQRT_2_OVER_PI * z * e
    m1 = SQRT_2_OVER_PI * 2.0 * s * (1.0 - (1.0 + w) * e)
    m3 = SQRT_2_OVER_PI * 4.0 * s ** 3 * (2.0 - (2.0 + 2.0 * w + w * w) * e)
    return p - 3.0 * m1 / (4.0 * big_r) + m3 / (16.0 * big_r ** 3)


def centre_recovery(radius_mm, sigma_mm) -> np.ndarray:
    """``f(0)``: the recovery at the sphere's centre (its maximum)."""
    q = np.asarray(radius_mm, dtype=np.float64) / np.asarray(sigma_mm, dtype=np.float64)
    return erf(q / SQRT2) - SQRT_2_OVER_PI * q * np.exp(-0.5 * q * q)


def effective_sigma_mm(sigma_mm, voxel_mm) -> np.ndarray:
    """``sqrt(s^2 + d^2/6)``: the PSF seen by a VOI mean on voxels of size ``d`` (module doc);
    ``voxel_mm`` a number or the (z, y, x) spacing (geometric mean used)."""
    d = float(np.prod(np.asarray(voxel_mm, dtype=np.float64)) ** (1.0 / np.size(voxel_mm)))
    return np.sqrt(np.asarray(sigma_mm, dtype=np.float64) ** 2 + d * d / 6.0)


def blurred_box_profile(x_mm, lo_mm: float, hi_mm: float, sigma_mm: float) -> np.ndarray:
    """1-D factor of a blurred box: ``(erf((hi - x)/(sqrt2 s)) - erf((lo - x)/(sqrt2 s)))/2``."""
    x = np.asarray(x_mm, dtype=np.float64)
    s = SQRT2 * float(sigma_mm)
    return 0.5 * (erf((hi_mm - x) / s) - erf((lo_mm - x) / s))


def fit_fwhm_mm(volume_ml, recovery, voxel_mm=0.0, bounds_mm=(1.0, 50.0)) -> float:
    """The FWHM (mm) whose closed-form recovery best fits measured sphere recoveries.

    Least squares in RC over the spheres, ``RC_j = sphere_recovery(R_j, sigma_eff)`` with
    ``sigma_eff^2 = sigma^2 + d^2/6`` (:func:`effective_sigma_mm`; ``voxel_mm`` = d, 0 for a
    VOI evaluated without voxel averaging).  A way to get ``resolution_fwhm_mm`` from the
    same sphere-phantom measurement as the RC table (docs/pvc.md).
    """
    from scipy.optimize import minimize_scalar

    r_mm = sphere_radius_mm(volume_ml)
    rc = np.asarray(recovery, dtype=np.float64)

    def cost(fwhm):
        s = effective_sigma_mm(fwhm * FWHM_TO_SIGMA, voxel_mm) if voxel_mm else \
            fwhm * FWHM_TO_SIGMA
        return float(np.sum((sphere_recovery(r_mm, s) - rc) ** 2))

    res = minimize_scalar(cost, bounds=bounds_mm, method="bounded",
                          options={"xatol": 1e-6})
    return float(res.x)
