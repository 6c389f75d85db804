"""``voxdose bench``: voxdose's dose convolution against scipy.signal.fftconvolve, same run;
its per-voxel TIA fit against a scipy.optimize.curve_fit loop; the Monte Carlo in
histories/s; on a GPU the same cases on the device beside the CPU.

Both convolutions take the same random TIA map (n^3) with the same Lu-177 voxel kernel (4.8 mm
voxels, the radius of the one rule, :func:`voxdose.kernels.extent.kernel_extent`: 0.1 % of
the energy left out, at most the grid's extent; the kernel is cropped to what reaches the
n^3 grid, (2n - 1)^3 at most, for both).  The reference is
``scipy.signal.fftconvolve(tia, kernel, mode="same")`` in float64, what peers use, timed
once (the call that gives the reference: it caches nothing a warm-up would build, and at
256^3 one call of its single thread takes 10 s or more).  voxdose's times are the minimum
of ``repeats`` runs after one warm-up (kernel spectrum cached, FFT plans built); on a
GPU they are measured with CUDA events on the null stream (the work queued
between two events, synchronised), data already on the device.  The host->device and
device->host copies of the same arrays are timed apart (``h2d_ms``, ``d2h_ms``), and every
GPU row carries the time a single read and write of its input and output would take at the
device's measured copy bandwidth (``copy_floor_ms``).  Agreement is
``max |D - D_ref| / max D_ref``.  :func:`device_info` records the device name, driver,
CUDA runtime, CuPy and Numba versions.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass

import numpy as np

KERNEL_SPACING_MM = 4.8
#: bytes of the arrays the copy bandwidth is measured with
BANDWIDTH_BYTES = 256 * 1024**2


@dataclass
class BenchRow:
    size: int
    method: str
    device: str
    precision: str
    time_ms: float
    speedup_vs_scipy: float | None
    max_rel_diff_vs_scipy: float | None
    transfer_ms: float | None = None
    h2d_ms: float | None = None
    d2h_ms: float | None = None
    copy_floor_ms: float | None = None
    speedup_vs_cpu: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _min_time(fn, repeats: int, sync=None, warm_up: bool = True) -> float:
    """Minimum wall time of ``repeats`` calls after one warm-up (``sync`` after each;
    ``warm_up`` False: the caller has warmed up already)."""
    if warm_up:
        fn()
        if sync:
            sync()
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        best = min(best, time.perf_counter() - t0)
    return best


def _gpu_time(xp, fn, repeats: int) -> float:
    """Minimum of ``repeats`` CUDA-event timings (s) of ``fn`` after one synchronised
    warm-up."""
    fn()
    xp.cuda.Stream.null.synchronize()
    best = float("inf")
    for _ in range(max(1, repeats)):
        start, end = xp.cuda.Event(), xp.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        best = min(best, xp.cuda.get_elapsed_time(start, end) / 1e3)
    return best


def timer(backend, repeats: int):
    """``time(fn) -> s``: CUDA events on a GPU backend, the wall clock on the CPU."""
    if backend.name == "gpu":
        return lambda fn: _gpu_time(backend.xp, fn, repeats)
    return lambda fn: _min_time(fn, repeats)


def bench_kernel(n: int | None = None):
    """The Lu-177 kernel of the benchmark for an n^3 grid (None: no grid), by the rule of
    every entry point."""
    from ..kernels.extent import kernel_extent
    from ..kernels.point import load_point_kernel
    from ..kernels.voxel import voxel_kernel

    pk = load_point_kernel("Lu-177")
    spacing = (KERNEL_SPACING_MM,) * 3
    ext = kernel_extent(pk, spacing, None if n is None else (n, n, n))
    return voxel_kernel(pk, spacing, radius_mm=ext.radius_mm)


def _reach(kernel_data: np.ndarray, n: int) -> np.ndarray:
    """The part of a kernel that reaches inside an n^3 grid (what the dose engines use)."""
    from ..dose.convolution import crop_kernel

    _, crop = crop_kernel(kernel_data.shape, (n, n, n))
    return np.ascontiguousarray(kernel_data[crop])


def run_bench(sizes=(64, 128, 256), device: str = "auto", repeats: int = 3,
              kernel=None, with_scipy: bool = True, progress=None,
              cpu_max_size: int | None = None, bandwidth: dict | None = None
              ) -> list[BenchRow]:
    """Time the convolution at each size; rows for scipy, voxdose CPU float64/float32, GPU.
    ``cpu_max_size``: with a GPU, sizes above it are timed on the GPU only (None: every
    size on both); ``bandwidth``: the device's :func:`copy_bandwidth` (measured if None)."""
    from ..core.backend import get_backend

    k_all = (kernel or bench_kernel(max(sizes))).data_gy_per_decay
    be = get_backend(device)
    gpu = be.name == "gpu"
    bw = (bandwidth or copy_bandwidth(be)) if gpu else None
    rows: list[BenchRow] = []
    for i, n in enumerate(sizes):
        k = _reach(k_all, n)
        tia = np.random.default_rng(n).random((n, n, n)) * 1e9
        on_cpu = not gpu or cpu_max_size is None or n <= cpu_max_size
        cpu_rows, ref = _cpu_rows(n, tia, k, repeats, with_scipy) if on_cpu else ([], None)
        rows += cpu_rows
        if be.name == "gpu":
            rows += _gpu_rows(be, n, tia, k, repeats, ref, cpu_rows, bw)
        if progress:
            progress(i + 1, len(sizes))
    return rows


