"""One plausibility policy for activity frames (voxdose.imaging.checks), in `run` and `tia`."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from voxdose.cli.app import main
from voxdose.core.errors import InputError
from voxdose.core.grid import Grid, Image
from voxdose.imaging import checks
from voxdose.io.sitk_adapter import read_image, write_image

LAM = math.log(2) / (6.647 * 86400)


def test_negative_noise_clipped_and_counted_substantial_refused():
    a = np.full((4, 4, 4), 10.0)
    a[0, 0, 0] = -20.0                     # 20 / 630 = 3.2 % of the positive activity
    out, rec = checks.clip_negative(a, "f.nii.gz")
    assert out.min() == 0.0 and rec["negative_voxels_clipped"] == 1
    assert rec["negative_fraction_of_positive"] == pytest.approx(20 / 630)
    a[0, 0, 1] = -20.0                     # 40 / 620 = 6.5 %: above the 5 % limit
    with pytest.raises(InputError, match=r"f\.nii\.gz: negative activity in 2 voxels"):
        checks.clip_negative(a, "f.nii.gz")
    with pytest.raises(InputError, match="negative activity"):
        checks.clip_negative(-np.abs(a), "g")  # a negated frame
    same, rec = checks.clip_negative(np.ones(3), "h")
    assert rec is None and np.array_equal(same, np.ones(3))


def test_nan_refused():
    a = np.ones((3, 3, 3))
    a[1, 1, 1] = np.nan
    with pytest.raises(InputError, match=r"x\.nii: 1 voxels are NaN"):
        checks.check_finite(a, "x.nii")


def test_fov_activity_against_the_decayed_administered_activity():
    t = 24 * 3600.0
    a0 = 7.4e9
    expected = a0 * math.exp(-LAM * t)
    assert checks.check_fov_activity(0.3 * expected, a0, LAM, t, "s") is None
    assert checks.check_fov_activity(1.49 * expected, a0, LAM, t, "s") is None
    with pytest.raises(InputError, match=r"s: .* 1.6x the administered activity"):
        checks.check_fov_activity(1.6 * expected, a0, LAM, t, "s")
    warn = checks.check_fov_activity(0.005 * expected, a0, LAM, t, "s")
    assert warn and "0.5 %" in warn


def test_resampling_loss():
    checks.check_resampling_loss(100.0, 96.0, "s")
    with pytest.raises(InputError, match="kept only 90"):
        checks.check_resampling_loss(100.0, 90.0, "s")


@pytest.fixture()
def study_copy(small_study, tmp_path):
    dst = tmp_path / "study"
    shutil.copytree(small_study.parent, dst)
    return dst / "study.toml"


def _run_error(study, tmp_path, capsys):
    out = tmp_path / "results"
    rc = main(["run", str(study), "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not out.exists()
    return err


def test_run_refuses_activity_above_the_administered(study_copy, tmp_path, capsys):
    text = study_copy.read_text()
    study_copy.write_text(text.replace("administered_activity_mbq = 7400.0",
                                       "administered_activity_mbq = 1.0"))
    err = _run_error(study_copy, tmp_path, capsys)
    assert "spect_001h" in err and "administered activity" in err


def test_run_refuses_nan_in_a_nifti_frame(study_copy, tmp_path, capsys):
    f = study_copy.parent / "spect_024h.nii.gz"
    img = read_image(f)
    data = np.array(img.data, dtype=np.float32)
    data[tuple(s // 2 for s in data.shape)] = np.nan
    write_image(f, img.with_data(data), dtype=np.float32)
    err = _run_error(study_copy, tmp_path, capsys)
    assert "spect_024h" in err and "NaN" in err


def test_tia_clips_small_negative_noise_and_records_it(tmp_path, capsys):
    g = Grid.from_spacing((3, 3, 3), (4.0, 4.0, 4.0))
    times = [1, 4, 24, 48, 168]
    paths = []
    for i, t in enumerate(times):
        a = np.full(g.shape, 1000.0 * math.exp(-LAM * t * 3600))
        if i == 2:
            a[0, 0, 0] = -0.01 * a[1, 1, 1]          # tiny reconstruction noise
        p = tmp_path / f"f{i}.nii.gz"
        write_image(p, Image(a, g, "activity concentration", "Bq/mL"), dtype=np.float64)
        paths.append(str(p))
    out = tmp_path / "tia.nii.gz"
    rc = main(["tia", *paths, "--times-h", ",".join(map(str, times)), "--nuclide", "Lu-177",
               "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "voxdose: warning:" in captured.out and "clipped to 0" in captured.out
    side = json.loads(out.with_name("tia.json").read_text())
    warnings = side.get("warnings", side.get("meta", {}).get("warnings"))
    assert warnings and any("f2.nii.gz" in w for w in warnings)


def test_truncated_nifti_refused_in_run(study_copy, tmp_path, capsys):
    f = study_copy.parent / "spect_048h.nii.gz"
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) // 2])
    err = _run_error(study_copy, tmp_path, capsys)
    assert "spect_048h" in err and "cut short" in err


def test_nifti_check_reads_the_bytes(tmp_path):
    import SimpleITK as sitk

    from voxdose.io.nifti_check import check_nifti

    a = np.ones((6, 7, 8), np.float32)
    ok = tmp_path / "ok.nii"
    sitk.WriteImage(sitk.GetImageFromArray(a), str(ok))
    check_nifti(ok)
    cut = tmp_path / "cut.nii"
    cut.write_bytes(ok.read_bytes()[:-100])
    with pytest.raises(InputError, match="cut short"):
        check_nifti(cut)
    a[2, 3, 4] = np.inf
    bad = tmp_path / "inf.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(a), str(bad))
    with pytest.raises(InputError, match="1 voxels are NaN or infinite"):
        check_nifti(bad)


def test_dose_command_refuses_a_nan_tia(tmp_path, capsys):
    """`voxdose dose` reads through read_image, which checks a NIfTI's bytes too."""
    g = Grid.from_spacing((4, 4, 4), (4.0, 4.0, 4.0))
    tia = np.full(g.shape, 1e9, dtype=np.float32)
    tia[2, 2, 2] = np.nan
    p = tmp_path / "tia.nii.gz"
    write_image(p, Image(tia, g, "time-integrated activity", "Bq*s per voxel (decays)"),
                dtype=np.float32)
    out = tmp_path / "dose.nii.gz"
    rc = main(["dose", str(p), "--nuclide", "Lu-177", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "NaN" in err and "tia.nii.gz" in err
    assert not out.exists()
