"""Far-field voxel S-values: the 27-node tent-Gauss rule (default) against the former
216-node rule and against the accurate near-field integration, at several voxel sizes,
anisotropic voxels included (issue: voxel kernels in seconds).

Achieved on the shipped Monte Carlo tables (2026-12-01): tent3 - gauss6 at most 1.6e-7
of the source-voxel value, energy sums within 7.2e-6 of the emitted energy; every far
voxel within 0.17 % of the accurate (near-field) method, within 4e-7 of the source voxel.
The issue's bound is 1e-4;
the tolerances below are a few times what is achieved, so a real regression fails.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from voxdose.kernels.far_field import TENT3_NODES, TENT3_WEIGHTS, equal_axes
from voxdose.kernels.point import load_point_kernel
from voxdose.kernels.voxel import _near_offset_value, method_description, voxel_kernel

CASES = [
    ("Lu-177", (4.8, 4.8, 4.8), 60.0),
    ("Lu-177", (2.21, 2.21, 2.21), 40.0),
    ("Y-90", (3.0, 4.42, 4.42), 30.0),
    ("Lu-177", (2.0, 2.5, 3.0), 40.0),
]


def test_tent_rule_matches_the_tent_moments_to_degree_five():
    # tent t(u) = 1 - |u| on [-1, 1]: E[u^2k] = 2 / ((2k + 1)(2k + 2))
    for k, exact in ((0, 1.0), (1, 1 / 6), (2, 1 / 15)):
        assert float(TENT3_WEIGHTS @ TENT3_NODES ** (2 * k)) == pytest.approx(exact, rel=1e-14)
    assert abs(float(TENT3_WEIGHTS @ TENT3_NODES**3)) < 1e-15
    # degree 6 is not integrated exactly: the rule really is a 3-point rule
    assert float(TENT3_WEIGHTS @ TENT3_NODES**6) != pytest.approx(1 / 28, rel=1e-3)


@pytest.mark.parametrize(("nuclide", "spacing", "radius"), CASES)
def test_tent3_equals_the_former_rule(nuclide, spacing, radius):
    pk = load_point_kernel(nuclide)
    new = voxel_kernel(pk, spacing, radius)
    old = voxel_kernel(pk, spacing, radius, far_field="gauss6")
    assert new.shape == old.shape
    self_voxel = old.data_gy_per_decay[old.half_width]
    diff = np.abs(new.data_gy_per_decay - old.data_gy_per_decay).max() / self_voxel
    assert diff < 2e-6
    assert abs(new.neglected_energy_fraction - old.neglected_energy_fraction) < 2e-5
    assert new.method == method_description("tent3") != old.method


@pytest.mark.parametrize(("nuclide", "spacing"), [("Lu-177", (2.4, 2.4, 2.4)),
                                                   ("Y-90", (3.0, 4.42, 4.42))])
def test_far_values_against_the_accurate_method(nuclide, spacing):
    pk = load_point_kernel(nuclide)
    k = voxel_kernel(pk, spacing, 40.0)
    h = np.array(k.half_width)
    d = k.data_gy_per_decay
    self_voxel = d[tuple(h)]
    n = k.n_near + 1
    for off in [(n, 0, 0), (0, n, 1), (n, n, n), (5, 3, 8)]:
        off = tuple(int(min(a, b)) for a, b in zip(off, h))
        ref = _near_offset_value(pk, off, spacing, n_directions=8_000, n_radial=1_000)
        assert abs(d[tuple(h + off)] - ref) / self_voxel < 2e-6


def test_symmetry_classes_are_copied_not_mixed():
    pk = load_point_kernel("Lu-177")
    cubic = voxel_kernel(pk, (3.0, 3.0, 3.0), 30.0).data_gy_per_decay
    for perm in [(0, 2, 1), (1, 0, 2), (2, 1, 0), (1, 2, 0)]:
        np.testing.assert_array_equal(cubic, cubic.transpose(perm))
    np.testing.assert_array_equal(cubic, cubic[::-1, ::-1, ::-1])
    aniso = voxel_kernel(pk, (2.0, 3.0, 3.0), 30.0).data_gy_per_decay
    np.testing.assert_array_equal(aniso, aniso.transpose(0, 2, 1))      # y <-> x equal
    h = aniso.shape[0] // 2, aniso.shape[1] // 2, aniso.shape[2] // 2
    # z (2 mm) is not interchangeable with y (3 mm): offset (0, 1, 0) != (1, 0, 0)
    assert not math.isclose(aniso[h[0], h[1] + 5, h[2]], aniso[h[0] + 5, h[1], h[2]],
                            rel_tol=1e-3)
    assert equal_axes((2.0, 3.0, 3.0)) == (False, False, True)


def test_unknown_far_field_rule_refused():
    from voxdose.core.errors import InputError

    with pytest.raises(InputError, match="far_field"):
        voxel_kernel(load_point_kernel("Lu-177"), (4.8, 4.8, 4.8), 20.0, far_field="fast")


def test_every_far_voxel_against_the_accurate_method():
    """A point kernel whose electron range covers the whole kernel makes every offset 'near'
    (accurate method everywhere): the default kernel's far voxels must agree voxel by voxel.
    Achieved: 0.17 % (Lu-177, 4 mm); point samples of the table instead of its windowed mean
    gave 1.3 %, the former 216-node rule 0.5 %."""
    from voxdose.kernels.point import TabulatedPointKernel

    pk = load_point_kernel("Lu-177")
    everywhere_near = TabulatedPointKernel.from_table(
        pk.r_table_mm, pk.dose_table_gy_per_decay, nuclide="Lu-177", electron_range_mm=1e3)
    ref = voxel_kernel(everywhere_near, (4.0, 4.0, 4.0), 20.0).data_gy_per_decay
    new = voxel_kernel(pk, (4.0, 4.0, 4.0), 20.0).data_gy_per_decay
    assert np.max(np.abs(new / ref - 1.0)) < 4e-3
