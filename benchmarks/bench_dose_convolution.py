"""Kernel-convolution dose vs scipy.signal.fftconvolve(mode="same") float64 (what peers use),
measured in the same run on the same TIA map and the same Lu-177 voxel kernel (4.8 mm
voxels, 200 mm radius -> 85^3).  voxdose runs in float64 and float32 (cached kernel
spectrum, pruned transforms, period N + kernel half-width, scipy.fft worker threads).

Run: ``python -m pytest benchmarks/bench_dose_convolution.py --benchmark-only``.
Each voxdose case checks its dose against scipy's to 1e-5 of the maximum.
"""

import numpy as np
import pytest
from scipy import signal

from voxdose.core.backend import cpu_backend, get_backend, gpu_available
from voxdose.dose.convolution import SpectrumCache, fft_convolve_same
from voxdose.kernels.point import point_kernel_for
from voxdose.kernels.voxel import voxel_kernel

SIZES = [64, 128, 256]
ROUNDS = 3


@pytest.fixture(scope="module")
def kernel():
    return voxel_kernel(point_kernel_for("Lu-177"), (4.8, 4.8, 4.8)).data_gy_per_decay


_REF: dict = {}


def _tia(n):
    return np.random.default_rng(0).random((n, n, n)) * 1e9


def _reference(kernel, n):
    if n not in _REF:
        _REF[n] = signal.fftconvolve(_tia(n), kernel, mode="same")
    return _REF[n]


@pytest.mark.parametrize("n", SIZES)
def test_scipy_fftconvolve_same_float64(benchmark, kernel, n):
    tia = _tia(n)
    benchmark.group = f"dose convolution {n}^3"
    benchmark.pedantic(signal.fftconvolve, args=(tia, kernel), kwargs={"mode": "same"},
                       rounds=ROUNDS, warmup_rounds=1)


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("n", SIZES)
def test_voxdose_fft_convolution(benchmark, kernel, n, precision):
    tia = _tia(n)
    cache = SpectrumCache()
    be = cpu_backend()
    benchmark.group = f"dose convolution {n}^3"
    out = benchmark.pedantic(fft_convolve_same, args=(tia, kernel, be, cache),
                             kwargs={"precision": precision}, rounds=ROUNDS, warmup_rounds=1)
    ref = _reference(kernel, n)
    assert np.abs(out - ref).max() <= 1e-5 * ref.max()


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("n", SIZES)
def test_voxdose_fft_convolution_gpu(benchmark, kernel, n, precision):
    """Device-resident data: excludes host<->device transfers (timed by ``voxdose bench``)."""
    be = get_backend("gpu")
    xp = be.xp
    tia = xp.asarray(_tia(n), dtype=xp.float32 if precision == "float32" else xp.float64)
    cache = SpectrumCache()

    def run():
        out = fft_convolve_same(tia, kernel, be, cache, precision=precision)
        xp.cuda.Stream.null.synchronize()
        return out

    benchmark.group = f"dose convolution {n}^3"
    out = benchmark.pedantic(run, rounds=10, warmup_rounds=2)
    ref = _reference(kernel, n)
    assert np.abs(be.to_numpy(out) - ref).max() <= 1e-5 * ref.max()
