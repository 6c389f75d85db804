"""Bad input: one clear line on stderr, exit code 2, no partial results."""

import re
import shutil

import numpy as np
import pytest

from voxdose.cli.app import main
from voxdose.core.grid import Grid, LabelMap
from voxdose.io.sitk_adapter import write_labels


@pytest.fixture()
def study_copy(small_study, tmp_path):
    dst = tmp_path / "study"
    shutil.copytree(small_study.parent, dst)
    return dst / "study.toml"


def _run_expect_error(study, tmp_path, capsys, pattern):
    out = tmp_path / "results"
    rc = main(["run", str(study), "--out", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert rc == 2
    assert captured.out == ""  # nothing drawn before the error
    assert len(err.splitlines()) == 1, err
    assert re.search(pattern, err), err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".results")]
    return err


def _edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_missing_image(study_copy, tmp_path, capsys):
    (study_copy.parent / "spect_024h.nii.gz").unlink()
    _run_expect_error(study_copy, tmp_path, capsys, r"timepoints\[2\]\.spect.*not found")


def test_unknown_nuclide(study_copy, tmp_path, capsys):
    _edit(study_copy, 'nuclide = "Lu-177"', 'nuclide = "Lu-999"')
    _run_expect_error(study_copy, tmp_path, capsys, r"nuclide 'Lu-999'")


def test_non_increasing_times(study_copy, tmp_path, capsys):
    _edit(study_copy, "time_h = 48.0", "time_h = 20.0")
    # the frame's JSON sidecar says 48 h too (else: a contradiction, study/sidecars.py)
    _edit(study_copy.parent / "spect_048h.json", '"time_h": 48.0', '"time_h": 20.0')
    _run_expect_error(study_copy, tmp_path, capsys, r"strictly increasing")


def test_label_grid_mismatch(study_copy, tmp_path, capsys):
    g = Grid.from_spacing((10, 10, 10), (5.0, 5.0, 5.0))
    write_labels(study_copy.parent / "labels.nii.gz",
                 LabelMap(np.ones(g.shape, dtype=np.int32), g, {1: "body"}))
    _run_expect_error(study_copy, tmp_path, capsys, r"labels grid .* does not match")


def test_negative_activity_key(study_copy, tmp_path, capsys):
    _edit(study_copy, "administered_activity_mbq = 7400.0", "administered_activity_mbq = -1")
    _run_expect_error(study_copy, tmp_path, capsys, r"administered_activity_mbq.*> 0")


def test_not_toml(tmp_path, capsys):
    bad = tmp_path / "study.toml"
    bad.write_text("this is [not toml")
    _run_expect_error(bad, tmp_path, capsys, r"not valid TOML")


def test_missing_study_file(tmp_path, capsys):
    _run_expect_error(tmp_path / "nope.toml", tmp_path, capsys, r"study file not found")


def test_gpu_requested_without_gpu_is_clear_error(study_copy, tmp_path, capsys):
    from voxdose.core.backend import gpu_available

    if gpu_available():
        pytest.skip("a GPU is present")
    out = tmp_path / "results"
    rc = main(["run", str(study_copy), "--out", str(out), "--device", "gpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "--device gpu" in err and not out.exists()


def test_help_mentions_units(capsys):
    rc = main(["run", "--help"])
    out = capsys.readouterr().out
    assert rc == 0 and "hours" in out


def test_frames_on_different_grids_without_cts(study_copy, tmp_path, capsys):
    """Without CTs, SPECT frames on different grids cannot be registered reliably."""
    from voxdose.core.grid import Image
    from voxdose.io.sitk_adapter import write_image

    tps = "".join(f'[[timepoints]]\ntime_h = {t}\nspect = "spect_{t:03d}h.nii.gz"\n\n'
                  for t in (1, 4, 24, 48, 168))
    study_copy.write_text('[study]\nnuclide = "Lu-177"\nadministered_activity_mbq = 7400.0'
                          "\n\n" + tps)
    g = Grid.from_spacing((10, 12, 14), (7.0, 7.0, 7.0), (-40.0, -40.0, -40.0))
    write_image(study_copy.parent / "spect_024h.nii.gz", Image(np.ones(g.shape), g),
                dtype=np.float32)
    _run_expect_error(study_copy, tmp_path, capsys, r"has no CTs to register with")


def test_missing_user_dpk_table(study_copy, tmp_path, capsys):
    study_copy.write_text(study_copy.read_text() + '\n[dose]\ndpk = "nope.csv"\n')
    _run_expect_error(study_copy, tmp_path, capsys, r"dose\.dpk.*not found")


def test_malformed_user_dpk_table(study_copy, tmp_path, capsys):
    (study_copy.parent / "bad.csv").write_text("radius,value\n1,2\n")
    study_copy.write_text(study_copy.read_text() + '\n[dose]\ndpk = "bad.csv"\n')
    _run_expect_error(study_copy, tmp_path, capsys, r"bad\.csv")


def test_ctrl_c_exits_130_and_keeps_earlier_results(study_copy, tmp_path, capsys, monkeypatch):
    """Ctrl-C during the run: exit 130, one line, the folder of an earlier run untouched."""
    import voxdose.pipeline.stages as stages

    out = tmp_path / "results"
    out.mkdir()
    (out / "dvh.csv").write_text("earlier run\n")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stages, "assemble_series", interrupted)
    rc = main(["run", str(study_copy), "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 130
    assert err.splitlines()[-1].startswith("voxdose: interrupted")
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["dvh.csv"]
    assert (out / "dvh.csv").read_text() == "earlier run\n"


def test_interrupt_while_writing_leaves_no_partial_results(tmp_path):
    """Ctrl-C inside the staged results folder (while files are written): the staging
    folder is removed and an earlier results folder is left exactly as it was."""
    import pytest

    from voxdose.io.atomic import staged_directory

    out = tmp_path / "results"
    out.mkdir()
    (out / "dvh.csv").write_text("earlier run\n")
    with pytest.raises(KeyboardInterrupt), staged_directory(out) as stage:
        (stage / "dvh.csv").write_text("half of a new run\n")
        raise KeyboardInterrupt
    assert sorted(p.name for p in out.iterdir()) == ["dvh.csv"]
    assert (out / "dvh.csv").read_text() == "earlier run\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_density_mode_refuses_a_reference_ct_without_its_rescale_intercept(study_copy,
                                                                           tmp_path, capsys):
    """voxdose run --density-mode scale with the reference CT stored as HU + 1024 (no
    rescale intercept): refused at validation, naming the file (soft tissue would read as
    1.6 g/cm^3)."""
    from voxdose.io.sitk_adapter import read_image, write_image

    ct_path = study_copy.parent / "ct_001h.nii.gz"
    ct = read_image(ct_path)
    write_image(ct_path, ct.with_data(np.asarray(ct.data, dtype=np.float64) + 1024.0),
                dtype=np.int16, sidecar={"time_h": 1.0})
    out = tmp_path / "results"
    rc = main(["run", str(study_copy), "--out", str(out), "--device", "cpu",
               "--density-mode", "scale"])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert re.search(r"ct_001h\.nii\.gz: almost no CT value below -50 HU .*HU \+ 1024", err), err
    assert not out.exists()
