"""Real-world DICOM quirks, each rebuilt here from small synthetic files (pydicom and
voxdose's own writers; no third-party files): refused up front in one line and named for
what they are, never read into a wrong dose.

* SPECT projections (a GE Discovery 670-like NM TOMO object: 6 energy windows x 2 heads x
  30 views = 360 frames, with a slice-spacing tag) and several energy windows in one
  object; a reconstruction carrying the same camera tags still reads;
* a planar whole-body image as Secondary Capture with Modality NM, a planar NM image, a
  single image, a CT localizer;
* legacy ACR-NEMA dates (``1993.11.24``) are read; an unreadable date asks for ``time_h``
  only when ``time_h`` is not given;
* RTSTRUCT contours outside the CT: an error above 1 % of a ROI's contour area, a warning
  with the lost mL below;
* ``voxdose dicom-info`` lists every series with a problem column (exit 2 after the table
  when one is unusable, 0 otherwise).
"""

from __future__ import annotations

import re
import warnings
from datetime import datetime, timedelta

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from voxdose.cli.app import main
from voxdose.core.errors import StudyError
from voxdose.core.grid import Grid
from voxdose.io.dicom_read import (
    parse_da_tm,
    read_ct_header,
    read_spect_header,
    scan_folder,
    series_problem,
)
from voxdose.io.dicom_write import (
    NM_IMAGE_STORAGE,
    _new_dataset,
    _set_pixels,
    ds_str,
    write_ct,
    write_nm,
    write_rtstruct,
)
from voxdose.io.rtstruct import (
    MAX_OUTSIDE_FRACTION,
    check_rtstruct_in_grid,
    rasterize_rtstruct,
    read_rtstruct_header,
)
from voxdose.study.load import load_study

ADMIN = datetime(2024, 3, 1, 9, 30)
ACQ = ADMIN + timedelta(hours=4)
GRID = Grid.from_spacing((4, 5, 6), (4.0, 4.0, 4.0), (-10.0, -8.0, 20.0))
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
PROJECTIONS = "SPECT projections, not a reconstruction: reconstruct first"


