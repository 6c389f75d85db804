"""`voxdose export-dicom` and the RT Dose as other tools read them: the structures as an
RTSTRUCT that voxdose's reader rasterises back to the same labels, every Type 1 / 2
attribute of each IOD written (the table in ``io/dicom_write.py`` plus the ones issue 13
names), the CT series and the RT Dose read by SimpleITK, the study.toml's [plan] kept, and
the RT Dose's summation / plan / structure-set references consistent (PS3.3 C.8.8.3-4).

A tiny study (two time points, 6 x 10 x 12 voxels) keeps it fast. Structures: a body
outline with an organ inside it (a hole in the outline's contours), a lesion inside the
organ, and a structure of two diagonal voxels (contours touching at a corner).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom import config

from voxdose.core.errors import InputError
from voxdose.core.grid import Grid, Image, LabelMap
from voxdose.io import dicom_write as dw
from voxdose.io.rtstruct import read_rtstruct_header, rasterize_rtstruct
from voxdose.io.rtstruct_write import mask_polygons, series_ref, write_labels_rtstruct
from voxdose.io.sitk_adapter import grid_from_sitk, write_image, write_labels
from voxdose.study.export import export_study_dicom
from voxdose.study.images import read_study_labels
from voxdose.study.load import load_study

GRID = Grid.from_spacing((6, 10, 12), (3.0, 2.5, 2.0), (-12.0, -10.0, 30.0))
NAMES = {1: "body rest", 2: "liver", 3: "lesion", 4: "marrow"}
PLAN = '[plan]\nlimits_gy = { liver = 30.0, marrow = 1.0 }\nafter_h = { marrow = 336.0 }\n'


def _labels() -> np.ndarray:
    lab = np.zeros(GRID.shape, np.int32)
    lab[1:5, 2:8, 2:10] = 1
    lab[2:4, 3:6, 3:6] = 2        # inside the body: a hole in its contours
    lab[2:4, 4, 4] = 3            # inside the liver
    lab[1:3, 6, 8] = 4            # two voxels touching at a corner
    lab[1:3, 7, 9] = 4
    return lab


def _tiny_study(root: Path, with_ct: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lab = _labels()
    write_labels(root / "labels.nii.gz", LabelMap(lab, GRID, NAMES))
    (root / "names.json").write_text(json.dumps({str(k): v for k, v in NAMES.items()}))
    tps = ""
    for i, t in enumerate((2.0, 24.0)):
        spect = (lab > 0) * 1000.0 * np.exp(-t / 100.0) + 1.0
        write_image(root / f"spect{i}.nii.gz", Image(spect, GRID, "activity concentration",
                                                     "Bq/mL"))
        tps += f'[[timepoints]]\ntime_h = {t}\nspect = "spect{i}.nii.gz"\n'
        if with_ct:
            write_image(root / f"ct{i}.nii.gz", Image(np.where(lab > 0, 40.0, -1000.0), GRID,
                                                      "CT", "HU"))
            tps += f'ct = "ct{i}.nii.gz"\n'
    (root / "study.toml").write_text(
        '[study]\nname = "tiny"\nnuclide = "Lu-177"\nadministered_activity_mbq = 7400.0\n'
        '[spect]\nunits = "Bq/mL"\n'
        '[structures]\nlabels = "labels.nii.gz"\nnames = "names.json"\n' + PLAN + tps)
    return root / "study.toml"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(original study.toml, exported study.toml) of the tiny study."""
    root = tmp_path_factory.mktemp("export")
    src = _tiny_study(root / "nifti")
    return src, export_study_dicom(src, root / "dicom", body_part="CHESTABDOMEN")


def _strict_read(path):
    """pydicom read with value validation raising (VR, length, characters)."""
    old = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.RAISE
    try:
        return pydicom.dcmread(path)
    finally:
        config.settings.reading_validation_mode = old


def _dice(a, b) -> float:
    return 2.0 * np.sum(a & b) / max(np.sum(a) + np.sum(b), 1)


# ---- (1) structures round trip ---------------------------------------------------------

