"""Read a study's images: a time point's SPECT (as stored) and CT, and the structures."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

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


#: CT image files read once per run: a run reads each CT 2-3 times (validation, the
#: registration, the reference CT on the dose grid, the partial-volume correction, the
#: registration figure: 20 reads of 10 files on the demo, 0.37 s of decompression alone).
#: Up to this many bytes of voxels are kept, least recently used first out; a CT larger
#: than the whole budget is never kept.
CT_CACHE_BYTES = 256 * 1024**2
_ct_cache: OrderedDict = OrderedDict()
_ct_lock = threading.Lock()


def _file_key(path) -> tuple:
    """The file as it is now: a rewritten file (a new inode, size or mtime) is a new key."""
    p = Path(path).resolve()
    st = os.stat(p)
    return str(p), st.st_ino, st.st_size, st.st_mtime_ns


def _cached_ct(path) -> Image:
    """:func:`read_image` of a CT file through the cache. The voxels are shared and read
    only (a caller that would change them in place fails loudly instead of changing every
    later read); each caller gets its own Image and ``meta`` dict."""
    try:
        key = _file_key(path)
    except OSError:  # not there, not readable: read_image says so in its own words
        return read_image(path, "CT", "HU")
    with _ct_lock:
        img = _ct_cache.get(key)
        if img is not None:
            _ct_cache.move_to_end(key)
    if img is None:
        img = read_image(path, "CT", "HU")
        img.data.flags.writeable = False
        if img.data.nbytes <= CT_CACHE_BYTES:
            with _ct_lock:
                _ct_cache[key] = img
                while sum(v.data.nbytes for v in _ct_cache.values()) > CT_CACHE_BYTES:
                    _ct_cache.popitem(last=False)
    return img.with_data(img.data, meta=dict(img.meta))


def clear_ct_cache() -> None:
    """Forget every CT read (the end of a run; tests)."""
    with _ct_lock:
        _ct_cache.clear()


def read_timepoint_ct(tp: TimePoint) -> Image:
    """A time point's CT in HU (image file or DICOM series). Image files are read once and
    shared read-only while the run lasts (:data:`CT_CACHE_BYTES`)."""
    if tp.ct_dicom is None:
        return _cached_ct(tp.ct)
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
