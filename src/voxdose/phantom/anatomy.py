"""A deterministic digital torso phantom defined analytically in LPS millimetres.

Shapes are ellipsoids, elliptic cylinders and boxes, painted in order (later shapes
overwrite earlier ones). The origin is the centre of the torso; +x is patient left,
+y posterior, +z superior (DICOM LPS). Sizes are adult-like, chosen for a plausible
abdomen at the level of the kidneys and lumbar spine (L2-L4); they are illustrative,
not a reference phantom.

CT numbers (HU) per tissue are typical literature values for contrast-free CT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.grid import Grid


@dataclass(frozen=True)
class Shape:
    """One analytic shape. ``kind``: 'ellipsoid' | 'zcylinder' | 'box'.

    ellipsoid: centre (x, y, z) and semi-axes (a, b, c) in mm;
    zcylinder: elliptic cylinder along z, centre (x, y, z_mid), semi-axes (a, b, half_height);
    box: centre and half-sizes.
    """

    kind: str
    centre_mm: tuple[float, float, float]
    size_mm: tuple[float, float, float]

    def contains(self, x, y, z):
        cx, cy, cz = self.centre_mm
        a, b, c = self.size_mm
        dx, dy, dz = (x - cx) / a, (y - cy) / b, (z - cz) / c
        if self.kind == "ellipsoid":
            return dx * dx + dy * dy + dz * dz <= 1.0
        if self.kind == "zcylinder":
            return (dx * dx + dy * dy <= 1.0) & (np.abs(dz) <= 1.0)
        if self.kind == "box":
            return (np.abs(dx) <= 1.0) & (np.abs(dy) <= 1.0) & (np.abs(dz) <= 1.0)
        raise ValueError(self.kind)

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned box (lower, upper corner; x, y, z in mm) that holds the shape: every
        kind lies within centre +- size."""
        c, s = np.asarray(self.centre_mm, float), np.abs(np.asarray(self.size_mm, float))
        return c - s, c + s


@dataclass(frozen=True)
class Structure:
    name: str
    label: int
    hu: float
    shapes: tuple[Shape, ...]
    within_body: bool = True


def _e(c, s):
    return Shape("ellipsoid", c, s)


def _zc(c, s):
    return Shape("zcylinder", c, s)


def _box(c, s):
    return Shape("box", c, s)


#: Name of label 1: the torso outline is painted first and every organ over it, so what keeps
#: label 1 is the rest of the body (soft tissue outside every named structure).
REMAINDER = "remainder"
#: The torso, painted in this order. Label 0 is air outside the body.
STRUCTURES: tuple[Structure, ...] = (
    Structure(REMAINDER, 1, 40.0, (_zc((0.0, 0.0, 10.0), (165.0, 115.0, 160.0)),)),
    Structure("lungs", 2, -750.0, (_e((-85.0, 5.0, 125.0), (60.0, 80.0, 90.0)),
                                   _e((85.0, 5.0, 125.0), (60.0, 80.0, 90.0)))),
    Structure("liver", 3, 55.0, (_e((-80.0, -15.0, 60.0), (75.0, 70.0, 65.0)),)),
    Structure("spleen", 4, 45.0, (_e((85.0, 40.0, 45.0), (40.0, 30.0, 50.0)),)),
    Structure("kidney_left", 5, 35.0, (_e((65.0, 45.0, -25.0), (28.0, 24.0, 52.0)),)),
    Structure("kidney_right", 6, 35.0, (_e((-65.0, 45.0, -25.0), (28.0, 24.0, 52.0)),)),
    # Vertebral column (bodies + discs lumped as bone) and posterior elements.
    Structure("bone", 7, 700.0, (_zc((0.0, 35.0, 10.0), (22.0, 22.0, 160.0)),
                                 _box((0.0, 71.0, 10.0), (9.0, 14.0, 160.0)))),
    # Trabecular (red-marrow) cores of the lumbar vertebral bodies L2, L3, L4.
    Structure("marrow_L2", 8, 250.0, (_zc((0.0, 35.0, -10.0), (17.0, 17.0, 13.0)),)),
    Structure("marrow_L3", 9, 250.0, (_zc((0.0, 35.0, -42.0), (17.0, 17.0, 13.0)),)),
    Structure("marrow_L4", 10, 250.0, (_zc((0.0, 35.0, -74.0), (17.0, 17.0, 13.0)),)),
    Structure("lesion_liver", 11, 60.0, (_e((-100.0, -30.0, 50.0), (15.0, 15.0, 15.0)),)),
    Structure("lesion_node", 12, 50.0, (_e((35.0, -10.0, -60.0), (12.0, 12.0, 12.0)),)),
    Structure("lesion_lung", 13, 40.0, (_e((90.0, 0.0, 110.0), (10.0, 10.0, 10.0)),)),
)

