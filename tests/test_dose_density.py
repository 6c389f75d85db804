"""Density: HU calibration (air is air, not water), density modes none/scale/mvs."""

import numpy as np
import pytest

from voxdose.dose.density import (
    SCHNEIDER_2000_DENSITY,
    SCHNEIDER_2000_HU,
    density_from_ct,
    hu_to_density,
    mvs_bins,
)
from voxdose.dose.engine import (
    DensityBinnedConvolution,
    KernelConvolution,
    LocalDeposition,
    make_engine,
)
from voxdose.kernels.point import point_kernel_for
from voxdose.kernels.voxel import voxel_kernel
from voxdose.core.errors import InputError
from voxdose.core.grid import Grid, Image
from voxdose.core.nuclide import load_nuclide

FAST = {"n_directions": 500, "n_radial": 200}
SP = (4.8, 4.8, 4.8)


def test_hu_calibration_points_air_and_clipping():
    assert np.allclose(hu_to_density(np.array(SCHNEIDER_2000_HU)), SCHNEIDER_2000_DENSITY)
    assert float(hu_to_density(-1200.0)) == pytest.approx(0.00121)   # air, not water
    assert float(hu_to_density(-1000.0)) == pytest.approx(0.00121)
    assert float(hu_to_density(0.0)) == pytest.approx(0.93 + 0.10 * 98 / 112)
    assert float(hu_to_density(5000.0)) == pytest.approx(2.8)
    hu = np.linspace(-1500, 3500, 1001)
    assert np.all(np.diff(hu_to_density(hu)) >= 0)
    with pytest.raises(InputError):
        hu_to_density(0.0, points_hu=(0, 0), points_density=(1, 1))


def test_ct_off_the_tia_grid_is_an_error():
    g = Grid.from_spacing((4, 4, 4), SP)
    ct = Image(np.zeros((4, 4, 5)), Grid.from_spacing((4, 4, 5), SP), meta={"source": "ct.nii"})
    with pytest.raises(InputError, match=r"ct\.nii.*not on the TIA grid"):
        density_from_ct(ct, g)


@pytest.fixture(scope="module")
def lu_kernel():
    return voxel_kernel(point_kernel_for("Lu-177"), SP, radius_mm=30.0, **FAST)


@pytest.mark.parametrize("rho", [0.3, 1.0, 1.85])
def test_scale_mode_in_a_uniform_medium_divides_by_rho(lu_kernel, rho):
    g = Grid.from_spacing((10, 9, 8), SP)
    tia = Image(np.random.default_rng(0).random(g.shape) * 1e9, g)
    dens = Image(np.full(g.shape, rho), g)
    water = KernelConvolution(lu_kernel).dose(tia)
    scaled = KernelConvolution(lu_kernel, density_mode="scale").dose(tia, density=dens)
    assert np.allclose(scaled.data, water.data / rho, rtol=1e-12)
    assert scaled.meta["density_mode"] == "scale" and water.meta["density_mode"] == "none"
    ldm = LocalDeposition(load_nuclide("Lu-177"), density_mode="scale").dose(tia, density=dens)
    ldm_w = LocalDeposition(load_nuclide("Lu-177")).dose(tia)
    assert np.allclose(ldm.data, ldm_w.data / rho, rtol=1e-12)


def test_density_modes_need_a_density_image(lu_kernel):
    g = Grid.from_spacing((4, 4, 4), SP)
    with pytest.raises(InputError, match="needs a density"):
        KernelConvolution(lu_kernel, density_mode="scale").dose(Image(np.ones(g.shape), g))
    with pytest.raises(InputError, match="unknown density mode"):
        KernelConvolution(lu_kernel, density_mode="mass").dose(Image(np.ones(g.shape), g))
    with pytest.raises(InputError, match="positive"):
        KernelConvolution(lu_kernel, density_mode="scale").dose(
            Image(np.ones(g.shape), g), density=Image(np.zeros(g.shape), g))


def test_range_scaled_kernel_identity():
    """S_rho(o; s) = rho^2 S_water(o; rho s): ranges and attenuation scale with 1/rho."""
    rho = 1.6
    k_rho = voxel_kernel(point_kernel_for("Lu-177", density_g_cm3=rho), (3.0,) * 3,
                         radius_mm=12.0, **FAST)
    k_w = voxel_kernel(point_kernel_for("Lu-177"), (3.0 * rho,) * 3, radius_mm=12.0 * rho,
                       **FAST)
    assert k_rho.shape == k_w.shape
    assert np.allclose(k_rho.data_gy_per_decay, rho**2 * k_w.data_gy_per_decay, rtol=2e-3,
                       atol=1e-6 * k_rho.data_gy_per_decay.max())


