"""Backend selection: one code path, device probe by real allocation, clear errors."""

import warnings

import numpy as np
import pytest

from voxdose.core import backend as be
from voxdose.core.errors import DeviceError, InputError


def test_cpu_backend_is_numpy_scipy():
    b = be.get_backend("cpu")
    assert b.name == "cpu" and b.xp is np
    assert b.fft.__name__ == "scipy.fft"


def test_unknown_device_is_an_error():
    with pytest.raises(InputError, match="unknown device"):
        be.get_backend("tpu")


def test_backend_of_numpy_arrays_is_cpu():
    assert be.backend_of(np.zeros(3)).name == "cpu"


def test_auto_without_gpu_falls_back_and_warns_once(monkeypatch):
    monkeypatch.setattr(be, "_gpu_probe", lambda: (False, "no usable CUDA GPU (test)"))
    be._warn_fallback_once.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert be.get_backend("auto").name == "cpu"
        assert be.get_backend("auto").name == "cpu"
    msgs = [str(w.message) for w in caught if "device 'auto'" in str(w.message)]
    assert len(msgs) == 1 and "running on the CPU" in msgs[0]


def test_gpu_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(be, "_gpu_probe", lambda: (False, "no usable CUDA GPU (test)"))
    be.gpu_backend.cache_clear()
    with pytest.raises(DeviceError, match="--device gpu"):
        be.get_backend("gpu")
    be.gpu_backend.cache_clear()


@pytest.mark.gpu
def test_gpu_dose_equals_cpu_dose():
    """The same kernel-convolution dose on CuPy and NumPy (float64) to 1e-9 relative."""
    from voxdose.dose.engine import KernelConvolution
    from voxdose.kernels.point import point_kernel_for
    from voxdose.kernels.voxel import voxel_kernel
    from voxdose.core.grid import Grid, Image

    g = Grid.from_spacing((40, 36, 32), (4.8, 4.8, 4.8))
    tia = np.random.default_rng(0).random(g.shape) * 1e9
    eng = KernelConvolution(voxel_kernel(point_kernel_for("Lu-177"), g.spacing_mm))
    cpu = eng.dose(Image(tia, g), be.get_backend("cpu")).data
    gpu = be.to_numpy(eng.dose(Image(tia, g), be.get_backend("gpu")).data)
    assert np.allclose(gpu, cpu, rtol=1e-9, atol=1e-12 * cpu.max())
