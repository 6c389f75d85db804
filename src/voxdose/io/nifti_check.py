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
    """(byte order, dims, datatype, bitpix, vox_offset) of a NIfTI-1 or -2 header."""
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


def check_nifti(path) -> None:
    """Raise :class:`InputError` if the NIfTI file at ``path`` is truncated, its gzip stream
    is damaged, or a floating-point voxel is NaN or infinite."""
    path = Path(path)
    raw = _read_bytes(path)
    order, dim, dtype, bitpix, offset = _header(raw, path)
    ndim = int(dim[0])
    if not 1 <= ndim <= 7:
        raise InputError(f"{path}: NIfTI header gives {ndim} dimensions; the file is damaged")
    n = int(np.prod([max(int(d), 1) for d in dim[1:ndim + 1]], dtype=np.int64))
    need = offset + n * int(bitpix) // 8
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
