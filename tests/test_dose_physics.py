"""Dose-engine physics: impulse, linearity, energy balance with the energy that leaves the
grid, uniformly filled voxelised water spheres against published Y-90 sphere absorbed
fractions (Lu-177: against the point kernel's sphere integral), and the kernel-implied
Y-90 sphere absorbed fractions against the published ones."""

import math

import numpy as np
import pytest

from voxdose.dose.engine import KernelConvolution
from voxdose.kernels.point import point_kernel_for
from voxdose.kernels.voxel import voxel_kernel
from voxdose.core.grid import Grid, Image
from voxdose.core.units import MEV_PER_G_TO_GY

FAST = {"n_directions": 500, "n_radial": 200}  # kernel quadrature for tests (~1e-4)


@pytest.fixture(scope="module")
def lu_kernel():
    return voxel_kernel(point_kernel_for("Lu-177"), (4.8, 4.8, 4.8), radius_mm=40.0, **FAST)


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_impulse_reproduces_the_real_kernel(lu_kernel, precision):
    h = lu_kernel.half_width[0]
    n = 2 * h + 5
    g = Grid.from_spacing((n, n, n), lu_kernel.spacing_mm)
    tia = np.zeros(g.shape)
    tia[h + 2, h + 2, h + 2] = 1.0
    d = KernelConvolution(lu_kernel, precision=precision).dose(Image(tia, g)).data
    k = lu_kernel.data_gy_per_decay
    tol = 1e-12 if precision == "float64" else 1e-6
    assert np.abs(d[2:-2, 2:-2, 2:-2] - k).max() <= tol * k.max()


def test_linearity_in_tia(lu_kernel):
    g = Grid.from_spacing((14, 12, 13), lu_kernel.spacing_mm)
    rng = np.random.default_rng(3)
    a, b = rng.random(g.shape) * 1e9, rng.random(g.shape) * 1e9
    eng = KernelConvolution(lu_kernel)
    da, db = eng.dose(Image(a, g)).data, eng.dose(Image(b, g)).data
    dab = eng.dose(Image(2.5 * a + 0.5 * b, g)).data
    assert np.allclose(dab, 2.5 * da + 0.5 * db, rtol=1e-10, atol=1e-12 * dab.max())


def test_energy_balance_with_energy_leaving_the_grid(lu_kernel):
    """sum D m = sum_y A~(y) [E_kernel - E_out(y)], E_out(y) the kernel energy whose target
    voxel lies outside the grid (computed from the kernel, source by source), E_kernel =
    E_total (1 - neglected) = Lu-177 electrons + photons (ICRP-107) beyond the kernel box."""
    k = lu_kernel.data_gy_per_decay
    h = lu_kernel.half_width
    m_vox = lu_kernel.voxel_mass_g
    g = Grid.from_spacing((12, 11, 10), lu_kernel.spacing_mm)
    rng = np.random.default_rng(11)
    tia = np.zeros(g.shape)
    src = [tuple(rng.integers(0, n) for n in g.shape) for _ in range(6)] + [(0, 0, 0)]
    for s in src:
        tia[s] += rng.random() * 1e9 + 1e8
    d = KernelConvolution(lu_kernel).dose(Image(tia, g)).data
    absorbed_mev = d.sum() * m_vox / MEV_PER_G_TO_GY

    e_kernel = k.sum() * m_vox / MEV_PER_G_TO_GY          # MeV per decay inside the kernel box
    assert e_kernel == pytest.approx(
        (0.14792 + 0.035098) * (1 - lu_kernel.neglected_energy_fraction), rel=2e-3)
    expected = 0.0
    for s in {tuple(int(v) for v in s) for s in src}:
        lo = [h[a] - s[a] for a in range(3)]                 # kernel index of grid index 0
        inside = k[lo[0]:lo[0] + g.shape[0], lo[1]:lo[1] + g.shape[1], lo[2]:lo[2] + g.shape[2]]
        e_in = inside.sum() * m_vox / MEV_PER_G_TO_GY
        expected += tia[s] * e_in
        assert e_in < e_kernel  # something always leaves this small grid
    assert absorbed_mev == pytest.approx(expected, rel=1e-9)


def _kernel_absorbed_fraction(pk, radius_mm):
    """phi(R) = [int_0^2R j(r) P_in(r) dr + E_loc] / E_total for a uniform sphere, with
    P_in(r) = 1 - 3r/(4R) + r^3/(16R^3) the chance that a point at distance r from a uniform
    point of the sphere is inside it (Berger 1971, MIRD Pamphlet 7 geometric factor)."""
    r = np.linspace(0.0, 2 * radius_mm, 40001)
    de = np.diff(pk.cumulative_energy_mev(r, include_local=False))
    rm = 0.5 * (r[1:] + r[:-1])
    p_in = 1 - 3 * rm / (4 * radius_mm) + rm**3 / (16 * radius_mm**3)
    return (de @ p_in + pk.local_energy_mev) / pk.total_energy_mev


def _voxel_sphere_phi(pk, radius_mm, n_r):
    """Absorbed fraction of a voxelised water sphere (n_r voxels per radius, the voxels
    whose centres lie within n_r voxels of the centre), uniformly filled: the dose engine's
    mean dose x mass / E_total.  Returns (phi, equal-volume radius in mm)."""
    s = radius_mm / n_r
    n = 2 * n_r + 3
    c = np.arange(n) - n // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    inside = (x**2 + y**2 + z**2) <= n_r**2
    r_eq = (inside.sum() * 3 / (4 * math.pi)) ** (1 / 3) * s
    k = voxel_kernel(pk, (s, s, s), radius_mm=2 * r_eq + 2 * s, **FAST)
    g = Grid.from_spacing((n, n, n), (s, s, s))
    d = KernelConvolution(k).dose(Image(inside / inside.sum(), g)).data  # 1 decay in total
    absorbed_mev = d[inside].sum() * k.voxel_mass_g / MEV_PER_G_TO_GY
    return absorbed_mev / pk.total_energy_mev, r_eq


