"""DVHs weighted by the fraction of each voxel a structure fills (labels on a finer grid)."""

import json

import numpy as np
import pytest

from voxdose.analysis.decisions import organ_tia_and_mass
from voxdose.analysis.dvh import DVH, compute_dvhs, dvh_from_fraction, dvh_from_mask, dvh_json
from voxdose.analysis.marrow import image_cross_dose_gy
from voxdose.core.grid import Grid, Image, LabelMap
from voxdose.imaging.assemble import labels_on_grid
from voxdose.imaging.occupancy import fractional_occupancy
from voxdose.imaging.registration import resample_labels


def _sphere_labels(n=60, spacing=1.2, centre_mm=(36.0, 35.0, 37.0), r_mm=15.0):
    g = Grid.from_spacing((n,) * 3, (spacing,) * 3, (0.5 * spacing,) * 3)
    z, y, x = np.meshgrid(*[(np.arange(n) + 0.5) * spacing] * 3, indexing="ij")
    inside = (x - centre_mm[2]) ** 2 + (y - centre_mm[1]) ** 2 + (z - centre_mm[0]) ** 2 \
        <= r_mm ** 2
    return LabelMap(inside.astype(np.int32), g, {1: "sphere"})


def test_sphere_volume_on_a_coarse_dose_grid_is_the_label_grid_volume():
    """(a) 1.2 mm labels, 4.42 mm dose voxels: fractions keep the volume, the vote does not."""
    lab = _sphere_labels()
    v_label = float(lab.data.sum()) * lab.grid.voxel_volume_ml
    tgt = Grid.from_spacing((18, 18, 18), (4.42,) * 3, (1.3, 0.2, 0.9))
    z, y, x = tgt.world_coordinates()
    dose = Image(1.0 + 0.01 * (x - 37.0) ** 2 + 0.0 * z + 0.0 * y, tgt, "absorbed dose", "Gy")
    (direct,) = compute_dvhs(dose, lab)                      # labels on their own grid
    on_grid, warns = labels_on_grid(lab, tgt)                # as the pipeline carries them
    (carried,) = compute_dvhs(dose, on_grid)
    assert not warns
    for h in (direct, carried):
        assert h.volume_ml == pytest.approx(v_label, rel=1e-3)
        assert h.n_voxels_partial > 0
    assert direct.label_grid_volume_ml == pytest.approx(v_label, rel=1e-12)
    vote = resample_labels(lab.data, lab.grid, tgt)
    v_vote = float(np.count_nonzero(vote == 1)) * tgt.voxel_volume_ml
    assert abs(v_vote / v_label - 1) > 0.01
    # the vote is what the hard map still holds (figures, contours)
    np.testing.assert_array_equal(on_grid.data, vote)


def test_weighted_dx_vx_mean_mass_by_hand():
    """(b) three voxels with fractions 0.2, 0.5, 1 and doses 3, 2, 1 Gy (plus one untouched
    voxel, f = 0, that must not count). W = 1.7, W_j = 0.2, 0.7, 1.7."""
    g = Grid.from_spacing((1, 1, 4), (10.0, 10.0, 10.0))   # 1 mL voxels
    dose = np.array([[[2.0, 100.0, 1.0, 3.0]]])
    frac = np.array([[[0.5, 0.0, 1.0, 0.2]]])
    rho = np.array([[[2.0, 5.0, 1.0, 1.0]]])
    h = dvh_from_fraction("s", dose, frac, g.voxel_volume_ml, rho, method="test")
    assert h.n_voxels == 3 and h.n_voxels_partial == 2
    assert h.volume_ml == pytest.approx(1.7)
    assert h.mean_gy == pytest.approx((0.2 * 3 + 0.5 * 2 + 1.0 * 1) / 1.7)
    assert h.mass_g == pytest.approx(0.2 * 1 + 0.5 * 2 + 1.0 * 1)
    assert h.mass_weighted_mean_gy == pytest.approx((0.2 * 3 + 1.0 * 2 + 1.0 * 1) / 2.2)
    assert (h.max_gy, h.min_gy) == (3.0, 1.0)
    # D_x = d_j for the smallest j with W_j >= x W / 100
    assert h.d(11) == 3.0            # 0.187 <= 0.2
    assert h.d(12) == 2.0            # 0.204 > 0.2
    assert h.d(41) == 2.0            # 0.697 <= 0.7
    assert h.d(42) == 1.0            # 0.714 > 0.7
    assert h.d(100) == 1.0
    assert h.d(100 * 0.2 / 1.7) == 3.0          # exactly the first voxel's share
    assert h.d_ml(0.7) == 2.0                   # hottest 0.7 mL
    assert h.v(2.5) == pytest.approx(0.2 / 1.7)
    assert h.v(2.0) == pytest.approx(0.7 / 1.7)
    assert h.v(0.5) == pytest.approx(1.0) and h.v(3.5) == 0.0
    assert h.v_ml(2.0) == pytest.approx(0.7)
    _, cum = h.cumulative(3, max_dose_gy=3.0)   # edges 0, 1.001, 2.002, 3.003
    np.testing.assert_allclose(cum, [1.0, 0.7 / 1.7, 0.2 / 1.7, 0.0])
    _, diff = h.differential(3, max_dose_gy=3.0)
    np.testing.assert_allclose(diff, [1.0, 0.5, 0.2])
    assert h.to_dict()["n_voxels_partial"] == 2


