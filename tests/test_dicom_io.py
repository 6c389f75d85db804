"""DICOM readers and writers: geometry round trips (oblique too), pixel-value mappings,
RT Dose scaling and geometry (read back with pydicom and SimpleITK), RTSTRUCT filling."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset

from voxdose.core.errors import StudyError
from voxdose.core.grid import Grid, Image
from voxdose.io.dicom_read import (
    parse_dt,
    read_ct,
    read_spect_header,
    read_spect_values,
    scan_folder,
)
from voxdose.io.dicom_write import write_ct, write_nm, write_rt_dose, write_rtstruct
from voxdose.io.rtstruct import fill_polygon, rasterize_rtstruct, read_rtstruct_header
from voxdose.io.sitk_adapter import grid_from_sitk

ACQ = datetime(2024, 3, 2, 9, 30)
ADMIN = datetime(2024, 3, 1, 9, 30)


def _oblique_grid(shape=(6, 7, 9), spacing=(4.0, 3.0, 2.5), origin=(-30.5, 12.25, -40.0),
                  deg=(17.0, -8.0, 25.0)):
    rx, ry, rz = np.deg2rad(deg)
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), \
        np.sin(rz)
    rot = (np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
           @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
           @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]))
    axial = np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]])  # columns: z, y, x axes
    return Grid.from_spacing(shape, spacing, origin, rot @ axial)


def _values(grid, seed=0):
    return np.random.default_rng(seed).uniform(10.0, 5000.0, grid.shape)


@pytest.mark.parametrize("multiframe", [True, False])
@pytest.mark.parametrize("oblique", [False, True])
def test_nm_geometry_and_bqml_round_trip(tmp_path, multiframe, oblique):
    grid = _oblique_grid() if oblique else Grid.from_spacing((5, 6, 8), (4.8, 4.4, 4.4),
                                                             (-10.0, -20.0, 30.0))
    vals = _values(grid)
    write_nm(tmp_path / "nm", vals, grid, acquisition=ACQ, administration=ADMIN,
             nuclide="Lu-177", multiframe=multiframe)
    h = read_spect_header(tmp_path / "nm")
    assert h.grid.shape == grid.shape
    np.testing.assert_allclose(h.grid.affine, grid.affine, atol=1e-6)
    assert h.units == "BQML" and h.decay_correction == "NONE" and h.nuclide == "Lu-177"
    assert h.acquisition == ACQ and h.administration == ADMIN
    got = read_spect_values(h)
    step = vals.max() / 65535
    assert np.max(np.abs(got - vals)) <= 0.51 * step + 1e-9


def test_nm_multiframe_against_normal_is_read_in_slice_order(tmp_path):
    """A grid whose z axis runs against row x column is stored reversed and read back as the
    same voxels in space (z flipped in the array)."""
    g = Grid.from_spacing((4, 3, 5), (2.0, 1.0, 1.0), (0.0, 0.0, 50.0),
                          np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]]))
    vals = _values(g, 3)
    write_nm(tmp_path / "nm", vals, g, acquisition=ACQ, administration=ADMIN, nuclide=None)
    h = read_spect_header(tmp_path / "nm")
    got = read_spect_values(h)
    pts = g.index_to_world(np.argwhere(np.ones(g.shape)))
    idx = np.rint(h.grid.world_to_index(pts)).astype(int)
    np.testing.assert_allclose(got[tuple(idx.T)], vals.ravel(), atol=0.51 * vals.max() / 65535)
    assert h.nuclide is None


def test_cnts_rescale_and_vendor_real_world_value_mapping(tmp_path):
    g = Grid.from_spacing((4, 5, 6), (4.0, 4.0, 4.0))
    counts = _values(g, 1)
    files = write_nm(tmp_path / "nm", counts, g, units="CNTS", acquisition=ACQ,
                     administration=ADMIN, nuclide="Lu-177", multiframe=False)
    h = read_spect_header(tmp_path / "nm")
    assert h.units == "CNTS"
    np.testing.assert_allclose(read_spect_values(h), counts, rtol=2e-4, atol=0.05)
    # a vendor's real-world value mapping to Bq/mL takes precedence over Units CNTS
    for f in files:
        ds = pydicom.dcmread(f)
        item, code = Dataset(), Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "Bq/ml", "UCUM", "Bq/ml"
        item.MeasurementUnitsCodeSequence = [code]
        item.RealWorldValueSlope = float(ds.RescaleSlope) * 3.0
        item.RealWorldValueIntercept = 0.0
        ds.RealWorldValueMappingSequence = [item]
        ds.save_as(f)
    h = read_spect_header(tmp_path / "nm")
    assert h.units == "BQML" and "RealWorldValueMapping" in h.value_mapping
    np.testing.assert_allclose(read_spect_values(h), 3.0 * counts, rtol=2e-4, atol=0.2)


def test_philips_pet_cnts_scale_factor(tmp_path):
    g = Grid.from_spacing((3, 4, 4), (4.0, 4.0, 4.0))
    counts = _values(g, 2)
    files = write_nm(tmp_path / "nm", counts, g, units="CNTS", acquisition=ACQ,
                     administration=ADMIN, nuclide="Lu-177", multiframe=False)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.Manufacturer = "Philips Medical Systems"
        ds.add_new((0x7053, 0x1009), "DS", "2.5")
        ds.save_as(f)
    h = read_spect_header(tmp_path / "nm")
    assert h.units == "BQML" and "Philips" in h.value_mapping
    np.testing.assert_allclose(read_spect_values(h), 2.5 * counts, rtol=2e-4, atol=0.2)


def test_ct_series_oblique_round_trip_through_simpleitk(tmp_path):
    g = _oblique_grid(shape=(5, 8, 6), spacing=(2.5, 1.25, 1.25))
    hu = np.random.default_rng(4).integers(-1000, 1500, g.shape).astype(float)
    files = write_ct(tmp_path / "ct", hu, g)
    # shuffled file names must not matter: slices are sorted by position
    for k, f in enumerate(files[::-1]):
        f.rename(f.with_name(f"x{k:03d}.dcm"))
    img = read_ct(tmp_path / "ct")
    np.testing.assert_allclose(img.grid.affine, g.affine, atol=1e-6)
    np.testing.assert_array_equal(img.data, hu)


def test_scan_groups_series_and_skips_non_dicom(tmp_path):
    g = Grid.from_spacing((3, 4, 4), (4.0, 4.0, 4.0))
    write_nm(tmp_path / "a" / "nm", _values(g), g, acquisition=ACQ, administration=ADMIN,
             nuclide="Lu-177", multiframe=False)
    write_ct(tmp_path / "b" / "ct", np.zeros(g.shape), g)
    (tmp_path / "README.txt").write_text("not dicom")
    series = scan_folder(tmp_path)
    assert sorted((s.modality, len(s.files)) for s in series) == [("CT", 3), ("NM", 3)]


def test_truncated_file_is_named(tmp_path):
    g = Grid.from_spacing((3, 4, 4), (4.0, 4.0, 4.0))
    files = write_nm(tmp_path / "nm", _values(g), g, acquisition=ACQ, administration=ADMIN,
                     nuclide="Lu-177", multiframe=False)
    data = files[1].read_bytes()
    files[1].write_bytes(data[: len(data) - 20])
    with pytest.raises(StudyError, match=files[1].name + ".*truncated"):
        read_spect_header(tmp_path / "nm")


def test_parse_dicom_datetimes():
    assert parse_dt("20240301093000.5+0100") == datetime(2024, 3, 1, 9, 30, 0, 500000)
    assert parse_dt("202403010930") == datetime(2024, 3, 1, 9, 30)
    with pytest.raises(ValueError):
        parse_dt("2024-03-01")


@pytest.mark.parametrize("oblique", [False, True])
def test_rt_dose_scaling_and_geometry(tmp_path, oblique):
    g = _oblique_grid() if oblique else Grid.from_spacing((6, 7, 9), (3.0, 2.0, 2.0),
                                                          (-5.0, 7.5, 100.0))
    dose = np.random.default_rng(5).gamma(2.0, 3.0, g.shape)
    dose[0, 0, :3] = [0.0, 1e-5, 1e-3]  # tiny values still within the relative bound below
    ct_files = write_ct(tmp_path / "ct", np.zeros(g.shape), g, patient_id="P7")
    p = write_rt_dose(tmp_path / "out" / "rd.dcm", Image(dose, g, "absorbed dose", "Gy"),
                      reference=tmp_path / "ct")
    ds = pydicom.dcmread(p)
    ct0 = pydicom.dcmread(ct_files[0])
    assert ds.Modality == "RTDOSE" and ds.DoseUnits == "GY" and ds.DoseType == "PHYSICAL"
    assert ds.DoseSummationType == "ADMINISTRATION" and "ReferencedRTPlanSequence" not in ds
    assert ds.FrameOfReferenceUID == ct0.FrameOfReferenceUID
    assert ds.StudyInstanceUID == ct0.StudyInstanceUID and ds.PatientID == "P7"
    assert ds.BitsAllocated == 32 and len(str(ds.DoseGridScaling)) <= 16
    back = ds.pixel_array.astype(np.float64) * float(ds.DoseGridScaling)
    nz = dose > 1e-6 * dose.max()
    assert np.max(np.abs(back - dose)[nz] / dose[nz]) < 1e-3
    assert np.max(np.abs(back - dose)) < 1e-3 * dose.max()
    # geometry with pydicom: IPP + GridFrameOffsetVector along row x column
    r = np.array(ds.ImageOrientationPatient[:3], float)
    c = np.array(ds.ImageOrientationPatient[3:], float)
    ipp = np.array(ds.ImagePositionPatient, float)
    z = np.array(ds.GridFrameOffsetVector, float)
    for k in range(g.shape[0]):
        np.testing.assert_allclose(ipp + z[k] * np.cross(r, c), g.index_to_world([k, 0, 0]),
                                   atol=1e-6)
    np.testing.assert_allclose(np.array(ds.PixelSpacing, float), g.spacing_mm[1:], atol=1e-9)
    # geometry with SimpleITK (which returns the stored integers: scale them yourself)
    img = sitk.ReadImage(str(p))
    np.testing.assert_allclose(grid_from_sitk(img).affine, g.affine, atol=1e-5)
    np.testing.assert_allclose(sitk.GetArrayFromImage(img) * float(ds.DoseGridScaling), dose,
                               atol=1e-6 * dose.max())
    assert not list((tmp_path / "out").glob(".*"))  # atomic: no temporary left


def test_rt_dose_rejects_negative_and_nan(tmp_path):
    g = Grid.from_spacing((2, 2, 2), (1.0, 1.0, 1.0))
    from voxdose.core.errors import InputError

    with pytest.raises(InputError, match=">= 0"):
        write_rt_dose(tmp_path / "rd.dcm", Image(-np.ones(g.shape), g))
    with pytest.raises(InputError, match="NaN"):
        write_rt_dose(tmp_path / "rd.dcm", Image(np.full(g.shape, np.nan), g))
    assert not (tmp_path / "rd.dcm").exists()


def test_fill_polygon_square_and_hole():
    m = np.zeros((20, 20), dtype=bool)
    sq = np.array([[2.5, 2.5], [2.5, 12.5], [12.5, 12.5], [12.5, 2.5]])
    fill_polygon(m, sq[:, 0], sq[:, 1])
    assert m.sum() == 100 and m[3:13, 3:13].all()
    hole = np.array([[5.5, 5.5], [5.5, 9.5], [9.5, 9.5], [9.5, 5.5]])
    fill_polygon(m, hole[:, 0], hole[:, 1])
    assert m.sum() == 100 - 16 and not m[6:10, 6:10].any()


def test_rtstruct_rasterised_on_grid(tmp_path):
    g = Grid.from_spacing((10, 40, 40), (2.0, 1.0, 1.0), (-20.0, -20.0, 0.0))
    rois = {"disc": [], "box": [], "BODY": []}
    phi = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    for k in range(2, 8):
        zc = 2.0 * k
        rois["disc"].append(np.c_[8 * np.cos(phi), 8 * np.sin(phi), np.full_like(phi, zc)])
        rois["box"].append(np.array([[8.5, -15.5, zc], [18.5, -15.5, zc], [18.5, -5.5, zc],
                                     [8.5, -5.5, zc]]))
        rois["BODY"].append(np.array([[-19.5, -19.5, zc], [19.5, -19.5, zc],
                                      [19.5, 19.5, zc], [-19.5, 19.5, zc]]))
    p = write_rtstruct(tmp_path / "rs.dcm", rois, for_uid="1.2.3.4")
    ds = pydicom.dcmread(p)
    ds.RTROIObservationsSequence[2].RTROIInterpretedType = "EXTERNAL"
    ds.save_as(p)
    h = read_rtstruct_header(tmp_path)  # found in the folder
    assert h.names == {1: "disc", 2: "box"} and h.skipped == ("BODY",)
    assert h.frame_of_reference_uids == ("1.2.3.4",)
    lab = rasterize_rtstruct(h, g)
    disc_area = (lab.data == 1).sum() / 6
    assert abs(disc_area - np.pi * 64) < 0.05 * np.pi * 64
    assert (lab.data == 2).sum() == 6 * 100
    assert set(np.unique(lab.data[:2])) == {0}  # slices without contours stay empty
    with_body = rasterize_rtstruct(read_rtstruct_header(p, ["BODY", "disc"]), g)
    assert (with_body.data == 2).sum() == (lab.data == 1).sum()  # smaller structure wins
    with pytest.raises(StudyError, match=r"structures\.rois = \[\] names no ROI; list .*"
                                         r"available: \['BODY', 'box', 'disc'\]"):
        read_rtstruct_header(p, [])          # before: "the RTSTRUCT holds no structures"
    with pytest.raises(StudyError, match=r"names 'disc' twice"):
        read_rtstruct_header(p, ["disc", "box", "disc"])


def test_cli_rtdose_and_dicom_info(tmp_path, capsys):
    from voxdose.cli.app import main
    from voxdose.io.sitk_adapter import write_image

    g = Grid.from_spacing((3, 4, 5), (2.0, 2.0, 2.0), (1.0, 2.0, 3.0))
    dose = np.random.default_rng(6).uniform(0, 5, g.shape)
    write_image(tmp_path / "dose.nii.gz", Image(dose, g, "absorbed dose", "Gy"))
    write_ct(tmp_path / "ct", np.zeros(g.shape), g)
    assert main(["rtdose", str(tmp_path / "dose.nii.gz"), "--out", str(tmp_path / "rd.dcm"),
                 "--reference", str(tmp_path / "ct")]) == 0
    ds = pydicom.dcmread(tmp_path / "rd.dcm")
    np.testing.assert_allclose(ds.pixel_array * float(ds.DoseGridScaling), dose, rtol=1e-3,
                               atol=1e-6)
    write_nm(tmp_path / "nm", _values(g), g, acquisition=ACQ, administration=ADMIN,
             nuclide="Lu-177")
    assert main(["dicom-info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "BQML" in out and "Lu-177" in out and "CT" in out
    assert main(["rtdose", str(tmp_path / "missing.nii.gz"), "--out",
                 str(tmp_path / "x.dcm")]) == 2


def test_rt_dose_heterogeneity_tag_follows_the_density_mode(tmp_path):
    """WATER for a water dose (the text 'density_mode: none' must not read as IMAGE)."""
    g = Grid.from_spacing((4, 5, 6), (2.0, 2.0, 2.0))
    dose = np.random.default_rng(0).random(g.shape)
    for mode, expected in (("none", "WATER"), ("scale", "IMAGE"), ("mvs", "IMAGE"),
                           (None, "WATER")):
        meta = {} if mode is None else {"density_mode": mode}
        p = write_rt_dose(tmp_path / f"rd_{mode}.dcm", Image(dose, g, "absorbed dose", "Gy",
                                                             meta))
        ds = pydicom.dcmread(p)
        assert ds.TissueHeterogeneityCorrection == expected
        assert ds.SeriesNumber == 1
