"""The one place where SimpleITK's (x, y, z) index order meets voxdose's (z, y, x).

SimpleITK: ``GetArrayFromImage`` already returns arrays indexed [z, y, x]; spacing,
origin and direction are given in (x, y, z) index order with the direction matrix's
columns being the LPS unit vectors of the ITK index axes. Our :class:`~voxdose.core.grid.Grid`
keeps the columns in array order (z, y, x), so the columns are reversed here, once.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError
from ..core.grid import Grid, Image, LabelMap
from .atomic import atomic_path, write_json


def grid_from_sitk(img: sitk.Image) -> Grid:
    if img.GetDimension() != 3:
        raise InputError(f"expected a 3D image, got {img.GetDimension()}D")
    sx, sy, sz = img.GetSpacing()
    d_itk = np.array(img.GetDirection(), dtype=np.float64).reshape(3, 3)  # columns: x, y, z
    a = np.eye(4)
    a[:3, :3] = d_itk[:, ::-1] * np.array([sz, sy, sx])
    a[:3, 3] = img.GetOrigin()
    nx, ny, nz = img.GetSize()
    return Grid((nz, ny, nx), a)


def apply_grid_to_sitk(img: sitk.Image, grid: Grid) -> sitk.Image:
    sz, sy, sx = grid.spacing_mm
    d = grid.direction[:, ::-1]  # back to ITK column order (x, y, z)
    img.SetSpacing((float(sx), float(sy), float(sz)))
    img.SetOrigin(tuple(float(v) for v in grid.origin_mm))
    img.SetDirection(tuple(float(v) for v in d.ravel()))
    return img


def image_to_sitk(data: np.ndarray, grid: Grid) -> sitk.Image:
    """NumPy [z, y, x] + grid -> SimpleITK image with the same geometry."""
    arr = np.asarray(data)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    img = sitk.GetImageFromArray(arr)
    return apply_grid_to_sitk(img, grid)


def sitk_to_array_and_grid(img: sitk.Image) -> tuple[np.ndarray, Grid]:
    return sitk.GetArrayFromImage(img), grid_from_sitk(img)


def read_sitk(path) -> sitk.Image:
    path = Path(path)
    if not path.exists():
        raise InputError(f"image file not found: {path}")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1][:120] if str(exc).strip() else ""
        raise InputError(f"cannot read image {path}: {first}; is it NIfTI/MHD/NRRD?") from None


def read_image(path, quantity: str = "", unit: str = "", dtype=np.float64) -> Image:
    """Read a 3D image (NIfTI, MHD, NRRD, ...) into an :class:`Image` (host memory)."""
    img = read_sitk(path)
    arr, grid = sitk_to_array_and_grid(img)
    arr = arr.astype(dtype, copy=False)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"image {path} contains NaN or infinite values; fix or mask them first")
    meta = {"source": str(path)}
    sidecar = sidecar_path(path)
    if sidecar.exists():
        meta.update(json.loads(sidecar.read_text()))
    return Image(arr, grid, quantity, unit, meta)


def read_labels(path, names: dict[int, str]) -> LabelMap:
    img = read_sitk(path)
    arr, grid = sitk_to_array_and_grid(img)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.allclose(arr, np.round(arr)):
            raise InputError(f"label image {path} holds non-integer values; give integer labels")
        arr = np.round(arr).astype(np.int32)
    return LabelMap(arr.astype(np.int32), grid, dict(names))


def sidecar_path(path) -> Path:
    p = Path(path)
    name = p.name
    for ext in (".nii.gz", ".nii", ".mhd", ".nrrd"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return p.with_name(name + ".json")


def write_image(path, image: Image, dtype=np.float32, sidecar: dict | None = None) -> Path:
    """Write an image atomically, with a JSON sidecar holding quantity, unit and provenance."""
    from ..core.backend import to_numpy

    arr = to_numpy(image.data)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    img = image_to_sitk(arr, image.grid)
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=str(path).endswith(".gz"))
    meta = {"quantity": image.quantity, "unit": image.unit}
    meta.update(image.meta)
    if sidecar:
        meta.update(sidecar)
    write_json(sidecar_path(path), meta)
    return Path(path)


def write_labels(path, labels: LabelMap) -> Path:
    img = image_to_sitk(labels.data.astype(np.uint8 if labels.data.max() < 256 else np.int32),
                        labels.grid)
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=True)
    return Path(path)
