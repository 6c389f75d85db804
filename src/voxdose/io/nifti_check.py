"""Integrity of a NIfTI file, checked on its bytes (SimpleITK hides both faults below).

* **Truncated or damaged**: SimpleITK zero-fills the missing slices of a ``.nii.gz`` cut
  short; here the gzip stream must be complete and the voxel data must hold
  vox_offset + N x bitpix/8 bytes (N = product of the dimensions).
* **NaN / infinite voxels**: ITK's NIfTI reader turns NaN into 0, so a NaN block over a
  lesion would read as no activity; here the stored floats are inspected directly.

NIfTI-1 (348-byte header) and NIfTI-2 (540-byte header), either byte order, single-file
``.nii`` / ``.nii.gz``.  Header offsets from the NIfTI-1 and NIfTI-2 standards
(nifti1.h, nifti2.h: dim at 40 / 16, datatype at 70 / 12, bitpix at 72 / 14, vox_offset at
108 / 168).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import InputError

#: NIfTI datatype codes of floating-point voxels -> NumPy type.
_FLOAT_TYPES = {16: np.float32, 64: np.float64}


def is_nifti(path) -> bool:
    name = str(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _read_bytes(path: Path) -> bytes:
    if not str(path).lower().endswith(".gz"):
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (EOFError, OSError, zlib.error) as exc:
        raise InputError(f"{path}: the gzip stream is damaged or cut short ({exc}); the file "
                         "is incomplete: copy or export it again") from None


def _header(raw: bytes, path: Path) -> tuple[str, list[int], int, int, int]:
    """(byte order, dims, datatype, bitpix, vox_offset) of a NIfTI-1 or -2 header (the
    offset at least the header's own size plus the 4 extension bytes: 352 / 544)."""
    for order in "<>":
        if len(raw) < 4:
            break
        size = struct.unpack(order + "i", raw[:4])[0]
        if size == 348 and len(raw) >= 348:
            dim = list(struct.unpack(order + "8h", raw[40:56]))
            dtype, bitpix = struct.unpack(order + "2h", raw[70:74])
            offset = int(struct.unpack(order + "f", raw[108:112])[0])
            return order, dim, dtype, bitpix, max(offset, 352)
        if size == 540 and len(raw) >= 540:
            dtype, bitpix = struct.unpack(order + "2h", raw[12:16])
            dim = list(struct.unpack(order + "8q", raw[16:80]))
            offset = struct.unpack(order + "q", raw[168:176])[0]
            return order, dim, dtype, bitpix, max(int(offset), 544)
    raise InputError(f"{path}: not a NIfTI-1 or NIfTI-2 file (header size field); "
                     "give a .nii / .nii.gz image")


#: NIfTI datatype codes of the plain scalar voxel types -> NumPy type (the voxels a reader
#: may take straight from the file's bytes).
_PLAIN_TYPES = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64,
                256: np.int8, 512: np.uint16, 768: np.uint32}


@dataclass(frozen=True)
class CheckedNifti:
    """What :func:`check_nifti` read: the voxels as stored (a read-only view of the file's
    bytes, (z, y, x)) when they are a plain 3D scalar image without intensity scaling, else
    None; ``dims_xyz`` the header's first three dimensions."""

    voxels: np.ndarray | None
    dims_xyz: tuple[int, int, int]


def _scaling(raw: bytes, order: str) -> tuple[float, float]:
    """(scl_slope, scl_inter) of a NIfTI-1 (offsets 112, 116) or NIfTI-2 (176, 184) header."""
    if struct.unpack(order + "i", raw[:4])[0] == 348:
        return struct.unpack(order + "2f", raw[112:120])
    return struct.unpack(order + "2d", raw[176:192])


def _declared_offset(raw: bytes, order: str) -> float:
    """vox_offset as the header states it (NIfTI-1 float at 108, NIfTI-2 int64 at 168)."""
    if struct.unpack(order + "i", raw[:4])[0] == 348:
        return struct.unpack(order + "f", raw[108:112])[0]
    return float(struct.unpack(order + "q", raw[168:176])[0])


def _voxel_bits(dtype: int, bitpix: int) -> int:
    """Bits per voxel: the datatype's own for the types voxdose reads from the bytes (ITK
    goes by the datatype too), else the header's bitpix."""
    known = _PLAIN_TYPES.get(dtype) or _FLOAT_TYPES.get(dtype)
    return 8 * np.dtype(known).itemsize if known is not None else int(bitpix)


def _plain_voxels(raw: bytes, order: str, dim, dtype: int, offset: int, n: int):
    """The voxels as a (z, y, x) view of ``raw`` when the file is a plain 3D scalar image
    (no 4th dimension, a type of :data:`_PLAIN_TYPES`, scl_slope 0 or 1 with scl_inter 0,
    a vox_offset past the header: what ITK reads as stored), else None (ITK reads it)."""
    if int(dim[0]) != 3 or dtype not in _PLAIN_TYPES:
        return None
    slope, inter = _scaling(raw, order)
    if slope not in (0.0, 1.0) or inter != 0.0:
        return None
    if not _declared_offset(raw, order) >= offset:  # 0 or 348: ITK reads from there
        return None
    shape = tuple(max(int(d), 1) for d in (dim[3], dim[2], dim[1]))
    data = np.frombuffer(raw, dtype=np.dtype(_PLAIN_TYPES[dtype]).newbyteorder(order),
                         count=n, offset=offset)
    return data.reshape(shape)


def check_nifti(path) -> CheckedNifti:
    """Raise :class:`InputError` if the NIfTI file at ``path`` is truncated, its gzip stream
    is damaged, or a floating-point voxel is NaN or infinite; else return the voxels read
    (:class:`CheckedNifti`), so that a reader need not decompress the file again."""
    path = Path(path)
    raw = _read_bytes(path)
    order, dim, dtype, bitpix, offset = _header(raw, path)
    ndim = int(dim[0])
    if not 1 <= ndim <= 7:
        raise InputError(f"{path}: NIfTI header gives {ndim} dimensions; the file is damaged")
    n = int(np.prod([max(int(d), 1) for d in dim[1:ndim + 1]], dtype=np.int64))
    need = offset + n * _voxel_bits(dtype, bitpix) // 8
    if len(raw) < need:
        raise InputError(f"{path}: the file holds {len(raw) - offset} of the "
                         f"{need - offset} bytes of voxel data its header announces (cut "
                         "short); copy or export it again")
    if dtype in _FLOAT_TYPES:
        data = np.frombuffer(raw, dtype=np.dtype(_FLOAT_TYPES[dtype]).newbyteorder(order),
                             count=n, offset=offset)
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise InputError(f"{path}: {bad} voxels are NaN or infinite (a damaged or masked "
                             "image); fix or re-export it: voxdose does not guess a value "
                             "for them")
    dims = tuple(max(int(d), 1) for d in (list(dim[1:4]) + [1, 1, 1])[:3])
    return CheckedNifti(_plain_voxels(raw, order, dim, dtype, offset, n), dims)
