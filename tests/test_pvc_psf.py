"""The Gaussian PSF on a grid: FWHM parsing and limits, axis mapping, the discrete operators."""

import math

import numpy as np
import pytest
from scipy.special import erf

from voxdose.core.errors import InputError
from voxdose.core.grid import Grid
from voxdose.imaging.occupancy import _axis_weights
from voxdose.pvc.psf import (FWHM_TO_SIGMA, GaussianPsf, blur, cell_gaussian_1d, check_fwhm,
                             parse_fwhm, psf_box_matrix_1d)

SPECT = Grid.from_spacing((8, 8, 8), (4.8, 4.8, 4.8))


def test_fwhm_is_parsed_as_x_y_z():
    assert parse_fwhm(10) == (10.0, 10.0, 10.0)
    assert parse_fwhm("9, 9,12") == (9.0, 9.0, 12.0)
    assert parse_fwhm([8, 9, 10]) == (8.0, 9.0, 10.0)
    for bad, msg in ((None, "no resolution"), ("ten", "not a number"),
                     ("1,2", "one FWHM or three")):
        with pytest.raises(InputError, match=msg):
            parse_fwhm(bad)


@pytest.mark.parametrize("fwhm, msg", [((0, 10, 10), "> 0 mm"), ((-3, -3, -3), "> 0 mm"),
                                       ((10, 10, math.nan), "> 0 mm"),
                                       ((60, 10, 10), "not a SPECT resolution"),
                                       ((0.5, 10, 10), "below a fifth of the SPECT voxel")])
def test_absurd_fwhm_refused(fwhm, msg):
    with pytest.raises(InputError, match=msg):
        check_fwhm(fwhm, SPECT)
    check_fwhm((1.0, 10.0, 50.0), SPECT)  # 4.8 mm / 5 = 0.96 mm: accepted


def test_world_fwhm_maps_onto_the_array_axes():
    psf = GaussianPsf((6.0, 8.0, 12.0))  # x, y, z
    g = Grid.from_spacing((4, 4, 4), (1, 1, 1))  # default: array (z, y, x) -> LPS (z, y, x)
    assert np.allclose(psf.sigma_mm_zyx(g), np.array([12.0, 8.0, 6.0]) * FWHM_TO_SIGMA)
    # array axes pointing along LPS y, x, z (a permuted, flipped grid)
    perm = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    gp = Grid.from_spacing((4, 4, 4), (1, 1, 1), direction=perm)
    assert np.allclose(psf.sigma_mm_zyx(gp), np.array([8.0, 6.0, 12.0]) * FWHM_TO_SIGMA)
    assert psf.off_diagonal(gp) == pytest.approx(0.0, abs=1e-12)
    th = math.radians(30)
    rot = np.array([[math.cos(th), -math.sin(th), 0], [math.sin(th), math.cos(th), 0],
                    [0, 0, 1.0]])
    assert psf.off_diagonal(Grid.from_spacing((4, 4, 4), (1, 1, 1), direction=rot)) > 0.05
    assert GaussianPsf((7.0,) * 3).off_diagonal(Grid.from_spacing((4, 4, 4), (1, 1, 1),
                                                                  direction=rot)) < 1e-12


@pytest.mark.parametrize("sigma_vox, rel", [(0.6, 3e-4), (0.8, 1e-5), (2.1, 1e-5), (5.0, 1e-5)])
def test_cell_gaussian_moments(sigma_vox, rel):
    k = cell_gaussian_1d(sigma_vox)
    n = np.arange(k.size) - k.size // 2
    assert k.sum() == pytest.approx(1.0, abs=1e-14)
    assert np.allclose(k, k[::-1])
    # variance sigma^2 + 1/6: the Gaussian convolved with two voxel boxes (source and target)
    assert float((k * n * n).sum()) == pytest.approx(sigma_vox ** 2 + 1 / 6, rel=rel)
    assert np.array_equal(cell_gaussian_1d(0.0), [1.0])


def test_psf_box_matrix_without_blur_is_the_box_overlap_and_keeps_mass():
    t = 3.3 + 4.4 * np.arange(10)  # 4.4 mm target voxels
    s = 0.5 + 1.2 * np.arange(40)  # 1.2 mm source voxels, unaligned
    m0 = psf_box_matrix_1d(t, 4.4, s, 1.2, 0.0)
    w = _axis_weights(10, 3.3, 4.4, 40, 0.5, 1.2).toarray()  # occupancy's own overlap code
    assert np.allclose(m0, w, atol=1e-12)
    m = psf_box_matrix_1d(t, 4.4, s, 1.2, 3.0)
    inner = slice(17, 23)  # source voxels far from the target's ends: nothing lost
    assert np.allclose(m[:, inner].sum(axis=0) * 4.4, 1.2, rtol=1e-9)


def test_blur_of_a_box_equals_the_analytic_cell_averages():
    # FFT blur with the cell-averaged kernel vs Gauss-Legendre cell averages of the erf box
    d = 2.0
    g = Grid.from_spacing((8, 8, 40), (d, d, d), (d / 2, d / 2, d / 2))
    f = np.zeros(g.shape)
    f[:, :, 10:25] = 1.0  # x in [20, 50) mm, uniform in y, z... but 0 outside the grid
    psf = GaussianPsf((9.0, 9.0, 9.0))
    out = np.asarray(blur(f, g, psf, precision="float64"))
    s = 9.0 * FWHM_TO_SIGMA
    nodes, weights = np.polynomial.legendre.leggauss(6)
    xc = (np.arange(40) + 0.5) * d
    pts = xc[:, None] + 0.5 * d * nodes
    exact = (0.5 * (erf((50 - pts) / (math.sqrt(2) * s)) - erf((20 - pts) / (math.sqrt(2) * s)))
             * weights / 2).sum(axis=1)
    # along x only (y and z: the grid's edges also blur), compare ratios of two slices
    line = out[4, 4, :] / out[4, 4, 17]
    assert np.abs(line - exact / exact[17]).max() < 2e-6
