"""Geometry that travels with data: :class:`Grid`, :class:`Image`, :class:`LabelMap`.

Convention (contract): arrays are indexed ``[z, y, x]``. ``Grid.affine`` maps the
homogeneous *array* index ``(iz, iy, ix, 1)`` to the world point ``(x, y, z, 1)`` in
DICOM LPS millimetres. The reversal between ITK's ``(x, y, z)`` index order and ours
happens only in :mod:`voxdose.io.sitk_adapter`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import InputError
from .units import MM3_PER_ML


@dataclass(frozen=True, eq=False)
class Grid:
    """A regular voxel grid.

    Attributes
    ----------
    shape : (nz, ny, nx)
    affine : 4x4 float64, array index (iz, iy, ix, 1) -> LPS mm (x, y, z, 1).
    """

    shape: tuple[int, int, int]
    affine: np.ndarray

    def __post_init__(self):
        a = np.asarray(self.affine, dtype=np.float64)
        if a.shape != (4, 4):
            raise InputError(f"grid affine must be 4x4, got {a.shape}")
        a = a.copy()
        a.setflags(write=False)
        object.__setattr__(self, "affine", a)
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise InputError(f"grid shape must be 3 positive ints (z, y, x), got {self.shape}")

    @classmethod
    def from_spacing(cls, shape, spacing_mm_zyx, origin_mm_xyz=(0.0, 0.0, 0.0), direction=None):
        """Build a grid from spacing (z, y, x order) and origin (LPS x, y, z) in mm.

        ``direction`` (3x3) has as columns the LPS unit vectors of the array axes
        (z, y, x); the default is axis-aligned: array x -> L, y -> P, z -> S.
        """
        sz, sy, sx = (float(s) for s in spacing_mm_zyx)
        if min(sz, sy, sx) <= 0:
            raise InputError(f"voxel spacing must be positive, got {spacing_mm_zyx} mm")
        if direction is None:
            direction = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
        a = np.eye(4)
        a[:3, :3] = np.asarray(direction, dtype=np.float64) * np.array([sz, sy, sx])
        a[:3, 3] = origin_mm_xyz
        return cls(tuple(shape), a)

    @property
    def spacing_mm(self) -> np.ndarray:
        """Voxel size along the array axes (z, y, x), mm."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def origin_mm(self) -> np.ndarray:
        """LPS position (x, y, z) of the centre of voxel [0, 0, 0], mm."""
        return self.affine[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """3x3: columns are LPS unit vectors of the array axes (z, y, x)."""
        return self.affine[:3, :3] / self.spacing_mm

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (cm^3)."""
        return float(abs(np.linalg.det(self.affine[:3, :3])) / MM3_PER_ML)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def index_to_world(self, idx_zyx) -> np.ndarray:
        """Array indices (..., 3) in (iz, iy, ix) order -> LPS mm (..., 3) in (x, y, z) order."""
        idx = np.asarray(idx_zyx, dtype=np.float64)
        return idx @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_index(self, xyz_mm) -> np.ndarray:
        """LPS mm (..., 3) -> fractional array indices (..., 3) in (iz, iy, ix) order."""
        inv = np.linalg.inv(self.affine)
        p = np.asarray(xyz_mm, dtype=np.float64)
        return p @ inv[:3, :3].T + inv[:3, 3]

    def world_coordinates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """LPS coordinates (x, y, z) of every voxel centre, each an array of ``shape``, mm."""
        iz, iy, ix = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in self.shape),
                                 indexing="ij")
        a = self.affine
        x = a[0, 0] * iz + a[0, 1] * iy + a[0, 2] * ix + a[0, 3]
        y = a[1, 0] * iz + a[1, 1] * iy + a[1, 2] * ix + a[1, 3]
        z = a[2, 0] * iz + a[2, 1] * iy + a[2, 2] * ix + a[2, 3]
        return x, y, z

    def same_as(self, other: Grid, tol_mm: float = 1e-3) -> bool:
        """True when shapes are equal and affines agree within ``tol_mm``."""
        return self.shape == other.shape and bool(
            np.allclose(self.affine, other.affine, atol=tol_mm, rtol=0))

    def describe(self) -> str:
        """Shape, spacing and origin; the direction too when the axes are not the
        standard ones (z, y, x along LPS z, y, x), so two grids that differ only there do
        not read the same in a message."""
        sp = ", ".join(f"{s:.6g}" for s in self.spacing_mm)
        org = ", ".join(f"{v + 0.0:.6g}" for v in self.origin_mm)
        out = f"shape (z,y,x)={self.shape}, spacing (z,y,x)=({sp}) mm, origin (x,y,z)=({org}) mm"
        standard = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
        if not np.allclose(self.direction, standard, atol=1e-6):
            cols = "; ".join(", ".join(f"{v + 0.0:.3g}" for v in c) for c in self.direction.T)
            out += f", axes (z; y; x) along LPS ({cols})"
        return out

    def to_dict(self) -> dict:
        return {"shape_zyx": list(self.shape), "affine_index_zyx_to_lps_mm": self.affine.tolist()}


@dataclass(frozen=True, eq=False)
class Image:
    """Voxel data (NumPy or CuPy, indexed [z, y, x]) with its grid and physical unit."""

    data: Any
    grid: Grid
    quantity: str = ""
    unit: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if tuple(self.data.shape) != self.grid.shape:
            raise InputError(
                f"image data shape {tuple(self.data.shape)} does not match its grid "
                f"{self.grid.shape}")

    def with_data(self, data, **changes) -> Image:
        """A new image on the same grid with new data (and optionally quantity/unit/meta)."""
        return replace(self, data=data, **changes)


@dataclass(frozen=True, eq=False)
class LabelMap:
    """Integer structure labels on a grid; ``names``: label value -> structure name (0 = none).

    ``occupancy`` (optional, a :class:`voxdose.imaging.occupancy.Occupancy` on ``grid``): the
    fraction of every voxel each structure fills, computed from a finer label grid. When it
    is set, ``data`` is only the hard (majority-vote) label for figures and contours, and
    volumes, masses and dose statistics come from :meth:`fraction`.
    """

    data: np.ndarray
    grid: Grid
    names: dict[int, str]
    occupancy: Any = None

    def __post_init__(self):
        if tuple(self.data.shape) != self.grid.shape:
            raise InputError(
                f"label data shape {tuple(self.data.shape)} does not match its grid "
                f"{self.grid.shape}")
        if not np.issubdtype(np.asarray(self.data).dtype, np.integer):
            raise InputError("label image must hold integers (one value per structure)")
        occ = self.occupancy
        if occ is not None and not occ.grid.same_as(self.grid, tol_mm=1e-2):
            raise InputError("label occupancy is not on the labels' grid")

    def fraction(self, value: int) -> np.ndarray:
        """Volume fraction f (0..1) of every voxel filled by label ``value``: the occupancy's
        fractions when set, else the 0/1 mask ``data == value`` (float32)."""
        if self.occupancy is not None and value in self.occupancy.fractions:
            return self.occupancy.fractions[value]
        return (np.asarray(self.data) == value).astype(np.float32)

    def mask(self, name: str) -> np.ndarray:
        """Boolean mask of one structure by name."""
        for value, n in self.names.items():
            if n == name:
                return self.data == value
        raise InputError(
            f"structure '{name}' not found; known: {sorted(self.names.values())}")

    def volume_ml(self, name: str) -> float:
        """Volume of a structure, mL: sum_v f(v) V_vox (whole voxels without occupancy)."""
        self.mask(name)  # InputError for an unknown name
        value = next(v for v, n in self.names.items() if n == name)
        return float(self.fraction(value).sum(dtype=np.float64)) * self.grid.voxel_volume_ml
