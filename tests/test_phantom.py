"""The synthetic study: deterministic, and its activity bookkeeping is exact."""

import json

import numpy as np
import pytest

from voxdose.io.sitk_adapter import read_image, read_labels
from voxdose.core.nuclide import load_nuclide
from voxdose.phantom.anatomy import STRUCTURES, rasterize_labels
from voxdose.phantom.kinetics import CXCR4_KINETICS, StructureKinetics
from voxdose.phantom.study import PhantomConfig, build_study, concentration_lut, make_grids
from voxdose.core.units import SECONDS_PER_HOUR
from voxdose.core.voxel_ops import block_mean


def test_every_structure_present_on_small_grid():
    ct_grid, _ = make_grids(PhantomConfig.small())
    labels = rasterize_labels(ct_grid)
    present = set(np.unique(labels).tolist())
    assert {s.label for s in STRUCTURES} <= present


def _labels_testing_every_voxel(grid, transform, scale):
    """The rasterization's definition, written out: every voxel centre through every shape
    (its patient point T^-1 p, element by element, on the whole grid)."""
    x, y, z = grid.world_coordinates()
    if transform is not None:
        m = np.linalg.inv(transform)
        x, y, z = (m[0, 0] * x + m[0, 1] * y + m[0, 2] * z + m[0, 3],
                   m[1, 0] * x + m[1, 1] * y + m[1, 2] * z + m[1, 3],
                   m[2, 0] * x + m[2, 1] * y + m[2, 2] * z + m[2, 3])
    x, y, z = x / scale, y / scale, z / scale
    labels = np.zeros(grid.shape, dtype=np.uint8)
    body = None
    for s in STRUCTURES:
        inside = np.zeros(grid.shape, dtype=bool)
        for shape in s.shapes:
            inside |= shape.contains(x, y, z)
        body = inside if body is None else body
        if s.label != 1:
            inside &= body
        labels[inside] = s.label
    return labels


@pytest.mark.parametrize("rot, tr, scale", [((0, 0, 0), (0, 0, 0), 1.0),
                                            ((4.0, -3.0, 6.0), (12.0, -7.5, 20.0), 1.0),
                                            ((-8.0, 2.0, -5.0), (-30.0, 9.0, -4.0), 1.15),
                                            ((0, 0, 0), (400.0, 0, 0), 1.0)])
def test_rasterization_in_shape_boxes_equals_testing_every_voxel(rot, tr, scale):
    """The shape boxes only skip voxels that cannot be inside: identical labels, moved and
    scaled anatomy included (the last case: the patient moved out of the field)."""
    from voxdose.phantom.anatomy import rigid_matrix
    ct_grid, _ = make_grids(PhantomConfig.small())
    transform = rigid_matrix(rot, tr)
    fast = rasterize_labels(ct_grid, transform, scale)
    assert np.array_equal(fast, _labels_testing_every_voxel(ct_grid, transform, scale))
    assert (fast > 0).any() == (tr[0] < 300)


def test_kinetics_integral_is_analytic():
    # integral of f (e^-l1 t - e^-l2 t) from 0 to inf = f (1/l1 - 1/l2): check numerically
    k = StructureKinetics(0.1, 30.0, 2.0)
    lam = load_nuclide("Lu-177").decay_constant_per_s
    t = np.linspace(0, 5000 * 3600, 2_000_001)
    num = np.trapezoid(k.activity_bq(t, 1.0, lam), t)
    assert num == pytest.approx(k.tia_bq_s(1.0, lam), rel=1e-6)


def test_study_totals_equal_administered_activity_times_kinetics(small_study):
    truth = json.loads((small_study.parent / "truth" / "truth.json").read_text())
    cfg = PhantomConfig.small()
    ct_grid, spect_grid = make_grids(cfg)
    labels = read_labels(small_study.parent / "labels.nii.gz", {})
    lam = load_nuclide("Lu-177").decay_constant_per_s
    a0 = cfg.administered_activity_mbq * 1e6
    for t_h in cfg.times_h:
        conc = concentration_lut(truth["volumes_ml"], t_h * SECONDS_PER_HOUR, cfg, lam)[
            labels.data]
        total = conc.sum() * ct_grid.voxel_volume_ml
        expected = sum(CXCR4_KINETICS[s.name].activity_bq(t_h * SECONDS_PER_HOUR, a0, lam)
                       for s in STRUCTURES)
        assert total == pytest.approx(expected, rel=1e-9)
        # block averaging onto the SPECT grid conserves activity exactly
        assert block_mean(conc, 2).sum() * spect_grid.voxel_volume_ml == pytest.approx(
            total, rel=1e-9)
    # the true TIA map integrates to the sum of the structures' analytic TIAs
    tia = read_image(small_study.parent / "truth" / "tia_true_bq_s.nii.gz")
    assert tia.data.sum() == pytest.approx(sum(truth["tia_bq_s"].values()), rel=1e-5)
    # ... and so does the truth on the CT grid, structure by structure (float32 storage)
    tia_ct = read_image(small_study.parent / "truth" / "tia_true_ct_bq_s.nii.gz")
    assert tia_ct.grid.same_as(ct_grid)
    for s in STRUCTURES:
        got = tia_ct.data[labels.data == s.label].sum(dtype=np.float64)
        assert got == pytest.approx(truth["tia_bq_s"][s.name], rel=1e-5)


def test_reference_frame_activity_close_to_truth(small_study):
    """The noisy, blurred first frame still holds the administered activity x kinetics
    (Poisson noise and blur conserve the total in expectation; FOV edge losses are small)."""
    truth = json.loads((small_study.parent / "truth" / "truth.json").read_text())
    img = read_image(small_study.parent / "spect_001h.nii.gz")
    measured = img.data.sum() * img.grid.voxel_volume_ml
    expected = sum(v[0] for v in truth["activity_bq"].values())
    assert measured == pytest.approx(expected, rel=0.01)


def test_deterministic_with_seed(tmp_path):
    cfg = PhantomConfig(ct_spacing_mm=9.6, times_h=(1.0, 24.0), seed=5)
    a = build_study(tmp_path / "a", cfg)
    b = build_study(tmp_path / "b", cfg)
    c = build_study(tmp_path / "c", PhantomConfig(ct_spacing_mm=9.6, times_h=(1.0, 24.0), seed=6))
    fa = read_image(a.parent / "spect_024h.nii.gz").data
    fb = read_image(b.parent / "spect_024h.nii.gz").data
    fc = read_image(c.parent / "spect_024h.nii.gz").data
    assert np.array_equal(fa, fb)
    assert not np.array_equal(fa, fc)