AIR_HU = -1000.0


def structure_names() -> dict[int, str]:
    return {s.label: s.name for s in STRUCTURES}


def rigid_matrix(rotation_deg_xyz, translation_mm_xyz) -> np.ndarray:
    """4x4 LPS rigid transform p_scanner = R p_patient + t (rotations about x, then y, then z)."""
    ax, ay, az = np.deg2rad(rotation_deg_xyz)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rz @ ry @ rx
    m[:3, 3] = translation_mm_xyz
    return m


def rasterize_labels(grid: Grid, patient_to_scanner: np.ndarray | None = None,
                     scale: float = 1.0) -> np.ndarray:
    """Label of every voxel centre of ``grid`` (scanner frame), patient moved by the transform.

    A voxel at scanner point p shows the patient point T^-1 p. ``scale`` (> 0) sizes the
    whole anatomy about the torso's origin (1.1: every shape 10 % larger in x, y and z).
    """
    labels = np.zeros(grid.shape, dtype=np.uint8)
    body = None
    for s in STRUCTURES:
        inside = np.zeros(grid.shape, dtype=bool)
        for shape in s.shapes:
            # only the voxels whose centres can fall in the shape are tested, and only their
            # points are computed (same points, same test: identical labels to testing every
            # voxel, several times faster)
            sl = _index_box(grid, shape, patient_to_scanner, scale)
            if sl is not None:
                inside[sl] |= shape.contains(*patient_points(grid, sl, patient_to_scanner,
                                                             scale))
        if s.name == REMAINDER:
            body = inside
        elif s.within_body and body is not None:
            inside &= body
        labels[inside] = s.label
    return labels


def patient_points(grid: Grid, box=None, patient_to_scanner: np.ndarray | None = None,
                   scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient coordinates (x, y, z; mm, before ``scale``) of the voxel centres of ``grid``
    in ``box`` (slices z, y, x; None: every voxel): the scanner point p of each centre
    (:meth:`Grid.world_coordinates`' arithmetic) taken back by T^-1 p, then / ``scale``.
    Element by element, so the same voxel gives the same numbers in any box."""
    box = box or tuple(slice(0, n) for n in grid.shape)
    iz, iy, ix = (np.arange(b.start, b.stop, dtype=np.float64) for b in box)
    iz, iy, ix = iz[:, None, None], iy[None, :, None], ix[None, None, :]
    a = grid.affine
    x = a[0, 0] * iz + a[0, 1] * iy + a[0, 2] * ix + a[0, 3]
    y = a[1, 0] * iz + a[1, 1] * iy + a[1, 2] * ix + a[1, 3]
    z = a[2, 0] * iz + a[2, 1] * iy + a[2, 2] * ix + a[2, 3]
    if patient_to_scanner is not None:
        m = np.linalg.inv(patient_to_scanner)
        x, y, z = (m[0, 0] * x + m[0, 1] * y + m[0, 2] * z + m[0, 3],
                   m[1, 0] * x + m[1, 1] * y + m[1, 2] * z + m[1, 3],
                   m[2, 0] * x + m[2, 1] * y + m[2, 2] * z + m[2, 3])
    if scale != 1.0:
        x, y, z = x / scale, y / scale, z / scale
    return x, y, z


def _index_box(grid: Grid, shape: Shape, patient_to_scanner, scale: float):
    """Slices of ``grid`` (z, y, x) that hold every voxel centre whose patient point can lie
    in ``shape`` (its box, scaled, moved into the scanner frame, one voxel of margin);
    None when the box misses the grid."""
    lo, hi = shape.bounds_mm()
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1])
                        for c in (lo[2], hi[2])]) * scale
    if patient_to_scanner is not None:
        corners = corners @ patient_to_scanner[:3, :3].T + patient_to_scanner[:3, 3]
    idx = grid.world_to_index(corners)  # (8, 3) z, y, x
    first = np.floor(idx.min(axis=0)).astype(int) - 1
    last = np.ceil(idx.max(axis=0)).astype(int) + 1
    out = []
    for f, l_, n in zip(first, last, grid.shape):
        f, l_ = max(int(f), 0), min(int(l_), n - 1)
        if f > l_:
            return None
        out.append(slice(f, l_ + 1))
    return tuple(out)


def ct_from_labels(labels: np.ndarray, rng: np.random.Generator | None = None,
                   noise_hu: float = 10.0) -> np.ndarray:
    """CT numbers (HU) from labels, with optional Gaussian noise (seeded)."""
    lut = np.full(256, AIR_HU, dtype=np.float32)
    for s in STRUCTURES:
        lut[s.label] = s.hu
    ct = lut[labels]
    if rng is not None and noise_hu > 0:
        ct = ct + rng.normal(0.0, noise_hu, size=ct.shape).astype(np.float32)
    return ct
