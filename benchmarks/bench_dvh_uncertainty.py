"""Structure-mean sigma of the demo (eq. 3 of dose/uncertainty.py), float32 transforms (the
default, ``MEAN_SIGMA_PRECISION``) against float64, one structure at a time, and float32
with two structures at once (``structure_mean_sigmas``, the CPU default of ``voxdose run``),
measured in the same run.

Problem: the demo's label grid (126 x 114 x 160 voxels of 2.4 mm, the phantom's 13
structures as whole voxels), the Lu-177 kernel on it by the radius rule (319^3, cropped to
the grid), a sigma map that is 5 % of the phantom's true TIA pattern plus a floor, and the
demo's SPECT grid (4.8 mm) as the fit grid: label voxels sharing a SPECT voxel share its
error (``fit_voxel_parents``), as after the demo's partial-volume correction.

Run: ``python -m pytest benchmarks/bench_dvh_uncertainty.py --benchmark-only``. The largest
relative difference of the 26 numbers between the two precisions is in ``extra_info``.
"""

import numpy as np
import pytest

from voxdose.analysis.dvh_uncertainty import structure_mean_sigmas
from voxdose.core.backend import cpu_backend
from voxdose.dose.convolution import SpectrumCache
from voxdose.dose.uncertainty import LinearTerm, fit_voxel_parents, mean_sigma_from_terms
from voxdose.kernels.extent import kernel_radius_for
from voxdose.kernels.point import point_kernel_for
from voxdose.kernels.voxel import voxel_kernel
from voxdose.phantom.anatomy import STRUCTURES, rasterize_labels
from voxdose.phantom.study import PhantomConfig, make_grids

ROUNDS = 3
_RESULTS: dict = {}


@pytest.fixture(scope="module")
def problem():
    cfg = PhantomConfig()
    label_grid, spect_grid = make_grids(cfg)
    labels = rasterize_labels(label_grid, scale=cfg.anatomy_scale)
    pk = point_kernel_for("Lu-177")
    kernel = voxel_kernel(pk, label_grid.spacing_mm, kernel_radius_for(pk, label_grid))
    uptake = np.zeros(256)
    uptake[[s.label for s in STRUCTURES]] = np.linspace(1.0, 10.0, len(STRUCTURES))
    sigma = 0.05 * uptake[labels] * 1e6 + 1e3 * (labels > 0)
    weights = {s.name: (labels == s.label).astype(np.float64) for s in STRUCTURES}
    return {"terms": [LinearTerm(kernel.data_gy_per_decay)], "sigma": sigma,
            "weights": weights, "parents": fit_voxel_parents(label_grid, spect_grid),
            "kernel_shape": kernel.data_gy_per_decay.shape, "grid": label_grid.shape}


def _all_structures(p, precision):
    be = cpu_backend()
    caches = [SpectrumCache(max_entries=1) for _ in p["terms"]]
    if precision == "float32, 2 at once":
        return structure_mean_sigmas(p["sigma"], p["terms"], p["weights"], be, caches,
                                     p["parents"], threads=2)
    return {name: mean_sigma_from_terms(p["sigma"], p["terms"], w, be, caches, p["parents"],
                                        precision=precision)
            for name, w in p["weights"].items()}


@pytest.mark.parametrize("precision", ["float64", "float32", "float32, 2 at once"])
def test_structure_mean_sigma_13_structures(benchmark, problem, precision):
    out = benchmark.pedantic(_all_structures, args=(problem, precision), rounds=ROUNDS,
                             iterations=1, warmup_rounds=0)
    _RESULTS[precision] = out
    if precision == "float32, 2 at once":
        assert out == _RESULTS["float32"]  # the same numbers, whatever the threads
        return
    benchmark.extra_info.update({"grid_zyx": list(problem["grid"]),
                                 "kernel_zyx": list(problem["kernel_shape"]),
                                 "structures": len(out)})
    if {"float32", "float64"} <= set(_RESULTS):
        a, b = _RESULTS["float32"], _RESULTS["float64"]
        rel = max(max(abs(a[n].independent_gy / b[n].independent_gy - 1),
                      abs(a[n].fully_correlated_gy / b[n].fully_correlated_gy - 1)) for n in a)
        benchmark.extra_info["max_relative_difference_float32_vs_float64"] = rel
        assert rel < 2e-6
