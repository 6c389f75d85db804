"""Kernel-convolution dose vs scipy.signal.fftconvolve(mode="same") (what peers use).

Same Lu-177 voxel kernel (4.8 mm voxels, 200 mm radius), float64, same TIA map.
"""

import numpy as np
import pytest
from scipy import signal

from voxdose.backend import cpu_backend
from voxdose.dose.engine import fft_convolve_same
from voxdose.dose.point_kernel import point_kernel_for
from voxdose.dose.voxel_kernel import voxel_kernel
from voxdose.nuclide import load_nuclide

SIZES = [64, 128]


@pytest.fixture(scope="module")
def kernel():
    return voxel_kernel(point_kernel_for(load_nuclide("Lu-177")), (4.8, 4.8, 4.8)).data_gy_per_decay


def _tia(n):
    return np.random.default_rng(0).random((n, n, n)) * 1e9


@pytest.mark.parametrize("n", SIZES)
def test_voxdose_fft_convolution(benchmark, kernel, n):
    tia = _tia(n)
    cache = {}
    fft_convolve_same(tia, kernel, cpu_backend(), cache)  # kernel spectrum computed once
    benchmark.group = f"dose convolution {n}^3"
    out = benchmark(fft_convolve_same, tia, kernel, cpu_backend(), cache)
    ref = signal.fftconvolve(tia, kernel, mode="same")
    assert np.allclose(out, ref, rtol=1e-6, atol=1e-12 * ref.max())


@pytest.mark.parametrize("n", SIZES)
def test_scipy_fftconvolve_same(benchmark, kernel, n):
    tia = _tia(n)
    benchmark.group = f"dose convolution {n}^3"
    benchmark(signal.fftconvolve, tia, kernel, mode="same")