def test_pixel_edge_polygons_refill_to_the_mask():
    rng = np.random.default_rng(3)
    from voxdose.io.rtstruct import fill_polygon

    for _ in range(100):
        m = rng.random(tuple(rng.integers(1, 12, 2))) < rng.uniform(0.2, 0.8)
        back = np.zeros_like(m)
        for p in mask_polygons(m):
            fill_polygon(back, p[:, 0], p[:, 1])
            e = np.diff(np.r_[p, p[:2]], axis=0)
            cross = e[:-1, 0] * e[1:, 1] - e[:-1, 1] * e[1:, 0]
            assert np.all(cross != 0)  # no collinear vertices
        np.testing.assert_array_equal(back, m)
    ring = np.ones((3, 3), bool)
    ring[1, 1] = False
    assert len(mask_polygons(ring)) == 2  # outline and hole


def test_exported_rtstruct_rasterises_to_the_original_labels(exported):
    """Tolerance: Dice >= 0.98 and volumes within 2 % per structure; pixel-edge contours
    are exact under the voxel-centre rule, so the labels come back voxel for voxel."""
    src, dst = exported
    a, b = load_study(src), load_study(dst)
    assert b.rtstruct is not None and b.labels is None and b.names == NAMES
    la, lb = read_study_labels(a), read_study_labels(b)
    assert lb.grid.same_as(la.grid, tol_mm=1e-6)
    for value in NAMES:
        ma, mb = la.data == value, lb.data == value
        assert _dice(ma, mb) >= 0.98
        assert abs(mb.sum() - ma.sum()) <= 0.02 * ma.sum()
    np.testing.assert_array_equal(la.data, lb.data)


def test_rtstruct_on_an_oblique_ct_round_trips(tmp_path):
    rot = np.array([[1, 0, 0], [0, np.cos(0.3), -np.sin(0.3)], [0, np.sin(0.3), np.cos(0.3)]])
    g = Grid.from_spacing(GRID.shape, (3.0, 2.5, 2.0), (5.0, -3.0, 12.0), direction=rot)
    lab = LabelMap(_labels(), g, NAMES)
    files = dw.write_ct(tmp_path / "ct", np.zeros(g.shape), g)
    p = write_labels_rtstruct(tmp_path / "rs.dcm", lab, series_ref(files, g))
    back = rasterize_rtstruct(read_rtstruct_header(p), g)
    np.testing.assert_array_equal(back.data, lab.data)


def test_contours_reference_the_exported_ct(exported):
    _, dst = exported
    st = load_study(dst)
    ct_dir = st.timepoints[st.reference_index].ct
    ct = {str(d.SOPInstanceUID): d for d in map(pydicom.dcmread, sorted(ct_dir.glob("*.dcm")))}
    rs = _strict_read(st.rtstruct.path)
    fr = rs.ReferencedFrameOfReferenceSequence[0]
    assert fr.FrameOfReferenceUID == next(iter(ct.values())).FrameOfReferenceUID
    listed = fr.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert {str(i.ReferencedSOPInstanceUID) for i in listed.ContourImageSequence} == set(ct)
    assert [r.ROIName for r in rs.StructureSetROISequence] == list(NAMES.values())
    for rc in rs.ROIContourSequence:
        for c in rc.ContourSequence:
            img = ct[str(c.ContourImageSequence[0].ReferencedSOPInstanceUID)]
            z = np.array(c.ContourData, float).reshape(-1, 3)[:, 2]
            np.testing.assert_allclose(z, float(img.ImagePositionPatient[2]), atol=1e-6)
    n_body = len(rs.ROIContourSequence[0].ContourSequence)
    assert n_body == 4 + 2  # one outline per slice, and the liver's hole on two slices


def test_without_ct_the_rtstruct_references_the_nm_frames(tmp_path):
    src = _tiny_study(tmp_path / "nifti", with_ct=False)
    dst = export_study_dicom(src, tmp_path / "dicom")
    st = load_study(dst)
    rs = pydicom.dcmread(st.rtstruct.path)
    frames = {int(c.ContourImageSequence[0].ReferencedFrameNumber)
              for rc in rs.ROIContourSequence for c in rc.ContourSequence}
    assert frames == {2, 3, 4, 5}  # the structures' slices 1..4 are frames 2..5
    np.testing.assert_array_equal(read_study_labels(st).data, _labels())


