"""Dose engines: FFT convolution equals direct convolution, linearity, LDM energy balance."""

from dataclasses import dataclass

import numpy as np
import pytest
from scipy import ndimage

from voxdose.core.backend import cpu_backend
from voxdose.dose.engine import KernelConvolution, LocalDeposition, fft_convolve_same
from voxdose.core.grid import Grid, Image
from voxdose.core.nuclide import load_nuclide
from voxdose.core.units import MEV_PER_G_TO_GY


@dataclass
class _Kernel:
    data_gy_per_decay: np.ndarray
    spacing_mm: tuple

    def provenance(self):
        return {"source": "test"}


def _random_kernel(shape=(5, 7, 3), seed=0):
    return np.random.default_rng(seed).random(shape)


def test_fft_convolution_equals_direct_convolution_no_wraparound():
    rng = np.random.default_rng(3)
    data = np.zeros((9, 10, 11))
    data[0, 0, 0] = 1.0  # a corner source: circular convolution would wrap around
    data += rng.random(data.shape) * (rng.random(data.shape) > 0.8)
    k = _random_kernel()
    got = fft_convolve_same(data, k, cpu_backend())
    direct = ndimage.convolve(data, k, mode="constant", cval=0.0)
    assert np.allclose(got, direct, rtol=1e-10, atol=1e-12)


def test_impulse_reproduces_kernel():
    k = _random_kernel((5, 5, 5), seed=2)
    g = Grid.from_spacing((11, 11, 11), (2.0, 2.0, 2.0))
    tia = np.zeros(g.shape)
    tia[5, 5, 5] = 1.0
    dose = KernelConvolution(_Kernel(k, (2.0, 2.0, 2.0))).dose(Image(tia, g))
    assert np.allclose(dose.data[3:8, 3:8, 3:8], k, atol=1e-12)
    assert dose.unit == "Gy"


def test_kernel_engine_is_linear():
    k = _random_kernel((3, 3, 3), seed=4)
    g = Grid.from_spacing((8, 8, 8), (3.0, 3.0, 3.0))
    rng = np.random.default_rng(0)
    a, b = rng.random(g.shape), rng.random(g.shape)
    eng = KernelConvolution(_Kernel(k, (3.0, 3.0, 3.0)))
    da = eng.dose(Image(a, g)).data
    db = eng.dose(Image(b, g)).data
    dab = eng.dose(Image(2.0 * a + 3.0 * b, g)).data
    assert np.allclose(dab, 2.0 * da + 3.0 * db, rtol=1e-10, atol=1e-14)


def test_kernel_spacing_mismatch_is_an_error():
    g = Grid.from_spacing((4, 4, 4), (3.0, 3.0, 3.0))
    with pytest.raises(ValueError):
        KernelConvolution(_Kernel(np.ones((3, 3, 3)), (4.0, 4.0, 4.0))).dose(
            Image(np.ones(g.shape), g))


def test_local_deposition_energy_balance():
    """Energy absorbed = decays x local energy per decay (ICRP-107 electrons, Lu-177)."""
    nuc = load_nuclide("Lu-177")
    g = Grid.from_spacing((4, 5, 6), (4.0, 4.0, 4.0))
    tia = np.random.default_rng(1).random(g.shape) * 1e10
    dose = LocalDeposition(nuc).dose(Image(tia, g)).data
    mass_g = 1.0 * g.voxel_volume_ml
    absorbed_mev = (dose * mass_g / MEV_PER_G_TO_GY).sum()
    assert absorbed_mev == pytest.approx(tia.sum() * 0.14792, rel=2e-3)  # ICRP-107 electrons


def test_local_deposition_known_value():
    """1e12 decays of Y-90 in 1 mL of water: 1e12 x 0.9331 MeV x 1.602e-13 J/MeV / 1e-3 kg."""
    g = Grid.from_spacing((1, 1, 1), (10.0, 10.0, 10.0))
    dose = LocalDeposition(load_nuclide("Y-90")).dose(Image(np.full((1, 1, 1), 1e12), g))
    assert float(dose.data[0, 0, 0]) == pytest.approx(1e12 * 0.93311 * 1.602177e-13 / 1e-3,
                                                      rel=1e-3)
