"""Partial-volume correction at 128^3 (CPU): the GTM's regional spread functions three ways,
and the per-time-point cost of each method, measured in the same run.

Problem: a 128^3 label grid (2 mm voxels, 256 mm) with 10 spheres of 1-100 mL inside a body
box (background region) and the air around it (outside region); a 62^3 SPECT grid (4 mm
voxels, offset 1.3 mm from the labels); FWHM 10 mm.

RSFs (once per study):
* voxdose, exact separable ``B G`` (the default for grids sharing their axes);
* voxdose, FFT path (zero-padded FFT convolution on the label grid + box average);
* the obvious alternative: ``scipy.ndimage.gaussian_filter`` of every region's indicator on
  the whole label grid + the same box average.
Per time point (model built): GTM solve, RBV (GTM + the voxel ratio on the 128^3 label grid),
iterative Yang (20 iterations + the ratio).

Run: ``python -m pytest benchmarks/bench_pvc.py --benchmark-only``. The FFT and the
gaussian_filter RSFs are checked against the exact ones (max difference printed in
``extra_info``).
"""

import numpy as np
import pytest
from scipy import ndimage

from voxdose.core.grid import Grid
from voxdose.imaging.occupancy import box_average
from voxdose.pvc.correct import correct, prepare
from voxdose.pvc.gtm import regional_spread_functions
from voxdose.pvc.psf import FWHM_TO_SIGMA, GaussianPsf
from voxdose.pvc.regions import build_regions

N, D_MM, S_MM, FWHM_MM = 128, 2.0, 4.0, 10.0
ROUNDS = 3


@pytest.fixture(scope="module")
def problem():
    label = Grid.from_spacing((N, N, N), (D_MM,) * 3, (D_MM / 2,) * 3)
    x, y, z = label.world_coordinates()
    labels = np.zeros(label.shape, np.int32)
    rng = np.random.default_rng(3)
    vols = np.geomspace(1.0, 100.0, 10)
    centres = [(60 + 45 * (k % 4), 60 + 45 * ((k // 4) % 3), 128 + 25 * (-1) ** k)
               for k in range(10)]
    for k, (v, c) in enumerate(zip(vols, centres), start=1):
        r = (3 * v * 1000 / (4 * np.pi)) ** (1 / 3)
        labels[(x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= r * r] = k
    body = (x > 20) & (x < 236) & (y > 20) & (y < 236) & (z > 40) & (z < 216)
    spect = Grid.from_spacing((62, 62, 62), (S_MM,) * 3, (1.3 + S_MM / 2,) * 3)
    names = {k: f"sphere_{k}" for k in range(1, 11)}
    act = np.where(body, 1e4, 0.0) + np.where(labels > 0, 3e4, 0.0)
    y_spect = box_average(ndimage.gaussian_filter(act, FWHM_MM * FWHM_TO_SIGMA / D_MM,
                                                  mode="constant"), label, spect)
    y_spect *= rng.poisson(400, y_spect.shape) / 400.0
    return {"label": label, "labels": labels, "names": names, "body": body, "spect": spect,
            "frame": y_spect, "regions": build_regions(labels, label, names, body)}


_EXACT: dict = {}


def _exact(p):
    if "rsf" not in _EXACT:
        _EXACT["rsf"] = regional_spread_functions(p["regions"], p["spect"],
                                                  GaussianPsf((FWHM_MM,) * 3))
    return _EXACT["rsf"]


def _rsf_gaussian_filter(p):
    """Every region's indicator blurred on the whole label grid by gaussian_filter."""
    reg = p["regions"]
    sigma = FWHM_MM * FWHM_TO_SIGMA / D_MM
    out = np.zeros((reg.n,) + p["spect"].shape, np.float32)
    for k in range(reg.n):
        field = ndimage.gaussian_filter((reg.index == k + 1).astype(np.float64), sigma,
                                        mode="constant")
        out[k] = box_average(field, reg.grid, p["spect"])
    return out


def test_rsf_voxdose_exact_separable(benchmark, problem):
    benchmark.group = "PVC: GTM regional spread functions, 128^3 labels, 12 regions"
    benchmark.pedantic(regional_spread_functions, args=(problem["regions"], problem["spect"],
                       GaussianPsf((FWHM_MM,) * 3)), kwargs={"path": "separable"},
                       rounds=ROUNDS, warmup_rounds=1)


def test_rsf_voxdose_fft(benchmark, problem):
    benchmark.group = "PVC: GTM regional spread functions, 128^3 labels, 12 regions"
    out = benchmark.pedantic(regional_spread_functions, args=(problem["regions"],
                             problem["spect"], GaussianPsf((FWHM_MM,) * 3)),
                             kwargs={"path": "fft"}, rounds=ROUNDS, warmup_rounds=1)
    benchmark.extra_info["max_diff_vs_exact"] = float(np.abs(out - _exact(problem)).max())


def test_rsf_scipy_gaussian_filter(benchmark, problem):
    benchmark.group = "PVC: GTM regional spread functions, 128^3 labels, 12 regions"
    out = benchmark.pedantic(_rsf_gaussian_filter, args=(problem,), rounds=ROUNDS,
                             warmup_rounds=0)
    benchmark.extra_info["max_diff_vs_exact"] = float(np.abs(out - _exact(problem)).max())


@pytest.mark.parametrize("method", ["gtm", "rbv", "iy"])
def test_per_time_point(benchmark, problem, method):
    setup = prepare(problem["labels"], problem["label"], problem["names"], problem["spect"],
                    method, fwhm_mm=FWHM_MM, body_mask=problem["body"])
    benchmark.group = "PVC: one time point (model built), 128^3 label grid"
    benchmark.extra_info["prepare_s"] = setup.build_s
    res = benchmark.pedantic(correct, args=(problem["frame"], setup), rounds=ROUNDS,
                             warmup_rounds=1)
    benchmark.extra_info["condition_number"] = res.condition_number
