"""Silent wrong doses found by a bad-input sweep (session 7), refused or said: the frames'
JSON sidecars against ``voxdose tia``'s options, a TIA's nuclide against ``voxdose dose
--nuclide``, the CT's sidecar (unit, acquisition time) against its time point, a model
asked for with too few time points. Tiny hand-made inputs (4^3 voxels)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from voxdose.cli.app import main
from voxdose.core.errors import StudyError
from voxdose.core.grid import Grid, Image
from voxdose.io.sitk_adapter import read_image, read_sidecar, sidecar_path, write_image
from voxdose.study.load import load_study

GRID = Grid.from_spacing((4, 4, 4), (4.0, 4.0, 4.0))
LAM_LU177_H = math.log(2) / (574300.8 / 3600.0)
TIMES_H = (4.0, 24.0, 48.0, 168.0)


def _image(path, value, unit, quantity, **sidecar):
    write_image(path, Image(np.full(GRID.shape, float(value)), GRID, quantity, unit),
                sidecar=sidecar or None)
    return path


def _frames(folder, times=TIMES_H, scale=1.0, **sidecar):
    """One Bq/mL frame per time (Lu-177 washout, half-life 60 h), x ``scale``."""
    return [_image(folder / f"f{i}.nii.gz", scale * 1e5 * math.exp(-math.log(2) * t / 60.0),
                   "Bq/mL", "activity concentration", time_h=t, **sidecar)
            for i, t in enumerate(times)]


def _run(args, capsys):
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr()


def _tia(frames, times, out, capsys, *extra):
    return _run(["tia", *frames, "--times-h", ",".join(f"{t:g}" for t in times),
                 "--nuclide", "Lu-177", "--out", out, "--device", "cpu", *extra], capsys)


def _one_error(rc, cap, *words):
    assert rc == 2, cap.out + cap.err
    assert cap.err.startswith("voxdose: error:") and cap.err.strip().count("\n") == 0
    for w in words:
        assert w in cap.err, cap.err


def test_tia_refuses_times_and_nuclide_its_frames_sidecars_contradict(tmp_path, capsys):
    frames = _frames(tmp_path)
    out = tmp_path / "t.nii.gz"
    rc, cap = _tia(frames, TIMES_H, out, capsys)
    assert rc == 0, cap.err
    wrong = (*TIMES_H[:-1], 100.0)  # the last frame's sidecar says 168 h
    rc, cap = _tia(frames, wrong, tmp_path / "x.nii.gz", capsys)
    _one_error(rc, cap, "f3.nii.gz", "168 h", "100 h")
    assert not (tmp_path / "x.nii.gz").exists()
    car = sidecar_path(frames[1])
    car.write_text(json.dumps({**json.loads(car.read_text()), "nuclide": "Y-90"}))
    rc, cap = _tia(frames, TIMES_H, tmp_path / "x.nii.gz", capsys)
    _one_error(rc, cap, "f1.nii.gz", "Y-90", "Lu-177")
    assert not (tmp_path / "x.nii.gz").exists()


def test_tia_undoes_a_decay_correction_its_sidecar_states(tmp_path, capsys):
    """Frames decay-corrected to the administration (stored A(t) e^(lambda t)) give the TIA
    of the uncorrected frames, and the correction is said in the TIA's sidecar."""
    plain = _frames(tmp_path / "plain" if (tmp_path / "plain").mkdir() is None else None)
    corr = tmp_path / "corr"
    corr.mkdir()
    frames = [_image(corr / f"f{i}.nii.gz",
                     read_image(p).data.flat[0] * math.exp(LAM_LU177_H * t), "Bq/mL",
                     "activity concentration", time_h=t, decay_corrected=True)
              for i, (p, t) in enumerate(zip(plain, TIMES_H))]
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    assert _tia(plain, TIMES_H, a, capsys)[0] == 0
    rc, cap = _tia(frames, TIMES_H, b, capsys)
    assert rc == 0, cap.err
    assert np.allclose(read_image(b).data, read_image(a).data, rtol=1e-5)
    notes = read_sidecar(b)["warnings"]
    assert sum("decay-corrected to the administration" in w for w in notes) == 4
    assert "warnings" not in read_sidecar(a)