def test_mvs_in_uniform_tissue_equals_the_tissue_kernel():
    """A uniform medium at the soft-tissue table's density (1.03 g/cm^3) gets exactly that
    table's kernel; with a user's water kernel and a uniform water CT, the water kernel."""
    from voxdose.kernels.point import load_point_kernel, tissue_for_density

    g = Grid.from_spacing((9, 8, 7), SP)
    tia = Image(np.random.default_rng(2).random(g.shape) * 1e9, g)
    dens = Image(np.full(g.shape, 1.03), g)
    mvs = make_engine("Lu-177", SP, density_mode="mvs", density=dens, radius_mm=30.0)
    soft = make_engine("Lu-177", SP, radius_mm=30.0,
                       point_kernel=load_point_kernel("Lu-177", "soft-tissue"))
    assert isinstance(mvs, DensityBinnedConvolution) and len(mvs.bins) == 1
    assert np.allclose(mvs.dose(tia, density=dens).data, soft.dose(tia).data, rtol=1e-9)
    water_k = load_point_kernel("Lu-177")
    ones = Image(np.ones(g.shape), g)
    mvs_w = make_engine("Lu-177", SP, density_mode="mvs", density=ones, radius_mm=30.0,
                        point_kernel=water_k)
    water = make_engine("Lu-177", SP, radius_mm=30.0, point_kernel=water_k)
    assert np.allclose(mvs_w.dose(tia, density=ones).data, water.dose(tia).data, rtol=1e-9)
    assert [tissue_for_density(r) for r in (0.26, 1.0, 1.85)] == ["lung", "soft-tissue",
                                                                 "bone"]


def test_mvs_water_bone_interface_behaves_as_documented():
    """Water (z < 8) against cortical-like bone (z >= 8), uniform TIA.  Documented: each
    target voxel takes the dose of a homogeneous medium of its own bin's density, so
    (1) water voxels equal the water-kernel dose, bone voxels the bone-kernel dose, exactly;
    (2) the dose steps at the interface by about rho_water/rho_bone (the electron energy is
    absorbed where emitted; the step is not smoothed over the electron range);
    (3) bins: density = mean of the bin's voxels; air below 0.1 g/cm^3 does not enter it."""
    n = (16, 6, 6)
    g = Grid.from_spacing(n, SP)
    hu = np.zeros(n)
    hu[8:] = 1200.0
    dens = density_from_ct(Image(hu, g), g)
    rho_b = float(dens.data[-1, 0, 0])
    assert 1.6 < rho_b < 1.8
    tia = Image(np.full(n, 1e9), g)
    eng = DensityBinnedConvolution.for_density("Lu-177", SP, dens, radius_mm=30.0)
    assert [round(b.density_g_cm3, 4) for b in eng.bins] == [round(float(dens.data[0, 0, 0]), 4),
                                                            round(rho_b, 4)]
    d = eng.dose(tia, density=dens)
    assert d.meta["density_mode"] == "mvs" and len(d.meta["mvs_bins"]) == 2
    d_w = KernelConvolution(eng.kernels[0]).dose(tia).data
    d_b = KernelConvolution(eng.kernels[1]).dose(tia).data
    assert np.allclose(d.data[:8], d_w[:8], rtol=1e-12)
    assert np.allclose(d.data[8:], d_b[8:], rtol=1e-12)
    step = d.data[8, 3, 3] / d.data[7, 3, 3]
    rho_w = float(dens.data[0, 0, 0])
    assert step == pytest.approx(rho_w / rho_b, rel=0.1)
    # the scale mode gives the same step (it divides the water dose by rho)
    sc = KernelConvolution(eng.kernels[0], density_mode="scale").dose(tia, density=dens).data
    assert sc[8, 3, 3] / sc[7, 3, 3] == pytest.approx(rho_w / rho_b, rel=1e-9)

    air = np.full(20, 0.00121)
    lung = np.full(10, 0.3)
    bins = mvs_bins(np.concatenate([air, lung]))
    assert len(bins) == 1 and bins[0].density_g_cm3 == pytest.approx(0.3)
    assert bins[0].n_voxels == 30
