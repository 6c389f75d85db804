"""The rigid registration's block-averaged pyramid (issue 14) and the plausibility metric's
image size: fast checks on small synthetic images (the demo's accuracy is tested in
test_pipeline_e2e.py; its timing against the previous approach in
benchmarks/bench_registration.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from voxdose.core.grid import Grid, Image
from voxdose.imaging import registration as reg_mod
from voxdose.imaging.registration import register_rigid, rigid_pyramid


def _blank(size_xyz, spacing_xyz) -> sitk.Image:
    img = sitk.Image([int(n) for n in size_xyz], sitk.sitkFloat32)
    img.SetSpacing([float(s) for s in spacing_xyz])
    return img


@pytest.mark.parametrize(("spacing_xyz", "size_xyz", "expected_xyz"), [
    ((2.4, 2.4, 2.4), (160, 114, 126), [(9.6, 9.6, 9.6), (4.8, 4.8, 4.8)]),  # demo CT
    ((4.8, 4.8, 4.8), (80, 58, 64), [(9.6, 9.6, 9.6), (4.8, 4.8, 4.8)]),     # small demo CT
    ((9.6, 9.6, 9.6), (40, 29, 32), [(9.6, 9.6, 9.6)]),                      # one level left
    ((1.0, 1.0, 3.0), (100, 100, 40), [(10.0, 10.0, 9.0), (5.0, 5.0, 6.0)]),  # anisotropic
    ((4.0, 4.0, 4.0), (20, 24, 6), [(8.0, 8.0, 4.0), (4.0, 4.0, 4.0)]),  # >= 4 voxels kept
    ((4.0, 4.0, 4.0), (20, 24, 3), [(8.0, 8.0, 4.0), (4.0, 4.0, 4.0)]),  # 3 slices: unsmoothed
])
def test_pyramid_levels_are_about_10_and_5_mm(spacing_xyz, size_xyz, expected_xyz):
    """Each level block-averages by whole voxels per axis, the nearest to the level's voxel
    size in mm (not a shrink factor of the image's own voxels), keeping at least 4 voxels per
    axis (the smoothing's minimum; thinner images are not smoothed); a level that repeats
    the previous one is left out."""
    img = _blank(size_xyz, spacing_xyz)
    levels = rigid_pyramid(img, img)
    assert [tuple(round(s, 6) for s in f.GetSpacing()) for f, _, _ in levels] == expected_xyz
    assert [n for _, _, n in levels] == [n for _, n in reg_mod.RIGID_LEVELS][:len(levels)]
    for f, m, _ in levels:
        assert f.GetSpacing() == m.GetSpacing() and f.GetSize() == m.GetSize()


def test_pyramid_levels_are_block_means_then_smoothed():
    """A level is the block mean of the image, Gaussian-smoothed (sigma = the
    smoothing factor x the level's voxel): a lone bright voxel spreads over neighbours, the
    image's mean is kept."""
    img = _blank((40, 40, 40), (2.5, 2.5, 2.5))
    img[20, 20, 20] = 8000.0
    _, (f5, _, _) = rigid_pyramid(img, img)
    a5 = sitk.GetArrayFromImage(f5)
    assert a5.shape == (20, 20, 20)
    assert a5.mean() == pytest.approx(8000.0 / 40 ** 3, rel=1e-3)
    assert 0 < a5.max() < 8000.0 / 8  # the block mean alone would keep 1000 in one voxel
    assert np.count_nonzero(a5 > 0.01 * a5.max()) > 27


def _torso(grid: Grid, to_moving: np.ndarray | None = None) -> np.ndarray:
    """HU of a small asymmetric torso, soft edges (~1 mm); with ``to_moving`` the patient
    moved by that 4x4 (patient -> scanner) map."""
    x, y, z = grid.world_coordinates()
    p = np.stack([x, y, z, np.ones_like(x)], axis=-1)
    if to_moving is not None:  # the value at q is the patient's at T^-1 q
        p = p @ np.linalg.inv(to_moving).T
    hu = np.full(grid.shape, -1000.0)
    for centre, axes, value in (((0, 0, 0), (80, 55, 70), 0.0), ((-30, -10, 20), (25, 20, 30),
                                -800.0), ((35, 15, -20), (15, 12, 25), 60.0),
                                ((5, 30, 0), (10, 10, 60), 700.0)):
        r = np.sqrt(sum(((p[..., k] - centre[k]) / axes[k]) ** 2 for k in range(3)))
        inside = 1.0 / (1.0 + np.exp((r - 1.0) * min(axes) / 1.0))
        hu = hu + inside * (value - hu)
    return hu


def test_register_rigid_recovers_a_known_motion_within_half_a_mm():
    """4/-3/2 mm and 2 degrees about z on 3 mm voxels: recovered within 0.5 mm at points
    inside the torso, and again the same bit for bit (fixed seed, ITK on one thread)."""
    grid = Grid.from_spacing((48, 48, 64), (3.0, 3.0, 3.0), (-94.5, -70.5, -70.5))
    a = math.radians(2.0)
    motion = np.eye(4)
    motion[:3, :3] = [[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]]
    motion[:3, 3] = (4.0, -3.0, 2.0)
    fixed = Image(_torso(grid), grid, "CT", "HU")
    moving = Image(_torso(grid, motion), grid, "CT", "HU")
    first, again = register_rigid(fixed, moving), register_rigid(fixed, moving)
    for c in ((0.0, 0.0, 0.0), (-30.0, -10.0, 20.0), (35.0, 15.0, -20.0), (5.0, 30.0, 40.0)):
        want = motion[:3, :3] @ c + motion[:3, 3]
        got = np.array(first.transform.TransformPoint(c))
        assert np.linalg.norm(got - want) < 0.5, (c, got, want)
        assert tuple(got) == again.transform.TransformPoint(c)
    assert first.kind == "rigid" and first.iterations > 0


def test_registrations_are_reproducible_bit_for_bit_also_two_at_once():
    """ITK's multithreaded Mattes metric sums in a varying order (results differing by
    ~1e-15 mm run to run, and doses by up to ~1e-6); registrations run ITK on one thread,
    also two at once in threads as assemble_series runs them, and ITK's thread count is
    restored afterwards."""
    from concurrent.futures import ThreadPoolExecutor

    grid = Grid.from_spacing((40, 40, 48), (3.0, 3.0, 3.0), (-58.5, -58.5, -70.5))
    motion = np.eye(4)
    motion[:3, 3] = (3.0, 1.0, -2.0)
    fixed = Image(_torso(grid), grid, "CT", "HU")
    moving = [Image(_torso(grid, motion), grid, "CT", "HU"),
              Image(_torso(grid, motion @ motion), grid, "CT", "HU")]
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    one = [register_rigid(fixed, m).transform.GetParameters() for m in moving]
    for _ in range(3):
        with ThreadPoolExecutor(2) as pool:
            both = list(pool.map(lambda m: register_rigid(fixed, m), moving))
        assert [r.transform.GetParameters() for r in both] == one
        plaus = [reg_mod.plausibility(fixed, m, r) for m, r in zip(moving, both)]
        assert plaus == [reg_mod.plausibility(fixed, m, r) for m, r in zip(moving, both)]
    assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == threads


def test_plausibility_metric_images_stay_under_the_voxel_cap():
    """The plausibility metric is evaluated on every voxel, so its images are block-averaged
    to at most METRIC_MAX_VOXELS (the demo CT: 2.3 million voxels -> 9.6 mm voxels)."""
    grid = Grid.from_spacing((126, 114, 160), (2.4, 2.4, 2.4))
    small = reg_mod._metric_image(Image(np.zeros(grid.shape, np.float32), grid, "CT", "HU"))
    assert int(np.prod(small.GetSize())) <= reg_mod.METRIC_MAX_VOXELS
    assert small.GetSpacing() == pytest.approx((9.6, 9.6, 9.6))


def _shift(dx_mm: float):
    from voxdose.imaging.registration import Registration

    t = sitk.Euler3DTransform()
    t.SetTranslation((dx_mm, 0.0, 0.0))
    return Registration(t, -1.0, 1)


def test_time_points_registered_at_once_come_back_in_time_point_order(tmp_path, monkeypatch):
    """assemble_series registers PARALLEL_REGISTRATIONS time points at once (threads): with
    the earlier time points' registrations the slower, the registrations, frames and
    reports still come back in time-point order, as one at a time gives them."""
    import threading
    import time

    from test_study_contradictions import _study  # tests/ is on sys.path under pytest
    from voxdose.imaging import assemble
    from voxdose.study.load import load_study

    study = load_study(_study(tmp_path, [None] * 4, times=(1.0, 4.0, 24.0, 48.0)))
    threads, calls = set(), iter(())

    def slow_first(fixed, moving, kind):  # the i-th call (time point i): 0.1 i mm
        i = next(calls)
        threads.add(threading.get_ident())
        time.sleep(0.1 * (4 - i))  # time point 1 finishes last
        return _shift(0.1 * i)

    monkeypatch.setattr(assemble, "register", slow_first)
    for n in (2, 1):
        calls = iter(range(1, 4))
        threads.clear()
        monkeypatch.setattr(assemble, "PARALLEL_REGISTRATIONS", n)
        series, regs, _ = assemble.assemble_series(study)
        assert [r.matrix()[0, 3] for r in regs] == pytest.approx([0.0, 0.1, 0.2, 0.3])
        assert [f["time_index"] for f in series.info["frames"]] == [0, 1, 2, 3]
        assert [f["registration"]["plausibility"]["translation_mm"]
                for f in series.info["frames"][1:]] == pytest.approx([0.1, 0.2, 0.3])
        assert len(threads) == n


def test_the_first_time_point_s_registration_error_is_the_one_reported(tmp_path, monkeypatch):
    """Registrations run ahead in threads; their errors surface in time-point order."""
    import time

    from test_study_contradictions import _study
    from voxdose.core.errors import StudyError
    from voxdose.imaging import assemble
    from voxdose.study.load import load_study

    study = load_study(_study(tmp_path, [None] * 3, times=(1.0, 4.0, 24.0)))
    calls = iter(range(1, 3))

    def failing(fixed, moving, kind):
        i = next(calls)
        time.sleep(0.2 if i == 1 else 0.0)  # time point 2 fails first
        raise RuntimeError(f"ITK failure {i}")

    monkeypatch.setattr(assemble, "register", failing)
    with pytest.raises(StudyError, match=r"time point 1 .*ITK failure 1"):
        assemble.assemble_series(study)
