"""Mirror symmetry of voxel kernels: one test, one octant, one mirroring.

A voxel S-value kernel is even in every axis, S(-a, b, c) = S(a, -b, c) = S(a, b, -c) =
S(a, b, c) (the builder computes only the octant of offsets >= 0 and mirrors it). The cache
stores that octant (``kernels/cache.py``) and the CPU convolution takes the spectrum from it
(``dose/convolution.py``)."""

from __future__ import annotations

import numpy as np


def is_mirror_symmetric(kernel) -> bool:
    """True when the odd-shaped 3D ``kernel`` (a host array) is exactly even in every axis,
    as every voxel S-value kernel built by :func:`voxdose.kernels.voxel.voxel_kernel` is
    (and its square)."""
    k = np.asarray(kernel)
    if k.ndim != 3 or any(n % 2 == 0 for n in k.shape):
        return False
    return all(np.array_equal(k, np.flip(k, axis)) for axis in range(3))


def octant_view(kernel) -> np.ndarray:
    """The offsets >= 0 of an odd-shaped 3D kernel, ``kernel[cz:, cy:, cx:]`` (a view)."""
    c = [n // 2 for n in np.shape(kernel)]
    return kernel[c[0]:, c[1]:, c[2]:]


def octant_of(data: np.ndarray) -> np.ndarray | None:
    """The octant (contiguous copy) of a mirror-symmetric kernel, else None."""
    if not is_mirror_symmetric(data):
        return None
    return np.ascontiguousarray(octant_view(data))


def mirror_octant(octant: np.ndarray, half_widths=None) -> np.ndarray:
    """The whole kernel (2 m - 1 per axis) from its octant (m per axis, offset 0 first):
    S(-o) = S(o) in each axis; eight strided copies, no index arrays.  ``half_widths``
    (h per axis, <= m - 1): only the offsets |o_a| <= h_a (2 h + 1 per axis)."""
    if half_widths is not None:
        octant = octant[tuple(slice(0, int(h) + 1) for h in half_widths)]
    m = octant.shape
    full = np.empty(tuple(2 * n - 1 for n in m), dtype=octant.dtype)
    for signs in np.ndindex(2, 2, 2):
        dst = tuple(slice(n - 1, None) if s == 0 else slice(0, n - 1) for s, n in zip(signs, m))
        src = tuple(slice(None) if s == 0 else slice(n - 1, 0, -1) for s, n in zip(signs, m))
        full[dst] = octant[src]
    return full
