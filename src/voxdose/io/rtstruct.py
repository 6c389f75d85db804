"""RTSTRUCT structures rasterised onto a voxel grid (a :class:`~voxdose.core.grid.LabelMap`).

Each CLOSED_PLANAR contour (ContourData: x, y, z triplets in LPS mm) is mapped into the
grid's index space; it must lie in one slice plane of the grid (|dz| < 0.5 voxel across its
points; axial contours on an axial grid, oblique ones on a grid of the same orientation).
Voxels whose centre lies inside the polygon are set (even-odd rule: several contours of
one structure on the same slice XOR, so holes work). Structures get label values 1..n in
file order; where structures overlap, the smaller one keeps the voxel (so organs inside a
body outline survive). ROIs interpreted as EXTERNAL (the body outline) are skipped unless
named in ``rois``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import StudyError
from ..core.grid import Grid, LabelMap


@dataclass(frozen=True, eq=False)
class RTStructHeader:
    path: Path
    frame_of_reference_uids: tuple[str, ...]
    names: dict[int, str]          # label value -> ROI name (the ROIs to rasterise)
    roi_numbers: dict[int, int]    # label value -> ROINumber
    skipped: tuple[str, ...]       # EXTERNAL ROIs left out


def _find_file(path) -> Path:
    import pydicom
    from pydicom.errors import InvalidDicomError

    p = Path(path)
    if p.is_file():
        return p
    found = []
    for f in sorted(p.rglob("*")):
        if not f.is_file():
            continue
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["Modality"])
        except (InvalidDicomError, Exception):
            continue
        if str(ds.get("Modality", "")) == "RTSTRUCT":
            found.append(f)
    if len(found) != 1:
        raise StudyError(f"{p}: expected exactly one RTSTRUCT file in this folder, found "
                         f"{len(found)}; name the file in structures.rtstruct")
    return found[0]


def read_rtstruct_header(path, rois: list[str] | None = None) -> RTStructHeader:
    import pydicom

    p = _find_file(path)
    try:
        ds = pydicom.dcmread(p)
    except Exception as exc:
        raise StudyError(f"{p}: cannot read the RTSTRUCT ({type(exc).__name__}: "
                         f"{str(exc)[:100]}); truncated?") from None
    if str(ds.get("Modality", "")) != "RTSTRUCT":
        raise StudyError(f"{p}: Modality (0008,0060) is {ds.get('Modality')!r}, not RTSTRUCT")
    fors = {str(it.get("FrameOfReferenceUID", ""))
            for it in ds.get("ReferencedFrameOfReferenceSequence", [])}
    interp = {int(o.ReferencedROINumber): str(o.get("RTROIInterpretedType", ""))
              for o in ds.get("RTROIObservationsSequence", [])}
    with_contours = {int(rc.ReferencedROINumber) for rc in ds.get("ROIContourSequence", [])
                     if rc.get("ContourSequence")}
    names, numbers, skipped = {}, {}, []
    available = {}
    for r in ds.get("StructureSetROISequence", []):
        num, name = int(r.ROINumber), str(r.ROIName)
        if r.get("ReferencedFrameOfReferenceUID"):
            fors.add(str(r.ReferencedFrameOfReferenceUID))
        if num in with_contours:
            available[name] = num
    wanted = rois if rois is not None else [
        n for n, num in available.items() if interp.get(num, "").upper() != "EXTERNAL"]
    skipped = [n for n in available if n not in wanted]
    for n in wanted:
        if n not in available:
            raise StudyError(f"{p}: structures.rois names '{n}', which has no contours in the "
                             f"RTSTRUCT; available: {sorted(available)}")
    for value, n in enumerate(wanted, start=1):
        names[value], numbers[value] = n, available[n]
    if not names:
        raise StudyError(f"{p}: the RTSTRUCT holds no contoured structures")
    fors.discard("")
    return RTStructHeader(p, tuple(sorted(fors)), names, numbers, tuple(skipped))


def fill_polygon(mask2d: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> None:
    """XOR the pixels whose centres lie inside the polygon (vertex index coordinates
    ``rows`` (iy) and ``cols`` (ix)) into ``mask2d`` (even-odd rule, scanline)."""
    ny, nx = mask2d.shape
    r0, c0 = np.asarray(rows, float), np.asarray(cols, float)
    r1, c1 = np.roll(r0, -1), np.roll(c0, -1)
    lo, hi = int(max(np.ceil(r0.min()), 0)), int(min(np.floor(r0.max()), ny - 1))
    inside = np.zeros_like(mask2d, dtype=bool)
    for y in range(lo, hi + 1):
        cross = (r0 <= y) != (r1 <= y)  # half-open: vertices on the scanline count once
        if not np.any(cross):
            continue
        t = (y - r0[cross]) / (r1[cross] - r0[cross])
        xs = np.sort(c0[cross] + t * (c1[cross] - c0[cross]))
        for a, b in zip(xs[0::2], xs[1::2]):
            i0, i1 = int(max(np.ceil(a), 0)), int(min(np.floor(b), nx - 1))
            if i1 >= i0:
                inside[y, i0:i1 + 1] ^= True
    mask2d ^= inside


def rasterize_rtstruct(header: RTStructHeader, grid: Grid) -> LabelMap:
    """Rasterise the chosen ROIs on ``grid`` (see the module docstring for the rules)."""
    import pydicom

    ds = pydicom.dcmread(header.path)
    contours = {int(rc.ReferencedROINumber): rc.get("ContourSequence", [])
                for rc in ds.get("ROIContourSequence", [])}
    masks = {}
    for value, num in header.roi_numbers.items():
        m = np.zeros(grid.shape, dtype=bool)
        for k, c in enumerate(contours.get(num, [])):
            gtype = str(c.get("ContourGeometricType", "CLOSED_PLANAR"))
            if gtype == "POINT":
                continue
            if gtype != "CLOSED_PLANAR":
                raise StudyError(f"{header.path}: ROI '{header.names[value]}' contour {k} is "
                                 f"{gtype}; only CLOSED_PLANAR contours can be filled")
            pts = np.array([float(v) for v in c.ContourData]).reshape(-1, 3)
            idx = grid.world_to_index(pts)  # (iz, iy, ix)
            iz = idx[:, 0]
            if np.ptp(iz) > 0.5:
                raise StudyError(f"{header.path}: ROI '{header.names[value]}' contour {k} is "
                                 "not in one slice plane of the reference grid (spans "
                                 f"{np.ptp(iz):.2f} slices); give the labels as a NIfTI on "
                                 "the reference grid instead")
            z = int(np.rint(iz.mean()))
            if 0 <= z < grid.shape[0]:
                fill_polygon(m[z], idx[:, 1], idx[:, 2])
        masks[value] = m
    labels = np.zeros(grid.shape, dtype=np.int32)
    for value in sorted(masks, key=lambda v: -int(masks[v].sum())):  # big first, small wins
        labels[masks[value]] = value
    return LabelMap(labels, grid, dict(header.names))
