"""Per-voxel (and per-region) time-activity fitting -> TIA with uncertainty.

Public API: :func:`fit_tia` (4D frames on one grid -> :class:`TiaFit` maps),
:func:`fit_curves` (any set of curves, e.g. organ TACs). The maths is in
:mod:`voxdose.kinetics.lm_core` (one source, compiled for the CPU here and for CUDA in
:mod:`voxdose.kinetics.cuda_fit`), the models too (``lm_core.model_terms``; their table, with
units, in :mod:`voxdose.kinetics.models`).

Units at this boundary: times in s, activity concentration in Bq/mL, TIA concentration in
Bq*s/mL (multiply by the voxel volume in mL for decays per voxel), decay constants 1/s.

Where the fit runs: ``backend=`` a GPU backend keeps the curves, results and parameters on
the device (the CUDA fitter reads and writes them in place: no host copy; the pipeline's
path); without one, ``device`` 'cpu' runs the Numba CPU driver and 'gpu' the CUDA fitter on
host arrays (copied to the device and back).  A backend may bring its own fit driver
(``backend.fit_block``, the signature of :func:`voxdose.kinetics.cuda_fit.fit_block_cuda`;
the recording test backend does).
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field

import numba
import numpy as np

from ..core.backend import backend_of
from ..core.errors import DeviceError, InputError
from . import lm_core
from .lm_core import fit_block_cpu as _fit_block_cpu
from .models import MODEL_IDS


WEIGHTINGS = ("poisson", "uniform")
TAILS = ("physical", "fitted")
CHUNK_VOXELS = 1 << 20  # curves copied and fitted per chunk (~40 MB of input per chunk)


@dataclass(frozen=True, eq=False)
class TiaFit:
    """Results per voxel (arrays of the spatial shape) or per curve (1D).

    tia : TIA concentration, Bq*s/mL (integral 0..inf of the fitted/trapezoid curve)
    sigma : standard uncertainty of ``tia`` (delta method / frame noise model), Bq*s/mL
    lambda_eff_per_s : terminal effective decay constant, 1/s (>= physical unless lifted)
    model : model id (``models.MODEL_NAMES``), status : ``models.STATUS`` code
    aicc, rss, r2 : goodness of fit (inf / 0 for the trapezoid)
    params : best-fit parameters (..., 5), amplitudes in Bq/mL, decay constants in 1/h
    """

    tia: np.ndarray
    sigma: np.ndarray
    lambda_eff_per_s: np.ndarray
    model: np.ndarray
    status: np.ndarray
    aicc: np.ndarray
    rss: np.ndarray
    r2: np.ndarray
    params: np.ndarray | None = None
    settings: dict = field(default_factory=dict)


def _check_times(times_s, n_frames):
    t = np.asarray(times_s, dtype=np.float64).ravel()
    if t.size != n_frames:
        raise InputError(f"{n_frames} frames but {t.size} times; give one time per frame")
    if t.size > lm_core.MAX_T:
        raise InputError(f"at most {lm_core.MAX_T} time points are supported, got {t.size}")
    if not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise InputError(f"times must be finite and after administration (> 0), got {t}")
    if np.any(np.diff(t) <= 0):
        raise InputError(f"times must be strictly increasing, got {t / 3600.0} h")
    return t


def fit_curves(times_s, curves, lambda_phys_per_s: float, model: str = "auto",
               weighting: str = "poisson", background: float = 0.0, lift_bound: bool = False,
               tail: str = "physical", frame_noise_rel: float = 0.05,
               keep_params: bool = True, device: str = "cpu", backend=None) -> TiaFit:
    """Fit ``curves`` (N, T): N time-activity curves sampled at ``times_s`` (T,).

    model : 'auto' (best AICc of mono, biexp, biexp_sum, triexp that have enough points and
            converged; else trapezoid + physical tail) or one of 'trapz', 'mono', 'biexp',
            'biexp_sum', 'triexp'.
    weighting : 'poisson' (variance proportional to activity) or 'uniform'.
    background : curves whose maximum is below this (unit of ``curves``) are not fitted:
            trapezoid + physical tail, status 3.
    lift_bound : allow effective decay constants below the physical one.
    tail : trapezoid tail, 'physical' or 'fitted' (exponential through the last two points).
    frame_noise_rel : relative standard uncertainty of a frame, for the trapezoid's sigma.
    device : 'cpu' or 'gpu' (the CUDA fitter on host arrays), without ``backend``.
    backend : a GPU :class:`~voxdose.core.backend.Backend` to fit on, curves and results
            on its device (module docstring); None: ``device`` says where.
    """
    xp, drive = _driver(device, backend)
    curves = xp.asarray(curves, dtype=xp.float64)
    if curves.ndim != 2:
        raise InputError("curves must be a 2D array (N curves, T times)")
    t_s = _check_times(times_s, curves.shape[1])
    if (model != "auto" and model not in MODEL_IDS) or model == "stp":
        raise InputError(f"unknown model '{model}'; choose auto, trapz, mono, biexp, biexp_sum "
                         "or triexp (stp needs fit_single_time_point)")
    if weighting not in WEIGHTINGS:
        raise InputError(f"weighting must be one of {WEIGHTINGS}, got '{weighting}'")
    if tail not in TAILS:
        raise InputError(f"tail must be one of {TAILS}, got '{tail}'")
    if not lambda_phys_per_s > 0:
        raise InputError("physical decay constant must be > 0")
    mid = 0 if model == "auto" else MODEL_IDS[model]
    # the core's model codes: -1 trapezoid, 0 auto, 1..4 one model
    core_model = -1 if model == "trapz" else mid
    t_h = t_s / 3600.0
    lam_h = lambda_phys_per_s * 3600.0
    n = curves.shape[0]
    out = xp.zeros((n, lm_core.N_OUT))
    # parameters are kept only on request: otherwise one chunk-sized scratch array
    params = xp.zeros((n if keep_params else min(n, CHUNK_VOXELS), lm_core.MAX_P))
    args = (core_model, lam_h, bool(lift_bound), weighting == "poisson", float(background),
            float(frame_noise_rel), tail == "fitted")
    for s in range(0, n, CHUNK_VOXELS):  # chunks bound the copies of the input curves
        e = min(n, s + CHUNK_VOXELS)
        chunk = xp.ascontiguousarray(curves[s:e])
        par = params[s:e] if keep_params else params[: e - s]
        drive(t_h, chunk, *args, out[s:e], par)
    return _to_result(out, params if keep_params else None,
                      {"model": model, "weighting": weighting, "background": background,
                       "lift_bound": lift_bound, "tail": tail,
                       "frame_noise_rel": frame_noise_rel})


def _driver(device: str, backend):
    """(array namespace, fit driver): the backend's device (its own driver, else the CUDA
    fitter on device arrays), else by ``device`` on host arrays."""
    if backend is not None and backend.name != "cpu":
        own = getattr(backend, "fit_block", None)
        if own is not None:
            return backend.xp, own
        from .cuda_fit import fit_block_cuda

        return backend.xp, fit_block_cuda
    if backend is None and _use_cuda(device):
        from .cuda_fit import fit_block_cuda

        return np, fit_block_cuda
    return np, _fit_cpu


#: One call of the Numba CPU driver at a time: its parallel loop runs on Numba's own
#: threads, which one threading layer (workqueue) cannot share between two callers.
_CPU_DRIVER_LOCK = threading.Lock()


def _fit_cpu(t_h, curves, *args) -> None:
    """The Numba CPU driver on every thread Numba may use."""
    with _CPU_DRIVER_LOCK:
        _fit_block_cpu(t_h, curves, *args, numba.get_num_threads())


def warm_up_cpu_driver() -> None:
    """Load the CPU driver (its one signature: float64 curves) from Numba's on-disk cache,
    compiling it the first time, by fitting two curves: 0.3 s of a first fit on a 2-core
    machine, which ``voxdose demo`` spends on a background thread while it builds the
    study instead of inside the fit stage."""
    t_s = np.array([1.0, 4.0, 24.0, 48.0, 168.0]) * 3600.0
    lam = math.log(2.0) / (6.647 * 86400.0)  # Lu-177; any decay constant > 0 will do
    fit_curves(t_s, np.exp(-2.0 * lam * t_s)[None, :].repeat(2, axis=0) * 1e3, lam,
               device="cpu")


def _use_cuda(device: str) -> bool:
    """'cpu' -> False; 'gpu' -> True or DeviceError; 'auto' -> True only with a usable GPU."""
    if device not in ("auto", "cpu", "gpu"):
        raise InputError(f"unknown device '{device}'; choose auto, cpu or gpu")
    if device == "cpu":
        return False
    from numba import cuda

    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return device == "gpu"  # the simulator only when asked for explicitly
    ok = cuda.is_available()
    if device == "gpu" and not ok:
        raise DeviceError("--device gpu was requested but Numba finds no CUDA GPU; "
                          "use --device cpu or auto")
    return ok


def _to_result(out, params, settings, shape=None) -> TiaFit:
    shape = shape or (out.shape[0],)
    col = lm_core

    def pick(i, dtype=np.float64):
        return out[:, i].astype(dtype).reshape(shape)

    return TiaFit(
        tia=pick(col.OUT_TIA) * 3600.0,
        sigma=pick(col.OUT_SIGMA) * 3600.0,
        lambda_eff_per_s=pick(col.OUT_LAM) / 3600.0,
        model=pick(col.OUT_MODEL, np.uint8),
        status=pick(col.OUT_STATUS, np.uint8),
        aicc=pick(col.OUT_AICC),
        rss=pick(col.OUT_RSS),
        r2=pick(col.OUT_R2),
        params=None if params is None else params.reshape((*shape, lm_core.MAX_P)),
        settings=settings,
    )


def fit_tia(times_s, frames, lambda_phys_per_s: float, model: str = "auto",
            weighting: str = "poisson", background_fraction: float = 1e-3,
            device: str = "cpu", keep_params: bool = False, backend=None, **kw) -> TiaFit:
    """Fit every voxel of ``frames`` (T, z, y, x) in Bq/mL. Returns maps of shape (z, y, x).

    ``background_fraction`` x the largest value of all frames is the background threshold.
    ``keep_params`` keeps the per-voxel parameters (z, y, x, 5) for
    :mod:`voxdose.kinetics.after` (activity at t, TIA after t0). Other keywords as
    :func:`fit_curves` (``backend``: a GPU backend keeps frames and maps on its device).
    No NaN or Inf reaches the outputs.
    """
    xp = np if backend is None else backend.xp
    frames = xp.asarray(frames)
    if frames.ndim != 4:
        raise InputError("frames must be 4D (t, z, y, x)")
    if not bool(xp.all(xp.isfinite(frames))):
        raise InputError("frames contain NaN or infinite values; mask or fix them first")
    if bool(xp.any(frames < 0)):
        raise InputError("frames contain negative activity; clip or fix them first")
    spatial = frames.shape[1:]
    curves = frames.reshape(frames.shape[0], -1).T
    top = float(frames.max()) if frames.size else 0.0
    background = float(background_fraction) * max(top, 0.0)
    res = fit_curves(times_s, curves, lambda_phys_per_s, model=model, weighting=weighting,
                     background=background, keep_params=keep_params, device=device,
                     backend=backend, **kw)
    return TiaFit(*(getattr(res, f).reshape(spatial) for f in
                    ("tia", "sigma", "lambda_eff_per_s", "model", "status", "aicc", "rss",
                     "r2")),
                  params=None if res.params is None else res.params.reshape((*spatial, -1)),
                  settings={**res.settings, "background_fraction": background_fraction})


def fit_single_time_point(time_s: float, frame, effective_half_life_h: float) -> np.ndarray:
    """Single-time-point TIA (Hänscheid et al. 2018): a(t1) exp(l t1) / l, l = ln2 / T_eff.

    ``frame`` in Bq/mL; returns Bq*s/mL.
    """
    if not effective_half_life_h > 0:
        raise InputError("the single-time-point method needs an effective half-life > 0 h")
    lam = math.log(2.0) / (effective_half_life_h * 3600.0)
    xp = backend_of(frame).xp  # the frame's own device
    return xp.clip(xp.asarray(frame, dtype=xp.float64), 0, None) * math.exp(lam * time_s) / lam


#: status of every voxel of a single-time-point TIA (``models.STATUS[5]``)
STP_STATUS = 5


def single_time_point_fit(time_s: float, frame, half_life_h: float,
                          frame_noise_rel: float = 0.05, method: str = "effective") -> TiaFit:
    """Every voxel of one frame (Bq/mL) integrated by :func:`fit_single_time_point` with
    ``half_life_h`` (the physical half-life for ``method`` 'physical', the assumed
    effective one for 'effective'), as a :class:`TiaFit`: sigma = ``frame_noise_rel`` x TIA
    (the frame's noise only: the half-life's own uncertainty is unknown and left out),
    lambda_eff = ln 2 / T everywhere, model ``stp`` (5), status :data:`STP_STATUS`, AICc
    inf, RSS and R^2 0 (nothing fitted); on the frame's device."""
    xp = backend_of(frame).xp
    frame = xp.asarray(frame, dtype=xp.float64)
    tia = fit_single_time_point(time_s, frame, half_life_h)
    lam = math.log(2.0) / (half_life_h * 3600.0)
    shape = tia.shape
    return TiaFit(tia=tia, sigma=tia * float(frame_noise_rel),
                  lambda_eff_per_s=xp.full(shape, lam),
                  model=xp.full(shape, MODEL_IDS["stp"], dtype=xp.uint8),
                  status=xp.full(shape, STP_STATUS, dtype=xp.uint8), aicc=xp.full(shape, xp.inf),
                  rss=xp.zeros(shape), r2=xp.zeros(shape),
                  settings={"model": "stp", "single_time_point": method,
                            "half_life_h": float(half_life_h),
                            "frame_noise_rel": float(frame_noise_rel)})