# Y-90 beta absorbed fractions in unit-density water spheres (uniform source, full beta
# spectrum, Monte Carlo): Akabani et al. and Amato et al. as tabulated by Hashempour,
# Ghorbani, Amato & Knaup, Asia Ocean J Nucl Med Biol 2019;7(1) (PMC6352054), table of 90Y
# absorbed fractions: radius (cm) -> absorbed fraction.  Values quoted to 0.01.
Y90_PUBLISHED_AF_VOXEL = [(1.00, 0.80), (1.33, 0.85), (1.68, 0.88), (2.87, 0.93)]


@pytest.mark.parametrize(("radius_cm", "published"), Y90_PUBLISHED_AF_VOXEL)
def test_voxelised_y90_sphere_against_published_absorbed_fraction(radius_cm, published):
    """The whole dose chain (shipped Monte Carlo Y-90 table -> voxel S-values -> FFT
    convolution) in a uniformly filled voxelised sphere (12 voxels per radius) against the
    published Monte Carlo absorbed fraction of the same sphere.  Measured: ours - published
    = -0.0015, -0.0054, -0.0059, -0.0092 at 1.00, 1.33, 1.68, 2.87 cm (the staircase
    surface of the voxelised sphere lets slightly more energy escape; -0.007 to -0.016 at 6
    voxels per radius).  Tolerance 0.015: a 2 % error in the kernel's normalisation moves
    phi by 0.016 to 0.019."""
    from voxdose.kernels.point import load_point_kernel

    pk = load_point_kernel("Y-90")
    phi, r_eq = _voxel_sphere_phi(pk, radius_cm * 10.0, n_r=12)
    assert r_eq == pytest.approx(radius_cm * 10.0, rel=0.01)
    assert phi == pytest.approx(published, abs=0.015)


LU177_MASSES_G = [0.1, 10.0, 1000.0]


def test_voxelised_lu177_spheres_against_the_point_kernel_sphere_integral():
    """Lu-177 (no published sphere table was found): the dose engine's absorbed fraction
    in voxelised spheres of 0.1 g, 10 g and 1 kg (6 voxels per radius) against the point
    kernel's own sphere integral phi = int j(r) P_in(r) dr / E (geometric factor of MIRD
    Pamphlet 7; no voxel kernel, no convolution), for the equal-volume sphere.  This
    guards the voxel S-values and the convolution, not the point kernel.  Measured: -0.0101,
    -0.0044, -0.0014 (staircase surface); tolerance 0.02.  Physical bounds from ICRP-107
    energies: electrons (0.14792 of 0.18302 MeV, range < 2 mm) are almost all absorbed from
    10 g up, and most photons leave even a 1 kg sphere."""
    from voxdose.kernels.point import load_point_kernel

    pk = load_point_kernel("Lu-177")
    f_e = 0.14792 / (0.14792 + 0.035098)
    phis = []
    for m in LU177_MASSES_G:
        radius = (3 * m / (4 * math.pi)) ** (1 / 3) * 10.0
        phi, r_eq = _voxel_sphere_phi(pk, radius, n_r=6)
        phi_k = _kernel_absorbed_fraction(pk, r_eq)
        assert phi == pytest.approx(phi_k, abs=0.02), (m, phi, phi_k)
        phis.append(phi)
    assert all(np.diff(phis) > 0)  # bigger spheres absorb more
    assert 0.95 * f_e < phis[1] < f_e + 0.1 * (1 - f_e)
    assert f_e < phis[2] < f_e + 0.5 * (1 - f_e)


# Y-90 beta absorbed fractions in unit-density spheres, full beta spectrum, Monte Carlo:
# Akabani et al. and Amato et al., as tabulated by Hashempour, Ghorbani, Amato & Knaup (2019),
# Asia Ocean J Nucl Med Biol 7(1), PMC6352054 (table of 90Y absorbed fractions;
# radius cm -> AF).  Their own MCNPX values differ from these by up to 0.05.
Y90_PUBLISHED_AF = [(0.25, 0.39), (1.00, 0.80), (1.33, 0.85), (1.68, 0.88), (2.87, 0.93)]


@pytest.mark.parametrize(("radius_cm", "published"), Y90_PUBLISHED_AF)
def test_y90_sphere_absorbed_fraction_against_published_monte_carlo(radius_cm, published):
    """Y-90 (photons negligible): kernel-implied sphere absorbed fraction of the foundation
    (analytic) kernel against the published Monte Carlo values.  Measured: ours - published
    = -0.0078, -0.0017, -0.0028, -0.0015, -0.0014 at 0.25, 1.00, 1.33, 1.68, 2.87 cm;
    tolerance 0.015 (published values are quoted to 0.01)."""
    pk = point_kernel_for("Y-90")
    assert pk.photon_kernel_energy_mev < 1e-3 * pk.total_energy_mev
    phi = _kernel_absorbed_fraction(pk, radius_cm * 10.0)
    assert phi == pytest.approx(published, abs=0.015)
