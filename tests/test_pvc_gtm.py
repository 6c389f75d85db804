"""GTM on a sphere phantom simulated without voxdose's PSF code (analytic blur, Gauss-Legendre
voxel averages): region means vs the inserted activities, noise, misstated PSF, recovery,
activity conservation, incomplete and uncovered label maps."""

import numpy as np
import pytest

from voxdose.core.errors import InputError
from voxdose.core.grid import Grid
from voxdose.pvc.analytic import effective_sigma_mm, sphere_recovery
from voxdose.pvc.correct import correct, prepare
from voxdose.pvc.gtm import build_gtm, regional_spread_functions
from voxdose.pvc.psf import FWHM_TO_SIGMA, GaussianPsf
from voxdose.pvc.regions import build_regions
from voxdose.pvc.spheres import poisson_noise, sphere_phantom

# 1-100 mL spheres (4:1) in a warm box, 2 mm labels, 4 mm SPECT voxels offset from the labels
OFFSET_MM = (1.3, 0.7, 2.1)


@pytest.fixture(scope="module")
def phantom():
    return sphere_phantom(spect_offset_mm=OFFSET_MM)


@pytest.fixture(scope="module")
def setup(phantom):
    return prepare(phantom.labels, phantom.label_grid, phantom.names, phantom.spect_grid,
                   "gtm", fwhm_mm=10.0, body_mask=phantom.body_mask)


def _truth(phantom, setup):
    return np.array([phantom.truth_bq_ml[n] for n in setup.regions.names])


def test_regions_are_spheres_background_and_outside(phantom, setup):
    reg = setup.regions
    assert reg.names[-2:] == ("background", "outside") and reg.complete
    assert list(reg.kinds).count("structure") == 7
    # every label voxel in exactly one region; volumes from the label grid
    assert int(reg.counts.sum()) == phantom.label_grid.size
    assert reg.volumes_ml[reg.number("sphere_100ml") - 1] == pytest.approx(
        phantom.volumes_ml["sphere_100ml"])


def test_gtm_means_within_2_percent_noiseless(phantom, setup):
    res = correct(phantom.image_bq_ml, setup)
    truth = _truth(phantom, setup)
    got = np.array([r.corrected_mean_bq_ml for r in res.rows])
    rel = got[:-1] / truth[:-1] - 1
    # measured: +1.2 % (1 mL) ... +0.14 % (100 mL), background -0.1 %: the label map's 2 mm
    # voxelisation of the spheres (the simulated object is the true ball)
    assert np.all(np.abs(rel) < 0.02), rel
    assert np.all(np.abs(rel[2:]) < 0.006), rel
    assert abs(got[-1]) < 1e-3 * phantom.truth_bq_ml["background"]  # outside: true 0
    obs = np.array([r.observed_mean_bq_ml for r in res.rows])
    assert obs[0] / truth[0] < 0.5  # the 1 mL sphere was seen at less than half
    assert 5 < res.condition_number < 15 and res.complete and res.grid_name.startswith("label")
    # each region's recovery factor is the GTM diagonal, between 0 and 1, rising with volume
    rec = [r.recovery for r in res.rows[:7]]
    assert np.all(np.diff(rec) > 0) and 0.2 < rec[0] < rec[-1] < 0.9


def test_gtm_means_with_poisson_noise_within_the_expected_noise(phantom, setup):
    k = 0.02  # counts per Bq/mL: 200 counts in a background voxel
    truth = _truth(phantom, setup)
    noiseless = setup.gtm.solve(phantom.image_bq_ml).means_bq_ml
    sd = np.sqrt(np.diag(setup.gtm.covariance(np.maximum(phantom.image_bq_ml, 0) / k)))
    est = np.array([setup.gtm.solve(poisson_noise(phantom.image_bq_ml, k, seed)).means_bq_ml
                    for seed in range(40)])
    # the predicted standard error (GTM^-1 Cov(t) GTM^-T) is the observed scatter
    ratio = est.std(axis=0, ddof=1) / sd
    assert np.all((ratio > 0.7) & (ratio < 1.35)), ratio  # measured 0.80-1.08
    # no bias from the noise: the mean of 40 equals the noiseless solution within 4 SE
    assert np.all(np.abs(est.mean(axis=0) - noiseless)[:-1] < 4 * sd[:-1] / np.sqrt(40))
    # each realisation within the noiseless bias + 4 sigma of the inserted activity
    assert np.all(np.abs(est - truth)[:, :-1] < np.abs(noiseless - truth)[:-1] + 4 * sd[:-1])
    assert sd[0] / truth[0] == pytest.approx(0.019, rel=0.15)  # 1 mL: 1.9 % standard error


def test_misstated_psf_biases_small_spheres_most(phantom):
    truth = np.array([phantom.truth_bq_ml[n] for n in phantom.names.values()])
    bias = {}
    for fwhm in (9.0, 11.0):
        s = prepare(phantom.labels, phantom.label_grid, phantom.names, phantom.spect_grid,
                    "gtm", fwhm_mm=fwhm, body_mask=phantom.body_mask)
        bias[fwhm] = s.gtm.solve(phantom.image_bq_ml).means_bq_ml[:7] / truth - 1
    # declared too sharp: under-corrected; too blurred: over-corrected; worst for 1 mL
    # measured (1, 10, 100 mL): -8.3 %, -3.3 %, -1.3 % at 9 mm; +12.8 %, +4.5 %, +1.7 % at 11
    assert np.all(bias[9.0] < 0) and np.all(bias[11.0] > 0)
    assert np.all(np.diff(bias[9.0]) > 0) and np.all(np.diff(bias[11.0]) < 0)
    assert bias[9.0][0] == pytest.approx(-0.083, abs=0.01)
    assert bias[11.0][0] == pytest.approx(0.128, abs=0.015)
    assert bias[11.0][-1] == pytest.approx(0.017, abs=0.004)


