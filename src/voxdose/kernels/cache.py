"""On-disk caches (``~/.cache/voxdose``), each entry keyed by everything that built it.

* voxel kernels (``kernels/``): nuclide, spacing, medium and density, radius, the point
  kernel's source (table hash or analytic model), the integration method and quadrature,
  and the code version;
* Monte Carlo dose point kernel tables of nuclides without a shipped table (``dpk/``):
  nuclide, medium, the history plan (``auto`` or the counts), seed, batches and a hash of
  the Monte Carlo's source code (:func:`dpk_cache_key`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..core.errors import InputError
from .point import PointKernel
from .symmetry import mirror_octant, octant_of
from .voxel import METHOD, N_DIRECTIONS, N_RADIAL, VoxelKernel, voxel_kernel

#: Format of the cache entries (bump when the stored fields change). 2: a mirror-symmetric
#: kernel is stored as its octant (offsets >= 0, 1/8 of the bytes) and mirrored on reading.
CACHE_FORMAT = 2


def cache_base_dir(cache_dir=None):
    """voxdose's cache folder: ``cache_dir``, else ``$VOXDOSE_CACHE_DIR``, else
    ``~/.cache/voxdose`` (``$XDG_CACHE_HOME/voxdose`` when that is set)."""
    import os
    from pathlib import Path

    if cache_dir is None:
        env = os.environ.get("VOXDOSE_CACHE_DIR")
        if env:
            cache_dir = env
        else:
            xdg = os.environ.get("XDG_CACHE_HOME")
            cache_dir = Path(xdg) / "voxdose" if xdg else Path.home() / ".cache" / "voxdose"
    return Path(cache_dir)


def kernel_cache_dir(cache_dir=None):
    """The voxel-kernel cache folder: the ``kernels`` subfolder of
    :func:`cache_base_dir`."""
    return cache_base_dir(cache_dir) / "kernels"


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
                    "voxdose.kernels.point", "voxdose.kernels.symmetry")


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

    # the array's own buffer (no bytes copy: half the time for a 150 MB kernel; same digest)
    return hashlib.sha256(memoryview(np.ascontiguousarray(data, dtype=np.float64)).cast("B")
                          ).hexdigest()


def _grid_half_widths(shape, grid_shape):
    """Half-widths of a kernel of ``shape`` cropped to the offsets that can connect two
    voxels of a grid of ``grid_shape`` (min(h_a, N_a - 1), as the convolution crops)."""
    if grid_shape is None:
        return None
    return tuple(min(n // 2, max(int(g) - 1, 0)) for n, g in zip(shape, grid_shape))


def _cropped(data: np.ndarray, half_widths) -> np.ndarray:
    if half_widths is None or all(2 * h + 1 == n for h, n in zip(half_widths, data.shape)):
        return data
    c = [n // 2 for n in data.shape]
    return np.ascontiguousarray(data[tuple(slice(ci - h, ci + h + 1)
                                           for ci, h in zip(c, half_widths))])


def _read_cached(npz_path, json_path, key: dict, grid_shape=None):
    """The cached :class:`VoxelKernel` when both files are there, readable and match
    ``key`` and the stored data hash; otherwise None.  An entry stored as its octant
    (``"stored": "octant"``) is checked as stored and mirrored to the whole kernel (to its
    crop for ``grid_shape``)."""
    import json

    try:
        meta = json.loads(json_path.read_text())
        if meta.get("key") != key:
            return None
        with np.load(npz_path, allow_pickle=False) as z:
            data = np.asarray(z["data_gy_per_decay"], dtype=np.float64)
        stored = meta.get("stored", "whole")
        expect = (meta["shape_zyx"] if stored == "whole"
                  else [(n + 1) // 2 for n in meta["shape_zyx"]])
        if (stored not in ("whole", "octant") or list(data.shape) != expect
                or _data_digest(data) != meta["sha256"] or not np.all(np.isfinite(data))):
            return None
        half = _grid_half_widths(meta["shape_zyx"], grid_shape)
        data = mirror_octant(data, half) if stored == "octant" else _cropped(data, half)
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


def voxel_kernel_cached(point_kernel: PointKernel, spacing_mm_zyx,
                        radius_mm: float | None = None, cache_dir=None,
                        exact_spacing: bool = False, grid_shape=None) -> VoxelKernel:
    """:func:`voxel_kernel` with an on-disk cache (same arguments and result; ``radius_mm``
    None: the one rule, :func:`voxdose.kernels.extent.kernel_extent`).

    Entries live in :func:`kernel_cache_dir` as ``<digest>.npz`` (the array; its octant
    when the kernel is mirror symmetric, as built kernels are: 33 MB instead of 260 MB for
    the demo's 319^3 label-grid kernel) + ``<digest>.json`` (the key of
    :func:`voxel_kernel_cache_key`, the kernel's provenance and the stored array's
    SHA-256), written atomically (npz first, the JSON last: an entry without its JSON is
    never read).  A missing, corrupt or mismatching entry is rebuilt and rewritten; a
    cache folder that cannot be written only costs the rebuild.  The kernel is built on
    the spacing rounded to 1e-4 mm (the key's resolution), or, with ``exact_spacing``, on
    the spacing and radius exactly as given (keyed by their bits: ``voxdose dose`` then
    gives the same dose as building the kernel for a float32 NIfTI spacing such as
    4.800000190734863 mm).

    ``grid_shape`` (z, y, x voxels of the dose grid): the kernel comes back cropped to the
    offsets that can connect two voxels of that grid (half-width min(h_a, N_a - 1) per
    axis), exactly what every convolution would crop it to: the same doses, and for the
    demo's 126 x 114 x 160 label grid a 251 x 227 x 319 array instead of 319^3 (145 instead
    of 260 MB). Its ``radius_mm`` and ``neglected_energy_fraction`` still describe the
    kernel the radius rule built (offsets beyond the grid deposit nothing in it).
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
    if radius_mm is None:
        from .extent import kernel_extent

        radius_mm = kernel_extent(point_kernel, spacing).radius_mm
    key = voxel_kernel_cache_key(point_kernel, spacing, radius_mm)
    if exact_spacing:
        key["exact"] = {"spacing_mm_zyx": [v.hex() for v in spacing],
                        "radius_mm": float(radius_mm).hex()}
    folder = kernel_cache_dir(cache_dir)
    stem = f"{point_kernel.nuclide}_{_key_digest(key)}"
    npz_path, json_path = folder / f"{stem}.npz", folder / f"{stem}.json"
    hit = _read_cached(npz_path, json_path, key, grid_shape)
    if hit is not None:
        return hit
    vk = voxel_kernel(point_kernel, spacing, radius_mm=radius_mm)
    octant = octant_of(vk.data_gy_per_decay)  # 1/8 of the bytes to read back (and hash)
    stored = vk.data_gy_per_decay if octant is None else octant
    meta = {"key": key, **vk.provenance(), "stored": "whole" if octant is None else "octant",
            "sha256": _data_digest(stored)}
    try:
        with atomic_path(npz_path) as tmp:
            np.savez(tmp, data_gy_per_decay=stored)
        write_json(json_path, meta)
    except OSError:
        pass
    half = _grid_half_widths(vk.shape, grid_shape)
    if half is None:
        return vk
    from dataclasses import replace

    return replace(vk, data_gy_per_decay=_cropped(vk.data_gy_per_decay, half))