def _cpu_rows(n, tia, k, repeats, with_scipy) -> tuple[list[BenchRow], np.ndarray | None]:
    """scipy's fftconvolve (float64) and voxdose's convolution on the CPU, both precisions;
    and scipy's result (the reference of every row; None without scipy)."""
    from ..core.backend import cpu_backend
    from ..dose.convolution import SpectrumCache, fft_convolve_same

    rows, ref, t_ref = [], None, None
    if with_scipy:
        from scipy import signal

        t0 = time.perf_counter()
        ref = signal.fftconvolve(tia, k, mode="same")  # timed once (module docstring)
        t_ref = time.perf_counter() - t0
        rows.append(BenchRow(n, "scipy.signal.fftconvolve", "cpu", "float64", t_ref * 1e3,
                             1.0, 0.0))
    cpu = cpu_backend()
    for prec in ("float64", "float32"):
        cache = SpectrumCache()
        out = fft_convolve_same(tia, k, cpu, cache, precision=prec)
        t = _min_time(lambda c=cache, p=prec: fft_convolve_same(tia, k, cpu, c, precision=p),
                      repeats)
        diff = None if ref is None else float(np.abs(out - ref).max() / np.abs(ref).max())
        rows.append(BenchRow(n, "voxdose", "cpu", prec, t * 1e3,
                             None if t_ref is None else t_ref / t, diff))
    return rows, ref


def _gpu_rows(be, n, tia, k, repeats, ref, cpu_rows, bw) -> list[BenchRow]:
    """voxdose's convolution on the GPU (data on the device), both precisions, with the
    transfers of the same arrays timed apart and the copy floor at ``bw``."""
    from ..core.backend import to_numpy
    from ..dose.convolution import SpectrumCache, fft_convolve_same

    xp, time_of = be.xp, timer(be, repeats)
    t_ref = next((r.time_ms for r in cpu_rows if r.method != "voxdose"), None)
    rows = []
    for prec in ("float64", "float32"):
        dt = np.float32 if prec == "float32" else np.float64
        host = tia.astype(dt)
        t_h2d = _min_time(lambda h=host: xp.asarray(h), repeats, xp.cuda.Stream.null.synchronize)
        d = xp.asarray(host)
        cache = SpectrumCache()
        out = fft_convolve_same(d, k, be, cache, precision=prec)
        t = time_of(lambda d=d, c=cache, p=prec: fft_convolve_same(d, k, be, c, precision=p))
        t_d2h = _min_time(lambda o=out: to_numpy(o), repeats)
        res = to_numpy(out)
        diff = None if ref is None else float(np.abs(res - ref).max() / np.abs(ref).max())
        floor = None if bw is None else (d.nbytes + out.nbytes) / (bw["d2d_gb_s"] * 1e9)
        cpu_t = next((r.time_ms for r in cpu_rows if r.method == "voxdose"
                      and r.precision == prec), None)
        rows.append(BenchRow(n, "voxdose", "gpu", prec, t * 1e3,
                             None if t_ref is None else t_ref / (t * 1e3), diff,
                             (t_h2d + t_d2h) * 1e3, t_h2d * 1e3, t_d2h * 1e3,
                             None if floor is None else floor * 1e3,
                             None if cpu_t is None else cpu_t / (t * 1e3)))
        del d, out
    be.xp.get_default_memory_pool().free_all_blocks()
    return rows


