"""The one place where SimpleITK's (x, y, z) index order meets voxdose's (z, y, x).

SimpleITK: ``GetArrayFromImage`` already returns arrays indexed [z, y, x]; spacing,
origin and direction are given in (x, y, z) index order with the direction matrix's
columns being the LPS unit vectors of the ITK index axes. Our :class:`~voxdose.core.grid.Grid`
keeps the columns in array order (z, y, x), so the columns are reversed here, once.

Compressed NIfTI (``.nii.gz``) is written by SimpleITK uncompressed (the same header and
voxel bytes it would compress) and gzip-compressed here, in 1 MiB pieces on every core
(:func:`gzip_bytes_to`): one standard gzip member that any reader takes.  The compression is
chosen per call, else by ``$VOXDOSE_COMPRESSION_LEVEL``, else ``fast`` (see
:data:`COMPRESSION_LEVELS`).  ``.nii``, ``.mhd`` and ``.nrrd`` are written uncompressed.
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError
from ..core.grid import Grid, Image, LabelMap
from .atomic import atomic_path, write_json


def grid_from_sitk(img: sitk.Image, source=None) -> Grid:
    """The (z, y, x) grid of a 3D SimpleITK image (or reader); ``source`` names the file in
    the error for another dimension."""
    if img.GetDimension() != 3:
        where = f"{source}: " if source is not None else ""
        raise InputError(f"{where}a 3D image is needed, this one is {img.GetDimension()}D "
                         "(a 4D series or a 2D slice?): give one 3D volume per file")
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


def sitk_to_array_and_grid(img: sitk.Image, source=None) -> tuple[np.ndarray, Grid]:
    return sitk.GetArrayFromImage(img), grid_from_sitk(img, source)


def read_sitk(path) -> sitk.Image:
    path = Path(path)
    if os.path.lexists(path) and not path.exists():
        raise InputError(f"image {path} is a broken symbolic link or a symlink loop; give "
                         "the image file itself")
    if not path.exists():
        raise InputError(f"image file not found: {path}")
    if path.is_dir():
        raise InputError(f"image {path} is a folder, not an image file; give a NIfTI/MHD/"
                         "NRRD file")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1][:120] if str(exc).strip() else ""
        raise InputError(f"cannot read image {path}: {first}; is it NIfTI/MHD/NRRD?") from None


#: NumPy voxel type -> the SimpleITK pixel type ITK reads it as.
_SITK_PIXEL = {np.dtype(np.uint8): "sitkUInt8", np.dtype(np.int8): "sitkInt8",
               np.dtype(np.int16): "sitkInt16", np.dtype(np.uint16): "sitkUInt16",
               np.dtype(np.int32): "sitkInt32", np.dtype(np.uint32): "sitkUInt32",
               np.dtype(np.float32): "sitkFloat32", np.dtype(np.float64): "sitkFloat64"}


def _voxels_checked(path, checked, dtype):
    """(voxels, grid) from the bytes the NIfTI check already decompressed, when SimpleITK
    would read exactly those voxels (its header information agrees: 3D, one component, the
    same size and pixel type); (None, None) otherwise. Geometry always comes from
    SimpleITK's reading of the header, so the grid is the one a full read gives; the file
    is not decompressed a second time (0.27 s at 256^3, issue 18)."""
    if checked is None or checked.voxels is None:
        return None, None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None, None  # let the full read report it
    v = checked.voxels
    native = v.dtype.newbyteorder("=")
    if (reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1
            or tuple(reader.GetSize()) != checked.dims_xyz
            or _pixel_name(reader) != _SITK_PIXEL.get(native)):
        return None, None
    return np.array(v, dtype=dtype if dtype is not None else native), grid_from_sitk(reader)


def _pixel_name(reader) -> str:
    """The reader's pixel type as the name of its SimpleITK constant (``sitkFloat32``)."""
    pid = reader.GetPixelID()
    return next((name for name in _SITK_PIXEL.values() if getattr(sitk, name) == pid), "")


def read_image(path, quantity: str = "", unit: str = "", dtype=np.float64) -> Image:
    """Read a 3D image (NIfTI, MHD, NRRD, ...) into an :class:`Image` (host memory).

    ``dtype``: the array's type (None: the file's own); the voxels are copied out of the
    SimpleITK image once, converted on the way.  A NIfTI file is first checked on its bytes
    (:mod:`voxdose.io.nifti_check`): ITK would zero-fill a file cut short and read NaN
    voxels as 0."""
    from .nifti_check import check_nifti, is_nifti

    checked = check_nifti(path) if is_nifti(path) and Path(path).is_file() else None
    arr, grid = _voxels_checked(path, checked, dtype)
    if arr is None:
        img = read_sitk(path)
        grid = grid_from_sitk(img, path)
        view = sitk.GetArrayViewFromImage(img)  # valid while ``img`` lives: copied right here
        arr = np.array(view, dtype=dtype if dtype is not None else view.dtype)
        del view
    if not np.all(np.isfinite(arr)):
        raise InputError(f"image {path} contains NaN or infinite values; fix or mask them first")
    meta = {"source": str(path), **read_sidecar(path)}
    return Image(arr, grid, quantity, unit, meta)