# ---- (2) Type 1 / 2 attributes ---------------------------------------------------------

def _exported_objects(dst: Path) -> dict[str, Path]:
    d = dst.parent
    return {"CT Image": d / "tp01" / "ct" / "CT000001.dcm",
            "NM Image": d / "tp01" / "spect" / "NM000001.dcm",
            "RT Structure Set": d / "rtstruct" / "RS000001.dcm"}


def _rt_dose(tmp_path, st, **kw) -> Path:
    lab = read_study_labels(st)
    dose = Image(np.random.default_rng(0).gamma(2.0, 1.0, lab.grid.shape), lab.grid,
                 "absorbed dose", "Gy", {"density_mode": "none"})
    return dw.write_rt_dose(tmp_path / "rd.dcm", dose,
                            reference=st.timepoints[st.reference_index].ct, **kw)


@pytest.mark.parametrize("iod", ["CT Image", "NM Image", "RT Structure Set", "RT Dose"])
def test_every_type_1_and_2_attribute_is_present(exported, tmp_path, iod):
    _, dst = exported
    path = _rt_dose(tmp_path, load_study(dst)) if iod == "RT Dose" \
        else _exported_objects(dst)[iod]
    ds = _strict_read(path)
    missing = [k for k in dw.required_attributes(iod) if k not in ds]
    assert not missing, f"{iod}: {missing}"
    assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID
    assert str(ds.PatientID) == "VOXDOSE-PHANTOM" and ds.PatientSex == "M"


def test_the_table_holds_the_attributes_the_issue_names(exported):
    for iod in ("CT Image", "NM Image", "RT Structure Set", "RT Dose"):
        assert {"StudyID", "SeriesNumber", "PatientSex", "PatientBirthDate",
                "AccessionNumber", "ReferringPhysicianName"} <= set(dw.required_attributes(iod))
    assert {"PatientPosition", "KVP", "AcquisitionNumber"} <= set(
        dw.required_attributes("CT Image"))
    assert {"OperatorsName", "DoseSummationType"} <= set(dw.required_attributes("RT Dose"))
    ct = pydicom.dcmread(_exported_objects(exported[1])["CT Image"])
    assert ct.StudyID == "1" and ct.PatientPosition == "HFS" and ct.KVP in ("", None)
    series = {pydicom.dcmread(p).SeriesNumber for p in _exported_objects(exported[1]).values()}
    assert len(series) == 3  # NM, CT and RTSTRUCT numbered apart


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
def test_dciodvfy_finds_no_error(exported, tmp_path):
    """dicom3tools' IOD checker, where installed (a 32-bit RT Dose trips an assertion in its
    pixel reader, so the dose is checked with its pixels stored in 16 bits)."""
    _, dst = exported
    st = load_study(dst)
    rs = st.rtstruct
    ref = dw.structure_set_ref(rs.path, {rs.names[v]: rs.roi_numbers[v] for v in rs.names})
    lab = read_study_labels(st)
    from voxdose.analysis.dvh import compute_dvhs

    rd = pydicom.dcmread(_rt_dose(tmp_path, st, structure_set=ref, dvhs=compute_dvhs(
        Image(np.ones(lab.grid.shape), lab.grid), lab)))
    a = rd.pixel_array
    rd.BitsAllocated = rd.BitsStored = 16
    rd.HighBit = 15
    rd.PixelData = (a >> 16).astype("<u2").tobytes()
    rd.save_as(tmp_path / "rd16.dcm")
    for p in [*_exported_objects(dst).values(), tmp_path / "rd16.dcm"]:
        out = subprocess.run(["dciodvfy", str(p)], capture_output=True, text=True)
        errors = [ln for ln in (out.stdout + out.stderr).splitlines() if "Error" in ln]
        assert not errors, f"{p.name}: {errors}"


# ---- (3) SimpleITK ---------------------------------------------------------------------

