"""DICOM studies through study.toml: Bq/mL from BQML and from CNTS + calibration, vendor
decay correction undone on known numbers, times from DICOM, clear errors for missing or
contradictory tags, RTSTRUCT structures, and the demo study exported as DICOM assembling
to the same 4D activity series as its NIfTI original."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pydicom
import pytest

from voxdose.imaging.assemble import assemble_series
from voxdose.core.errors import StudyError
from voxdose.core.grid import Grid
from voxdose.io.dicom_write import write_ct, write_nm, write_rtstruct
from voxdose.study.load import load_study, study_inputs
from voxdose.core.nuclide import load_nuclide

ADMIN = datetime(2024, 3, 1, 9, 30)
GRID = Grid.from_spacing((4, 5, 6), (4.0, 4.0, 4.0), (-10.0, -8.0, 20.0))
CONC = 1000.0  # Bq/mL at acquisition


def _nm(folder, t_h, values=None, **kw):
    args = dict(acquisition=ADMIN + timedelta(hours=t_h), administration=ADMIN,
                nuclide="Lu-177", total_dose_bq=7.4e9, frame_duration_s=1200.0)
    args.update(kw)
    v = np.full(GRID.shape, CONC) if values is None else values
    return write_nm(folder, v, GRID, **args)


def _toml(tmp_path, body, tps):
    text = "[study]\n" + body + "\n" + "".join(f"[[timepoints]]\n{t}\n" for t in tps)
    p = tmp_path / "study.toml"
    p.write_text(text)
    return p


def _frames(study_path):
    series, _, labels = assemble_series(load_study(study_path))
    return series, labels


def test_bqml_times_nuclide_activity_from_dicom(tmp_path):
    _nm(tmp_path / "t1", 2.0)
    _nm(tmp_path / "t2", 26.5)
    st = load_study(_toml(tmp_path, "", ['spect = "t1"', 'spect = "t2"']))
    assert st.nuclide.name == "Lu-177" and st.administered_activity_mbq == pytest.approx(7400)
    assert st.times_h == pytest.approx([2.0, 26.5])
    assert st.timepoints[0].info["time_source"].startswith("DICOM")
    assert len(study_inputs(st)) == 3  # study file + one multi-frame file per time point
    series, _ = _frames(_toml(tmp_path, "", ['spect = "t2"']))
    np.testing.assert_allclose(series.frames_bq_ml, CONC, rtol=1e-4)
    np.testing.assert_allclose(series.times_s, [26.5 * 3600.0])


def test_time_h_against_the_dicom_acquisition_time(tmp_path):
    """time_h in the study file and acquisition - administration of the files: within 60 s
    the study file's value (recorded with the DICOM one); 15 min apart a contradiction (an
    error naming both; before, the study file won silently), or with override_dicom the
    study file's value and a warning."""
    _nm(tmp_path / "t1", 2.0)
    st = load_study(_toml(tmp_path, "", ['spect = "t1"\ntime_h = 2.01']))   # 36 s off
    assert st.times_h == [2.01] and st.timepoints[0].info["time_h_from_dicom"] == 2.0
    with pytest.raises(StudyError, match=r"timepoints\[0\]\.time_h = 2\.25 h in the study "
                                         r"file contradicts the acquisition .* = 2 h of .*t1"):
        load_study(_toml(tmp_path, "", ['spect = "t1"\ntime_h = 2.25']))
    st = load_study(_toml(tmp_path, "override_dicom = true", ['spect = "t1"\ntime_h = 2.25']))
    assert st.times_h == [2.25]
    assert any("time_h = 2.25 h" in w and "override_dicom" in w for w in st.info["warnings"])


@pytest.mark.parametrize("how", ["factor", "cps"])
def test_cnts_with_calibration(tmp_path, how):
    counts = np.full(GRID.shape, 400.0)
    _nm(tmp_path / "t1", 4.0, counts, units="CNTS")
    vox_ml = GRID.voxel_volume_ml
    if how == "factor":
        spect, expect = "calibration_factor = 2.5", 400.0 * 2.5
    else:  # 10 cps/MBq, 1200 s frame: counts / (1200 s * 10 cps/MBq) MBq per voxel
        spect, expect = "calibration_cps_per_mbq = 10.0", 400.0 / 1200.0 / 10.0 * 1e6 / vox_ml
    p = _toml(tmp_path, "[spect]\n" + spect + "\n", ['spect = "t1"'])
    series, _ = _frames(p)
    np.testing.assert_allclose(series.frames_bq_ml, expect, rtol=2e-4)


