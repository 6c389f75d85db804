"""Geometry conventions: (z, y, x) arrays, LPS mm world, one SimpleITK adapter."""

import numpy as np
import pytest
import SimpleITK as sitk

from voxdose.core.errors import InputError
from voxdose.core.grid import Grid, Image
from voxdose.io.sitk_adapter import (
    grid_from_sitk,
    image_to_sitk,
    read_image,
    sitk_to_array_and_grid,
    write_image,
)
from voxdose.core.units import (
    gy_per_decay_to_mgy_per_mbq_s,
    hours_to_seconds,
    mgy_per_mbq_s_to_gy_per_decay,
    seconds_to_hours,
)


def _oblique_grid():
    rot = sitk.Euler3DTransform((0, 0, 0), 0.1, -0.2, 0.3)
    d_itk = np.array(rot.GetMatrix()).reshape(3, 3)  # columns = ITK index axes x, y, z
    return Grid.from_spacing((5, 6, 7), (3.0, 2.0, 1.5), (-10.0, 20.0, 5.0), d_itk[:, ::-1])


def test_sitk_round_trip_keeps_data_and_geometry():
    g = _oblique_grid()
    data = np.arange(np.prod(g.shape), dtype=np.float32).reshape(g.shape)
    img = image_to_sitk(data, g)
    # SimpleITK sizes are (x, y, z): the reversal happens in the adapter
    assert img.GetSize() == (7, 6, 5)
    assert img.GetSpacing() == pytest.approx((1.5, 2.0, 3.0))
    back, g2 = sitk_to_array_and_grid(img)
    assert np.array_equal(back, data)
    assert g2.same_as(g, tol_mm=1e-9)


def test_index_to_world_matches_sitk_physical_points():
    g = _oblique_grid()
    img = image_to_sitk(np.zeros(g.shape, np.float32), g)
    for iz, iy, ix in [(0, 0, 0), (4, 5, 6), (2, 1, 3)]:
        expected = img.TransformIndexToPhysicalPoint((ix, iy, iz))
        assert g.index_to_world([iz, iy, ix]) == pytest.approx(expected, abs=1e-9)
        assert g.world_to_index(expected) == pytest.approx([iz, iy, ix], abs=1e-9)


def test_world_coordinates_axis_aligned():
    g = Grid.from_spacing((2, 3, 4), (5.0, 2.0, 1.0), (10.0, 20.0, 30.0))
    x, y, z = g.world_coordinates()
    assert x[0, 0, 3] == pytest.approx(13.0)  # array x -> L
    assert y[0, 2, 0] == pytest.approx(24.0)  # array y -> P
    assert z[1, 0, 0] == pytest.approx(35.0)  # array z -> S
    assert g.voxel_volume_ml == pytest.approx(10.0 / 1000.0)


def test_nifti_write_read_round_trip(tmp_path):
    g = Grid.from_spacing((4, 5, 6), (3.0, 2.5, 2.0), (-7.0, 3.0, 11.0))
    data = np.random.default_rng(0).random(g.shape)
    p = tmp_path / "a.nii.gz"
    write_image(p, Image(data, g, "dose", "Gy"), dtype=np.float64)
    back = read_image(p)
    assert back.grid.same_as(g, tol_mm=1e-4)
    assert np.allclose(back.data, data)
    assert back.meta["unit"] == "Gy"  # JSON sidecar carries the unit
    # no temporary files left behind
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.json", "a.nii.gz"]


def test_grid_from_sitk_rejects_2d():
    with pytest.raises(InputError):
        grid_from_sitk(sitk.Image([3, 3], sitk.sitkFloat32))


def test_image_rejects_shape_mismatch():
    g = Grid.from_spacing((2, 2, 2), (1, 1, 1))
    with pytest.raises(InputError):
        Image(np.zeros((2, 2, 3)), g)


def test_unit_conversions():
    assert hours_to_seconds(2.0) == 7200.0
    assert seconds_to_hours(5400.0) == 1.5
    # 1 mGy/(MBq s) = 1e-3 Gy per 1e6 decays = 1e-9 Gy per decay
    assert mgy_per_mbq_s_to_gy_per_decay(1.0) == pytest.approx(1e-9)
    assert gy_per_decay_to_mgy_per_mbq_s(3e-9) == pytest.approx(3.0)
