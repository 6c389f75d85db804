"""The three quantitative SPECT/PET DICOM layouts, each built here with pydicom on a tiny
volume: NM multi-frame (SliceVector + DetectorInformationSequence), one slice per file, and an
enhanced multi-frame PT object (per-frame functional groups). For each: the layout is
recognised, its reader returns the grid, units, mapping and slice order, and
``read_spect_header`` the times, units, spacing and decay-correction state."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from voxdose.core.errors import StudyError
from voxdose.io.dicom_read import (
    SPECT_LAYOUT_READERS,
    read_spect_header,
    read_spect_values,
    scan_folder,
    spect_layout,
)

NM_STORAGE = "1.2.840.10008.5.1.4.1.1.20"
PT_ENHANCED_STORAGE = "1.2.840.10008.5.1.4.1.1.130"
SERIES_START = datetime(2024, 5, 6, 10, 0, 0)
ACQ = datetime(2024, 5, 6, 10, 5, 30)
ADMIN = datetime(2024, 5, 5, 9, 15, 0)
ROWS, COLS, NZ = 4, 5, 3
DY, DX, DZ = 2.0, 2.5, 3.5           # mm: between rows, between columns, between slices
ORIGIN = np.array([-20.0, 15.0, 100.0])  # LPS of voxel [0, 0, 0]
IOP = ["1", "0", "0", "0", "1", "0"]  # rows along +x, columns along +y: normal +z


def _stored(z: int) -> np.ndarray:
    """Stored integers of slice z (z counted along +normal): 100 z + 10 row + column."""
    return (100 * z + 10 * np.arange(ROWS)[:, None] + np.arange(COLS)[None, :]).astype("<u2")


def _ipp(z: int) -> list[str]:
    return [f"{v:g}" for v in ORIGIN + np.array([0.0, 0.0, DZ * z])]


def _dataset(modality: str, sop_class: str, series_uid: str, **tags) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.SeriesInstanceUID = modality, "P1", series_uid
    ds.StudyInstanceUID, ds.FrameOfReferenceUID = generate_uid(), "1.2.3.4"
    ds.SeriesDate, ds.SeriesTime = SERIES_START.strftime("%Y%m%d"), "100000"
    ds.AcquisitionDate, ds.AcquisitionTime = ACQ.strftime("%Y%m%d"), "100530"
    ds.Rows, ds.Columns = ROWS, COLS
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    for k, v in tags.items():
        setattr(ds, k, v)
    return ds


def _radiopharmaceutical(with_date: bool = True) -> Dataset:
    rp = Dataset()
    if with_date:
        rp.RadiopharmaceuticalStartDateTime = ADMIN.strftime("%Y%m%d%H%M%S")
    rp.RadiopharmaceuticalStartTime = ADMIN.strftime("%H%M%S")
    rp.RadionuclideTotalDose = "7400000000"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "C-B1031", "SRT", \
        "^177^Lutetium"
    rp.RadionuclideCodeSequence = [code]
    return rp


def _nm_multiframe(folder, slice_vector=(1, 2, 3), **tags):
    """One NM file; frame k holds slice SliceVector[k] (stored out of order)."""
    folder.mkdir()
    tags = {"NumberOfSlices": NZ, **tags}
    ds = _dataset("NM", NM_STORAGE, generate_uid(), Units="BQML", DecayCorrection="START",
                  RescaleSlope="0.5", RescaleIntercept="0", ActualFrameDuration=1200000,
                  NumberOfFrames=NZ, SliceVector=list(slice_vector),
                  SpacingBetweenSlices=f"{DZ:g}", PixelSpacing=[f"{DY:g}", f"{DX:g}"],
                  RadiopharmaceuticalInformationSequence=[_radiopharmaceutical()], **tags)
    det = Dataset()
    det.ImagePositionPatient, det.ImageOrientationPatient = _ipp(0), IOP
    ds.DetectorInformationSequence = [det]
    ds.PixelData = np.stack([_stored(v - 1) for v in slice_vector]).tobytes()
    ds.save_as(folder / "nm.dcm", enforce_file_format=True)


def _single_slices(folder):
    """One NM file per slice, written in reverse z order, CNTS, rescale per file, only a
    start time (no date) for the administration."""
    folder.mkdir()
    uid = generate_uid()
    for i, z in enumerate(reversed(range(NZ))):
        ds = _dataset("NM", NM_STORAGE, uid, Units="CNTS", DecayCorrection="NONE",
                      RescaleSlope=f"{z + 1:g}", RescaleIntercept="0.25",
                      ImagePositionPatient=_ipp(z), ImageOrientationPatient=IOP,
                      PixelSpacing=[f"{DY:g}", f"{DX:g}"], SliceThickness=f"{DZ:g}",
                      RadiopharmaceuticalInformationSequence=[_radiopharmaceutical(False)])
        ds.PixelData = _stored(z).tobytes()
        ds.save_as(folder / f"slice{i}.dcm", enforce_file_format=True)


def _enhanced_pt(folder, n_files=1):
    """Enhanced multi-frame PT: frames stored top to bottom, per-frame PlanePosition and
    rescale, shared PixelMeasures and PlaneOrientation; decay-corrected to administration."""
    folder.mkdir()
    uid = generate_uid()
    for i in range(n_files):
        ds = _dataset("PT", PT_ENHANCED_STORAGE, uid, Units="BQML", DecayCorrection="ADMIN",
                      NumberOfFrames=NZ,
                      RadiopharmaceuticalInformationSequence=[_radiopharmaceutical()])
        pm, po, shared = Dataset(), Dataset(), Dataset()
        pm.PixelSpacing, pm.SliceThickness = [f"{DY:g}", f"{DX:g}"], f"{DZ:g}"
        po.ImageOrientationPatient = IOP
        shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [pm], [po]
        ds.SharedFunctionalGroupsSequence = [shared]
        frames = []
        for z in reversed(range(NZ)):
            pos, pvt, item = Dataset(), Dataset(), Dataset()
            pos.ImagePositionPatient = _ipp(z)
            pvt.RescaleSlope, pvt.RescaleIntercept = f"{0.1 * (z + 1):g}", "0"
            item.PlanePositionSequence, item.PixelValueTransformationSequence = [pos], [pvt]
            frames.append(item)
        ds.PerFrameFunctionalGroupsSequence = frames
        ds.PixelData = np.stack([_stored(z) for z in reversed(range(NZ))]).tobytes()
        ds.save_as(folder / f"pt{i}.dcm", enforce_file_format=True)


def _assert_geometry(grid):
    assert grid.shape == (NZ, ROWS, COLS)
    np.testing.assert_allclose(grid.spacing_mm, [DZ, DY, DX], atol=1e-9)
    np.testing.assert_allclose(grid.origin_mm, ORIGIN, atol=1e-9)
    np.testing.assert_allclose(grid.direction, [[0, 0, 1], [0, 1, 0], [1, 0, 0]], atol=1e-12)


def _layout(folder):
    (s,) = scan_folder(folder)
    name = spect_layout(s.headers[0])
    return name, SPECT_LAYOUT_READERS[name](s, folder)


def test_nm_multiframe_layout(tmp_path):
    _nm_multiframe(tmp_path / "nm", slice_vector=(2, 3, 1))
    name, layout = _layout(tmp_path / "nm")
    assert name == "nm-multiframe"
    _assert_geometry(layout.grid)
    assert layout.units == "BQML" and layout.value_mapping.startswith("RescaleSlope")
    # frame k holds slice SliceVector[k]: z = 0, 1, 2 come from frames 2, 0, 1
    assert layout.slices == ((0, 2, 0.5, 0.0), (0, 0, 0.5, 0.0), (0, 1, 0.5, 0.0))
    h = read_spect_header(tmp_path / "nm")
    assert (h.units, h.decay_correction, h.decay_reference) == ("BQML", "START", SERIES_START)
    assert h.acquisition == ACQ and h.administration == ADMIN
    assert not h.administration_time_only
    assert h.nuclide == "Lu-177" and h.total_dose_bq == 7.4e9 and h.frame_duration_s == 1200.0
    assert h.slices == layout.slices and h.patient_id == "P1"
    np.testing.assert_allclose(read_spect_values(h),
                               np.stack([_stored(z) * 0.5 for z in range(NZ)]))


def test_single_slice_layout(tmp_path):
    _single_slices(tmp_path / "ss")
    name, layout = _layout(tmp_path / "ss")
    assert name == "single-slice"
    _assert_geometry(layout.grid)
    assert layout.units == "CNTS" and layout.value_mapping.startswith("RescaleSlope")
    # files were written from the top slice down: z = 0 is file 2 (slope 1)
    assert layout.slices == ((2, None, 1.0, 0.25), (1, None, 2.0, 0.25),
                             (0, None, 3.0, 0.25))
    h = read_spect_header(tmp_path / "ss")
    assert (h.units, h.decay_correction, h.decay_reference) == ("CNTS", "NONE", None)
    assert h.acquisition == ACQ
    assert h.administration is None and h.administration_time_only
    assert h.frame_duration_s is None and h.nuclide == "Lu-177"
    np.testing.assert_allclose(read_spect_values(h),
                               np.stack([_stored(z) * (z + 1) + 0.25 for z in range(NZ)]))


def test_enhanced_pt_layout(tmp_path):
    _enhanced_pt(tmp_path / "pt")
    name, layout = _layout(tmp_path / "pt")
    assert name == "enhanced"
    _assert_geometry(layout.grid)
    # the description looks at the top level only (as before the split); the per-frame
    # PixelValueTransformation slopes are what is applied
    assert layout.units == "BQML" and layout.value_mapping == "stored values (no rescale tags)"
    # frames stored top down: z = 0 is frame 2
    assert [sl[:2] for sl in layout.slices] == [(0, 2), (0, 1), (0, 0)]
    assert [sl[2] for sl in layout.slices] == pytest.approx([0.1, 0.2, 0.3])
    h = read_spect_header(tmp_path / "pt")
    assert (h.units, h.decay_correction, h.decay_reference) == ("BQML", "ADMIN", ADMIN)
    assert h.acquisition == ACQ and h.administration == ADMIN and h.total_dose_bq == 7.4e9
    np.testing.assert_allclose(read_spect_values(h),
                               np.stack([_stored(z) * 0.1 * (z + 1) for z in range(NZ)]))


def test_decay_correction_datetime_overrides_series_start(tmp_path):
    ref = datetime(2024, 5, 6, 8, 0, 0)
    _nm_multiframe(tmp_path / "nm", DecayCorrectionDateTime=ref.strftime("%Y%m%d%H%M%S"))
    assert read_spect_header(tmp_path / "nm").decay_reference == ref


@pytest.mark.parametrize("build, pattern", [
    (lambda p: _enhanced_pt(p, n_files=2), r"enhanced multi-frame series in several files"),
    (lambda p: _nm_multiframe(p, slice_vector=(1, 1, 3)), r"SliceVector \(0054,0080\) is not"),
    (lambda p: _nm_multiframe(p, NumberOfSlices=6), r"3 frames but NumberOfSlices"),
])
def test_layout_errors_name_the_problem(tmp_path, build, pattern):
    build(tmp_path / "d")
    with pytest.raises(StudyError, match=pattern):
        read_spect_header(tmp_path / "d")
