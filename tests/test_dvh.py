"""DVH statistics on analytic dose distributions (closed forms), writers, and edge cases."""

import csv
import io
import json

import numpy as np
import pytest

from voxdose.analysis.dvh import (CSV_COLUMNS, DVH, compute_dvhs, coverage_warnings, dvh_csv,
                                  dvh_from_mask, dvh_json, names_from_labels, read_names_json)
from voxdose.core.errors import InputError
from voxdose.core.grid import Grid, Image, LabelMap


def _ramp_image(n=1000, d_max=10.0, spacing=2.0):
    """A linear ramp along x: voxel i has dose d_max * (i + 0.5) / n (cell-centred)."""
    g = Grid.from_spacing((1, 1, n), (spacing,) * 3)
    dose = (d_max * (np.arange(n) + 0.5) / n).reshape(1, 1, n)
    return Image(dose, g, "absorbed dose", "Gy")


def test_ramp_matches_closed_forms():
    # continuous ramp D(u) = d_max u on u in [0, 1]: mean d_max/2, D_x = d_max (1 - x/100),
    # V(d) = 1 - d/d_max. Cell-centred voxels reproduce these within one voxel (d_max/n).
    n, d_max = 1000, 10.0
    img = _ramp_image(n, d_max)
    h = dvh_from_mask("ramp", img.data, np.ones(img.grid.shape, bool), img.grid.voxel_volume_ml)
    step = d_max / n
    assert h.mean_gy == pytest.approx(d_max / 2, rel=1e-12)
    assert h.min_gy == pytest.approx(0.5 * step)
    assert h.max_gy == pytest.approx(d_max - 0.5 * step)
    for x in (2, 5, 50, 95, 98):
        assert abs(h.d(x) - d_max * (1 - x / 100)) <= step
    for d in (0.0, 1.0, 2.5, 7.3, 9.99):
        assert abs(h.v(d) - (1 - d / d_max)) <= 1.0 / n
    # exact discrete definitions: D_x = d_(m-1), m = ceil(x n / 100)
    assert h.d(50) == pytest.approx(d_max * (n - 500 + 0.5) / n)
    assert h.d(100) == h.min_gy
    assert h.v_percent(5.0) == pytest.approx(50.0)
    assert h.v_ml(5.0) == pytest.approx(0.5 * h.volume_ml)
    # volume and mass of water: n voxels of 8 mm^3
    assert h.volume_ml == pytest.approx(n * 0.008)
    assert h.mass_g == pytest.approx(n * 0.008)


def test_uniform_dose_and_curves():
    g = Grid.from_spacing((4, 5, 6), (3.0, 3.0, 3.0))
    dose = Image(np.full(g.shape, 2.5), g)
    lab = LabelMap(np.ones(g.shape, np.int32), g, {1: "cube"})
    (h,) = compute_dvhs(dose, lab)
    for stat in (h.mean_gy, h.min_gy, h.max_gy, h.d(2), h.d(50), h.d(98), h.d(100)):
        assert stat == 2.5
    assert h.v(2.5) == 1.0 and h.v(2.5000001) == 0.0
    edges, frac = h.cumulative(50)
    assert np.all(frac[edges <= 2.5] == 1.0) and np.all(frac[edges > 2.5] == 0.0)
    edges, vol = h.differential(50)
    assert vol.sum() == pytest.approx(h.volume_ml)
    assert vol[np.searchsorted(edges, 2.5, side="right") - 1] == pytest.approx(h.volume_ml)


def test_cumulative_is_differential_tail_sum():
    rng = np.random.default_rng(1)
    g = Grid.from_spacing((10, 10, 10), (2.0, 2.0, 2.0))
    dose = Image(rng.gamma(2.0, 1.5, g.shape), g)
    (h,) = compute_dvhs(dose, LabelMap(np.ones(g.shape, np.int32), g, {1: "x"}))
    _, cum = h.cumulative(80)
    _, diff = h.differential(80)
    tail = np.concatenate([np.cumsum(diff[::-1])[::-1], [0.0]]) / h.volume_ml
    np.testing.assert_allclose(cum, tail, atol=1e-12)


