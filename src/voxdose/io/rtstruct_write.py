"""Structures (a :class:`~voxdose.core.grid.LabelMap`) as an RTSTRUCT on the image they were
drawn on.

Contours are **pixel-edge polygons**: per slice and structure, the boundary between the
structure's voxels and the others, traced along voxel edges (vertices at voxel corners,
index coordinates k +- 1/2; collinear vertices dropped). They are exact, not smoothed: a
reader that fills the voxels whose centre lies inside (voxdose's, and most planning
systems') gets the label image back voxel for voxel; one that rounds vertices to voxel
centres (rt-utils) is off by up to one voxel along the outline. Every 4-connected region
is one outer contour; holes (another structure inside, e.g. an organ inside the
remainder) are further contours of the same ROI on the same slice (no keyholes), so the
ROI is the even-odd combination (exclusive or) of its contours on a slice, the usual
reading of nested contours and the one voxdose's reader applies. Diagonal neighbours are
separate regions that touch at a corner (the tracing turns right at such a corner), so no
contour crosses itself or another one.

Points are LPS mm (the grid's affine) in the slice planes of the referenced image; each
contour names its image slice in ContourImageSequence (the CT slice's SOP instance, or the
frame of a multi-frame NM image), and ReferencedFrameOfReferenceSequence lists every
image of the series, as readers such as rt-utils and 3D Slicer expect.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.grid import LabelMap

# (d_row, d_col) of the four edge directions; each boundary edge of a pixel runs clockwise
# on screen (row down), so the structure lies on its right-hand side.
_EAST, _SOUTH, _WEST, _NORTH = (0, 1), (1, 0), (0, -1), (-1, 0)


@dataclass(frozen=True)
class ImageRef:
    """One slice of the referenced image: SOP class and instance, and for a multi-frame
    image its 1-based frame number (None for single-frame images such as CT slices)."""

    sop_class_uid: str
    sop_instance_uid: str
    frame: int | None = None


@dataclass(frozen=True)
class SeriesRef:
    """The image series the structures were drawn on, one :class:`ImageRef` per slice z of
    the label grid (the grid's slice order)."""

    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    slices: tuple[ImageRef, ...]


def series_ref(files, grid) -> SeriesRef:
    """The :class:`SeriesRef` of one written image series on ``grid``: each slice z of the
    grid mapped to the CT file or multi-frame NM frame at its position (the frames of a
    multi-frame NM image lie along its slice normal from DetectorInformationSequence's
    ImagePositionPatient, SpacingBetweenSlices apart)."""
    import pydicom

    slices: dict[int, ImageRef] = {}
    ds = None
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        sop = (str(ds.SOPClassUID), str(ds.SOPInstanceUID))
        n = int(ds.get("NumberOfFrames", 1) or 1)
        if n == 1 and "ImagePositionPatient" in ds:
            slices[_slice_of(grid, ds.ImagePositionPatient)] = ImageRef(*sop)
            continue
        src = ds.DetectorInformationSequence[0] if "DetectorInformationSequence" in ds else ds
        iop = np.array([float(v) for v in src.ImageOrientationPatient])
        normal = np.cross(iop[:3], iop[3:])
        p0 = np.array([float(v) for v in src.ImagePositionPatient])
        step = float(ds.get("SpacingBetweenSlices") or ds.SliceThickness)
        for k in range(n):
            slices[_slice_of(grid, p0 + k * step * normal)] = ImageRef(*sop, frame=k + 1)
    missing = sorted(set(range(grid.shape[0])) - set(slices))
    if ds is None or missing:
        raise InputError(f"the image series does not cover slices {missing} of the label "
                         "grid; write the structures on the grid of the image they reference")
    return SeriesRef(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                     str(ds.FrameOfReferenceUID),
                     tuple(slices[z] for z in range(grid.shape[0])))


def _slice_of(grid, position) -> int:
    """The grid slice at a position (LPS mm); an InputError off the grid's slice planes."""
    iz = float(grid.world_to_index(np.array([float(v) for v in position]))[0])
    z = int(np.rint(iz))
    if abs(iz - z) > 1e-3 or not 0 <= z < grid.shape[0]:
        raise InputError(f"an image slice at {list(position)} mm is not a slice of the label "
                         f"grid ({grid.describe()})")
    return z


def _boundary_edges(mask: np.ndarray) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """Start corner -> directions of the boundary edges leaving it (corner (r, c) is the
    top-left corner of pixel (r, c))."""
    p = np.pad(np.asarray(mask, dtype=bool), 1)
    inner = p[1:-1, 1:-1]
    out: dict[tuple[int, int], list[tuple[int, int]]] = {}
    # side of the pixel whose neighbour is background -> (start-corner offset, direction)
    sides = (((p[:-2, 1:-1]), (0, 0), _EAST), ((p[1:-1, 2:]), (0, 1), _SOUTH),
             ((p[2:, 1:-1]), (1, 1), _WEST), ((p[1:-1, :-2]), (1, 0), _NORTH))
    for neighbour, (dr, dc), direction in sides:
        rows, cols = np.nonzero(inner & ~neighbour)
        for r, c in zip((rows + dr).tolist(), (cols + dc).tolist()):
            out.setdefault((r, c), []).append(direction)
    return out


def _turn_order(d: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    """Right turn, straight on, left turn (with row down, 'right' of east is south)."""
    return (d[1], -d[0]), d, (-d[1], d[0])


def mask_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """The pixel-edge contours of a 2D mask: a list of (n, 2) vertex arrays (row, col) in
    index coordinates (corners at k - 1/2), one closed polygon each, without repeated or
    collinear vertices. Exact under the voxel-centre-inside rule (see the module doc)."""
    edges = _boundary_edges(mask)
    unused = {(c, d) for c, ds in edges.items() for d in ds}
    polygons = []
    for corner, directions in edges.items():
        for d in directions:
            if (corner, d) in unused:
                polygons.append(_trace(edges, unused, corner, d))
    return polygons


def _trace(edges, unused, start, d0) -> np.ndarray:
    """Follow boundary edges from ``start`` (first direction ``d0``) until the contour
    closes; at a corner with two ways on (diagonal pixels) take the right turn, so every
    edge has one successor and contours never cross."""
    verts, corner, d, prev = [], start, d0, None
    while True:
        unused.discard((corner, d))
        if d != prev:
            verts.append(corner)
        corner, prev = (corner[0] + d[0], corner[1] + d[1]), d
        d = next(t for t in _turn_order(prev) if t in edges[corner])
        if corner == start and d == d0:
            break
    if prev == d0:  # the start lies on a straight run: not a vertex
        verts = verts[1:]
    return np.asarray(verts, dtype=np.float64) - 0.5


def label_contours(labels: LabelMap) -> dict[str, list[tuple[int, np.ndarray]]]:
    """Structure name -> its contours as (slice z, (n, 3) points in LPS mm), for every
    named structure in label-value order (a structure without voxels gets no contour)."""
    data = np.asarray(labels.data)
    out: dict[str, list[tuple[int, np.ndarray]]] = {}
    for value in sorted(labels.names):
        name, items = labels.names[value], []
        mask = data == value
        for z in np.nonzero(mask.any(axis=(1, 2)))[0].tolist():
            for poly in mask_polygons(mask[z]):
                idx = np.c_[np.full(len(poly), float(z)), poly]
                items.append((z, labels.grid.index_to_world(idx)))
        out[name] = items
    return out


def write_labels_rtstruct(path, labels: LabelMap, series: SeriesRef, *,
                          patient: dict | None = None, patient_id: str = "VOXDOSE",
                          label: str = "voxdose", series_number: int = 1,
                          interpreted_types: dict | None = None) -> Path:
    """Write ``labels`` as an RTSTRUCT that references ``series`` (the image the labels'
    grid is the grid of: one :class:`ImageRef` per slice), atomically; return the path.

    ``patient``: patient and study tags to copy (PatientID, PatientName, PatientSex, ...).
    ``interpreted_types``: ROI name -> RTROIInterpretedType (default ORGAN for all).
    """
    from .dicom_write import write_rtstruct

    if len(series.slices) != labels.grid.shape[0]:
        raise InputError(f"the referenced series has {len(series.slices)} slices, the label "
                         f"grid {labels.grid.shape[0]}")
    contours = label_contours(labels)
    rois = {name: [pts for _, pts in items] for name, items in contours.items()}
    refs = {name: [series.slices[z] for z, _ in items] for name, items in contours.items()}
    return write_rtstruct(path, rois, for_uid=series.frame_of_reference_uid,
                          study_uid=series.study_uid, series_ref=series, contour_refs=refs,
                          patient=patient, patient_id=patient_id, label=label,
                          series_number=series_number, interpreted_types=interpreted_types)
