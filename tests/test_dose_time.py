"""Dose rate, dose after t0 and the nuclide swap, against analytic mono-exponential maps."""

import math

import numpy as np
import pytest

from voxdose.dose.engine import KernelConvolution, LocalDeposition
from voxdose.kinetics.swap import swap_nuclide_tia, swap_tia
from voxdose.kernels.point import point_kernel_for
from voxdose.dose.rate import (
    dose_after,
    dose_rate,
    mono_exponential_activity,
    mono_exponential_tia_after,
)
from voxdose.kernels.voxel import voxel_kernel
from voxdose.core.errors import InputError
from voxdose.core.grid import Grid, Image
from voxdose.core.nuclide import load_nuclide

SP = (4.8, 4.8, 4.8)
LU = load_nuclide("Lu-177")
Y90 = load_nuclide("Y-90")


@pytest.fixture(scope="module")
def setup():
    k = voxel_kernel(point_kernel_for(LU), SP, radius_mm=30.0, n_directions=500, n_radial=200)
    g = Grid.from_spacing((10, 9, 8), SP)
    rng = np.random.default_rng(4)
    tia = rng.random(g.shape) * 1e10
    # per-voxel effective decay: physical plus a biological washout of 0 - 0.05 /h
    lam = LU.decay_constant_per_s + rng.random(g.shape) * 0.05 / 3600.0
    return KernelConvolution(k), g, tia, lam


def test_dose_after_t0_is_the_integral_of_the_dose_rate(setup):
    """int_{t0}^inf Ddot(t) dt (Gauss-Laguerre in time, per-voxel lambdas) = D_after(t0)."""
    eng, g, tia, lam = setup
    t0 = 48 * 3600.0
    after = dose_after(eng, Image(mono_exponential_tia_after(tia, lam, t0), g), t0)
    assert after.unit == "Gy" and after.meta["t0_s"] == t0
    # substitute t = t0 + u / lam_min: integrand smooth; 60-point Gauss-Laguerre is exact
    # to ~1e-9 for these exponentials
    lam_min = float(lam.min())
    u, w = np.polynomial.laguerre.laggauss(60)
    total = np.zeros(g.shape)
    for ui, wi in zip(u, w):
        t = t0 + ui / lam_min
        rate = dose_rate(eng, Image(mono_exponential_activity(tia, lam, t), g), time_s=t)
        total += wi * np.exp(ui) / lam_min * rate.data
    assert rate.unit == "Gy/s" and rate.meta["time_s"] == pytest.approx(t)
    assert np.allclose(total, after.data, rtol=1e-6)


def test_uniform_kinetics_dose_after_and_rate_scale_the_total_dose(setup):
    eng, g, tia, _ = setup
    lam = np.full(g.shape, 1.2 * LU.decay_constant_per_s)
    total = eng.dose(Image(tia, g)).data
    t0 = 100 * 3600.0
    after = dose_after(eng, Image(mono_exponential_tia_after(tia, lam, t0), g), t0).data
    assert np.allclose(after, total * math.exp(-lam[0, 0, 0] * t0), rtol=1e-10)
    rate0 = dose_rate(eng, Image(mono_exponential_activity(tia, lam, 0.0), g)).data
    assert np.allclose(rate0, total * lam[0, 0, 0], rtol=1e-10)   # Ddot(0) = lambda D
    ldm = LocalDeposition(LU)
    r = dose_rate(ldm, Image(mono_exponential_activity(tia, lam, 0.0), g)).data
    assert np.allclose(r, ldm.dose(Image(tia, g)).data * lam[0, 0, 0], rtol=1e-12)


def test_swap_keeps_biology_and_changes_physical_decay():
    lp1, lp2 = LU.decay_constant_per_s, Y90.decay_constant_per_s
    lam_bio = np.array([0.0, 1e-6, 1e-5, 1e-4])
    a0 = np.array([1e6, 2e6, 3e6, 4e6])
    tia1 = a0 / (lp1 + lam_bio)
    tia2 = swap_tia(tia1, lp1 + lam_bio, lp1, lp2)
    assert np.allclose(tia2, a0 / (lp2 + lam_bio), rtol=1e-12)
    # pure physical decay: A~ = A0 / lambda_p for both
    assert tia2[0] == pytest.approx(a0[0] / lp2, rel=1e-12)
    # the swap there and back is the identity; activity ratio scales linearly
    back = swap_tia(tia2, lp2 + lam_bio, lp2, lp1)
    assert np.allclose(back, tia1, rtol=1e-12)
    assert np.allclose(swap_tia(tia1, lp1 + lam_bio, lp1, lp2, 2.0), 2 * tia2)
    # voxels without a usable fit fall back to physical decay
    bad = swap_tia(np.array([5.0, 5.0]), np.array([np.nan, -1.0]), lp1, lp2)
    assert np.allclose(bad, 5.0 * lp1 / lp2)


def test_swap_on_images_records_the_model():
    g = Grid.from_spacing((2, 2, 2), SP)
    lam = np.full(g.shape, LU.decay_constant_per_s * 1.5)
    out = swap_nuclide_tia(Image(np.ones(g.shape), g, meta={"nuclide": "Lu-177"}), lam,
                           "Lu-177", "90Y")
    assert out.meta["nuclide"] == "Y-90" and out.meta["swapped_from"] == "Lu-177"
    lam_bio = 0.5 * LU.decay_constant_per_s
    assert np.allclose(out.data, 1.5 * LU.decay_constant_per_s / (Y90.decay_constant_per_s
                                                                   + lam_bio))
    with pytest.raises(InputError, match="does not match"):
        swap_nuclide_tia(Image(np.ones(g.shape), g), np.ones((3, 3, 3)), "Lu-177", "Y-90")
