"""Activity at t and TIA after t0 from the per-voxel fits (feed dose rate / dose after t0)."""

import math

import numpy as np
import pytest

from voxdose.kinetics.fit import fit_tia
from voxdose.kinetics.models import model_curve
from voxdose.kinetics.after import activity_at, tia_after
from voxdose.core.nuclide import load_nuclide

LAM_S = load_nuclide("Lu-177").decay_constant_per_s
LAM_H = LAM_S * 3600
T_H = np.array([1.0, 4.0, 24.0, 48.0, 168.0])


def _frames():
    """Voxel 0: bi-exponential uptake-washout; voxel 1: mono; voxel 2: empty (trapz)."""
    bi = model_curve(2, [100.0, LAM_H + 0.01, 0.5], T_H)
    mono = model_curve(1, [80.0, LAM_H + 0.02], T_H)
    f = np.zeros((5, 1, 1, 3))
    f[:, 0, 0, 0] = bi
    f[:, 0, 0, 1] = mono
    return f


def test_tia_after_t0_matches_the_closed_form():
    fit = fit_tia(T_H * 3600, _frames(), LAM_S, keep_params=True)
    t0 = 336 * 3600.0
    got = tia_after(fit, T_H * 3600, _frames(), t0)
    l1, l2 = LAM_H + 0.01, 0.5
    bi = 100.0 * (math.exp(-l1 * 336) / l1 - math.exp(-l2 * 336) / l2) * 3600
    mono = 80.0 * math.exp(-(LAM_H + 0.02) * 336) / (LAM_H + 0.02) * 3600
    assert got[0, 0, 0] == pytest.approx(bi, rel=1e-5)
    assert got[0, 0, 1] == pytest.approx(mono, rel=1e-5)
    assert got[0, 0, 2] == 0.0
    # from t0 = 0 it is the whole TIA
    assert tia_after(fit, T_H * 3600, _frames(), 0.0) == pytest.approx(fit.tia, rel=1e-9)


def test_activity_at_t_and_its_integral():
    fit = fit_tia(T_H * 3600, _frames(), LAM_S, keep_params=True)
    a = activity_at(fit, T_H * 3600, _frames(), 24 * 3600.0)
    assert a[0, 0, 0] == pytest.approx(_frames()[2, 0, 0, 0], rel=1e-6)
    # d/dt0 of TIA-after equals minus the activity (finite difference)
    h = 60.0
    d = (tia_after(fit, T_H * 3600, _frames(), 24 * 3600 + h)
         - tia_after(fit, T_H * 3600, _frames(), 24 * 3600 - h)) / (2 * h)
    assert -d[0, 0, :2] == pytest.approx(a[0, 0, :2], rel=1e-4)


def test_trapezoid_voxels_integrate_exactly():
    f = np.zeros((5, 1, 1, 1))
    f[:, 0, 0, 0] = [4.0, 8.0, 6.0, 4.0, 2.0]
    fit = fit_tia(T_H * 3600, f, LAM_S, model="trapz", keep_params=True)
    t0 = 30 * 3600.0
    # hand integral: from 30 h to 48 h linear 24->48 h (6 -> 4), then 48-168 (4 -> 2), tail
    a30 = 6 + (4 - 6) * (30 - 24) / 24
    exact = (0.5 * (48 - 30) * (a30 + 4) + 0.5 * 120 * (4 + 2)) * 3600 + 2 / LAM_S
    assert tia_after(fit, T_H * 3600, f, t0)[0, 0, 0] == pytest.approx(exact, rel=1e-12)
    with pytest.raises(ValueError):
        tia_after(fit_tia(T_H * 3600, f, LAM_S), T_H * 3600, f, t0)
