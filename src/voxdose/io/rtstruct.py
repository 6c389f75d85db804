"""RTSTRUCT structures rasterised onto a voxel grid (a :class:`~voxdose.core.grid.LabelMap`).

Each CLOSED_PLANAR contour (ContourData: x, y, z triplets in LPS mm) is mapped into the
grid's index space; it must lie in one slice plane of the grid (|dz| < 0.5 voxel across its
points; axial contours on an axial grid, oblique ones on a grid of the same orientation).
Voxels whose centre lies inside the polygon are set (even-odd rule: several contours of
one structure on the same slice XOR, so holes work). Structures get label values 1..n in
file order; where structures overlap, the smaller one keeps the voxel (so organs inside a
body outline survive). ROIs interpreted as EXTERNAL (the body outline) are skipped unless
named in ``rois``.

Contours outside the grid are not dropped silently (:func:`check_rtstruct_in_grid`): per
ROI, the part of its contour area (polygon area, summed over its contours) outside the
grid's volume (voxel edges in plane; contours on planes beyond the first or last slice
entirely) is measured. More than ``MAX_OUTSIDE_FRACTION`` (1 %) is an error; a smaller,
non-zero part is a warning giving the lost volume in mL (area x slice spacing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import StudyError
from ..core.grid import Grid, LabelMap

#: a ROI with more than this fraction of its contour area outside the grid is an error;
#: any smaller non-zero part is a warning with the lost volume
MAX_OUTSIDE_FRACTION = 0.01


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
    if rois is not None and not list(rois):
        raise StudyError(f"{p}: structures.rois = [] names no ROI; list the ROIs to use "
                         f"(available: {sorted(available)}) or remove the key to use every "
                         "contoured ROI")
    if rois is not None and len(set(rois)) < len(rois):
        twice = sorted({n for n in rois if list(rois).count(n) > 1})
        raise StudyError(f"{p}: structures.rois names {', '.join(map(repr, twice))} twice; "
                         "list each ROI once")
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


@dataclass(frozen=True)
class _Contour:
    z: int                 # grid slice the contour lies in (may be outside 0..nz-1)
    rows: np.ndarray       # vertex iy
    cols: np.ndarray       # vertex ix
    area_mm2: float
    outside_mm2: float


def _polygon_area(rows: np.ndarray, cols: np.ndarray) -> float:
    """|shoelace area| of a polygon, in index units."""
    if len(rows) < 3:
        return 0.0
    return 0.5 * abs(float(np.dot(cols, np.roll(rows, -1)) - np.dot(rows, np.roll(cols, -1))))


def _clip(pts: np.ndarray, axis: int, bound: float, keep_below: bool) -> np.ndarray:
    """Sutherland-Hodgman: the part of polygon ``pts`` (n, 2) on one side of the line
    pts[:, axis] = bound (area exact for any simple polygon: the clip region is convex)."""
    if len(pts) == 0:
        return pts
    out = []
    nxt = np.roll(pts, -1, axis=0)
    for p, q in zip(pts, nxt):
        pin = p[axis] <= bound if keep_below else p[axis] >= bound
        qin = q[axis] <= bound if keep_below else q[axis] >= bound
        if pin:
            out.append(p)
        if pin != qin:
            t = (bound - p[axis]) / (q[axis] - p[axis])
            out.append(p + t * (q - p))
    return np.array(out).reshape(-1, 2)


def _area_outside(rows: np.ndarray, cols: np.ndarray, ny: int, nx: int) -> float:
    """Area (index units) of a polygon outside the rectangle [-0.5, ny-0.5] x [-0.5, nx-0.5]
    of voxel edges."""
    lo, hi_r, hi_c = -0.5, ny - 0.5, nx - 0.5
    total = _polygon_area(rows, cols)
    if rows.min() >= lo and cols.min() >= lo and rows.max() <= hi_r and cols.max() <= hi_c:
        return 0.0
    pts = np.c_[rows, cols]
    for axis, bound, below in ((0, lo, False), (0, hi_r, True), (1, lo, False),
                               (1, hi_c, True)):
        pts = _clip(pts, axis, bound, below)
    inside = _polygon_area(pts[:, 0], pts[:, 1]) if len(pts) >= 3 else 0.0
    return max(total - inside, 0.0)


def _contours(header: RTStructHeader, grid: Grid) -> dict[int, list[_Contour]]:
    """Label value -> its CLOSED_PLANAR contours in ``grid``'s index space, with their area
    and the part of it outside the grid. POINT contours are ignored; other types and
    contours not in one slice plane are errors."""
    import pydicom

    ds = pydicom.dcmread(header.path)
    seqs = {int(rc.ReferencedROINumber): rc.get("ContourSequence", [])
            for rc in ds.get("ROIContourSequence", [])}
    nz, ny, nx = grid.shape
    pixel_mm2 = float(grid.spacing_mm[1] * grid.spacing_mm[2])
    out: dict[int, list[_Contour]] = {}
    for value, num in header.roi_numbers.items():
        items = out.setdefault(value, [])
        for k, c in enumerate(seqs.get(num, [])):
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
            rows, cols = idx[:, 1], idx[:, 2]
            area = _polygon_area(rows, cols) * pixel_mm2
            outside = area if not 0 <= z < nz else _area_outside(rows, cols, ny, nx) * pixel_mm2
            items.append(_Contour(z, rows, cols, area, outside))
    return out


def _coverage_check(header: RTStructHeader, grid: Grid, contours) -> list[str]:
    warns = []
    dz = float(grid.spacing_mm[0])
    for value, items in contours.items():
        area = sum(c.area_mm2 for c in items)
        outside = sum(c.outside_mm2 for c in items)
        if area <= 0 or outside <= 1e-9 * area:
            continue
        name, frac, ml = header.names[value], outside / area, outside * dz / 1000.0
        beyond = sum(1 for c in items if not 0 <= c.z < grid.shape[0])
        planes = (f"; {beyond} of its {len(items)} contours lie on planes beyond the first "
                  "or last slice" if beyond else "")
        if frac > MAX_OUTSIDE_FRACTION:
            raise StudyError(
                f"{header.path}: ROI '{name}': {100 * frac:.3g} % of its contour area "
                f"({ml:.3g} mL) lies outside the image it is filled on (the reference "
                f"CT, or SPECT without CTs: {grid.describe()}){planes}; voxdose refuses "
                f"more than {100 * MAX_OUTSIDE_FRACTION:g} %: give a CT that covers the "
                "structure, or check that the RTSTRUCT belongs to this CT")
        warns.append(f"{header.path}: ROI '{name}': {100 * frac:.2g} % of its contour area "
                     f"({ml:.3g} mL) lies outside the image it is filled on (the reference "
                     "CT, or SPECT without CTs) and is left out")
    return warns


def check_rtstruct_in_grid(header: RTStructHeader, grid: Grid) -> list[str]:
    """Refuse a ROI losing more than 1 % of its contour area outside ``grid``
    (:class:`StudyError`); return one warning per ROI losing less (with the lost mL)."""
    return _coverage_check(header, grid, _contours(header, grid))


def rasterize_rtstruct(header: RTStructHeader, grid: Grid,
                       warnings: list | None = None) -> LabelMap:
    """Rasterise the chosen ROIs on ``grid`` (see the module docstring for the rules).
    Contours outside the grid: :func:`check_rtstruct_in_grid` (an error above 1 %; the
    warnings below it are appended to ``warnings`` when given)."""
    contours = _contours(header, grid)
    warns = _coverage_check(header, grid, contours)
    if warnings is not None:
        warnings.extend(warns)
    masks = {}
    for value, items in contours.items():
        m = np.zeros(grid.shape, dtype=bool)
        for c in items:
            if 0 <= c.z < grid.shape[0]:
                fill_polygon(m[c.z], c.rows, c.cols)
        masks[value] = m
    labels = np.zeros(grid.shape, dtype=np.int32)
    for value in sorted(masks, key=lambda v: -int(masks[v].sum())):  # big first, small wins
        labels[masks[value]] = value
    return LabelMap(labels, grid, dict(header.names))