def copy_bandwidth(backend, nbytes: int = BANDWIDTH_BYTES, repeats: int = 3) -> dict:
    """The device's copy bandwidth, GB/s: device->device (read + write counted), and
    pageable host<->device (one way each)."""
    xp = backend.xp
    n = int(nbytes) // 8
    host = np.ones(n)
    a = xp.asarray(host)
    b = xp.empty_like(a)
    t_dd = _gpu_time(xp, lambda: xp.copyto(b, a), repeats)
    sync = xp.cuda.Stream.null.synchronize
    t_hd = _min_time(lambda: xp.asarray(host), repeats, sync)
    t_dh = _min_time(lambda: a.get(), repeats, sync)
    gb = n * 8 / 1e9
    return {"bytes": n * 8, "d2d_gb_s": 2 * gb / t_dd, "h2d_gb_s": gb / t_hd,
            "d2h_gb_s": gb / t_dh}


def machine_info() -> dict:
    import os

    import scipy

    info = {"python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "cpu": platform.processor() or platform.machine(),
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover
        pass
    return info


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def device_info(device: str = "auto") -> dict:
    """What the bench ran on: the resolved device, Numba (and numba-cuda) versions, and on a
    GPU its name, compute capability, memory, driver and CUDA runtime, CuPy and the CuPy
    wheel (cupy-cuda12x / cupy-cuda13x)."""
    import numba

    from ..core.backend import resolve_device

    out = {"device": resolve_device(device), "numba": numba.__version__,
           "numba_cuda": _version("numba-cuda")}
    if out["device"] != "gpu":
        return out
    import cupy

    rt = cupy.cuda.runtime
    props = rt.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    out.update({
        "name": name.decode() if isinstance(name, bytes) else str(name),
        "compute_capability": f"{props['major']}.{props['minor']}",
        "memory_gb": props["totalGlobalMem"] / 1e9,
        "driver_cuda_version": _cuda_version(rt.driverGetVersion()),
        "runtime_cuda_version": _cuda_version(rt.runtimeGetVersion()),
        "cupy": cupy.__version__,
        "cupy_wheel": next((d for d in ("cupy-cuda13x", "cupy-cuda12x", "cupy")
                            if _version(d)), None),
    })
    return out


def _cuda_version(v: int) -> str:
    """12040 -> '12.4'."""
    return f"{v // 1000}.{(v % 1000) // 10}"


@dataclass
class TiaBenchRow:
    method: str
    device: str
    voxels: int
    time_s: float
    voxels_per_s: float
    speedup_vs_curve_fit: float | None
    h2d_s: float | None = None
    d2h_s: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def tia_bench_curves(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """n^3 noisy bi-exponential (uptake-washout) curves at 1, 4, 24, 48, 168 h (Lu-177)."""
    import math

    from ..core.nuclide import load_nuclide

    lam_s = load_nuclide("Lu-177").decay_constant_per_s
    lam_h = lam_s * 3600
    t_h = np.array([1.0, 4.0, 24.0, 48.0, 168.0])
    rng = np.random.default_rng(seed)
    m = n ** 3
    l1 = lam_h * (1 + rng.uniform(0.2, 2.0, m))
    l2 = l1 + math.log(2) / rng.uniform(0.5, 3.0, m)
    amp = rng.uniform(1e3, 1e5, m)
    clean = amp[:, None] * (np.exp(-l1[:, None] * t_h) - np.exp(-l2[:, None] * t_h))
    return t_h * 3600, rng.poisson(clean).astype(np.float64), lam_s


def curve_fit_loop(t_s: np.ndarray, curves: np.ndarray, lam_s: float) -> np.ndarray:
    """The obvious alternative: scipy.optimize.curve_fit per voxel, same model, weights and
    bounds (lambda >= lambda_physical); returns TIA (unit of curves x s)."""
    from scipy.optimize import curve_fit

    t_h = t_s / 3600
    lam_h = lam_s * 3600

    def biexp(t, a, l1, l2):
        return a * (np.exp(-l1 * t) - np.exp(-l2 * t))

    out = np.empty(len(curves))
    for i, y in enumerate(curves):
        sig = np.sqrt(np.maximum(y, 1e-3 * y.max()))
        try:
            p, _ = curve_fit(biexp, t_h, y, p0=(y.max() * 1.5, 2 * lam_h, 0.5), sigma=sig,
                             bounds=([0, lam_h, lam_h], [np.inf, 50, 50]), maxfev=5000)
            out[i] = p[0] * (1 / p[1] - 1 / p[2]) * 3600
        except RuntimeError:
            out[i] = np.nan
    return out


def run_tia_bench(n: int = 128, sample: int = 200, device: str = "cpu", repeats: int = 1,
                  curves=None) -> list[TiaBenchRow]:
    """Bi-exponential fit of n^3 voxels (voxdose) vs curve_fit on ``sample`` voxels, same run.
    ``device`` 'gpu': the curves on the device (CUDA fitter in place, CUDA-event timing),
    their copy up and the results' copy back timed apart; the curve_fit row is skipped.
    ``curves``: :func:`tia_bench_curves` (n) when already made (9 s at 256^3 on 2 cores).
    On the CPU the warm-up is a fit of 1,000 curves (compiles, loads the Numba cache), not
    a second fit of all of them."""
    from ..kinetics.fit import fit_curves

    t_s, curves, lam = tia_bench_curves(n) if curves is None else curves
    m = curves.shape[0]
    if device == "gpu":
        return [_tia_gpu_row(t_s, curves, lam, repeats)]
    fit_curves(t_s, curves[:1000], lam, model="biexp", device=device)  # compile / warm up
    t_vox = _min_time(lambda: fit_curves(t_s, curves, lam, model="biexp", keep_params=False,
                                         device=device), repeats, warm_up=False)
    t_cf = _min_time(lambda: curve_fit_loop(t_s, curves[:sample], lam), 1)
    cf_rate = sample / t_cf
    return [TiaBenchRow("scipy.optimize.curve_fit loop", "cpu", sample, t_cf, cf_rate, 1.0),
            TiaBenchRow("voxdose (Levenberg-Marquardt, Numba)", device, m, t_vox, m / t_vox,
                        (m / t_vox) / cf_rate)]


def _tia_gpu_row(t_s, curves, lam, repeats) -> TiaBenchRow:
    """The fit of ``curves`` on the GPU with the curves already on the device."""
    from ..core.backend import get_backend, to_numpy
    from ..kinetics.fit import fit_curves

    be = get_backend("gpu")
    xp = be.xp
    sync = xp.cuda.Stream.null.synchronize
    t_h2d = _min_time(lambda: xp.asarray(curves), 1, sync)
    d = xp.asarray(curves)
    fit_curves(t_s, d[:1000], lam, model="biexp", backend=be)  # compile / warm up
    res = {}

    def run():
        res["fit"] = fit_curves(t_s, d, lam, model="biexp", keep_params=False, backend=be)

    t = _gpu_time(xp, run, repeats)
    f = res["fit"]
    t_d2h = _min_time(lambda: [to_numpy(a) for a in (f.tia, f.sigma, f.model, f.status)],
                      1, sync)
    m = curves.shape[0]
    return TiaBenchRow("voxdose (Levenberg-Marquardt, numba.cuda, data on the device)", "gpu",
                       m, t, m / t, None, t_h2d, t_d2h)


@dataclass
class McBenchRow:
    nuclide: str
    device: str
    electrons: int
    photons: int
    seconds: float
    histories_per_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def run_mc_bench(histories: int, device: str = "cpu", nuclide: str = "Lu-177"
                 ) -> McBenchRow:
    """The Monte Carlo DPK of ``nuclide`` in water, ``histories`` electrons and as many
    photons, after a small warm-up run (compilation); 'gpu': numba.cuda, 4096 batches
    (one thread each)."""
    from ..montecarlo.dpk import simulate_dpk

    batches = 4096 if device == "gpu" else 20
    simulate_dpk(nuclide, 2 * batches, 2 * batches, n_batches=batches, backend=device)
    r = simulate_dpk(nuclide, histories, histories, n_batches=batches, backend=device)
    return McBenchRow(nuclide, device, r.n_electrons, r.n_photons, r.seconds,
                      (r.n_electrons + r.n_photons) / r.seconds)