def test_cnts_without_calibration_is_an_error(tmp_path):
    _nm(tmp_path / "t1", 4.0, np.full(GRID.shape, 400.0), units="CNTS")
    with pytest.raises(StudyError, match=r"CNTS.*spect.calibration_factor"):
        load_study(_toml(tmp_path, "", ['spect = "t1"']))


def test_bqml_with_a_calibration_is_contradictory(tmp_path):
    _nm(tmp_path / "t1", 4.0)
    with pytest.raises(StudyError, match="already in Bq/mL"):
        load_study(_toml(tmp_path, "[spect]\ncalibration_factor = 3.0\n", ['spect = "t1"']))


def test_admin_decay_correction_is_undone_on_known_numbers(tmp_path):
    lu = load_nuclide("Lu-177")
    # Lu-177 half-life 6.647 d (ICRP 107): after 48 h a fraction 2^(-48/159.53) = 0.8117 remains
    assert 2 ** (-48.0 * 3600 / lu.half_life_s) == pytest.approx(0.8117, abs=2e-4)
    dc_values = np.full(GRID.shape, CONC / 0.8117)  # what a vendor stores, corrected to ADMIN
    _nm(tmp_path / "t1", 48.0, dc_values, decay_correction="ADMIN")
    st = load_study(_toml(tmp_path, "", ['spect = "t1"']))
    assert st.timepoints[0].decay_undo == pytest.approx(0.8117, abs=2e-4)
    series, _ = _frames(st.path)
    np.testing.assert_allclose(series.frames_bq_ml, CONC, rtol=5e-4)


def test_start_decay_correction_uses_the_series_time(tmp_path):
    lu = load_nuclide("Lu-177")
    f = _nm(tmp_path / "t1", 48.0, decay_correction="START")[0]
    ds = pydicom.dcmread(f)  # series (reference) time 2 h before the acquisition start
    ds.SeriesTime = (ADMIN + timedelta(hours=46)).strftime("%H%M%S")
    ds.save_as(f)
    st = load_study(_toml(tmp_path, "", ['spect = "t1"']))
    assert st.timepoints[0].decay_undo == pytest.approx(
        math.exp(-lu.decay_constant_per_s * 7200.0), rel=1e-9)


def test_decay_correction_contradiction_and_missing_tag(tmp_path):
    f = _nm(tmp_path / "t1", 4.0)[0]
    with pytest.raises(StudyError, match=r"decay_corrected = true contradicts.*NONE"):
        load_study(_toml(tmp_path, "[spect]\ndecay_corrected = true\n", ['spect = "t1"']))
    ds = pydicom.dcmread(f)
    del ds.DecayCorrection
    ds.save_as(f)
    with pytest.raises(StudyError, match=r"DecayCorrection \(0054,1102\) is missing.*"
                                         r"spect.decay_corrected"):
        load_study(_toml(tmp_path, "", ['spect = "t1"']))
    assert load_study(_toml(tmp_path, "[spect]\ndecay_corrected = false\n",
                            ['spect = "t1"'])).timepoints[0].decay_undo == 1.0


@pytest.mark.parametrize("tag, pattern", [
    ("Units", r"Units \(0054,1001\) is missing.*spect.units"),
    ("AcquisitionTime", r"AcquisitionDate/AcquisitionTime.*timepoints\[0\].time_h"),
    ("Radiopharmaceutical", r"RadiopharmaceuticalStartDateTime \(0018,1078\) is missing.*"
                            r"study.administration_datetime"),
])
def test_missing_tags_name_tag_file_and_key(tmp_path, tag, pattern):
    f = _nm(tmp_path / "t1", 4.0)[0]
    ds = pydicom.dcmread(f)
    if tag == "Radiopharmaceutical":
        del ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime
        del ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartTime
    else:
        delattr(ds, tag)
    ds.save_as(f)
    with pytest.raises(StudyError, match=pattern) as exc:
        load_study(_toml(tmp_path, 'nuclide = "Lu-177"\nadministered_activity_mbq = 7400\n',
                         ['spect = "t1"']))
    assert f.name in str(exc.value)


