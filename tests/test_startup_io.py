"""Start-up and file I/O of the commands (issue 18): half-lives from ICRP-107 equal to
radioactivedecay's, no heavy import on `voxdose dose --help`, the parallel gzip writer
round-trips a NIfTI exactly, `.nii` outputs are uncompressed, the exact kernel cache gives
the built kernel, and a float32 TIA gives the same dose without the float64 detour."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from voxdose.core.grid import Grid, Image
from voxdose.core.nuclide import HALF_LIFE_SOURCE, icrp107_half_life_s, load_nuclide
from voxdose.io import sitk_adapter
from voxdose.io.sitk_adapter import COMPRESSION_LEVELS, read_image, write_image

NAMES = ["Lu-177", "Y-90", "I-131", "Tc-99m", "Lu-178m", "Lu-177m", "Ga-68", "F-18", "In-111",
         "I-123", "I-125", "Ho-166", "Sm-153", "Tb-161", "Cu-67", "Re-188", "Ac-225", "Ra-223",
         "Pb-212", "At-211", "Sr-89", "Co-60", "Cs-137", "U-238"]


def _icrp107_names() -> list[str]:
    from icrp107_database import utility

    return sorted(p.stem for p in (Path(utility.icrp107_source_path) / "icrp107").glob("*.json"))


def test_half_lives_equal_radioactivedecay():
    """ICRP-107 converted to seconds is radioactivedecay's value (the same table), bit for
    bit: for the named nuclides through load_nuclide, and for every ICRP-107 nuclide."""
    rd = pytest.importorskip("radioactivedecay")
    assert "ICRP" in HALF_LIFE_SOURCE
    for name in NAMES:
        assert load_nuclide(name).half_life_s == rd.Nuclide(name).half_life("s"), name
    names = _icrp107_names()
    assert len(names) > 1000
    for name in names:
        assert icrp107_half_life_s(name) == rd.Nuclide(name).half_life("s"), name


def test_names_outside_icrp107_keep_their_errors():
    from voxdose.core.errors import NuclideError

    with pytest.raises(NuclideError, match="unknown nuclide 'Xx-999'"):
        load_nuclide("Xx-999")
    with pytest.raises(NuclideError, match="'Fe-56' is stable"):
        load_nuclide("Fe-56")
    assert icrp107_half_life_s("Fe-56") is None


_PROBE = """
import json, sys
from voxdose.cli.app import main
rc = main(sys.argv[1:])
heavy = ("radioactivedecay", "sympy", "pandas", "matplotlib")
print(json.dumps({"rc": rc, "loaded": [m for m in heavy if m in sys.modules]}))
"""


def _probe(args, env=None) -> dict:
    r = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True,
                       env={**os.environ, **(env or {})}, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_dose_help_and_dose_do_not_import_radioactivedecay(tmp_path):
    res = _probe(["dose", "--help"])
    assert res == {"rc": 0, "loaded": []}
    g = Grid.from_spacing((8, 8, 8), (4.8, 4.8, 4.8))
    tia = np.zeros(g.shape, dtype=np.float32)
    tia[4, 4, 4] = 1e9
    src = tmp_path / "tia.nii.gz"
    write_image(src, Image(tia, g, "time-integrated activity", "Bq*s"))
    args = ["dose", str(src), "--nuclide", "Lu-177", "--out", str(tmp_path / "d.nii.gz"),
            "--device", "cpu", "--kernel-radius-mm", "30"]
    res = _probe(args, env={"VOXDOSE_CACHE_DIR": str(tmp_path / "cache")})
    assert res == {"rc": 0, "loaded": []}


def _image(shape=(40, 70, 90), dtype=np.float32, seed=0) -> Image:
    rng = np.random.default_rng(seed)
    g = Grid.from_spacing(shape, (4.8, 3.3, 2.1), origin_mm_xyz=(-12.5, 3.25, 100.0))
    data = (rng.gamma(2.0, 1e6, shape) * (rng.random(shape) > 0.3)).astype(dtype)
    return Image(data, g, "time-integrated activity", "Bq*s")


def _raw_nifti(image: Image, tmp_path: Path) -> bytes:
    """What SimpleITK writes as an uncompressed .nii for this image."""
    p = tmp_path / "reference.nii"
    sitk.WriteImage(sitk_adapter.image_to_sitk(image.data, image.grid), str(p))
    return p.read_bytes()


@pytest.mark.parametrize("level", COMPRESSION_LEVELS)
def test_gzip_writer_round_trips_values_and_header(tmp_path, level):
    img = _image()  # 1 MB float32: more than one 1 MiB piece with the header
    raw = _raw_nifti(img, tmp_path)
    out = tmp_path / f"x{level}.nii.gz"
    write_image(out, img, compression=level)
    blob = out.read_bytes()
    d = zlib.decompressobj(wbits=31)  # exactly one gzip member, nothing after it
    assert d.decompress(blob) + d.flush() == raw and d.eof and d.unused_data == b""
    assert gzip.decompress(blob) == raw
    back = sitk.ReadImage(str(out))
    assert np.array_equal(sitk.GetArrayFromImage(back), img.data)
    ref = sitk.ReadImage(str(tmp_path / "reference.nii"))  # NIfTI geometry is float32
    for get in ("GetSpacing", "GetOrigin", "GetDirection", "GetSize"):
        assert getattr(back, get)() == getattr(ref, get)()
    assert json.loads((tmp_path / f"x{level}.json").read_text())["unit"] == "Bq*s"


def test_gzip_writer_same_bytes_on_any_number_of_cores(tmp_path, monkeypatch):
    img = _image(shape=(64, 64, 96))
    files = []
    for n in (1, 3):
        monkeypatch.setattr(sitk_adapter, "_workers", lambda n=n: n)
        files.append(tmp_path / f"w{n}.nii.gz")
        write_image(files[-1], img)
    assert files[0].read_bytes() == files[1].read_bytes()


def test_old_writer_files_decompress_to_the_same_nifti(tmp_path):
    """SimpleITK's own .nii.gz (the writer before) holds the same NIfTI bytes."""
    img = _image(shape=(12, 20, 16), dtype=np.float64)
    p = tmp_path / "sitk.nii.gz"
    sitk.WriteImage(sitk_adapter.image_to_sitk(img.data, img.grid), str(p), useCompression=True)
    write_image(tmp_path / "ours.nii.gz", img, dtype=None)
    assert gzip.decompress(p.read_bytes()) == gzip.decompress(
        (tmp_path / "ours.nii.gz").read_bytes())


