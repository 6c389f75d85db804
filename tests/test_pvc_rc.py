"""Recovery-coefficient tables: reading, refusal, log-volume interpolation, the VOI-level
rescaling, and the RC method on a cold-background sphere phantom with an analytic RC curve."""

import numpy as np
import pytest

from voxdose.core.errors import InputError
from voxdose.pvc.analytic import effective_sigma_mm, sphere_radius_mm, sphere_recovery
from voxdose.pvc.correct import correct, prepare
from voxdose.pvc.psf import FWHM_TO_SIGMA
from voxdose.pvc.rc import (RcTable, read_rc_table, recovery_from_phantom, voxel_scale,
                            write_rc_table)
from voxdose.pvc.spheres import sphere_phantom


def _csv(tmp_path, text, name="rc.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_table_read_sorted_and_interpolated_in_log_volume(tmp_path):
    t = read_rc_table(_csv(tmp_path, "volume_ml,recovery\n# NEMA spheres\n100,0.9\n1,0.3\n"
                                     "10,0.6\n"))
    assert t.volume_ml.tolist() == [1.0, 10.0, 100.0]
    # halfway in log volume between 1 and 10 mL: the mean of the two recoveries
    assert float(t.recovery_at(10 ** 0.5)) == pytest.approx(0.45)
    assert float(t.recovery_at(10 ** 1.25)) == pytest.approx(0.6 + 0.25 * 0.3)
    # outside the range: the nearest row, flagged
    assert t.recovery_at([0.1, 1000.0]).tolist() == [0.3, 0.9]
    assert t.extrapolated([0.1, 1.0, 50.0, 1000.0]).tolist() == [True, False, False, True]
    p = write_rc_table(tmp_path / "out.csv", [10, 1], [0.6, 0.3])
    back = read_rc_table(p)
    assert back.volume_ml.tolist() == [1.0, 10.0] and back.recovery.tolist() == [0.3, 0.6]


@pytest.mark.parametrize("text, msg", [
    ("volume,rc\n1,0.3\n10,0.6\n", "header must be 'volume_ml,recovery'"),
    ("volume_ml,recovery\n1,0.3\n", "at least two rows"),
    ("volume_ml,recovery\n1,0.5\n10,0.4\n", "not monotone"),
    ("volume_ml,recovery\n1,0.3\n10,1.2\n", r"outside \(0, 1\]"),
    ("volume_ml,recovery\n1,0\n10,0.5\n", r"outside \(0, 1\]"),
    ("volume_ml,recovery\n1,0.3\n1,0.4\n", "strictly increasing"),
    ("volume_ml,recovery\n-1,0.3\n1,0.4\n", "must be > 0"),
    ("volume_ml,recovery\n1,abc\n10,0.4\n", "not two numbers"),
    ("volume_ml,recovery\n1,0.3,7\n10,0.4\n", "has 3 fields"),
    ("volume_ml,recovery\n1,nan\n10,0.4\n", "finite"),
])
def test_bad_tables_refused_in_one_line(tmp_path, text, msg):
    with pytest.raises(InputError, match=msg) as exc:
        read_rc_table(_csv(tmp_path, text))
    assert "\n" not in str(exc.value) and "rc.csv" in str(exc.value)


def test_missing_table_refused(tmp_path):
    with pytest.raises(InputError, match="RC table not found"):
        read_rc_table(tmp_path / "nope.csv")


def test_voxel_scale_blends_by_occupancy():
    w = np.array([[1.0, 0.5, 0.0, 0.25], [0.0, 0.0, 0.0, 0.75]])
    s = voxel_scale(w, [0.5, 0.8])
    assert s.tolist() == pytest.approx([2.0, 1.5, 1.0, 1 + 0.25 + 0.75 * 0.25])
    assert recovery_from_phantom([3.0, 5.0], [9.0, 9.0], 1.0).tolist() == [0.25, 0.5]
    with pytest.raises(InputError, match="exceed the background"):
        recovery_from_phantom([3.0], [1.0], 1.0)


def test_rc_method_recovers_cold_background_spheres():
    ph = sphere_phantom(spect_offset_mm=(1.3, 0.7, 2.1), background_bq_ml=0.0,
                        sphere_bq_ml=1e4)
    v = np.geomspace(0.5, 200.0, 12)
    curve = sphere_recovery(sphere_radius_mm(v), effective_sigma_mm(10 * FWHM_TO_SIGMA, 4.0))
    s = prepare(ph.labels, ph.label_grid, ph.names, ph.spect_grid, "rc",
                rc_table=RcTable(v, curve, "analytic"))
    res = correct(ph.image_bq_ml, s)
    assert res.grid_name == "SPECT grid" and res.image.shape == ph.spect_grid.shape
    spheres = [r for r in res.rows if r.kind == "structure"]
    rel = np.array([r.corrected_mean_bq_ml / 1e4 - 1 for r in spheres])
    # measured: -1.9 % (1 mL), -0.8 %, -0.6 %, -0.3 %, -0.2 %, -0.15 %, -0.13 % (100 mL)
    assert np.all(np.abs(rel) < 0.025) and np.all(np.abs(rel[3:]) < 0.005), rel
    assert all(r.corrected_activity_bq == pytest.approx(r.corrected_mean_bq_ml * r.volume_ml)
               for r in spheres)
    # the rescaled map adds exactly each structure's A (1/RC - 1)
    added = sum(r.corrected_activity_bq - r.observed_activity_bq for r in spheres)
    tot = res.totals_bq
    assert tot["corrected_total_bq"] - tot["image_total_bq"] == pytest.approx(added, rel=1e-6)
    out = res.row("outside")
    assert np.isnan(out.recovery) and out.corrected_mean_bq_ml == out.observed_mean_bq_ml
