"""Read a study's images: a time point's SPECT (as stored) and CT, and the structures."""

from __future__ import annotations


from ..core.errors import StudyError
from ..core.grid import Image, LabelMap
from ..io.names import check_labels_named
from ..io.sitk_adapter import read_image, read_labels
from .load import Study, TimePoint


def read_timepoint_spect(tp: TimePoint) -> Image:
    """A time point's SPECT as stored (image file) or in Bq/mL as recorded (DICOM; the
    vendor's decay correction not yet undone)."""
    if tp.spect_dicom is None:
        return read_image(tp.spect, "activity concentration", "Bq/mL")
    from ..io.dicom_read import read_spect_values

    h = tp.spect_dicom
    return Image(read_spect_values(h) * tp.to_bq_ml, h.grid, "activity concentration",
                 "Bq/mL", {"source": str(tp.spect), "series_uid": h.series.uid, **tp.info})


def read_timepoint_ct(tp: TimePoint) -> Image:
    """A time point's CT in HU (image file or DICOM series)."""
    if tp.ct_dicom is None:
        return read_image(tp.ct, "CT", "HU")
    from ..io.dicom_read import read_ct_series

    return read_ct_series(tp.ct_dicom)


def read_study_labels(study: Study) -> LabelMap | None:
    """The study's structures on the reference time point's CT (or SPECT) grid: a label
    image as given, or the RTSTRUCT rasterised onto that grid."""
    if study.rtstruct is not None:
        from ..io.rtstruct import rasterize_rtstruct

        tp = study.timepoints[study.reference_index]
        if tp.ct is not None:
            grid = tp.ct_dicom.grid if tp.ct_dicom is not None else read_image(tp.ct).grid
        else:
            grid = tp.spect_dicom.grid if tp.spect_dicom is not None else \
                read_image(tp.spect).grid
        return rasterize_rtstruct(study.rtstruct, grid)
    if study.labels is None:
        return None
    lab = read_labels(study.labels, study.names)
    from .sections import labels_fingerprint

    if (study.info or {}).get("labels_checked") != labels_fingerprint(study.labels):
        # not checked when the study was loaded (a Study made in code), or changed since
        check_labels_named(lab.data, study.names, study.labels, error=StudyError)
    return lab
