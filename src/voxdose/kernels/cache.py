"""On-disk cache of voxel kernels (``~/.cache/voxdose/kernels``), keyed by everything that
built them: nuclide, spacing, medium and density, radius, the point kernel's source (table
hash or analytic model), the integration method and quadrature, and the code version.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..core.errors import InputError
from .point import PointKernel
from .voxel import METHOD, N_DIRECTIONS, N_RADIAL, VoxelKernel, voxel_kernel

#: Format of the cache entries (bump when the stored fields change).
CACHE_FORMAT = 1


def kernel_cache_dir(cache_dir=None):
    """The voxel-kernel cache folder: ``cache_dir``, else ``$VOXDOSE_CACHE_DIR``, else
    ``~/.cache/voxdose`` (``$XDG_CACHE_HOME/voxdose`` when that is set); the ``kernels``
    subfolder of it."""
    import os
    from pathlib import Path

    if cache_dir is None:
        env = os.environ.get("VOXDOSE_CACHE_DIR")
        if env:
            cache_dir = env
        else:
            xdg = os.environ.get("XDG_CACHE_HOME")
            cache_dir = Path(xdg) / "voxdose" if xdg else Path.home() / ".cache" / "voxdose"
    return Path(cache_dir) / "kernels"


def _point_kernel_source_key(pk) -> dict:
    """What identifies the point kernel: its table's hash (tabulated) or its analytic
    model's parameters."""
    import hashlib
    import json

    if hasattr(pk, "r_table_mm"):
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(pk.r_table_mm, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(pk.dose_table_gy_per_decay, dtype=np.float64).tobytes())
        return {"kind": "table", "sha256": h.hexdigest(),
                "total_energy_mev": float(pk.total_energy_mev),
                "electron_range_mm": float(pk.max_electron_range_mm)}
    prov = json.dumps(pk.provenance(), sort_keys=True, default=str)
    return {"kind": "analytic", "sha256": hashlib.sha256(prov.encode()).hexdigest()}


def voxel_kernel_cache_key(point_kernel, spacing_mm_zyx, radius_mm: float = 200.0) -> dict:
    """The cache key (JSON-serialisable) of a voxel kernel: nuclide, spacing (z, y, x)
    rounded to 1e-4 mm, medium and density, radius, the point kernel's source (table hash
    or analytic model), the package version and a hash of the code that builds the kernel
    (so a changed algorithm never serves a stale kernel, whatever the version says)."""
    from .. import __version__

    prov = point_kernel.provenance()
    return {
        "format": CACHE_FORMAT,
        "nuclide": point_kernel.nuclide,
        "spacing_mm_zyx": [round(float(v), 4) for v in spacing_mm_zyx],
        "medium": prov.get("medium", "water"),
        "density_g_cm3": round(float(point_kernel.density_g_cm3), 6),
        "radius_mm": round(float(radius_mm), 4),
        "point_kernel": _point_kernel_source_key(point_kernel),
        "method": METHOD,
        "quadrature": [N_DIRECTIONS, N_RADIAL],
        "voxdose_version": __version__,
        "builder_sha256": builder_code_digest(),
    }


#: The modules whose source determines a voxel kernel's values.
_BUILDER_MODULES = ("voxdose.kernels.voxel", "voxdose.kernels.far_field",
                    "voxdose.kernels.point")


@lru_cache(maxsize=1)
def builder_code_digest() -> str:
    """SHA-256 (first 16 hex digits) of the source files of the kernel builder."""
    import hashlib
    import importlib.util

    h = hashlib.sha256()
    for name in _BUILDER_MODULES:  # located, not imported (far_field would import Numba)
        with open(importlib.util.find_spec(name).origin, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def _key_digest(key: dict) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def _data_digest(data: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(data, dtype=np.float64).tobytes()).hexdigest()


def _read_cached(npz_path, json_path, key: dict):
    """The cached :class:`VoxelKernel` when both files are there, readable and match
    ``key`` and the stored data hash; otherwise None."""
    import json

    try:
        meta = json.loads(json_path.read_text())
        if meta.get("key") != key:
            return None
        with np.load(npz_path, allow_pickle=False) as z:
            data = np.array(z["data_gy_per_decay"], dtype=np.float64)
        if (list(data.shape) != meta["shape_zyx"] or _data_digest(data) != meta["sha256"]
                or not np.all(np.isfinite(data))):
            return None
        return VoxelKernel(
            data_gy_per_decay=data,
            spacing_mm=tuple(float(v) for v in meta["spacing_mm_zyx"]),
            nuclide=meta["nuclide"],
            density_g_cm3=float(meta["density_g_cm3"]),
            neglected_energy_fraction=float(meta["neglected_energy_fraction"]),
            method=meta["method"],
            radius_mm=float(meta["radius_mm"]),
            total_energy_mev=float(meta["total_energy_mev"]),
            n_near=int(meta["n_near"]),
            build_seconds=float(meta["build_seconds"]),
            point_kernel_provenance=meta["point_kernel"],
        )
    except Exception:  # any unreadable entry (bad zip, truncated file, odd JSON) is a miss
        return None


def voxel_kernel_cached(point_kernel: PointKernel, spacing_mm_zyx, radius_mm: float = 200.0,
                        cache_dir=None, exact_spacing: bool = False) -> VoxelKernel:
    """:func:`voxel_kernel` with an on-disk cache (same arguments and result).

    Entries live in :func:`kernel_cache_dir` as ``<digest>.npz`` (the array) + ``<digest>.json``
    (the key of :func:`voxel_kernel_cache_key`, the kernel's provenance and the array's
    SHA-256), written atomically (npz first, the JSON last: an entry without its JSON is
    never read).  A missing, corrupt or mismatching entry is rebuilt and rewritten; a
    cache folder that cannot be written only costs the rebuild.  The kernel is built on
    the spacing rounded to 1e-4 mm (the key's resolution), or, with ``exact_spacing``, on
    the spacing and radius exactly as given (keyed by their bits: ``voxdose dose`` then
    gives the same dose as building the kernel for a float32 NIfTI spacing such as
    4.800000190734863 mm).
    """
    from ..io.atomic import atomic_path, write_json

    try:
        spacing = [float(v) if exact_spacing else round(float(v), 4) for v in spacing_mm_zyx]
    except (TypeError, ValueError):
        raise InputError(f"spacing must be three numbers (z, y, x) in mm; "
                         f"got {spacing_mm_zyx!r}") from None
    if len(spacing) != 3:
        raise InputError(f"spacing must be three numbers (z, y, x) in mm; "
                         f"got {spacing_mm_zyx!r}")
    key = voxel_kernel_cache_key(point_kernel, spacing, radius_mm)
    if exact_spacing:
        key["exact"] = {"spacing_mm_zyx": [v.hex() for v in spacing],
                        "radius_mm": float(radius_mm).hex()}
    folder = kernel_cache_dir(cache_dir)
    stem = f"{point_kernel.nuclide}_{_key_digest(key)}"
    npz_path, json_path = folder / f"{stem}.npz", folder / f"{stem}.json"
    hit = _read_cached(npz_path, json_path, key)
    if hit is not None:
        return hit
    vk = voxel_kernel(point_kernel, spacing, radius_mm=radius_mm)
    meta = {"key": key, **vk.provenance(), "sha256": _data_digest(vk.data_gy_per_decay)}
    try:
        with atomic_path(npz_path) as tmp:
            np.savez(tmp, data_gy_per_decay=vk.data_gy_per_decay)
        write_json(json_path, meta)
    except OSError:
        pass
    return vk