def _save(ds, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # legacy / invalid values on purpose
        warnings.simplefilter("ignore")
        ds.save_as(path, enforce_file_format=True)
    return path


def _edit(path, **tags):
    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, v in tags.items():
            setattr(ds, k, v)
    return _save(ds, path)


def _nm(folder, t_h=4.0, **kw):
    args = dict(acquisition=ADMIN + timedelta(hours=t_h), administration=ADMIN,
                nuclide="Lu-177", total_dose_bq=7.4e9, frame_duration_s=1200.0)
    args.update(kw)
    return write_nm(folder, np.full(GRID.shape, 1000.0), GRID, **args)


def _toml(tmp_path, body, tps, name="study.toml"):
    p = tmp_path / name
    p.write_text("[study]\n" + body + "\n" + "".join(f"[[timepoints]]\n{t}\n" for t in tps))
    return p


# --------------------------------------------------------------------------- projections
def _camera_nm(folder, *, recon: bool, windows: int = 6, heads: int = 2, views: int = 30,
               image_type: str | None = None, angular: bool = True, rows: int = 4):
    """An NM multi-frame object with a GE Discovery 670's tags: energy window, detector and
    rotation information, SpacingBetweenSlices, two heads. ``recon=False``: projections,
    frames indexed by EnergyWindow / Detector / Rotation / AngularView vectors (the 2015
    Discovery 670 layout); ``recon=True``: a reconstruction of one window with the same camera
    tags, heads x views slices indexed by SliceVector."""
    ds = _new_dataset(NM_IMAGE_STORAGE, "NM", when=ACQ, description="SPECT Lu177",
                      for_uid="1.2.826.0.1.3680043.8.498.42")
    ds.Manufacturer, ds.ManufacturerModelName = "GE MEDICAL SYSTEMS", "Discovery 670"
    ds.ImageType = image_type.split("\\") if image_type else [
        "ORIGINAL", "PRIMARY", "RECON TOMO" if recon else "TOMO", "EMISSION"]
    ds.AcquisitionDate, ds.AcquisitionTime = ACQ.strftime("%Y%m%d"), ACQ.strftime("%H%M%S")
    ds.Units, ds.DecayCorrection = "BQML", "NONE"
    ds.PixelSpacing, ds.SpacingBetweenSlices, ds.SliceThickness = ["4.42", "4.42"], "4.42", \
        "4.42"
    rp = Dataset()
    rp.RadiopharmaceuticalStartDateTime = ADMIN.strftime("%Y%m%d%H%M%S")
    rp.RadionuclideTotalDose = "7400000000"
    ds.RadiopharmaceuticalInformationSequence = [rp]
    n_win = 1 if recon else windows
    ds.NumberOfEnergyWindows = n_win
    ewin = []
    for w in range(n_win):
        item, rng = Dataset(), Dataset()
        rng.EnergyWindowLowerLimit, rng.EnergyWindowUpperLimit = ds_str(187 + 10 * w), \
            ds_str(229 + 10 * w)
        item.EnergyWindowRangeSequence, item.EnergyWindowName = [rng], f"W{w + 1}"
        ewin.append(item)
    ds.EnergyWindowInformationSequence = ewin
    ds.NumberOfDetectors, ds.NumberOfRotations = heads, 1
    dets = []
    for h in range(heads):
        det = Dataset()
        det.ImagePositionPatient = ["-8.84", "-8.84", ds_str(-100.0)]
        det.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        det.StartAngle = ds_str(180.0 * h)
        dets.append(det)
    ds.DetectorInformationSequence = dets
    rot = Dataset()
    rot.StartAngle, rot.AngularStep, rot.ScanArc = "0", ds_str(360.0 / (heads * views)), "180"
    rot.NumberOfFramesInRotation, rot.ActualFrameDuration, rot.RotationDirection = \
        views, 20000, "CW"
    ds.RotationInformationSequence = [rot]
    if recon:
        nf = heads * views  # deliberately = heads x views: the frame count alone says nothing
        ds.FrameIncrementPointer = 0x00540080
        ds.SliceVector, ds.NumberOfSlices = list(range(1, nf + 1)), nf
        ds.EnergyWindowVector = ds.DetectorVector = ds.RotationVector = [1] * nf
        ds.DetectorInformationSequence = dets[:1]
    else:
        nf = windows * heads * views
        ds.FrameIncrementPointer = [0x00540010, 0x00540020, 0x00540050, 0x00540090]
        ds.EnergyWindowVector = [1 + k // (heads * views) for k in range(nf)]
        ds.DetectorVector = [1 + (k // views) % heads for k in range(nf)]
        ds.RotationVector = [1] * nf
        if angular:
            ds.AngularViewVector = [1 + k % views for k in range(nf)]
    ds.NumberOfFrames = nf
    ds.Rows = ds.Columns = rows
    _set_pixels(ds, np.arange(nf * rows * rows).reshape(nf, rows, rows) % 500, 16, False)
    return _save(ds, folder / "NM0001.dcm")


def test_ge_projections_are_refused_by_name(tmp_path):
    _camera_nm(tmp_path / "proj", recon=False)
    with pytest.raises(StudyError) as exc:
        read_spect_header(tmp_path / "proj")
    msg = str(exc.value)
    assert PROJECTIONS in msg and "ImageType (0008,0008) value 3 'TOMO'" in msg
    assert "360 frames: 6 energy windows, 2 detectors, 30 views per rotation" in msg
    assert "6 energy windows in one object are not read either" in msg
    assert "NM0001.dcm" in msg and "\n" not in msg


@pytest.mark.parametrize("image_type, angular, evidence", [
    ("DERIVED\\SECONDARY", True, r"AngularViewVector \(0054,0090\) holds 30 views"),
    ("DERIVED\\SECONDARY", False, r"frame count is energy windows x detectors"),
])
def test_projections_are_recognised_without_their_image_type(tmp_path, image_type, angular,
                                                             evidence):
    """Without TOMO in ImageType: the AngularViewVector, else the frame counts (windows x
    heads x views = NumberOfFrames, no SliceVector) still give them away."""
    _camera_nm(tmp_path / "p", recon=False, image_type=image_type, angular=angular)
    with pytest.raises(StudyError, match=re.escape(PROJECTIONS) + ".*" + evidence):
        read_spect_header(tmp_path / "p")


def test_a_reconstruction_with_the_same_camera_tags_still_reads(tmp_path):
    """Same tags (energy window / detector / rotation information, SpacingBetweenSlices, two
    heads, 60 frames = 2 heads x 30 views), ImageType RECON TOMO: read as 60 slices."""
    _camera_nm(tmp_path / "recon", recon=True)
    h = read_spect_header(tmp_path / "recon")
    assert h.grid.shape == (60, 4, 4)
    np.testing.assert_allclose(h.grid.spacing_mm, [4.42, 4.42, 4.42])
    assert (h.units, h.acquisition, h.administration) == ("BQML", ACQ, ADMIN)
    assert h.frame_duration_s == pytest.approx(30 * 20.0)
    (s,) = scan_folder(tmp_path / "recon")
    assert series_problem(s) is None


def test_several_energy_windows_in_one_reconstruction_are_an_error(tmp_path):
    f = _camera_nm(tmp_path / "r", recon=True, heads=1, views=5)
    _edit(f, EnergyWindowVector=[1] * 5 + [2] * 5, NumberOfFrames=10,
          SliceVector=list(range(1, 6)) * 2, DetectorVector=[1] * 10, RotationVector=[1] * 10,
          NumberOfEnergyWindows=2, PixelData=np.zeros((10, 4, 4), "<u2").tobytes())
    with pytest.raises(StudyError, match=r"several energy windows in one object "
                                         r"\(EnergyWindowVector \(0054,0010\) holds 2 values"):
        read_spect_header(tmp_path / "r")


def test_projections_next_to_their_reconstruction_are_skipped(tmp_path):
    """A patient export with both: the reconstruction is chosen (even when its ImageType
    does not say RECON); with only projections and a capture, both problems are listed."""
    _camera_nm(tmp_path / "exam" / "proj", recon=False)
    f = _nm(tmp_path / "exam" / "recon")[0]
    _edit(f, ImageType=["DERIVED", "SECONDARY"])
    h = read_spect_header(tmp_path / "exam")
    assert h.grid.shape == GRID.shape
    _sc_whole_body(tmp_path / "only" / "wb")
    _camera_nm(tmp_path / "only" / "proj", recon=False)
    with pytest.raises(StudyError, match=r"holds 2 NM/PT series and none can be read: .*"
                                         r"(Secondary Capture.*SPECT projections|"
                                         r"SPECT projections.*Secondary Capture)"):
        read_spect_header(tmp_path / "only")


def test_cli_run_refuses_projections_in_one_line(tmp_path, capsys):
    _camera_nm(tmp_path / "proj", recon=False)
    study = _toml(tmp_path, 'nuclide = "Lu-177"', ['spect = "proj"\ntime_h = 4.0'])
    err = _cli_expect_error(["run", str(study), "--out", str(tmp_path / "results"),
                             "--device", "cpu"], tmp_path, capsys, re.escape(PROJECTIONS))
    assert "NM0001.dcm" in err


def _cli_expect_error(argv, tmp_path, capsys, pattern, stdout_empty=True):
    rc = main(argv)
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("voxdose: error: ") and re.search(pattern, err), err
    assert "Traceback" not in cap.err + cap.out
    if stdout_empty:
        assert cap.out == ""
    assert not (tmp_path / "results").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".results")]
    return err


# --------------------------------------------------------------------------- planar images
def _sc_whole_body(folder):
    """A planar whole-body scan as a Secondary Capture with Modality NM (no geometry)."""
    ds = _new_dataset(SECONDARY_CAPTURE, "NM", when=ACQ, description="WB ANT")
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "WSD"
    ds.Rows, ds.Columns = 16, 4
    _set_pixels(ds, np.ones((16, 4)), 16, False)
    return _save(ds, folder / "SC0001.dcm")


def _planar_nm(folder, image_type="WHOLE BODY", frames=2):
    """NM Image Storage, planar: anterior and posterior views (DetectorVector 1, 2)."""
    ds = _new_dataset(NM_IMAGE_STORAGE, "NM", when=ACQ, description="WB")
    ds.ImageType = ["ORIGINAL", "PRIMARY", image_type, "EMISSION"]
    ds.NumberOfFrames = frames
    ds.DetectorVector = list(range(1, frames + 1)) if frames > 1 else 1
    ds.EnergyWindowVector = [1] * frames if frames > 1 else 1
    ds.FrameIncrementPointer = [0x00540010, 0x00540020]
    ds.Rows, ds.Columns = 16, 4
    _set_pixels(ds, np.ones((frames, 16, 4)), 16, False)
    return _save(ds, folder / "WB0001.dcm")


@pytest.mark.parametrize("build, pattern", [
    (_sc_whole_body, r"a Secondary Capture image \(SOP Class UID 1\.2\.840\.10008\.5\.1\.4\.1"
                     r"\.1\.7\) with Modality NM: a planar picture"),
    (_planar_nm, r"a planar NM image \(ImageType \(0008,0008\) value 3 'WHOLE BODY'\)"),
    (lambda f: _planar_nm(f, "STATIC", 1), r"a planar NM image .*'STATIC'"),
])
def test_planar_images_are_named_planar(tmp_path, build, pattern):
    build(tmp_path / "wb")
    with pytest.raises(StudyError, match=pattern) as exc:
        read_spect_header(tmp_path / "wb")
    assert "ImageOrientationPatient" not in str(exc.value)  # not by a missing tag


def test_single_images_are_named_for_what_they_are(tmp_path):
    _nm(tmp_path / "nm", multiframe=False)
    for f in sorted((tmp_path / "nm").iterdir())[1:]:
        f.unlink()
    with pytest.raises(StudyError, match=r"a single image \(1 file, 1 frame\): a planar image "
                                         r"or a single slice, not a tomographic volume"):
        read_spect_header(tmp_path / "nm")
    files = write_ct(tmp_path / "ct", np.zeros(GRID.shape), GRID)
    for f in files[1:]:
        f.unlink()
    with pytest.raises(StudyError, match=r"a single CT image \(1 file, 1 frame\)"):
        read_ct_header(tmp_path / "ct")


def test_ct_localizer_is_named_and_skipped_next_to_the_series(tmp_path):
    write_ct(tmp_path / "exam" / "ct", np.zeros(GRID.shape), GRID)
    scout = Grid.from_spacing((1, 5, 6), (1.0, 4.0, 4.0))
    (f,) = write_ct(tmp_path / "exam" / "scout", np.zeros(scout.shape), scout)
    _edit(f, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    assert read_ct_header(tmp_path / "exam").grid.shape == GRID.shape
    with pytest.raises(StudyError, match=r"a CT localizer \(scout view"):
        read_ct_header(tmp_path / "exam" / "scout")


# --------------------------------------------------------------------------- dates
def test_parse_legacy_acr_nema_dates():
    assert parse_da_tm("1993.11.24", "10:30:15.5") == datetime(1993, 11, 24, 10, 30, 15, 500000)
    assert parse_da_tm("19931124", "103015") == datetime(1993, 11, 24, 10, 30, 15)
    with pytest.raises(ValueError, match="not a DICOM date/time"):
        parse_da_tm("24/11/1993", "103015")


def _two_timepoints(tmp_path, **kw):
    """t1 (4 h, to be edited) and t2 (26 h): two time points, so no single-time-point
    keys are needed."""
    f = _nm(tmp_path / "t1", **kw)[0]
    _nm(tmp_path / "t2", 26.0)
    return f


def test_legacy_dates_are_read_from_the_files(tmp_path):
    f = _two_timepoints(tmp_path, decay_correction="START")
    _edit(f, AcquisitionDate=ACQ.strftime("%Y.%m.%d"), AcquisitionTime=ACQ.strftime("%H:%M:%S"),
          SeriesDate=ACQ.strftime("%Y.%m.%d"), SeriesTime=ACQ.strftime("%H:%M:%S"))
    h = read_spect_header(tmp_path / "t1")
    assert h.acquisition == ACQ and h.decay_reference == ACQ and not h.date_problems
    st = load_study(_toml(tmp_path, "", ['spect = "t1"', 'spect = "t2"']))
    assert st.times_h == pytest.approx([4.0, 26.0])


def test_a_bad_acquisition_date_asks_for_time_h_only_without_it(tmp_path):
    f = _two_timepoints(tmp_path)
    _edit(f, AcquisitionDate="01/03/2024")
    h = read_spect_header(tmp_path / "t1")
    assert h.acquisition is None and "01/03/2024" in h.date_problems["acquisition"]
    with pytest.raises(StudyError, match=r"AcquisitionDate\+Time .* is not a valid DICOM "
                                         r"date/time .*give 'timepoints\[0\]\.time_h'"):
        load_study(_toml(tmp_path, "", ['spect = "t1"', 'spect = "t2"']))
    st = load_study(_toml(tmp_path, "", ['spect = "t1"\ntime_h = 4.5', 'spect = "t2"']))
    assert st.times_h == pytest.approx([4.5, 26.0])


def test_a_date_error_never_asks_for_a_time_h_that_is_given(tmp_path):
    """START decay correction needs the acquisition time itself: the error says to fix
    the file, not to give the time_h the study already gives."""
    f = _two_timepoints(tmp_path, decay_correction="START")
    _edit(f, AcquisitionDate="2024-03-01")
    with pytest.raises(StudyError, match=r"DecayCorrection = START needs the acquisition "
                                         r"time.*not a valid DICOM date/time.*fix the file") \
            as exc:
        load_study(_toml(tmp_path, "", ['spect = "t1"\ntime_h = 4.0', 'spect = "t2"']))
    assert "time_h" not in str(exc.value)


def test_a_bad_start_date_is_replaced_by_the_study_key(tmp_path):
    _two_timepoints(tmp_path)
    for t in ("t1", "t2"):
        f = next((tmp_path / t).glob("*.dcm"))
        ds = pydicom.dcmread(f)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime = \
                "2024031"
        _save(ds, f)
    tps = ['spect = "t1"', 'spect = "t2"']
    with pytest.raises(StudyError, match=r"RadiopharmaceuticalStartDateTime \(0018,1078\) is "
                                         r"not a valid DICOM date/time.*"
                                         r"study.administration_datetime"):
        load_study(_toml(tmp_path, "", tps))
    st = load_study(_toml(tmp_path, 'administration_datetime = "2024-03-01T09:30:00"', tps))
    assert st.times_h == pytest.approx([4.0, 26.0])


# --------------------------------------------------------------------------- RTSTRUCT
CT_GRID = Grid.from_spacing((8, 10, 12), (2.0, 2.0, 2.0), (-9.0, -7.0, 19.0))
FOR_UID = "1.2.826.0.1.3680043.8.498.9"
# voxel edges of CT_GRID: x -10 .. 14, y -8 .. 12, z 18 .. 34 (slices at 19, 21, ..., 33)


def _box(x0, x1, y0, y1, zs):
    return [np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]]) for z in zs]