def test_activity_conserved_within_the_spill_beyond_the_field(phantom, setup):
    res = correct(phantom.image_bq_ml, setup)
    tot = res.totals_bq
    true_spill = phantom.true_total_bq - tot["image_total_bq"]
    assert true_spill / phantom.true_total_bq > 0.005  # the body reaches the field's edge
    # the model's activity is the phantom's; image + modelled spill = corrected, exactly
    assert tot["model_total_bq"] == pytest.approx(phantom.true_total_bq, rel=3e-4)
    assert tot["image_total_bq"] + tot["spill_beyond_field_bq"] == pytest.approx(
        tot["model_total_bq"], rel=1e-9)
    assert tot["spill_beyond_field_bq"] == pytest.approx(true_spill, rel=0.02)
    # the GTM image on the label grid holds the in-field part of the model
    assert tot["corrected_total_bq"] == pytest.approx(phantom.true_total_bq, rel=3e-3)


@pytest.mark.parametrize("volume_ml", [1.0, 5.0, 20.0])
def test_recovery_from_simulated_spheres_equals_the_analytic_recovery(volume_ml):
    """RC of a sphere in a cold background, measured on the simulated SPECT (occupancy-
    weighted VOI mean) and the GTM's own recovery factor, both averaged over 4 random grid
    phases, vs the closed-form volume-averaged recovery with sigma_eff^2 = sigma^2 + s^2/6
    (s = 4 mm SPECT voxels; 1 mm labels)."""
    rng = np.random.default_rng(7)
    measured, gtm_rc = [], []
    for _ in range(4):
        ph = sphere_phantom((volume_ml,), label_spacing_mm=1.0, spect_offset_mm=rng.uniform(
            0, 4, 3), background_bq_ml=0.0, sphere_bq_ml=1.0, wall_mm=6.0, edge_mm=4.0)
        g = build_gtm(build_regions(ph.labels, ph.label_grid, ph.names), ph.spect_grid,
                      GaussianPsf((10.0,) * 3))
        measured.append(float(g.observed_means(ph.image_bq_ml)[0]))
        gtm_rc.append(float(g.recovery[0]))
    r_eff = next(iter(ph.radius_eff_mm.values()))
    analytic = float(sphere_recovery(r_eff, effective_sigma_mm(10 * FWHM_TO_SIGMA, 4.0)))
    # measured: 1 mL -0.4 % / -0.7 %, 5 mL -0.04 % / -0.2 %, 20 mL -0.1 % / -0.2 %
    assert np.mean(measured) == pytest.approx(analytic, rel=0.006)
    assert np.mean(gtm_rc) == pytest.approx(analytic, rel=0.01)
    assert abs(np.mean(measured) - analytic) < 0.3 * (1 - analytic)


def test_exact_separable_and_fft_rsfs_agree_on_aligned_grids():
    ph = sphere_phantom((2.0, 10.0))  # SPECT voxels = 2^3 label voxels: both paths exact
    reg = build_regions(ph.labels, ph.label_grid, ph.names, ph.body_mask)
    psf = GaussianPsf((10.0,) * 3)
    a = regional_spread_functions(reg, ph.spect_grid, psf, path="separable")
    b = regional_spread_functions(reg, ph.spect_grid, psf, path="fft", precision="float64")
    assert np.abs(a - b).max() < 1e-6  # measured 6e-8 (float32 storage)


def test_missing_structure_makes_the_correction_incomplete(phantom):
    names = dict(phantom.names) | {42: "kidney_left"}
    s = prepare(phantom.labels, phantom.label_grid, names, phantom.spect_grid, "gtm",
                fwhm_mm=10.0, body_mask=phantom.body_mask)
    res = correct(phantom.image_bq_ml, s)
    assert not res.complete and res.missing == ("kidney_left",)
    assert any("incomplete" in w and "kidney_left" in w for w in res.warnings)
    assert res.to_dict()["complete"] is False


def test_labels_not_covering_the_spect_field_refused(phantom):
    # a SPECT field twice as wide as the label grid, activity in the uncovered half
    g = phantom.spect_grid
    big = Grid.from_spacing((g.shape[0], g.shape[1], 2 * g.shape[2]), g.spacing_mm, g.origin_mm)
    y = np.ones(big.shape)
    with pytest.raises(InputError, match="does not cover the SPECT field"):
        correct(y, prepare(phantom.labels, phantom.label_grid, phantom.names, big, "gtm",
                           fwhm_mm=10.0))
    far = Grid.from_spacing(g.shape, g.spacing_mm, (900.0, 0.0, 0.0))
    with pytest.raises(InputError, match="does not overlap"):
        prepare(phantom.labels, phantom.label_grid, phantom.names, far, "gtm", fwhm_mm=10.0)


@pytest.mark.parametrize("method, kw, msg", [
    ("gtm", {}, "needs the SPECT resolution"), ("rc", {"fwhm_mm": 10}, "recovery table"),
    ("pvec", {"fwhm_mm": 10}, "choose one of"), ("rbv", {"fwhm_mm": 0.0}, "> 0 mm"),
    ("iy", {"fwhm_mm": 75.0}, "not a SPECT resolution")])
def test_bad_settings_refused(phantom, method, kw, msg):
    with pytest.raises(InputError, match=msg):
        prepare(phantom.labels, phantom.label_grid, phantom.names, phantom.spect_grid, method,
                **kw)