def test_administration_datetime_key_supplies_the_missing_start(tmp_path):
    f = _nm(tmp_path / "t1", 4.0)[0]
    ds = pydicom.dcmread(f)
    del ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime
    ds.save_as(f)
    st = load_study(_toml(tmp_path, 'administration_datetime = "2024-03-01T09:30:00"\n',
                          ['spect = "t1"']))
    assert st.times_h == pytest.approx([4.0])
    with pytest.raises(StudyError, match=r"administration_datetime.*contradicts"):
        _nm(tmp_path / "t2", 4.0)
        load_study(_toml(tmp_path, 'administration_datetime = "2024-03-01T11:30:00"\n',
                         ['spect = "t2"']))


def test_two_patients_mixed_nuclides_and_nuclide_contradiction(tmp_path):
    _nm(tmp_path / "a", 1.0, patient_id="P1")
    _nm(tmp_path / "b", 24.0, patient_id="P2")
    with pytest.raises(StudyError, match=r"different patients.*P1.*P2"):
        load_study(_toml(tmp_path, "", ['spect = "a"', 'spect = "b"']))
    _nm(tmp_path / "c", 24.0, nuclide="Y-90", patient_id="P1")
    with pytest.raises(StudyError, match=r"disagree on the nuclide.*Lu-177.*Y-90"):
        load_study(_toml(tmp_path, "", ['spect = "a"', 'spect = "c"']))
    with pytest.raises(StudyError, match=r"study.nuclide = Y-90 contradicts"):
        load_study(_toml(tmp_path, 'nuclide = "Y-90"\n', ['spect = "a"']))


def test_two_series_in_one_folder_needs_a_uid(tmp_path):
    _nm(tmp_path / "t1" / "a", 4.0)
    _nm(tmp_path / "t1" / "b", 4.0)
    with pytest.raises(StudyError, match=r"holds 2 NM/PT series.*spect_series_uid"):
        load_study(_toml(tmp_path, "", ['spect = "t1"']))
    uid = pydicom.dcmread(next((tmp_path / "t1" / "b").iterdir())).SeriesInstanceUID
    st = load_study(_toml(tmp_path, "", [f'spect = "t1"\nspect_series_uid = "{uid}"']))
    assert st.timepoints[0].spect_dicom.series.uid == uid


def test_truncated_file_fails_validation(tmp_path):
    f = _nm(tmp_path / "t1", 4.0, multiframe=False)[2]
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(StudyError, match=f.name + ".*truncated"):
        load_study(_toml(tmp_path, "", ['spect = "t1"']))


def _ct_study(tmp_path, rtstruct_for=None):
    ct_grid = Grid.from_spacing((8, 10, 12), (2.0, 2.0, 2.0), (-9.0, -7.0, 19.0))
    for_uid = "1.2.826.0.1.3680043.8.498.1"
    write_ct(tmp_path / "t1" / "ct", np.zeros(ct_grid.shape), ct_grid, for_uid=for_uid)
    _nm(tmp_path / "t1" / "nm", 4.0, for_uid=for_uid)
    zs = [ct_grid.index_to_world([k, 0, 0])[2] for k in range(2, 6)]
    box = [np.array([[-4.0, -2.0, z], [4.0, -2.0, z], [4.0, 4.0, z], [-4.0, 4.0, z]])
           for z in zs]
    write_rtstruct(tmp_path / "rs.dcm", {"lesion": box}, for_uid=rtstruct_for or for_uid)
    return _toml(tmp_path, '[structures]\nrtstruct = "rs.dcm"\n',
                 ['spect = "t1/nm"\nct = "t1/ct"'])


def test_rtstruct_structures_on_the_reference_grid(tmp_path):
    p = _ct_study(tmp_path)
    st = load_study(p)
    assert st.names == {1: "lesion"}
    series, labels = _frames(p)
    assert labels.names == {1: "lesion"} and labels.grid.same_as(series.grid)
    from voxdose.study.images import read_study_labels

    on_ct = read_study_labels(st)  # rasterised on the reference CT's 2 mm grid
    assert on_ct.grid.same_as(st.timepoints[0].ct_dicom.grid)
    assert (on_ct.data == 1).sum() == 4 * 3 * 4  # centres inside 8 x 6 mm, on 4 slices
    vol = (labels.data == 1).sum() * series.grid.voxel_volume_ml  # majority vote, 4 mm grid
    assert 0.1 < vol < 0.8


