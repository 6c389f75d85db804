"""One property suite for every dose engine and every array backend.

Engines: ``make_engine`` with method kernel and ldm, each in density mode none, scale and
mvs (for ldm, mvs means scale); backends: NumPy always, CuPy when a CUDA GPU is usable
(``gpu`` marker, skipped otherwise).  Each (engine, backend) pair is one test id of each
property:

* linearity in the TIA: D(a X + b Y) = a D(X) + b D(Y) to round-off;
* an impulse reproduces the kernel: one decay in one voxel, away from the edges, gives the
  voxel kernel centred there.  The references are built independently of the engine:
  the water kernel from ``voxel_kernel`` (none), divided by the target voxel's density
  (scale); for mvs, the kernel of each target voxel's density bin from the range-scaling
  law of a homogeneous medium, S_rho(o; s) = rho^2 S_water(o; rho s) (a *water* kernel on a
  grid of spacing rho s, so the engine's own bin kernels are not used); for ldm, the
  local energy E_loc / (rho V) in the source voxel only;
* energy conservation in an infinite medium: with every source's kernel box inside the
  grid, sum(D m) = A~ E_emitted (1 - f), f the kernel's neglected fraction (the energy
  beyond its box; checked against an independent Monte Carlo box integral in
  ``tests/test_kernel.py``), E_emitted the ICRP-107 energy per decay; m = rho(x) V, the
  voxel's own mass, in scale mode, and rho V in a uniform medium for mvs (the only medium
  in which mvs conserves energy exactly).  For ldm: sum(D m) = A~ E_loc exactly.

Grids are small (anisotropic 3 x 4 x 5 mm voxels, Lu-177 kernels of 15 mm radius), so the
suite runs in seconds.
"""

from __future__ import annotations

import numpy as np
import pytest

from voxdose.core.backend import cpu_backend, to_numpy
from voxdose.core.grid import Grid, Image
from voxdose.core.units import MEV_PER_G_TO_GY
from voxdose.dose.engine import make_engine
from voxdose.kernels.point import load_point_kernel
from voxdose.kernels.voxel import voxel_kernel

NUCLIDE = "Lu-177"
SP = (3.0, 4.0, 5.0)            # (z, y, x) mm: anisotropic, so axis mix-ups show
RADIUS_MM = 15.0                # kernel half-widths (5, 4, 3) voxels
#: ICRP-107 Lu-177 energy per decay (MeV): electrons, photons (also pinned in test_kernel)
E_ELECTRONS_MEV, E_PHOTONS_MEV = 0.14792, 0.035098

ENGINES = [("kernel", "none"), ("kernel", "scale"), ("kernel", "mvs"),
           ("ldm", "none"), ("ldm", "scale"), ("ldm", "mvs")]
BACKENDS = [pytest.param("numpy", id="numpy"),
            pytest.param("cupy", id="cupy", marks=pytest.mark.gpu)]


def _backend(name):
    if name == "numpy":
        return cpu_backend()
    from voxdose.core.backend import gpu_backend

    return gpu_backend()


@pytest.fixture(scope="module")
def pk():
    return load_point_kernel(NUCLIDE)        # the shipped water table the pipeline uses


@pytest.fixture(scope="module")
def water_kernel(pk):
    return voxel_kernel(pk, SP, radius_mm=RADIUS_MM)


def _scaled_water_kernel(pk, rho):
    """The homogeneous-medium kernel at density rho from the range-scaling law:
    rho^2 x (water kernel on spacing rho s, radius rho R).  Returns (S, neglected)."""
    k = voxel_kernel(pk, tuple(rho * s for s in SP), radius_mm=rho * RADIUS_MM)
    return rho * rho * k.data_gy_per_decay, k.neglected_energy_fraction


def _engine(method, mode, grid, density, water_kernel, pk):
    kw = {}
    if method == "kernel" and mode != "mvs":
        kw["kernel"] = water_kernel
    if method == "kernel" and mode == "mvs":
        kw.update(point_kernel=pk, radius_mm=RADIUS_MM)
    return make_engine(NUCLIDE, grid.spacing_mm, method=method, density_mode=mode,
                       density=density if mode == "mvs" else None, **kw)


def _run(engine, tia, grid, density, backend_name):
    be = _backend(backend_name)
    img = Image(be.asarray(tia), grid)
    dens = None if density is None else Image(be.asarray(density.data), grid)
    return to_numpy(engine.dose(img, be, dens).data)


def _density(mode, grid, rho):
    return None if mode == "none" else Image(np.asarray(rho, dtype=np.float64), grid)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize(("method", "mode"), ENGINES, ids=[f"{m}-{d}" for m, d in ENGINES])