# ---------------------------------------------------------------------------------------
# Monte Carlo dose point kernel tables of nuclides without a shipped table (``dpk/``)
# ---------------------------------------------------------------------------------------
#: Format of the DPK table entries (bump when the stored fields change).
DPK_CACHE_FORMAT = 1
#: The modules whose source determines a Monte Carlo table (transport, media, emissions).
_MC_MODULES = ("voxdose.montecarlo.dpk", "voxdose.montecarlo.electron",
               "voxdose.montecarlo.photon", "voxdose.montecarlo.transport",
               "voxdose.montecarlo.core", "voxdose.montecarlo.media",
               "voxdose.montecarlo.stopping_power", "voxdose.montecarlo.photon_data",
               "voxdose.montecarlo.water_data", "voxdose.core.nuclide")
#: Data packages whose version is part of a table's key.
_MC_DATA_PACKAGES = ("icrp107-database", "xraydb")


def dpk_cache_dir(cache_dir=None):
    """The folder of Monte Carlo DPK tables built on first use: the ``dpk`` subfolder of
    :func:`cache_base_dir`."""
    return cache_base_dir(cache_dir) / "dpk"


@lru_cache(maxsize=1)
def mc_builder_digest() -> str:
    """SHA-256 (first 16 hex digits) of the Monte Carlo's source files, the decay-data
    reader and the versions of its data packages (ICRP-107 emissions, Elam photon data)."""
    import hashlib
    import importlib.util
    from importlib.metadata import PackageNotFoundError, version

    h = hashlib.sha256()
    for name in _MC_MODULES:
        with open(importlib.util.find_spec(name).origin, "rb") as f:
            h.update(f.read())
    for pkg in _MC_DATA_PACKAGES:
        try:
            h.update(f"{pkg}=={version(pkg)}".encode())
        except PackageNotFoundError:  # pragma: no cover - both are dependencies
            h.update(f"{pkg} missing".encode())
    return h.hexdigest()[:16]


