"""Closed forms for a blurred uniform sphere, checked by routes that share no code with them."""

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.integrate import quad

from voxdose.pvc.analytic import (blurred_sphere_profile, centre_recovery, effective_sigma_mm,
                                  sphere_radius_mm, sphere_recovery, sphere_volume_ml)
from voxdose.pvc.psf import FWHM_TO_SIGMA

SIGMA_10MM = 10.0 * FWHM_TO_SIGMA


@pytest.mark.parametrize("fwhm_mm", [5.0, 10.0, 20.0])
@pytest.mark.parametrize("volume_ml", [0.05, 1.0, 10.0, 100.0, 2000.0])
def test_volume_averaged_recovery_is_the_mean_of_the_profile(volume_ml, fwhm_mm):
    # covariogram closed form vs (3/R^3) int_0^R f(r) r^2 dr of the shell-integrated profile
    r_mm = float(sphere_radius_mm(volume_ml))
    s = fwhm_mm * FWHM_TO_SIGMA
    mean = 3.0 / r_mm ** 3 * quad(lambda r: float(blurred_sphere_profile(r, r_mm, s)) * r * r,
                                  0.0, r_mm, epsabs=1e-14, epsrel=1e-12)[0]
    assert float(sphere_recovery(r_mm, s)) == pytest.approx(mean, abs=1e-10)


def test_profile_keeps_the_activity_and_has_the_known_centre_value():
    r_mm = 12.0
    # int 4 pi r^2 f(r) dr = V (the blur moves activity, never creates or removes it)
    total = quad(lambda r: 4 * math.pi * r * r * float(blurred_sphere_profile(r, r_mm,
                                                                                SIGMA_10MM)),
                 0.0, r_mm + 12 * SIGMA_10MM, epsabs=1e-10, limit=200)[0]
    assert total == pytest.approx(4 / 3 * math.pi * r_mm ** 3, rel=1e-9)
    # r -> 0 limit equals the explicit centre formula erf(q/sqrt2) - sqrt(2/pi) q exp(-q^2/2)
    q = r_mm / SIGMA_10MM
    centre = math.erf(q / math.sqrt(2)) - math.sqrt(2 / math.pi) * q * math.exp(-q * q / 2)
    assert float(blurred_sphere_profile(0.0, r_mm, SIGMA_10MM)) == pytest.approx(centre, 1e-12)
    assert float(blurred_sphere_profile(1e-7, r_mm, SIGMA_10MM)) == pytest.approx(centre, 1e-9)
    assert float(centre_recovery(r_mm, SIGMA_10MM)) == pytest.approx(centre, 1e-12)


def test_profile_against_a_numerically_blurred_voxel_sphere():
    # independent numerics: a 0.5 mm voxel ball blurred by scipy.ndimage.gaussian_filter
    d, r_mm = 0.5, 8.0
    n = 96
    c = (np.arange(n) - (n - 1) / 2) * d
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    ball = (x * x + y * y + z * z <= r_mm * r_mm).astype(np.float64)
    r_eff = (ball.sum() * d ** 3 * 3 / (4 * math.pi)) ** (1 / 3)  # same volume as the voxels
    blurred = ndimage.gaussian_filter(ball, SIGMA_10MM / d, mode="constant")
    line = blurred[n // 2, n // 2, :]
    expect = blurred_sphere_profile(np.abs(c), r_eff, SIGMA_10MM)
    assert np.abs(line - expect).max() < 2e-3  # measured 9.4e-4 (voxelisation)


def test_recovery_limits():
    s = SIGMA_10MM
    # large spheres: 1 - RC -> 3 s / (sqrt(2 pi) R)
    for r_mm in (200.0, 800.0):
        deficit = 1 - float(sphere_recovery(r_mm, s))
        assert deficit == pytest.approx(3 * s / (math.sqrt(2 * math.pi) * r_mm), rel=2 * s / r_mm)
    # small spheres: RC -> V / (2 pi s^2)^(3/2)
    r_mm = 0.2
    v_mm3 = 4 / 3 * math.pi * r_mm ** 3
    assert float(sphere_recovery(r_mm, s)) == pytest.approx(v_mm3 / (2 * math.pi * s * s) ** 1.5,
                                                           rel=1e-2)
    # monotone in volume, bounded by the centre value
    r = sphere_radius_mm(np.geomspace(0.1, 1000, 40))
    rc = sphere_recovery(r, s)
    assert np.all(np.diff(rc) > 0) and np.all(rc < centre_recovery(r, s))
    assert float(sphere_volume_ml(sphere_radius_mm(7.5))) == pytest.approx(7.5)


def test_effective_sigma_adds_two_voxel_boxes():
    assert float(effective_sigma_mm(4.0, 3.0)) == pytest.approx(math.sqrt(16 + 9 / 6))
    assert float(effective_sigma_mm(4.0, (2.0, 4.0, 4.0))) == pytest.approx(
        math.sqrt(16 + 32 ** (2 / 3) / 6))


def test_fwhm_fitted_back_from_recoveries():
    from voxdose.pvc.analytic import fit_fwhm_mm

    v = np.array([0.5, 1.2, 2.6, 5.6, 11.5, 26.5])  # NEMA IEC spheres, mL
    rc = sphere_recovery(sphere_radius_mm(v), effective_sigma_mm(12.0 * FWHM_TO_SIGMA, 4.8))
    assert fit_fwhm_mm(v, rc, voxel_mm=4.8) == pytest.approx(12.0, abs=1e-3)
    assert fit_fwhm_mm(v, rc) > 12.0  # ignoring the voxels attributes their blur to the PSF