def test_rtstruct_in_another_frame_of_reference_is_an_error(tmp_path):
    with pytest.raises(StudyError, match="references frame of reference"):
        load_study(_ct_study(tmp_path, rtstruct_for="1.2.3.999"))


def test_demo_study_as_dicom_assembles_like_nifti(small_study, tmp_path):
    """The --small synthetic study exported as DICOM (NM BQML + CT series + label NIfTI)
    gives the same registered 4D activity series and labels as the NIfTI study."""
    from voxdose.study.export import export_study_dicom

    nifti = load_study(small_study)
    # three time points keep the test fast; the reader does not care
    keep = (0, 2, 4)
    sub = small_study.parent / "study_sub.toml"
    text = small_study.read_text().split("[[timepoints]]")
    sub.write_text(text[0] + "".join("[[timepoints]]" + text[1 + k] for k in keep))
    d = export_study_dicom(sub, tmp_path / "dicom")
    st = load_study(d)
    assert st.times_h == pytest.approx([nifti.times_h[k] for k in keep], abs=1e-6)
    assert st.nuclide.name == nifti.nuclide.name
    assert st.administered_activity_mbq == pytest.approx(nifti.administered_activity_mbq)
    a, _, la = assemble_series(load_study(sub))
    b, _, lb = assemble_series(st)
    assert b.grid.same_as(a.grid, tol_mm=1e-3)
    np.testing.assert_allclose(b.times_s, a.times_s, atol=1e-3)
    step = a.frames_bq_ml.max() / 65535  # uint16 storage of the NM frames
    # The geometries differ by ~5e-8 mm (NIfTI float32 header, DICOM decimal strings), so
    # the registrations differ by microns; a dose-grid voxel whose centre maps within
    # microns of a moving frame's edge then flips between its activity and 0 (outside the
    # frame). Compare inside the outermost layer; the total activity below includes it.
    inner = (slice(None),) + (slice(1, -1),) * 3
    assert np.max(np.abs(b.frames_bq_ml - a.frames_bq_ml)[inner]) < 20 * step
    np.testing.assert_allclose(b.total_activity_bq(), a.total_activity_bq(), rtol=1e-3)
    assert np.mean(la.data == lb.data) > 0.999


# ---- contradictions between the study file and the tags, or between the series ----------

def _spect_ct(folder, t_h, for_uid):
    """One SPECT/CT acquisition: NM and CT series sharing ``for_uid``."""
    ct_grid = Grid.from_spacing((8, 10, 12), (2.0, 2.0, 2.0), (-9.0, -7.0, 19.0))
    write_ct(folder / "ct", np.zeros(ct_grid.shape), ct_grid, for_uid=for_uid)
    return _nm(folder / "nm", t_h, for_uid=for_uid)[0]


def test_ct_of_another_spect_ct_is_an_error(tmp_path):
    """Two time points' ct entries swapped: each CT lies in the other acquisition's frame
    of reference. Refused naming the time point and both folders; not checked when one
    series lacks FrameOfReferenceUID."""
    nm1 = _spect_ct(tmp_path / "tp01", 4.0, "1.2.826.0.1.3680043.8.498.11")
    _spect_ct(tmp_path / "tp02", 24.0, "1.2.826.0.1.3680043.8.498.12")
    right = ['spect = "tp01/nm"\nct = "tp01/ct"', 'spect = "tp02/nm"\nct = "tp02/ct"']
    assert load_study(_toml(tmp_path, "", right)).times_h == pytest.approx([4.0, 24.0])
    swapped = ['spect = "tp01/nm"\nct = "tp02/ct"', 'spect = "tp02/nm"\nct = "tp01/ct"']
    with pytest.raises(StudyError, match=r"timepoints\[0\]: the SPECT .* lie in different "
                                         r"frames of reference: this CT was not acquired "
                                         r"with this SPECT") as exc:
        load_study(_toml(tmp_path, "", swapped))
    msg = str(exc.value)
    assert len(msg.splitlines()) == 1 and ".498.11" in msg and ".498.12" in msg
    assert str(tmp_path / "tp01" / "nm") in msg and str(tmp_path / "tp02" / "ct") in msg
    ds = pydicom.dcmread(nm1)  # the SPECT without the tag: nothing to compare
    del ds.FrameOfReferenceUID
    ds.save_as(nm1)
    with pytest.raises(StudyError, match=r"timepoints\[1\]: .*different frames"):
        load_study(_toml(tmp_path, "", swapped))
    one_tp = ['spect = "tp01/nm"\nct = "tp02/ct"\ntime_h = 4.0']
    assert load_study(_toml(tmp_path, "", one_tp)).times_h == [4.0]


