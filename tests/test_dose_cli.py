"""``voxdose dose`` and ``voxdose bench``: outputs, sidecar, bad input (one line, exit 2,
nothing written)."""

import json

import numpy as np
import pytest

from voxdose.cli.app import main
from voxdose.core.grid import Grid, Image
from voxdose.io.sitk_adapter import read_image, write_image

SP = (9.6, 9.6, 9.6)


@pytest.fixture()
def inputs(tmp_path):
    g = Grid.from_spacing((10, 9, 8), SP, origin_mm_xyz=(-40.0, -30.0, 12.0))
    tia = np.zeros(g.shape)
    tia[4:6, 4:6, 3:5] = 1e12
    write_image(tmp_path / "tia.nii.gz", Image(tia, g, "time-integrated activity",
                                               "Bq*s per voxel (decays)"))
    hu = np.zeros(g.shape)
    hu[:, :, :2] = -1000.0
    hu[:, :, 6:] = 1000.0
    write_image(tmp_path / "ct.nii.gz", Image(hu, g, "CT", "HU"))
    return tmp_path, g


def _run(args, capsys):
    rc = main(args)
    return rc, capsys.readouterr()


@pytest.mark.parametrize(("method", "mode"), [("kernel", "none"), ("kernel", "scale"),
                                              ("kernel", "mvs"), ("ldm", "scale")])
def test_dose_command_writes_gray_and_sidecar(inputs, capsys, method, mode):
    d, g = inputs
    out = d / f"dose_{method}_{mode}.nii.gz"
    args = ["dose", str(d / "tia.nii.gz"), "--nuclide", "177Lu", "--method", method,
            "--device", "cpu", "--out", str(out), "--kernel-radius-mm", "40"]
    if mode != "none":
        args += ["--ct", str(d / "ct.nii.gz"), "--density-mode", mode]
    rc, cap = _run(args, capsys)
    assert rc == 0, cap.err
    img = read_image(out)
    assert img.grid.same_as(g)
    side = json.loads((d / f"dose_{method}_{mode}.json").read_text())
    assert side["unit"] == "Gy" and side["density_mode"] == mode
    assert side["dose_method"] == method and side["nuclide"] == "Lu-177"
    assert len(side["inputs"]["tia_sha256"]) == 64
    assert img.data.max() > 0 and img.data.min() >= 0
    if method == "ldm":   # local deposition: dose only where the activity is
        assert np.count_nonzero(img.data) == 8


def test_dose_kernel_none_matches_the_python_api(inputs, capsys):
    from voxdose.dose.engine import make_engine

    d, g = inputs
    out = d / "dose.nii.gz"
    rc, cap = _run(["dose", str(d / "tia.nii.gz"), "--nuclide", "Lu-177", "--device", "cpu",
                    "--out", str(out), "--kernel-radius-mm", "40", "--precision", "float64"],
                   capsys)
    assert rc == 0, cap.err
    api = make_engine("Lu-177", g.spacing_mm, radius_mm=40.0).dose(read_image(d / "tia.nii.gz"))
    assert np.allclose(read_image(out).data, api.data, rtol=1e-6)   # float32 on disk


def _expect_error(args, capsys, tmp_path, pattern):
    import re

    before = {p.name for p in tmp_path.iterdir()}
    rc, cap = _run(args, capsys)
    assert rc == 2
    err = cap.err.strip()
    assert len(err.splitlines()) == 1, err
    assert re.search(pattern, err), err
    assert {p.name for p in tmp_path.iterdir()} == before   # nothing written, no temp files


def test_bad_inputs(inputs, capsys):
    d, g = inputs
    base = ["--nuclide", "Lu-177", "--device", "cpu", "--out", str(d / "o.nii.gz")]
    _expect_error(["dose", str(d / "missing.nii.gz"), *base], capsys, d, r"missing\.nii\.gz")
    _expect_error(["dose", str(d / "tia.nii.gz"), *base, "--density-mode", "scale"], capsys, d,
                  r"needs --ct")
    _expect_error(["dose", str(d / "tia.nii.gz"), "--nuclide", "Lu-999", "--out",
                   str(d / "o.nii.gz")], capsys, d, r"Lu-999")
    _expect_error(["dose", str(d / "tia.nii.gz"), *base[:-2], "--out", str(d / "o.png")],
                  capsys, d, r"o\.png")
    neg = d / "neg.nii.gz"
    write_image(neg, Image(-np.ones(g.shape), g))
    (d / "neg.json").unlink()
    _expect_error(["dose", str(neg), *base], capsys, d, r"neg\.nii\.gz has negative")
    g2 = Grid.from_spacing((5, 5, 5), SP)
    write_image(d / "ct_small.nii.gz", Image(np.zeros(g2.shape), g2))
    _expect_error(["dose", str(d / "tia.nii.gz"), *base, "--ct", str(d / "ct_small.nii.gz"),
                   "--density-mode", "scale"], capsys, d, r"ct_small\.nii\.gz is not on the TIA")


