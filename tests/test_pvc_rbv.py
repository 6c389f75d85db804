"""RBV and iterative Yang on the label grid: interpolation, exactness on model data, the
sphere phantom, intra-region structure."""

import math

import numpy as np
import pytest

from voxdose.core.grid import Grid
from voxdose.pvc.correct import correct, prepare
from voxdose.pvc.gtm import _apply_axes
from voxdose.pvc.psf import GaussianPsf, psf_box_matrices
from voxdose.pvc.rbv import iterative_yang_means, rbv_correct, upsample_linear
from voxdose.pvc.spheres import sphere_phantom


@pytest.fixture(scope="module")
def phantom():
    return sphere_phantom(spect_offset_mm=(1.3, 0.7, 2.1))


@pytest.fixture(scope="module")
def setup(phantom):
    return prepare(phantom.labels, phantom.label_grid, phantom.names, phantom.spect_grid,
                   "rbv", fwhm_mm=10.0, body_mask=phantom.body_mask)


def _linear(grid, a=(0.3, -0.2, 0.5), b=2.0):
    x, y, z = grid.world_coordinates()
    return a[0] * x + a[1] * y + a[2] * z + b


@pytest.mark.parametrize("rotate", [False, True])
def test_trilinear_upsampling_is_exact_for_linear_fields(rotate):
    direction = None
    if rotate:  # both grids rotated differently: the map_coordinates path
        th = math.radians(20)
        direction = np.array([[1, 0, 0], [0, math.cos(th), -math.sin(th)],
                              [0, math.sin(th), math.cos(th)]])
    src = Grid.from_spacing((10, 12, 14), (4.0, 4.0, 4.0), (2.0, 2.0, 2.0))
    tgt = Grid.from_spacing((30, 32, 40), (1.7, 1.9, 1.6), (-6.0, -5.0, -4.0), direction)
    out = np.asarray(upsample_linear(_linear(src), src, tgt, dtype=np.float64))
    q = src.world_to_index(np.stack(tgt.world_coordinates(), axis=-1))
    hull = np.all((q >= 0) & (q <= np.array(src.shape) - 1), axis=-1)
    assert hull.sum() > 1000
    assert np.abs(out - _linear(tgt))[hull].max() < 1e-9
    beyond = np.any((q < -0.5) | (q > np.array(src.shape) - 0.5), axis=-1)
    assert beyond.any() and np.all(out[beyond] == 0)


def test_rbv_of_data_that_follow_the_model_is_the_model(phantom, setup):
    truth = np.array([phantom.truth_bq_ml[n] for n in setup.regions.names])
    y = setup.gtm.synthesize(truth)
    f = np.asarray(rbv_correct(y, setup.gtm, truth))
    expect = truth[setup.regions.index - 1]
    inside = np.asarray(setup.fov_mask)
    assert np.abs(f - expect)[inside].max() < 1e-4 * truth.max()


def test_rbv_on_the_sphere_phantom(phantom, setup):
    res = correct(phantom.image_bq_ml, setup)
    truth = np.array([phantom.truth_bq_ml[n] for n in setup.regions.names])
    out = np.array([r.output_mean_bq_ml for r in res.rows])  # evaluated on the label grid
    rel = out[:-1] / truth[:-1] - 1
    assert np.all(np.abs(rel) < 0.02), rel  # measured +1.2 % (1 mL) ... +0.15 %, bg -0.1 %
    assert res.grid.same_as(phantom.label_grid) and res.image.shape == phantom.labels.shape
    # voxel level: the 100 mL sphere's interior (8 mm inside) within 0.5 % (measured 0.28 %)
    x, y, z = phantom.label_grid.world_coordinates()
    c, r_mm = phantom.centres_mm_xyz["sphere_100ml"], phantom.radius_eff_mm["sphere_100ml"]
    inner = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 < (r_mm - 8) ** 2
    assert np.abs(res.image[inner] / phantom.truth_bq_ml["sphere_100ml"] - 1).max() < 5e-3
    assert res.totals_bq["corrected_total_bq"] == pytest.approx(phantom.true_total_bq, rel=2e-3)


def test_iterative_yang_converges_to_the_gtm_means(phantom, setup):
    gtm = setup.gtm.solve(phantom.image_bq_ml).means_bq_ml
    one = iterative_yang_means(phantom.image_bq_ml, setup.gtm, 1)
    yang = iterative_yang_means(phantom.image_bq_ml, setup.gtm)
    assert yang.iterations == 20 and yang.last_change < 1e-3
    # spheres: within 0.3 % of the GTM (measured 0.1-0.2 %); one iteration is far from it
    assert np.all(np.abs(yang.means_bq_ml[:7] / gtm[:7] - 1) < 3e-3)
    assert np.abs(one.means_bq_ml[:7] / gtm[:7] - 1).max() > 0.05
    s = prepare(phantom.labels, phantom.label_grid, phantom.names, phantom.spect_grid, "iy",
                fwhm_mm=10.0, body_mask=phantom.body_mask)
    res = correct(phantom.image_bq_ml, s)
    truth = np.array([phantom.truth_bq_ml[n] for n in s.regions.names])
    out = np.array([r.output_mean_bq_ml for r in res.rows])
    assert np.all(np.abs(out[:-1] / truth[:-1] - 1) < 0.02)
    assert res.iterations == 20 and not res.warnings


def test_rbv_keeps_a_gradient_inside_a_region_that_gtm_flattens(phantom, setup):
    # activity rising by 30 % across the 100 mL sphere (not in the label map), forward-projected
    # with the exact separable operator
    x, _, _ = phantom.label_grid.world_coordinates()
    c, r_mm = phantom.centres_mm_xyz["sphere_100ml"], phantom.radius_eff_mm["sphere_100ml"]
    sph = phantom.labels == next(k for k, n in phantom.names.items() if n == "sphere_100ml")
    f = np.where(phantom.body_mask, 1e4, 0.0)
    f[sph] = 4e4 * (1 + 0.3 * (x[sph] - c[0]) / r_mm)
    mats = psf_box_matrices(phantom.label_grid, phantom.spect_grid, GaussianPsf((10.0,) * 3))
    y = _apply_axes(np, f, mats)
    res = correct(y, setup)
    inner = sph & (np.abs(x - c[0]) < r_mm - 8)
    slope = np.polyfit(x[inner] - c[0], res.image[inner], 1)[0]
    assert slope == pytest.approx(0.3 * 4e4 / r_mm, rel=0.15)
    s = prepare(phantom.labels, phantom.label_grid, phantom.names, phantom.spect_grid, "gtm",
                fwhm_mm=10.0, body_mask=phantom.body_mask)
    flat = correct(y, s).image
    assert np.ptp(flat[inner]) == 0.0
