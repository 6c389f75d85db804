"""Per-voxel TIA fit (Numba, all voxels) vs a scipy.optimize.curve_fit loop on a sample.

Compare throughput (voxels/s): pytest-benchmark reports time per call; the Numba run
fits 64^3 = 262,144 voxels per call, the curve_fit loop fits 200 voxels per call.
"""

import numpy as np
import pytest
from scipy.optimize import curve_fit

from voxdose.kinetics.tail_fit import tia_concentration
from voxdose.nuclide import load_nuclide

LAM = load_nuclide("Lu-177").decay_constant_per_s
T_S = np.array([1.0, 4.0, 24.0, 48.0, 168.0]) * 3600.0


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    n = 64
    lam_b = rng.uniform(0.2, 2.0, (n, n, n)) * LAM
    amp = rng.uniform(1e3, 1e5, (n, n, n))
    clean = amp * np.exp(-(LAM + lam_b) * T_S[:, None, None, None])
    return rng.poisson(clean).astype(float)


def test_numba_all_voxels_64cubed(benchmark, frames):
    tia_concentration(T_S, frames, LAM)  # compile outside the timing
    benchmark.group = "TIA fit"
    benchmark(tia_concentration, T_S, frames, LAM)


def _mono(t, a, lam):
    return a * np.exp(-lam * t)


def _curve_fit_loop(curves):
    out = np.empty(len(curves))
    for i, c in enumerate(curves):
        k = int(np.argmax(c))
        p, _ = curve_fit(_mono, T_S[k:], c[k:], p0=(c[k] * np.exp(LAM * T_S[k]), 2 * LAM),
                         bounds=([0, LAM], [np.inf, np.inf]))
        out[i] = np.trapezoid(np.r_[0, c[: k + 1]], np.r_[0, T_S[: k + 1]]) + \
            _mono(T_S[k], *p) / p[1]
    return out


def test_curve_fit_loop_200_voxels(benchmark, frames):
    curves = frames.reshape(5, -1).T[:200]
    benchmark.group = "TIA fit"
    benchmark(_curve_fit_loop, curves)