def test_ct_on_another_grid_can_be_resampled(inputs, capsys):
    d, g = inputs
    # the same CT on a finer grid covering the same region
    fine = Grid.from_spacing((20, 18, 16), (4.8, 4.8, 4.8),
                             origin_mm_xyz=g.index_to_world([-0.25, -0.25, -0.25]))
    write_image(d / "ct_fine.nii.gz", Image(np.zeros(fine.shape), fine))
    rc, cap = _run(["dose", str(d / "tia.nii.gz"), "--nuclide", "Lu-177", "--device", "cpu",
                    "--out", str(d / "o.nii.gz"), "--ct", str(d / "ct_fine.nii.gz"),
                    "--density-mode", "scale", "--resample-ct", "--kernel-radius-mm", "40"],
                   capsys)
    assert rc == 0, cap.err


def test_bench_json(capsys):
    rc, cap = _run(["bench", "--device", "cpu", "--sizes", "8", "--repeats", "1", "--json",
                    "--tia-size", "6"], capsys)
    assert rc == 0, cap.err
    tia_rows = json.loads(cap.out)["tia_rows"]
    assert [r["voxels"] for r in tia_rows] == [200, 216]
    assert all(r["voxels_per_s"] > 0 for r in tia_rows)
    rows = json.loads(cap.out)["rows"]
    assert {r["method"] for r in rows} == {"voxdose", "scipy.signal.fftconvolve"}
    for r in rows:
        assert r["time_ms"] > 0 and r["max_rel_diff_vs_scipy"] < 1e-5
    rc, cap = _run(["bench", "--sizes", "a,b"], capsys)
    assert rc == 2 and "--sizes" in cap.err


def test_dose_with_a_users_dpk_table(tmp_path, capsys):
    """--dpk: a user's radial DPK (here our own table written back out, scaled by 0.8) is
    used instead of the built-in kernel: the dose scales by 0.8 (dose is linear in S).
    Within 1 %, not exactly: a bare CSV lacks the shipped table's record (electron range),
    which sets where the voxel integration switches method. A table holding more energy
    than the nuclide emits (x2: a dose column in mGy read as Gy is x1000) or almost none
    (r in cm read as mm: x1e-3) is refused before any work; one holding less than half is
    used with a warning in the sidecar."""
    from voxdose.kernels.point import load_point_kernel

    pk = load_point_kernel("Lu-177")

    def table(scale, r_scale=1.0):
        path = tmp_path / f"dpk_{scale:g}_{r_scale:g}.csv"
        rows = "\n".join(f"{r_scale * float(r)!r},{scale * float(d)!r}"
                         for r, d in zip(pk.r_table_mm, pk.dose_table_gy_per_decay))
        path.write_text("r_mm,dose_Gy_per_decay\n" + rows + "\n")
        return path

    g = Grid.from_spacing((6, 6, 6), (4.0, 4.0, 4.0))
    tia = np.zeros(g.shape)
    tia[3, 3, 3] = 1e12
    tia_path = tmp_path / "tia.nii.gz"
    write_image(tia_path, Image(tia, g, "time-integrated activity", "Bq*s"), dtype=np.float64)
    outs = []
    for extra in ([], ["--dpk", str(table(0.8))]):
        out = tmp_path / f"d{len(outs)}.nii.gz"
        rc, cap = _run(["dose", str(tia_path), "--nuclide", "Lu-177", "--out", str(out),
                        "--precision", "float64", "--kernel-radius-mm", "20", *extra], capsys)
        assert rc == 0, cap.err
        outs.append(read_image(out).data)
        assert "warning" not in cap.out + cap.err
    assert np.allclose(outs[1], 0.8 * outs[0], rtol=1e-2, atol=1e-12 * outs[0].max())
    assert outs[1][3, 3, 3] == pytest.approx(0.8 * outs[0][3, 3, 3], rel=5e-3)
    for bad, what in ((table(2.0), "2 x the 0.183 MeV"), (table(1.0, 0.1), "0.001 x the")):
        out = tmp_path / "bad.nii.gz"
        rc, cap = _run(["dose", str(tia_path), "--nuclide", "Lu-177", "--out", str(out),
                        "--dpk", str(bad)], capsys)
        assert rc == 2 and not out.exists()
        assert what in cap.err and str(bad) in cap.err and "Traceback" not in cap.err
        assert cap.err.strip().count("\n") == 0
    out = tmp_path / "low.nii.gz"
    rc, cap = _run(["dose", str(tia_path), "--nuclide", "Lu-177", "--out", str(out),
                    "--kernel-radius-mm", "20", "--dpk", str(table(0.3))], capsys)
    assert rc == 0 and "voxdose: warning: dose point kernel table" in cap.out
    side = json.loads(out.with_name("low.json").read_text())
    assert any("leaves the rest out" in w for w in side["warnings"])
    rc, cap = _run(["dose", str(tia_path), "--nuclide", "Lu-177", "--out",
                    str(tmp_path / "x.nii.gz"), "--dpk", str(tmp_path / "missing.csv")], capsys)
    assert rc == 2 and not (tmp_path / "x.nii.gz").exists()