#: sidecar spellings of the units commands read (compared without case and spaces)
DOSE_UNITS = ("Gy", "gray")
TIA_UNITS = ("Bq*s per voxel (decays)", "Bq*s per voxel", "Bq*s", "Bq s", "Bq·s", "decays")
BQ_ML_UNITS = ("Bq/mL", "Bq ml-1", "Bq/cc", "BQML")


def _unit_key(unit) -> str:
    return "".join(str(unit).lower().split())


def check_sidecar_unit(image: Image, path, accepted, needs: str) -> None:
    """The unit the JSON sidecar of image ``path`` gives (``image.meta['unit']``, as
    :func:`read_image` read it) must be one of ``accepted``; a sidecar without a unit is
    accepted. Else :class:`InputError` naming the file, its unit and quantity, and
    ``needs`` (what the command reads, what to give instead)."""
    unit = image.meta.get("unit")
    if unit is None or not str(unit).strip():
        return
    if _unit_key(unit) not in {_unit_key(a) for a in accepted}:
        what = image.meta.get("quantity")
        raise InputError(f"{path}: its sidecar gives the unit '{unit}'"
                         f"{f' ({what})' if what else ''}; {needs}")


def read_sidecar(path) -> dict:
    """The JSON sidecar of image ``path`` (``a.json`` beside ``a.nii.gz``) as a dict; ``{}``
    when there is none. A sidecar that is not a readable JSON object is an
    :class:`InputError` naming it (line and column of a syntax error)."""
    car = sidecar_path(path)
    if not os.path.lexists(car):
        return {}
    if not car.is_file():
        raise InputError(f"sidecar {car} of image {path} is not a readable file (a folder, "
                         "or a broken link?); remove it or replace it with a JSON object")
    try:
        doc = json.loads(car.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"sidecar {car} of image {path} is not valid JSON ({exc.msg} at "
                         f"line {exc.lineno}, column {exc.colno}); fix it or remove "
                         "it") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise InputError(f"sidecar {car} of image {path} cannot be read "
                         f"({type(exc).__name__}); give a UTF-8 JSON file or remove "
                         "it") from None
    if not isinstance(doc, dict):
        raise InputError(f"sidecar {car} of image {path} holds a JSON {type(doc).__name__}, "
                         'not an object ({"unit": "Bq/mL", ...}); fix it or remove it')
    return doc


def read_labels(path, names: dict[int, str]) -> LabelMap:
    from .nifti_check import check_nifti, is_nifti

    # ITK would zero-fill a label file cut short: structures lost
    checked = check_nifti(path) if is_nifti(path) and Path(path).is_file() else None
    arr, grid = _voxels_checked(path, checked, None)
    if arr is None:
        arr, grid = sitk_to_array_and_grid(read_sitk(path), path)
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


#: Compression of a written ``.nii.gz``: ``fast`` (deflate with run-length matches only,
#: zlib's Z_RLE: on float dose and TIA maps within 0.5 % of the size of SimpleITK's own gzip,
#: the writer before, for 2.5x less CPU; docs/benchmarks.md) or a zlib level, 0 (stored, no
#: compression) to 9 (smallest, slowest), with zlib's standard strategy.
COMPRESSION_LEVELS = ("fast",) + tuple(str(i) for i in range(10))
COMPRESSION_ENV = "VOXDOSE_COMPRESSION_LEVEL"
DEFAULT_COMPRESSION = "fast"
_GZIP_PIECE = 1 << 20  # bytes per independently compressed piece (fixed: same file on any
#                        number of cores)
_WINDOW = 1 << 15  # deflate's window: each piece is primed with the 32 KiB before it


def compression_level(value=None) -> str:
    """The compression to use: ``value`` when given, else ``$VOXDOSE_COMPRESSION_LEVEL``,
    else ``fast``; one of :data:`COMPRESSION_LEVELS`. Raises :class:`InputError`."""
    source = "--compression-level"
    if value is None:
        value, source = os.environ.get(COMPRESSION_ENV), COMPRESSION_ENV
    if value is None or str(value).strip() == "":
        return DEFAULT_COMPRESSION
    v = str(value).strip().lower()
    if v not in COMPRESSION_LEVELS:
        raise InputError(f"{source} must be 'fast' or a zlib level 0-9; got '{value}'")
    return v


