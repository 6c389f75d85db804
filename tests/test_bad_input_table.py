"""Issue 12: one table of bad inputs, every one run through the command line.

Each case builds its inputs in its own folder (tiny hand-made NIfTI files, a copy of the
small synthetic study, or small synthetic DICOM files written by the builders of
``test_dicom_bad_inputs``; no third-party files), runs ``voxdose`` with its argv and checks
what the README promises: the exit code (2; 130 for Ctrl-C), exactly one line on stderr
``voxdose: error: ...`` that names the problem (a regex) and the file or option (a
literal), no traceback, and nothing written: the case folder, inputs and an earlier run's
results included, is byte for byte what it was before the command. A few cases are merely
unusual input: they succeed with a warning that is also recorded (provenance or the
output's JSON), or read what must be read (legacy DICOM dates).
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from voxdose.cli.app import main
from voxdose.core.grid import Grid, Image, LabelMap
from voxdose.io.sitk_adapter import image_to_sitk, write_image, write_labels

# builders of the DICOM quirks and of tiny image-file studies (helpers only; no test_*)
from test_dicom_bad_inputs import (  # tests/ is on sys.path under pytest
    ACQ,
    _camera_nm,
    _ct_dicom_study,
    _edit,
    _nm,
    _planar_nm,
    _sc_whole_body,
    _toml,
    _two_timepoints,
)
from test_study_contradictions import _blobs, _study

GRID = Grid.from_spacing((6, 6, 6), (4.0, 4.0, 4.0), (-10.0, -10.0, -10.0))
TINY = Grid.from_spacing((4, 4, 4), (1e-4, 1e-4, 1e-4))  # 0.1 um voxels
TIMES_H = (1.0, 24.0, 96.0)
TIA_UNIT = "Bq*s per voxel (decays)"


# =========================================================================== the library
@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> Path:
    """Tiny image files every image-file case copies: a TIA map, a dose map, labels and
    names, three activity frames, a TIA with 0.1 um voxels, a SPECT and a non-monotone
    recovery table for pvc."""
    d = tmp_path_factory.mktemp("bad_input_lib")
    tia = np.zeros(GRID.shape)
    tia[2:4, 2:4, 2:4] = 1e9
    write_image(d / "tia.nii.gz", Image(tia, GRID, "time-integrated activity", TIA_UNIT))
    write_image(d / "dose.nii.gz", Image(tia * 1e-9, GRID, "absorbed dose", "Gy"))
    lab = np.zeros(GRID.shape, dtype=np.int32)
    lab[1:5, 1:5, 1:5] = 1
    lab[2:4, 2:4, 2:4] = 2
    write_labels(d / "labels.nii.gz", LabelMap(lab, GRID, {1: "liver", 2: "tumour"}))
    (d / "names.json").write_text(json.dumps({"1": "liver", "2": "tumour"}))
    for i, t_h in enumerate(TIMES_H):
        a = 100.0 * (1.0 + np.arange(GRID.size).reshape(GRID.shape)) * np.exp(-t_h / 60.0)
        write_image(d / f"f{i}.nii.gz", Image(a, GRID, "activity concentration", "Bq/mL"))
    write_image(d / "tiny.nii.gz", Image(np.ones(TINY.shape), TINY,
                                         "time-integrated activity", TIA_UNIT))
    spect = np.full(GRID.shape, 50.0)
    spect[2:4, 2:4, 2:4] = 400.0
    write_image(d / "spect.nii.gz", Image(spect, GRID, "activity concentration", "Bq/mL"))
    (d / "rc_bad.csv").write_text("volume_ml,recovery\n1,0.4\n5,0.3\n20,0.6\n")
    return d


@dataclass
class Env:
    """What a case's builder gets: its own folder, the library, the small study."""

    d: Path
    lib: Path
    small_study: Path

    def tiny(self) -> Path:
        """The library copied to ``d/in``."""
        dst = self.d / "in"
        shutil.copytree(self.lib, dst)
        return dst

    def study(self) -> Path:
        """The small synthetic study copied to ``d/study``; its study.toml."""
        dst = self.d / "study"
        shutil.copytree(self.small_study.parent, dst)
        return dst / "study.toml"