def test_activity_key_contradicting_radionuclide_total_dose(tmp_path):
    """Tags 7400 MBq, study file 7000: an error naming both values and the file (it used
    to take 7000 silently); within 1 % (the sidecars' tolerance) the key is used."""
    f = _nm(tmp_path / "t1", 4.0)[0]
    with pytest.raises(StudyError, match=r"study.administered_activity_mbq = 7000 in the "
                                         r"study file contradicts RadionuclideTotalDose "
                                         r"\(0018,1074\) = 7400 MBq in .*correct one") as exc:
        load_study(_toml(tmp_path, "administered_activity_mbq = 7000\n", ['spect = "t1"']))
    assert str(f) in str(exc.value)
    st = load_study(_toml(tmp_path, "administered_activity_mbq = 7410\n", ['spect = "t1"']))
    assert st.administered_activity_mbq == 7410
    _nm(tmp_path / "t2", 4.0, total_dose_bq=None)  # no tag: the key is the only source
    st = load_study(_toml(tmp_path, "administered_activity_mbq = 7000\n", ['spect = "t2"']))
    assert st.administered_activity_mbq == 7000


def test_activity_from_a_sidecar_contradicting_radionuclide_total_dose(tmp_path):
    """A DICOM time point and an image-file one whose JSON sidecar gives another activity:
    the error names the sidecar, not the study file."""
    import json

    from voxdose.core.grid import Image
    from voxdose.io.sitk_adapter import sidecar_path, write_image

    _nm(tmp_path / "t1", 4.0)
    frame = tmp_path / "spect_24h.nii.gz"
    write_image(frame, Image(np.full(GRID.shape, CONC), GRID, "activity concentration",
                             "Bq/mL"))
    sidecar_path(frame).write_text(json.dumps({"administered_activity_mbq": 7000.0}))
    with pytest.raises(StudyError, match=r"the administered activity 7000 MBq in the JSON "
                                         r"sidecar .*spect_24h.json contradicts "
                                         r"RadionuclideTotalDose"):
        load_study(_toml(tmp_path, "", ['spect = "t1"',
                                        'spect = "spect_24h.nii.gz"\ntime_h = 24.0']))


def test_series_disagreeing_on_radionuclide_total_dose(tmp_path):
    """Time points whose NM series carry different RadionuclideTotalDose (it used to take
    the first): an error naming each series and its value, with or without the key."""
    f1 = _nm(tmp_path / "t1", 4.0)[0]
    f2 = _nm(tmp_path / "t2", 24.0, total_dose_bq=7.0e9)[0]
    for body in ("", "administered_activity_mbq = 7400\n"):
        with pytest.raises(StudyError, match=r"time points disagree on the administered "
                                             r"activity \(RadionuclideTotalDose \(0018,1074\)"
                                             r"\): 7400 MBq in .*timepoints\[0\].*7000 MBq in "
                                             r".*timepoints\[1\]") as exc:
            load_study(_toml(tmp_path, body, ['spect = "t1"', 'spect = "t2"']))
        assert str(f1) in str(exc.value) and str(f2) in str(exc.value)
    _nm(tmp_path / "t3", 24.0, total_dose_bq=7.401e9)  # within 1 %: one administration
    st = load_study(_toml(tmp_path, "", ['spect = "t1"', 'spect = "t3"']))
    assert st.administered_activity_mbq == pytest.approx(7400)