def _rtstruct(path, rois):
    write_rtstruct(path, rois, for_uid=FOR_UID)
    return read_rtstruct_header(path)


def test_contours_beyond_the_ct_are_an_error(tmp_path):
    zs = [19.0 + 2 * k for k in range(10)]  # 10 planes, the last 2 beyond the last slice
    h = _rtstruct(tmp_path / "rs.dcm", {"liver": _box(-4, 4, -2, 4, zs)})
    with pytest.raises(StudyError, match=r"ROI 'liver': 20 % of its contour area \(0\.192 mL\) "
                                         r"lies outside.*2 of its 10 contours lie on planes "
                                         r"beyond.*more than 1 %"):
        rasterize_rtstruct(h, CT_GRID)
    with pytest.raises(StudyError, match="ROI 'liver': 20 %"):
        check_rtstruct_in_grid(h, CT_GRID)


def test_contours_cut_by_the_field_of_view_are_an_error(tmp_path):
    zs = [19.0 + 2 * k for k in range(8)]  # in-plane: x 0..20 of which 14..20 is outside
    h = _rtstruct(tmp_path / "rs.dcm", {"spleen": _box(0, 20, 0, 10, zs)})
    with pytest.raises(StudyError, match=r"ROI 'spleen': 30 % of its contour area "
                                         r"\(0\.96 mL\)"):
        rasterize_rtstruct(h, CT_GRID)