def _deflate_settings(level: str) -> tuple[int, int]:
    if level == "fast":
        return 1, zlib.Z_RLE
    return int(level), zlib.Z_DEFAULT_STRATEGY


def _workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def gzip_bytes_to(data, out, level: str = DEFAULT_COMPRESSION) -> None:
    """Write ``data`` (bytes-like) gzip-compressed to the binary file ``out``.

    One gzip member (RFC 1952: header, deflate stream, CRC-32, length): the data are cut
    into 1 MiB pieces, each deflated on its own thread with the 32 KiB before it as its
    dictionary and ended on a byte boundary (sync flush; the last piece ends the stream),
    so the pieces join into one valid deflate stream, as pigz does.  The bytes depend on
    the data and ``level`` only, not on the number of cores.
    """
    from concurrent.futures import ThreadPoolExecutor

    lvl, strategy = _deflate_settings(compression_level(level))
    mv = memoryview(data).cast("B")
    n = len(mv)
    starts = list(range(0, n, _GZIP_PIECE)) or [0]

    def piece(i: int) -> bytes:
        s = starts[i]
        kw = {"zdict": bytes(mv[max(0, s - _WINDOW):s])} if s else {}
        c = zlib.compressobj(lvl, zlib.DEFLATED, -15, 9, strategy, **kw)
        last = i == len(starts) - 1
        return c.compress(mv[s:s + _GZIP_PIECE]) + c.flush(
            zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)

    # header: magic, deflate, no flags, mtime 0 (reproducible files), xfl 0, OS unknown
    out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")
    with ThreadPoolExecutor(max_workers=min(_workers(), len(starts))) as pool:
        parts = pool.map(piece, range(len(starts)))
        crc = zlib.crc32(mv)  # alongside the compression (zlib releases the GIL)
        for p in parts:
            out.write(p)
    out.write(crc.to_bytes(4, "little") + (n & 0xFFFFFFFF).to_bytes(4, "little"))


def write_nifti_gz(img: sitk.Image, path, level: str = DEFAULT_COMPRESSION) -> None:
    """Write ``img`` as ``.nii.gz`` at ``path``: SimpleITK's uncompressed NIfTI, compressed
    by :func:`gzip_bytes_to` (decompressed, the file is byte for byte what SimpleITK writes
    as ``.nii``)."""
    path = Path(path)
    fd, raw = tempfile.mkstemp(prefix=".raw-", suffix=".nii", dir=path.parent)
    os.close(fd)
    try:
        sitk.WriteImage(img, raw, useCompression=False)
        with open(raw, "rb") as f:
            data = f.read()
        os.unlink(raw)
        with open(path, "wb") as out:
            gzip_bytes_to(data, out, level)
    finally:
        if os.path.exists(raw):
            os.unlink(raw)


def check_finite_output(path, image: Image, dtype=np.float32) -> None:
    """A computed image about to be written as ``path``: every value finite and within
    ``dtype``'s range (a float32 file would otherwise hold inf), else :class:`InputError`
    naming the output; called before any output of a command is staged."""
    from ..core.backend import to_numpy

    data = np.asarray(to_numpy(image.data))
    if not np.issubdtype(data.dtype, np.floating):
        return
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if not bad and dtype is not None and np.issubdtype(np.dtype(dtype), np.floating):
        bad = int(np.count_nonzero(np.abs(data) > float(np.finfo(dtype).max)))
    if bad:
        raise InputError(f"{path}: the computed {image.quantity or 'result'} has non-finite "
                         f"values ({bad} voxels, or beyond the range of "
                         f"{np.dtype(dtype).name if dtype is not None else 'its type'}); "
                         "nothing was written: check the input's units (activity far too "
                         "high?)")


def write_image(path, image: Image, dtype=np.float32, sidecar: dict | None = None,
                compression: str | None = None) -> Path:
    """Write an image atomically, with a JSON sidecar holding quantity, unit and provenance.

    ``.nii.gz`` is compressed as ``compression`` says (None: :func:`compression_level`'s
    default); ``.nii``, ``.mhd`` and ``.nrrd`` are written uncompressed."""
    from ..core.backend import to_numpy

    arr = to_numpy(image.data)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    gz = str(path).endswith(".nii.gz")
    level = compression_level(compression) if gz else None
    img = image_to_sitk(arr, image.grid)
    with atomic_path(path) as tmp:
        if gz:
            write_nifti_gz(img, tmp, level)
        else:
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