@pytest.mark.parametrize("multiframe, tag", [
    (True, r"ActualFrameDuration \(0018,1242\) x NumberOfFramesInRotation"),
    (False, r"ActualFrameDuration \(0018,1242\) = 1200 s"),
])
def test_frame_duration_key_contradicting_the_file(tmp_path, multiframe, tag):
    """timepoints[i].frame_duration_s is for files without the tag: given with a file that
    has another duration (1200 s) it is an error naming the time point, both values and the
    file (it used to override the tag), whatever the units; the same value is accepted."""
    f = _nm(tmp_path / "t1", 4.0, np.full(GRID.shape, 400.0), units="CNTS",
            multiframe=multiframe)[0]
    cps = "[spect]\ncalibration_cps_per_mbq = 10.0\n"
    with pytest.raises(StudyError, match=r"timepoints\[0\]\.frame_duration_s = 600 s in the "
                                         r"study file contradicts " + tag) as exc:
        load_study(_toml(tmp_path, cps, ['spect = "t1"\nframe_duration_s = 600.0']))
    assert "1200 s" in str(exc.value) and str(f) in str(exc.value)
    _nm(tmp_path / "t2", 4.0, multiframe=multiframe)  # BQML: the key unused, still refused
    with pytest.raises(StudyError, match=r"frame_duration_s = 600 s .*contradicts"):
        load_study(_toml(tmp_path, "", ['spect = "t2"\nframe_duration_s = 600.0']))
    st = load_study(_toml(tmp_path, cps, ['spect = "t1"\nframe_duration_s = 1200.0']))
    expect = 1e6 / (10.0 * 1200.0 * GRID.voxel_volume_ml)
    assert st.timepoints[0].to_bq_ml == pytest.approx(expect, rel=1e-12)


def test_frame_duration_key_supplies_a_missing_tag(tmp_path):
    f = _nm(tmp_path / "t1", 4.0, np.full(GRID.shape, 400.0), units="CNTS",
            multiframe=False, frame_duration_s=None)[0]
    assert pydicom.dcmread(f).get("ActualFrameDuration") is None
    st = load_study(_toml(tmp_path, "[spect]\ncalibration_cps_per_mbq = 10.0\n",
                          ['spect = "t1"\nframe_duration_s = 600.0']))
    assert st.timepoints[0].to_bq_ml == pytest.approx(
        1e6 / (10.0 * 600.0 * GRID.voxel_volume_ml), rel=1e-12)


def test_override_dicom_lets_the_study_file_decide_and_says_so(tmp_path):
    """[study] override_dicom = true: the study file's activity (a net activity after the
    residual), frame duration and a SPECT/CT pairing in two frames of reference are used,
    each contradiction a warning in the study's info (provenance, the run's output); the
    errors without it name the key."""
    _nm(tmp_path / "t1", 4.0)
    with pytest.raises(StudyError, match="override_dicom = true"):
        load_study(_toml(tmp_path, "administered_activity_mbq = 7000\n", ['spect = "t1"']))
    st = load_study(_toml(tmp_path, "administered_activity_mbq = 7000\noverride_dicom = true\n",
                          ['spect = "t1"']))
    assert st.administered_activity_mbq == 7000
    (w,) = st.info["warnings"]
    assert "7400 MBq" in w and "override_dicom" in w
    _nm(tmp_path / "t2", 4.0, np.full(GRID.shape, 400.0), units="CNTS", multiframe=False)
    cps = "override_dicom = true\n[spect]\ncalibration_cps_per_mbq = 10.0\n"
    st = load_study(_toml(tmp_path, cps, ['spect = "t2"\nframe_duration_s = 600.0']))
    assert st.timepoints[0].to_bq_ml == pytest.approx(
        1e6 / (10.0 * 600.0 * GRID.voxel_volume_ml), rel=1e-12)
    assert any("frame_duration_s = 600 s" in w for w in st.info["warnings"])
    _spect_ct(tmp_path / "tp01", 4.0, "1.2.826.0.1.3680043.8.498.11")
    _spect_ct(tmp_path / "tp02", 24.0, "1.2.826.0.1.3680043.8.498.12")
    swapped = ['spect = "tp01/nm"\nct = "tp02/ct"', 'spect = "tp02/nm"\nct = "tp01/ct"']
    st = load_study(_toml(tmp_path, "override_dicom = true\n", swapped))
    assert sum("different frames of reference" in w for w in st.info["warnings"]) == 2
    assert "warnings" not in load_study(_toml(tmp_path, "override_dicom = true\n",
                                              ['spect = "t1"'])).info
