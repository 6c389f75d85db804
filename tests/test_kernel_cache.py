"""On-disk cache of voxel kernels: hit, miss on another spacing / radius / table, corrupt and
mismatching entries rebuilt, environment variable, unwritable folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from voxdose.kernels import cache as vkmod
from voxdose.kernels.point import TabulatedPointKernel, load_point_kernel
from voxdose.kernels.cache import (
    kernel_cache_dir,
    voxel_kernel_cache_key,
    voxel_kernel_cached,
)
from voxdose.kernels.voxel import voxel_kernel

SP = (4.8, 4.8, 4.8)
R = 30.0


@pytest.fixture()
def builds(monkeypatch):
    """Count the real builds behind the cache."""
    calls = []
    real = vkmod.voxel_kernel

    def counting(*a, **k):
        calls.append(a[1])
        return real(*a, **k)

    monkeypatch.setattr(vkmod, "voxel_kernel", counting)
    return calls


def _entries(tmp_path):
    d = kernel_cache_dir(tmp_path)
    return sorted(d.glob("*.npz")), sorted(d.glob("*.json"))


def test_hit_returns_the_same_kernel(tmp_path, builds):
    pk = load_point_kernel("Lu-177")
    a = voxel_kernel_cached(pk, SP, radius_mm=R, cache_dir=tmp_path)
    b = voxel_kernel_cached(pk, [4.80001, 4.8, 4.79999], radius_mm=R, cache_dir=tmp_path)
    assert len(builds) == 1                        # second call: read from disk
    np.testing.assert_array_equal(a.data_gy_per_decay, b.data_gy_per_decay)
    ref = voxel_kernel(pk, SP, radius_mm=R)
    np.testing.assert_allclose(b.data_gy_per_decay, ref.data_gy_per_decay, rtol=1e-12)
    assert b.spacing_mm == SP and b.nuclide == "Lu-177"
    assert b.neglected_energy_fraction == pytest.approx(ref.neglected_energy_fraction)
    assert b.provenance()["point_kernel"]["source"].startswith("voxdose Monte Carlo")
    npz, js = _entries(tmp_path)
    assert len(npz) == len(js) == 1
    meta = json.loads(js[0].read_text())
    assert meta["key"]["spacing_mm_zyx"] == [4.8, 4.8, 4.8]
    assert meta["key"]["point_kernel"]["kind"] == "table"
    assert meta["key"]["voxdose_version"]


def test_miss_on_other_spacing_radius_medium_or_table(tmp_path, builds):
    pk = load_point_kernel("Lu-177")
    voxel_kernel_cached(pk, SP, radius_mm=R, cache_dir=tmp_path)
    voxel_kernel_cached(pk, (3.0, 4.42, 4.42), radius_mm=R, cache_dir=tmp_path)
    voxel_kernel_cached(pk, SP, radius_mm=R + 5, cache_dir=tmp_path)
    voxel_kernel_cached(load_point_kernel("Lu-177", "soft-tissue"), SP, radius_mm=R,
                        cache_dir=tmp_path)
    other = TabulatedPointKernel.from_table(pk.r_table_mm, pk.dose_table_gy_per_decay * 1.01,
                                            nuclide="Lu-177", source="user table")
    voxel_kernel_cached(other, SP, radius_mm=R, cache_dir=tmp_path)
    assert len(builds) == 5
    assert len(_entries(tmp_path)[0]) == 5
    # and all of them hit now
    voxel_kernel_cached(pk, (3.0, 4.42, 4.42), radius_mm=R, cache_dir=tmp_path)
    voxel_kernel_cached(other, SP, radius_mm=R, cache_dir=tmp_path)
    assert len(builds) == 5


def test_key_rounds_spacing_and_names_the_source():
    pk = load_point_kernel("Y-90")
    k1 = voxel_kernel_cache_key(pk, (4.42004, 4.42, 3.0))
    k2 = voxel_kernel_cache_key(pk, (4.41996, 4.42, 3.0))
    assert k1 == k2 and k1["spacing_mm_zyx"] == [4.42, 4.42, 3.0]
    assert k1 != voxel_kernel_cache_key(pk, (4.4203, 4.42, 3.0))
    assert k1["nuclide"] == "Y-90" and k1["medium"] == "water"


@pytest.mark.parametrize("damage", ["truncate_npz", "garbage_npz", "bad_json", "wrong_key",
                                    "other_data", "no_json"])
def test_corrupt_or_mismatching_entry_is_rebuilt(tmp_path, builds, damage):
    pk = load_point_kernel("Y-90")
    good = voxel_kernel_cached(pk, SP, radius_mm=R, cache_dir=tmp_path)
    (npz,), (js,) = _entries(tmp_path)
    if damage == "truncate_npz":
        npz.write_bytes(npz.read_bytes()[:100])
    elif damage == "garbage_npz":
        npz.write_bytes(b"not a zip file at all")
    elif damage == "bad_json":
        js.write_text("{ half a json")
    elif damage == "wrong_key":
        meta = json.loads(js.read_text())
        meta["key"]["voxdose_version"] = "0.0.0-old"
        js.write_text(json.dumps(meta))
    elif damage == "other_data":
        np.savez(npz, data_gy_per_decay=good.data_gy_per_decay * 2)
    else:
        js.unlink()
    again = voxel_kernel_cached(pk, SP, radius_mm=R, cache_dir=tmp_path)
    assert len(builds) == 2                        # rebuilt, not read
    np.testing.assert_array_equal(again.data_gy_per_decay, good.data_gy_per_decay)
    third = voxel_kernel_cached(pk, SP, radius_mm=R, cache_dir=tmp_path)
    assert len(builds) == 2                        # the rewritten entry is good again
    np.testing.assert_array_equal(third.data_gy_per_decay, good.data_gy_per_decay)


def test_environment_variable_and_default_folder(tmp_path, monkeypatch, builds):
    monkeypatch.setenv("VOXDOSE_CACHE_DIR", str(tmp_path / "env"))
    assert kernel_cache_dir() == tmp_path / "env" / "kernels"
    voxel_kernel_cached(load_point_kernel("Y-90"), SP, radius_mm=R)
    assert len(list((tmp_path / "env" / "kernels").glob("*.npz"))) == 1
    monkeypatch.delenv("VOXDOSE_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert kernel_cache_dir() == tmp_path / "home" / ".cache" / "voxdose" / "kernels"


def test_unwritable_cache_only_costs_the_build(tmp_path, builds):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    vk = voxel_kernel_cached(load_point_kernel("Y-90"), SP, radius_mm=R, cache_dir=blocker)
    assert vk.data_gy_per_decay.shape == (15, 15, 15)
    assert len(builds) == 1


def test_changed_builder_code_is_a_miss(tmp_path, builds, monkeypatch):
    """The key holds a hash of the builder's source: same version, changed algorithm ->
    the old entry is not served (one-truth issue: no stale kernels)."""
    pk = load_point_kernel("Lu-177")
    voxel_kernel_cached(pk, SP, radius_mm=R, cache_dir=tmp_path)
    voxel_kernel_cached(pk, SP, radius_mm=R, cache_dir=tmp_path)
    assert len(builds) == 1
    key = voxel_kernel_cache_key(pk, SP, R)
    assert len(key["builder_sha256"]) == 16
    monkeypatch.setattr(vkmod, "builder_code_digest", lambda: "0" * 16)
    voxel_kernel_cached(pk, SP, radius_mm=R, cache_dir=tmp_path)
    assert len(builds) == 2


def test_symmetric_kernel_is_stored_as_its_octant_and_read_back_bit_for_bit(tmp_path, builds):
    """A built kernel is mirror symmetric: the entry holds the octant (1/8 of the bytes),
    and reading it gives exactly the built array, anisotropic spacing included."""
    pk = load_point_kernel("Lu-177")
    sp = (3.0, 4.42, 4.8)
    built = voxel_kernel_cached(pk, sp, radius_mm=R, cache_dir=tmp_path)
    (npz,), (js,) = _entries(tmp_path)
    meta = json.loads(js.read_text())
    assert meta["stored"] == "octant"
    with np.load(npz) as z:
        stored = z["data_gy_per_decay"]
    full = built.data_gy_per_decay
    assert stored.shape == tuple((n + 1) // 2 for n in full.shape)
    assert list(full.shape) == meta["shape_zyx"]
    read = voxel_kernel_cached(pk, sp, radius_mm=R, cache_dir=tmp_path)
    assert len(builds) == 1
    np.testing.assert_array_equal(read.data_gy_per_decay, full)
    np.testing.assert_array_equal(read.data_gy_per_decay,
                                  voxel_kernel(pk, sp, radius_mm=R).data_gy_per_decay)


def test_octant_helpers_refuse_an_asymmetric_kernel_and_mirror_exactly():
    rng = np.random.default_rng(3)
    o = rng.random((4, 3, 5))
    full = vkmod.mirror_octant(o)
    assert full.shape == (7, 5, 9)
    for axis in range(3):                          # S(-o) = S(o) in each axis
        np.testing.assert_array_equal(full, np.flip(full, axis))
    np.testing.assert_array_equal(full[3:, 2:, 4:], o)
    np.testing.assert_array_equal(vkmod.octant_of(full), o)
    bent = full.copy()
    bent[0, 1, 2] += 1e-12                         # one voxel off its mirror image
    assert vkmod.octant_of(bent) is None
    assert vkmod.octant_of(full[:, :, :8]) is None  # an even axis has no centre


def test_whole_entry_of_the_previous_layout_is_still_read(tmp_path, builds):
    """An entry stored whole (an asymmetric kernel, or written without the octant) is read
    as before."""
    pk = load_point_kernel("Y-90")
    good = voxel_kernel_cached(pk, SP, radius_mm=R, cache_dir=tmp_path)
    (npz,), (js,) = _entries(tmp_path)
    meta = json.loads(js.read_text())
    np.savez(npz, data_gy_per_decay=good.data_gy_per_decay)
    meta["stored"] = "whole"
    meta["sha256"] = vkmod._data_digest(good.data_gy_per_decay)
    js.write_text(json.dumps(meta))
    again = voxel_kernel_cached(pk, SP, radius_mm=R, cache_dir=tmp_path)
    assert len(builds) == 1
    np.testing.assert_array_equal(again.data_gy_per_decay, good.data_gy_per_decay)


@pytest.mark.parametrize("grid_shape", [(4, 30, 9), (40, 40, 40), (1, 2, 3)])
def test_kernel_cropped_to_the_grid_is_the_centre_of_the_whole_kernel(tmp_path, builds,
                                                                      grid_shape):
    """grid_shape: half-widths min(h, N - 1), the centre of the whole kernel, from a build
    and from the octant entry alike; the dose on that grid is the same."""
    from voxdose.core.backend import cpu_backend
    from voxdose.dose.convolution import fft_convolve_same

    pk = load_point_kernel("Lu-177")
    sp = (3.0, 4.42, 4.8)
    whole = voxel_kernel(pk, sp, radius_mm=R).data_gy_per_decay       # 21 x 15 x 13
    built = voxel_kernel_cached(pk, sp, radius_mm=R, cache_dir=tmp_path, grid_shape=grid_shape)
    read = voxel_kernel_cached(pk, sp, radius_mm=R, cache_dir=tmp_path, grid_shape=grid_shape)
    assert len(builds) == 1
    h = [min(n // 2, g - 1) for n, g in zip(whole.shape, grid_shape)]
    c = [n // 2 for n in whole.shape]
    centre = whole[tuple(slice(ci - hi, ci + hi + 1) for ci, hi in zip(c, h))]
    for vk in (built, read):
        assert vk.shape == tuple(2 * v + 1 for v in h)
        np.testing.assert_array_equal(vk.data_gy_per_decay, centre)
        assert vk.radius_mm == R
    tia = np.random.default_rng(2).random(grid_shape)
    np.testing.assert_array_equal(fft_convolve_same(tia, read.data_gy_per_decay, cpu_backend()),
                                  fft_convolve_same(tia, whole, cpu_backend()))