@pytest.mark.parametrize(("name", "make", "pattern"), [
    ("density", lambda hu: np.clip(1.0 + hu / 1000.0, 0.001, None),   # g/cm^3 given as CT
     r"density\.nii\.gz: CT values span 0\.001 to 2: this looks like a density map"),
    ("plus1024", lambda hu: hu + 1024.0,                              # no rescale intercept
     r"plus1024\.nii\.gz: almost no CT value below -50 HU .*HU \+ 1024"),
])
def test_ct_not_in_hu_is_refused_for_the_density_modes(inputs, capsys, name, make, pattern):
    """A density map or an unsigned CT without its intercept, read as HU, would give water
    everywhere or soft tissue at 1.6 g/cm^3 (dose -40 %): refused, nothing written; the
    same file in density mode none (registration, display only) is accepted."""
    d, g = inputs
    hu = read_image(d / "ct.nii.gz").data.astype(np.float64)
    write_image(d / f"{name}.nii.gz", Image(make(hu), g))
    (d / f"{name}.json").unlink()
    base = ["dose", str(d / "tia.nii.gz"), "--nuclide", "Lu-177", "--device", "cpu",
            "--kernel-radius-mm", "40", "--ct", str(d / f"{name}.nii.gz")]
    for mode in ("scale", "mvs"):
        _expect_error([*base, "--out", str(d / "o.nii.gz"), "--density-mode", mode], capsys, d,
                      pattern)
    rc, cap = _run([*base, "--out", str(d / "ok.nii.gz")], capsys)
    assert rc == 0, cap.err


def test_ct_check_thresholds():
    from voxdose.core.errors import InputError
    from voxdose.imaging.checks import check_ct_in_hu

    rng = np.random.default_rng(0)
    check_ct_in_hu(np.array([-1000.0, 0.0, 40.0]), "ct")       # air, water, tissue
    check_ct_in_hu(np.array([-120.0, 60.0, 1800.0]), "ct")     # fat, tissue, bone: HU
    check_ct_in_hu(np.zeros(4), "ct")                           # noise-free water
    liver_coil = np.concatenate([rng.normal(50.0, 12.0, 10_000), np.full(5, 3000.0)])
    check_ct_in_hu(liver_coil, "ct")          # cropped to the liver, a coil: no fat, kept
    with pytest.raises(InputError, match="density map"):
        check_ct_in_hu(np.array([0.0, 1.0, 5.0]), "ct")
    with pytest.raises(InputError, match="density map"):
        check_ct_in_hu(np.array([0.0, 0.096, 0.17]), "ct")      # a mu-map at 140 keV, 1/cm
    with pytest.raises(InputError, match="HU \\+ 1024"):
        check_ct_in_hu(np.array([0.0, 1064.0, 2500.0]), "ct")
    air = rng.normal(24.0, 10.0, 10_000)                        # HU + 1024: air with noise
    body = rng.normal(1064.0, 12.0, 3_000)                      # ... and soft tissue
    with pytest.raises(InputError, match="HU \\+ 1024"):
        check_ct_in_hu(np.concatenate([air, body, [2500.0]]), "ct")
    with pytest.raises(InputError, match="HU \\+ 1024"):   # -2000 padding outside the circle
        check_ct_in_hu(np.concatenate([np.full(4_000, -2000.0), air, body]), "ct")
    check_ct_in_hu(np.concatenate([air, body]) - 1024.0, "ct")  # the same in HU
    check_ct_in_hu(np.concatenate([np.full(900, 50.0), np.full(100, -100.0), [1600.0]]),
                   "ct")                                        # cropped to the body: fat