def test_a_model_asked_for_with_too_few_time_points(tmp_path, capsys):
    frames = _frames(tmp_path, TIMES_H[:3])
    rc, cap = _tia(frames, TIMES_H[:3], tmp_path / "m.nii.gz", capsys, "--model", "mono")
    _one_error(rc, cap, "--model mono needs at least 4 time points", "got 3")
    assert not (tmp_path / "m.nii.gz").exists()
    rc, cap = _tia(frames, TIMES_H[:3], tmp_path / "a.nii.gz", capsys)  # auto: said
    assert rc == 0 and "no model can be fitted" in cap.out
    assert any("no model can be fitted" in w for w in read_sidecar(tmp_path / "a.nii.gz")
               ["warnings"])
    rc, cap = _tia(_frames(tmp_path / "four" if (tmp_path / "four").mkdir() is None else None),
                   TIMES_H, tmp_path / "f.nii.gz", capsys, "--model", "mono")
    assert rc == 0 and "no model" not in cap.out


def test_dose_refuses_a_tia_of_another_nuclide_and_a_ct_not_in_hu(tmp_path, capsys):
    frames = _frames(tmp_path)
    tia = tmp_path / "t.nii.gz"
    assert _tia(frames, TIMES_H, tia, capsys)[0] == 0
    assert read_sidecar(tia)["nuclide"] == "Lu-177"
    out = tmp_path / "d.nii.gz"
    rc, cap = _run(["dose", tia, "--nuclide", "Y-90", "--out", out, "--device", "cpu",
                    "--kernel-radius-mm", "10"], capsys)
    _one_error(rc, cap, str(tia), "Lu-177", "--nuclide is Y-90")
    assert not out.exists()
    rho = _image(tmp_path / "rho.nii.gz", 1.0, "g/cm3", "density")
    rc, cap = _run(["dose", tia, "--nuclide", "Lu-177", "--out", out, "--device", "cpu",
                    "--ct", rho, "--density-mode", "scale", "--kernel-radius-mm", "10"], capsys)
    _one_error(rc, cap, str(rho), "g/cm3", "HU")
    assert not out.exists()
    hu = _image(tmp_path / "ct.nii.gz", 0.0, "HU", "CT")
    rc, cap = _run(["dose", tia, "--nuclide", "Lu-177", "--out", out, "--device", "cpu",
                    "--ct", hu, "--density-mode", "scale", "--kernel-radius-mm", "10"], capsys)
    assert rc == 0, cap.err


def _ct_study(tmp_path, ct_sidecars):
    """Two time points (4 h, 24 h) with a SPECT and a CT each; the CTs' sidecars as given."""
    text = '[study]\nnuclide = "Lu-177"\nadministered_activity_mbq = 7400.0\n'
    for i, (t, car) in enumerate(zip((4.0, 24.0), ct_sidecars)):
        _image(tmp_path / f"s{i}.nii.gz", 1e4, "Bq/mL", "activity concentration", time_h=t)
        ct = _image(tmp_path / f"c{i}.nii.gz", 0.0, "HU", "CT")
        sidecar_path(ct).write_text(json.dumps(car))
        text += f'\n[[timepoints]]\ntime_h = {t}\nspect = "s{i}.nii.gz"\nct = "c{i}.nii.gz"\n'
    p = tmp_path / "study.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("cars, words", [
    (({"unit": "HU", "time_h": 4.0}, {"unit": "HU", "time_h": 24.0}), None),
    (({"unit": "HU", "time_h": 4.5}, {"unit": "Hounsfield units"}), None),  # 30 min apart
    (({"unit": "HU", "time_h": 24.0}, {"unit": "HU", "time_h": 4.0}),
     ("timepoints[0].ct", "24 h", "another time point")),           # the CTs swapped
    (({"unit": "g/cm3"}, {"unit": "HU"}), ("timepoints[0].ct", "'g/cm3'", "HU")),
    (({"time_h": 7.0}, {}), ("timepoints[0].ct", "7 h", "more than 2 h")),  # 3 h after
    (({"time_h": 4.0}, {"time_h": 14.5}), ("timepoints[1].ct", "nearer another")),
])
def test_the_ct_sidecar_against_its_time_point(tmp_path, cars, words):
    path = _ct_study(tmp_path, cars)
    if words is None:
        assert len(load_study(path).timepoints) == 2
        return
    with pytest.raises(StudyError) as exc:
        load_study(path)
    for w in words:
        assert w in str(exc.value)