def test_compression_level_choice(monkeypatch):
    from voxdose.core.errors import InputError

    monkeypatch.delenv(sitk_adapter.COMPRESSION_ENV, raising=False)
    assert sitk_adapter.compression_level() == "fast"
    assert sitk_adapter.compression_level(" 6 ") == "6"
    monkeypatch.setenv(sitk_adapter.COMPRESSION_ENV, "9")
    assert sitk_adapter.compression_level() == "9"
    assert sitk_adapter.compression_level("FAST") == "fast"
    for bad in ("10", "-1", "best"):
        with pytest.raises(InputError, match="compression"):
            sitk_adapter.compression_level(bad)


def _is_uncompressed_nifti(p: Path) -> bool:
    b = p.read_bytes()[:348]
    return b[:2] != b"\x1f\x8b" and int.from_bytes(b[:4], "little") == 348 and b[344:347] == b"n+1"


def test_dose_nii_output_is_uncompressed_and_equal(tmp_path, capsys):
    from voxdose.cli.app import main

    img = _image(shape=(10, 12, 11))
    img = Image(img.data, Grid.from_spacing(img.grid.shape, (4.0, 4.0, 4.0)), img.quantity,
                img.unit)
    src = tmp_path / "tia.nii.gz"
    write_image(src, img)
    outs = {}
    for name, extra in (("d.nii", []), ("d.nii.gz", []), ("d9.nii.gz", ["--compression-level",
                                                                          "9"])):
        rc = main(["dose", str(src), "--nuclide", "Lu-177", "--out", str(tmp_path / name),
                   "--device", "cpu", "--kernel-radius-mm", "20", *extra])
        assert rc == 0, capsys.readouterr().err
        outs[name] = read_image(tmp_path / name).data
    assert _is_uncompressed_nifti(tmp_path / "d.nii")
    assert (tmp_path / "d.nii.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert np.array_equal(outs["d.nii"], outs["d.nii.gz"])
    assert np.array_equal(outs["d.nii"], outs["d9.nii.gz"])
    rc = main(["dose", str(src), "--nuclide", "Lu-177", "--out", str(tmp_path / "bad.nii.gz"),
               "--compression-level", "11"])
    assert rc == 2 and not (tmp_path / "bad.nii.gz").exists()
    assert "--compression-level" in capsys.readouterr().err


def test_read_image_dtype(tmp_path):
    img = _image(shape=(6, 7, 8))
    write_image(tmp_path / "a.nii.gz", img)
    assert read_image(tmp_path / "a.nii.gz").data.dtype == np.float64
    kept = read_image(tmp_path / "a.nii.gz", dtype=None).data
    assert kept.dtype == np.float32 and kept.flags.writeable
    assert np.array_equal(kept, img.data)


def test_exact_kernel_cache_is_the_built_kernel(tmp_path, monkeypatch):
    from voxdose.kernels.cache import voxel_kernel_cached
    from voxdose.kernels.point import load_point_kernel
    from voxdose.kernels.voxel import voxel_kernel

    monkeypatch.setenv("VOXDOSE_CACHE_DIR", str(tmp_path))
    pk = load_point_kernel("Lu-177")
    s = (float(np.float32(4.8)), float(np.float32(4.8)), float(np.float32(3.3)))  # NIfTI
    built = voxel_kernel(pk, s, radius_mm=25.0)
    first = voxel_kernel_cached(pk, s, radius_mm=25.0, exact_spacing=True)
    assert len(list((tmp_path / "kernels").glob("Lu-177_*.npz"))) == 1
    second = voxel_kernel_cached(pk, s, radius_mm=25.0, exact_spacing=True)
    for k in (first, second):
        assert np.array_equal(k.data_gy_per_decay, built.data_gy_per_decay)
        assert k.spacing_mm == tuple(s)
        p, q = k.provenance(), built.provenance()
        p.pop("build_seconds"), q.pop("build_seconds")
        assert json.dumps(p, sort_keys=True) == json.dumps(q, sort_keys=True)
    other = voxel_kernel_cached(pk, (4.8, 4.8, 3.3), radius_mm=25.0, exact_spacing=True)
    assert not np.array_equal(other.data_gy_per_decay, built.data_gy_per_decay)


@pytest.mark.parametrize("budget_gb", [None, 1e-5])
def test_float32_tia_gives_the_float64_path_dose(budget_gb):
    """A float32 TIA is convolved in float32 directly (no float64 copy): the same dose as
    the float64 copy of it, one shot and blockwise."""
    from voxdose.core.backend import cpu_backend
    from voxdose.dose.engine import make_engine

    img = _image(shape=(20, 24, 18))
    img = Image(img.data, Grid.from_spacing(img.grid.shape, (4.0, 4.0, 4.0)), "TIA", "Bq*s")
    eng = make_engine("Lu-177", img.grid.spacing_mm, radius_mm=30.0, precision="float32",
                      memory_budget_gb=budget_gb)
    before = img.data.copy()
    a = eng.dose(img, cpu_backend())
    assert np.array_equal(img.data, before)  # the caller's array is not used as scratch
    b = eng.dose(img.with_data(img.data.astype(np.float64)), cpu_backend())
    assert a.data.dtype == np.float64 and np.array_equal(a.data, b.data)
    assert (a.meta["convolution"]["memory_plan"]["n_tiles"] > 1) == (budget_gb is not None)


def _sitk_file(path, arr, direction=None):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((2.5, 3.0, 4.5))
    img.SetOrigin((-10.0, 20.5, 3.25))
    if direction is not None:
        img.SetDirection(direction)
    sitk.WriteImage(img, str(path), useCompression=str(path).endswith(".gz"))
    return img


_ROT = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.uint16, np.int32,
                                   np.uint32, np.float32, np.float64])