def test_a_tiny_loss_is_a_warning_with_the_lost_volume(tmp_path):
    """0.05 mm of a 20.05 mm wide box outside (0.25 % < 1 %): rasterised, warned with the
    lost 0.05 x 12 mm x 8 contours x 2 mm = 0.0096 mL."""
    zs = [19.0 + 2 * k for k in range(8)]
    h = _rtstruct(tmp_path / "rs.dcm", {"kidney": _box(-10.05, 10, -6, 6, zs),
                                        "inside": _box(-4, 4, -2, 4, zs)})
    assert 0.0025 < MAX_OUTSIDE_FRACTION
    warns: list = []
    lab = rasterize_rtstruct(h, CT_GRID, warnings=warns)
    assert len(warns) == 1 and "ROI 'kidney': 0.25 % of its contour area (0.0096 mL)" in \
        warns[0] and "left out" in warns[0]
    assert check_rtstruct_in_grid(h, CT_GRID) == warns
    # kidney: centres x -9..9 (10) x y -5..5 (6); the smaller box inside keeps its 4 x 3
    assert (lab.data == 2).sum() == 8 * 4 * 3 and (lab.data == 1).sum() == 8 * (60 - 12)


def _ct_dicom_study(tmp_path, zs):
    """Two time points (two copies of one SPECT with one CT, explicit times) and an
    RTSTRUCT on the CT."""
    ct_grid = Grid.from_spacing((12, 16, 16), (4.0, 4.0, 4.0), (-30.0, -30.0, 0.0))
    z, y, x = np.meshgrid(*[np.arange(n) for n in ct_grid.shape], indexing="ij")
    hu = np.where((x - 7.5) ** 2 + (y - 7.5) ** 2 + ((z - 5.5) * 1.2) ** 2 < 30, 0.0, -1000.0)
    hu[3:8, 4:7, 9:12] = 800.0  # something for the registration to hold on to
    write_ct(tmp_path / "ct", hu, ct_grid, for_uid=FOR_UID)
    nm_grid = Grid.from_spacing((6, 8, 8), (8.0, 8.0, 8.0), (-28.0, -28.0, 2.0))
    act = np.full(nm_grid.shape, 100.0)
    act[2:4, 3:5, 3:5] = 5000.0
    write_nm(tmp_path / "nm", act, nm_grid, acquisition=ACQ, administration=ADMIN,
             nuclide="Lu-177", total_dose_bq=7.4e9, for_uid=FOR_UID)
    write_nm(tmp_path / "nm2", act, nm_grid, acquisition=ADMIN + timedelta(hours=24),
             administration=ADMIN, nuclide="Lu-177", total_dose_bq=7.4e9,
             for_uid=FOR_UID)  # one per time point, acquired at its time_h
    write_rtstruct(tmp_path / "rs.dcm", {"lesion": _box(-10, 10, -10, 10, zs)}, for_uid=FOR_UID)
    return _toml(tmp_path, '[structures]\nrtstruct = "rs.dcm"',
                 ['spect = "nm"\nct = "ct"\ntime_h = 4.0',
                  'spect = "nm2"\nct = "ct"\ntime_h = 24.0'])


