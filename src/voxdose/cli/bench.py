"""``voxdose bench``: voxdose's dose convolution against scipy.signal.fftconvolve, same run.

Both convolve the same random TIA map (n^3) with the same Lu-177 voxel kernel (4.8 mm
voxels, 200 mm radius -> 85^3).  The reference is ``scipy.signal.fftconvolve(tia, kernel,
mode="same")`` in float64, what peers use.  Times are the minimum of ``repeats`` runs after
one warm-up (kernel spectrum cached, FFT plans built).  On a GPU the time excludes the
host<->device transfers, which are reported separately.  Agreement is
``max |D - D_ref| / max D_ref``.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass

import numpy as np

KERNEL_SPACING_MM = 4.8
KERNEL_RADIUS_MM = 200.0


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

    def to_dict(self) -> dict:
        return asdict(self)


def _min_time(fn, repeats: int, sync=None) -> float:
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


def bench_kernel():
    from ..kernels.point import load_point_kernel
    from ..kernels.voxel import voxel_kernel

    return voxel_kernel(load_point_kernel("Lu-177"), (KERNEL_SPACING_MM,) * 3,
                        radius_mm=KERNEL_RADIUS_MM)


def run_bench(sizes=(64, 128, 256), device: str = "auto", repeats: int = 3,
              kernel=None, with_scipy: bool = True, progress=None) -> list[BenchRow]:
    """Time the convolution at each size; rows for scipy, voxdose CPU float64/float32, GPU."""
    from scipy import signal

    from ..core.backend import cpu_backend, get_backend, to_numpy
    from ..dose.convolution import SpectrumCache, fft_convolve_same

    k = (kernel or bench_kernel()).data_gy_per_decay
    be = get_backend(device)
    rows: list[BenchRow] = []
    for i, n in enumerate(sizes):
        tia = np.random.default_rng(n).random((n, n, n)) * 1e9
        ref = None
        t_ref = None
        if with_scipy:
            ref = signal.fftconvolve(tia, k, mode="same")
            t_ref = _min_time(lambda tia=tia: signal.fftconvolve(tia, k, mode="same"), repeats)
            rows.append(BenchRow(n, "scipy.signal.fftconvolve", "cpu", "float64", t_ref * 1e3,
                                 1.0, 0.0))
        cpu = cpu_backend()
        for prec in ("float64", "float32"):
            cache = SpectrumCache()
            out = fft_convolve_same(tia, k, cpu, cache, precision=prec)
            t = _min_time(lambda tia=tia, c=cache, p=prec, b=cpu: fft_convolve_same(
                tia, k, b, c, precision=p), repeats)
            diff = None if ref is None else float(np.abs(out - ref).max() / np.abs(ref).max())
            rows.append(BenchRow(n, "voxdose", "cpu", prec, t * 1e3,
                                 None if t_ref is None else t_ref / t, diff))
        if be.name == "gpu":
            xp = be.xp
            sync = xp.cuda.Stream.null.synchronize
            t_h2d = _min_time(lambda tia=tia, xp=xp: xp.asarray(tia, dtype=xp.float32),
                              repeats, sync)
            for prec in ("float64", "float32"):
                cache = SpectrumCache()
                dt = xp.float32 if prec == "float32" else xp.float64
                d = xp.asarray(tia, dtype=dt)
                out = fft_convolve_same(d, k, be, cache, precision=prec)
                t = _min_time(lambda d=d, c=cache, p=prec: fft_convolve_same(
                    d, k, be, c, precision=p), repeats, sync)
                t_d2h = _min_time(lambda o=out: to_numpy(o), repeats, sync)
                host = to_numpy(out)
                diff = None if ref is None else float(np.abs(host - ref).max()
                                                      / np.abs(ref).max())
                rows.append(BenchRow(n, "voxdose", "gpu", prec, t * 1e3,
                                     None if t_ref is None else t_ref / t, diff,
                                     (t_h2d + t_d2h) * 1e3 * (2 if prec == "float64" else 1)))
                del d, out
        if progress:
            progress(i + 1, len(sizes))
    return rows


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


@dataclass
class TiaBenchRow:
    method: str
    device: str
    voxels: int
    time_s: float
    voxels_per_s: float
    speedup_vs_curve_fit: float | None

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


def run_tia_bench(n: int = 128, sample: int = 200, device: str = "cpu", repeats: int = 1
                  ) -> list[TiaBenchRow]:
    """Bi-exponential fit of n^3 voxels (voxdose) vs curve_fit on ``sample`` voxels, same run."""
    from ..kinetics.fit import fit_curves

    t_s, curves, lam = tia_bench_curves(n)
    fit_curves(t_s, curves[:1000], lam, model="biexp", device=device)  # compile / warm up
    t_vox = _min_time(lambda: fit_curves(t_s, curves, lam, model="biexp", keep_params=False,
                                         device=device), repeats)
    t_cf = _min_time(lambda: curve_fit_loop(t_s, curves[:sample], lam), 1)
    m = curves.shape[0]
    cf_rate = sample / t_cf
    return [TiaBenchRow("scipy.optimize.curve_fit loop", "cpu", sample, t_cf, cf_rate, 1.0),
            TiaBenchRow("voxdose (Levenberg-Marquardt, Numba)", device, m, t_vox, m / t_vox,
                        (m / t_vox) / cf_rate)]
