"""Per-voxel TIA: exact on the curves it models, physical-decay bound, no NaN."""

import math

import numpy as np
import pytest

from voxdose.kinetics.tail_fit import tia_concentration
from voxdose.nuclide import load_nuclide

LAM_LU = load_nuclide("Lu-177").decay_constant_per_s
T_S = np.array([1.0, 4.0, 24.0, 48.0, 168.0]) * 3600.0


def _frames(curve, shape=(2, 3, 4)):
    return np.broadcast_to(np.asarray(curve)[:, None, None, None], (len(curve), *shape)).copy()


def test_pure_physical_decay_integrates_to_a0_over_lambda():
    a0 = 1000.0
    tia, lam, _ = tia_concentration(T_S, _frames(a0 * np.exp(-LAM_LU * T_S)), LAM_LU)
    # exact: a0/lambda; the head rule (linear rise from 0 to the first sample) loses
    # int_0^t0 a(t) dt - a(t0) t0 / 2 which we add back to compare exactly
    head_loss = a0 * (1 - math.exp(-LAM_LU * T_S[0])) / LAM_LU - 0.5 * T_S[0] * a0 * math.exp(
        -LAM_LU * T_S[0])
    assert tia[0, 0, 0] + head_loss == pytest.approx(a0 / LAM_LU, rel=1e-6)
    assert lam[0, 0, 0] == pytest.approx(LAM_LU, rel=1e-6)


def test_washout_faster_than_physical_is_recovered():
    lam_eff = LAM_LU + math.log(2) / (20 * 3600)
    a = 50.0 * np.exp(-lam_eff * T_S)
    _, lam, status = tia_concentration(T_S, _frames(a), LAM_LU)
    assert lam[0, 0, 0] == pytest.approx(lam_eff, rel=1e-6)
    assert status[0, 0, 0] == 0


def test_biexponential_uptake_washout_within_two_percent():
    l1 = LAM_LU + math.log(2) / (50 * 3600)
    l2 = LAM_LU + math.log(2) / (1.5 * 3600)
    a = np.exp(-l1 * T_S) - np.exp(-l2 * T_S)
    tia, _, _ = tia_concentration(T_S, _frames(a), LAM_LU)
    assert tia[0, 0, 0] == pytest.approx(1 / l1 - 1 / l2, rel=0.02)


def test_slower_than_physical_is_clamped_to_physical_decay():
    # apparent half-life longer than physical (noise): lambda must not go below lambda_p
    a = 10.0 * np.exp(-0.5 * LAM_LU * T_S)
    _, lam, status = tia_concentration(T_S, _frames(a), LAM_LU)
    assert lam[0, 0, 0] == pytest.approx(LAM_LU)
    assert status[0, 0, 0] == 1


def test_zeros_background_and_peak_at_end_never_nan():
    curves = np.array([
        [0, 0, 0, 0, 0],            # empty voxel
        [1e-9, 0, 0, 0, 0],         # below background
        [1, 2, 3, 4, 5],            # still rising at the last point
        [5, 0, 0, 0, 1],            # only one positive point after the peak... and a late one
    ], dtype=float).T
    frames = curves[:, :, None, None]
    tia, _, _ = tia_concentration(T_S, frames, LAM_LU)
    assert np.all(np.isfinite(tia)) and np.all(tia >= 0)
    assert tia[0, 0, 0] == 0
    # rising curve: trapezoid + physical tail from the last sample
    rising = np.trapezoid([0, 1, 2, 3, 4, 5], np.r_[0, T_S]) + 5 / LAM_LU
    assert tia[2, 0, 0] == pytest.approx(rising, rel=1e-9)


def test_linear_in_activity():
    rng = np.random.default_rng(1)
    frames = rng.random((5, 4, 4, 4)) * np.exp(-LAM_LU * T_S)[:, None, None, None]
    t1, _, _ = tia_concentration(T_S, frames, LAM_LU)
    t2, _, _ = tia_concentration(T_S, 7.5 * frames, LAM_LU)
    assert np.allclose(t2, 7.5 * t1, rtol=1e-9)