def test_whole_voxel_fractions_reproduce_the_unweighted_statistics():
    """(c) f in {0, 1}: every order statistic identical, means to round-off."""
    rng = np.random.default_rng(7)
    g = Grid.from_spacing((12, 11, 10), (3.0, 3.0, 3.0))
    dose = rng.gamma(2.0, 1.5, g.shape)
    dose[0, 0, :4] = 2.0                                     # ties
    mask = rng.random(g.shape) < 0.4
    rho = rng.uniform(0.9, 1.1, g.shape)
    plain = dvh_from_mask("s", dose, mask, g.voxel_volume_ml, rho)
    ones = DVH("s", plain.voxel_volume_ml, plain.doses_gy, plain.densities_g_cm3,
               np.ones(plain.n_voxels))                       # the weighted formulas, f = 1
    for x in (0.1, 1, 2, 5, 33.3, 50, 95, 98, 99.9, 100):
        assert ones.d(x) == plain.d(x)
    for d in (0.0, 0.5, 2.0, 2.0000001, 3.7, 50.0):
        assert ones.v(d) == plain.v(d)
    np.testing.assert_array_equal(ones.cumulative(97)[1], plain.cumulative(97)[1])
    np.testing.assert_array_equal(ones.differential(97)[1], plain.differential(97)[1])
    assert ones.volume_ml == plain.volume_ml
    for a, b in ((ones.mean_gy, plain.mean_gy), (ones.mass_g, plain.mass_g),
                 (ones.mass_weighted_mean_gy, plain.mass_weighted_mean_gy)):
        assert a == pytest.approx(b, rel=1e-13)
    # fractions that are 0/1 masks drop their weights: the mask path bit for bit
    via = dvh_from_fraction("s", dose, mask.astype(np.float32), g.voxel_volume_ml, rho)
    assert via.weights is None
    assert via.row() == plain.row() and via.mass_g == plain.mass_g
    # and a genuinely fractional voxel changes the statistics (the test can fail)
    f = mask.astype(np.float64)
    f[np.unravel_index(np.argmax(np.where(mask, dose, -1)), g.shape)] = 0.5
    assert dvh_from_fraction("s", dose, f, g.voxel_volume_ml).mean_gy != plain.mean_gy


def test_dvh_json_reports_how_voxels_were_weighted():
    lab = _sphere_labels(n=30, centre_mm=(18.0, 18.0, 18.0), r_mm=8.0)
    tgt = Grid.from_spacing((9, 9, 9), (4.42,) * 3, (1.0, 1.0, 1.0))
    doc = dvh_json(compute_dvhs(Image(np.ones(tgt.shape), tgt), lab), n_bins=5)
    assert doc["voxel_weights"] == ["fractional occupancy from the label grid: separable box "
                                    "overlap (exact)"]
    assert doc["definitions"]["partial_volume"].startswith("each voxel counts with")
    same = dvh_json(compute_dvhs(Image(np.ones(lab.grid.shape), lab.grid), lab), n_bins=5)
    assert same["voxel_weights"] == ["whole voxels (labels on the dose grid)"]
    json.dumps(doc)


def test_mird_tia_and_marrow_cross_dose_use_the_fractions():
    """Organ TIA = sum f A~; the cross-dose source is A~ (1 - f_marrow)."""
    g = Grid.from_spacing((1, 1, 3), (10.0, 10.0, 10.0))
    src = Grid.from_spacing((1, 1, 6), (10.0, 10.0, 5.0), (-2.5, 0.0, 0.0))
    fine = LabelMap(np.array([[[1, 1, 1, 0, 0, 0]]], np.int32), src, {1: "organ"})
    occ = fractional_occupancy(fine.data, src, g, fine.names)
    np.testing.assert_allclose(occ.fractions[1].ravel(), [1.0, 0.5, 0.0])
    lab = LabelMap(np.array([[[1, 1, 0]]], np.int32), g, fine.names, occ)   # vote: ties in
    tia = Image(np.array([[[4.0, 6.0, 8.0]]]), g)
    (h,) = compute_dvhs(tia.with_data(np.ones(g.shape)), lab)
    organs = organ_tia_and_mass(tia, lab, {"organ": h})
    assert organs["organ"] == pytest.approx((4.0 + 0.5 * 6.0, 1.5))   # vote: (10, 2)

    class Echo:                       # the "engine" returns its input: dose = source TIA
        def dose(self, t):
            return t

    from voxdose.analysis.marrow import sphere_voi

    voi = sphere_voi(g, g.index_to_world([0.0, 0.0, 1.0]), 4.0)
    cross = image_cross_dose_gy(tia, Echo(), np.asarray(lab.fraction(1)), [voi])
    assert cross == pytest.approx(0.5 * 6.0)              # the hard mask would give 0


def test_small_study_volumes_equal_the_ct_grid_volumes(small_study):
    """(d) every structure of the small synthetic study, moved onto its SPECT grid as the
    pipeline does, keeps its CT-grid volume within 1 % (the vote misses by more)."""
    from voxdose.io.names import read_names_json
    from voxdose.io.sitk_adapter import read_image, read_labels

    st = small_study.parent
    ct = read_labels(st / "labels.nii.gz", read_names_json(st / "structure_names.json"))
    spect = read_image(next(st.glob("spect_*.nii.gz")))
    lab, warns = labels_on_grid(ct, spect.grid)
    assert not warns
    hs = compute_dvhs(Image(np.ones(spect.grid.shape), spect.grid), lab)
    worst_vote = 0.0
    for h in hs:
        value = next(v for v, n in ct.names.items() if n == h.name)
        v_ct = float(np.count_nonzero(ct.data == value)) * ct.grid.voxel_volume_ml
        assert h.volume_ml == pytest.approx(v_ct, rel=0.01), h.name
        v_vote = float(np.count_nonzero(lab.data == value)) * lab.grid.voxel_volume_ml
        worst_vote = max(worst_vote, abs(v_vote / v_ct - 1))
    assert worst_vote > 0.05