def test_cli_run_refuses_an_rtstruct_outside_the_ct(tmp_path, capsys):
    """The 4 planes beyond the CT's last slice (z = 44 mm) would have been dropped: 40 % of
    the ROI. Refused in one line when the study is loaded (before any work), nothing
    written."""
    zs = [24.0 + 4 * k for k in range(10)]
    study = _ct_dicom_study(tmp_path, zs)
    err = _cli_expect_error(["run", str(study), "--out", str(tmp_path / "results"),
                             "--device", "cpu"], tmp_path, capsys,
                            r"rs\.dcm: ROI 'lesion': 40 % of its contour area \(6\.4 mL\)")
    assert "4 of its 10 contours" in err


# --------------------------------------------------------------------------- dicom-info
@pytest.fixture()
def wide_console(monkeypatch):
    import importlib

    app_module = importlib.import_module("voxdose.cli.app")
    monkeypatch.setattr(app_module.console, "width", 400)


def test_dicom_info_lists_every_series_and_marks_its_problem(tmp_path, capsys, wide_console):
    exam = tmp_path / "exam"
    _nm(exam / "recon")
    _camera_nm(exam / "proj", recon=False)
    _sc_whole_body(exam / "wb")
    bad = _nm(exam / "bad_date")[0]
    _edit(bad, AcquisitionDate="01/03/2024")
    trunc = _nm(exam / "cut", multiframe=False)[1]
    trunc.write_bytes(trunc.read_bytes()[:-20])
    write_ct(exam / "ct", np.zeros(CT_GRID.shape), CT_GRID, for_uid=FOR_UID)
    write_rtstruct(exam / "rs.dcm", {"liver": _box(-4, 4, -2, 4, [19.0 + 2 * k
                                                                for k in range(10)])},
                   for_uid=FOR_UID)
    (exam / "README.txt").write_text("not DICOM")
    rc = main(["dicom-info", str(exam)])
    cap = capsys.readouterr()
    assert rc == 2
    err = cap.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("voxdose: error: ")
    assert "4 of 7 series (or files) cannot be used" in err
    out = cap.out
    assert "problem" in out and "Traceback" not in out + cap.err
    uids = {str(pydicom.dcmread(next(p.glob("*.dcm"))).SeriesInstanceUID)
            for p in (exam / d for d in ("recon", "proj", "wb", "bad_date", "cut", "ct"))}
    uids.add(str(pydicom.dcmread(exam / "rs.dcm").SeriesInstanceUID))
    listed = re.findall(r"^#\d+ SeriesInstanceUID (\S+)$", out, flags=re.M)
    assert sorted(listed) == sorted(uids)  # every series, whatever its problem
    for label in ("projections", "planar (Secondary Capture)", "truncated file",
                  "contours outside the CT", "note"):
        assert label in out  # the problem column
    problems = re.findall(r"^   problem: (.*)$", out, flags=re.M)
    assert len(problems) == 4, out
    text = "\n".join(problems)
    assert PROJECTIONS in text and "Secondary Capture" in text
    assert "truncated" in text and "ROI 'liver': 20 %" in text
    (note,) = re.findall(r"^   note: (.*)$", out, flags=re.M)
    assert re.search(r"bad_date/NM000001\.dcm: AcquisitionDateTime .* not a valid DICOM "
                     r"date/time.*give timepoints\[i\]\.time_h", note), note
    # the usable reconstruction is described as before
    assert "BQML" in out and "Lu-177" in out and str(ADMIN) in out