def dpk_cache_key(nuclide: str, medium: str, histories=None) -> dict:
    """The key of a built table: nuclide, medium, the history plan (``"auto"``: planned for
    the first-shell uncertainty target, or ``[electrons, photons]``), the target, seed and
    batches, the Monte Carlo's code version and :func:`mc_builder_digest`."""
    from ..montecarlo import dpk
    from . import voxel

    return {
        "format": DPK_CACHE_FORMAT,
        "nuclide": str(nuclide),
        "medium": str(medium),
        "histories": "auto" if histories is None else [int(histories[0]), int(histories[1])],
        "planned_for": {"voxels_mm": list(voxel.PLAN_VOXELS_MM),
                        "voxel_shells": voxel.PLAN_VOXEL_SHELLS},
        "target_rel_uncertainty": dpk.TARGET_REL_UNCERTAINTY,
        "seed": dpk.BUILD_SEED,
        "n_batches": dpk.BUILD_BATCHES,
        "code_version": dpk.CODE_VERSION,
        "mc_builder_sha256": mc_builder_digest(),
    }


def _dpk_paths(folder, key: dict):
    stem = f"{key['nuclide']}_{key['medium']}_{_key_digest(key)}"
    return folder / f"{stem}.csv", folder / f"{stem}.json"


def read_cached_dpk(nuclide: str, medium: str, histories=None, cache_dir=None):
    """``(r_mm, dose_gy_per_decay, record, csv_path)`` of the cached table of ``nuclide``
    in ``medium`` built with ``histories``, or None when there is none, or it is
    unreadable, or its key or the CSV's SHA-256 do not match its record."""
    import json

    from ..io.atomic import sha256_file

    key = dpk_cache_key(nuclide, medium, histories)
    csv_path, json_path = _dpk_paths(dpk_cache_dir(cache_dir), key)
    try:
        record = json.loads(json_path.read_text())
        if record.get("cache_key") != key or sha256_file(csv_path) != record.get("csv_sha256"):
            return None
        data = np.loadtxt(csv_path, delimiter=",", skiprows=1, ndmin=2)
        if data.shape[0] < 2 or not np.all(np.isfinite(data[:, :2])):
            return None
        return data[:, 0], data[:, 1], record, csv_path
    except Exception:  # a missing, truncated or odd entry is a miss
        return None


def _stderr_notice(text: str) -> None:
    import sys

    print(f"voxdose: {text}", file=sys.stderr, flush=True)


def build_cached_dpk(nuclide: str, medium: str, histories=None, cache_dir=None,
                     notify=None, reason: str = "no shipped table"):
    """Build the table of ``nuclide`` in ``medium`` with the project's Monte Carlo
    (:func:`voxdose.montecarlo.dpk.plan_build` then ``build_dpk``), saying so with the
    expected time through ``notify`` (default: a line on stderr), and store it in
    :func:`dpk_cache_dir` (CSV first, the JSON record last: an entry without its record is
    never read).  Returns what :func:`read_cached_dpk` returns (the stored table read back,
    so the first use equals every later one); the record says it was built, how long it
    took and its first-shell uncertainty (and warns when the target was missed).  A cache
    folder that cannot be written only loses the entry (csv_path None, the table as run)."""
    import time

    from ..montecarlo.dpk import build_dpk, check_buildable, plan_build
    from .voxel import voxel_shell_scores

    check_buildable(nuclide)   # energies beyond the transport: refused before any notice
    say = notify or _stderr_notice
    key = dpk_cache_key(nuclide, medium, histories)
    folder = dpk_cache_dir(cache_dir)
    csv_path, json_path = _dpk_paths(folder, key)
    what = f"a Monte Carlo dose-point kernel for {nuclide} in {medium}"
    say(f"building {what} ({reason}; once, cached in {folder}): timing a short pilot run")
    t0 = time.perf_counter()
    plan = plan_build(nuclide, medium, histories, scores=voxel_shell_scores)
    est = "a few s" if plan.estimate_s is None else f"~{plan.estimate_s:.0f} s"
    say(f"building {what}: {est} for {plan.n_electrons:,} electron + {plan.n_photons:,} "
        f"photon histories (once; cached in {folder})")
    res = build_dpk(nuclide, medium, plan)
    record = _built_record(res, key, time.perf_counter() - t0, reason)
    stored = _store_dpk(res, record, csv_path, json_path)
    rate = record.get("histories_per_second")
    say(f"built {what} in {record['wall_seconds']:.0f} s"
        + (f" ({rate:,.0f} histories/s)" if rate else "") + f"; {voxel_uncertainty_text(record)}"
        + ("" if stored else " (not cached: the cache folder cannot be written)"))
    for w in record["warnings"]:
        say(f"warning: {w}")
    # read back what was stored, so that this first use and every later one agree exactly
    hit = read_cached_dpk(nuclide, medium, histories, cache_dir) if stored else None
    return hit or (res.r_mm, res.dose_gy_per_decay, record, None)


