"""Comparison with a published voxel S-value table: Lu-177, 2.21 mm cubic voxels, soft
tissue, Lanconelli et al., Phys Med Biol 2012;57:517-533 (DOSXYZnrc), as distributed in the
authors' database at www.medphys.it (file "177Lu2.21mmsoft.txt"). Only the 11
published figures used below are quoted (self voxel, first neighbours, a few photon-region
voxels); they were transcribed from a third-party copy of the authors' table and have not yet
been checked against the paper itself.

Honest result (docs/validation.md, "Monte Carlo kernels"): our water kernel range-scaled to
1.04 g/cm^3 is 9 % above the published self-voxel value (the issue aims at 3 %), -3 % in
the face neighbours, -9 to -11 % at the edge and corner neighbours (the issue's 10 % holds
only just, or not), and within 4.2 % beyond (the photon region).  Summed over the whole
published 11^3 table (measured once, not kept here) it holds ~6 % less energy than ours,
mostly in the source voxel, which points to different emission data rather than transport
(not verified: the paper's source definition was not at hand).  The tolerances below are
the measured deviations plus a margin; they guard against regressions, they do not claim
the 3 %/10 % goal.
"""

from __future__ import annotations

import numpy as np
import pytest

from voxdose.dose.point_kernel import point_kernel_at_density
from voxdose.dose.voxel_kernel import voxel_kernel

#: Lanconelli et al. 2012, Lu-177, 2.21 mm, soft tissue: S in mGy/(MBq s) for offsets
#: (i, j, k) in voxels, i <= j <= k (the table is symmetric).
LANCONELLI_LU177_221 = {
    "000": 1.66E+00,
    "001": 4.83E-02,
    "002": 7.70E-05,
    "003": 3.24E-05,
    "005": 1.18E-05,
    "011": 2.52E-03,
    "022": 3.66E-05,
    "033": 1.62E-05,
    "111": 2.50E-04,
    "222": 2.42E-05,
    "555": 3.98E-06,
}
#: Density assumed for the published "soft tissue" (ICRU soft tissue; not verified).
RHO_SOFT = 1.04


@pytest.fixture(scope="module")
def ours():
    pk = point_kernel_at_density("Lu-177", RHO_SOFT)
    vk = voxel_kernel(pk, (2.21, 2.21, 2.21), radius_mm=5 * 2.21)
    a = vk.as_mgy_per_mbq_s()
    h = vk.half_width[0]
    return {k: float(a[h + int(k[0]), h + int(k[1]), h + int(k[2])])
            for k in LANCONELLI_LU177_221}


def _dev(ours, k):
    return ours[k] / LANCONELLI_LU177_221[k] - 1.0


def test_lu177_221mm_near_voxels_against_lanconelli(ours):
    assert 0.0 < _dev(ours, "000") < 0.12          # measured +8.9 % (goal 3 %: not met)
    assert abs(_dev(ours, "001")) < 0.05           # measured -2.9 %
    assert abs(_dev(ours, "011")) < 0.12           # measured -9.0 %
    assert abs(_dev(ours, "111")) < 0.13           # measured -10.5 %


def test_lu177_221mm_photon_region_against_lanconelli(ours):
    far = [k for k in LANCONELLI_LU177_221 if max(int(c) for c in k) >= 2]
    dev = np.array([_dev(ours, k) for k in far])
    assert np.max(np.abs(dev)) < 0.07              # measured max |dev| 4.2 %
    assert abs(np.median(dev)) < 0.03


def test_beta_only_source_explains_the_self_voxel_difference():
    """Hypothesis for the +9 % self voxel: the published table used the beta spectrum only
    (no conversion or Auger electrons: 0.1333 instead of 0.1479 MeV of electrons per decay).
    With those lines removed, our (analytic) kernel's self voxel falls to within 4 % of the
    published 1.66 mGy/(MBq s) (measured -2.6 %), while the full ICRP-107 emission gives
    +9 %. This supports, but does not prove, the explanation (the paper was not at hand)."""
    import dataclasses

    from voxdose.dose.point_kernel import point_kernel_for
    from voxdose.nuclide import load_nuclide

    nuc = load_nuclide("Lu-177")
    beta_only = dataclasses.replace(nuc, electron_lines_mev=np.zeros(0),
                                    electron_yields=np.zeros(0))
    out = {}
    for label, n in (("all", nuc), ("beta", beta_only)):
        k = voxel_kernel(point_kernel_for(n, density_g_cm3=RHO_SOFT), (2.21,) * 3,
                         radius_mm=11.05).as_mgy_per_mbq_s()
        h = k.shape[0] // 2
        out[label] = float(k[h, h, h]) / LANCONELLI_LU177_221["000"] - 1.0
    assert abs(out["beta"]) < 0.04
    assert out["all"] > 0.07