def _edit_text(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (old, path)
    path.write_text(text.replace(old, new, 1))


def _sitk_edit(path: Path, fn) -> None:
    """Rewrite image ``path`` as ``fn(array) -> (array, origin shift x, y, z mm)``, keeping
    its sidecar and geometry otherwise."""
    img = sitk.ReadImage(str(path))
    arr, shift = fn(sitk.GetArrayFromImage(img).copy())
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    out.SetOrigin(tuple(o + s for o, s in zip(img.GetOrigin(), shift)))
    sitk.WriteImage(out, str(path), useCompression=str(path).endswith(".gz"))


def _cut_in_half(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _nan_voxel(a):
    a = a.astype(np.float32)
    a[tuple(s // 2 for s in a.shape)] = np.nan
    return a, (0.0, 0.0, 0.0)


def _negated(a):
    return -np.abs(a), (0.0, 0.0, 0.0)


def _write_int_labels(path: Path, data: np.ndarray, grid: Grid) -> None:
    """An int32 label image (write_labels stores uint8 when it can: no negative values)."""
    sitk.WriteImage(image_to_sitk(data.astype(np.int32), grid), str(path), useCompression=True)


def _tia_argv(*extra):
    return ("tia", "{in}/f0.nii.gz", "{in}/f1.nii.gz", "{in}/f2.nii.gz", "--times-h",
            "1,24,96", "--nuclide", "Lu-177", "--device", "cpu", *extra)


def _run_argv(study="{study}", out="{d}/results"):
    return ("run", study, "--out", out, "--device", "cpu")


def _earlier(argv) -> Callable[[Env, dict], None]:
    """A successful earlier run of ``argv`` (formatted like the case's) into the folder
    the case then fails in."""
    def run(env: Env, fmt: dict) -> None:
        rc = main([a.format(**fmt) for a in argv])
        assert rc == 0, "the earlier run failed"
    return run


# =========================================================================== builders
def b_tiny(env: Env) -> dict:
    return {"in": env.tiny()}


def b_study(edit=None) -> Callable[[Env], dict]:
    """The small study copied; ``edit(folder, study_toml)`` changes it."""
    def build(env: Env) -> dict:
        toml = env.study()
        if edit is not None:
            edit(toml.parent, toml)
        return {"study": toml}
    return build


def b_tiny_study(sidecars, **kw) -> Callable[[Env], dict]:
    """A hand-made 4^3 study (test_study_contradictions._study) in ``d``."""
    def build(env: Env) -> dict:
        return {"study": _study(env.d, sidecars, **kw)}
    return build


def b_tiny_study_edit(old: str, new: str, sidecars=(None, None), times=(1.0, 24.0),
                      **kw) -> Callable[[Env], dict]:
    def build(env: Env) -> dict:
        p = _study(env.d, list(sidecars), times=times, **kw)
        _edit_text(p, old, new)
        return {"study": p}
    return build


def b_tiny_study_append(text: str, sidecars=(None, None), times=(1.0, 24.0), **kw):
    def build(env: Env) -> dict:
        p = _study(env.d, list(sidecars), times=times, **kw)
        p.write_text(p.read_text() + text)
        return {"study": p}
    return build


def b_dicom(make) -> Callable[[Env], dict]:
    """``make(d) -> study.toml`` (or a folder for dicom-info)."""
    def build(env: Env) -> dict:
        return {"study": make(env.d)}
    return build


def _dicom_projections(d):
    _camera_nm(d / "proj", recon=False)
    return _toml(d, 'nuclide = "Lu-177"', ['spect = "proj"\ntime_h = 4.0'])


def _dicom_energy_windows(d):
    f = _camera_nm(d / "r", recon=True, heads=1, views=5)
    _edit(f, EnergyWindowVector=[1] * 5 + [2] * 5, NumberOfFrames=10,
          SliceVector=list(range(1, 6)) * 2, DetectorVector=[1] * 10, RotationVector=[1] * 10,
          NumberOfEnergyWindows=2, PixelData=np.zeros((10, 4, 4), "<u2").tobytes())
    return _toml(d, 'nuclide = "Lu-177"', ['spect = "r"\ntime_h = 4.0'])


def _dicom_secondary_capture(d):
    _sc_whole_body(d / "wb")
    return _toml(d, 'nuclide = "Lu-177"', ['spect = "wb"\ntime_h = 4.0'])


def _dicom_planar(d):
    _planar_nm(d / "wb")
    return _toml(d, 'nuclide = "Lu-177"', ['spect = "wb"\ntime_h = 4.0'])


def _dicom_single_slice(d):
    _nm(d / "nm", multiframe=False)
    for f in sorted((d / "nm").iterdir())[1:]:
        f.unlink()
    return _toml(d, 'nuclide = "Lu-177"', ['spect = "nm"\ntime_h = 4.0'])


def _dicom_truncated(d):
    f = _nm(d / "nm", multiframe=False)[1]
    f.write_bytes(f.read_bytes()[:-20])
    return _toml(d, 'nuclide = "Lu-177"', ['spect = "nm"\ntime_h = 4.0'])


def _dicom_bad_date_no_time(d):
    _edit(_two_timepoints(d), AcquisitionDate="01/03/2024")
    return _toml(d, "", ['spect = "t1"', 'spect = "t2"'])


def _dicom_bad_date_with_time(d):
    _edit(_two_timepoints(d, decay_correction="START"), AcquisitionDate="2024-03-01")
    return _toml(d, "", ['spect = "t1"\ntime_h = 4.0', 'spect = "t2"'])


def _dicom_rtstruct_outside(d):
    return _ct_dicom_study(d, [24.0 + 4 * k for k in range(10)])


def _dicom_info_one_bad(d):
    _nm(d / "exam" / "recon")
    _camera_nm(d / "exam" / "proj", recon=False)
    return d / "exam"


def _dicom_info_legacy_dates(d):
    f = _nm(d / "exam" / "legacy")[0]
    _edit(f, AcquisitionDate=ACQ.strftime("%Y.%m.%d"), AcquisitionTime=ACQ.strftime("%H:%M:%S"))
    return d / "exam"


def _dicom_units_contradiction(d):
    _nm(d / "t1")
    _nm(d / "t2", 26.0)
    p = _toml(d, "", ['spect = "t1"', 'spect = "t2"'])
    p.write_text(p.read_text() + '\n[spect]\nunits = "counts"\n')
    return p


def _dicom_cts_swapped(d):
    """Two SPECT/CTs (NM and CT sharing a FrameOfReferenceUID each), the ct entries
    swapped."""
    from voxdose.io.dicom_write import write_ct

    for k, t_h in ((1, 4.0), (2, 26.0)):
        for_uid = f"1.2.826.0.1.3680043.8.498.{k}"
        write_ct(d / f"tp0{k}" / "ct", np.zeros(GRID.shape), GRID, for_uid=for_uid)
        _nm(d / f"tp0{k}" / "nm", t_h, for_uid=for_uid)
    return _toml(d, "", ['spect = "tp01/nm"\nct = "tp02/ct"',
                         'spect = "tp02/nm"\nct = "tp01/ct"'])


def _dicom_activity_contradiction(d):
    _nm(d / "t1")  # RadionuclideTotalDose 7400 MBq
    _nm(d / "t2", 26.0)
    return _toml(d, "administered_activity_mbq = 7000.0", ['spect = "t1"', 'spect = "t2"'])


def _dicom_series_disagree_on_activity(d):
    _nm(d / "t1")
    _nm(d / "t2", 26.0, total_dose_bq=7.0e9)
    return _toml(d, "", ['spect = "t1"', 'spect = "t2"'])


def _dicom_frame_duration_contradiction(d):
    _nm(d / "t1", units="CNTS")  # 1200 s
    _nm(d / "t2", 26.0, units="CNTS")
    p = _toml(d, "", ['spect = "t1"\nframe_duration_s = 600.0', 'spect = "t2"'])
    p.write_text(p.read_text() + '\n[spect]\ncalibration_cps_per_mbq = 10.0\n')
    return p


# --- a tiny SPECT/CT study (registration in a fraction of a second) --------------------
SPECT_GRID = Grid.from_spacing((10, 12, 12), (8.0, 8.0, 8.0), (-42.0, -42.0, -34.0))


def _ct_study(d: Path, shift_ct=(0.0, 0.0, 0.0), shift_spect=(0.0, 0.0, 0.0), extra="",
              names=None) -> Path:
    """Two time points (4 h, 24 h), each a CT (test_study_contradictions._blobs: three
    blobs in air, 4 mm) and a SPECT (8 mm) in the same frame; the second session's CT and
    SPECT origins moved by ``shift_ct`` / ``shift_spect`` (x, y, z mm). ``names``: labels
    (one box on the CT grid, value 1) with this names file."""
    d.mkdir(parents=True, exist_ok=True)
    text = '[study]\nnuclide = "Lu-177"\nadministered_activity_mbq = 7400.0\n' + extra
    x, y, z = SPECT_GRID.world_coordinates()
    for i, t_h in enumerate((4.0, 24.0)):
        ct = _blobs()
        act = np.where((x + 15) ** 2 + y ** 2 + z ** 2 < 20 ** 2, 2e4, 100.0) * np.exp(-t_h / 100)
        for name, img, shift in ((f"ct_{i}", ct, shift_ct),
                                 (f"spect_{i}", Image(act, SPECT_GRID, "activity concentration",
                                                      "Bq/mL"), shift_spect)):
            a = img.grid.affine.copy()
            if i == 1:
                a[:3, 3] += np.asarray(shift)
            write_image(d / f"{name}.nii.gz",
                        Image(img.data, Grid(img.grid.shape, a), img.quantity, img.unit))
        text += f'\n[[timepoints]]\ntime_h = {t_h}\nspect = "spect_{i}.nii.gz"\n' \
                f'ct = "ct_{i}.nii.gz"\n'
    if names is not None:
        g = _blobs().grid
        lab = np.zeros(g.shape, np.int32)
        lab[8:12, 10:14, 6:10] = 1
        write_labels(d / "labels.nii.gz", LabelMap(lab, g, {1: "lesion"}))
        (d / "names.json").write_text(json.dumps(names))
        text += '\n[structures]\nlabels = "labels.nii.gz"\nnames = "names.json"\n'
    (d / "study.toml").write_text(text)
    return d / "study.toml"


def b_ct_study(**kw) -> Callable[[Env], dict]:
    def build(env: Env) -> dict:
        return {"study": _ct_study(env.d / "study", **kw)}
    return build


# --- small-study edits ------------------------------------------------------------------
def e_cut_ref_frame(folder, toml):
    _cut_in_half(folder / "spect_001h.nii.gz")


def e_nan_ref_frame(folder, toml):
    _sitk_edit(folder / "spect_001h.nii.gz", _nan_voxel)


def e_negated_frame(folder, toml):
    _sitk_edit(folder / "spect_001h.nii.gz", _negated)


def e_one_mbq(folder, toml):
    _edit_text(toml, "administered_activity_mbq = 7400.0", "administered_activity_mbq = 1.0")


def e_duplicate_liver(folder, toml):
    names = json.loads((folder / "structure_names.json").read_text())
    k = sorted(names, key=int)
    names[k[1]] = names[k[0]] = "liver"
    (folder / "structure_names.json").write_text(json.dumps(names))


def e_unnamed_label(folder, toml):
    names = json.loads((folder / "structure_names.json").read_text())
    del names[sorted(names, key=int)[-1]]
    (folder / "structure_names.json").write_text(json.dumps(names))


def e_negative_label(folder, toml):
    img = sitk.ReadImage(str(folder / "labels.nii.gz"))
    a = sitk.GetArrayFromImage(img).astype(np.int32)
    a[0, 0, 0] = -3
    out = sitk.GetImageFromArray(a)
    out.CopyInformation(img)
    sitk.WriteImage(out, str(folder / "labels.nii.gz"), useCompression=True)


def e_label_grid(folder, toml):
    g = Grid.from_spacing((10, 10, 10), (5.0, 5.0, 5.0))
    write_labels(folder / "labels.nii.gz", LabelMap(np.ones(g.shape, np.int32), g, {1: "b"}))


def e_patient_not_a_table(folder, toml):
    text = toml.read_text().replace('[patient]\nsex = "male"', "")
    toml.write_text("patient = 3\n" + text)


def e_misspelt_table(folder, toml):
    _edit_text(toml, "[patient]", "[patientx]")


def e_missing_frame(folder, toml):
    (folder / "spect_024h.nii.gz").unlink()


def e_unknown_nuclide(folder, toml):
    _edit_text(toml, 'nuclide = "Lu-177"', 'nuclide = "Lutetium"')


def e_cut_labels(folder, toml):
    _cut_in_half(folder / "labels.nii.gz")


def e_not_toml(folder, toml):
    toml.write_text("this is [not toml")


def e_dpk_missing(folder, toml):
    toml.write_text(toml.read_text() + '\n[dose]\ndpk = "nope.csv"\n')


# --- tiny-library edits -----------------------------------------------------------------
def b_tiny_edit(fn) -> Callable[[Env], dict]:
    def build(env: Env) -> dict:
        d = env.tiny()
        extra = fn(d) or {}
        return {"in": d, **extra}
    return build


def t_cut_f1(d):
    _cut_in_half(d / "f1.nii.gz")


def t_negate_f1(d):
    _sitk_edit(d / "f1.nii.gz", _negated)


def t_nan_tia(d):
    _sitk_edit(d / "tia.nii.gz", _nan_voxel)


def t_names(doc):
    def fn(d):
        (d / "bad_names.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return fn


def t_cut_labels(d):
    _cut_in_half(d / "labels.nii.gz")


def t_negative_labels(d):
    lab = np.zeros(GRID.shape, np.int32)
    lab[1:3, 1:3, 1:3] = 1
    lab[4, 4, 4] = -1
    _write_int_labels(d / "neg_labels.nii.gz", lab, GRID)


def t_sidecar(text):
    def fn(d):
        (d / "dose.json").write_text(text)
    return fn


def t_huge_tia(d):
    tia = np.zeros(GRID.shape)
    tia[2:4, 2:4, 2:4] = 1e50  # a dose beyond float32 (3.4e38) in every hot voxel
    write_image(d / "huge.nii.gz", Image(tia, GRID, "time-integrated activity", TIA_UNIT),
                dtype=np.float64)


def t_huge_frames(d):
    for i, t_h in enumerate(TIMES_H):
        write_image(d / f"f{i}.nii.gz", Image(np.full(GRID.shape, 1e36 * math.exp(-t_h / 60)),
                                              GRID, "activity concentration", "Bq/mL"),
                    dtype=np.float64)


def t_frame_unit(unit):
    def fn(d):
        car = json.loads((d / "f1.json").read_text())
        (d / "f1.json").write_text(json.dumps({**car, "unit": unit}))
    return fn


def t_labels_elsewhere(d):
    lab = np.zeros(GRID.shape, np.int32)
    lab[1:5, 1:5, 1:5] = 1
    a = GRID.affine.copy()
    a[:3, 3] += (100.0, 0.0, 0.0)
    write_labels(d / "far_labels.nii.gz", LabelMap(lab, Grid(GRID.shape, a), {1: "liver"}))


def t_small_ct(d):
    g = Grid.from_spacing((5, 5, 5), (4.0, 4.0, 4.0))
    write_image(d / "ct.nii.gz", Image(np.zeros(g.shape), g, "CT", "HU"))


def t_4d_f1(d):
    """Frame f1 as a 4D series (two copies of the volume), its sidecar kept."""
    img = sitk.ReadImage(str(d / "f1.nii.gz"))
    a = sitk.GetArrayFromImage(img)
    sitk.WriteImage(sitk.GetImageFromArray(np.stack([a, a]), isVector=False),
                    str(d / "f1.nii.gz"), useCompression=True)


def _hu_like(d, name, like, dtype):
    """CT numbers (air -1000, tissue 40) on the grid of image ``like``, as ``name``."""
    img = sitk.ReadImage(str(d / like))
    a = np.full(sitk.GetArrayFromImage(img).shape, -1000.0)
    a[tuple(slice(n // 4, n - n // 4) for n in a.shape)] = 40.0
    out = sitk.GetImageFromArray(a.astype(dtype))
    out.CopyInformation(img)
    sitk.WriteImage(out, str(d / name), useCompression=True)


def t_hu_as_density(d):
    _hu_like(d, "hu.nii.gz", "dose.nii.gz", np.float32)


def t_ct_as_labels(d):
    _hu_like(d, "ct_labels.nii.gz", "labels.nii.gz", np.int16)


def t_a_file(d):
    (d / "afile").write_text("not a folder\n")


def t_folder(d):
    (d / "out.d").mkdir()


def t_loop(d):
    (d / "loop_a").symlink_to(d / "loop_b")
    (d / "loop_b").symlink_to(d / "loop_a")


# =========================================================================== patches
def p_locked(mp: pytest.MonkeyPatch, fmt: dict) -> None:
    """``{d}/locked`` not writable (simulated: root is not stopped by permissions)."""
    locked = Path(fmt["d"]) / "locked"
    locked.mkdir()
    real = os.access
    mp.setattr(os, "access", lambda p, mode, **k: (
        False if Path(p) == locked and mode & os.W_OK else real(p, mode, **k)))


def p_never_load(mp: pytest.MonkeyPatch, fmt: dict) -> None:
    import voxdose.study.load as load

    def never(*a, **k):
        raise AssertionError("the study was read before the output location was checked")

    mp.setattr(load, "load_study", never)


def p_ctrl_c(mp: pytest.MonkeyPatch, fmt: dict) -> None:
    import voxdose.pipeline.stages as stages

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    mp.setattr(stages, "assemble_series", interrupted)


def p_sigma_disk_full(mp: pytest.MonkeyPatch, fmt: dict) -> None:
    import voxdose.io.sitk_adapter as sitk_adapter

    real = sitk_adapter.write_image

    def full_disk(path, *a, **k):
        if Path(path).name == "sigma.nii.gz":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, *a, **k)

    mp.setattr(sitk_adapter, "write_image", full_disk)


def p_dvh_csv_fails(mp: pytest.MonkeyPatch, fmt: dict) -> None:
    import voxdose.io.atomic as atomic

    real = atomic.write_text

    def failing(target, text):
        if Path(target).suffix == ".csv":
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(target))
        return real(target, text)

    mp.setattr(atomic, "write_text", failing)


def p_rtdose_half_written(mp: pytest.MonkeyPatch, fmt: dict) -> None:
    import voxdose.io.dicom_write as dicom_write

    def half_written(path, *a, **k):
        Path(path).write_bytes(b"DICM half")
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))

    mp.setattr(dicom_write, "write_rt_dose", half_written)


def p_dose_sidecar_fails(mp: pytest.MonkeyPatch, fmt: dict) -> None:
    import voxdose.io.sitk_adapter as sitk_adapter

    def no_json(target, obj):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    mp.setattr(sitk_adapter, "write_json", no_json)


# =========================================================================== checks of
# the cases that succeed (unusual input: a warning, recorded)
def r_dvh_json_empty(fmt: dict) -> None:
    doc = json.loads((Path(fmt["d"]) / "res" / "dvh.json").read_text())
    spleen = [s for s in doc["structures"] if s["name"] == "spleen"]
    assert spleen and not spleen[0].get("n_voxels"), spleen
    assert any("spleen" in w for w in doc.get("meta", {}).get("warnings", [])), doc.get("meta")


def r_run_provenance_motion_and_empty(fmt: dict) -> None:
    prov = json.loads((Path(fmt["d"]) / "results" / "provenance.json").read_text())
    warns = prov["warnings"]
    assert any("moved the image 120 mm" in w and "accepted" in w for w in warns), warns
    assert any("structure 'spleen' has no voxel" in w for w in warns), warns
    assert prov["assembly"]["frames"][1]["registration"]["plausibility"]["translation_mm"] \
        == pytest.approx(120.0, abs=5.0)


def r_nothing(fmt: dict) -> None:
    return None


def _frames_on_other_grids(env: Env) -> dict:
    toml = env.study()
    tps = "".join(f'[[timepoints]]\ntime_h = {t}\nspect = "spect_{t:03d}h.nii.gz"\n\n'
                  for t in (1, 4, 24, 48, 168))
    toml.write_text('[study]\nnuclide = "Lu-177"\nadministered_activity_mbq = 7400.0\n\n' + tps)
    g = Grid.from_spacing((10, 12, 14), (7.0, 7.0, 7.0), (-40.0, -40.0, -40.0))
    write_image(toml.parent / "spect_024h.nii.gz", Image(np.ones(g.shape), g), dtype=np.float32)
    return {"study": toml}



# =========================================================================== the table
@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Env], dict]
    argv: tuple[str, ...]
    pattern: str                  # regex the one stderr line must match: the problem
    names: str | None             # literal the line must contain: the file (or option)
    rc: int = 2
    earlier: Callable[[Env, dict], None] | None = None  # an earlier run's results, kept
    patch: Callable[[pytest.MonkeyPatch, dict], None] | None = None
    stdout: str = "empty"         # empty | any (progress bars of a late refusal) | a regex
    absent: str | None = None     # regex the line must NOT match
    recorded: Callable[[dict], None] | None = None  # rc 0: where the warning is recorded
    prefix: str = "voxdose: error: "


C = Case
PVC = ("pvc", "{in}/spect.nii.gz", "--labels", "{in}/labels.nii.gz", "--names",
       "{in}/names.json")

CASES = [
    # ---------------------------------------------------------------- damaged images
    C("run-nifti-cut-in-half", b_study(e_cut_ref_frame), _run_argv(),
      r"cut short|damaged", "spect_001h.nii.gz", stdout="any"),
    C("run-nan-voxels-in-a-frame", b_study(e_nan_ref_frame), _run_argv(),
      r"NaN", "spect_001h.nii.gz", stdout="any"),
    C("run-whole-frame-negated", b_study(e_negated_frame), _run_argv(),
      r"negative activity", "spect_001h.nii.gz", stdout="any"),
    C("tia-nifti-cut-in-half", b_tiny_edit(t_cut_f1), _tia_argv("--out", "{d}/o/tia.nii.gz"),
      r"cut short|damaged", "f1.nii.gz"),
    C("tia-whole-frame-negated", b_tiny_edit(t_negate_f1),
      _tia_argv("--out", "{d}/o/tia.nii.gz"), r"negative activity", "f1.nii.gz"),
    C("dose-nan-tia", b_tiny_edit(t_nan_tia),
      ("dose", "{in}/tia.nii.gz", "--nuclide", "Lu-177", "--out", "{d}/o/d.nii.gz"),
      r"NaN", "tia.nii.gz"),
    # ---------------------------------------------------------------- study vs sidecars
    C("units-kbq-vs-sidecar-bq", b_tiny_study([{"unit": "Bq/mL"}], spect='units = "kBq/mL"\n'),
      _run_argv(), r'spect\.units = "kBq/mL".*contradicts.*"Bq/mL"', "spect_0.json"),
    C("sidecar-decay-corrected-study-not",
      b_tiny_study([{"decay_corrected": True}], spect="decay_corrected = false\n"),
      _run_argv(), r"spect\.decay_corrected = false.*decay-corrected to the administration",
      "spect_0.json"),
    C("sidecar-time-contradicts-time-h", b_tiny_study([{"time_h": 48.0}], times=(24.0,)),
      _run_argv(), r"timepoints\[0\]\.time_h = 24 h.*48 h", "spect_0.json"),
    C("sidecar-nuclide-contradicts", b_tiny_study([{"nuclide": "Y-90"}]), _run_argv(),
      r"study\.nuclide = Lu-177.*Y-90", "spect_0.json"),
    C("sidecar-unit-is-a-dose", b_tiny_study([{"unit": "Gy"}]), _run_argv(),
      r"'unit' = 'Gy'.*activity-concentration", "spect_0.json"),
    C("sidecar-not-valid-json", b_tiny_study(['{"unit": ']), _run_argv(), r"not valid JSON",
      "spect_0.json"),
    C("misspelt-key-decay_corected",
      b_tiny_study([None], spect="decay_corected = true\n"), _run_argv(),
      r"decay_corected.*did you mean.*decay_corrected", "study.toml"),
    C("misspelt-key-unit", b_tiny_study([None], spect='unit = "Bq/mL"\n'), _run_argv(),
      r"'?spect\.unit'?.*did you mean.*units", "study.toml"),
    C("misspelt-table-patientx", b_study(e_misspelt_table), _run_argv(),
      r"patientx.*did you mean.*patient", "study.toml"),
    C("study-table-not-a-table", b_study(e_patient_not_a_table), _run_argv(),
      r"\[patient\] must be a table, got patient = 3", "study.toml"),
    C("study-not-toml", b_study(e_not_toml), _run_argv(), r"not valid TOML", "study.toml"),
    C("unknown-nuclide", b_study(e_unknown_nuclide), _run_argv(),
      r"study\.nuclide: cannot read nuclide name 'Lutetium'", "study.toml"),
    C("missing-frame", b_study(e_missing_frame), _run_argv(),
      r"timepoints\[2\]\.spect.*not found", "spect_024h.nii.gz"),
    C("negative-administered-activity",
      b_tiny_study_edit("administered_activity_mbq = 7400.0", "administered_activity_mbq = -1"),
      _run_argv(), r"administered_activity_mbq.*> 0", "study.toml"),
    C("times-not-increasing", b_tiny_study_edit("time_h = 24.0", "time_h = 0.5"), _run_argv(),
      r"strictly increasing", "study.toml"),
    C("user-dpk-not-found", b_study(e_dpk_missing), _run_argv(), r"dose\.dpk.*not found",
      "nope.csv"),
    # ---------------------------------------------------------------- frame plausibility
    C("administered-1-mbq-gbq-images", b_study(e_one_mbq), _run_argv(),
      r"x the administered activity.*administered_activity_mbq", "spect_001h.nii.gz",
      stdout="any"),
    C("spect-1-m-from-its-ct", b_ct_study(shift_spect=(0.0, 0.0, 1000.0)), _run_argv(),
      r"kept only 0 % of the frame's activity", "spect_1.nii.gz", stdout="any"),
    C("implausible-registration-120-mm",
      b_ct_study(shift_ct=(0.0, 0.0, 120.0), shift_spect=(0.0, 0.0, 120.0)), _run_argv(),
      r"moved the image 120 mm.*allow_large_motion = true", "ct_1.nii.gz", stdout="any"),
    C("large-motion-allowed-and-an-empty-structure-warn",
      b_ct_study(shift_ct=(0.0, 0.0, 120.0), shift_spect=(0.0, 0.0, 120.0),
                 extra="[registration]\nallow_large_motion = true\n",
                 names={"1": "lesion", "2": "spleen"}), _run_argv(),
      r"voxdose: warning: .*moved the image 120 mm", None, rc=0,
      recorded=r_run_provenance_motion_and_empty),
    C("lu178m-data-to-168-h",
      b_tiny_study_edit('nuclide = "Lu-177"', 'nuclide = "Lu-178m"', times=(1.0, 168.0)),
      _run_argv(), r"436 Lu-178m half-lives", "study.toml", stdout="any"),
    C("single-time-point-without-method", b_tiny_study([None], extra=""), _run_argv(),
      r"one time point.*\[kinetics\] single_time_point", "study.toml", stdout="any"),
    C("single-time-point-half-life-above-physical",
      b_tiny_study([None], extra='[kinetics]\nsingle_time_point = "effective"\n'
                   "effective_half_life_h = 200.0\n"), _run_argv(),
      r"exceeds Lu-177's physical half-life", "study.toml"),
    C("frames-on-other-grids-without-cts", _frames_on_other_grids, _run_argv(),
      r"has no CTs to register with", "study.toml"),
    # ---------------------------------------------------------------- structures
    C("run-two-liver-rows", b_study(e_duplicate_liver), _run_argv(),
      r"the name 'liver' is given to labels", "structure_names.json"),
    C("run-label-without-a-name", b_study(e_unnamed_label), _run_argv(),
      r"label values \[\d+\] have no name", "labels.nii.gz"),
    C("run-negative-label-values", b_study(e_negative_label), _run_argv(),
      r"negative label values \[-3\]", "labels.nii.gz"),
    C("run-labels-cut-in-half", b_study(e_cut_labels), _run_argv(), r"cut short|damaged",
      "labels.nii.gz"),
    C("dvh-labels-cut-in-half", b_tiny_edit(t_cut_labels),
      ("dvh", "{in}/dose.nii.gz", "{in}/labels.nii.gz", "--out", "{d}/res/dvh.csv"),
      r"cut short|damaged", "labels.nii.gz"),
    C("run-label-grid-mismatch", b_study(e_label_grid), _run_argv(),
      r"labels grid .* does not match", "labels.nii.gz"),
    C("dvh-two-liver-rows", b_tiny_edit(t_names({"1": "liver", "2": "liver"})),
      ("dvh", "{in}/dose.nii.gz", "{in}/labels.nii.gz", "--names", "{in}/bad_names.json",
       "--out", "{d}/res/dvh.csv"), r"the name 'liver' is given to labels \[1, 2\]",
      "bad_names.json"),
    C("dvh-label-without-a-name", b_tiny_edit(t_names({"1": "liver"})),
      ("dvh", "{in}/dose.nii.gz", "{in}/labels.nii.gz", "--names", "{in}/bad_names.json",
       "--out", "{d}/res/dvh.csv"), r"label values \[2\] have no name", "labels.nii.gz"),
    C("dvh-negative-label-values", b_tiny_edit(t_negative_labels),
      ("dvh", "{in}/dose.nii.gz", "{in}/neg_labels.nii.gz", "--out", "{d}/res/dvh.csv"),
      r"negative label values \[-1\]", "neg_labels.nii.gz"),
    C("dvh-names-negative-key", b_tiny_edit(t_names({"-1": "liver"})),
      ("dvh", "{in}/dose.nii.gz", "{in}/labels.nii.gz", "--names", "{in}/bad_names.json",
       "--out", "{d}/res/dvh.csv"), r"label value -1 is not allowed", "bad_names.json"),
    C("dvh-names-duplicate-key", b_tiny_edit(t_names('{"1": "liver", "1": "kidney"}')),
      ("dvh", "{in}/dose.nii.gz", "{in}/labels.nii.gz", "--names", "{in}/bad_names.json",
       "--out", "{d}/res/dvh.csv"), r"label value 1 is given twice", "bad_names.json"),
    C("dvh-names-not-an-object", b_tiny_edit(t_names('["liver"]')),
      ("dvh", "{in}/dose.nii.gz", "{in}/labels.nii.gz", "--names", "{in}/bad_names.json",
       "--out", "{d}/res/dvh.csv"), r"must be a non-empty JSON object", "bad_names.json"),
    C("dvh-empty-structure-warns", b_tiny_edit(t_names({"1": "liver", "2": "tumour",
                                                        "7": "spleen"})),
      ("dvh", "{in}/dose.nii.gz", "{in}/labels.nii.gz", "--names", "{in}/bad_names.json",
       "--out", "{d}/res/dvh.csv", "--json", "{d}/res/dvh.json"),
      r"structure 'spleen' has no voxel on the dose grid: reported as empty", None, rc=0,
      recorded=r_dvh_json_empty),
    C("run-rtstruct-outside-the-ct", b_dicom(_dicom_rtstruct_outside), _run_argv(),
      r"ROI 'lesion': 40 % of its contour area \(6\.4 mL\)", "rs.dcm"),
    # ---------------------------------------------------------------- results out of range
    C("dose-float32-overflow-never-written", b_tiny_edit(t_huge_tia),
      ("dose", "{in}/huge.nii.gz", "--nuclide", "Lu-177", "--method", "ldm", "--device", "cpu",
       "--out", "{d}/o/dose.nii.gz"), r"non-finite|beyond the range of float32", "dose.nii.gz",
      stdout="any"),
    C("tia-float32-overflow-never-written", b_tiny_edit(t_huge_frames),
      _tia_argv("--out", "{d}/o/tia.nii.gz"), r"non-finite|beyond the range of float32",
      "tia.nii.gz", stdout="any"),
    C("rtdose-on-a-tia-map", b_tiny, ("rtdose", "{in}/tia.nii.gz", "--out", "{d}/o/rd.dcm"),
      r"unit 'Bq\*s per voxel \(decays\)'.*not Gy", "tia.nii.gz"),
    C("dose-on-a-dose-map", b_tiny,
      ("dose", "{in}/dose.nii.gz", "--nuclide", "Lu-177", "--out", "{d}/o/d.nii.gz"),
      r"has unit 'Gy' in its sidecar; the dose command needs decays", "dose.nii.gz"),
    C("dvh-on-a-tia-map", b_tiny,
      ("dvh", "{in}/tia.nii.gz", "{in}/labels.nii.gz", "--out", "{d}/res/dvh.csv"),
      r"unit 'Bq\*s per voxel \(decays\)'.*a DVH needs an absorbed-dose image in Gy",
      "tia.nii.gz"),
    C("compare-on-a-dose-map", b_tiny, ("compare", "{in}/dose.nii.gz", "--out", "{d}/res"),
      r"unit 'Gy' \(absorbed dose\); voxdose compare needs a TIA map", "dose.nii.gz"),
    C("tia-frame-is-a-dose-map", b_tiny_edit(t_frame_unit("Gy")),
      _tia_argv("--out", "{d}/o/tia.nii.gz"), r"unit 'Gy'.*reads activity concentration",
      "f1.nii.gz"),
    C("tia-frame-in-kbq-per-ml", b_tiny_edit(t_frame_unit("kBq/mL")),
      _tia_argv("--out", "{d}/o/tia.nii.gz"), r"unit 'kBq/mL'.*in Bq/mL", "f1.nii.gz"),
    C("pvc-frame-is-a-tia-map", b_tiny,
      ("pvc", "{in}/tia.nii.gz", "--labels", "{in}/labels.nii.gz", "--method", "gtm",
       "--fwhm-mm", "8", "--out", "{d}/o/p.nii.gz"), r"unit 'Bq\*s per voxel", "tia.nii.gz"),
    C("tia-frame-is-4d", b_tiny_edit(t_4d_f1), _tia_argv("--out", "{d}/o/tia.nii.gz"),
      r"a 3D image is needed, this one is 4D", "f1.nii.gz"),
    C("dvh-density-is-a-ct-in-hu", b_tiny_edit(t_hu_as_density),
      ("dvh", "{in}/dose.nii.gz", "{in}/labels.nii.gz", "--density", "{in}/hu.nii.gz",
       "--out", "{d}/res/dvh.csv"), r"negative or non-finite values \(min -1000\).*a CT in "
      r"HU is not a density map", "hu.nii.gz"),
    C("pvc-labels-are-a-ct", b_tiny_edit(t_ct_as_labels),
      ("pvc", "{in}/spect.nii.gz", "--labels", "{in}/ct_labels.nii.gz", "--method", "gtm",
       "--fwhm-mm", "8", "--out", "{d}/o/p.nii.gz"),
      r"negative label values \(min -1000\).*not a CT", "ct_labels.nii.gz"),
    C("compare-the-same-nuclide-twice", b_tiny,
      ("compare", "{in}/tia.nii.gz", "--nuclides", "Lu-177,Y-90,177Lu", "--out", "{d}/res"),
      r"Lu-177 given twice .*give each nuclide once", "--nuclides"),
    C("compare-label-without-a-name", b_tiny_edit(t_names({"1": "liver"})),
      ("compare", "{in}/tia.nii.gz", "--labels", "{in}/labels.nii.gz", "--names",
       "{in}/bad_names.json", "--out", "{d}/res"), r"label values \[2\] have no name",
      "labels.nii.gz"),
    C("compare-negative-label-values", b_tiny_edit(t_negative_labels),
      ("compare", "{in}/tia.nii.gz", "--labels", "{in}/neg_labels.nii.gz", "--out", "{d}/res"),
      r"negative label values \[-1\]", "neg_labels.nii.gz"),
    C("compare-labels-on-another-grid", b_tiny_edit(t_labels_elsewhere),
      ("compare", "{in}/tia.nii.gz", "--labels", "{in}/far_labels.nii.gz", "--out", "{d}/res"),
      r"origin \(x,y,z\)=\(90, -10, -10\) mm\) is not the grid of the TIA",
      "far_labels.nii.gz"),
    C("dose-ct-on-another-grid", b_tiny_edit(t_small_ct),
      ("dose", "{in}/tia.nii.gz", "--nuclide", "Lu-177", "--ct", "{in}/ct.nii.gz",
       "--density-mode", "scale", "--out", "{d}/o/d.nii.gz"),
      r"is not on the TIA grid .*resample it or pass --resample-ct", "ct.nii.gz"),
    C("dose-mvs-without-ct", b_tiny,
      ("dose", "{in}/tia.nii.gz", "--nuclide", "Lu-177", "--density-mode", "mvs", "--out",
       "{d}/o/d.nii.gz"), r"needs --ct", "--density-mode mvs"),
    C("run-pvc-method-without-fwhm", b_tiny_study_append('\n[pvc]\nmethod = "gtm"\n'),
      _run_argv(), r"pvc\.method = gtm needs the SPECT resolution", "study.toml"),
    C("run-reference-timepoint-out-of-range",
      b_tiny_study_edit("[study]", "[study]\nreference_timepoint = 5"), _run_argv(),
      r"reference_timepoint must be an index 0\.\.1", "study.toml"),
    C("run-ct-for-one-time-point-only",
      b_tiny_study_edit('spect = "spect_1.nii.gz"', 'spect = "spect_1.nii.gz"\nct = '
                        '"spect_1.nii.gz"'), _run_argv(),
      r"give a ct for every time point or for none", "study.toml"),
    # ---------------------------------------------------------------- DICOM
    C("dicom-ge-projections", b_dicom(_dicom_projections), _run_argv(),
      r"SPECT projections, not a reconstruction: reconstruct first", "NM0001.dcm"),
    C("dicom-several-energy-windows", b_dicom(_dicom_energy_windows), _run_argv(),
      r"several energy windows in one object", "NM0001.dcm"),
    C("dicom-planar-secondary-capture", b_dicom(_dicom_secondary_capture), _run_argv(),
      r"Secondary Capture .* a planar picture", "SC0001.dcm"),
    C("dicom-planar-nm-whole-body", b_dicom(_dicom_planar), _run_argv(),
      r"a planar NM image .*'WHOLE BODY'", "WB0001.dcm"),
    C("dicom-single-slice", b_dicom(_dicom_single_slice), _run_argv(),
      r"a single image \(1 file, 1 frame\)", "nm"),
    C("dicom-truncated-file", b_dicom(_dicom_truncated), _run_argv(), r"truncated|cut short",
      ".dcm"),
    C("dicom-bad-date-asks-for-time-h", b_dicom(_dicom_bad_date_no_time), _run_argv(),
      r"not a valid DICOM date/time .*give 'timepoints\[0\]\.time_h'", "t1"),
    C("dicom-bad-date-never-asks-for-given-time-h", b_dicom(_dicom_bad_date_with_time),
      _run_argv(), r"DecayCorrection = START needs the acquisition time.*fix the file", "t1",
      absent=r"time_h"),
    C("dicom-units-contradict-the-tag", b_dicom(_dicom_units_contradiction), _run_argv(),
      r"spect\.units.*contradicts|contradicts.*Units", "study.toml"),
    C("dicom-ct-of-another-spect-ct", b_dicom(_dicom_cts_swapped), _run_argv(),
      r"timepoints\[0\]: the SPECT .*tp01/nm .*the CT .*tp02/ct .*different frames of "
      r"reference", "study.toml"),
    C("dicom-activity-contradicts-the-tag", b_dicom(_dicom_activity_contradiction),
      _run_argv(), r"study\.administered_activity_mbq = 7000 in the study file contradicts "
      r"RadionuclideTotalDose \(0018,1074\) = 7400 MBq", "NM000001.dcm"),
    C("dicom-series-disagree-on-the-activity", b_dicom(_dicom_series_disagree_on_activity),
      _run_argv(), r"time points disagree on the administered activity.*t1.*timepoints\[0\]"
      r".*7000 MBq in .*t2.*timepoints\[1\]", "NM000001.dcm"),
    C("dicom-frame-duration-contradicts-the-tag", b_dicom(_dicom_frame_duration_contradiction),
      _run_argv(), r"timepoints\[0\]\.frame_duration_s = 600 s in the study file contradicts "
      r"ActualFrameDuration .* = 1200 s", "NM000001.dcm"),
    C("dicom-info-one-bad-series", b_dicom(_dicom_info_one_bad), ("dicom-info", "{study}"),
      r"1 of 2 series \(or files\) cannot be used", "exam",
      stdout=r"modality .* problem .* SeriesInstanceUID .* problem: proj/NM0001\.dcm: SPECT "
             r"projections, not a reconstruction"),
    C("dicom-legacy-dates-are-read", b_dicom(_dicom_info_legacy_dates),
      ("dicom-info", "{study}"), ACQ.strftime("%H:%M:%S"), None, rc=0, recorded=r_nothing),
    # ---------------------------------------------------------------- paths
    C("study-path-is-a-folder", b_study(), ("run", "{d}/study"),
      r"is a folder, not a study file; did you mean .*study\.toml\?", "study"),
    C("study-file-not-found", b_tiny, ("run", "{d}/nope.toml", "--out", "{d}/results"),
      r"study file not found", "nope.toml"),
    C("study-symlink-loop", b_tiny_edit(t_loop), ("run", "{in}/loop_a", "--out", "{d}/res"),
      r"a broken symbolic link or a symlink loop", "loop_a"),
    C("run-out-is-a-file", b_tiny_edit(t_a_file),
      ("run", "{in}/tia.nii.gz", "--out", "{in}/afile"), r"is a file, not a folder", "afile"),
    C("run-out-under-a-file", b_tiny_edit(t_a_file),
      ("run", "{in}/tia.nii.gz", "--out", "{in}/afile/results"), r"is a file, not a folder",
      "afile"),
    C("run-out-not-writable", b_tiny, ("run", "{in}/tia.nii.gz", "--out", "{d}/locked/res"),
      r"is not writable", "locked", patch=p_locked),
    C("run-out-symlink-loop", b_tiny_edit(t_loop), ("run", "{in}/tia.nii.gz", "--out",
                                                    "{in}/loop_a"), r"symlink loop", "loop_a"),
    C("run-out-checked-before-the-study-is-read", b_study(),
      ("run", "{study}", "--out", "{d}/afile/results"), r"is a file, not a folder", "afile",
      patch=lambda mp, fmt: (Path(fmt["d"], "afile").write_text("x"), p_never_load(mp, fmt))),
    C("dose-out-under-a-file", b_tiny_edit(t_a_file),
      ("dose", "{in}/tia.nii.gz", "--nuclide", "Lu-177", "--out", "{in}/afile/d.nii.gz"),
      r"is a file, not a folder", "afile"),
    C("dose-out-is-a-folder", b_tiny_edit(t_folder),
      ("dose", "{in}/tia.nii.gz", "--nuclide", "Lu-177", "--out", "{in}/out.d"),
      r"is a folder; give a file name", "out.d"),
    C("dose-out-not-writable", b_tiny,
      ("dose", "{in}/tia.nii.gz", "--nuclide", "Lu-177", "--out", "{d}/locked/sub/d.nii.gz"),
      r"is not writable", "locked", patch=p_locked),
    C("dose-out-wrong-suffix", b_tiny,
      ("dose", "{in}/tia.nii.gz", "--nuclide", "Lu-177", "--out", "{d}/o/d.txt"),
      r"the file name must end with \.nii\.gz, \.nii, \.mhd or \.nrrd", "d.txt"),
    C("dose-out-overwrites-its-input", b_tiny,
      ("dose", "{in}/tia.nii.gz", "--nuclide", "Lu-177", "--out", "{in}/tia.nii.gz"),
      r"would overwrite an input", "tia.nii.gz"),
    C("dose-input-symlink-loop", b_tiny_edit(t_loop),
      ("dose", "{in}/loop_a", "--nuclide", "Lu-177", "--out", "{d}/o/d.nii.gz"),
      r"a broken symbolic link or a symlink loop", "loop_a"),
    C("dvh-out-under-a-file", b_tiny_edit(t_a_file),
      ("dvh", "{in}/dose.nii.gz", "{in}/labels.nii.gz", "--out", "{in}/afile/dvh.csv"),
      r"is a file, not a folder", "afile"),
    C("dvh-json-same-file-as-out", b_tiny,
      ("dvh", "{in}/dose.nii.gz", "{in}/labels.nii.gz", "--out", "{d}/o/d.csv", "--json",
       "{d}/o/d.csv"), r"would write the same file", "d.csv"),
    C("tia-out-is-a-folder", b_tiny_edit(t_folder), _tia_argv("--out", "{in}/out.d"),
      r"is a folder; give a file name", "out.d"),
    C("compare-out-is-a-file", b_tiny_edit(t_a_file),
      ("compare", "{in}/tia.nii.gz", "--out", "{in}/afile"), r"is a file, not a folder",
      "afile"),
    C("export-dicom-into-the-study-folder", b_study(), ("export-dicom", "{study}", "{d}/study"),
      r"is the study's own folder", "study"),
    C("malformed-sidecar-json", b_tiny_edit(t_sidecar("{bad json")),
      ("dvh", "{in}/dose.nii.gz", "{in}/labels.nii.gz", "--out", "{d}/res/dvh.csv"),
      r"is not valid JSON \(.* line 1, column 2\)", "dose.json"),
    C("sidecar-a-json-list", b_tiny_edit(t_sidecar("[1, 2]")),
      ("dvh", "{in}/dose.nii.gz", "{in}/labels.nii.gz", "--out", "{d}/res/dvh.csv"),
      r"holds a JSON list, not an object", "dose.json"),
    # ---------------------------------------------------------------- kernel bounds
    C("kernel-voxel-0.1-um", b_tiny,
      ("kernel", "Lu-177", "--voxel-mm", "1e-4", "--out", "{d}/o/k.nii.gz"),
      r"voxel size 0\.0001x0\.0001x0\.0001 mm \(--voxel-mm\) is below", "--voxel-mm"),
    C("dose-tia-with-0.1-um-voxels", b_tiny,
      ("dose", "{in}/tiny.nii.gz", "--nuclide", "Lu-177", "--out", "{d}/o/d.nii.gz"),
      r"voxel size 0\.0001x0\.0001x0\.0001 mm .* is below", "tiny.nii.gz"),
    C("kernel-does-not-fit-in-memory", b_tiny,
      ("kernel", "Lu-177", "--voxel-mm", "1", "--half-width", "3000", "--out",
       "{d}/o/k.nii.gz"), r"6001 x 6001 x 6001 voxels .* needs about .* of memory", "--voxel-mm"),
    C("dpk-i131-analytic-warns", b_tiny,
      ("dpk", "I-131", "--kernel", "analytic", "--out", "{d}/o/dpk.csv"),
      r"voxdose: warning: .*(approximate|analytic)", None, rc=0, recorded=r_nothing),
    # ---------------------------------------------------------------- no partial output
    C("tia-sigma-fails-earlier-results-intact", b_tiny,
      _tia_argv("--out", "{d}/res/tia.nii.gz", "--sigma-out", "{d}/res/sigma.nii.gz",
                "--background-fraction", "0.5"),
      r"no space left on device; nothing was written", "sigma.nii.gz", patch=p_sigma_disk_full,
      earlier=_earlier(_tia_argv("--out", "{d}/res/tia.nii.gz", "--sigma-out",
                                 "{d}/res/sigma.nii.gz")), stdout="any"),
    C("dvh-csv-fails-earlier-results-intact", b_tiny,
      ("dvh", "{in}/dose.nii.gz", "{in}/labels.nii.gz", "--names", "{in}/names.json", "--out",
       "{d}/res/dvh.csv", "--json", "{d}/res/dvh.json", "--bins", "10"),
      r"input/output error; nothing was written", "dvh.csv", patch=p_dvh_csv_fails,
      earlier=_earlier(("dvh", "{in}/dose.nii.gz", "{in}/labels.nii.gz", "--out",
                        "{d}/res/dvh.csv", "--json", "{d}/res/dvh.json")), stdout="any"),
    C("rtdose-fails-earlier-results-intact", b_tiny,
      ("rtdose", "{in}/dose.nii.gz", "--out", "{d}/res/rd.dcm"),
      r"input/output error", "rd.dcm", patch=p_rtdose_half_written,
      earlier=_earlier(("rtdose", "{in}/dose.nii.gz", "--out", "{d}/res/rd.dcm"))),
    C("dose-sidecar-fails-leaves-nothing", b_tiny,
      ("dose", "{in}/tia.nii.gz", "--nuclide", "Lu-177", "--method", "ldm", "--device", "cpu",
       "--out", "{d}/res/dose.nii.gz"), r"no space left on device", "dose.json",
      patch=p_dose_sidecar_fails, stdout="any"),
    C("run-ctrl-c-exits-130-earlier-results-intact", b_study(), _run_argv(),
      r"^voxdose: interrupted: nothing was written", None, rc=130, patch=p_ctrl_c,
      earlier=lambda env, fmt: (Path(fmt["d"], "results").mkdir(),
                                Path(fmt["d"], "results", "dvh.csv").write_text("earlier\n")),
      stdout="any", prefix="voxdose: interrupted: "),
    # ---------------------------------------------------------------- option values
    C("tia-negative-background-fraction", b_tiny,
      _tia_argv("--out", "{d}/o/tia.nii.gz", "--background-fraction", "-0.1"),
      r"must be a finite number >= 0", "--background-fraction"),
    C("tia-background-fraction-1.5", b_tiny,
      _tia_argv("--out", "{d}/o/tia.nii.gz", "--background-fraction", "1.5"), r"must be < 1",
      "--background-fraction"),
    C("tia-negative-frame-noise", b_tiny,
      _tia_argv("--out", "{d}/o/tia.nii.gz", "--frame-noise", "-1"),
      r"must be a finite number >= 0", "--frame-noise"),
    C("tia-after-h-nan", b_tiny, _tia_argv("--out", "{d}/o/tia.nii.gz", "--after-h", "nan"),
      r"must be a finite number", "--after-h"),
    C("tia-times-count-mismatch", b_tiny, ("tia", "{in}/f0.nii.gz", "{in}/f1.nii.gz",
                                           "--times-h", "1,24,96", "--nuclide", "Lu-177",
                                           "--out", "{d}/o/tia.nii.gz", "--device", "cpu"),
      r"3 .*2|2 .*3", "--times-h"),
    C("tia-stp-half-life-above-physical", b_tiny,
      ("tia", "{in}/f0.nii.gz", "--times-h", "24", "--nuclide", "Lu-177", "--out",
       "{d}/o/tia.nii.gz", "--stp-half-life-h", "1000", "--device", "cpu"), r"physical half-life",
      "--stp-half-life-h"),
    C("demo-activity-zero", b_tiny, ("demo", "{d}/demo", "--activity-mbq", "0"),
      r"must be a finite number > 0 MBq", "--activity-mbq"),
    C("demo-negative-seed", b_tiny, ("demo", "{d}/demo", "--seed", "-1"),
      r"must be an integer >= 0", "--seed"),
    C("compare-shell-zero", b_tiny,
      ("compare", "{in}/tia.nii.gz", "--out", "{d}/o", "--shells-mm", "1,0"),
      r"must be a finite number > 0 mm; got 0", "--shells-mm"),
    C("dvh-bins-zero", b_tiny,
      ("dvh", "{in}/dose.nii.gz", "{in}/labels.nii.gz", "--out", "{d}/o/d.csv", "--bins", "0"),
      r"voxdose dvh: Invalid value", "--bins"),
    C("plan-negative-limit", b_tiny,
      ("plan", "--gy-per-gbq", "kidneys=1", "--limit", "kidneys=-5", "--out", "{d}/o/p.json"),
      r"dose limit of 'kidneys'", "kidneys"),
    C("dose-precision-float16", b_tiny,
      ("dose", "{in}/tia.nii.gz", "--nuclide", "Lu-177", "--out", "{d}/o/d.nii.gz",
       "--precision", "float16"), r"choose one of float32, float64", "--precision"),
    C("run-unknown-density-mode", b_tiny,
      ("run", "{in}/tia.nii.gz", "--out", "{d}/o", "--density-mode", "foo"),
      r"unknown density mode 'foo'", "foo"),
    # ---------------------------------------------------------------- voxdose pvc
    C("pvc-method-without-fwhm", b_tiny, (*PVC, "--method", "gtm", "--out", "{d}/o/p.nii.gz"),
      r"needs the SPECT resolution", "--fwhm-mm"),
    C("pvc-fwhm-zero", b_tiny,
      (*PVC, "--method", "rbv", "--fwhm-mm", "0", "--out", "{d}/o/p.nii.gz"),
      r"must be > 0 mm", "--fwhm-mm"),
    C("pvc-fwhm-negative", b_tiny,
      (*PVC, "--method", "iy", "--fwhm-mm", "8,8,-3", "--out", "{d}/o/p.nii.gz"),
      r"must be > 0 mm", "--fwhm-mm"),
    C("pvc-rc-table-not-monotone", b_tiny,
      (*PVC, "--method", "rc", "--rc-table", "{in}/rc_bad.csv", "--out", "{d}/o/p.nii.gz"),
      r"recovery is not monotone", "rc_bad.csv"),
    C("pvc-rc-table-not-found", b_tiny,
      (*PVC, "--method", "rc", "--rc-table", "{in}/nope.csv", "--out", "{d}/o/p.nii.gz"),
      r"not found", "nope.csv"),
    C("pvc-out-under-a-file", b_tiny_edit(t_a_file),
      (*PVC, "--method", "gtm", "--fwhm-mm", "8", "--out", "{in}/afile/p.nii.gz"),
      r"is a file, not a folder", "afile"),
    C("pvc-out-is-a-folder", b_tiny_edit(t_folder),
      (*PVC, "--method", "gtm", "--fwhm-mm", "8", "--out", "{in}/out.d"),
      r"is a folder; give a file name", "out.d"),
    C("pvc-out-not-writable", b_tiny,
      (*PVC, "--method", "gtm", "--fwhm-mm", "8", "--out", "{d}/locked/p.nii.gz"),
      r"is not writable", "locked", patch=p_locked),
    C("pvc-out-overwrites-its-input", b_tiny,
      (*PVC, "--method", "gtm", "--fwhm-mm", "8", "--out", "{in}/spect.nii.gz"),
      r"would overwrite an input", "spect.nii.gz"),
    C("pvc-frame-symlink-loop", b_tiny_edit(t_loop),
      ("pvc", "{in}/loop_a", "--labels", "{in}/labels.nii.gz", "--method", "gtm", "--fwhm-mm",
       "8", "--out", "{d}/o/p.nii.gz"), r"a broken symbolic link or a symlink loop", "loop_a"),
    C("pvc-labels-not-found", b_tiny,
      ("pvc", "{in}/spect.nii.gz", "--labels", "{in}/nope.nii.gz", "--method", "gtm",
       "--fwhm-mm", "8", "--out", "{d}/o/p.nii.gz"), r"not found", "nope.nii.gz"),
    C("pvc-names-two-liver-rows", b_tiny_edit(t_names({"1": "liver", "2": "liver"})),
      ("pvc", "{in}/spect.nii.gz", "--labels", "{in}/labels.nii.gz", "--names",
       "{in}/bad_names.json", "--method", "gtm", "--fwhm-mm", "8", "--out", "{d}/o/p.nii.gz"),
      r"the name 'liver' is given to labels", "bad_names.json"),
]


# =========================================================================== the test
def _snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry under ``folder``: a file's bytes, a link's target, 'dir' for a folder."""
    out: dict[str, bytes | str] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root, name)
            rel = str(p.relative_to(folder))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = p.read_bytes()
    return out


def test_the_table_is_big_enough():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)
    assert sum(c.earlier is not None for c in CASES) >= 3


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, lib, small_study, tmp_path, capsys, monkeypatch):
    env = Env(tmp_path, lib, small_study)
    fmt = {"d": str(tmp_path), **{k: str(v) for k, v in case.build(env).items()}}
    if case.earlier is not None:
        case.earlier(env, fmt)
    if case.patch is not None:
        case.patch(monkeypatch, fmt)
    capsys.readouterr()
    before = _snapshot(tmp_path)
    argv = [a.format(**fmt) for a in case.argv]

    rc = main(argv)
    cap = capsys.readouterr()

    assert "Traceback" not in cap.out + cap.err, cap.out + cap.err
    if case.rc == 0:  # unusual input: a warning (or a value read), recorded
        assert rc == 0, cap.err
        assert re.search(case.pattern, " ".join(cap.out.split())), cap.out  # Rich wraps
        case.recorded(fmt)
        return
    err = cap.err.strip()
    assert rc == case.rc, (rc, err)
    assert len(err.splitlines()) == 1, err
    assert err.startswith(case.prefix), err
    assert re.search(case.pattern, err), err
    if case.names is not None:
        assert case.names.format(**fmt) in err, (case.names, err)
    if case.absent is not None:
        assert not re.search(case.absent, err), err
    if case.stdout == "empty":
        assert cap.out == "", cap.out
    elif case.stdout != "any":  # what must be printed before the error (dicom-info's table)
        assert re.search(case.stdout, " ".join(cap.out.split())), cap.out
    after = _snapshot(tmp_path)
    assert sorted(after) == sorted(before), sorted(set(after) ^ set(before))
    changed = [k for k in before if before[k] != after[k]]
    assert not changed, changed
    assert not [k for k in after if "staging" in k]
