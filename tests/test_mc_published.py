"""Comparison with a published voxel S-value table: Lu-177, 2.21 mm cubic voxels, soft
tissue, Lanconelli et al., Phys Med Biol 2012;57:517-533 (DOSXYZnrc), as distributed in the
authors' database www.medphys.it/down_svoxel.asp (file "177Lu2.21mmsoft.txt"; the copy read
here is the one committed in github.com/luisacbscs/SNMMIDosimetryChallenge, commit e122cc1).

Honest result (docs/validation.md, "Monte Carlo kernels"): our water kernel range-scaled to
1.04 g/cm^3 is 9 % above the published self-voxel value (the issue aims at 3 %), -3 % in
the face neighbours, -9 to -11 % at the edge and corner neighbours (the issue's 10 % holds
only just, or not), and within 4.2 % beyond (the photon region).  The published table holds
6 % less energy in its 11^3 voxels than ours, mostly in the source voxel, which points to
different emission data rather than transport (not verified: the paper's source
definition was not at hand).  The tolerances below are the measured deviations plus a
margin; they guard against regressions, they do not claim the 3 %/10 % goal.
"""

from __future__ import annotations

import itertools

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
    "004": 1.81E-05,
    "005": 1.18E-05,
    "011": 2.52E-03,
    "012": 6.04E-05,
    "013": 2.91E-05,
    "014": 1.71E-05,
    "015": 1.13E-05,
    "022": 3.66E-05,
    "023": 2.24E-05,
    "024": 1.46E-05,
    "025": 1.01E-05,
    "033": 1.62E-05,
    "034": 1.18E-05,
    "035": 8.72E-06,
    "044": 9.36E-06,
    "045": 7.28E-06,
    "055": 6.00E-06,
    "111": 2.50E-04,
    "112": 4.96E-05,
    "113": 2.65E-05,
    "114": 1.62E-05,
    "115": 1.09E-05,
    "122": 3.24E-05,
    "123": 2.08E-05,
    "124": 1.40E-05,
    "125": 9.87E-06,
    "133": 1.54E-05,
    "134": 1.14E-05,
    "135": 8.46E-06,
    "144": 8.98E-06,
    "145": 7.12E-06,
    "155": 5.88E-06,
    "222": 2.42E-05,
    "223": 1.73E-05,
    "224": 1.23E-05,
    "225": 8.98E-06,
    "233": 1.34E-05,
    "234": 1.02E-05,
    "235": 7.82E-06,
    "244": 8.28E-06,
    "245": 6.67E-06,
    "255": 5.55E-06,
    "333": 1.09E-05,
    "334": 8.79E-06,
    "335": 6.94E-06,
    "344": 7.33E-06,
    "345": 6.02E-06,
    "355": 5.13E-06,
    "444": 6.30E-06,
    "445": 5.27E-06,
    "455": 4.61E-06,
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


def test_published_table_holds_less_energy_in_the_box(ours):
    """Sum over the 11^3 voxels (the table's extent): the published kernel holds ~6 % less
    energy per decay than ours (our source: ICRP-107, 0.1479 MeV electrons + photons)."""
    full_ref = full_our = 0.0
    for i, j, k in itertools.product(range(-5, 6), repeat=3):
        key = "".join(str(v) for v in sorted((abs(i), abs(j), abs(k))))
        full_ref += LANCONELLI_LU177_221[key]
        full_our += ours[key]
    assert 0.90 < full_ref / full_our < 0.97        # measured 0.936