def test_density_map_gives_mass_and_mass_weighted_mean():
    g = Grid.from_spacing((1, 1, 4), (10.0, 10.0, 10.0))     # 1 mL voxels
    dose = Image(np.array([[[1.0, 2.0, 3.0, 4.0]]]), g)
    rho = Image(np.array([[[1.0, 1.0, 2.0, 0.0]]]), g)
    lab = LabelMap(np.ones(g.shape, np.int32), g, {1: "s"})
    (h,) = compute_dvhs(dose, lab, rho)
    assert h.mass_g == pytest.approx(4.0)
    assert h.mean_gy == pytest.approx(2.5)
    assert h.mass_weighted_mean_gy == pytest.approx((1 + 2 + 6) / 4.0)
    with pytest.raises(InputError, match="negative"):
        compute_dvhs(dose, lab, rho.with_data(-rho.data))


def test_zero_volume_structure_gives_a_blank_row_not_crash():
    """An empty structure has no dose (issue 12: never reported as 0 Gy)."""
    g = Grid.from_spacing((3, 3, 3), (2.0, 2.0, 2.0))
    lab = LabelMap(np.ones(g.shape, np.int32), g, {1: "present", 7: "absent"})
    hs = compute_dvhs(Image(np.ones(g.shape), g), lab)
    absent = hs[1]
    assert absent.name == "absent" and absent.volume_ml == 0.0
    assert absent.row() == {"name": "absent", "volume_ml": 0.0, "mean_gy": None,
                            "min_gy": None, "max_gy": None, "d2_gy": None, "d50_gy": None,
                            "d98_gy": None}
    doc = dvh_json(hs, n_bins=10)
    assert doc["structures"][1]["mass_g"] == 0.0
    assert all(v == 0.0 for v in doc["structures"][1]["cumulative"]["volume_fraction"])
    json.dumps(doc)


def test_labels_on_another_grid_count_by_their_overlap():
    """Labels on a shifted grid: each dose voxel counts with the fraction the structure
    fills (no error, no vote); the part outside the dose grid is warned about."""
    g = Grid.from_spacing((3, 3, 3), (2.0, 2.0, 2.0))                 # x edges -1 .. 5 mm
    g2 = Grid.from_spacing((3, 3, 3), (2.0, 2.0, 2.0), origin_mm_xyz=(5.0, 0.0, 0.0))
    (h,) = compute_dvhs(Image(np.ones(g.shape), g),
                        LabelMap(np.ones(g.shape, np.int32), g2, {1: "a"}))
    # label x extent 4 .. 10 mm overlaps the dose grid in [4, 5): 1 of its 6 mm
    assert h.volume_ml == pytest.approx(h.label_grid_volume_ml / 6, rel=1e-6)
    assert h.n_voxels == 9 and h.n_voxels_partial == 9
    assert h.method.startswith("fractional occupancy")
    (w,) = coverage_warnings([h])
    assert "83.3 % outside the dose grid" in w


def test_csv_contract_columns_and_json():
    img = _ramp_image(100)
    lab = LabelMap(np.ones(img.grid.shape, np.int32), img.grid, {1: "ramp"})
    hs = compute_dvhs(img, lab)
    rows = list(csv.DictReader(io.StringIO(dvh_csv(hs))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert float(rows[0]["mean_gy"]) == pytest.approx(5.0)
    doc = dvh_json(hs, v_doses_gy=(5.0,))
    s = doc["structures"][0]
    assert s["d_percent_gy"]["D50"] == pytest.approx(hs[0].d(50))
    assert s["v_gy_fraction"]["V5Gy"] == pytest.approx(0.5)
    assert len(s["cumulative"]["dose_gy"]) == 201


def test_dx_validation_and_d_ml():
    h = DVH("s", 1.0, np.array([5.0, 4.0, 3.0, 2.0, 1.0]))
    assert h.d_ml(2.0) == 4.0            # hottest 2 mL of 5 x 1 mL
    assert h.d_ml(50.0) == 1.0           # larger than the structure: its minimum
    with pytest.raises(InputError):
        h.d(0)
    with pytest.raises(InputError):
        h.d(120)


def test_names_helpers(tmp_path):
    assert names_from_labels(np.array([0, 3, 3, 1])) == {1: "label_1", 3: "label_3"}
    p = tmp_path / "n.json"
    p.write_text('{"1": "liver"}')
    assert read_names_json(p) == {1: "liver"}
    p.write_text('["liver"]')
    with pytest.raises(InputError, match="JSON object"):
        read_names_json(p)
