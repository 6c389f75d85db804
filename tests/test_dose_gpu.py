"""CPU and GPU dose paths agree (one code path; skipped without a CUDA GPU)."""

import numpy as np
import pytest

from voxdose.core.backend import get_backend, to_numpy
from voxdose.dose.engine import KernelConvolution, make_engine
from voxdose.kernels.point import point_kernel_for
from voxdose.kernels.voxel import voxel_kernel
from voxdose.core.grid import Grid, Image

SP = (4.8, 4.8, 4.8)


@pytest.fixture(scope="module")
def case():
    g = Grid.from_spacing((40, 36, 32), SP)
    tia = np.random.default_rng(0).random(g.shape) * 1e9
    return g, tia, voxel_kernel(point_kernel_for("Lu-177"), SP, radius_mm=60.0)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("budget_gb", [None, 0.002])
def test_gpu_equals_cpu_to_1e5(case, precision, budget_gb):
    g, tia, k = case
    eng = KernelConvolution(k, precision=precision, memory_budget_gb=budget_gb)
    cpu = eng.dose(Image(tia, g), get_backend("cpu")).data
    gpu = to_numpy(eng.dose(Image(tia, g), get_backend("gpu")).data)
    assert np.abs(gpu - cpu).max() <= 1e-5 * cpu.max()


@pytest.mark.gpu
def test_gpu_density_modes_equal_cpu(case):
    g, tia, _ = case
    hu = np.zeros(g.shape)
    hu[20:] = 1000.0
    hu[:, :, :4] = -700.0
    from voxdose.dose.density import density_from_ct

    dens = density_from_ct(Image(hu, g), g)
    for mode in ("scale", "mvs"):
        eng = make_engine("Lu-177", SP, density_mode=mode, density=dens, radius_mm=40.0)
        cpu = eng.dose(Image(tia, g), get_backend("cpu"), dens).data
        gpu = to_numpy(eng.dose(Image(tia, g), get_backend("gpu"), dens).data)
        assert np.abs(gpu - cpu).max() <= 1e-5 * cpu.max()
