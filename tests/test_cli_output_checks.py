"""Issue 12, the command line: every bad input refused up front, in one line, exit 2, no
traceback, nothing written; outputs staged so a failure leaves an earlier run's files intact;
``.mhd`` output names its final ``.raw`` and leaves no temporary files."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import numpy as np
import pytest

from voxdose.cli.app import main
from voxdose.core.errors import InputError
from voxdose.core.grid import Grid, Image, LabelMap
from voxdose.io.sitk_adapter import read_image, write_image, write_labels

GRID = Grid.from_spacing((6, 6, 6), (4.0, 4.0, 4.0))
TINY = Grid.from_spacing((4, 4, 4), (1e-4, 1e-4, 1e-4))  # 0.1 um voxels


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).rglob(".*"))


def _expect_error(capsys, argv, pattern, absent=()):
    """rc 2, one line 'voxdose: error: ...' matching ``pattern``, no traceback, and none of
    ``absent`` exists."""
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert rc == 2, (rc, err)
    assert "Traceback" not in cap.err + cap.out
    assert len(err.splitlines()) == 1, err
    assert err.startswith("voxdose: error: "), err
    assert re.search(pattern, err), err
    for p in absent:
        assert not os.path.lexists(p), p
    return err


@pytest.fixture()
def images(tmp_path):
    """A TIA map (decays), a dose map (Gy), labels, three activity frames (Bq/mL)."""
    d = tmp_path / "in"
    tia = np.zeros(GRID.shape)
    tia[2:4, 2:4, 2:4] = 1e9
    write_image(d / "tia.nii.gz", Image(tia, GRID, "time-integrated activity",
                                        "Bq*s per voxel (decays)"))
    write_image(d / "dose.nii.gz", Image(tia * 1e-9, GRID, "absorbed dose", "Gy"))
    lab = np.zeros(GRID.shape, dtype=np.int32)
    lab[1:5, 1:5, 1:5] = 1
    write_labels(d / "labels.nii.gz", LabelMap(lab, GRID, {1: "organ"}))
    frames = []
    for i, t_h in enumerate((1.0, 24.0, 96.0)):
        a = 100.0 * (1.0 + np.arange(GRID.size).reshape(GRID.shape)) * np.exp(-t_h / 60.0)
        frames.append(write_image(d / f"f{i}.nii.gz", Image(a, GRID, "activity concentration",
                                                             "Bq/mL")))
    write_image(d / "tiny.nii.gz", Image(np.ones(TINY.shape), TINY, "time-integrated "
                                         "activity", "Bq*s per voxel (decays)"))
    return {"dir": d, "tia": d / "tia.nii.gz", "dose": d / "dose.nii.gz",
            "labels": d / "labels.nii.gz", "frames": frames, "tiny": d / "tiny.nii.gz"}


def _tia_args(images, out, *extra):
    return ["tia", *images["frames"], "--times-h", "1,24,96", "--nuclide", "Lu-177",
            "--out", out, "--device", "cpu", *extra]


# ------------------------------------------------------------------ output locations
@pytest.fixture()
def a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("not a folder\n")
    return f


def _writers(images, out_file, out_dir):
    """Every command that writes, with its output pointed at ``out_file`` (a file output) or
    ``out_dir`` (a folder output)."""
    i = images
    return {
        "tia": _tia_args(i, out_file / "tia.nii.gz"),
        "tia --sigma-out": _tia_args(i, i["dir"] / "ok.nii.gz", "--sigma-out",
                                     out_file / "s.nii.gz"),
        "dose": ["dose", i["tia"], "--nuclide", "Lu-177", "--out", out_file / "d.nii.gz"],
        "dvh": ["dvh", i["dose"], i["labels"], "--out", out_file / "dvh.csv"],
        "dvh --plot": ["dvh", i["dose"], i["labels"], "--out", i["dir"] / "ok.csv",
                       "--plot", out_file / "dvh.png"],
        "plan": ["plan", "--gy-per-gbq", "kidneys=1", "--limit", "kidneys=23", "--out",
                 out_file / "plan.json"],
        "kernel": ["kernel", "Lu-177", "--voxel-mm", "4", "--out", out_file / "k.nii.gz"],
        "dpk": ["dpk", "Lu-177", "--out", out_file / "dpk.csv"],
        "dpk-plot": ["dpk-plot", "--out", out_file / "dpk.png"],
        "rtdose": ["rtdose", i["dose"], "--out", out_file / "rd.dcm"],
        "compare": ["compare", i["tia"], "--out", out_dir],
        "run": ["run", i["tia"], "--out", out_dir],  # any existing file passes as STUDY here
        "export-dicom": ["export-dicom", i["tia"], out_dir],
        "demo": ["demo", out_dir, "--small"],
    }


@pytest.mark.parametrize("command", ["tia", "tia --sigma-out", "dose", "dvh", "dvh --plot",
                                     "plan", "kernel", "dpk", "dpk-plot", "rtdose", "compare",
                                     "run", "export-dicom", "demo"])
def test_output_under_a_file_is_refused_up_front(images, a_file, capsys, command):
    """Output folder under a file (or a folder output that is a file): refused before any
    work, naming the file."""
    argv = _writers(images, a_file, a_file)[command]
    _expect_error(capsys, argv, rf"{re.escape(str(a_file.name))}.* a file, not a folder")
    assert a_file.read_text() == "not a folder\n"


@pytest.mark.parametrize("command", ["dose", "kernel", "dpk-plot", "rtdose", "tia"])
def test_output_file_that_is_a_folder(images, tmp_path, capsys, command):
    folder = tmp_path / "out.d"
    folder.mkdir()
    argv = {
        "dose": ["dose", images["tia"], "--nuclide", "Lu-177", "--out", folder],
        "kernel": ["kernel", "Lu-177", "--voxel-mm", "4", "--out", folder],
        "dpk-plot": ["dpk-plot", "--out", folder],
        "rtdose": ["rtdose", images["dose"], "--out", folder],
        "tia": _tia_args(images, folder),
    }[command]
    _expect_error(capsys, argv, r"out\.d: is a folder; give a file name")
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("command", ["dose", "compare", "dvh", "run"])
def test_output_not_writable(images, tmp_path, capsys, monkeypatch, command):
    """A folder without write permission (simulated: the tests may run as root, whom
    permissions do not stop) is named before any work."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: (
        False if Path(p) == locked and mode & os.W_OK else real(p, mode, **k)))
    argv = {"dose": ["dose", images["tia"], "--nuclide", "Lu-177", "--out",
                     locked / "sub" / "d.nii.gz"],
            "compare": ["compare", images["tia"], "--out", locked / "results"],
            "dvh": ["dvh", images["dose"], images["labels"], "--out", locked / "d.csv"],
            "run": ["run", images["tia"], "--out", locked]}[command]
    _expect_error(capsys, argv, r"locked is not writable")
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root is not stopped by file permissions")
def test_output_not_writable_real_permissions(images, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        _expect_error(capsys, ["dose", images["tia"], "--nuclide", "Lu-177", "--out",
                               locked / "d.nii.gz"], r"locked is not writable")
    finally:
        locked.chmod(0o755)


def test_output_checked_before_any_work(small_study, tmp_path, a_file, capsys, monkeypatch):
    """`run` with a bad --out fails before the study is even read (no 20 s of work first)."""
    import voxdose.study.load as load

    def never(*a, **k):
        raise AssertionError("the study was read before the output location was checked")

    monkeypatch.setattr(load, "load_study", never)
    _expect_error(capsys, ["run", small_study, "--out", a_file / "results"],
                  r"afile is a file")


# ------------------------------------------------------------------ inputs
def test_study_path_is_a_folder(small_study, capsys):
    _expect_error(capsys, ["run", small_study.parent], r"is a folder, not a study file; did "
                  r"you mean .*study\.toml\?")


def test_symlink_loop(tmp_path, images, capsys):
    a, b = tmp_path / "loop_a", tmp_path / "loop_b"
    a.symlink_to(b)
    b.symlink_to(a)
    _expect_error(capsys, ["run", a], r"loop_a: a broken symbolic link or a symlink loop")
    _expect_error(capsys, ["dose", a, "--nuclide", "Lu-177", "--out", tmp_path / "d.nii.gz"],
                  r"loop_a: a broken symbolic link or a symlink loop", [tmp_path / "d.nii.gz"])
    _expect_error(capsys, ["compare", images["tia"], "--out", a], r"symlink loop")


@pytest.mark.parametrize("text, pattern", [
    ("{bad json", r"dose\.json of image .*dose\.nii\.gz is not valid JSON \(.* line 1, "
                  r"column 2\)"),
    ("[1, 2]", r"dose\.json of image .* holds a JSON list, not an object"),
])
def test_malformed_sidecar_json(images, tmp_path, capsys, text, pattern):
    (images["dir"] / "dose.json").write_text(text)
    out = tmp_path / "res" / "dvh.csv"
    _expect_error(capsys, ["dvh", images["dose"], images["labels"], "--out", out], pattern,
                  [out.parent])


def test_study_table_that_is_not_a_table(small_study, tmp_path, capsys):
    text = small_study.read_text().replace('[patient]\nsex = "male"', "")
    assert "[patient]" not in text
    bad = tmp_path / "study.toml"  # refused on its tables, before any file it names is read
    bad.write_text("patient = 3\n" + text)
    _expect_error(capsys, ["run", bad, "--out", tmp_path / "res"],
                  r"\[patient\] must be a table, got patient = 3", [tmp_path / "res"])


# ------------------------------------------------------------------ kernel bounds
def test_kernel_voxel_below_lower_bound_refused_at_once(tmp_path, capsys):
    import time

    t0 = time.perf_counter()
    _expect_error(capsys, ["kernel", "Lu-177", "--voxel-mm", "1e-4", "--out",
                           tmp_path / "k.nii.gz"],
                  r"voxel size 0\.0001x0\.0001x0\.0001 mm \(--voxel-mm\) is below .* 0\.01 mm",
                  [tmp_path / "k.nii.gz"])
    assert time.perf_counter() - t0 < 5.0  # it hung for > 15 min before


def test_kernel_near_field_work_refused_with_numbers(tmp_path, capsys):
    _expect_error(capsys, ["kernel", "Lu-177", "--voxel-mm", "0.01", "--out",
                           tmp_path / "k.nii.gz"],
                  r"needs [\d,]+ near-field integrations .* more than the 20,000 .* at least "
                  r"0\.0\d+ mm", [tmp_path / "k.nii.gz"])


def test_kernel_that_does_not_fit_in_memory(tmp_path, capsys):
    _expect_error(capsys, ["kernel", "Lu-177", "--voxel-mm", "1", "--half-width", "3000",
                           "--out", tmp_path / "k.nii.gz"],
                  r"6001 x 6001 x 6001 voxels .* needs about [\d.]+ TB of memory .* available",
                  [tmp_path / "k.nii.gz"])


def test_check_kernel_build_memory_bound():
    from voxdose.kernels.extent import check_kernel_build, kernel_build_cost
    from voxdose.kernels.point import load_point_kernel

    pk = load_point_kernel("Lu-177")
    cost = kernel_build_cost(pk, (4.0, 4.0, 4.0), 40.0)
    assert cost["shape_zyx"] == (21, 21, 21) and cost["near_field_classes"] == 10  # C(5,3)
    check_kernel_build(pk, (4.0, 4.0, 4.0), 40.0, available_bytes=cost["bytes"])
    with pytest.raises(InputError, match=r"21 x 21 x 21 voxels .* available"):
        check_kernel_build(pk, (4.0, 4.0, 4.0), 40.0, available_bytes=cost["bytes"] - 1)


@pytest.mark.parametrize("command", ["dose", "compare"])
def test_tiny_voxels_of_an_image_refused(images, tmp_path, capsys, command):
    out = tmp_path / "res"
    argv = {"dose": ["dose", images["tiny"], "--nuclide", "Lu-177", "--out",
                     out / "d.nii.gz"],
            "compare": ["compare", images["tiny"], "--out", out]}[command]
    _expect_error(capsys, argv, r"voxel size 0\.0001x0\.0001x0\.0001 mm \(the voxels of "
                  r".*tiny\.nii\.gz\) is below", [out])


# ------------------------------------------------------------------ option values
@pytest.mark.parametrize("extra, pattern", [
    (["--background-fraction", "-0.1"], r"--background-fraction must be a finite number >= 0"),
    (["--background-fraction", "1.5"], r"--background-fraction must be < 1"),
    (["--frame-noise", "-1"], r"--frame-noise must be a finite number >= 0"),
    (["--after-h", "nan"], r"--after-h must be a finite number"),
])
def test_tia_option_values(images, tmp_path, capsys, extra, pattern):
    out = tmp_path / "res" / "tia.nii.gz"
    _expect_error(capsys, _tia_args(images, out, *extra), pattern, [out.parent])


@pytest.mark.parametrize("argv, pattern", [
    (["demo", "{tmp}/demo", "--activity-mbq", "0"], r"--activity-mbq must be a finite number "
                                                    r"> 0 MBq"),
    (["demo", "{tmp}/demo", "--activity-mbq", "nan"], r"--activity-mbq must be .*got nan"),
    (["demo", "{tmp}/demo", "--seed", "-1"], r"--seed must be an integer >= 0"),
    (["demo", "{tmp}/demo", "--density-mode", "foo"], r"unknown density mode 'foo'"),
    (["run", "{tia}", "--out", "{tmp}/demo", "--density-mode", "foo"], r"unknown density mode"),
    (["dose", "{tia}", "--nuclide", "Lu-177", "--out", "{tmp}/demo/d.nii.gz",
      "--kernel-radius-mm", "0"], r"voxdose dose: Invalid value for '--kernel-radius-mm'"),
    (["dose", "{tia}", "--nuclide", "Lu-177", "--out", "{tmp}/demo/d.nii.gz",
      "--precision", "float16"], r"--precision float16: choose one of float32, float64"),
    (["dose", "{tia}", "--nuclide", "Lu-177", "--out", "{tmp}/demo/d.nii.gz",
      "--memory-budget-gb", "-1"], r"Invalid value for '--memory-budget-gb'"),
    (["dose", "{tia}", "--nuclide", "Lu-177", "--out", "{tmp}/demo/d.txt"],
     r"--out .*d\.txt: the file name must end with \.nii\.gz, \.nii, \.mhd or \.nrrd"),
    (["dose", "{tia}", "--nuclide", "Lu-177", "--out", "{tia}"], r"would overwrite an input"),
    (["compare", "{tia}", "--out", "{tmp}/demo", "--shells-mm", "1,0"],
     r"--shells-mm must be a finite number > 0 mm; got 0"),
    (["compare", "{tia}", "--out", "{tmp}/demo", "--shells-mm", "1,x"], r"'x' is not a number"),
    (["compare", "{tia}", "--out", "{tmp}/demo", "--nuclides", ","], r"--nuclides: give at "
                                                                       r"least one nuclide"),
    (["kernel", "Lu-177", "--voxel-mm", "0", "--out", "{tmp}/demo/k.nii.gz"],
     r"--voxel-mm must be one positive number"),
    (["kernel", "Lu-177", "--voxel-mm", "4", "--half-width", "0", "--out",
      "{tmp}/demo/k.nii.gz"], r"Invalid value for '--half-width'"),
    (["dvh", "{dose}", "{labels}", "--out", "{tmp}/demo/d.csv", "--bins", "0"],
     r"Invalid value for '--bins'"),
    (["dvh", "{dose}", "{labels}", "--out", "{tmp}/demo/d.csv", "--json", "{tmp}/demo/d.csv"],
     r"--json .*d\.csv and --out .*d\.csv would write the same file"),
    (["plan", "--gy-per-gbq", "kidneys=1", "--limit", "kidneys=-5", "--out",
      "{tmp}/demo/p.json"], r"dose limit of 'kidneys'"),
    (["dpk-plot", "--out", "{tmp}/demo/x.png", "--medium", "vacuum"], r"unknown medium"),
    (["rtdose", "{dose}", "--out", "{tmp}/demo/rd.dcm", "--reference", "{tmp}/nope"],
     r"--reference .*nope: reference CT .* not found"),
    (["dose"], r"^voxdose: error: voxdose dose: Missing argument 'TIA'"),
])
def test_option_values_one_line(images, tmp_path, capsys, argv, pattern):
    fmt = {"tmp": tmp_path, "tia": images["tia"], "dose": images["dose"],
           "labels": images["labels"]}
    _expect_error(capsys, [a.format(**fmt) for a in argv], pattern, [tmp_path / "demo"])


# ------------------------------------------------------------------ staging: all or nothing
def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_tia_sigma_failure_keeps_earlier_outputs(images, tmp_path, capsys, monkeypatch):
    """TIA written, sigma failed (disk full): nothing new, the earlier run's TIA and sigma
    files stay byte for byte."""
    import voxdose.io.sitk_adapter as sitk_adapter

    res = tmp_path / "res"
    argv = _tia_args(images, res / "tia.nii.gz", "--sigma-out", res / "sigma.nii.gz")
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    capsys.readouterr()
    before = _snapshot(res)
    assert set(before) == {"tia.nii.gz", "tia.json", "sigma.nii.gz", "sigma.json"}
    real = sitk_adapter.write_image

    def full_disk(path, *a, **k):
        if Path(path).name == "sigma.nii.gz":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(sitk_adapter, "write_image", full_disk)
    argv = _tia_args(images, res / "tia.nii.gz", "--sigma-out", res / "sigma.nii.gz",
                     "--background-fraction", "0.5")
    # named by its final path, not the staging folder's
    _expect_error(capsys, argv, rf"error: {re.escape(str(res / 'sigma.nii.gz'))}: no space "
                  r"left on device; nothing was written")
    assert _snapshot(res) == before
    assert _hidden(res) == []


def test_dvh_csv_failure_keeps_earlier_outputs(images, tmp_path, capsys, monkeypatch):
    """PNG and JSON written, CSV failed: none of the three is replaced."""
    import voxdose.io.atomic as atomic

    res = tmp_path / "res"
    argv = ["dvh", images["dose"], images["labels"], "--out", res / "dvh.csv", "--json",
            res / "dvh.json", "--plot", res / "dvh.png"]
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    capsys.readouterr()
    before = _snapshot(res)
    assert set(before) == {"dvh.csv", "dvh.json", "dvh.png"}
    real = atomic.write_text

    def failing(target, text):
        if Path(target).suffix == ".csv":
            raise InputError(f"{target}: cannot write (simulated)")
        return real(target, text)

    monkeypatch.setattr(atomic, "write_text", failing)
    dose2 = images["dir"] / "dose2.nii.gz"  # another dose: new PNG and JSON if they got out
    write_image(dose2, read_image(images["dose"]).with_data(2 * read_image(images["dose"]).data))
    argv[1] = dose2
    _expect_error(capsys, argv, r"dvh\.csv: cannot write \(simulated\)")
    assert _snapshot(res) == before
    assert _hidden(res) == []


def test_rtdose_failure_leaves_no_file_and_no_folder(images, tmp_path, capsys, monkeypatch):
    import voxdose.io.dicom_write as dicom_write

    def half_written(path, *a, **k):
        Path(path).write_bytes(b"DICM half")
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))

    monkeypatch.setattr(dicom_write, "write_rt_dose", half_written)
    out = tmp_path / "new" / "sub" / "rd.dcm"
    _expect_error(capsys, ["rtdose", images["dose"], "--out", out],
                  rf"error: {re.escape(str(out))}: input/output error", [tmp_path / "new"])