def test_simpleitk_reads_the_ct_series_and_the_rt_dose(exported, tmp_path):
    _, dst = exported
    st = load_study(dst)
    ct_dir = st.timepoints[0].ct
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(ct_dir)))
    ct = reader.Execute()
    np.testing.assert_allclose(grid_from_sitk(ct).affine, GRID.affine, atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ct),
                                  np.where(_labels() > 0, 40, -1000))
    p = _rt_dose(tmp_path, st)
    img = sitk.ReadImage(str(p))
    ds = pydicom.dcmread(p)
    np.testing.assert_allclose(grid_from_sitk(img).affine, GRID.affine, atol=1e-5)
    dose = sitk.GetArrayFromImage(img) * float(ds.DoseGridScaling)
    np.testing.assert_allclose(dose, ds.pixel_array * float(ds.DoseGridScaling))


# ---- (4) the exported study.toml -------------------------------------------------------

def test_exported_study_keeps_plan_and_loads(exported, capsys):
    src, dst = exported
    a, b = load_study(src), load_study(dst)
    assert "[plan]" in dst.read_text()
    assert b.plan_limits_gy == a.plan_limits_gy == {"liver": 30.0, "marrow": 1.0}
    assert b.plan_after_h == a.plan_after_h == {"marrow": 336.0}
    assert b.sex == a.sex and b.times_h == pytest.approx(a.times_h)
    from voxdose.cli.app import main

    out = dst.parent.parent / "cli"
    assert main(["export-dicom", str(src), str(out)]) == 0
    assert (out / "rtstruct" / "RS000001.dcm").is_file()
    assert load_study(out / "study.toml").plan_limits_gy == a.plan_limits_gy


# ---- (5) RT Dose tags ------------------------------------------------------------------

def test_rt_dose_summation_and_plan_reference_are_consistent(exported, tmp_path):
    st = load_study(exported[1])
    ds = pydicom.dcmread(_rt_dose(tmp_path, st))
    assert ds.DoseSummationType == dw.RPT_SUMMATION and "ReferencedRTPlanSequence" not in ds
    assert ds.TissueHeterogeneityCorrection == "WATER" and ds.SeriesNumber == 1
    ds = pydicom.dcmread(_rt_dose(tmp_path, st, summation="PLAN", plan_uids=("1.2.3.4",)))
    assert ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == "1.2.3.4"
    assert ds.ReferencedRTPlanSequence[0].ReferencedSOPClassUID == dw.RT_PLAN_STORAGE
    for kw, match in (({"summation": "PLAN"}, "needs one RT Plan"),
                      ({"summation": "MULTI_PLAN", "plan_uids": ("1.2",)}, "two or more"),
                      ({"summation": "RECORD"}, "voxdose writes"),
                      ({"plan_uids": ("1.2",)}, "refers to no RT Plan")):
        with pytest.raises(InputError, match=match):
            _rt_dose(tmp_path, st, **kw)


def test_rt_dose_references_the_rtstruct_its_structures_came_from(exported, tmp_path):
    from voxdose.analysis.dvh import compute_dvhs
    from voxdose.pipeline.stages import _rtdose_structures

    st = load_study(exported[1])
    lab = read_study_labels(st)
    dose = Image(np.random.default_rng(1).gamma(2.0, 1.0, lab.grid.shape), lab.grid)
    dvhs = compute_dvhs(dose, lab)
    kw = _rtdose_structures(SimpleNamespace(study=st, dvhs={"kernel": dvhs}))
    ds = pydicom.dcmread(_rt_dose(tmp_path, st, **kw))
    rs = pydicom.dcmread(st.rtstruct.path)
    assert ds.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == rs.SOPInstanceUID
    numbers = {r.ROIName: int(r.ROINumber) for r in rs.StructureSetROISequence}
    for item, d in zip(ds.DVHSequence, dvhs):
        assert int(item.DVHReferencedROISequence[0].ReferencedROINumber) == numbers[d.name]
        vol = np.array(item.DVHData[1::2], float)
        assert vol[0] == pytest.approx(d.volume_ml, rel=1e-6)  # cumulative: all of it >= 0 Gy
        assert np.all(np.diff(vol) <= 0) and float(item.DVHMaximumDose) == pytest.approx(
            d.doses_gy.max(), rel=1e-6)
    src = load_study(exported[0])  # structures from a label image: no reference
    assert _rtdose_structures(SimpleNamespace(study=src, dvhs={"kernel": dvhs})) == {}