@pytest.mark.parametrize("suffix, direction", [(".nii.gz", None), (".nii", _ROT)])
def test_nifti_voxels_from_the_checked_bytes_equal_simpleitk(tmp_path, monkeypatch, dtype,
                                                             suffix, direction):
    """The voxels come from the bytes the integrity check decompressed (SimpleITK only reads
    the header): the same array, type and grid as SimpleITK's full read."""
    rng = np.random.default_rng(1)
    arr = (rng.uniform(0, 100, (5, 7, 9))).astype(dtype)
    path = tmp_path / f"a{suffix}"
    _sitk_file(path, arr, direction)
    full = sitk.ReadImage(str(path))
    want = sitk.GetArrayFromImage(full)
    monkeypatch.setattr(sitk_adapter, "read_sitk", lambda p: pytest.fail("full read"))
    got = read_image(path, dtype=None)
    assert got.data.dtype == want.dtype and np.array_equal(got.data, want)
    assert got.grid.same_as(sitk_adapter.grid_from_sitk(full), tol_mm=0.0)
    assert got.data.flags.writeable and got.data.flags.c_contiguous


def test_nifti_with_intensity_scaling_is_read_by_simpleitk(tmp_path):
    """scl_slope 2, scl_inter 5 in the header: ITK applies them; the bytes path stands aside
    (header offsets 112/116 of NIfTI-1)."""
    import struct
    path = tmp_path / "scaled.nii"
    _sitk_file(path, np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    raw = bytearray(path.read_bytes())
    raw[112:120] = struct.pack("<2f", 2.0, 5.0)
    path.write_bytes(bytes(raw))
    want = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    got = read_image(path, dtype=None)
    assert np.array_equal(got.data, want) and got.data.dtype == want.dtype
    assert float(got.data.ravel()[1]) == 7.0  # 2 x 1 + 5: scaled


def _patched(tmp_path, name, arr, patches, cut=0):
    """A SimpleITK-written .nii with header fields overwritten: [(offset, fmt, values)]."""
    import struct
    path = tmp_path / name
    _sitk_file(path, arr)
    raw = bytearray(path.read_bytes())
    for off, fmt, vals in patches:
        struct.pack_into(fmt, raw, off, *vals)
    path.write_bytes(bytes(raw[:len(raw) - cut] if cut else raw))
    return path


@pytest.mark.parametrize("patches", [
    [(108, "<f", (0.0,))], [(108, "<f", (348.0,))],          # vox_offset inside the header
    [(40, "<8h", (3, 5, 4, 0, 1, 1, 1, 1))],                   # dim[3] = 0 (ITK: 1)
    [(40, "<8h", (3, 5, 0, 3, 1, 1, 1, 1))],                   # dim[2] = 0
    [(72, "<h", (32,))],                                       # bitpix disagreeing (ITK: type)
], ids=["offset0", "offset348", "dim3-zero", "dim2-zero", "bitpix32"])
def test_odd_headers_read_as_simpleitk_reads_them(tmp_path, patches):
    """Headers found by an adversarial sweep: where the bytes path cannot be sure it reads
    what ITK reads it stands aside, and nothing escapes as a raw error."""
    path = _patched(tmp_path, "odd.nii", (np.arange(60) - 30).astype(np.int16).reshape(3, 4, 5),
                    patches)
    want = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    got = read_image(path, dtype=None)
    assert got.data.dtype == want.dtype and np.array_equal(got.data, want)


def test_truncated_file_with_a_zero_bitpix_is_refused(tmp_path):
    """bitpix 0 and the last voxels cut off: the datatype's size finds the missing bytes
    (SimpleITK would zero-fill them)."""
    from voxdose.core.errors import InputError
    path = _patched(tmp_path, "cut.nii", (np.arange(60) - 30).astype(np.int16).reshape(3, 4, 5),
                    [(72, "<h", (0,))], cut=10)
    with pytest.raises(InputError, match="cut"):
        read_image(path, dtype=None)


def test_a_ct_file_is_read_once_per_run_and_shared_read_only(tmp_path, monkeypatch):
    """read_timepoint_ct reads a CT file once: the same voxels again (read only: changing
    them in place raises, it cannot change a later read), each caller its own meta; a file
    written anew is read anew; a missing file gives read_image's own error; the pipeline's
    end forgets them."""
    from voxdose.core.errors import InputError
    from voxdose.study import images
    from voxdose.study.model import TimePoint

    images.clear_ct_cache()
    calls = []
    real = images.read_image
    monkeypatch.setattr(images, "read_image",
                        lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    img = _image(shape=(12, 14, 16))
    p = tmp_path / "ct.nii.gz"
    write_image(p, img)
    tp = TimePoint(time_h=1.0, spect=tmp_path / "spect.nii.gz", ct=p)
    a, b = images.read_timepoint_ct(tp), images.read_timepoint_ct(tp)
    assert len(calls) == 1 and a.data is b.data and a.unit == "HU"
    assert np.array_equal(a.data, img.data.astype(np.float64))
    with pytest.raises(ValueError, match="read-only"):
        a.data += 1.0
    a.meta["x"] = 1
    assert "x" not in b.meta
    write_image(p, img.with_data(img.data * 2))                 # the file written anew
    c = images.read_timepoint_ct(tp)
    assert len(calls) == 2 and np.array_equal(c.data, 2 * img.data.astype(np.float64))
    with pytest.raises(InputError):
        images.read_timepoint_ct(TimePoint(time_h=1.0, spect=p, ct=tmp_path / "missing.nii.gz"))
    images.clear_ct_cache()
    images.read_timepoint_ct(tp)
    assert len(calls) == 4          # the missing file's attempt, then read again after clear
    images.clear_ct_cache()