def test_linear_in_the_tia(method, mode, backend_name, water_kernel, pk):
    g = Grid.from_spacing((13, 11, 9), SP)
    rng = np.random.default_rng(5)
    rho = rng.uniform(0.3, 2.0, g.shape)               # all three mvs bins occupied
    dens = _density(mode, g, rho)
    eng = _engine(method, mode, g, dens, water_kernel, pk)
    x, y = rng.random(g.shape) * 1e9, rng.random(g.shape) * 1e9
    x[rng.random(g.shape) < 0.5] = 0.0                  # sparse sources too
    a, b = 2.5, 0.75
    dx, dy = _run(eng, x, g, dens, backend_name), _run(eng, y, g, dens, backend_name)
    dxy = _run(eng, a * x + b * y, g, dens, backend_name)
    assert dxy.max() > 0
    assert np.abs(dxy - (a * dx + b * dy)).max() <= 1e-12 * dxy.max()


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize(("method", "mode"), ENGINES, ids=[f"{m}-{d}" for m, d in ENGINES])
def test_impulse_reproduces_the_kernel(method, mode, backend_name, water_kernel, pk):
    h = water_kernel.half_width
    pad = 2
    shape = tuple(2 * hh + 1 + 2 * pad for hh in h)
    g = Grid.from_spacing(shape, SP)
    c = tuple(hh + pad for hh in h)                     # source: kernel fits with margin
    rng = np.random.default_rng(9)
    if mode == "mvs":
        rho = np.where(np.indices(shape)[0] < c[0], 1.0, 1.6)   # two bins, exact densities
    else:
        rho = rng.uniform(0.5, 1.8, shape)
    dens = _density(mode, g, rho)
    eng = _engine(method, mode, g, dens, water_kernel, pk)
    tia = np.zeros(shape)
    tia[c] = 1.0
    d = _run(eng, tia, g, dens, backend_name)
    win = tuple(slice(cc - hh, cc + hh + 1) for cc, hh in zip(c, h))

    if method == "ldm":
        e_loc = eng.local_energy_mev
        assert E_ELECTRONS_MEV <= e_loc <= E_ELECTRONS_MEV + 4e-4   # + photons < 10 keV
        mass_g = (1.0 if mode == "none" else rho[c]) * float(np.prod(SP)) / 1000.0
        want = np.zeros(shape)
        want[c] = e_loc * MEV_PER_G_TO_GY / mass_g
        assert np.abs(d - want).max() <= 1e-14 * want.max()
        return

    k = water_kernel.data_gy_per_decay
    if mode == "none":
        want, rtol = k, 1e-12
    elif mode == "scale":
        want, rtol = k / rho[win], 1e-12
    else:
        k16, _ = _scaled_water_kernel(pk, 1.6)
        assert k16.shape == k.shape
        want = np.where(rho[win] == 1.0, k, k16)
        # the two constructions tabulate the far field on different radial grids: measured
        # 2.5e-7 of the maximum
        rtol = 1e-6
    assert np.abs(d[win] - want).max() <= rtol * want.max()
    outside = d.copy()
    outside[win] = 0.0
    assert outside.max() <= 1e-12 * want.max()          # nothing beyond the kernel box


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize(("method", "mode"), ENGINES, ids=[f"{m}-{d}" for m, d in ENGINES])
def test_energy_conserved_in_an_infinite_medium(method, mode, backend_name, water_kernel, pk):
    h = water_kernel.half_width
    core = (4, 3, 3)                                    # sources only here
    shape = tuple(2 * hh + n for hh, n in zip(h, core))
    g = Grid.from_spacing(shape, SP)
    rng = np.random.default_rng(13)
    tia = np.zeros(shape)
    src = tuple(slice(hh, hh + n) for hh, n in zip(h, core))
    tia[src] = rng.random(core) * 1e9
    if mode == "mvs":
        rho = np.full(shape, 1.6)                       # mvs conserves energy when uniform
    else:
        rho = rng.uniform(0.5, 1.8, shape)
    dens = _density(mode, g, rho)
    eng = _engine(method, mode, g, dens, water_kernel, pk)
    d = _run(eng, tia, g, dens, backend_name)
    m_g = (np.ones(shape) if mode == "none" else rho) * float(np.prod(SP)) / 1000.0
    absorbed_mev = float((d * m_g).sum()) / MEV_PER_G_TO_GY
    decays = float(tia.sum())

    if method == "ldm":
        assert absorbed_mev == pytest.approx(decays * eng.local_energy_mev, rel=1e-12)
        return
    emitted = pk.total_energy_mev
    assert emitted == pytest.approx(E_ELECTRONS_MEV + E_PHOTONS_MEV, rel=1e-3)
    if mode == "mvs":
        # reference kernel built on another grid (see the impulse test): measured 1.1e-6
        _, neglected = _scaled_water_kernel(pk, 1.6)
        rel = 3e-6
    else:
        neglected, rel = water_kernel.neglected_energy_fraction, 1e-10
    assert 0.05 < neglected < 0.5          # a short kernel: the photon tail is left out
    assert absorbed_mev == pytest.approx(decays * emitted * (1.0 - neglected), rel=rel)
