"""Our voxel S-values against published ones (Lu-177 and Y-90, soft tissue, cubic voxels).

Published values, mGy/(MBq s):

* Lanconelli N, Pacilio M, Lo Meo S, et al., "A free database of radionuclide voxel S
  values for the dosimetry of nonuniform activity distributions", Phys Med Biol
  2012;57:517-533 (DOSXYZnrc).  The figures below are from the authors' database files
  ``177Lu<l>mmsoft.txt`` / ``90Y<l>mmsoft.txt`` (medium "Soft tissue") as redistributed in
  the public MIRDCalculation repository of the MGH physics research group; they have not
  been checked against the paper itself.  Only the 60 figures used are quoted.
* MIRD Pamphlet No. 17 (Bolch WE et al., J Nucl Med 1999;40:11S-36S, EGS4), Y-90 in soft
  tissue, source voxel: 1.61 (3 mm) and 0.346 (6 mm), as transcribed in a public test
  file of J. Mikell; not checked against the pamphlet.

Findings (docs/validation.md, "Monte Carlo kernels"; measured with the shipped tables):

* Y-90 (our ICRP soft-tissue table, 1.03 g/cm^3): self voxel within +1.4 % of Lanconelli
  at 2.21-6 mm and within +0.2 % of MIRD 17; face, edge, corner and second neighbours
  within 3.5 %.  The issue's goal (self 3 %, first neighbours 10 %) is met.
* Lu-177 with the full ICRP-107 emission is 12 % above Lanconelli in the source voxel at
  every voxel size (water; +9 % in our soft tissue), while with the beta spectrum and the
  photons only (no conversion and Auger electrons) our water kernel is within 0.5 % of
  the published source voxels and within 2 % of the neighbours at 2.21-6 mm.  The
  conversion and Auger electrons carry 0.0146 MeV per decay (ICRP-107), almost all of it
  absorbed in the source voxel: that is the +12 %.  So the published table most likely
  leaves these lines out; our shipped kernels keep them (they are emitted).  The goal is
  met for the like-for-like source.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from voxdose.montecarlo.dpk import simulate_dpk
from voxdose.kernels.point import TabulatedPointKernel, load_point_kernel
from voxdose.kernels.voxel import voxel_kernel
from voxdose.core.nuclide import load_nuclide

OFFSETS = ("000", "001", "011", "111", "002", "555")
#: Lanconelli et al. 2012, soft tissue, S in mGy/(MBq s) at offsets (i, j, k) voxels.
LANCONELLI = {
    ("Lu-177", 2.21): (1.66, 4.83e-2, 2.52e-3, 2.50e-4, 7.70e-5, 3.98e-6),
    ("Lu-177", 3.0): (6.93e-1, 1.51e-2, 6.17e-4, 7.98e-5, 4.08e-5, 2.28e-6),
    ("Lu-177", 4.42): (2.26e-1, 3.39e-3, 1.19e-4, 2.82e-5, 1.88e-5, 1.12e-6),
    ("Lu-177", 4.8): (1.78e-1, 2.46e-3, 8.65e-5, 2.35e-5, 1.61e-5, 9.50e-7),
    ("Lu-177", 6.0): (9.25e-2, 1.04e-3, 3.94e-5, 1.46e-5, 1.04e-5, 6.24e-7),
    ("Y-90", 2.21): (3.00, 5.70e-1, 2.26e-1, 1.20e-1, 7.00e-2, 6.35e-7),
    ("Y-90", 3.0): (1.59, 2.75e-1, 9.50e-2, 4.29e-2, 2.05e-2, 3.22e-7),
    ("Y-90", 4.42): (6.89e-1, 9.73e-2, 2.48e-2, 7.78e-3, 2.10e-3, 1.38e-7),
    ("Y-90", 4.8): (5.73e-1, 7.63e-2, 1.78e-2, 5.07e-3, 1.11e-3, 1.15e-7),
    ("Y-90", 6.0): (3.42e-1, 3.80e-2, 6.86e-3, 1.45e-3, 1.31e-4, 7.04e-8),
}
#: MIRD Pamphlet 17, Y-90, soft tissue, source voxel, mGy/(MBq s).
MIRD17_Y90_SELF = {3.0: 1.61, 6.0: 0.346}
SIZES = (2.21, 3.0, 4.42, 4.8, 6.0)


def _vsv(pk, size_mm: float) -> dict:
    """Our voxel S-values (mGy/(MBq s)) at the quoted offsets."""
    k = voxel_kernel(pk, (size_mm,) * 3, radius_mm=5 * size_mm + 1e-6).as_mgy_per_mbq_s()
    h = k.shape[0] // 2
    return {o: float(k[h + int(o[0]), h + int(o[1]), h + int(o[2])]) for o in OFFSETS}


def _dev(ours: dict, nuclide: str, size: float) -> dict:
    pub = dict(zip(OFFSETS, LANCONELLI[(nuclide, size)], strict=True))
    return {o: ours[o] / pub[o] - 1.0 for o in OFFSETS}


@pytest.fixture(scope="module")
def lu177_beta_and_photons():
    """Lu-177 with ICRP-107's beta spectrum and photons, no conversion/Auger electrons,
    in water (a fresh Monte Carlo run, ~5 s)."""
    nuc = load_nuclide("Lu-177")
    src = dataclasses.replace(nuc, electron_lines_mev=np.zeros(0),
                              electron_yields=np.zeros(0))
    r = simulate_dpk(src, 400_000, 200_000, seed=77, medium="water", r_max_mm=200.0)
    return TabulatedPointKernel.from_table(
        r.r_mm, r.dose_gy_per_decay, nuclide="Lu-177", density_g_cm3=r.density_g_cm3,
        total_energy_mev=r.emitted_mev, source="test: beta + photons", medium="water")


@pytest.mark.parametrize("size", SIZES)
def test_y90_soft_tissue_against_lanconelli(size):
    dev = _dev(_vsv(load_point_kernel("Y-90", "soft-tissue"), size), "Y-90", size)
    assert abs(dev["000"]) < 0.03                           # measured +1.2 ... +1.4 %
    for o in ("001", "011", "111", "002"):
        assert abs(dev[o]) < 0.06, (o, dev[o])  # measured within 3.5 % (002 at 4.42 mm)
    # (5,5,5) is bremsstrahlung only, 6 orders below the source voxel: 15 %
    assert abs(dev["555"]) < 0.15                           # measured -0.2 ... +6.4 %


@pytest.mark.parametrize("size", sorted(MIRD17_Y90_SELF))
def test_y90_source_voxel_against_mird17(size):
    ours = _vsv(load_point_kernel("Y-90", "soft-tissue"), size)["000"]
    assert ours == pytest.approx(MIRD17_Y90_SELF[size], rel=0.03)   # measured +0.1, +0.2 %


@pytest.mark.parametrize("size", SIZES)
def test_lu177_like_for_like_source_against_lanconelli(lu177_beta_and_photons, size):
    """Beta spectrum + photons (the published table's apparent source), water."""
    dev = _dev(_vsv(lu177_beta_and_photons, size), "Lu-177", size)
    assert abs(dev["000"]) < 0.03                           # measured +0.2 ... +0.5 %
    for o in ("001", "011", "111", "002"):
        assert abs(dev[o]) < 0.10, (o, dev[o])  # measured within 5.3 % (2.21 mm)
    assert abs(dev["555"]) < 0.08                           # photons: measured +1 ... +4 %


@pytest.mark.parametrize("size", (2.21, 4.8))
def test_lu177_full_emission_excess_is_the_conversion_and_auger_energy(
        lu177_beta_and_photons, size):
    """With all ICRP-107 electrons the source voxel is ~12 % above the published value;
    the excess equals the energy the conversion and Auger lines deposit there, i.e.
    S_full - S_beta = E_lines phi_lines / m with phi_lines (their absorbed fraction in the
    voxel) between 0.85 and 1 (lines of 5-250 keV: ranges up to 0.6 mm)."""
    full = _vsv(load_point_kernel("Lu-177"), size)
    beta = _vsv(lu177_beta_and_photons, size)
    dev = _dev(full, "Lu-177", size)
    assert 0.10 < dev["000"] < 0.14                         # measured +12.0 ... +12.7 %
    nuc = load_nuclide("Lu-177")
    e_lines = float(np.sum(nuc.electron_lines_mev * nuc.electron_yields))
    assert e_lines == pytest.approx(0.14792 - 0.13327, rel=0.01)     # ICRP-107
    mass_g = (size / 10.0) ** 3                              # water
    mev_per_g_to_mgy_per_mbq_s = 1.602176634e-10 * 1e3 * 1e6   # Gy/decay -> mGy/(MBq s)
    phi = (full["000"] - beta["000"]) * mass_g / (e_lines * mev_per_g_to_mgy_per_mbq_s)
    assert 0.85 < phi <= 1.0


#: Lanconelli et al. 2012, 3 mm voxels, medium "Bone compact" (the database file's
#: header; most likely ICRU compact bone, 1.85 g/cm^3 - not verified), mGy/(MBq s).
LANCONELLI_Y90_BONE_3MM = (1.40, 1.75e-1, 3.68e-2, 9.29e-3, 1.53e-3)


def test_y90_bone_against_lanconelli():
    """Our ICRP cortical bone table (1.85 g/cm^3; a different bone composition from the
    published "compact" bone) at 3 mm: self voxel within 3 % (measured +0.8 %), first
    neighbours within 10 % (measured -0.7 to -4.1 %)."""
    ours = _vsv(load_point_kernel("Y-90", "bone"), 3.0)
    pub = dict(zip(OFFSETS[:5], LANCONELLI_Y90_BONE_3MM, strict=True))
    assert ours["000"] == pytest.approx(pub["000"], rel=0.03)
    for o in ("001", "011", "111", "002"):
        assert ours[o] == pytest.approx(pub[o], rel=0.10), o