def test_dose_sidecar_failure_leaves_no_image(images, tmp_path, capsys, monkeypatch):
    """The dose image and its sidecar are written together or not at all."""
    import voxdose.io.sitk_adapter as sitk_adapter

    def no_json(target, obj):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    monkeypatch.setattr(sitk_adapter, "write_json", no_json)
    out = tmp_path / "res" / "dose.nii.gz"
    _expect_error(capsys, ["dose", images["tia"], "--nuclide", "Lu-177", "--method", "ldm",
                           "--out", out, "--device", "cpu"], r"no space left", [out.parent])


def test_staged_directory_in_existing_folder_keeps_it_on_failure(tmp_path):
    from voxdose.io.atomic import staged_directory

    out = tmp_path / "results"
    out.mkdir()
    (out / "old.csv").write_text("earlier\n")
    with pytest.raises(RuntimeError), staged_directory(out) as stage:
        assert stage.parent == out  # staged inside: only the folder itself must be writable
        (stage / "old.csv").write_text("new\n")
        raise RuntimeError("boom")
    assert _snapshot(out) == {"old.csv": b"earlier\n"} and _hidden(tmp_path) == []
    new = tmp_path / "a" / "b" / "results"
    with pytest.raises(RuntimeError), staged_directory(new):
        raise RuntimeError("boom")
    assert not (tmp_path / "a").exists()  # the folders made for it are gone too


# ------------------------------------------------------------------ .mhd (issue 18)
def test_mhd_names_its_final_raw_and_leaves_no_temporary_files(tmp_path):
    out = tmp_path / "img.mhd"
    for value in (1.0, 2.0):  # the second write replaces the first
        write_image(out, Image(np.full(GRID.shape, value), GRID, "absorbed dose", "Gy"))
    header = out.read_text()
    assert re.search(r"^ElementDataFile = img\.raw$", header, re.M), header
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.json", "img.mhd", "img.raw"]
    assert float(read_image(out).data.mean()) == 2.0


def test_tia_writes_mhd_with_its_raw(images, tmp_path, capsys):
    res = tmp_path / "res"
    rc = main([str(a) for a in _tia_args(images, res / "tia.mhd", "--sigma-out",
                                         res / "sigma.mhd")])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in res.iterdir()) == ["sigma.json", "sigma.mhd", "sigma.raw",
                                                     "tia.json", "tia.mhd", "tia.raw"]
    assert "ElementDataFile = tia.raw" in (res / "tia.mhd").read_text()
    assert read_image(res / "tia.mhd").data.sum() > 0