def test_dicom_info_exit_code_zero_when_every_series_is_usable(tmp_path, capsys,
                                                              wide_console):
    _nm(tmp_path / "recon")
    write_ct(tmp_path / "ct", np.zeros(CT_GRID.shape), CT_GRID, for_uid=FOR_UID)
    write_rtstruct(tmp_path / "rs.dcm", {"kidney": _box(-10.05, 10, -6, 6, [19.0 + 2 * k
                                                                          for k in range(8)])},
                   for_uid=FOR_UID)
    f = _nm(tmp_path / "legacy")[0]
    _edit(f, AcquisitionDate=ACQ.strftime("%Y.%m.%d"))
    assert main(["dicom-info", str(tmp_path)]) == 0
    cap = capsys.readouterr()
    assert cap.err == ""
    assert str(ACQ) in cap.out  # the legacy date is read
    assert "   note: rs.dcm: ROI 'kidney': 0.25 % of its contour area (0.0096 mL) lies " \
        "outside" in cap.out  # a warning only
    assert "problem:" not in cap.out


def test_a_reconstruction_labelled_tomo_is_refused_with_a_hint(tmp_path):
    """ImageType TOMO wins over a SliceVector (no guessing), and the message says how to
    correct a mislabelled reconstruction."""
    _camera_nm(tmp_path / "r", recon=True, image_type="ORIGINAL\\PRIMARY\\TOMO\\EMISSION")
    with pytest.raises(StudyError, match=re.escape(PROJECTIONS) + r".*indexed by SliceVector"
                                         r".*must be RECON TOMO"):
        read_spect_header(tmp_path / "r")