def voxel_uncertainty_text(record: dict) -> str:
    """'statistical uncertainty of the voxel kernel's first 3 shells of voxels: at most
    X % (1, 2, 4 mm voxels)' from a built table's record, or its provenance's
    ``table_record`` ('' for a table without a build)."""
    build = record.get("build") or (record.get("settings") or {}).get("build") or {}
    u = build.get("achieved_rel_uncertainty")
    if not u:
        return ""
    sizes = sorted({lab.split(" mm")[0] for lab in build.get("scores", [])}, key=float)
    shells = len(build.get("scores", [])) // max(1, len(sizes))
    return (f"statistical uncertainty of its voxel kernels' first {shells} shells of voxels "
            f"at most {max(u):.2%} ({', '.join(sizes)} mm voxels)")


def planned_voxel_warning(point_kernel, spacing_mm_zyx) -> str | None:
    """A warning when a Monte Carlo table built on first use with the planned histories is
    used for voxels smaller than it was planned for (its voxel kernel's first shells may
    then carry more than the target uncertainty); None otherwise (shipped tables, tables
    built with given histories, voxels at or above the plan's smallest)."""
    rec = getattr(point_kernel, "record", None) or {}
    key = rec.get("cache_key") or {}
    voxels = (key.get("planned_for") or {}).get("voxels_mm")
    if key.get("histories") != "auto" or not voxels:
        return None
    smallest = min(float(v) for v in voxels)
    side = min(float(v) for v in spacing_mm_zyx)
    if side >= smallest - 1e-9:
        return None
    target = float(key.get("target_rel_uncertainty", 0.005))
    return (f"the Monte Carlo table of {rec.get('nuclide', '?')} in {rec.get('medium', '?')} "
            f"was planned for voxels of {smallest:g} mm and larger (at most {target:.1%} "
            f"statistical uncertainty in the first shells of voxels); at {side:g} mm its "
            "voxel kernel's first shells may carry more: build it with more histories "
            "(VOXDOSE_DPK_HISTORIES=ELECTRONS,PHOTONS) if that matters")


def _built_record(res, key: dict, wall_s: float, reason: str) -> dict:
    """The JSON record of a built table: the Monte Carlo's record, how and when it was
    built, and a warning when the first-shell target was missed."""
    import os
    import platform
    import time

    import numba

    from .. import __version__

    rec = res.record()
    build = rec["settings"]["build"]
    warnings = []
    if not build["target_met"]:
        u = build["achieved_rel_uncertainty"]
        worst = int(np.argmax(u))
        warnings.append(
            f"the Monte Carlo table of {res.nuclide} in {res.medium} gives voxel kernels a "
            f"statistical uncertainty of up to {u[worst]:.2%} in their first shells of "
            f"voxels ({build['scores'][worst]}; target {build['target_rel_uncertainty']:.1%}"
            f"; {res.n_electrons:,} electron + {res.n_photons:,} photon histories): build it "
            "with more (VOXDOSE_DPK_HISTORIES=ELECTRONS,PHOTONS)")
    rec.update({
        "generated_by": f"voxdose {__version__}: Monte Carlo table built on first use "
                        f"({reason})",
        "voxdose_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_seconds": wall_s,
        "cpu": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "numba_threads": int(numba.get_num_threads()),
        "cache_key": key,
        "warnings": warnings,
        "shell_edges_mm": [float(v) for v in res.edges_mm],
    })
    return rec


def _store_dpk(res, record: dict, csv_path, json_path) -> bool:
    """Write the table (CSV, atomically) and then its record with the CSV's SHA-256;
    False when the folder cannot be written."""
    from ..io.atomic import atomic_path, sha256_file, write_json
    from ..montecarlo.dpk import write_dpk_csv

    try:
        with atomic_path(csv_path) as tmp:
            write_dpk_csv(tmp, res.r_mm, res.dose_gy_per_decay, res.rel_uncertainty)
        record["csv_sha256"] = sha256_file(csv_path)
        record["cache_file"] = str(csv_path)
        write_json(json_path, record)
    except OSError:
        record["cache_file"] = None
        return False
    return True