def test_grids_that_differ_only_in_origin_or_direction_read_differently():
    """A grid-mismatch message printed two identical descriptions (the sweep: labels
    shifted 4.8 mm, a frame flipped): the origin and a non-standard direction are named."""
    a = Grid.from_spacing((4, 5, 6), (2.0, 3.0, 4.0), (1.5, 2.0, 3.0))
    b = Grid.from_spacing((4, 5, 6), (2.0, 3.0, 4.0), (1.5, 2.0, 7.8))
    flip = a.affine.copy()
    flip[:3, 2] *= -1
    c = Grid(a.shape, flip)
    assert len({a.describe(), b.describe(), c.describe()}) == 3
    assert "origin (x,y,z)=(1.5, 2, 7.8) mm" in b.describe()
    d = Grid.from_spacing((4, 5, 6), (2.0, 3.0, 4.0), (1.5, 2.0, 3.05))  # 0.05 mm apart
    assert d.describe() != a.describe()
    assert "axes" not in a.describe() and "(0, 0, 1; 0, 1, 0; -1, 0, 0)" in c.describe()


def test_a_blank_frame_is_refused(tmp_path, capsys):
    """A frame with no voxel above 0 (the sweep: spect_024h zeroed gave the kidney 0.34
    instead of 5.61 Gy with only a warning) is an error in `tia` and in a run's assembly."""
    from voxdose.core.errors import InputError
    from voxdose.imaging.checks import check_not_blank

    frames = _frames(tmp_path)
    _image(frames[1], 0.0, "Bq/mL", "activity concentration", time_h=TIMES_H[1])
    rc, cap = _tia(frames, TIMES_H, tmp_path / "t.nii.gz", capsys)
    _one_error(rc, cap, "f1.nii.gz", "no activity")
    assert not (tmp_path / "t.nii.gz").exists()
    with pytest.raises(InputError, match="no activity"):
        check_not_blank(np.zeros((2, 2, 2)), "s")
    check_not_blank(np.array([0.0, 1e-30]), "s")  # any activity at all: accepted


def test_one_frame_for_two_time_points_is_refused(tmp_path, capsys):
    """The same SPECT named for two time points (the sweep: kidney -16 %, exit 0) is an
    error in a study and in `tia`."""
    frames = _frames(tmp_path)
    rc, cap = _tia([frames[0], frames[1], frames[1], frames[3]], TIMES_H,
                   tmp_path / "t.nii.gz", capsys)
    _one_error(rc, cap, "f1.nii.gz", "frame 2 and frame 3")
    text = '[study]\nnuclide = "Lu-177"\nadministered_activity_mbq = 7400.0\n'
    for t, f in ((4.0, "f0.nii.gz"), (24.0, "f1.nii.gz"), (48.0, "./f1.nii.gz")):
        text += f'\n[[timepoints]]\ntime_h = {t}\nspect = "{f}"\n'
    (tmp_path / "study.toml").write_text(text)
    with pytest.raises(StudyError, match=r"timepoints\[1\] and timepoints\[2\] name the same"):
        load_study(tmp_path / "study.toml")
