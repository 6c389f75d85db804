"""Voxel-kernel build time: the default far-field rule (3x3x3 tent-Gauss, Numba, once per
symmetry class) against the former 6x6x6 rule (NumPy), in the same run, at the sizes of
the issue's targets (Lu-177, 2.4 mm with the demo's CT-grid diagonal of 561 mm; 1 mm with
200 mm).  Each case also reports the largest difference of the two kernels relative to the
source voxel and the difference of their energy sums.

Run: ``python -m pytest benchmarks/bench_kernel_build.py --benchmark-only -s`` or
``python benchmarks/bench_kernel_build.py`` (plain printout).  The former rule takes
1-2 minutes per case on a 2-core machine.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from voxdose.kernels.point import load_point_kernel
from voxdose.kernels.voxel import voxel_kernel

CASES = {"Lu-177 2.4 mm, 561 mm": ("Lu-177", (2.4, 2.4, 2.4), 561.0),
         "Lu-177 1 mm, 200 mm": ("Lu-177", (1.0, 1.0, 1.0), 200.0),
         "Y-90 2.4 mm, 561 mm": ("Y-90", (2.4, 2.4, 2.4), 561.0)}
_built: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    voxel_kernel(load_point_kernel("Lu-177"), (4.8, 4.8, 4.8), 30.0)  # Numba compile/cache


@pytest.mark.parametrize("rule", ["tent3", "gauss6"])
@pytest.mark.parametrize("case", list(CASES))
def test_voxel_kernel_build(benchmark, case, rule):
    nuclide, spacing, radius = CASES[case]
    pk = load_point_kernel(nuclide)
    benchmark.group = f"voxel kernel {case}"
    k = benchmark.pedantic(voxel_kernel, args=(pk, spacing, radius),
                           kwargs={"far_field": rule}, rounds=1, iterations=1)
    _built[(case, rule)] = k
    other = _built.get((case, "tent3" if rule == "gauss6" else "gauss6"))
    if other is not None:
        self_voxel = k.data_gy_per_decay[k.half_width]
        diff = np.abs(k.data_gy_per_decay - other.data_gy_per_decay).max() / self_voxel
        benchmark.extra_info["max_diff_over_self"] = float(diff)
        benchmark.extra_info["energy_diff"] = float(k.neglected_energy_fraction -
                                                    other.neglected_energy_fraction)
        _built.clear()


if __name__ == "__main__":
    voxel_kernel(load_point_kernel("Lu-177"), (4.8, 4.8, 4.8), 30.0)
    for case, (nuclide, spacing, radius) in CASES.items():
        pk = load_point_kernel(nuclide)
        out = {}
        for rule in ("tent3", "gauss6"):
            t0 = time.perf_counter()
            out[rule] = voxel_kernel(pk, spacing, radius, far_field=rule)
            print(f"{case} ({out[rule].shape[0]}^3) {rule}: {time.perf_counter() - t0:.2f} s",
                  flush=True)
        a, b = out["tent3"], out["gauss6"]
        d = np.abs(a.data_gy_per_decay - b.data_gy_per_decay).max()
        d /= b.data_gy_per_decay[b.half_width]
        de = a.neglected_energy_fraction - b.neglected_energy_fraction
        print(f"  max |tent3 - gauss6| / source voxel = {d:.2e}; energy sums differ by {de:.2e}")
